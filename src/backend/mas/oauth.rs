//! MAS's OAuth2 side: the client the module authenticates as (the
//! client-credentials grant at `/oauth2/token`, with `client_secret_basic`
//! or else `client_secret_post`), and the admin token in use, renewed once
//! for all requests when MAS refuses it.

use std::cell::{Cell, RefCell};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{unexpected, MasError};
use crate::backend::ServerError;
use crate::http::{server_word, server_words, Body, Http, Reply};
use crate::secret::Secret;

const TOKEN_ENDPOINT: &str = "/oauth2/token";
const ADMIN_SCOPE: &str = "urn:mas:admin";

/// The admin token in use, and how to get another.
pub struct Tokens {
    /// The token and how many times it has been replaced.
    current: RefCell<(Secret, u64)>,
    client: Option<OAuthClient>,
    /// Held while a new token is fetched: the requests that all found the
    /// old one refused wait for it, so one token is fetched, not one each.
    renewing: tokio::sync::Mutex<()>,
}

impl Tokens {
    pub fn new(token: Secret, client: Option<OAuthClient>) -> Tokens {
        Tokens {
            current: RefCell::new((token, 0)),
            client,
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn current(&self) -> (Secret, u64) {
        self.current.borrow().clone()
    }

    /// A token newer than the one of `generation`, fetching it if no other
    /// request has done so meanwhile; `None` without a client, as a given
    /// `admin_token` alone cannot be renewed.
    pub async fn renew(&self, http: &Http, generation: u64) -> Result<Option<Secret>, ServerError> {
        let Some(client) = &self.client else {
            return Ok(None);
        };
        let _renewing = self.renewing.lock().await;
        let (token, now) = self.current();
        if now != generation {
            return Ok(Some(token));
        }
        let token = client.fetch_token(http).await?;
        *self.current.borrow_mut() = (token.clone(), generation + 1);
        Ok(Some(token))
    }
}

/// The OAuth2 client the module authenticates as.
pub struct OAuthClient {
    id: String,
    secret: Secret,
    /// Whether MAS wants `client_secret_post` rather than `client_secret_basic`;
    /// learnt from the first token request.
    post: Cell<bool>,
}

impl OAuthClient {
    pub fn new(id: String, secret: Secret) -> OAuthClient {
        OAuthClient {
            id,
            secret,
            post: Cell::new(false),
        }
    }

    /// A client-credentials token with the admin scope. MAS accepts only the
    /// authentication method its configuration names for the client, so
    /// Basic is tried first, then the form.
    pub async fn fetch_token(&self, http: &Http) -> Result<Secret, ServerError> {
        let grant = [("grant_type", "client_credentials"), ("scope", ADMIN_SCOPE)];
        if !self.post.get() {
            let reply = http
                .send_basic(
                    Method::POST,
                    TOKEN_ENDPOINT,
                    (&self.id, &self.secret),
                    Body::Form(&grant),
                )
                .await?;
            if oauth_error(&reply) != Some("invalid_client") {
                return self.token_from(&reply);
            }
        }
        let form = [
            grant[0],
            grant[1],
            ("client_id", self.id.as_str()),
            ("client_secret", self.secret.expose()),
        ];
        let reply = http
            .send(Method::POST, TOKEN_ENDPOINT, None, Body::Form(&form))
            .await?;
        let token = self.token_from(&reply)?;
        self.post.set(true);
        Ok(token)
    }

    fn token_from(&self, reply: &Reply) -> Result<Secret, ServerError> {
        let what = "fetching an admin token from MAS";
        let detail = reply
            .body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match (reply.status, oauth_error(reply)) {
            (StatusCode::OK, _) => {}
            (StatusCode::UNAUTHORIZED, Some(code)) => {
                return Err(ServerError::Mas(MasError::ClientRefused {
                    client_id: self.id.clone(),
                    code: server_word(code),
                    detail: if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", server_words(detail))
                    },
                }))
            }
            (StatusCode::FORBIDDEN, Some("invalid_scope")) => {
                return Err(ServerError::Mas(MasError::AdminScopeDenied {
                    client_id: self.id.clone(),
                    detail: server_words(detail),
                }))
            }
            _ => return Err(ServerError::refused(what, reply)),
        }
        // MAS lists the scopes it granted; a token without the admin one is useless here.
        if let Some(scope) = reply.body.get("scope").and_then(Value::as_str) {
            if !scope.split(' ').any(|s| s == ADMIN_SCOPE) {
                return Err(ServerError::Mas(MasError::AdminScopeDenied {
                    client_id: self.id.clone(),
                    detail: format!("granted only {:?}", server_word(scope)),
                }));
            }
        }
        reply
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .map(Secret::new)
            .ok_or_else(|| unexpected(what, "no access_token"))
    }
}

/// The OAuth2 `error` code of a token endpoint answer.
fn oauth_error(reply: &Reply) -> Option<&str> {
    reply.body.get("error").and_then(Value::as_str)
}
