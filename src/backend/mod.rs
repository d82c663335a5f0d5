//! Stage 2 and 4: read accounts from a homeserver and apply planned changes.
//! Each homeserver implementation is one file behind the [`Homeserver`] trait;
//! nothing outside this folder knows about HTTP paths or server quirks.

pub mod synapse;

use std::collections::HashMap;

use crate::args::DesiredUser;
use crate::http::{HttpError, Reply};
use crate::matrix_id::UserId;
use crate::plan::{Account, Change};
use crate::secret::Secret;

/// What a homeserver implementation must offer the reconciler.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait Homeserver {
    /// The server name user IDs end with (`example.com` in `@alice:example.com`).
    fn server_name(&self) -> &str;

    /// Reads the accounts of all `users` at once, when that is cheaper than
    /// one read per user. `None` asks the caller to use [`Homeserver::account`].
    async fn accounts(
        &self,
        users: &[UserId],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError>;

    /// Reads one account; `None` when it does not exist.
    async fn account(&self, user: &UserId) -> Result<Option<Account>, ServerError>;

    /// Whether `password` is the user's stored password, without logging the
    /// user in (logins are rate-limited) and without leaving a session behind.
    async fn password_matches(&self, user: &UserId, password: &Secret)
        -> Result<bool, ServerError>;

    /// Applies `changes` (from [`crate::plan::plan`]) to `user`.
    async fn apply(
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
    /// The admin token is unknown, expired or revoked.
    #[error("the homeserver refused the admin token ({detail}); give a current access token of a server admin as admin_token")]
    TokenRefused { detail: String },
    /// The account behind the token is not a server admin.
    #[error("{account} is not a server admin, so it cannot manage users; promote it, or give the token of a server admin")]
    NotAdmin { account: String },
    /// The service account exists but its password is not the derived one.
    #[error("the service account {account} exists but does not accept the password matrix_user derives from the registration_shared_secret (was it created by hand, or the secret changed?); give admin_token, choose another service_account, or deactivate that account")]
    ServiceAccountPassword { account: String },
    /// The configured `server_name` is not the homeserver's.
    #[error("server_name is {given:?}, but the homeserver at homeserver_url is {actual:?}; fix server_name or leave it out")]
    WrongServerName { given: String, actual: String },
    /// The admin token could not be kept for the next run.
    #[error("cannot keep the service account's token in {path}: {detail}; set token_cache_dir to a writable folder")]
    TokenCache { path: String, detail: String },
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
    #[error("{user} was created by someone else meanwhile")]
    CreatedMeanwhile { user: String },
    /// The answer did not have the shape the API documents.
    #[error("{what}: unexpected answer from the homeserver: {detail}")]
    Unexpected { what: String, detail: String },
}

impl ServerError {
    /// A refusal, quoting the server's own explanation.
    pub fn refused(what: impl Into<String>, reply: &Reply) -> ServerError {
        let errcode = match reply.errcode() {
            "" => String::new(),
            code => format!(" {code}"),
        };
        ServerError::Refused {
            what: what.into(),
            status: reply.status.as_u16(),
            errcode,
            explanation: reply.explanation(),
        }
    }
}
