//! Stage 2 and 4: read accounts from a homeserver and apply planned changes.
//! Each homeserver implementation is one file behind the [`Homeserver`] trait;
//! nothing outside this folder knows about HTTP paths or server quirks.

mod client_api;
pub mod dendrite;
pub mod mas;
mod shared_secret;
pub mod synapse;

use std::collections::HashMap;

use crate::args::{DesiredUser, HomeserverKind, ModuleArgs};
use crate::http::{server_word, HttpError, Reply};
use crate::matrix_id::UserId;
use crate::plan::{Account, Change, Fact};
use crate::secret::Secret;

/// What a homeserver implementation must offer the reconciler.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait Homeserver {
    /// The server name user IDs end with (`example.com` in `@alice:example.com`).
    fn server_name(&self) -> &str;

    /// Reads the accounts of all `users` at once, when that is cheaper than
    /// one read per user. `None` (the default, for servers without a bulk
    /// read) asks the caller to use [`Homeserver::account`].
    async fn accounts(
        &self,
        _users: &[UserId],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        Ok(None)
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
    /// servers whose reads return [`crate::plan::Seen::Unknown`] are asked.
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

    /// Creates `user` with every declared attribute and its password.
    /// [`ServerError::CreatedMeanwhile`] when another run created it first.
    async fn create(&self, user: &UserId, desired: &DesiredUser) -> Result<(), ServerError>;

    /// Applies `changes` (from [`crate::plan::plan`], never `Create`) to
    /// an existing `user`.
    async fn update(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError>;
}

/// A failure talking to the homeserver. Messages say what failed and what to do.
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
    /// The server refused a request for a reason of its own.
    #[error("{what}: the homeserver answered {status}{errcode}: {explanation}")]
    Refused {
        what: String,
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
    /// Dendrite keeps this only in its database, which was not given.
    #[error("{what} needs dendrite_database: the PostgreSQL URL or SQLite path of Dendrite's user API database (Dendrite has no API for it); give it (or dendrite_database_file, a file holding it) as in dendrite.yaml's user_api.account_database")]
    NeedsDatabase { what: String },
    /// Dendrite's database could not be opened, read or written.
    #[error("dendrite_database: {detail}; check that it is the PostgreSQL URL or SQLite path of Dendrite's user API database and that this host can reach and write it")]
    Database { detail: String },
    /// Dendrite creates users only by shared-secret registration.
    #[error("creating {user} needs registration_shared_secret: Dendrite has no admin API that creates users; give the secret from dendrite.yaml's client_api.registration_shared_secret")]
    NeedsSharedSecret { user: String },
    /// A change of several steps failed after an earlier step had landed.
    #[error("{cause}; {done}: run again to finish")]
    Unfinished {
        done: String,
        cause: Box<ServerError>,
    },
    /// The answer did not have the shape the API documents.
    #[error("{what}: unexpected answer from the homeserver: {detail}; check that the URL points at the right server and that its version is supported")]
    Unexpected { what: String, detail: String },
    /// MAS's token endpoint refused the OAuth2 client (wrong ID or secret,
    /// or a client that may not use the client-credentials grant).
    #[error("MAS refused the OAuth2 client {client_id} ({code}{detail}): mas_client_id/mas_client_secret are wrong, or MAS's configuration does not list that client under clients: with client_auth_method client_secret_basic or client_secret_post; copy both from MAS's configuration")]
    MasClientRefused {
        client_id: String,
        code: String,
        detail: String,
    },
    /// MAS's policy does not give the client the admin scope.
    #[error("MAS does not grant the urn:mas:admin scope to the OAuth2 client {client_id} ({detail}); list the client in MAS's policy.data.admin_clients")]
    MasAdminScopeDenied { client_id: String, detail: String },
    /// MAS refused the given `admin_token`, which the module cannot renew.
    #[error("MAS refused the admin_token ({detail}); give a current token with the urn:mas:admin scope, or mas_client_id and mas_client_secret so that matrix_user fetches its own")]
    MasTokenRefused { detail: String },
    /// MAS is configured without passwords (`passwords.enabled: false`).
    #[error("MAS has password login disabled (passwords.enabled: false in its configuration), so it can neither set nor check passwords; leave password and update_password out for this user, or enable passwords in MAS")]
    MasPasswordsDisabled,
    /// MAS's password policy refused the declared password.
    #[error("MAS refused the password as too weak: it needs a zxcvbn strength of at least {minimum} of 4 (its passwords.minimum_complexity); choose a longer, less guessable password")]
    MasPasswordTooWeak { minimum: u64 },
    /// The homeserver behind MAS reports the username as taken or reserved.
    #[error("MAS will not create {user}: the homeserver reports the username as reserved or taken (an application service's namespace, or an account the homeserver has but MAS does not); choose another username")]
    MasUsernameReserved { user: String },
    /// The declared e-mail address belongs to another MAS user.
    #[error("the e-mail address {email} already belongs to another MAS user; declare another address, or remove it from that user first")]
    MasEmailInUse { email: String },
    /// MAS refuses logins of a locked user, so its password cannot be compared.
    #[error("{user} is locked in MAS, so its password cannot be checked by logging in; unlock it in MAS, or use update_password: on_create")]
    MasUserLocked { user: String },
    /// A new MAS user was created, but a later step failed.
    #[error("{cause}; {user} was created in MAS, {state}")]
    MasCreatedUnfinished {
        user: String,
        cause: Box<ServerError>,
        state: String,
    },
}

/// The server name the server reported, refused when `server_name` says otherwise.
pub fn confirm_server_name(args: &ModuleArgs, actual: String) -> Result<String, ServerError> {
    match &args.server.server_name {
        Some(given) if *given != actual => Err(ServerError::WrongServerName {
            given: given.clone(),
            actual,
            url_field: match args.homeserver {
                HomeserverKind::Mas => "mas_url",
                _ => "homeserver_url",
            },
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
            status: reply.status.as_u16(),
            errcode,
            explanation: reply.explanation(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn a_refusal_quotes_a_broken_servers_fields_briefly() {
        let reply = Reply {
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
