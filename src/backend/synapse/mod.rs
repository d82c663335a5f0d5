//! Synapse, through its admin API (`/_synapse/admin`).
//!
//! Authentication: an `admin_token` when given; otherwise the module keeps a
//! service account of its own, registered once with the shared secret, and
//! caches that account's token between runs (see [`super::service_account`]).
//! This avoids `/login`, whose default rate limit (a handful per hour) would break
//! repeated runs, and leaves no device on any managed user.
//!
//! With `synapse_database`, the bulk read of many users confirms in
//! Synapse's database, read only, what its user list does not show
//! ([`database`]).

mod capabilities;
#[cfg(feature = "databases")]
mod database;
#[cfg(not(feature = "databases"))]
#[path = "without_database.rs"]
mod database;
mod email;
mod identifiers;
mod listing;
mod media;
mod registration_tokens;
mod rooms;
mod users;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use self::database::Database;
use self::identifiers::{email_threepids, parse_external_ids};
use self::rooms::{AliasLookup, MembersLookup};
use self::users::{
    name_refused_user_type, parse_account, truthy, user_endpoint, user_path, user_type_value,
};
use super::client_api::unix_millis;
use super::client_api::{logout, post_with_password};
use super::service_account::{identify, require_credentials, Access, AdminCheck};
use super::shared_secret::{register, Registration};
use super::{AccountServer, ServerError};
use crate::backend::declaration::refuse_without_databases;
use crate::backend::proxy::{admin_request, from_homeserver};
use crate::backend::{Capabilities, DeclarationError};
use crate::http::{path_segment, Body, Http, Reply};
use crate::matrix_id::{Room, UserId};
use crate::model::ModuleArgs;
use crate::model::{Account, Avatar, Change, DesiredUser, Restriction, Seen, UserType};
use crate::secret::Secret;

/// How long the short-lived token used for a password check may live.
const PASSWORD_CHECK_TOKEN_MS: u64 = 5 * 60 * 1000;

/// A failure only Synapse reports, about the declared `field`.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {kind}")]
pub struct SynapseError {
    /// The declared field the failure is about.
    field: String,
    kind: SynapseErrorKind,
}

/// What failed in a [`SynapseError`].
#[derive(Debug, thiserror::Error)]
pub enum SynapseErrorKind {
    /// The server has no such user type.
    #[error("Synapse does not know the user type {user_type:?} ({cause}); declare regular, bot, support, or a type listed in its user_types.extra_user_types (homeserver.yaml)")]
    UnknownUserType {
        user_type: String,
        cause: Box<ServerError>,
    },
    /// Declared rooms the user cannot be joined to, each with the reason.
    #[error("{}", .failures.join("; "))]
    RoomsNotJoined { failures: Vec<String> },
    /// Synapse's database could not be opened or read, or is not Synapse's.
    #[error("{detail}; give the postgres:// (or postgresql://) URL of Synapse's database, as database.args in homeserver.yaml name it (reading is enough; no TLS), or the path of its SQLite file homeserver.db")]
    Database { detail: String },
}

impl SynapseError {
    /// A failure about the declared `field`.
    pub fn new(field: impl Into<String>, kind: SynapseErrorKind) -> SynapseError {
        SynapseError {
            field: field.into(),
            kind,
        }
    }

    /// `synapse_database` could not be used, for the reason `detail`.
    pub fn database(detail: impl std::fmt::Display) -> SynapseError {
        let detail = detail.to_string();
        SynapseError::new("synapse_database", SynapseErrorKind::Database { detail })
    }
}

pub struct Synapse {
    http: Http,
    token: Secret,
    server_name: String,
    /// The account `token` belongs to, which `undeclared` never touches.
    acting_user: String,
    /// When given, users are created by shared-secret registration, which
    /// refuses an existing user instead of overwriting it.
    shared_secret: Option<Secret>,
    /// The room aliases looked up in this run, each once however many users
    /// declare it.
    aliases: RefCell<HashMap<Room, Rc<OnceCell<AliasLookup>>>>,
    /// The members of the rooms declared in this run, each read once.
    members: RefCell<HashMap<String, Rc<OnceCell<MembersLookup>>>>,
    /// Synapse's database, read only (`synapse_database`).
    database: Option<Database>,
}

impl Synapse {
    async fn admin_get(&self, path: &str, query: &[(&str, &str)]) -> Result<Reply, ServerError> {
        admin_request(
            &self.http,
            &self.token,
            Method::GET,
            path,
            query,
            Body::None,
        )
        .await
    }

    async fn admin_send(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Reply, ServerError> {
        admin_request(&self.http, &self.token, method, path, &[], Body::Json(body)).await
    }
}

impl AccountServer for Synapse {
    type Access = Access;

    const CAPABILITIES: Capabilities = capabilities::CAPABILITIES;

    fn check_declaration(args: &ModuleArgs) -> Result<Access, DeclarationError> {
        let access = require_credentials(&args.credentials)?;
        Self::CAPABILITIES.refuse_unsupported(args)?;
        let database = args.credentials.synapse_database.is_some();
        refuse_without_databases("synapse_database", database)?;
        Ok(access)
    }

    fn email_form(address: &str) -> Result<String, String> {
        email::canonical(address)
    }

    /// Opens `synapse_database` when given, authenticates and learns the
    /// server name. It changes no managed user; it may register the service
    /// account (first run) or log it in and end its idle sessions (token
    /// cache lost), but only once the database opened.
    async fn connect(
        args: &ModuleArgs,
        access: Access,
        http: Http,
    ) -> Result<Synapse, ServerError> {
        let database = match &args.credentials.synapse_database {
            Some(location) => Some(Database::open(location, args.server.timeout).await?),
            None => None,
        };
        let identity = identify(
            args,
            &access,
            &http,
            "synapse",
            Some(UserType::Bot.as_str()),
            &SynapseAdminCheck,
        )
        .await?;
        Ok(Synapse {
            http,
            token: identity.token,
            server_name: identity.server_name,
            acting_user: identity.user_id,
            shared_secret: args.credentials.shared_secret.clone(),
            aliases: RefCell::default(),
            members: RefCell::default(),
            database,
        })
    }

    fn server_name(&self) -> &str {
        &self.server_name
    }

    async fn accounts_from_list(
        &self,
        users: &[UserId],
        declared: &[DesiredUser],
        most: u64,
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        self.list_declared(users, declared, most).await
    }

    /// Guests are left out: Synapse makes them on demand for guest access
    /// (numeric localparts, no password), so nobody can declare them. So are
    /// deactivated accounts (the list's default), which are never touched.
    async fn local_accounts(&self) -> Result<Vec<(UserId, Account)>, ServerError> {
        self.list_local().await
    }

    /// The user list does not say; one user's record has `appservice_id`
    /// (synapse/handlers/admin.py `get_user`).
    async fn is_appservice_user(&self, user: &UserId) -> Result<bool, ServerError> {
        let what = format!("reading {user}");
        let reply = self.admin_get(&user_path(&user.to_string()), &[]).await?;
        match reply.status {
            StatusCode::OK => Ok(reply
                .body
                .get("appservice_id")
                .is_some_and(|id| !id.is_null())),
            _ => Err(ServerError::refused(what, &reply)),
        }
    }

    async fn account(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Option<Account>, ServerError> {
        let what = format!("reading {user}");
        let reply = self.admin_get(&user_path(&user.to_string()), &[]).await?;
        let mut account = match reply.status {
            StatusCode::OK => parse_account(&reply.body),
            StatusCode::NOT_FOUND => {
                // Refused before the user is created, in check mode too.
                if let Some(wanted) = &desired.emails {
                    self.refuse_taken(user, wanted, &[]).await?;
                }
                if let Some(wanted) = &desired.external_ids {
                    self.refuse_taken(user, wanted, &[]).await?;
                }
                return Ok(None);
            }
            _ => return Err(ServerError::refused(what, &reply)),
        };
        // A request of its own, so made only for a user that declares it.
        if desired.ratelimit.is_some() {
            account.ratelimit = Seen::Known(self.ratelimit(user).await?);
        }
        if !desired.rooms.is_empty() {
            account.rooms = Seen::Known(self.joined_rooms(user, desired).await?);
        }
        // In the user's record, but shown only when declared, like the
        // override. One another account has fails the user here already, so
        // that check mode predicts the failure; update() checks again.
        if let Some(wanted) = &desired.emails {
            let current = email_threepids(&reply.body, &what)?;
            self.refuse_taken(user, wanted, &current).await?;
            account.emails = Seen::Known(current);
        }
        if let Some(wanted) = &desired.external_ids {
            let current = parse_external_ids(&reply.body, &what)?;
            self.refuse_taken(user, wanted, &current).await?;
            account.external_ids = Seen::Known(current);
        }
        // A file's content is compared by downloading: only for a user that declares one.
        if let Some(declared) = &desired.avatar {
            account.avatar = Seen::Known(self.avatar(user, &reply.body, declared).await?);
        }
        Ok(Some(account))
    }

    async fn password_matches(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<bool, ServerError> {
        let what = format!("checking the password of {user}");
        // A token issued by the admin API has no device; the password is then
        // checked by user-interactive auth on a request that changes nothing.
        let expires = unix_millis() + PASSWORD_CHECK_TOKEN_MS;
        let reply = self
            .admin_send(
                Method::POST,
                &user_endpoint(user, "login"),
                &json!({"valid_until_ms": expires}),
            )
            .await?;
        let user_token = match reply.body.get("access_token").and_then(Value::as_str) {
            Some(token) if reply.status == StatusCode::OK => Secret::new(token),
            _ => return Err(ServerError::refused(what, &reply)),
        };
        let verdict = post_with_password(
            &self.http,
            "/_matrix/client/v3/delete_devices",
            &user_token,
            (&user.to_string(), password),
            json!({ "devices": [] }),
        )
        .await;
        let logged_out = logout(
            &self.http,
            &user_token,
            &format!("the password check of {user}"),
        )
        .await;
        let verdict = verdict?;
        logged_out?;
        match (verdict.status, verdict.errcode()) {
            (StatusCode::OK, _) => Ok(true),
            (StatusCode::UNAUTHORIZED, "M_FORBIDDEN") => Ok(false),
            _ => Err(ServerError::refused(what, &verdict)),
        }
    }

    async fn create(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError> {
        let admin = desired.admin.unwrap_or(false);
        let user_type = desired.user_type.as_ref().unwrap_or(&UserType::Regular);
        if let Some(secret) = &self.shared_secret {
            let registration = Registration {
                localpart: user.localpart(),
                password,
                admin,
                user_type: (*user_type != UserType::Regular).then_some(user_type.as_str()),
                displayname: desired.displayname.as_deref(),
                inhibit_login: Some(true),
            };
            return register(&self.http, secret, &registration)
                .await
                .map(|_| ())
                .map_err(|error| name_refused_user_type(error, desired));
        }
        self.create_by_admin_api(user, desired, password).await
    }

    async fn update(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError> {
        let path = user_path(&user.to_string());
        if let Some(&Change::Deactivate { erase }) = changes
            .iter()
            .find(|c| matches!(c, Change::Deactivate { .. }))
        {
            let reply = self
                .admin_send(
                    Method::POST,
                    &format!(
                        "/_synapse/admin/v1/deactivate/{}",
                        path_segment(&user.to_string())
                    ),
                    &json!({"erase": erase}),
                )
                .await?;
            return match reply.status {
                StatusCode::OK => Ok(()),
                _ => Err(ServerError::refused(format!("deactivating {user}"), &reply)),
            };
        }
        // Everything the user's PUT takes is one request, so that part is
        // never left half-applied; suspension, shadow-ban, the rate-limit
        // override and joins have endpoints of their own.
        let mut body = Map::new();
        let mut apart = Vec::new();
        let mut ratelimit = None;
        let mut rooms: &[Room] = &[];
        if changes
            .iter()
            .any(|c| matches!(c, Change::SetEmails | Change::SetExternalIds))
        {
            self.replace_identifiers(user, desired, changes, &mut body)
                .await?;
        }
        for change in changes {
            match change {
                Change::Reactivate { password } => {
                    body.insert("deactivated".into(), json!(false));
                    body.insert("password".into(), json!(password.expose()));
                }
                Change::SetPassword { password } => {
                    body.insert("password".into(), json!(password.expose()));
                }
                Change::SetAdmin(admin) => {
                    body.insert("admin".into(), json!(admin));
                }
                Change::SetUserType(user_type) => {
                    body.insert("user_type".into(), user_type_value(user_type));
                }
                Change::SetDisplayname => {
                    body.insert("displayname".into(), json!(desired.displayname));
                }
                Change::Restrict(Restriction::Locked, locked) => {
                    body.insert("locked".into(), json!(locked));
                }
                Change::Restrict(restriction, value) => apart.push((*restriction, *value)),
                Change::SetRatelimit(wanted) => ratelimit = Some(*wanted),
                Change::JoinRooms(missing) => rooms = missing,
                // Put into the body by replace_identifiers above.
                Change::SetEmails | Change::SetExternalIds => {}
                // Uploaded first, so that the URI goes with the rest in one PUT.
                Change::SetAvatar(avatar) => {
                    let uri = match avatar {
                        Avatar::Uri(uri) => uri.clone(),
                        Avatar::File(file) => self.upload(user, file).await?,
                    };
                    body.insert("avatar_url".into(), json!(uri));
                }
                // Create goes to create(), and check_declaration refuses
                // e-mail and the MAS options for Synapse, so neither is planned.
                Change::Create { .. }
                | Change::Deactivate { .. }
                | Change::AddEmail(_)
                | Change::WriteAccessToken
                | Change::CreateWithoutPassword
                | Change::ReactivateWithoutPassword
                | Change::AddUpstreamLink(_)
                | Change::RemoveUpstreamLink(_) => {}
            }
        }
        if !body.is_empty() {
            let reply = self
                .admin_send(Method::PUT, &path, &Value::Object(body))
                .await?;
            if reply.status != StatusCode::OK {
                let refused = ServerError::refused(format!("updating {user}"), &reply);
                return Err(name_refused_user_type(refused, desired));
            }
        }
        // A suspended user cannot join a room (M_USER_SUSPENDED): joins
        // come after a lifted restriction and before an applied one.
        let (applied, lifted): (Vec<_>, Vec<_>) = apart.into_iter().partition(|&(_, on)| on);
        for (restriction, value) in lifted {
            self.restrict(user, restriction, value).await?;
        }
        if let Some(wanted) = ratelimit {
            self.set_ratelimit(user, wanted).await?;
        }
        if !rooms.is_empty() {
            self.join_rooms(user, desired, rooms).await?;
        }
        for (restriction, value) in applied {
            self.restrict(user, restriction, value).await?;
        }
        Ok(())
    }
}

/// Synapse's admin API answers only admins: its view of the token's own
/// account says whether it is one.
struct SynapseAdminCheck;

impl AdminCheck for SynapseAdminCheck {
    async fn is_admin(
        &self,
        http: &Http,
        token: &Secret,
        user_id: &str,
    ) -> Result<bool, ServerError> {
        let path = user_path(user_id);
        let reply = http
            .send(Method::GET, &path, Some(token), Body::None)
            .await?;
        let reply = from_homeserver(&path, reply)?;
        match reply.status {
            StatusCode::OK => Ok(reply.body.get("admin").is_some_and(truthy)),
            StatusCode::FORBIDDEN => Ok(false),
            _ => Err(ServerError::refused(format!("reading {user_id}"), &reply)),
        }
    }
}
