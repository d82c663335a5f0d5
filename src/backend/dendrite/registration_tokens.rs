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

use reqwest::StatusCode;

use super::Dendrite;
use crate::backend::token_admin::{answered, register_probe, TokenAdminApi};
use crate::backend::{RegistrationTokenServer, ServerError};
use crate::model::tokens::{ObservedToken, Registration, TokenSettings};
use crate::secret::Secret;

const TOKENS: TokenAdminApi = TokenAdminApi::at("/_dendrite/admin/registrationTokens");

impl RegistrationTokenServer for Dendrite {
    async fn registration_tokens(&self) -> Result<Vec<ObservedToken>, ServerError> {
        TOKENS.list(&self.http, &self.token).await
    }

    async fn create_registration_token(
        &self,
        token: Option<&Secret>,
        settings: TokenSettings,
    ) -> Result<ObservedToken, ServerError> {
        let reply = TOKENS
            .send_create(&self.http, &self.token, token, settings)
            .await?;
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
        let echoed = TOKENS
            .update(&self.http, &self.token, token, uses_allowed, expires)
            .await?;
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
        TOKENS.delete(&self.http, &self.token, token).await
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
