//! The homeserver behind MAS, which keeps the profiles. MAS's admin API can
//! neither show nor change an existing user's display name (MAS hands the
//! one declared at creation to the homeserver). With `homeserver_url`, the
//! display name of each existing user that declares one is read from the
//! homeserver's profile endpoint, without a token (as any client may), so
//! that a different one is found and refused (`refuse_impossible`) rather
//! than reported as matching. Without it, the display name is not compared.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{Mas, MasError};
use crate::backend::client_api::{self, ProfileName};
use crate::backend::ServerError;
use crate::http::Body;
use crate::matrix_id::UserId;
use crate::model::{DesiredUser, Seen, UserState};

impl Mas {
    /// Makes sure the homeserver answers, when a display name will be read
    /// from it: one that does not is an error before anything is written,
    /// not a comparison silently skipped.
    pub(super) async fn reach_homeserver(&self, users: &[DesiredUser]) -> Result<(), ServerError> {
        let Some(homeserver) = &self.homeserver else {
            return Ok(());
        };
        if !users
            .iter()
            .any(|u| u.displayname.is_some() && u.state == UserState::Present)
        {
            return Ok(());
        }
        let path = "/_matrix/client/versions";
        let reply = homeserver.send(Method::GET, path, None, Body::None).await?;
        match reply.body.get("versions").and_then(Value::as_array) {
            Some(_) if reply.status == StatusCode::OK => Ok(()),
            _ => Err(ServerError::refused(
                "asking the homeserver at homeserver_url for its versions (is it the homeserver behind MAS?)",
                &reply,
            )),
        }
    }

    /// The display name the homeserver shows for `user`, read only for a
    /// present user that declares one. Unknown without `homeserver_url`, and
    /// while the homeserver has no profile of the user (MAS provisions users
    /// there in the background, so the next run compares it).
    pub(super) async fn homeserver_displayname(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Seen<Option<String>>, ServerError> {
        let Some(homeserver) = &self.homeserver else {
            return Ok(Seen::Unknown);
        };
        if desired.displayname.is_none() || desired.state != UserState::Present {
            return Ok(Seen::Unknown);
        }
        let shown = match client_api::displayname(homeserver, user, None).await {
            Ok(ProfileName::Shown(name)) => name,
            Ok(ProfileName::NoProfile) => return Ok(Seen::Unknown),
            Err(ServerError::Refused { status: 401, .. }) => {
                return Err(ServerError::Mas(MasError::ProfilesNeedToken {
                    user: user.to_string(),
                }))
            }
            Err(error) => return Err(error),
        };
        self.shown_displaynames
            .borrow_mut()
            .insert(user.clone(), shown.clone());
        Ok(Seen::Known(shown))
    }
}
