//! Stage 3: compare what the playbook declares with what the server holds,
//! and decide what to change. A pure function: no I/O, tested without a
//! server, shared by every backend.

use serde::Serialize;

use crate::args::{DesiredUser, UpdatePassword, UserState, UserType};

/// An account as the homeserver reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub admin: bool,
    pub deactivated: bool,
    #[serde(serialize_with = "serialize_user_type")]
    pub user_type: UserType,
    pub displayname: Option<String>,
    /// Addresses the account has (MAS only; empty elsewhere).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
}

fn serialize_user_type<S: serde::Serializer>(
    user_type: &UserType,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(user_type.as_str())
}

/// Everything read from the server about one declared user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `None` when the user does not exist.
    pub account: Option<Account>,
    /// Whether the declared password is the stored one; only read when
    /// `update_password: always` makes it matter.
    pub password_matches: Option<bool>,
}

/// One change to make on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Register the user with every declared attribute and the password.
    Create,
    /// Make a deactivated account usable again, with the declared password.
    Reactivate,
    SetAdmin(bool),
    SetPassword,
    SetDisplayname,
    SetUserType(UserType),
    AddEmail,
    Deactivate {
        erase: bool,
    },
}

impl Change {
    /// The word the module reports for this change.
    pub fn describe(self) -> &'static str {
        match self {
            Change::Create => "created",
            Change::Reactivate => "reactivated",
            Change::SetAdmin(true) => "promoted",
            Change::SetAdmin(false) => "demoted",
            Change::SetPassword => "password changed",
            Change::SetDisplayname => "displayname changed",
            Change::SetUserType(_) => "user type changed",
            Change::AddEmail => "email added",
            Change::Deactivate { erase: false } => "deactivated",
            Change::Deactivate { erase: true } => "deactivated and erased",
        }
    }
}

/// Why no plan can make the server match the declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The user must be created (or reactivated), and that needs a password.
    #[error("does not exist (or is deactivated) and must be {verb}, which needs a password: add password to this user")]
    PasswordNeeded { verb: &'static str },
}

/// Whether the stored password must be compared with the declared one.
pub fn needs_password_check(desired: &DesiredUser, account: Option<&Account>) -> bool {
    desired.state == UserState::Present
        && desired.update_password == UpdatePassword::Always
        && desired.password.is_some()
        && account.is_some_and(|a| !a.deactivated)
}

/// The changes that make `observed` match `desired`, in the order to apply them.
pub fn plan(desired: &DesiredUser, observed: &Observed) -> Result<Vec<Change>, PlanError> {
    let Some(account) = &observed.account else {
        return match desired.state {
            UserState::Absent => Ok(vec![]),
            UserState::Present if desired.password.is_none() => {
                Err(PlanError::PasswordNeeded { verb: "created" })
            }
            UserState::Present => Ok(vec![Change::Create]),
        };
    };
    if desired.state == UserState::Absent {
        return Ok(if account.deactivated {
            vec![]
        } else {
            vec![Change::Deactivate {
                erase: desired.erase,
            }]
        });
    }

    let mut changes = Vec::new();
    if account.deactivated {
        if desired.password.is_none() {
            // Deactivation removed the old password, so a reactivated account needs a new one.
            return Err(PlanError::PasswordNeeded {
                verb: "reactivated",
            });
        }
        changes.push(Change::Reactivate);
    }
    if let Some(admin) = desired.admin.filter(|&admin| admin != account.admin) {
        changes.push(Change::SetAdmin(admin));
    }
    if let Some(user_type) = desired.user_type.filter(|&t| t != account.user_type) {
        changes.push(Change::SetUserType(user_type));
    }
    if desired.displayname.is_some() && desired.displayname != account.displayname {
        changes.push(Change::SetDisplayname);
    }
    if let Some(email) = &desired.email {
        if !account.emails.iter().any(|e| e.eq_ignore_ascii_case(email)) {
            changes.push(Change::AddEmail);
        }
    }
    if !account.deactivated && observed.password_matches == Some(false) {
        changes.push(Change::SetPassword);
    }
    Ok(changes)
}

/// The account as it will be once `changes` are applied (`None`: no account).
/// `default_displayname` is what the server names a new user that declares none.
pub fn predict(
    desired: &DesiredUser,
    observed: Option<&Account>,
    changes: &[Change],
    default_displayname: Option<String>,
) -> Option<Account> {
    let mut account = observed.cloned();
    for change in changes {
        match *change {
            Change::Create => {
                account = Some(Account {
                    admin: desired.admin.unwrap_or(false),
                    deactivated: false,
                    user_type: desired.user_type.unwrap_or(UserType::Regular),
                    displayname: desired
                        .displayname
                        .clone()
                        .or_else(|| default_displayname.clone()),
                    emails: desired.email.iter().cloned().collect(),
                })
            }
            Change::Reactivate => {
                if let Some(a) = account.as_mut() {
                    a.deactivated = false
                }
            }
            Change::SetAdmin(admin) => {
                if let Some(a) = account.as_mut() {
                    a.admin = admin
                }
            }
            Change::SetUserType(user_type) => {
                if let Some(a) = account.as_mut() {
                    a.user_type = user_type
                }
            }
            Change::SetDisplayname => {
                if let Some(a) = account.as_mut() {
                    a.displayname = desired.displayname.clone()
                }
            }
            Change::AddEmail => {
                if let (Some(a), Some(email)) = (account.as_mut(), &desired.email) {
                    a.emails.push(email.clone())
                }
            }
            Change::Deactivate { .. } => {
                if let Some(a) = account.as_mut() {
                    a.deactivated = true
                }
            }
            Change::SetPassword => {}
        }
    }
    account
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix_id::Username;
    use crate::secret::Secret;

    fn desired(username: &str) -> DesiredUser {
        DesiredUser {
            field: "username".into(),
            username: Username::parse(username).unwrap(),
            password: Some(Secret::new("pw")),
            admin: None,
            user_type: None,
            displayname: None,
            state: UserState::Present,
            update_password: UpdatePassword::OnCreate,
            erase: false,
            email: None,
        }
    }

    fn account(admin: bool) -> Account {
        Account {
            admin,
            deactivated: false,
            user_type: UserType::Regular,
            displayname: Some("alice".into()),
            emails: vec![],
        }
    }

    fn observed(account: Option<Account>) -> Observed {
        Observed {
            account,
            password_matches: None,
        }
    }

    #[test]
    fn a_missing_user_is_created_and_an_existing_one_left_alone() {
        let user = desired("alice");
        assert_eq!(plan(&user, &observed(None)), Ok(vec![Change::Create]));
        assert_eq!(plan(&user, &observed(Some(account(false)))), Ok(vec![]));
    }

    #[test]
    fn creation_needs_a_password() {
        let user = DesiredUser {
            password: None,
            ..desired("alice")
        };
        assert_eq!(
            plan(&user, &observed(None)),
            Err(PlanError::PasswordNeeded { verb: "created" })
        );
    }

    #[test]
    fn admin_is_promoted_and_demoted_only_when_it_differs() {
        let promote = DesiredUser {
            admin: Some(true),
            ..desired("alice")
        };
        assert_eq!(
            plan(&promote, &observed(Some(account(false)))),
            Ok(vec![Change::SetAdmin(true)])
        );
        assert_eq!(plan(&promote, &observed(Some(account(true)))), Ok(vec![]));
        let demote = DesiredUser {
            admin: Some(false),
            ..desired("alice")
        };
        assert_eq!(
            plan(&demote, &observed(Some(account(true)))),
            Ok(vec![Change::SetAdmin(false)])
        );
    }

    #[test]
    fn password_changes_only_with_always_and_a_mismatch() {
        let always = DesiredUser {
            update_password: UpdatePassword::Always,
            ..desired("alice")
        };
        assert!(needs_password_check(&always, Some(&account(false))));
        assert!(!needs_password_check(
            &desired("alice"),
            Some(&account(false))
        ));
        assert!(!needs_password_check(&always, None));
        let mismatch = Observed {
            account: Some(account(false)),
            password_matches: Some(false),
        };
        assert_eq!(plan(&always, &mismatch), Ok(vec![Change::SetPassword]));
        let matching = Observed {
            password_matches: Some(true),
            ..mismatch
        };
        assert_eq!(plan(&always, &matching), Ok(vec![]));
    }

    #[test]
    fn absent_deactivates_once() {
        let absent = DesiredUser {
            state: UserState::Absent,
            password: None,
            ..desired("alice")
        };
        assert_eq!(
            plan(&absent, &observed(Some(account(false)))),
            Ok(vec![Change::Deactivate { erase: false }])
        );
        let gone = Account {
            deactivated: true,
            ..account(false)
        };
        assert_eq!(plan(&absent, &observed(Some(gone))), Ok(vec![]));
        assert_eq!(plan(&absent, &observed(None)), Ok(vec![]));
    }

    #[test]
    fn a_deactivated_user_declared_present_is_reactivated_with_its_password() {
        let gone = Account {
            deactivated: true,
            ..account(false)
        };
        let user = DesiredUser {
            admin: Some(true),
            ..desired("alice")
        };
        assert_eq!(
            plan(&user, &observed(Some(gone.clone()))),
            Ok(vec![Change::Reactivate, Change::SetAdmin(true)])
        );
        let no_password = DesiredUser {
            password: None,
            ..user
        };
        assert_eq!(
            plan(&no_password, &observed(Some(gone))),
            Err(PlanError::PasswordNeeded {
                verb: "reactivated"
            })
        );
    }

    #[test]
    fn a_declared_email_is_added_once_whatever_its_case() {
        let user = DesiredUser {
            email: Some("Alice@Example.com".into()),
            ..desired("alice")
        };
        assert_eq!(
            plan(&user, &observed(Some(account(false)))),
            Ok(vec![Change::AddEmail])
        );
        let with_email = Account {
            emails: vec!["alice@example.com".into()],
            ..account(false)
        };
        assert_eq!(plan(&user, &observed(Some(with_email))), Ok(vec![]));
    }

    #[test]
    fn displayname_and_user_type_are_managed_only_when_declared() {
        let user = DesiredUser {
            displayname: Some("Alice A.".into()),
            user_type: Some(UserType::Bot),
            ..desired("alice")
        };
        let changes = plan(&user, &observed(Some(account(false)))).unwrap();
        assert_eq!(
            changes,
            vec![Change::SetUserType(UserType::Bot), Change::SetDisplayname]
        );
        let after = predict(&user, Some(&account(false)), &changes, None).unwrap();
        assert_eq!(after.displayname.as_deref(), Some("Alice A."));
        assert_eq!(after.user_type, UserType::Bot);
    }
}
