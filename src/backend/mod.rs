//! Stage 2 and 4: read accounts from the server that holds them and apply
//! planned changes. Each such server (a homeserver, Synapse or Dendrite, or
//! MAS, which holds the accounts of the homeservers that delegate to it) is
//! one file behind the [`AccountServer`] trait, with a folder of the same
//! name for its own parts (Dendrite's database, MAS's OAuth2 client); nothing
//! outside this folder knows about HTTP paths or server quirks, including
//! what each server can manage and which credentials it takes
//! ([`AccountServer::check_declaration`], before any request).
//!
//! Shared by the homeservers: [`client_api`] (login, logout, whoami, a
//! user's display name, which MAS reads from the homeserver behind it too),
//! [`shared_secret`] (registration with the shared secret),
//! [`service_account`] (who the module acts as) and [`token_cache`] (where
//! that account's token is kept).

mod client_api;
pub mod dendrite;
pub mod mas;
mod service_account;
mod shared_secret;
#[cfg(feature = "databases")]
mod sql;
pub mod synapse;
mod token_cache;

use std::collections::HashMap;

use crate::http::{server_word, Http, HttpError, Reply};
use crate::matrix_id::UserId;
use crate::model::{Account, Change, DesiredUser, Fact, Undeclared, UserType};
use crate::model::{ArgsError, ModuleArgs};
use crate::secret::Secret;

/// What a server that holds the accounts must offer the reconciler.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait AccountServer {
    /// What lets the module in, as [`AccountServer::check_declaration`]
    /// finds it in the declaration.
    type Access;

    /// Whether the module registers and acts as `service_account` here
    /// (with the shared secret and no `admin_token`). MAS lets it in as an
    /// OAuth2 client, which is no user.
    const HAS_SERVICE_ACCOUNT: bool = true;

    /// Refuses, before any request, what this server cannot do with the
    /// declaration: credentials it cannot use, fields it has no notion of
    /// or cannot compare, values it would refuse. Messages name the field.
    /// Returns the credentials to connect with.
    fn check_declaration(args: &ModuleArgs) -> Result<Self::Access, ArgsError>
    where
        Self: Sized;

    /// `address` (declared or read back) in the form this server keeps
    /// it in, which is what is sent, shown and compared; `Err` says what to
    /// declare instead, when the server's form cannot be told.
    fn email_form(address: &str) -> Result<String, String>
    where
        Self: Sized,
    {
        Ok(address.to_string())
    }

    /// Whether this server takes two addresses, each in its form, for one.
    fn same_email(a: &str, b: &str) -> bool
    where
        Self: Sized,
    {
        a == b
    }

    /// Whether this server may take two addresses for one, as some of its
    /// set-ups do: two users cannot both be declared to hold them.
    fn may_share_email(a: &str, b: &str) -> bool
    where
        Self: Sized,
    {
        Self::same_email(a, b)
    }

    /// Authenticates with `access` through `http` and learns what the
    /// reconciler needs (the server name). Changes no managed user.
    async fn connect(
        args: &ModuleArgs,
        access: Self::Access,
        http: Http,
    ) -> Result<Self, ServerError>
    where
        Self: Sized;

    /// The server name user IDs end with (`example.com` in `@alice:example.com`).
    fn server_name(&self) -> &str;

    /// Reads the accounts of all `users` at once, when that is cheaper than
    /// one read per user; `declared` holds their declarations, in the same
    /// order. `None` (the default, for servers without a bulk read) asks the
    /// caller to use [`AccountServer::account`].
    async fn accounts(
        &self,
        _users: &[UserId],
        _declared: &[DesiredUser],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        Ok(None)
    }

    /// Every local account but guests, deactivated accounts and the one the
    /// module acts as, for `undeclared`. Only servers whose
    /// `check_declaration` accepts `undeclared` are asked.
    async fn local_accounts(&self) -> Result<Vec<(UserId, Account)>, ServerError> {
        Err(ServerError::Unexpected {
            what: "listing users".into(),
            detail: "this server cannot list its users for undeclared".into(),
        })
    }

    /// Whether `user` belongs to an application service (a bridge's
    /// puppet), which `undeclared` never touches.
    async fn is_appservice_user(&self, _user: &UserId) -> Result<bool, ServerError> {
        Err(ServerError::Unexpected {
            what: "reading users".into(),
            detail: "this server cannot tell application-service users for undeclared".into(),
        })
    }

    /// Reads one account; `None` when it does not exist. `desired` tells a
    /// server whose reads differ in cost by field (Dendrite without its
    /// database) what the plan will compare.
    async fn account(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Option<Account>, ServerError>;

    /// The display name the server gives a new user that declares none.
    fn default_displayname(&self, user: &UserId) -> Option<String> {
        Some(user.localpart().to_string())
    }

    /// Why the plan for `desired` could not be made: it depends on `fact`,
    /// which the read of `user` could not see, and what would show it. Only
    /// servers whose reads return [`crate::model::Seen::Unknown`] are asked.
    fn not_seen(&self, user: &UserId, _desired: &DesiredUser, fact: Fact) -> ServerError {
        ServerError::Unexpected {
            what: format!("reading {user}"),
            detail: format!("the homeserver did not show {fact}"),
        }
    }

    /// Refuses `changes` this server cannot make for `user` at all, found out
    /// without writing; checked in check mode too, so that it predicts right.
    fn refuse_impossible(&self, _user: &UserId, _changes: &[Change]) -> Result<(), ServerError> {
        Ok(())
    }

    /// Whether `password` is the user's stored password, leaving no session
    /// behind (and, where the server allows, without a rate-limited login).
    async fn password_matches(&self, user: &UserId, password: &Secret)
        -> Result<bool, ServerError>;

    /// Whether `desired.access_token_file` holds a personal access token of
    /// `user` that the server still accepts. Only servers whose
    /// `check_declaration` accepts `access_token_file` are asked.
    async fn access_token_valid(
        &self,
        _user: &UserId,
        _desired: &DesiredUser,
    ) -> Result<bool, ServerError> {
        Ok(true)
    }

    /// How long this run waited for the server's rate limits, and why; `None`
    /// for a server whose waits are not worth reporting.
    fn waited(&self) -> Option<crate::report::Waited> {
        None
    }

    /// Creates `user` with every declared attribute and `password` (the
    /// one [`Change::Create`] carries).
    /// [`ServerError::CreatedMeanwhile`] when another run created it first.
    async fn create(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError>;

    /// Applies `changes` (from [`crate::plan::plan`], never `Create`) to
    /// an existing `user`.
    async fn update(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError>;
}

/// A failure talking to the server that holds the accounts. Messages say what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No usable answer at all (unreachable, timeout, rate limit, TLS).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The homeserver computed another HMAC: the shared secret differs.
    #[error("HMAC incorrect: the registration_shared_secret does not match the homeserver's; copy it from the homeserver's configuration")]
    WrongSharedSecret,
    /// The homeserver has no `registration_shared_secret` configured.
    #[error("the homeserver does not accept shared-secret registration (no registration_shared_secret in its configuration); configure one there, or give admin_token")]
    SharedSecretDisabled,
    /// A 404 with no Matrix error body: something in front of the homeserver
    /// (a reverse proxy) answered, because it does not forward the admin API.
    /// The homeserver itself answers every unknown path with a Matrix error.
    #[error("{path} answered 404 without a Matrix error: a reverse proxy in front of the homeserver does not forward /_synapse/admin (matrix-docker-ansible-deploy's default forwards only /_matrix and /_synapse/client); point homeserver_url at the homeserver itself rather than the proxy (on an mdad host, publish Synapse's port with matrix_synapse_container_client_api_host_bind_port: \"127.0.0.1:8008\" and use http://127.0.0.1:8008), or have the proxy forward /_synapse/admin")]
    AdminApiNotForwarded { path: String },
    /// The admin token is unknown, expired or revoked.
    #[error("the homeserver refused the admin token ({detail}); give a current access token of a server admin as admin_token")]
    TokenRefused { detail: String },
    /// The account behind the token is not a server admin.
    #[error("{account} is not a server admin, so it cannot manage users; promote it, or give the token of a server admin")]
    NotAdmin { account: String },
    /// The service account's token works, but the account is no admin any
    /// more (someone demoted it); it cannot promote itself.
    #[error("the service account {account} is not a server admin (any more: someone demoted it), and it cannot promote itself; promote it again with another admin's token (PUT /_synapse/admin/v2/users/{account} with {{\"admin\": true}} on Synapse, account_type 3 in Dendrite's database), or give admin_token, or choose another service_account")]
    ServiceAccountNotAdmin { account: String },
    /// The service account exists but its password is not the derived one.
    #[error("the service account {account} exists but does not accept the password matrix_user derives from the registration_shared_secret (was it created by hand, or the secret changed?); choose another service_account (the name stays taken even if that account is deactivated), or give admin_token")]
    ServiceAccountPassword { account: String },
    /// The configured `server_name` is not the one the server serves.
    #[error("server_name is {given:?}, but the server at {url_field} serves {actual:?}; fix server_name or leave it out")]
    WrongServerName {
        given: String,
        actual: String,
        url_field: &'static str,
    },
    /// The admin token could not be kept for the next run.
    #[error("cannot keep the service account's token in {path}: {detail}; set token_cache_dir to a writable folder")]
    TokenCache { path: String, detail: String },
    /// The token cache folder belongs to another user, who could swap the token.
    #[error("the token_cache_dir {folder} belongs to another user (uid {owner}), who could read or replace the service account's token; set token_cache_dir to a folder of the user running the module")]
    TokenCacheForeign { folder: String, owner: u32 },
    /// Others can write the token cache folder, so they could swap the token.
    #[error("the token_cache_dir {folder} can be written by other users (mode {mode}), who could replace the service account's token; make it private (chmod 700) or set token_cache_dir to a private folder")]
    TokenCacheShared { folder: String, mode: String },
    /// The token cache file is a symbolic link, which is never followed.
    #[error("the token cache file {path} is a symbolic link, which matrix_user does not follow (it could lead the token elsewhere); remove the link (in token_cache_dir)")]
    TokenCacheLink { path: String },
    /// The token cache file is not a regular file, or too large for a token.
    #[error("token_cache_dir: cannot read the service account's cached token {path}: {problem}; remove it (matrix_user writes a new one)")]
    TokenCacheUnusable { path: String, problem: String },
    /// The server refused a request for a reason of its own.
    #[error("{what}: {server} answered {status}{errcode}: {explanation}")]
    Refused {
        what: String,
        /// Who answered ([`Reply::server`]).
        server: &'static str,
        status: u16,
        errcode: String,
        explanation: String,
    },
    /// Another run created the user between our read and our write; the
    /// reconciler reads it again and carries on.
    #[error("{user} was created by someone else meanwhile, twice in a row; run again")]
    CreatedMeanwhile { user: String },
    /// The account was created without a password (so that creating could
    /// not overwrite someone else's), then setting the rest failed.
    #[error("{cause}; {user} was created without its password, {state}")]
    CreatedWithoutPassword {
        user: String,
        cause: Box<ServerError>,
        /// What the account was left as, and what the next run does.
        state: String,
    },
    /// A shared-secret registration got no answer: it may have created the
    /// user. Registration is all or nothing and refuses an existing user, so
    /// the reconciler reads the user again and, if it is still missing,
    /// registers it again with a fresh nonce.
    #[error("{cause} (registering {user}, twice in a row); run again: a registration is never applied twice")]
    RegistrationUnanswered {
        user: String,
        cause: Box<ServerError>,
    },
    /// Creating got no answer, and the user exists now: made by this run
    /// (then without a password) or by someone else, which the server cannot tell.
    #[error("creating {user}: {cause}; {user} exists now, but matrix_user cannot tell whether its own request created it (then it has no password yet) or someone else did, so it leaves the account alone: check it, and if it is the one you declared, run again with update_password: always for this user")]
    CreationUnconfirmed {
        user: String,
        cause: Box<ServerError>,
    },
    /// An address or SSO identity declared for `user` belongs to another
    /// account; Synapse would move an address silently and refuse an identity.
    #[error("{user}: {what} belongs to {holder}; matrix_user does not take it from another account: remove it from {holder} first, or correct the declaration")]
    TakenByOther {
        user: String,
        what: String,
        holder: String,
    },
    /// A change of several steps failed after an earlier step had landed.
    #[error("{cause}; {done}: run again to finish")]
    Unfinished {
        done: String,
        cause: Box<ServerError>,
    },
    /// The answer did not have the shape the API documents.
    #[error("{what}: unexpected answer from the server: {detail}; check that the URL points at the right server and that its version is supported")]
    Unexpected { what: String, detail: String },
    /// A failure only MAS reports.
    #[error(transparent)]
    Mas(#[from] mas::MasError),
    /// A failure only Dendrite reports.
    #[error(transparent)]
    Dendrite(#[from] dendrite::DendriteError),
    /// A failure only Synapse reports.
    #[error(transparent)]
    Synapse(#[from] synapse::SynapseError),
}

/// E-mail addresses are managed only through MAS, which verifies them; the
/// homeservers' own admin APIs would add them unverified or not at all.
fn refuse_email(user: &DesiredUser) -> Result<(), ArgsError> {
    refuse_declared(
        user,
        "email",
        user.email.is_some(),
        "e-mail addresses are managed only with homeserver: mas",
    )
}

const NO_ACCESS_TOKEN_FILE: &str =
    "personal access tokens are kept only with homeserver: mas for now (MAS's personal sessions); leave it out";

/// Refuses, on a homeserver, the options that only MAS has.
fn refuse_mas_only(args: &ModuleArgs) -> Result<(), ArgsError> {
    for user in &args.users {
        let declared = user.access_token_file.is_some();
        refuse_declared(user, "access_token_file", declared, NO_ACCESS_TOKEN_FILE)?;
        if let Some(field) = user.mas.declared().first() {
            refuse_declared(user, field, true, "only homeserver: mas takes it")?;
        }
    }
    match args.mas_adopt_existing {
        true => Err(ArgsError::Unsupported {
            field: "mas_adopt_existing".into(),
            reason: "only MAS keeps accounts apart from the homeserver; leave it out unless homeserver: mas",
        }),
        false => Ok(()),
    }
}

/// Why a binary built without the `databases` cargo feature refuses
/// `dendrite_database` and `synapse_database`.
#[cfg(not(feature = "databases"))]
const DATABASES_NOT_BUILT_IN: &str = "this matrix_user binary was built without the databases \
     cargo feature, so it cannot open a homeserver's database; use a binary built with default \
     features (tools/just build, the collection), or leave it out";

/// Refuses the database option `field` when it is `given` to a binary
/// without the database drivers; a binary with them takes it.
#[cfg(feature = "databases")]
fn refuse_without_databases(_field: &str, _given: bool) -> Result<(), ArgsError> {
    Ok(())
}

#[cfg(not(feature = "databases"))]
fn refuse_without_databases(field: &str, given: bool) -> Result<(), ArgsError> {
    match given {
        true => Err(ArgsError::Unsupported {
            field: field.into(),
            reason: DATABASES_NOT_BUILT_IN,
        }),
        false => Ok(()),
    }
}

/// Refuses `synapse_database` on the servers that are not Synapse.
fn refuse_synapse_database(args: &ModuleArgs) -> Result<(), ArgsError> {
    match args.credentials.synapse_database.is_some() {
        true => Err(ArgsError::Unsupported {
            field: "synapse_database".into(),
            reason: "it is Synapse's database, read only with homeserver: synapse (Dendrite's \
                     is dendrite_database); leave it out",
        }),
        false => Ok(()),
    }
}

/// Refuses a user type other than `regular`, for a server that has none.
fn refuse_user_type(user: &DesiredUser, reason: &'static str) -> Result<(), ArgsError> {
    let special = user
        .user_type
        .as_ref()
        .is_some_and(|t| *t != UserType::Regular);
    refuse_declared(user, "user_type", special, reason)
}

/// Refuses `undeclared` other than `keep`, for a server the module cannot
/// list and lock or deactivate users on; `reason` says why.
fn refuse_undeclared(args: &ModuleArgs, reason: &'static str) -> Result<(), ArgsError> {
    match args.undeclared.action {
        Undeclared::Keep => Ok(()),
        _ => Err(ArgsError::Unsupported {
            field: "undeclared".into(),
            reason,
        }),
    }
}

/// Refuses `user`'s `field` when it is `declared`, for a server that cannot
/// manage it; `reason` says why and what to declare instead.
fn refuse_declared(
    user: &DesiredUser,
    field: &str,
    declared: bool,
    reason: &'static str,
) -> Result<(), ArgsError> {
    match declared {
        true => Err(ArgsError::Unsupported {
            field: user.field_name(field),
            reason,
        }),
        false => Ok(()),
    }
}

/// Below this many declared users, one read each costs less than reading
/// the server's user list.
const LIST_MIN_USERS: usize = 20;
/// Listing pays only while the server holds at most this many accounts (or
/// listed items) per declared user.
const LIST_MAX_RATIO: u64 = 10;

/// How many listed items a bulk read of `declared` users may page through
/// before reading each alone is cheaper; `None` when they are too few to
/// list at all. Every backend with a bulk read asks this.
pub fn list_budget(declared: usize) -> Option<u64> {
    (declared >= LIST_MIN_USERS).then(|| LIST_MAX_RATIO * declared as u64)
}

/// The server name the server reported, refused when `server_name` says otherwise.
pub fn confirm_server_name(args: &ModuleArgs, actual: String) -> Result<String, ServerError> {
    match &args.server.server_name {
        Some(given) if *given != actual => Err(ServerError::WrongServerName {
            given: given.clone(),
            actual,
            url_field: args.homeserver.url_field(),
        }),
        _ => Ok(actual),
    }
}

/// `reply` unchanged, or [`ServerError::AdminApiNotForwarded`] when it is a
/// 404 that no homeserver sent: Synapse and Dendrite answer an unknown path
/// with a Matrix error (`errcode`, e.g. `M_UNRECOGNIZED`), a proxy with a page
/// of its own (Traefik: "404 page not found").
pub fn from_homeserver(path: &str, reply: Reply) -> Result<Reply, ServerError> {
    if reply.status == reqwest::StatusCode::NOT_FOUND && reply.errcode().is_empty() {
        return Err(ServerError::AdminApiNotForwarded {
            path: path.split('?').next().unwrap_or(path).to_string(),
        });
    }
    Ok(reply)
}

impl ServerError {
    /// The changes that landed before this failure, when the failure knows them.
    pub fn landed(&self) -> &[Change] {
        match self {
            ServerError::Mas(mas::MasError::CreatedUnfinished { landed, .. }) => landed,
            _ => &[],
        }
    }

    /// A write that may have been carried out although its answer was lost.
    pub fn is_answer_lost(&self) -> bool {
        matches!(self, ServerError::Http(HttpError::AnswerLost { .. }))
    }

    /// A refusal, quoting the server's own explanation.
    pub fn refused(what: impl Into<String>, reply: &Reply) -> ServerError {
        let errcode = match reply.errcode() {
            "" => String::new(),
            code => format!(" {}", server_word(code)),
        };
        ServerError::Refused {
            what: what.into(),
            server: reply.server,
            status: reply.status.as_u16(),
            errcode,
            explanation: reply.explanation(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HomeserverKind;
    use reqwest::StatusCode;
    use serde_json::{json, Value};

    /// Refuses what the chosen server cannot do with the declaration (see
    /// [`AccountServer::check_declaration`]); the module calls each server's own.
    fn check_declaration(args: &ModuleArgs) -> Result<(), ArgsError> {
        match args.homeserver {
            HomeserverKind::Synapse => synapse::Synapse::check_declaration(args).map(drop),
            HomeserverKind::Dendrite => dendrite::Dendrite::check_declaration(args).map(drop),
            HomeserverKind::Mas => mas::Mas::check_declaration(args).map(drop),
        }
    }

    /// Parses `value` as the module's arguments and checks them against the chosen server.
    fn declare(value: Value) -> Result<ModuleArgs, String> {
        let args = ModuleArgs::from_map(value.as_object().unwrap()).map_err(|e| e.to_string())?;
        check_declaration(&args).map_err(|e| e.to_string())?;
        Ok(args)
    }

    fn error_of(value: Value) -> String {
        declare(value).unwrap_err()
    }

    fn base() -> Value {
        json!({"homeserver_url": "http://127.0.0.1:8008/", "registration_shared_secret": "s3cret-value"})
    }

    /// A MAS connection's arguments.
    fn mas_base() -> Value {
        json!({"homeserver": "mas", "mas_url": "http://127.0.0.1:8080",
            "mas_client_id": "01J0000000000000000000000", "mas_client_secret": "client-secret"})
    }

    /// `server`'s arguments with `user`'s fields added.
    fn with_user(mut server: Value, user: Value) -> Value {
        server
            .as_object_mut()
            .unwrap()
            .extend(user.as_object().unwrap().clone());
        server
    }

    /// Synapse's base arguments on Dendrite, with `user`'s fields.
    fn on_dendrite(user: Value) -> Value {
        let mut args = with_user(base(), user);
        args["homeserver"] = json!("dendrite");
        args
    }

    #[test]
    fn synapse_database_is_synapses_alone_and_refused_elsewhere_by_name() {
        let database =
            json!({"username": "a", "synapse_database": "/var/lib/synapse/homeserver.db"});
        for server in [
            on_dendrite(database.clone()),
            with_user(mas_base(), database.clone()),
        ] {
            let message = error_of(server);
            assert!(
                message.starts_with("synapse_database: it is Synapse's database, read only with homeserver: synapse"),
                "{message}"
            );
        }
        #[cfg(feature = "databases")]
        assert!(declare(with_user(base(), database)).is_ok());
        #[cfg(not(feature = "databases"))]
        assert!(error_of(with_user(base(), database)).starts_with(
            "synapse_database: this matrix_user binary was built without the databases cargo feature"
        ));
    }

    #[test]
    fn credentials_are_required() {
        let message = error_of(json!({"homeserver_url": "http://x", "username": "alice"}));
        assert!(
            message.starts_with("no credentials: give registration_shared_secret"),
            "{message}"
        );
    }

    #[test]
    fn mas_refuses_what_it_cannot_compare() {
        let mas = |user: Value| declare(with_user(mas_base(), user));
        // Set at creation (MAS 1.18 and later, checked once connected).
        mas(json!({"users": [{"username": "a", "displayname": "A"}]})).unwrap();
        let message = mas(json!({"username": "a", "user_type": "bot"}))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("user_type: MAS has no user types"),
            "{message}"
        );
        let args = mas(json!({"username": "a", "user_type": "regular", "email": "a@example.com"}))
            .unwrap();
        assert_eq!(args.server.url, "http://127.0.0.1:8080");
        assert!(args.credentials.mas_client.is_some());
    }

    #[test]
    fn only_mas_takes_the_mas_options() {
        let message = error_of(with_user(
            base(),
            json!({"users": [{"username": "a", "mas_skip_password_check": true}]}),
        ));
        assert_eq!(
            message,
            "users[0].mas_skip_password_check: only homeserver: mas takes it"
        );
        let mut dendrite = with_user(
            base(),
            json!({"username": "a", "mas_skip_password_check": true}),
        );
        dendrite["homeserver"] = json!("dendrite");
        dendrite["dendrite_database"] = json!("/var/lib/dendrite/userapi.db");
        assert_eq!(
            error_of(dendrite),
            "mas_skip_password_check: only homeserver: mas takes it"
        );
        let linked =
            json!({"username": "a", "upstream_links": [{"provider": "SSO", "subject": "a"}]});
        assert_eq!(
            error_of(with_user(base(), linked)),
            "upstream_links: only homeserver: mas takes it"
        );
        declare(with_user(
            base(),
            json!({"username": "a", "mas_skip_password_check": false}),
        ))
        .unwrap();
    }

    #[test]
    fn dendrite_refuses_what_it_has_no_notion_of() {
        // A binary without the drivers refuses dendrite_database first.
        let database = cfg!(feature = "databases");
        let dendrite = |user: Value| {
            let mut args = on_dendrite(user);
            if database {
                args["dendrite_database"] = json!("/var/lib/dendrite/userapi.db");
            }
            declare(args)
        };
        let message = dendrite(json!({"users": [{"username": "a", "user_type": "bot"}]}))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("users[0].user_type: Dendrite has no user types"),
            "{message}"
        );
        let message = dendrite(json!({"username": "a", "state": "absent", "erase": true}))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("erase: Dendrite cannot erase"),
            "{message}"
        );
        let message = dendrite(json!({"username": "a", "password": "short7!"}))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("password: Dendrite accepts only passwords of 8 to 512 bytes"),
            "{message}"
        );
        assert!(!message.contains("short7!"), "{message}");
        let args =
            dendrite(json!({"username": "a", "password": "eight ch", "user_type": "regular"}))
                .unwrap();
        assert_eq!(args.credentials.dendrite_database.is_some(), database);
    }

    #[test]
    fn emails_and_external_ids_are_refused_by_name_where_unsupported() {
        let user = |field: &str| {
            let value = match field {
                "emails" => json!(["a@example.com"]),
                _ => json!([{"auth_provider": "oidc-github", "external_id": "1"}]),
            };
            json!({"users": [{"username": "a", "password": "eight ch", field: value}]})
        };
        let dendrite = |user: Value| error_of(on_dendrite(user));
        let mas = |user: Value| error_of(with_user(mas_base(), user));
        let expectations = [
            (
                dendrite(user("emails")),
                "users[0].emails: Dendrite's admin API (0.13) cannot set",
            ),
            (
                dendrite(user("external_ids")),
                "users[0].external_ids: Dendrite (0.13) has no SSO identities",
            ),
            (
                mas(user("external_ids")),
                "users[0].external_ids: MAS keeps SSO identities as upstream OAuth links",
            ),
        ];
        for (message, expected) in expectations {
            assert!(message.starts_with(expected), "{message}");
        }
        // MAS takes emails, or email, but not both for one user.
        declare(with_user(mas_base(), user("emails"))).unwrap();
        let both = json!({"username": "a", "email": "a@example.com", "emails": ["a@example.com"]});
        let message = mas(both);
        assert!(
            message.starts_with("email: declare either email (one address the user must have; its others stay) or emails"),
            "{message}"
        );
        // Synapse takes both, and points the single MAS-style email at emails.
        let mut synapse = base();
        synapse["users"] = json!([{"username": "a", "emails": ["a@example.com"],
            "external_ids": [{"auth_provider": "saml", "external_id": "a"}]}]);
        assert!(declare(synapse).is_ok());
        let mut single = base();
        single["username"] = json!("a");
        single["email"] = json!("a@example.com");
        let message = error_of(single);
        assert!(
            message.starts_with("email: email (one address, verified) is for homeserver: mas; on Synapse declare emails"),
            "{message}"
        );
    }

    #[test]
    fn servers_without_user_types_refuse_extra_ones_too() {
        let mut dendrite = base();
        dendrite["homeserver"] = json!("dendrite");
        dendrite["username"] = json!("a");
        dendrite["user_type"] = json!("bridge");
        let message = error_of(dendrite);
        assert!(
            message.starts_with("user_type: Dendrite has no user types"),
            "{message}"
        );
        let message = error_of(
            json!({"homeserver": "mas", "mas_url": "http://127.0.0.1:8080",
            "mas_client_id": "01J0000000000000000000000", "mas_client_secret": "client-secret",
            "username": "a", "user_type": "bridge"}),
        );
        assert!(
            message.starts_with("user_type: MAS has no user types"),
            "{message}"
        );
    }

    #[test]
    fn a_refusal_quotes_a_broken_servers_fields_briefly() {
        let reply = Reply {
            server: crate::http::HOMESERVER,
            status: StatusCode::BAD_REQUEST,
            body: serde_json::json!({"errcode": "E".repeat(50_000), "error": "x".repeat(50_000)}),
        };
        let message = ServerError::refused("creating @a:x", &reply).to_string();
        assert!(message.len() < 600, "{} bytes", message.len());
        assert!(
            message.starts_with(&format!(
                "creating @a:x: the homeserver answered 400 {}... (50000 bytes)",
                "E".repeat(64)
            )),
            "{message}"
        );
    }
}
