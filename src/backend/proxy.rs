//! Telling a homeserver's own answer from a reverse proxy's, which answers
//! the admin API's paths when it does not forward them.

use super::ServerError;
use crate::http::Reply;

/// `reply` unchanged, or [`ServerError::AdminApiNotForwarded`] when it is a
/// 404 that no homeserver sent: Synapse and Dendrite answer an unknown path
/// with a Matrix error (`errcode`, e.g. `M_UNRECOGNIZED`), a proxy with a page
/// of its own (Traefik: "404 page not found").
pub(super) fn from_homeserver(path: &str, reply: Reply) -> Result<Reply, ServerError> {
    if reply.status == reqwest::StatusCode::NOT_FOUND && reply.errcode().is_empty() {
        return Err(ServerError::AdminApiNotForwarded {
            path: path.split('?').next().unwrap_or(path).to_string(),
        });
    }
    Ok(reply)
}
