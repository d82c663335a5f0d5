//! Dendrite, through its client and admin APIs and, where it has no API,
//! its user API database (`dendrite_database`).
//!
//! - Authentication: an `admin_token` when given; otherwise the module's
//!   service account, registered once as an admin with the shared secret,
//!   its token cached between runs, as for Synapse.
//! - Create: shared-secret registration (with the admin flag and display
//!   name). Dendrite logs every registered user in, so that session is
//!   logged out at once. Dendrite has no other way to create users, so
//!   creating needs the shared secret even with an `admin_token`.
//! - Read: with the database, one query gives existence, admin flag
//!   (`account_type` 3), deactivation and display name, for all users at
//!   once. Without it, `register/available` gives existence and the profile
//!   the display name; admin flag and deactivation are not visible through
//!   any API. A login with the declared password then shows the account is
//!   active and, with the user's own token, whether it is an admin; what it
//!   does not show is read as unknown, and the plan refuses what depends on
//!   it ([`AccountServer::not_seen`] asks for the database).
//! - Password check: a login with the declared password, logged out at once.
//!   Password change: `/_dendrite/admin/resetPassword`, which also ends the
//!   user's sessions (as Synapse's admin API does).
//! - Admin change: `account_type` in the database; Dendrite reads it on every
//!   request, so it takes effect at once.
//! - Display name: with the user's own session when the declared password
//!   logs in (Dendrite then renames the user in its rooms too), else in the
//!   database (rooms keep the old name until the user's next change).
//! - Deactivate: Dendrite's own self-deactivation, which leaves rooms and
//!   removes sessions and pushers: the password is first set to a random
//!   one, so this works whatever the declared password, and the old hash is
//!   written back if anything after that fails. Reactivate: reset to the
//!   declared password, then clear `is_deactivated` in the database.

mod capabilities;
#[cfg(feature = "databases")]
mod database;
#[cfg(not(feature = "databases"))]
#[path = "without_database.rs"]
mod database;
mod registration_tokens;
mod users;

use std::cell::RefCell;
use std::collections::HashMap;

use reqwest::{Method, StatusCode};

use self::database::Database;
use self::users::{is_database_busy, login, registered_session};
use super::client_api::logout;
use super::service_account::{identify, require_credentials, Access, AdminCheck};
use super::shared_secret::{register, Registration};
use super::{AccountServer, ServerError};
use crate::backend::declaration::refuse_without_databases;
use crate::backend::{Capabilities, DeclarationError};
use crate::http::{path_segment, Body, Http};
use crate::matrix_id::UserId;
use crate::model::ModuleArgs;
use crate::model::{Account, Change, DesiredUser, Fact, UserState};
use crate::secret::Secret;

pub struct Dendrite {
    http: Http,
    token: Secret,
    server_name: String,
    shared_secret: Option<Secret>,
    database: Option<Database>,
    /// Whether each user's declared password logged in, when a read already
    /// tried, so that the password check does not log in a second time.
    password_checked: RefCell<HashMap<UserId, bool>>,
}

/// A failure only Dendrite reports, wrapped in [`ServerError::Dendrite`].
#[derive(Debug, thiserror::Error)]
pub enum DendriteError {
    /// Dendrite keeps this only in its database, which was not given.
    #[error("{what} needs dendrite_database: the PostgreSQL URL or SQLite path of Dendrite's user API database (Dendrite has no API for it); give it (or dendrite_database_file, a file holding it) as in dendrite.yaml's user_api.account_database")]
    NeedsDatabase { what: String },
    /// Dendrite's database could not be opened, read or written.
    #[error("dendrite_database: {detail}; check that it is the PostgreSQL URL or SQLite path of Dendrite's user API database and that this host can reach and write it")]
    Database { detail: String },
    /// Dendrite creates users only by shared-secret registration.
    #[error("creating {user} needs registration_shared_secret: Dendrite has no admin API that creates users; give the secret from dendrite.yaml's client_api.registration_shared_secret")]
    NeedsSharedSecret { user: String },
}

/// Dendrite's passwords are 8 to 512 bytes (internal/validate.go).
const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=512;

/// Refuses a password Dendrite would refuse, before anything is sent.
fn refuse_password_length(user: &DesiredUser) -> Result<(), DeclarationError> {
    match &user.password {
        Some(password) if !PASSWORD_BYTES.contains(&password.expose().len()) => {
            Err(DeclarationError::refused(
                user.field_name("password"),
                "Dendrite accepts only passwords of 8 to 512 bytes (it answers \
                 M_WEAK_PASSWORD to shorter ones); choose one of that length",
            ))
        }
        _ => Ok(()),
    }
}

/// Dendrite's `account_type` values (userapi/api/api.go).
pub const ACCOUNT_TYPE_USER: i16 = 1;
pub const ACCOUNT_TYPE_ADMIN: i16 = 3;

/// One account as Dendrite's database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// 1 user, 2 guest, 3 admin, 4 application service.
    pub account_type: i16,
    pub deactivated: bool,
    pub displayname: Option<String>,
}

/// One change to an account in Dendrite's database.
// Its values are read by database.rs, which a build without it leaves out.
#[cfg_attr(not(feature = "databases"), expect(dead_code))]
pub enum AccountUpdate<'a> {
    /// Makes a user an admin or an admin a user.
    AccountType(i16),
    /// Clears the deactivated flag: the account's password works again.
    Reactivate,
    /// Puts back a hash read by `Database::password_hash`.
    PasswordHash(&'a Secret),
    /// Writes the profile's display name (room memberships keep the old one).
    Displayname(&'a str),
}

impl AccountServer for Dendrite {
    type Access = Access;

    const CAPABILITIES: Capabilities = capabilities::CAPABILITIES;

    fn check_declaration(args: &ModuleArgs) -> Result<Access, DeclarationError> {
        let access = require_credentials(&args.credentials)?;
        let credentials = &args.credentials;
        refuse_without_databases("dendrite_database", credentials.dendrite_database.is_some())?;
        Self::CAPABILITIES.refuse_unsupported(args)?;
        args.users.iter().try_for_each(refuse_password_length)?;
        Ok(access)
    }

    /// Authenticates, learns the server name and opens the database when
    /// given. It changes no managed user; it may register the service account
    /// (first run) or log it in and end its idle sessions (token cache lost).
    async fn connect(
        args: &ModuleArgs,
        access: Access,
        http: Http,
    ) -> Result<Dendrite, ServerError> {
        let http = http.retrying(is_database_busy);
        let credentials = &args.credentials;
        // Dendrite has no user types (a MAC covering one fails there).
        let identity =
            identify(args, &access, &http, "dendrite", None, &DendriteAdminCheck).await?;
        let database = match &credentials.dendrite_database {
            Some(location) => {
                let server_name = &identity.server_name;
                Some(Database::open(location, server_name, args.server.timeout).await?)
            }
            None => None,
        };
        Ok(Dendrite {
            http,
            token: identity.token,
            server_name: identity.server_name,
            shared_secret: credentials.shared_secret.clone(),
            database,
            password_checked: RefCell::new(HashMap::new()),
        })
    }

    fn server_name(&self) -> &str {
        &self.server_name
    }

    fn not_seen(&self, user: &UserId, desired: &DesiredUser, fact: Fact) -> ServerError {
        let what = match (fact, desired.state) {
            (Fact::Deactivated, UserState::Absent) => format!(
                "state: absent for the existing user {user} (Dendrite records deactivation only in its database)"
            ),
            (Fact::Deactivated, UserState::Present) => format!(
                "reading whether {user} is deactivated (it is, or its declared password does not log in, or none is declared: Dendrite does not tell which)"
            ),
            (Fact::Admin, _) => format!(
                "reading whether {user} is a server admin without its current password"
            ),
            // Never asked: check_declaration refuses every restriction,
            // ratelimit, rooms, e-mail, SSO identity and avatar.
            (
                Fact::Restriction(_)
                | Fact::Ratelimit
                | Fact::Rooms
                | Fact::Emails
                | Fact::ExternalIds
                | Fact::Avatar,
                _,
            ) => {
                return ServerError::Unexpected {
                    what: format!("reading {user}"),
                    detail: format!("Dendrite does not show {fact}"),
                }
            }
        };
        ServerError::Dendrite(DendriteError::NeedsDatabase { what })
    }

    fn refuse_impossible(&self, user: &UserId, changes: &[Change]) -> Result<(), ServerError> {
        let creates = changes.iter().any(|c| matches!(c, Change::Create { .. }));
        if creates && self.shared_secret.is_none() {
            return Err(ServerError::Dendrite(DendriteError::NeedsSharedSecret {
                user: user.to_string(),
            }));
        }
        if self.database.is_some() {
            return Ok(());
        }
        // Only the database holds admin flags and deactivation; a login can
        // show a user active, but not write either.
        let needs_database = changes.iter().find_map(|change| match change {
            Change::SetAdmin(admin) => Some(format!(
                "{} {user}",
                if *admin { "promoting" } else { "demoting" }
            )),
            Change::Deactivate { .. } => Some(format!(
                "state: absent for the existing user {user} (Dendrite records deactivation only in its database)"
            )),
            Change::Reactivate { .. } => Some(format!("reactivating {user}")),
            _ => None,
        });
        match needs_database {
            Some(what) => Err(ServerError::Dendrite(DendriteError::NeedsDatabase { what })),
            None => Ok(()),
        }
    }

    async fn accounts(
        &self,
        users: &[UserId],
        _declared: &[DesiredUser],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        let Some(database) = &self.database else {
            return Ok(None);
        };
        let localparts: Vec<&str> = users.iter().map(UserId::localpart).collect();
        let mut rows = database.accounts(&localparts).await?;
        let mut found = HashMap::new();
        for user in users {
            if let Some(row) = rows.remove(user.localpart()) {
                found.insert(user.clone(), self.account_from_row(user, row)?);
            }
        }
        Ok(Some(found))
    }

    async fn account(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Option<Account>, ServerError> {
        let Some(database) = &self.database else {
            return self.account_without_database(user, desired).await;
        };
        let mut rows = database.accounts(&[user.localpart()]).await?;
        rows.remove(user.localpart())
            .map(|row| self.account_from_row(user, row))
            .transpose()
    }

    async fn password_matches(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<bool, ServerError> {
        let known = self.password_checked.borrow().get(user).copied();
        if let Some(matches) = known {
            return Ok(matches);
        }
        match login(&self.http, user, password).await? {
            Some(session) => logout(&self.http, &session, &user.to_string())
                .await
                .map(|()| true),
            None => Ok(false),
        }
    }

    async fn create(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError> {
        let secret = self.shared_secret.as_ref().ok_or_else(|| {
            ServerError::Dendrite(DendriteError::NeedsSharedSecret {
                user: user.to_string(),
            })
        })?;
        let registration = Registration {
            localpart: user.localpart(),
            password,
            admin: desired.admin.unwrap_or(false),
            user_type: None,
            displayname: desired.displayname.as_deref(),
            inhibit_login: None,
        };
        let (_, session) = registered_session(register(&self.http, secret, &registration).await?)?;
        logout(&self.http, &session, &user.to_string()).await
    }

    async fn update(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError> {
        if changes
            .iter()
            .any(|c| matches!(c, Change::Deactivate { .. }))
        {
            return self.deactivate(user).await;
        }
        // The password before the display name, which may log in with it.
        for change in changes {
            if let Change::Reactivate { password } = change {
                self.reactivate(user, password).await?;
            }
        }
        for change in changes {
            if let Change::SetAdmin(admin) = *change {
                self.set_admin(user, admin).await?;
            }
        }
        for change in changes {
            if let Change::SetPassword { password } = change {
                self.reset_password(user, password).await?;
                if self.database.is_none() {
                    self.confirm_active(user, password).await?;
                }
            }
        }
        if changes.contains(&Change::SetDisplayname) {
            self.set_displayname(user, desired).await?;
        }
        // check_declaration refuses user types, rooms, e-mail and SSO
        // identities for Dendrite, so SetUserType, JoinRooms, AddEmail,
        // SetEmails and SetExternalIds are never planned here.
        Ok(())
    }
}

struct DendriteAdminCheck;

impl AdminCheck for DendriteAdminCheck {
    async fn is_admin(
        &self,
        http: &Http,
        token: &Secret,
        user_id: &str,
    ) -> Result<bool, ServerError> {
        is_admin(http, token, user_id).await
    }
}

/// Whether `token` belongs to a server admin: Dendrite lets admins, and
/// only them, ask who else is logged in (`whois` of another user).
async fn is_admin(http: &Http, token: &Secret, own_id: &str) -> Result<bool, ServerError> {
    let someone_else = own_id.replacen('@', "@probe.", 1);
    let reply = http
        .send(
            Method::GET,
            &format!(
                "/_matrix/client/v3/admin/whois/{}",
                path_segment(&someone_else)
            ),
            Some(token),
            Body::None,
        )
        .await?;
    match reply.status {
        StatusCode::OK => Ok(true),
        StatusCode::FORBIDDEN => Ok(false),
        _ => Err(ServerError::refused(
            format!("asking whether {own_id} is a server admin"),
            &reply,
        )),
    }
}

/// Runs with `cargo test --no-default-features`.
#[cfg(all(test, not(feature = "databases")))]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn without_the_drivers_dendrite_database_is_refused_before_anything_is_sent() {
        let args = json!({"homeserver": "dendrite", "homeserver_url": "http://127.0.0.1:9",
            "registration_shared_secret": "s", "dendrite_database": "/var/lib/dendrite/userapi.db",
            "username": "alice"});
        let args = ModuleArgs::from_map(args.as_object().unwrap()).unwrap();
        let refused = Dendrite::check_declaration(&args)
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.starts_with("dendrite_database: this matrix_user binary was built without the databases cargo feature"),
            "{refused}"
        );
    }
}
