//! Who the module acts as on Synapse and Dendrite: the owner of a given
//! `admin_token`, or its own service account, which it registers once with
//! the registration shared secret, logs in when its cached token is lost
//! (see [`super::token_cache`]), and checks to be a server admin.

use std::path::PathBuf;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha1::Sha1;

use super::client_api::{
    logout, password_login, post_with_password, unix_millis, whoami, DEVICE_NAME,
};
use super::error::ActingAccountProblem;
use super::shared_secret::{hex, register, Registration};
use super::token_cache::TokenCache;
use super::DeclarationError;
use super::{ServerError, UserErrorKind};
use crate::http::{server_word, Body, Http};
use crate::model::{Credentials, ModuleArgs};
use crate::secret::Secret;

/// How the module gets into Synapse or Dendrite.
pub enum Access {
    /// A server admin's access token (`admin_token`), used as it is.
    AdminToken(Secret),
    /// The registration shared secret: the module acts as its service
    /// account, whose token it keeps in `token_cache_dir` between runs.
    ServiceAccount {
        secret: Secret,
        token_cache_dir: PathBuf,
    },
}

/// The credentials Synapse and Dendrite accept: the shared secret (the
/// module then acts as its service account, whose token needs a private
/// folder) or an admin's token.
pub fn require_credentials(credentials: &Credentials) -> Result<Access, DeclarationError> {
    match (&credentials.admin_token, &credentials.shared_secret) {
        (Some(token), _) => Ok(Access::AdminToken(token.clone())),
        (None, Some(secret)) => match &credentials.token_cache_dir {
            Some(folder) => Ok(Access::ServiceAccount {
                secret: secret.clone(),
                token_cache_dir: folder.clone(),
            }),
            None => Err(DeclarationError::NoCredentials(
            "token_cache_dir is needed: neither HOME nor XDG_CACHE_HOME is set, so there is no private \
             folder of this user to keep the service account's token in between runs; set token_cache_dir \
             to a folder only the user running the module can write, or give admin_token",
            )),
        },
        (None, None) => Err(DeclarationError::NoCredentials(
            "no credentials: give registration_shared_secret (or registration_shared_secret_file) \
             or admin_token (or admin_token_file)",
        )),
    }
}

/// Who the module acts as: the owner of `admin_token`, or the service account.
pub struct Identity {
    pub token: Secret,
    pub server_name: String,
    /// The account the token belongs to: the service account, or the admin_token's owner.
    pub user_id: String,
}

/// How a homeserver tells whether a token is a server admin's.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait AdminCheck {
    /// Whether `token`, which belongs to `user_id`, may manage users.
    async fn is_admin(
        &self,
        http: &Http,
        token: &Secret,
        user_id: &str,
    ) -> Result<bool, ServerError>;
}

/// Authenticates with `admin_token`, else as the service account (see
/// [`service_account_token`]), makes sure the identity is a server admin,
/// and checks the configured `server_name`. `service_user_type` is the user
/// type the service account is registered with (Synapse's `bot`; Dendrite
/// has none).
pub async fn identify(
    args: &ModuleArgs,
    access: &Access,
    http: &Http,
    kind: &str,
    service_user_type: Option<&str>,
    admin_check: &impl AdminCheck,
) -> Result<Identity, ServerError> {
    let (token, user_id) = match access {
        Access::AdminToken(token) => {
            let user_id = whoami(http, token)
                .await?
                .ok_or_else(|| ServerError::TokenRefused {
                    detail: "unknown or expired token".into(),
                })?;
            if !admin_check.is_admin(http, token, &user_id).await? {
                return Err(ServerError::ActingAccount {
                    account: user_id,
                    problem: ActingAccountProblem::TokenNotAdmin,
                });
            }
            (token.clone(), user_id)
        }
        Access::ServiceAccount {
            secret,
            token_cache_dir,
        } => {
            let account = &args.credentials.service_account;
            let cache = TokenCache::new(kind, token_cache_dir, http.base_url(), account);
            let password = service_account_password(secret, account.localpart());
            let registration = Registration {
                localpart: account.localpart(),
                password: &password,
                admin: true,
                user_type: service_user_type,
                displayname: Some(DEVICE_NAME),
                // The session this registration opens is the one the module keeps.
                inhibit_login: Some(false),
            };
            service_account_token(http, secret, &registration, &cache, admin_check).await?
        }
    };
    let server_name = user_id
        .split_once(':')
        .map(|(_, server)| server.to_string())
        .ok_or_else(|| ServerError::Unexpected {
            what: "asking who the admin token belongs to".into(),
            detail: format!("{:?} is not a user ID", server_word(&user_id)),
        })?;
    let server_name = confirm_server_name(args, server_name)?;
    Ok(Identity {
        token,
        server_name,
        user_id,
    })
}

/// The service account's token, from the cache when it still works as an
/// admin's, else by registering the account (first run) or logging it in
/// (cache lost, token revoked, or the account demoted since).
async fn service_account_token(
    http: &Http,
    secret: &Secret,
    registration: &Registration<'_>,
    cache: &TokenCache,
    admin_check: &impl AdminCheck,
) -> Result<(Secret, String), ServerError> {
    if let Some(token) = cache.load()? {
        if let Some(user_id) = whoami(http, &token).await? {
            if admin_check.is_admin(http, &token, &user_id).await? {
                return Ok((token, user_id));
            }
            // Demoted since it was cached: the token can never manage users
            // again, whatever happens to the account, so it goes.
            cache.discard()?;
            let _ = logout(http, &token, "the service account").await;
        }
    }
    let pending = cache.prepare_store()?;
    let (token, user_id) = register_service_account(http, secret, registration).await?;
    if !admin_check.is_admin(http, &token, &user_id).await? {
        // Not cached, so that the run after the account is promoted again
        // logs in afresh; the session is ended so that none piles up.
        let _ = logout(http, &token, "the service account").await;
        return Err(ServerError::ActingAccount {
            account: user_id,
            problem: ActingAccountProblem::ServiceAccountDemoted,
        });
    }
    pending.commit(&token)?;
    Ok((token, user_id))
}

/// Registers the service account, or logs it in when it exists. A
/// registration whose answer was lost is sent again with a fresh nonce:
/// registration refuses an existing user, so the second answer says which.
async fn register_service_account(
    http: &Http,
    secret: &Secret,
    registration: &Registration<'_>,
) -> Result<(Secret, String), ServerError> {
    let mut registered = register(http, secret, registration).await;
    if let Err(ServerError::User {
        kind: UserErrorKind::RegistrationUnanswered { .. },
        ..
    }) = registered
    {
        registered = register(http, secret, registration).await;
    }
    match registered {
        Ok((user_id, Some(token))) => Ok((token, user_id)),
        Ok((_, None)) => Err(ServerError::Unexpected {
            what: "registering the service account".into(),
            detail: "no access token in the answer".into(),
        }),
        Err(ServerError::User {
            kind: UserErrorKind::CreatedMeanwhile,
            ..
        }) => recover_service_account(http, registration.localpart, registration.password).await,
        Err(other) => Err(other),
    }
}

/// Logs the existing service account in and removes its idle sessions, so
/// sessions do not pile up however often the cache is lost. Sessions in use
/// stay: another run may be working with one right now.
async fn recover_service_account(
    http: &Http,
    localpart: &str,
    password: &Secret,
) -> Result<(Secret, String), ServerError> {
    let session = password_login(http, localpart, password)
        .await?
        .ok_or_else(|| ServerError::ActingAccount {
            account: localpart.to_string(),
            problem: ActingAccountProblem::ServiceAccountPassword,
        })?;
    let reply = http
        .send(
            Method::GET,
            "/_matrix/client/v3/devices",
            Some(&session.token),
            Body::None,
        )
        .await?;
    let stale: Vec<&str> = reply
        .body
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| is_idle(d))
        .filter_map(|d| d.get("device_id").and_then(Value::as_str))
        .filter(|id| *id != session.device_id)
        .collect();
    if !stale.is_empty() {
        let reply = post_with_password(
            http,
            "/_matrix/client/v3/delete_devices",
            &session.token,
            (&session.user_id, password),
            json!({ "devices": stale }),
        )
        .await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(
                "removing the service account's old sessions",
                &reply,
            ));
        }
    }
    Ok((session.token, session.user_id))
}

/// A service-account session unused this long belongs to a lost token cache.
const SERVICE_SESSION_IDLE_MS: u64 = 60 * 60 * 1000;

/// The service account's password, derived from the shared secret so that
/// any host holding the secret can recover the account's token.
fn service_account_password(secret: &Secret, localpart: &str) -> Secret {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"matrix_user service account\0");
    mac.update(localpart.as_bytes());
    Secret::new(hex(&mac.finalize().into_bytes()))
}

/// Whether a device has not been used for [`SERVICE_SESSION_IDLE_MS`].
fn is_idle(device: &Value) -> bool {
    device
        .get("last_seen_ts")
        .and_then(Value::as_u64)
        .is_some_and(|seen| seen.saturating_add(SERVICE_SESSION_IDLE_MS) < unix_millis())
}

/// The server name the server reported, refused when `server_name` says otherwise.
pub fn confirm_server_name(args: &ModuleArgs, actual: String) -> Result<String, ServerError> {
    match &args.server.server_name {
        Some(given) if *given != actual => Err(ServerError::WrongServerName {
            given: given.clone(),
            actual,
            url_field: args.homeserver_kind().url_field(),
        }),
        _ => Ok(actual),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_password_is_stable_and_secret_dependent() {
        let a = service_account_password(&Secret::new("one"), "svc");
        assert_eq!(a, service_account_password(&Secret::new("one"), "svc"));
        assert_ne!(a, service_account_password(&Secret::new("two"), "svc"));
        assert_eq!(a.expose().len(), 40);
    }
}
