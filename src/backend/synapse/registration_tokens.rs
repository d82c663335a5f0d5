//! Synapse's registration tokens: its admin API
//! (`/_synapse/admin/v1/registration_tokens`, one list without paging) and
//! what its client API advertises for registration.

use reqwest::StatusCode;
use serde_json::Value;

use super::Synapse;
use crate::backend::token_admin::{answered, register_probe, unexpected, TokenAdminApi};
use crate::backend::{RegistrationTokenServer, ServerError};
use crate::model::tokens::{ObservedToken, Registration, TokenSettings};
use crate::secret::Secret;

const TOKENS: TokenAdminApi = TokenAdminApi::at("/_synapse/admin/v1/registration_tokens");
const TOKEN_STAGE: &str = "m.login.registration_token";

impl RegistrationTokenServer for Synapse {
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
        answered("creating a registration token", &reply)
    }

    async fn update_registration_token(
        &self,
        token: &Secret,
        uses_allowed: Option<Option<u32>>,
        expires: Option<Option<i64>>,
        _revive: bool,
    ) -> Result<ObservedToken, ServerError> {
        TOKENS
            .update(&self.http, &self.token, token, uses_allowed, expires)
            .await
    }

    async fn delete_registration_token(&self, token: &Secret) -> Result<(), ServerError> {
        TOKENS.delete(&self.http, &self.token, token).await
    }

    /// What `/register` asks of a client first.
    async fn registration_advertised(&self) -> Result<Registration, ServerError> {
        let what = "reading the registration flows";
        let reply = register_probe(&self.http).await?;
        match reply.status {
            StatusCode::FORBIDDEN => Ok(Registration::Closed),
            StatusCode::UNAUTHORIZED => match reply.body.get("flows").and_then(Value::as_array) {
                Some(flows) => Ok(registration_of(flows)),
                None => Err(unexpected(what, "no flows")),
            },
            _ => Err(ServerError::refused(what, &reply)),
        }
    }
}

/// What the registration `flows` of a 401 mean for tokens: required when
/// every flow has the token stage (Synapse prepends it to each when
/// `registration_requires_token` is set).
fn registration_of(flows: &[Value]) -> Registration {
    let asks_token = |flow: &Value| {
        flow.get("stages")
            .and_then(Value::as_array)
            .is_some_and(|stages| stages.iter().any(|s| s == TOKEN_STAGE))
    };
    match !flows.is_empty() && flows.iter().all(asks_token) {
        true => Registration::TokenRequired,
        false => Registration::OpenWithoutToken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_is_required_only_when_every_flow_asks_for_it() {
        let flows = |flows: Value| registration_of(flows.as_array().unwrap());
        let token_then_dummy = json!({"stages": [TOKEN_STAGE, "m.login.dummy"]});
        assert_eq!(
            flows(json!([token_then_dummy])),
            Registration::TokenRequired
        );
        let email_only = json!({"stages": ["m.login.email.identity"]});
        assert_eq!(
            flows(json!([token_then_dummy, email_only])),
            Registration::OpenWithoutToken
        );
        assert_eq!(
            flows(json!([{"stages": ["m.login.dummy"]}])),
            Registration::OpenWithoutToken
        );
        assert_eq!(flows(json!([])), Registration::OpenWithoutToken);
    }
}
