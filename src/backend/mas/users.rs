//! MAS's users: creating one (with its display name on MAS 1.18 and
//! later), its password, admin flag, lock and deactivation, applying the
//! planned changes in order, and reading a user into an [`Account`].

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::admin_api::{expect_ok, resource_id, unexpected, user_path};
use super::{Mas, MasError, MasFieldProblem, MasUser, MasUserProblem};
use crate::backend::{AccountServer, ServerError, UserErrorKind};
use crate::http::{server_word, Reply};
use crate::matrix_id::UserId;
use crate::model::{Account, Change, DesiredUser, Restriction, Restrictions, Seen};
use crate::secret::Secret;

/// The `AddUserRequest` of `user`, with its display name (MAS 1.18 and later).
pub(super) fn new_user(user: &UserId, desired: &DesiredUser) -> Value {
    let mut body = json!({"username": user.localpart()});
    if let Some(name) = &desired.displayname {
        body["displayname"] = json!(name);
    }
    body
}

/// Whether MAS's `version` (`v1.22.0`, `1.18.1+build`) is a release older
/// than `minimum` (major, minor). A version that is no release number is
/// not: a MAS built without git metadata reports vergen's placeholder
/// `VERGEN_IDEMPOTENT_OUTPUT` (crates/cli/build.rs), whatever its code, so
/// the module sends the display name and lets MAS answer for itself.
pub(super) fn release_older_than(version: &str, minimum: (u64, u64)) -> bool {
    let mut numbers = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|n| n.parse::<u64>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < minimum,
        _ => false,
    }
}

/// The account `found` shows, with `emails` when they were read and the
/// display name the homeserver shows (see [`super::homeserver`]), as one read or a
/// list reads it; upstream links only when read (see [`MasUser::links`]).
pub(super) fn mas_account(
    found: &MasUser,
    emails: Seen<Vec<String>>,
    displayname: Seen<Option<String>>,
) -> Account {
    Account {
        admin: Seen::Known(found.admin),
        deactivated: Seen::Known(found.deactivated),
        displayname,
        emails,
        upstream_links: found.links.iter().map(|l| l.shown.clone()).collect(),
        restrictions: Restrictions {
            locked: Seen::Known(found.locked),
            ..Restrictions::default()
        },
        ..Account::unseen()
    }
}

/// MAS's 409 for a username its homeserver reports as unavailable.
pub(super) fn is_reserved(reply: &Reply) -> bool {
    reply.status == StatusCode::CONFLICT && reply.explanation().contains("reserved")
}

/// A `SingleResponse_for_User`.
pub(super) fn parse_user(body: &Value, what: &str) -> Result<MasUser, ServerError> {
    let attributes = body
        .pointer("/data/attributes")
        .ok_or_else(|| unexpected(what, "no data.attributes"))?;
    let is_set = |name: &str| attributes.get(name).is_some_and(|v| !v.is_null());
    Ok(MasUser {
        id: resource_id(body, what)?,
        admin: attributes
            .get("admin")
            .and_then(Value::as_bool)
            .ok_or_else(|| unexpected(what, "no admin flag"))?,
        deactivated: is_set("deactivated_at"),
        locked: is_set("locked_at"),
        links: Vec::new(),
        emails: Vec::new(),
    })
}

impl Mas {
    /// The user MAS knows as `user`, from the read that preceded this write.
    pub(super) async fn known_user(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<MasUser, ServerError> {
        if let Some(found) = self.known.borrow().get(user) {
            return Ok(found.clone());
        }
        self.account(user, desired).await?;
        self.known
            .borrow()
            .get(user)
            .cloned()
            .ok_or_else(|| unexpected(&format!("updating {user}"), "it no longer exists in MAS"))
    }

    /// `POST /users` (with the display name); `skip_homeserver_check`
    /// creates a user the homeserver already has (MAS's answer to half-made
    /// accounts).
    pub(super) async fn add_user(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        skip_homeserver_check: bool,
    ) -> Result<Reply, ServerError> {
        let mut body = new_user(user, desired);
        if skip_homeserver_check {
            body["skip_homeserver_check"] = json!(true);
        }
        self.admin(Method::POST, "/users", Some(&body))
            .await
            .map_err(|error| match error.is_answer_lost() {
                // It may exist now, without a password, which a later run
                // with update_password: on_create would never set.
                true => ServerError::user(
                    user,
                    UserErrorKind::CreationUnconfirmed {
                        cause: Box::new(error),
                    },
                ),
                false => error,
            })
    }

    /// Creates `user` with its password, or without one for a user who
    /// logs in through an upstream provider.
    pub(super) async fn create_account(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: Option<&Secret>,
    ) -> Result<(), ServerError> {
        let mut reply = self.add_user(user, desired, false).await?;
        if self.adopt_existing && is_reserved(&reply) {
            // Only after the homeserver said it has the name, so that
            // adopting never skips the check for a name it does not hold.
            reply = self.add_user(user, desired, true).await?;
        }
        let id = match reply.status {
            StatusCode::CREATED | StatusCode::OK => resource_id(&reply.body, "creating the user")?,
            StatusCode::CONFLICT if is_reserved(&reply) => {
                return Err(MasError::user(user, MasUserProblem::UsernameReserved))
            }
            StatusCode::CONFLICT => {
                return Err(ServerError::user(user, UserErrorKind::CreatedMeanwhile))
            }
            _ => return Err(ServerError::refused("creating the user", &reply)),
        };
        let unfinished = |cause: ServerError, state: String, landed: Vec<Change>| {
            MasError::user(
                user,
                MasUserProblem::CreatedUnfinished {
                    cause: Box::new(cause),
                    state,
                    landed,
                },
            )
        };
        let created = match password {
            Some(password) => Change::Create {
                password: password.clone(),
            },
            None => Change::CreateWithoutPassword,
        };
        let refused = match password {
            Some(password) => self.set_password(&id, password, desired).await.err(),
            None => None,
        };
        if let Some(cause) = refused {
            // MAS cannot tell later whether a user has a password, so a run
            // with update_password: on_create would never set it. Deactivated,
            // the user is one the next run reactivates, with its password.
            let (state, landed) = match self.deactivate(&id, false).await {
                Ok(()) => (
                    "then deactivated so that nobody uses it without a password; \
                     the next run with an accepted password reactivates it"
                        .to_string(),
                    vec![created, Change::Deactivate { erase: false }],
                ),
                Err(error) => (
                    format!(
                        "but has no password, and deactivating it failed too ({error}); \
                         run again with update_password: always to give it one"
                    ),
                    vec![created],
                ),
            };
            return Err(unfinished(cause, state, landed));
        }
        let rest = async {
            if desired.admin == Some(true) {
                self.set_admin(&id, true).await?;
            }
            if let Some(email) = &desired.email {
                self.add_email(&id, email).await?;
            }
            Ok(())
        };
        let with = match password {
            Some(_) => "with its password",
            None => "without a password (it logs in upstream)",
        };
        rest.await.map_err(|cause| {
            let state = format!(
                "{with}; run again to finish it \
                 (the admin flag, e-mail and upstream links are compared on every run)"
            );
            unfinished(cause, state, vec![created])
        })
    }

    /// MAS takes a display name at creation since 1.18; older versions
    /// ignore it. A MAS without `/version` is older than 1.4.
    pub(super) async fn refuse_displaynames_before_1_18(
        &self,
        named: &DesiredUser,
    ) -> Result<(), ServerError> {
        let reply = self.admin(Method::GET, "/version", None).await?;
        let version = match reply.body.get("version").and_then(Value::as_str) {
            Some(version) if reply.status == StatusCode::OK => version.to_string(),
            _ => "(which has no /api/admin/v1/version)".to_string(),
        };
        let no_version = reply.status != StatusCode::OK;
        if !no_version && !release_older_than(&version, (1, 18)) {
            return Ok(());
        }
        Err(ServerError::Mas(MasError::Field {
            field: named.field_name("displayname"),
            kind: MasFieldProblem::DisplaynameNeedsVersion {
                version: server_word(&version),
            },
        }))
    }

    /// `desired` says whether MAS's complexity policy is skipped.
    pub(super) async fn set_password(
        &self,
        id: &str,
        password: &Secret,
        desired: &DesiredUser,
    ) -> Result<(), ServerError> {
        if !self.password_login {
            return Err(ServerError::Mas(MasError::PasswordsDisabled));
        }
        let mut body = json!({"password": password.expose()});
        if desired.login.skip_password_check {
            body["skip_password_check"] = json!(true);
        }
        let reply = self
            .admin(Method::POST, &user_path(id, "/set-password"), Some(&body))
            .await?;
        match reply.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            StatusCode::BAD_REQUEST if reply.explanation().contains("too weak") => {
                Err(ServerError::Mas(MasError::PasswordTooWeak {
                    minimum: self.minimum_complexity,
                }))
            }
            StatusCode::FORBIDDEN => Err(ServerError::Mas(MasError::PasswordsDisabled)),
            _ => Err(ServerError::refused("setting the password", &reply)),
        }
    }

    pub(super) async fn set_admin(&self, id: &str, admin: bool) -> Result<(), ServerError> {
        let reply = self
            .admin(
                Method::POST,
                &user_path(id, "/set-admin"),
                Some(&json!({ "admin": admin })),
            )
            .await?;
        expect_ok(reply, "setting the admin flag")
    }

    pub(super) async fn deactivate(&self, id: &str, erase: bool) -> Result<(), ServerError> {
        // MAS erases by default; the module erases only when asked to.
        let reply = self
            .admin(
                Method::POST,
                &user_path(id, "/deactivate"),
                Some(&json!({ "skip_erase": !erase })),
            )
            .await?;
        expect_ok(reply, "deactivating the user")
    }

    pub(super) async fn set_locked(&self, id: &str, locked: bool) -> Result<(), ServerError> {
        let (action, what) = match locked {
            true => ("/lock", "locking the user"),
            false => ("/unlock", "unlocking the user"),
        };
        let reply = self
            .admin(Method::POST, &user_path(id, action), None)
            .await?;
        expect_ok(reply, what)
    }

    /// A lock left from its deactivation stays when `desired` declares one.
    pub(super) async fn reactivate(
        &self,
        found: &MasUser,
        password: Option<&Secret>,
        desired: &DesiredUser,
    ) -> Result<(), ServerError> {
        let keep_locked = desired.restrictions.locked == Some(true);
        // The password first: if MAS refuses it, the user stays deactivated,
        // and nobody can use an account whose password is not the declared one.
        if let Some(password) = password {
            self.set_password(&found.id, password, desired).await?;
        }
        let reply = self
            .admin(Method::POST, &user_path(&found.id, "/reactivate"), None)
            .await?;
        expect_ok(reply, "reactivating the user")?;
        // MAS before 1.0 locked users on deactivation, and reactivating does not unlock.
        if found.locked && !keep_locked {
            self.set_locked(&found.id, false).await?;
        }
        Ok(())
    }

    /// Applies `changes` to the existing `user`, in order.
    pub(super) async fn apply(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError> {
        let found = self.known_user(user, desired).await?;
        for change in changes {
            match change {
                Change::Deactivate { erase } => self.deactivate(&found.id, *erase).await?,
                Change::Reactivate { password } => {
                    self.reactivate(&found, Some(password), desired).await?
                }
                Change::ReactivateWithoutPassword => self.reactivate(&found, None, desired).await?,
                // Reactivation lifted a lock left from deactivation already.
                Change::Restrict(Restriction::Locked, false)
                    if changes.iter().any(|c| {
                        matches!(
                            c,
                            Change::Reactivate { .. } | Change::ReactivateWithoutPassword
                        )
                    }) => {}
                Change::Restrict(Restriction::Locked, locked) => {
                    self.set_locked(&found.id, *locked).await?
                }
                Change::SetAdmin(admin) => self.set_admin(&found.id, *admin).await?,
                Change::AddEmail(email) => self.add_email(&found.id, email).await?,
                Change::SetEmails => {
                    let wanted = desired.emails.as_deref().unwrap_or_default();
                    self.set_emails(&found, wanted).await?
                }
                Change::SetPassword { password } => {
                    self.set_password(&found.id, password, desired).await?
                }
                Change::WriteAccessToken => self.write_personal_token(&found.id, desired).await?,
                Change::AddUpstreamLink(link) => self.add_link(&found.id, link).await?,
                Change::RemoveUpstreamLink(link) => self.remove_link(&found, link).await?,
                // Creation is done above or by create(); refuse_impossible
                // refuses a display name change; check_declaration refuses
                // user types, suspension, shadow-ban, ratelimit, rooms,
                // external_ids and avatar for MAS. So none of these
                // is planned here.
                Change::Create { .. }
                | Change::CreateWithoutPassword
                | Change::SetDisplayname
                | Change::SetUserType(_)
                | Change::Restrict(_, _)
                | Change::SetRatelimit(_)
                | Change::JoinRooms(_)
                | Change::SetExternalIds
                | Change::SetAvatar(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_from_the_admin_api_resource() {
        let body = json!({"data": {"type": "user", "id": "01040G2081040G2081040G2081",
            "attributes": {"username": "alice", "created_at": "1970-01-01T00:00:00Z",
                "locked_at": "1970-01-01T00:00:00Z", "deactivated_at": null,
                "admin": true, "legacy_guest": false}}});
        assert_eq!(
            parse_user(&body, "test").unwrap(),
            MasUser {
                id: "01040G2081040G2081040G2081".into(),
                admin: true,
                deactivated: false,
                locked: true,
                links: vec![],
                emails: vec![],
            }
        );
        assert!(parse_user(&json!({"data": {"id": "x", "attributes": {}}}), "test").is_err());
    }

    #[test]
    fn versions_compare_by_major_and_minor_and_no_release_is_not_older() {
        assert!(!release_older_than("v1.22.0+contract", (1, 18)));
        assert!(!release_older_than("1.18.0", (1, 18)));
        assert!(!release_older_than("v2.0.0-rc.1", (1, 18)));
        assert!(release_older_than("v1.17.9", (1, 18)));
        assert!(release_older_than("v0.99.0", (1, 18)));
        assert!(!release_older_than("VERGEN_IDEMPOTENT_OUTPUT", (1, 18)));
    }
}
