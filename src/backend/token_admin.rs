//! The registration token admin API Synapse and Dendrite share (one list
//! without paging, `new`, and each token at its path; the token object
//! has `token`, `uses_allowed`, `pending`, `completed`, `expiry_time` in
//! ms), the client API's `/register` both ask what registration needs,
//! and how every server's answer to a token request is read.

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::proxy::{admin_request, from_homeserver};
use super::ServerError;
use crate::http::{path_segment, Body, Http, Reply};
use crate::model::tokens::{ObservedToken, TokenSettings};
use crate::secret::Secret;

/// The token admin API at a server's path, each request sent through
/// `http` as `admin`.
pub struct TokenAdminApi {
    base: &'static str,
}

impl TokenAdminApi {
    pub const fn at(base: &'static str) -> TokenAdminApi {
        TokenAdminApi { base }
    }

    fn token_path(&self, token: &Secret) -> String {
        format!("{}/{}", self.base, path_segment(token.expose()))
    }

    /// Every token the server has.
    pub async fn list(
        &self,
        http: &Http,
        admin: &Secret,
    ) -> Result<Vec<ObservedToken>, ServerError> {
        let what = "reading the registration tokens";
        let reply = admin_request(http, admin, Method::GET, self.base, &[], Body::None).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        // Dendrite lists no tokens as `null`.
        match reply.body.get("registration_tokens") {
            Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(listed)) => listed.iter().map(|t| observed(what, t)).collect(),
            _ => Err(unexpected(what, "no registration_tokens list")),
        }
    }

    /// The server's answer to creating a token with `settings` (generated
    /// without `token`), for [`answered`] or a server's own reading.
    pub async fn send_create(
        &self,
        http: &Http,
        admin: &Secret,
        token: Option<&Secret>,
        settings: TokenSettings,
    ) -> Result<Reply, ServerError> {
        let body = create_body(token, settings);
        let path = format!("{}/new", self.base);
        admin_request(http, admin, Method::POST, &path, &[], Body::Json(&body)).await
    }

    /// Sets the fields that are `Some` (`Some(None)`: unlimited, never).
    pub async fn update(
        &self,
        http: &Http,
        admin: &Secret,
        token: &Secret,
        uses_allowed: Option<Option<u32>>,
        expires: Option<Option<i64>>,
    ) -> Result<ObservedToken, ServerError> {
        let body = update_body(uses_allowed, expires);
        let path = self.token_path(token);
        let reply = admin_request(http, admin, Method::PUT, &path, &[], Body::Json(&body)).await?;
        answered("changing a registration token", &reply)
    }

    pub async fn delete(
        &self,
        http: &Http,
        admin: &Secret,
        token: &Secret,
    ) -> Result<(), ServerError> {
        let path = self.token_path(token);
        let reply = admin_request(http, admin, Method::DELETE, &path, &[], Body::None).await?;
        removed(
            "deleting a registration token",
            &reply,
            StatusCode::NOT_FOUND,
        )
    }
}

/// The body that creates a token with `settings`; without `token`, the
/// server generates one.
fn create_body(token: Option<&Secret>, settings: TokenSettings) -> Value {
    let mut body = json!({
        "uses_allowed": settings.uses_allowed,
        "expiry_time": settings.expires,
    });
    if let Some(token) = token {
        body["token"] = json!(token.expose());
    }
    body
}

/// The body that changes the fields that are `Some` (`Some(None)`: unlimited, never).
fn update_body(uses_allowed: Option<Option<u32>>, expires: Option<Option<i64>>) -> Value {
    let mut body = Map::new();
    if let Some(uses_allowed) = uses_allowed {
        body.insert("uses_allowed".into(), json!(uses_allowed));
    }
    if let Some(expires) = expires {
        body.insert("expiry_time".into(), json!(expires));
    }
    Value::Object(body)
}

/// One token as the admin API shows it; `what` names the request in errors.
fn observed(what: &str, entry: &Value) -> Result<ObservedToken, ServerError> {
    let number = |field: &str| -> Result<Option<u64>, ServerError> {
        match entry.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| unexpected(what, &format!("{field} is not a whole number"))),
        }
    };
    let token = entry.get("token").and_then(Value::as_str);
    let token = token.ok_or_else(|| unexpected(what, "a token without its string"))?;
    Ok(ObservedToken {
        token: Secret::new(token),
        uses_allowed: number("uses_allowed")?,
        expires: number("expiry_time")?.map(|ms| ms as i64),
        pending: number("pending")?.unwrap_or(0),
        completed: number("completed")?.unwrap_or(0),
        revoked: false,
    })
}

/// The token a create or change answered with (200); `what` names the request.
pub fn answered(what: &str, reply: &Reply) -> Result<ObservedToken, ServerError> {
    match reply.status {
        StatusCode::OK => observed(what, &reply.body),
        _ => Err(ServerError::refused(what, reply)),
    }
}

/// A removal's answer: done (200), or `gone`, the server's answer for a
/// token removed already (by someone else since the list was read).
pub fn removed(what: &str, reply: &Reply, gone: StatusCode) -> Result<(), ServerError> {
    match reply.status {
        StatusCode::OK => Ok(()),
        status if status == gone => Ok(()),
        _ => Err(ServerError::refused(what, reply)),
    }
}

/// What `/register` answers an empty body, as a client asks first: 403
/// when registration is disabled, else 401 with the flows (and a session
/// that expires unused; no account is made).
pub async fn register_probe(http: &Http) -> Result<Reply, ServerError> {
    const REGISTER: &str = "/_matrix/client/v3/register";
    let reply = http
        .send(Method::POST, REGISTER, None, Body::Json(&json!({})))
        .await?;
    from_homeserver(REGISTER, reply)
}

pub fn unexpected(what: &str, detail: &str) -> ServerError {
    ServerError::Unexpected {
        what: what.into(),
        detail: detail.into(),
    }
}
