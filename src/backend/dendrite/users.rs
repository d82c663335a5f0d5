//! Dendrite's accounts: reading one (from its database, or without it
//! from what the client and admin APIs show), its password, admin flag,
//! display name, deactivation and reactivation, and the password logins
//! these need.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::database::Database;
use super::{
    is_admin, AccountRow, AccountUpdate, Dendrite, DendriteError, ACCOUNT_TYPE_ADMIN,
    ACCOUNT_TYPE_USER,
};
use crate::backend::client_api::{self, logout, password_login, post_with_password, ProfileName};
use crate::backend::shared_secret::hex;
use crate::backend::ServerError;
use crate::http::{path_segment, Body, Http, Reply};
use crate::matrix_id::UserId;
use crate::model::{Account, DesiredUser, Seen, UserState};
use crate::secret::Secret;

/// Dendrite on SQLite answers 500 "database is locked" while another writer
/// holds the file; the same request succeeds a moment later.
pub(super) fn is_database_busy(reply: &Reply) -> bool {
    reply.status == StatusCode::INTERNAL_SERVER_ERROR
        && reply.explanation().contains("database is locked")
}

/// A password login; `None` when Dendrite refuses the password (or the
/// account is deactivated: Dendrite does not tell which).
pub(super) async fn login(
    http: &Http,
    user: &UserId,
    password: &Secret,
) -> Result<Option<Secret>, ServerError> {
    let session = password_login(http, &user.to_string(), password).await?;
    Ok(session.map(|session| session.token))
}

/// Dendrite logs every user it registers in: the session must be there.
pub(super) fn registered_session(
    (user_id, token): (String, Option<Secret>),
) -> Result<(String, Secret), ServerError> {
    match token {
        Some(token) => Ok((user_id, token)),
        None => Err(ServerError::Unexpected {
            what: format!("registering {user_id}"),
            detail: "no access_token in the answer".into(),
        }),
    }
}

pub(super) fn random_password() -> Secret {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the operating system provides random bytes");
    Secret::new(hex(&bytes))
}

impl Dendrite {
    pub(super) fn database(&self, what: impl FnOnce() -> String) -> Result<&Database, ServerError> {
        self.database
            .as_ref()
            .ok_or_else(|| ServerError::Dendrite(DendriteError::NeedsDatabase { what: what() }))
    }

    pub(super) fn account_from_row(
        &self,
        user: &UserId,
        row: AccountRow,
    ) -> Result<Account, ServerError> {
        let admin = match row.account_type {
            ACCOUNT_TYPE_USER => false,
            ACCOUNT_TYPE_ADMIN => true,
            other => {
                return Err(ServerError::Unexpected {
                    what: format!("reading {user}"),
                    detail: format!(
                        "its account_type is {other} ({}); matrix_user manages only user (1) and admin (3) accounts",
                        match other {
                            2 => "a guest",
                            4 => "an application service's account",
                            _ => "unknown to Dendrite 0.13",
                        }
                    ),
                })
            }
        };
        Ok(Account {
            admin: Seen::Known(admin),
            deactivated: Seen::Known(row.deactivated),
            displayname: Seen::Known(row.displayname.filter(|name| !name.is_empty())),
            ..Account::unseen()
        })
    }

    /// What the APIs show of an existing user, for runs without the
    /// database: existence and display name. Only a login with the declared
    /// password shows more: it proves the account active and, with the
    /// user's own token, whether it is an admin (asked only when the admin
    /// flag is declared: it costs a request). A failed login shows nothing
    /// (Dendrite refuses deactivated accounts as it refuses wrong passwords),
    /// so what it did not show stays [`Seen::Unknown`] and the plan decides.
    pub(super) async fn account_without_database(
        &self,
        user: &UserId,
        declared: &DesiredUser,
    ) -> Result<Option<Account>, ServerError> {
        if !self.exists(user).await? {
            return Ok(None);
        }
        let mut account = Account {
            displayname: Seen::Known(self.displayname(user).await?),
            ..Account::unseen()
        };
        let password = match (&declared.password, declared.state) {
            (Some(password), UserState::Present) => password,
            _ => return Ok(Some(account)),
        };
        let session = login(&self.http, user, password).await?;
        self.password_checked
            .borrow_mut()
            .insert(user.clone(), session.is_some());
        if let Some(session) = session {
            account.deactivated = Seen::Known(false);
            let probed = match declared.admin {
                Some(_) => Some(is_admin(&self.http, &session, &user.to_string()).await),
                None => None,
            };
            logout(&self.http, &session, &user.to_string()).await?;
            if let Some(probed) = probed {
                account.admin = Seen::Known(probed?);
            }
        }
        Ok(Some(account))
    }

    /// Without the database, a password that did not log in was set
    /// without knowing whether the account is deactivated: a login with
    /// it now tells.
    pub(super) async fn confirm_active(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<(), ServerError> {
        match login(&self.http, user, password).await? {
            Some(session) => logout(&self.http, &session, &user.to_string()).await,
            None => Err(ServerError::Dendrite(DendriteError::NeedsDatabase {
                what: format!(
                    "reactivating {user} (its password was set, but it still does not log in: it is deactivated)"
                ),
            })),
        }
    }

    /// Whether a user ID is taken, deactivated accounts included.
    pub(super) async fn exists(&self, user: &UserId) -> Result<bool, ServerError> {
        let what = format!("checking whether {user} exists");
        const AVAILABLE: &str = "/_matrix/client/v3/register/available";
        let user_id = user.to_string();
        let query = [("username", user_id.as_str())];
        let reply = self
            .http
            .send_query(Method::GET, AVAILABLE, &query, None, Body::None)
            .await?;
        match (reply.status, reply.errcode()) {
            (StatusCode::OK, _) if reply.body.get("available") == Some(&json!(true)) => Ok(false),
            // The same code answers for namespaces reserved by application services.
            (StatusCode::BAD_REQUEST, "M_USER_IN_USE")
                if !reply.explanation().contains("application service") =>
            {
                Ok(true)
            }
            _ => Err(ServerError::refused(what, &reply)),
        }
    }

    pub(super) async fn displayname(&self, user: &UserId) -> Result<Option<String>, ServerError> {
        match client_api::displayname(&self.http, user, Some(&self.token)).await? {
            ProfileName::Shown(name) => Ok(name),
            ProfileName::NoProfile => Ok(None),
        }
    }

    /// Sets a password and ends every session of the user.
    pub(super) async fn reset_password(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<(), ServerError> {
        self.set_password(user, password, true).await
    }

    /// Sets a password; `end_sessions` ends every session of the user too.
    pub(super) async fn set_password(
        &self,
        user: &UserId,
        password: &Secret,
        end_sessions: bool,
    ) -> Result<(), ServerError> {
        let reply = self
            .http
            .send(
                Method::POST,
                &format!(
                    "/_dendrite/admin/resetPassword/{}",
                    path_segment(&user.to_string())
                ),
                Some(&self.token),
                Body::Json(&json!({"password": password.expose(), "logout_devices": end_sessions})),
            )
            .await?;
        match reply.status {
            StatusCode::OK if reply.body.get("password_updated") == Some(&json!(true)) => Ok(()),
            _ => Err(ServerError::refused(
                format!("setting the password of {user}"),
                &reply,
            )),
        }
    }

    /// Dendrite deactivates only an account that asks for it itself, with
    /// its password: give it a random one, log in with it and ask. Its own
    /// password hash is read first and put back if anything after the
    /// replacement fails, so that a failure leaves the account as it was
    /// (still usable with its password), never locked by a password nobody
    /// knows. Its sessions are kept until the deactivation ends them.
    pub(super) async fn deactivate(&self, user: &UserId) -> Result<(), ServerError> {
        let what = format!("deactivating {user}");
        let database = self.database(|| what.clone())?;
        let own_hash = database
            .password_hash(user.localpart())
            .await?
            .ok_or_else(|| ServerError::Unexpected {
                what: what.clone(),
                detail: "the account is not in dendrite_database".into(),
            })?;
        let throwaway = random_password();
        self.set_password(user, &throwaway, false).await?;
        let deactivated = async {
            let session = login(&self.http, user, &throwaway).await?.ok_or_else(|| {
                ServerError::Unexpected {
                    what: what.clone(),
                    detail: "the password just set does not log in".into(),
                }
            })?;
            // Deactivation ends every session, this one included.
            let reply = post_with_password(
                &self.http,
                "/_matrix/client/v3/account/deactivate",
                &session,
                (&user.to_string(), &throwaway),
                json!({}),
            )
            .await;
            if matches!(&reply, Ok(reply) if reply.status == StatusCode::OK) {
                return Ok(());
            }
            // The failure is the error to report, whether or not this logout
            // works (after a lost answer, the session may be gone already).
            let _ = logout(&self.http, &session, &user.to_string()).await;
            match reply {
                Ok(reply) => Err(ServerError::refused(what.clone(), &reply)),
                Err(error) => Err(error.into()),
            }
        };
        let Err(cause) = deactivated.await else {
            return Ok(());
        };
        // Put back even if the deactivation landed and only its answer was
        // lost: a deactivated account's password no longer matters.
        let restored = database
            .update(user.localpart(), AccountUpdate::PasswordHash(&own_hash))
            .await;
        let done = match restored {
            Ok(true) => format!("{user} keeps its own password (matrix_user put it back)"),
            Ok(false) => format!("{user}'s password was replaced by a random one for the deactivation, and it is no longer in dendrite_database to put its own back"),
            Err(error) => format!("{user}'s password was replaced by a random one for the deactivation, and putting its own back failed ({error}); give it a password with update_password: always"),
        };
        Err(ServerError::Unfinished {
            done,
            cause: Box::new(cause),
        })
    }

    pub(super) async fn reactivate(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<(), ServerError> {
        let database = self.database(|| format!("reactivating {user}"))?;
        // The password first: an account reactivated with the throw-away
        // password of its deactivation could not be used by anyone.
        self.reset_password(user, password).await?;
        let reactivated = match database
            .update(user.localpart(), AccountUpdate::Reactivate)
            .await
        {
            Ok(true) => return Ok(()),
            Ok(false) => ServerError::Unexpected {
                what: format!("reactivating {user}"),
                detail: "the account is not in dendrite_database".into(),
            },
            Err(error) => error,
        };
        Err(ServerError::Unfinished {
            done: format!("{user}'s password was already set to the declared one, but the account is still deactivated"),
            cause: Box::new(reactivated),
        })
    }

    pub(super) async fn set_admin(&self, user: &UserId, admin: bool) -> Result<(), ServerError> {
        let verb = if admin { "promoting" } else { "demoting" };
        let database = self.database(|| format!("{verb} {user}"))?;
        let account_type = if admin {
            ACCOUNT_TYPE_ADMIN
        } else {
            ACCOUNT_TYPE_USER
        };
        let written = database
            .update(user.localpart(), AccountUpdate::AccountType(account_type))
            .await?;
        let missing = "no user or admin account of that name in dendrite_database";
        row_written(written, format!("{verb} {user}"), missing)
    }

    pub(super) async fn set_displayname(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<(), ServerError> {
        let what = format!("changing the displayname of {user}");
        let displayname = desired.displayname.as_deref().unwrap_or_default();
        if let Some(password) = &desired.password {
            if let Some(session) = login(&self.http, user, password).await? {
                let reply = self
                    .http
                    .send(
                        Method::PUT,
                        &format!(
                            "/_matrix/client/v3/profile/{}/displayname",
                            path_segment(&user.to_string())
                        ),
                        Some(&session),
                        Body::Json(&json!({ "displayname": displayname })),
                    )
                    .await;
                let logged_out = logout(&self.http, &session, &user.to_string()).await;
                // The change's own outcome first: a failed logout after a
                // successful change must not report the change as failed.
                let reply = reply?;
                if reply.status != StatusCode::OK {
                    return Err(ServerError::refused(what, &reply));
                }
                return logged_out;
            }
        }
        let database =
            self.database(|| format!("{what} without its current password as password"))?;
        let written = database
            .update(user.localpart(), AccountUpdate::Displayname(displayname))
            .await?;
        row_written(
            written,
            what,
            "the account has no profile in dendrite_database",
        )
    }
}

/// Whether a write to dendrite_database found its row; when it did not,
/// `what` failed because of the `missing` row.
fn row_written(written: bool, what: String, missing: &str) -> Result<(), ServerError> {
    match written {
        true => Ok(()),
        false => Err(ServerError::Unexpected {
            what,
            detail: missing.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_locked_database_is_worth_resending() {
        let reply = |status: StatusCode, error: &str| Reply {
            server: crate::http::HOMESERVER,
            status,
            body: json!({"errcode": "M_UNKNOWN", "error": error}),
        };
        let locked = "Internal server error: database is locked";
        assert!(is_database_busy(&reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            locked
        )));
        assert!(!is_database_busy(&reply(StatusCode::BAD_REQUEST, locked)));
        assert!(!is_database_busy(&reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no such table: userapi_accounts"
        )));
    }

    #[test]
    fn throwaway_passwords_are_long_and_differ() {
        let (a, b) = (random_password(), random_password());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 48);
    }
}
