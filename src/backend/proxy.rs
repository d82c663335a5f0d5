//! Telling a homeserver's own answer from a reverse proxy's, which answers
//! the admin API's paths when it does not forward them.

use reqwest::Method;

use super::ServerError;
use crate::http::{Body, Http, Reply};
use crate::secret::Secret;

/// Sends a request to a homeserver's admin API as `admin`: its answer, or
/// [`ServerError::AdminApiNotForwarded`] when a proxy answered instead.
pub(super) async fn admin_request(
    http: &Http,
    admin: &Secret,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
    body: Body<'_>,
) -> Result<Reply, ServerError> {
    let reply = http
        .send_query(method, path, query, Some(admin), body)
        .await?;
    from_homeserver(path, reply)
}

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
