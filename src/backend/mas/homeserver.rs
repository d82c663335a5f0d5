//! The homeserver behind MAS, which keeps the profiles. MAS's admin API can
//! neither show nor change an existing user's display name (MAS hands the
//! one declared at creation to the homeserver). With `homeserver_url`, the
//! display name of each existing user that declares one is read from the
//! homeserver's profile endpoint, without a token (as any client may), so
//! that a different one is found and refused (`refuse_impossible`) rather
//! than reported as matching. Without it, the display name is not compared.

use super::{Mas, MasError};
use crate::backend::client_api::{self, ProfileName};
use crate::backend::ServerError;
use crate::http::Http;
use crate::matrix_id::UserId;
use crate::model::{DesiredUser, Seen, UserState};

impl Mas {
    /// The homeserver, when `desired`'s display name is read from it.
    fn homeserver_for(&self, desired: &DesiredUser) -> Option<&Http> {
        let reads = desired.displayname.is_some() && desired.state == UserState::Present;
        self.homeserver.as_ref().filter(|_| reads)
    }

    /// Reads the first such user's profile before anything is written: a
    /// homeserver that does not answer, is not one, or shows profiles only
    /// with a token fails the run then, rather than each user later or, worse,
    /// a comparison silently skipped.
    pub(super) async fn reach_homeserver(&self, users: &[DesiredUser]) -> Result<(), ServerError> {
        let first = users.iter().find_map(|desired| {
            let user = desired.username.on_server(&self.server_name).ok()?;
            Some((self.homeserver_for(desired)?, user))
        });
        match first {
            Some((homeserver, user)) => profile_name(homeserver, &user).await.map(drop),
            None => Ok(()),
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
        let Some(homeserver) = self.homeserver_for(desired) else {
            return Ok(Seen::Unknown);
        };
        let shown = match profile_name(homeserver, user).await? {
            ProfileName::Shown(name) => name,
            ProfileName::NoProfile => return Ok(Seen::Unknown),
        };
        self.shown_displaynames
            .borrow_mut()
            .insert(user.clone(), shown.clone());
        Ok(Seen::Known(shown))
    }
}

/// The module has no token the homeserver takes (MAS's admin token is not
/// one), so a 401 means profiles are shown only to signed-in users.
async fn profile_name(homeserver: &Http, user: &UserId) -> Result<ProfileName, ServerError> {
    match client_api::displayname(homeserver, user, None).await {
        Err(ServerError::Refused { status: 401, .. }) => {
            Err(ServerError::Mas(MasError::ProfilesNeedToken))
        }
        read => read,
    }
}
