//! Stage 3: compare what the playbook declares with what the server holds,
//! and decide what to change. A pure function: no I/O, tested without a
//! server, shared by every backend.

use crate::model::{
    Account, Change, DesiredUser, Fact, Observed, Seen, UpdatePassword, UpdateType, UpstreamLink,
    UserState, ATTRIBUTES,
};

/// Why no plan can make the server match the declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The user must be created (or reactivated), and that needs a password.
    #[error("does not exist (or is deactivated) and must be {verb}, which needs a password: add password to this user (or, on MAS, upstream_links)")]
    PasswordNeeded { verb: &'static str },
    /// What to change depends on a fact the server did not show; the
    /// backend says what would show it (its `not_seen`).
    #[error("what to change depends on {fact}, which the homeserver does not show")]
    NotSeen { fact: Fact },
    /// `update_password: always` on an account someone else locked: the
    /// stored password cannot be compared, and setting it blindly would
    /// report a change on every run.
    #[error("is locked on the server, so its password cannot be checked: declare locked: false to unlock it, locked: true to keep it locked, or update_password: on_create")]
    LockedPasswordUnchecked,
}

/// Whether the stored password must be compared with the declared one.
pub fn needs_password_check(desired: &DesiredUser, account: Option<&Account>) -> bool {
    desired.state == UserState::Present
        && desired.update_password == UpdatePassword::Always
        && desired.password.is_some()
        // Also when deactivation was not seen: a refused password is then
        // what lets the plan set it (see password_set_tells_deactivation).
        && account.is_some_and(|a| a.deactivated != Seen::Known(true))
        // A locked account cannot authenticate, so no password can be checked.
        // With the lock declared, the password is compared on the first run
        // that finds the account unlocked; without, the plan says so.
        && !account.is_some_and(|a| a.restrictions.locked == Seen::Known(true))
}

/// The changes that make `observed` match `desired`, in the order to apply them.
pub fn plan(desired: &DesiredUser, observed: &Observed) -> Result<Vec<Change>, PlanError> {
    let Some(account) = &observed.account else {
        return match (desired.state, &desired.password) {
            (UserState::Absent, _) => Ok(vec![]),
            (UserState::Present, password) => {
                let links = declared_links(desired);
                let create = match password {
                    Some(password) => Change::Create {
                        password: password.clone(),
                    },
                    // MAS logs such a user in through its upstream provider.
                    None if !links.is_empty() => Change::CreateWithoutPassword,
                    None => return Err(PlanError::PasswordNeeded { verb: "created" }),
                };
                let linked = links
                    .iter()
                    .map(|link| Change::AddUpstreamLink(link.clone()));
                // A new account has none of the other attributes yet: those
                // declared follow its creation.
                let following = ATTRIBUTES.iter().flat_map(|a| a.after_creation(desired));
                Ok(std::iter::once(create)
                    .chain(linked)
                    .chain(following)
                    .collect())
            }
        };
    };
    // An existing account keeps the admin flag and user type it has when
    // they are declared for creation only (someone may have changed them since).
    let for_existing;
    let desired = if desired.update_type == UpdateType::OnCreate {
        for_existing = DesiredUser {
            admin: None,
            user_type: None,
            ..desired.clone()
        };
        &for_existing
    } else {
        desired
    };
    let deactivated = match account.deactivated {
        Seen::Known(deactivated) => deactivated,
        // The declared password did not log in, which an active account with
        // another password and a deactivated one look alike. Setting the
        // password is the change either way; the backend then tells which by
        // logging in with it, and fails the user if it was deactivated.
        Seen::Unknown if password_set_tells_deactivation(desired, observed) => false,
        Seen::Unknown => {
            // Asked first when both are unknown: the admin flag is the one declared.
            if desired.state == UserState::Present && desired.admin.is_some() {
                if let Seen::Unknown = account.admin {
                    return Err(PlanError::NotSeen { fact: Fact::Admin });
                }
            }
            return Err(PlanError::NotSeen {
                fact: Fact::Deactivated,
            });
        }
    };
    if desired.state == UserState::Absent {
        return Ok(if deactivated {
            vec![]
        } else {
            vec![Change::Deactivate {
                erase: desired.erase,
            }]
        });
    }

    if desired.update_password == UpdatePassword::Always
        && desired.password.is_some()
        && desired.restrictions.locked.is_none()
        && account.restrictions.locked == Seen::Known(true)
        && !deactivated
    {
        return Err(PlanError::LockedPasswordUnchecked);
    }
    let mut changes = Vec::new();
    if deactivated {
        // Deactivation removed the old password, so a reactivated account
        // needs a new one, unless it logs in through an upstream provider (MAS).
        changes.push(match &desired.password {
            Some(password) => Change::Reactivate {
                password: password.clone(),
            },
            None if !declared_links(desired).is_empty() => Change::ReactivateWithoutPassword,
            None => {
                return Err(PlanError::PasswordNeeded {
                    verb: "reactivated",
                })
            }
        });
    }
    for attribute in ATTRIBUTES {
        let attribute_changes = attribute.compare(desired, account);
        changes.extend(attribute_changes.map_err(|fact| PlanError::NotSeen { fact })?);
    }
    // A comparison is only made for a declared password (needs_password_check).
    if let (false, Some(false), Some(password)) =
        (deactivated, observed.password_matches, &desired.password)
    {
        changes.push(Change::SetPassword {
            password: password.clone(),
        });
    }
    Ok(changes)
}

/// The declared upstream links (none when they are not managed).
fn declared_links(desired: &DesiredUser) -> &[UpstreamLink] {
    desired.login.upstream_links.as_deref().unwrap_or_default()
}

/// Whether an account whose deactivation was not seen is one whose
/// password `update_password: always` sets anyway (its declared password
/// did not log in), with nothing else depending on what was not seen.
fn password_set_tells_deactivation(desired: &DesiredUser, observed: &Observed) -> bool {
    desired.state == UserState::Present
        && desired.update_password == UpdatePassword::Always
        && desired.admin.is_none()
        && observed.password_matches == Some(false)
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
        match change {
            Change::Create { .. } | Change::CreateWithoutPassword => {
                // Active, with each attribute as it will be once created.
                let mut created = Account {
                    deactivated: Seen::Known(false),
                    ..Account::unseen()
                };
                for attribute in ATTRIBUTES {
                    attribute.created(desired, default_displayname.as_deref(), &mut created);
                }
                account = Some(created);
            }
            Change::Reactivate { .. } | Change::ReactivateWithoutPassword => {
                if let Some(a) = account.as_mut() {
                    a.deactivated = Seen::Known(false)
                }
            }
            Change::Deactivate { .. } => {
                if let Some(a) = account.as_mut() {
                    a.deactivated = Seen::Known(true)
                }
            }
            Change::SetPassword { .. } | Change::WriteAccessToken => {}
            change => {
                if let Some(a) = account.as_mut() {
                    ATTRIBUTES
                        .iter()
                        .any(|attribute| attribute.predict(desired, change, a));
                }
            }
        }
    }
    account
}

/// A new personal access token is written when the user declares
/// `access_token_file` and will exist, and the file holds none the server
/// accepts: always for a user being created or reactivated.
pub fn plan_access_token(
    desired: &DesiredUser,
    observed: &Observed,
    changes: &[Change],
) -> Option<Change> {
    let new_account = changes.iter().any(|c| {
        matches!(
            c,
            Change::Create { .. }
                | Change::Reactivate { .. }
                | Change::CreateWithoutPassword
                | Change::ReactivateWithoutPassword
        )
    });
    let wanted = desired.state == UserState::Present && desired.access_token_file.is_some();
    (wanted && (new_account || observed.access_token_valid == Some(false)))
        .then_some(Change::WriteAccessToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix_id::{Room, Username};
    use crate::model::{
        Avatar, ExternalId, Ratelimit, Restriction, Restrictions, SeenAvatar, UserType,
    };
    use crate::secret::Secret;
    use serde_json::Value;

    fn desired(username: &str) -> DesiredUser {
        DesiredUser {
            password: Some(Secret::new("pw")),
            ..DesiredUser::managing_nothing("username".into(), Username::parse(username).unwrap())
        }
    }

    fn account(admin: bool) -> Account {
        Account {
            admin: Seen::Known(admin),
            deactivated: Seen::Known(false),
            displayname: Seen::Known(Some("alice".into())),
            emails: Seen::Known(vec![]),
            external_ids: Seen::Known(vec![]),
            restrictions: Restrictions {
                locked: Seen::Known(false),
                suspended: Seen::Known(false),
                shadow_banned: Seen::Known(false),
            },
            ratelimit: Seen::Known(None),
            ..Account::unseen()
        }
    }

    fn observed(account: Option<Account>) -> Observed {
        Observed {
            account,
            password_matches: None,
            access_token_valid: None,
        }
    }

    /// Asserts that `user`, not on the server, is created with its password
    /// and then gets `then`; returns that plan.
    fn planned_for_a_new_account(user: &DesiredUser, then: Vec<Change>) -> Vec<Change> {
        let changes = plan(user, &observed(None)).unwrap();
        let create = Change::Create {
            password: Secret::new("pw"),
        };
        assert_eq!(changes, [vec![create], then].concat());
        changes
    }

    /// Asserts that `user` against `before` plans exactly `change`, described
    /// as `words`, and that the predicted account needs nothing more;
    /// returns the prediction.
    fn planned_once(user: &DesiredUser, before: &Account, change: Change, words: &str) -> Account {
        let changes = plan(user, &observed(Some(before.clone()))).unwrap();
        assert_eq!(changes, vec![change]);
        assert_eq!(changes[0].describe(), words);
        let after = predict(user, Some(before), &changes, None).unwrap();
        assert_eq!(plan(user, &observed(Some(after.clone()))), Ok(vec![]));
        after
    }

    fn with_admin(admin: bool) -> DesiredUser {
        DesiredUser {
            admin: Some(admin),
            ..desired("alice")
        }
    }

    fn named(displayname: &str) -> DesiredUser {
        DesiredUser {
            displayname: Some(displayname.into()),
            ..desired("alice")
        }
    }

    #[test]
    fn a_missing_user_is_created_and_an_existing_one_left_alone() {
        let user = desired("alice");
        planned_for_a_new_account(&user, vec![]);
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
        let promote = with_admin(true);
        assert_eq!(
            plan(&promote, &observed(Some(account(false)))),
            Ok(vec![Change::SetAdmin(true)])
        );
        assert_eq!(plan(&promote, &observed(Some(account(true)))), Ok(vec![]));
        let demote = with_admin(false);
        assert_eq!(
            plan(&demote, &observed(Some(account(true)))),
            Ok(vec![Change::SetAdmin(false)])
        );
    }

    #[test]
    fn admin_and_user_type_on_create_are_set_at_creation_and_never_again() {
        let initial = DesiredUser {
            admin: Some(false),
            user_type: Some(UserType::Bot),
            update_type: UpdateType::OnCreate,
            ..desired("alice")
        };
        let created = plan(&initial, &observed(None)).unwrap();
        let predicted = predict(&initial, None, &created, None).unwrap();
        assert_eq!(predicted.admin, Seen::Known(false));
        assert_eq!(predicted.user_type, UserType::Bot);
        // Promoted by hand since, and still a regular user: both left alone.
        assert_eq!(plan(&initial, &observed(Some(account(true)))), Ok(vec![]));
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
            access_token_valid: None,
        };
        assert_eq!(
            plan(&always, &mismatch),
            Ok(vec![Change::SetPassword {
                password: Secret::new("pw")
            }])
        );
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
            deactivated: Seen::Known(true),
            ..account(false)
        };
        assert_eq!(plan(&absent, &observed(Some(gone))), Ok(vec![]));
        assert_eq!(plan(&absent, &observed(None)), Ok(vec![]));
    }

    #[test]
    fn a_deactivated_user_declared_present_is_reactivated_with_its_password() {
        let gone = Account {
            deactivated: Seen::Known(true),
            ..account(false)
        };
        let user = with_admin(true);
        assert_eq!(
            plan(&user, &observed(Some(gone.clone()))),
            Ok(vec![
                Change::Reactivate {
                    password: Secret::new("pw")
                },
                Change::SetAdmin(true)
            ])
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
    fn a_declared_email_is_added_unless_held_as_the_backend_shows_it() {
        let user = DesiredUser {
            email: Some("Alice@Example.com".into()),
            ..desired("alice")
        };
        assert_eq!(
            plan(&user, &observed(Some(account(false)))),
            Ok(vec![Change::AddEmail("Alice@Example.com".into())])
        );
        // The backend shows an address its server takes for the declared
        // one as declared (MAS: whatever the case of its letters).
        let with_email = Account {
            emails: Seen::Known(vec!["Alice@Example.com".into()]),
            ..account(false)
        };
        assert_eq!(plan(&user, &observed(Some(with_email))), Ok(vec![]));
    }

    #[test]
    fn displayname_and_user_type_are_managed_only_when_declared() {
        let user = DesiredUser {
            user_type: Some(UserType::Bot),
            ..named("Alice A.")
        };
        let changes = plan(&user, &observed(Some(account(false)))).unwrap();
        assert_eq!(
            changes,
            vec![Change::SetUserType(UserType::Bot), Change::SetDisplayname]
        );
        let after = predict(&user, Some(&account(false)), &changes, None).unwrap();
        assert_eq!(after.displayname, Seen::Known(Some("Alice A.".into())));
        assert_eq!(after.user_type, UserType::Bot);
    }

    #[test]
    fn a_displayname_the_read_did_not_see_is_left_alone() {
        let user = named("Alice A.");
        let mut unseen = account(false);
        unseen.displayname = Seen::Unknown;
        assert_eq!(plan(&user, &observed(Some(unseen.clone()))), Ok(vec![]));
        let shown = serde_json::to_value(&unseen).unwrap();
        assert!(shown.get("displayname").is_none(), "{shown}");
        let none = Account {
            displayname: Seen::Known(None),
            ..account(false)
        };
        let changes = plan(&user, &observed(Some(none))).unwrap();
        assert_eq!(changes, vec![Change::SetDisplayname]);
    }

    fn link(provider: &str, subject: &str) -> UpstreamLink {
        UpstreamLink {
            provider: provider.into(),
            subject: subject.into(),
        }
    }

    #[test]
    fn a_user_with_upstream_links_needs_no_password_and_its_links_are_kept_exactly() {
        let sso = DesiredUser {
            password: None,
            login: crate::model::LoginOptions {
                upstream_links: Some(vec![link("SSO", "u-1")]),
                ..Default::default()
            },
            ..desired("alice")
        };
        let changes = plan(&sso, &observed(None)).unwrap();
        assert_eq!(
            changes,
            vec![
                Change::CreateWithoutPassword,
                Change::AddUpstreamLink(link("SSO", "u-1"))
            ]
        );
        let after = predict(&sso, None, &changes, None).unwrap();
        assert_eq!(plan(&sso, &observed(Some(after))), Ok(vec![]));
        let linked_elsewhere = Account {
            upstream_links: vec![
                link("SSO", "u-2"),
                link("01J0000000000000000000000X", "u-1"),
            ],
            ..account(false)
        };
        assert_eq!(
            plan(&sso, &observed(Some(linked_elsewhere.clone()))),
            Ok(vec![
                Change::AddUpstreamLink(link("SSO", "u-1")),
                Change::RemoveUpstreamLink(link("SSO", "u-2")),
                Change::RemoveUpstreamLink(link("01J0000000000000000000000X", "u-1"))
            ])
        );
        // Not declared, links are left alone; an empty list creates nothing.
        assert_eq!(
            plan(&desired("alice"), &observed(Some(linked_elsewhere))),
            Ok(vec![])
        );
        let none = DesiredUser {
            login: crate::model::LoginOptions {
                upstream_links: Some(vec![]),
                ..Default::default()
            },
            ..sso
        };
        assert_eq!(
            plan(&none, &observed(None)),
            Err(PlanError::PasswordNeeded { verb: "created" })
        );
    }

    /// Dendrite without its database: facts the read could not see.
    fn unseen(admin: Seen<bool>, deactivated: Seen<bool>) -> Observed {
        observed(Some(Account {
            admin,
            deactivated,
            ..account(false)
        }))
    }

    #[test]
    fn an_unseen_deactivation_is_never_guessed() {
        let present = desired("alice");
        let not_seen = Err(PlanError::NotSeen {
            fact: Fact::Deactivated,
        });
        let unknown = unseen(Seen::Unknown, Seen::Unknown);
        assert_eq!(plan(&present, &unknown), not_seen);
        let absent = DesiredUser {
            state: UserState::Absent,
            ..desired("alice")
        };
        assert_eq!(plan(&absent, &unknown), not_seen);
        // An account seen active needs no more.
        assert_eq!(
            plan(&present, &unseen(Seen::Unknown, Seen::Known(false))),
            Ok(vec![])
        );
        // A password that does not log in is set with `always`; the backend
        // finds out by logging in with it whether the account was deactivated.
        let always = DesiredUser {
            update_password: UpdatePassword::Always,
            ..desired("alice")
        };
        let refused_login = Observed {
            password_matches: Some(false),
            ..unknown.clone()
        };
        assert_eq!(
            plan(&always, &refused_login),
            Ok(vec![Change::SetPassword {
                password: Secret::new("pw")
            }])
        );
        assert_eq!(plan(&present, &refused_login), not_seen);
    }

    #[test]
    fn a_declared_admin_flag_that_was_not_seen_is_refused() {
        let promote = with_admin(true);
        let not_seen = Err(PlanError::NotSeen { fact: Fact::Admin });
        assert_eq!(
            plan(&promote, &unseen(Seen::Unknown, Seen::Known(false))),
            not_seen
        );
        assert_eq!(
            plan(&promote, &unseen(Seen::Unknown, Seen::Unknown)),
            not_seen
        );
        assert_eq!(
            plan(&promote, &unseen(Seen::Known(true), Seen::Known(false))),
            Ok(vec![])
        );
    }

    #[test]
    fn unseen_facts_stay_unknown_in_the_prediction_unless_a_change_sets_them() {
        let user = named("A");
        let mut before = account(false);
        before.admin = Seen::Unknown;
        let after = predict(&user, Some(&before), &[Change::SetDisplayname], None).unwrap();
        assert_eq!(after.admin, Seen::Unknown);
        assert_eq!(serde_json::to_value(&after).unwrap()["admin"], "unknown");
        let promoted = predict(&user, Some(&before), &[Change::SetAdmin(true)], None).unwrap();
        assert_eq!(promoted.admin, Seen::Known(true));
    }

    fn restricted(
        locked: Option<bool>,
        suspended: Option<bool>,
        shadow_banned: Option<bool>,
    ) -> DesiredUser {
        DesiredUser {
            restrictions: Restrictions {
                locked,
                suspended,
                shadow_banned,
            },
            ..desired("alice")
        }
    }

    #[test]
    fn restrictions_are_applied_and_lifted_only_when_they_differ() {
        let user = restricted(Some(true), Some(true), Some(false));
        let changes = plan(&user, &observed(Some(account(false)))).unwrap();
        assert_eq!(
            changes,
            vec![
                Change::Restrict(Restriction::Locked, true),
                Change::Restrict(Restriction::Suspended, true)
            ]
        );
        let words: Vec<&str> = changes.iter().map(Change::describe).collect();
        assert_eq!(words, ["locked", "suspended"]);
        let after = predict(&user, Some(&account(false)), &changes, None).unwrap();
        assert_eq!(plan(&user, &observed(Some(after.clone()))), Ok(vec![]));
        let lift = restricted(Some(false), Some(false), Some(false));
        let words: Vec<&str> = plan(&lift, &observed(Some(after)))
            .unwrap()
            .iter()
            .map(Change::describe)
            .collect();
        assert_eq!(words, ["unlocked", "unsuspended"]);
        let banned = restricted(None, None, Some(true));
        assert_eq!(
            plan(&banned, &observed(Some(account(false))))
                .unwrap()
                .iter()
                .map(Change::describe)
                .collect::<Vec<_>>(),
            ["shadow-banned"]
        );
        // Undeclared restrictions are left as they are.
        let mut locked = account(false);
        locked.restrictions.locked = Seen::Known(true);
        assert_eq!(plan(&desired("alice"), &observed(Some(locked))), Ok(vec![]));
    }

    #[test]
    fn a_new_user_is_created_then_restricted_as_declared() {
        let user = restricted(Some(true), Some(false), Some(true));
        let changes = planned_for_a_new_account(
            &user,
            vec![
                Change::Restrict(Restriction::Locked, true),
                Change::Restrict(Restriction::ShadowBanned, true),
            ],
        );
        let after = predict(&user, None, &changes, None).unwrap();
        assert_eq!(
            after.restrictions,
            Restrictions {
                locked: Seen::Known(true),
                suspended: Seen::Known(false),
                shadow_banned: Seen::Known(true),
            }
        );
    }

    #[test]
    fn a_declared_restriction_that_was_not_seen_is_refused_and_unseen_ones_are_not_shown() {
        let mut listed = account(false);
        listed.restrictions.suspended = Seen::Unknown;
        let user = restricted(None, Some(true), None);
        assert!(listed.lacks_any_of(&user));
        assert!(!listed.lacks_any_of(&restricted(Some(true), None, None)));
        assert_eq!(
            plan(&user, &observed(Some(listed.clone()))),
            Err(PlanError::NotSeen {
                fact: Fact::Restriction(Restriction::Suspended)
            })
        );
        let shown = serde_json::to_value(&listed).unwrap();
        assert_eq!(shown["locked"], false);
        assert!(shown.get("suspended").is_none(), "{shown}");
    }

    #[test]
    fn the_password_of_an_account_kept_or_found_locked_is_not_checked() {
        let mut locked = account(false);
        locked.restrictions.locked = Seen::Known(true);
        let always = DesiredUser {
            update_password: UpdatePassword::Always,
            ..restricted(Some(true), None, None)
        };
        assert!(!needs_password_check(&always, Some(&locked)));
        let unlocking = DesiredUser {
            update_password: UpdatePassword::Always,
            ..restricted(Some(false), None, None)
        };
        assert!(!needs_password_check(&unlocking, Some(&locked)));
        assert!(needs_password_check(&unlocking, Some(&account(false))));
        // Locked by someone else: nothing to check with, and the plan says how to go on.
        let undeclared = DesiredUser {
            update_password: UpdatePassword::Always,
            ..desired("alice")
        };
        assert!(!needs_password_check(&undeclared, Some(&locked)));
        assert_eq!(
            plan(&undeclared, &observed(Some(locked))),
            Err(PlanError::LockedPasswordUnchecked)
        );
    }

    fn limited(ratelimit: Option<Option<Ratelimit>>) -> DesiredUser {
        DesiredUser {
            ratelimit,
            ..desired("alice")
        }
    }

    const FIVE_TEN: Ratelimit = Ratelimit {
        messages_per_second: 5,
        burst_count: 10,
    };

    #[test]
    fn a_ratelimit_override_is_set_changed_and_removed_only_when_it_differs() {
        let unlimited = limited(Some(Some(Ratelimit::UNLIMITED)));
        let after = planned_once(
            &unlimited,
            &account(false),
            Change::SetRatelimit(Some(Ratelimit::UNLIMITED)),
            "ratelimit set",
        );
        assert_eq!(
            serde_json::to_value(&after).unwrap()["ratelimit"],
            "unlimited"
        );
        let five_ten = limited(Some(Some(FIVE_TEN)));
        assert_eq!(
            plan(&five_ten, &observed(Some(after.clone()))),
            Ok(vec![Change::SetRatelimit(Some(FIVE_TEN))])
        );
        let default = limited(Some(None));
        let removed = plan(&default, &observed(Some(after))).unwrap();
        assert_eq!(removed, vec![Change::SetRatelimit(None)]);
        assert_eq!(removed[0].describe(), "ratelimit removed");
        assert_eq!(plan(&default, &observed(Some(account(false)))), Ok(vec![]));
        // Undeclared, an override is left alone and not shown.
        let mut overridden = account(false);
        overridden.ratelimit = Seen::Known(Some(FIVE_TEN));
        assert_eq!(
            plan(&desired("alice"), &observed(Some(overridden))),
            Ok(vec![])
        );
        let listed = Account {
            ratelimit: Seen::Unknown,
            avatar: Seen::Unknown,
            ..account(false)
        };
        assert!(listed.lacks_any_of(&five_ten));
        assert!(!listed.lacks_any_of(&desired("alice")));
        assert_eq!(
            plan(&five_ten, &observed(Some(listed.clone()))),
            Err(PlanError::NotSeen {
                fact: Fact::Ratelimit
            })
        );
        assert!(serde_json::to_value(&listed)
            .unwrap()
            .get("ratelimit")
            .is_none());
    }

    #[test]
    fn a_new_user_gets_its_declared_override_after_creation() {
        let user = limited(Some(Some(FIVE_TEN)));
        let changes = planned_for_a_new_account(&user, vec![Change::SetRatelimit(Some(FIVE_TEN))]);
        let after = predict(&user, None, &changes, None).unwrap();
        assert_eq!(
            serde_json::to_value(&after).unwrap()["ratelimit"],
            serde_json::json!({"messages_per_second": 5, "burst_count": 10})
        );
        // A new account has no override: `default` needs no change.
        assert_eq!(
            plan(&limited(Some(None)), &observed(None)).unwrap().len(),
            1
        );
    }

    fn identified(emails: Option<Vec<&str>>, ids: Option<Vec<ExternalId>>) -> DesiredUser {
        DesiredUser {
            emails: emails.map(|e| e.into_iter().map(String::from).collect()),
            external_ids: ids,
            ..desired("alice")
        }
    }

    fn github(id: &str) -> ExternalId {
        ExternalId {
            auth_provider: "oidc-github".into(),
            external_id: id.into(),
        }
    }

    #[test]
    fn emails_and_external_ids_change_only_when_the_sets_differ() {
        let both = identified(Some(vec!["a@x", "b@x"]), Some(vec![github("1")]));
        let changes = plan(&both, &observed(Some(account(false)))).unwrap();
        assert_eq!(changes, vec![Change::SetEmails, Change::SetExternalIds]);
        assert_eq!(changes[0].describe(), "emails changed");
        assert_eq!(changes[1].describe(), "external_ids changed");
        let after = predict(&both, Some(&account(false)), &changes, None).unwrap();
        let shown = serde_json::to_value(&after).unwrap();
        assert_eq!(shown["emails"], serde_json::json!(["a@x", "b@x"]));
        assert_eq!(
            shown["external_ids"],
            serde_json::json!([{"auth_provider": "oidc-github", "external_id": "1"}])
        );
        assert_eq!(plan(&both, &observed(Some(after.clone()))), Ok(vec![]));
        // Order makes no difference (the backend puts addresses in the
        // server's form, which compares them).
        let stored = Account {
            emails: Seen::Known(vec!["b@x".into(), "a@x".into()]),
            ..after.clone()
        };
        assert_eq!(plan(&both, &observed(Some(stored))), Ok(vec![]));
        // An empty list removes every one.
        let none = identified(Some(vec![]), Some(vec![]));
        assert_eq!(
            plan(&none, &observed(Some(after.clone()))),
            Ok(vec![Change::SetEmails, Change::SetExternalIds])
        );
        assert_eq!(plan(&none, &observed(Some(account(false)))), Ok(vec![]));
        // Undeclared, neither is compared.
        assert_eq!(plan(&desired("alice"), &observed(Some(after))), Ok(vec![]));
        let listed = Account {
            emails: Seen::Unknown,
            external_ids: Seen::Unknown,
            ..account(false)
        };
        assert!(listed.lacks_any_of(&identified(Some(vec![]), None)));
        assert!(listed.lacks_any_of(&identified(None, Some(vec![]))));
        assert!(!listed.lacks_any_of(&desired("alice")));
        assert_eq!(
            plan(
                &identified(None, Some(vec![])),
                &observed(Some(listed.clone()))
            ),
            Err(PlanError::NotSeen {
                fact: Fact::ExternalIds
            })
        );
        assert_eq!(
            plan(&identified(Some(vec![]), None), &observed(Some(listed))),
            Err(PlanError::NotSeen { fact: Fact::Emails })
        );
    }

    #[test]
    fn a_new_user_gets_its_emails_and_external_ids_after_creation() {
        let user = identified(Some(vec!["a@x"]), Some(vec![github("1")]));
        planned_for_a_new_account(&user, vec![Change::SetEmails, Change::SetExternalIds]);
        // A new account has none: empty lists need no change.
        let empty = identified(Some(vec![]), Some(vec![]));
        assert_eq!(plan(&empty, &observed(None)).unwrap().len(), 1);
    }

    fn in_rooms(rooms: &[&str]) -> DesiredUser {
        DesiredUser {
            rooms: rooms.iter().map(|r| Room::parse(r).unwrap()).collect(),
            ..desired("alice")
        }
    }

    #[test]
    fn only_the_declared_rooms_not_joined_are_joined() {
        let user = in_rooms(&["#general:x", "!abc:x"]);
        let general = user.rooms[0].clone();
        let mut joined = account(false);
        joined.rooms = Seen::Known(vec![general.clone()]);
        let after = planned_once(
            &user,
            &joined,
            Change::JoinRooms(vec![user.rooms[1].clone()]),
            "rooms joined",
        );
        assert_eq!(
            serde_json::to_value(&after).unwrap()["rooms"],
            serde_json::json!(["#general:x", "!abc:x"])
        );
        // A room left out of the declaration is never left.
        assert_eq!(
            plan(&in_rooms(&["#general:x"]), &observed(Some(joined.clone()))),
            Ok(vec![])
        );
        // Undeclared, membership is neither compared nor shown.
        assert_eq!(
            plan(&desired("alice"), &observed(Some(account(false)))),
            Ok(vec![])
        );
        assert!(serde_json::to_value(account(false))
            .unwrap()
            .get("rooms")
            .is_none());
        assert!(account(false).lacks_any_of(&user));
        assert!(!joined.lacks_any_of(&user));
        assert_eq!(
            plan(&user, &observed(Some(account(false)))),
            Err(PlanError::NotSeen { fact: Fact::Rooms })
        );
    }

    #[test]
    fn a_new_user_joins_its_declared_rooms_after_creation() {
        let user = in_rooms(&["#general:x"]);
        let changes = planned_for_a_new_account(&user, vec![Change::JoinRooms(user.rooms.clone())]);
        let after = predict(&user, None, &changes, None).unwrap();
        assert_eq!(after.rooms, Seen::Known(user.rooms.clone()));
        // A user to deactivate joins nothing.
        let absent = DesiredUser {
            state: UserState::Absent,
            ..user
        };
        assert_eq!(
            plan(&absent, &observed(Some(account(false)))),
            Ok(vec![Change::Deactivate { erase: false }])
        );
    }

    #[test]
    fn a_user_declaring_rooms_and_identifiers_is_read_alone_and_gets_both() {
        let user = DesiredUser {
            restrictions: Restrictions {
                suspended: Some(true),
                ..Restrictions::default()
            },
            rooms: in_rooms(&["#general:x"]).rooms,
            ..identified(Some(vec!["a@x"]), Some(vec![github("1")]))
        };
        // Synapse's update still suspends last, after the joins it refuses
        // a suspended user.
        planned_for_a_new_account(
            &user,
            vec![
                Change::Restrict(Restriction::Suspended, true),
                Change::SetEmails,
                Change::SetExternalIds,
                Change::JoinRooms(user.rooms.clone()),
            ],
        );
        let mut read = account(false);
        read.rooms = Seen::Known(vec![]);
        assert!(!read.lacks_any_of(&user));
        for listed in [
            Account {
                rooms: Seen::Unknown,
                ..read.clone()
            },
            Account {
                emails: Seen::Unknown,
                ..read.clone()
            },
            Account {
                external_ids: Seen::Unknown,
                ..read
            },
        ] {
            assert!(listed.lacks_any_of(&user), "{listed:?}");
        }
    }

    fn with_avatar(avatar: Avatar) -> DesiredUser {
        DesiredUser {
            avatar: Some(avatar),
            ..desired("alice")
        }
    }

    fn seen_avatar(uri: Option<&str>, is_declared_file: Option<bool>) -> Account {
        Account {
            avatar: Seen::Known(SeenAvatar {
                uri: uri.map(str::to_string),
                is_declared_file,
            }),
            ..account(false)
        }
    }

    fn image_file() -> Avatar {
        Avatar::File(crate::model::AvatarFile {
            path: "/srv/bot.png".into(),
            content_type: "image/png",
            bytes: std::sync::Arc::from(&b"\x89PNG\r\n\x1a\n"[..]),
        })
    }

    #[test]
    fn an_avatar_uri_is_set_only_when_it_differs() {
        let uri = Avatar::Uri("mxc://example.com/new".into());
        let user = with_avatar(uri.clone());
        let old = seen_avatar(Some("mxc://example.com/old"), None);
        let after = planned_once(&user, &old, Change::SetAvatar(uri.clone()), "avatar set");
        assert_eq!(
            serde_json::to_value(&after).unwrap()["avatar"],
            "mxc://example.com/new"
        );
        let none = seen_avatar(None, None);
        assert_eq!(serde_json::to_value(&none).unwrap()["avatar"], Value::Null);
        assert_eq!(
            plan(&user, &observed(Some(none))),
            Ok(vec![Change::SetAvatar(uri)])
        );
        // Undeclared, the avatar is neither compared nor shown.
        assert_eq!(plan(&desired("alice"), &observed(Some(old))), Ok(vec![]));
        assert!(serde_json::to_value(account(false))
            .unwrap()
            .get("avatar")
            .is_none());
    }

    #[test]
    fn an_avatar_file_is_uploaded_only_when_the_avatar_is_not_its_content() {
        let user = with_avatar(image_file());
        let same = seen_avatar(Some("mxc://example.com/up"), Some(true));
        assert_eq!(plan(&user, &observed(Some(same))), Ok(vec![]));
        let other = seen_avatar(Some("mxc://example.com/up"), Some(false));
        let after = planned_once(
            &user,
            &other,
            Change::SetAvatar(image_file()),
            "avatar uploaded",
        );
        // The diff's after names the file to upload; its URI is not known before.
        assert_eq!(
            serde_json::to_value(&after).unwrap()["avatar"],
            "/srv/bot.png"
        );
        // Content not compared (a read that did not download): no guess.
        let not_compared = seen_avatar(Some("mxc://example.com/up"), None);
        assert_eq!(
            plan(&user, &observed(Some(not_compared))),
            Err(PlanError::NotSeen { fact: Fact::Avatar })
        );
        let listed = account(false);
        assert!(listed.lacks_any_of(&user));
        assert!(!listed.lacks_any_of(&desired("alice")));
        assert_eq!(
            plan(&user, &observed(Some(listed))),
            Err(PlanError::NotSeen { fact: Fact::Avatar })
        );
    }

    #[test]
    fn a_new_user_gets_its_declared_avatar_after_creation() {
        let user = with_avatar(image_file());
        let changes = planned_for_a_new_account(&user, vec![Change::SetAvatar(image_file())]);
        let after = predict(&user, None, &changes, None).unwrap();
        assert_eq!(
            serde_json::to_value(&after).unwrap()["avatar"],
            "/srv/bot.png"
        );
    }

    #[test]
    fn an_access_token_is_written_for_a_new_account_or_when_the_file_holds_none_valid() {
        let bot = DesiredUser {
            access_token_file: Some("/etc/bot/token".into()),
            ..desired("bot")
        };
        let create = plan(&bot, &observed(None)).unwrap();
        assert_eq!(
            plan_access_token(&bot, &observed(None), &create),
            Some(Change::WriteAccessToken)
        );
        let valid = |valid| Observed {
            access_token_valid: Some(valid),
            ..observed(Some(account(false)))
        };
        assert_eq!(plan_access_token(&bot, &valid(true), &[]), None);
        assert_eq!(
            plan_access_token(&bot, &valid(false), &[]),
            Some(Change::WriteAccessToken)
        );
        let leaving = DesiredUser {
            state: UserState::Absent,
            ..bot.clone()
        };
        assert_eq!(plan_access_token(&leaving, &valid(false), &[]), None);
        assert_eq!(plan_access_token(&desired("bot"), &valid(false), &[]), None);
    }
}
