//! [`ServerError`]: what can fail while talking to the server that holds the
//! accounts, with the failures only one server reports wrapped in its own
//! error.

use super::token_cache::TokenCacheError;
use super::{dendrite, mas, synapse};
use crate::http::{server_word, HttpError, Reply};
use crate::model::Change;

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
    /// The account the module acts as (the admin token's, or the service
    /// account) cannot manage users.
    #[error("{}", .problem.message(.account))]
    ActingAccount {
        account: String,
        problem: ActingAccountProblem,
    },
    /// The configured `server_name` is not the one the server serves.
    #[error("server_name is {given:?}, but the server at {url_field} serves {actual:?}; fix server_name or leave it out")]
    WrongServerName {
        given: String,
        actual: String,
        url_field: &'static str,
    },
    /// The service account's token could not be kept or read safely.
    #[error(transparent)]
    TokenCache(#[from] TokenCacheError),
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
    /// Something went wrong with the declared `user` itself; `kind` says what.
    #[error("{}", .kind.message(.user))]
    User { user: String, kind: UserErrorKind },
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

/// What went wrong with one declared user ([`ServerError::User`]).
#[derive(Debug)]
pub enum UserErrorKind {
    /// Another run created the user between our read and our write; the
    /// reconciler reads it again and carries on.
    CreatedMeanwhile,
    /// The account was created without a password (so that creating could
    /// not overwrite someone else's), then setting the rest failed.
    CreatedWithoutPassword {
        cause: Box<ServerError>,
        /// What the account was left as, and what the next run does.
        state: String,
    },
    /// A shared-secret registration got no answer: it may have created the
    /// user. Registration is all or nothing and refuses an existing user, so
    /// the reconciler reads the user again and, if it is still missing,
    /// registers it again with a fresh nonce.
    RegistrationUnanswered { cause: Box<ServerError> },
    /// Creating got no answer, and the user exists now: made by this run
    /// (then without a password) or by someone else, which the server cannot tell.
    CreationUnconfirmed { cause: Box<ServerError> },
    /// An address or SSO identity declared for the user (`what`) belongs to
    /// another account, `holder`; Synapse would move an address silently and
    /// refuse an identity.
    TakenByOther { what: String, holder: String },
}

impl UserErrorKind {
    /// What went wrong with `user`, and what to do.
    fn message(&self, user: &str) -> String {
        match self {
            UserErrorKind::CreatedMeanwhile => {
                format!("{user} was created by someone else meanwhile, twice in a row; run again")
            }
            UserErrorKind::CreatedWithoutPassword { cause, state } => {
                format!("{cause}; {user} was created without its password, {state}")
            }
            UserErrorKind::RegistrationUnanswered { cause } => format!(
                "{cause} (registering {user}, twice in a row); run again: a registration is never applied twice"
            ),
            UserErrorKind::CreationUnconfirmed { cause } => format!(
                "creating {user}: {cause}; {user} exists now, but matrix_user cannot tell whether its own request created it (then it has no password yet) or someone else did, so it leaves the account alone: check it, and if it is the one you declared, run again with update_password: always for this user"
            ),
            UserErrorKind::TakenByOther { what, holder } => format!(
                "{user}: {what} belongs to {holder}; matrix_user does not take it from another account: remove it from {holder} first, or correct the declaration"
            ),
        }
    }
}

/// Why the account the module acts as cannot manage users.
#[derive(Debug)]
pub enum ActingAccountProblem {
    /// The account behind the admin token is not a server admin.
    TokenNotAdmin,
    /// The service account's token works, but the account is no admin any
    /// more (someone demoted it); it cannot promote itself.
    ServiceAccountDemoted,
    /// The service account exists but its password is not the derived one.
    ServiceAccountPassword,
}

impl ActingAccountProblem {
    /// What is wrong with `account`, and what to do.
    fn message(&self, account: &str) -> String {
        match self {
            ActingAccountProblem::TokenNotAdmin => format!(
                "{account} is not a server admin, so it cannot manage users; promote it, or give the token of a server admin"
            ),
            ActingAccountProblem::ServiceAccountDemoted => format!(
                "the service account {account} is not a server admin (any more: someone demoted it), and it cannot promote itself; promote it again with another admin's token (PUT /_synapse/admin/v2/users/{account} with {{\"admin\": true}} on Synapse, account_type 3 in Dendrite's database), or give admin_token, or choose another service_account"
            ),
            ActingAccountProblem::ServiceAccountPassword => format!(
                "the service account {account} exists but does not accept the password matrix_user derives from the registration_shared_secret (was it created by hand, or the secret changed?); choose another service_account (the name stays taken even if that account is deactivated), or give admin_token"
            ),
        }
    }
}

impl ServerError {
    /// A failure about the declared `user`.
    pub fn user(user: impl ToString, kind: UserErrorKind) -> ServerError {
        ServerError::User {
            user: user.to_string(),
            kind,
        }
    }

    /// The changes that landed before this failure, when the failure knows them.
    pub fn landed(&self) -> &[Change] {
        match self {
            ServerError::Mas(mas::MasError::User {
                kind: mas::MasUserProblem::CreatedUnfinished { landed, .. },
                ..
            }) => landed,
            _ => &[],
        }
    }

    /// A write that may have been carried out although its answer was lost.
    pub fn is_answer_lost(&self) -> bool {
        matches!(self, ServerError::Http(http) if http.is_answer_lost())
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
    use reqwest::StatusCode;

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
