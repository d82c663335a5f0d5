//! Dendrite v0.13.8's registration tokens: its admin API
//! (`/_dendrite/admin/registrationTokens`, clientapi/routing/admin.go).
//!
//! Two facts of v0.13.8 shape this file (notes in the commit that added
//! it): registration never asks for or checks a token (its flows are
//! `m.login.dummy` or reCAPTCHA; the token stage answers 501), so the
//! tokens limit nobody; and on SQLite every update answers 200 and changes
//! nothing (its statements bind `$1`/`$2` in the wrong order), so a change
//! that did not land is made again by deleting and recreating the token,
//! which loses nothing because v0.13.8 never counts a use.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Dendrite;
use crate::backend::proxy::from_homeserver;
use crate::backend::token_admin::{
    answered, create_body, observed, register_probe, removed, unexpected, update_body,
};
use crate::backend::{RegistrationTokenServer, ServerError};
use crate::http::{path_segment, Body, Reply};
use crate::model::tokens::{ObservedToken, Registration, TokenSettings};
use crate::secret::Secret;

const TOKENS: &str = "/_dendrite/admin/registrationTokens";

impl Dendrite {
    async fn token_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ServerError> {
        let body = body.map_or(Body::None, Body::Json);
        let reply = self
            .http
            .send(method, path, Some(&self.token), body)
            .await?;
        from_homeserver(path, reply)
    }

    fn token_path(token: &Secret) -> String {
        format!("{TOKENS}/{}", path_segment(token.expose()))
    }
}

impl RegistrationTokenServer for Dendrite {
    async fn registration_tokens(&self) -> Result<Vec<ObservedToken>, ServerError> {
        let what = "reading the registration tokens";
        let reply = self.token_request(Method::GET, TOKENS, None).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        // No tokens: `null`.
        match reply.body.get("registration_tokens") {
            Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(listed)) => listed.iter().map(|t| observed(what, t)).collect(),
            _ => Err(unexpected(what, "no registration_tokens list")),
        }
    }

    async fn create_registration_token(
        &self,
        token: Option<&Secret>,
        settings: TokenSettings,
    ) -> Result<ObservedToken, ServerError> {
        let body = create_body(token, settings);
        let path = format!("{TOKENS}/new");
        let reply = self.token_request(Method::POST, &path, Some(&body)).await?;
        match reply.status {
            StatusCode::FORBIDDEN => Err(ServerError::refused(
                "creating a registration token (Dendrite makes them only with client_api.registration_requires_token: true in dendrite.yaml; set it and restart Dendrite)",
                &reply,
            )),
            _ => answered("creating a registration token", &reply),
        }
    }

    async fn update_registration_token(
        &self,
        token: &Secret,
        uses_allowed: Option<Option<u32>>,
        expires: Option<Option<i64>>,
        _revive: bool,
    ) -> Result<ObservedToken, ServerError> {
        let what = "changing a registration token";
        let body = update_body(uses_allowed, expires);
        let path = Dendrite::token_path(token);
        let reply = self.token_request(Method::PUT, &path, Some(&body)).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        let echoed = observed(what, &reply.body)?;
        let landed = uses_allowed.is_none_or(|u| echoed.uses_allowed == u.map(u64::from))
            && expires.is_none_or(|e| echoed.expires == e);
        if landed {
            return Ok(echoed);
        }
        // SQLite ignored the change: the same token again, changed.
        let settings = TokenSettings {
            uses_allowed: match uses_allowed {
                Some(wanted) => wanted,
                None => echoed.uses_allowed.map(|u| u as u32),
            },
            expires: expires.unwrap_or(echoed.expires),
        };
        self.delete_registration_token(token).await?;
        self.create_registration_token(Some(token), settings).await
    }

    async fn delete_registration_token(&self, token: &Secret) -> Result<(), ServerError> {
        let path = Dendrite::token_path(token);
        let reply = self.token_request(Method::DELETE, &path, None).await?;
        removed(
            "deleting a registration token",
            &reply,
            StatusCode::NOT_FOUND,
        )
    }

    /// v0.13.8 never checks tokens; whether registration is open at all
    /// is what an empty `/register` answers (403 when disabled).
    async fn registration_advertised(&self) -> Result<Registration, ServerError> {
        let reply = register_probe(&self.http).await?;
        match reply.status {
            StatusCode::FORBIDDEN => Ok(Registration::TokensNotChecked { open: false }),
            StatusCode::UNAUTHORIZED => Ok(Registration::TokensNotChecked { open: true }),
            _ => Err(ServerError::refused(
                "reading the registration flows",
                &reply,
            )),
        }
    }
}
