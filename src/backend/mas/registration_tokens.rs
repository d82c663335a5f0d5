//! MAS's user registration tokens (`/api/admin/v1/user-registration-tokens`):
//! a paged list, add, update, revoke and unrevoke; no deletion, so a token
//! declared absent is revoked, and one declared present again unrevoked.
//! Its uses are `times_used` (MAS has no pending use), counted when a
//! registration finishes in MAS's web UI.

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::admin_api::unexpected;
use super::Mas;
use crate::backend::token_admin::removed;
use crate::backend::{RegistrationTokenServer, ServerError};
use crate::http::path_segment;
use crate::model::tokens::{ObservedToken, Registration, TokenSettings};
use crate::rfc3339::{format_millis, parse_millis};
use crate::secret::Secret;

const TOKENS: &str = "/user-registration-tokens";

impl Mas {
    /// The path of the token `token` (listed first), plus `action`.
    fn token_path(&self, token: &Secret, action: &str) -> Result<String, ServerError> {
        let ids = self.registration_token_ids.borrow();
        let id = ids
            .get(token.expose())
            .ok_or_else(|| unexpected("changing a registration token", "it was not in the list"))?;
        Ok(format!("{TOKENS}/{}{action}", path_segment(id)))
    }

    /// The token of a `SingleResponse`, remembering its ID.
    fn token_of(&self, what: &str, body: &Value) -> Result<ObservedToken, ServerError> {
        let data = body
            .get("data")
            .ok_or_else(|| unexpected(what, "no data"))?;
        self.remember(what, data)
    }

    fn remember(&self, what: &str, item: &Value) -> Result<ObservedToken, ServerError> {
        let id = item.get("id").and_then(Value::as_str);
        let id = id.ok_or_else(|| unexpected(what, "a token without its ID"))?;
        let token = observed(what, item.get("attributes").unwrap_or(&Value::Null))?;
        self.registration_token_ids
            .borrow_mut()
            .insert(token.token.expose().to_string(), id.to_string());
        Ok(token)
    }
}

impl RegistrationTokenServer for Mas {
    const REMOVED: &'static str = "revoked";

    async fn registration_tokens(&self) -> Result<Vec<ObservedToken>, ServerError> {
        let what = "listing the registration tokens";
        let listed = self.list_pages(TOKENS, &[], what, u64::MAX).await?;
        let listed = listed.ok_or_else(|| unexpected(what, "the list was not read"))?;
        listed
            .iter()
            .map(|item| self.remember(what, item))
            .collect()
    }

    async fn create_registration_token(
        &self,
        token: Option<&Secret>,
        settings: TokenSettings,
    ) -> Result<ObservedToken, ServerError> {
        let what = "creating a registration token";
        let mut body = json!({
            "usage_limit": settings.uses_allowed,
            "expires_at": settings.expires.map(format_millis),
        });
        if let Some(token) = token {
            body["token"] = json!(token.expose());
        }
        let reply = self.admin(Method::POST, TOKENS, Some(&body)).await?;
        match reply.status {
            StatusCode::CREATED | StatusCode::OK => self.token_of(what, &reply.body),
            _ => Err(ServerError::refused(what, &reply)),
        }
    }

    async fn update_registration_token(
        &self,
        token: &Secret,
        uses_allowed: Option<Option<u32>>,
        expires: Option<Option<i64>>,
        revive: bool,
    ) -> Result<ObservedToken, ServerError> {
        let mut latest = None;
        if revive {
            let what = "unrevoking a registration token";
            let path = self.token_path(token, "/unrevoke")?;
            let reply = self.admin(Method::POST, &path, None).await?;
            if reply.status != StatusCode::OK {
                return Err(ServerError::refused(what, &reply));
            }
            latest = Some(self.token_of(what, &reply.body)?);
        }
        if uses_allowed.is_some() || expires.is_some() {
            let what = "changing a registration token";
            let mut body = Map::new();
            if let Some(uses_allowed) = uses_allowed {
                body.insert("usage_limit".into(), json!(uses_allowed));
            }
            if let Some(expires) = expires {
                body.insert("expires_at".into(), json!(expires.map(format_millis)));
            }
            let path = self.token_path(token, "")?;
            let reply = self
                .admin(Method::PUT, &path, Some(&Value::Object(body)))
                .await?;
            if reply.status != StatusCode::OK {
                return Err(ServerError::refused(what, &reply));
            }
            latest = Some(self.token_of(what, &reply.body)?);
        }
        latest.ok_or_else(|| unexpected("changing a registration token", "nothing to change"))
    }

    async fn delete_registration_token(&self, token: &Secret) -> Result<(), ServerError> {
        let path = self.token_path(token, "/revoke")?;
        let reply = self.admin(Method::POST, &path, None).await?;
        // 400: revoked already.
        removed(
            "revoking a registration token",
            &reply,
            StatusCode::BAD_REQUEST,
        )
    }

    /// MAS's site configuration: whether password registration is on and
    /// requires a token. (The deprecated `account.registration_token_required`
    /// is enforced by MAS but shown in neither field.)
    async fn registration_advertised(&self) -> Result<Registration, ServerError> {
        let what = "reading MAS's site configuration";
        let reply = self.admin(Method::GET, "/site-config", None).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        let flag = |name: &str| {
            reply
                .body
                .get(name)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        Ok(
            match (
                flag("password_registration_enabled"),
                flag("password_registration_token_required"),
            ) {
                (false, _) => Registration::Closed,
                (true, true) => Registration::TokenRequired,
                (true, false) => Registration::OpenWithoutToken,
            },
        )
    }
}

/// One token's `attributes` as MAS shows them.
fn observed(what: &str, attributes: &Value) -> Result<ObservedToken, ServerError> {
    let token = attributes.get("token").and_then(Value::as_str);
    let token = token.ok_or_else(|| unexpected(what, "a token without its string"))?;
    let time = |field: &str| -> Result<Option<i64>, ServerError> {
        match attributes.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => parse_millis(text)
                .map(Some)
                .ok_or_else(|| unexpected(what, &format!("{field} is not RFC 3339"))),
            Some(_) => Err(unexpected(what, &format!("{field} is not a time"))),
        }
    };
    Ok(ObservedToken {
        token: Secret::new(token),
        uses_allowed: attributes.get("usage_limit").and_then(Value::as_u64),
        expires: time("expires_at")?,
        pending: 0,
        completed: attributes
            .get("times_used")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        revoked: time("revoked_at")?.is_some(),
    })
}
