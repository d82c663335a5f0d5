//! The Matrix client-server API calls every homeserver backend needs:
//! password login, logout, who a token belongs to, and a user's display
//! name. MAS serves the first three as its compatibility layer.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::ServerError;
use crate::http::{path_segment, Body, Http, HttpError, Reply};
use crate::matrix_id::UserId;
use crate::secret::Secret;

/// The device name of every session the module opens.
pub const DEVICE_NAME: &str = "matrix_user (Ansible)";

/// A POST of `body` to an endpoint that asks for user-interactive
/// authentication, answered with `user`'s password in its `auth` field.
pub async fn post_with_password(
    http: &Http,
    path: &str,
    token: &Secret,
    (user, password): (&str, &Secret),
    mut body: Value,
) -> Result<Reply, HttpError> {
    body["auth"] = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password.expose(),
    });
    http.send(Method::POST, path, Some(token), Body::Json(&body))
        .await
}

/// A session opened by [`password_login`].
pub struct Session {
    pub token: Secret,
    pub user_id: String,
    pub device_id: String,
}

/// Sends a password login of `user` (a localpart or a user ID), for a
/// session named `device_name`; the caller reads the answer, which
/// differs by server.
pub async fn send_login(
    http: &Http,
    user: &str,
    password: &Secret,
    device_name: &str,
) -> Result<Reply, HttpError> {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password.expose(),
        "initial_device_display_name": device_name,
    });
    let path = "/_matrix/client/v3/login";
    http.send(Method::POST, path, None, Body::Json(&body)).await
}

/// A password login of `user` (a localpart or a user ID); `None` when the
/// homeserver refuses the password.
pub async fn password_login(
    http: &Http,
    user: &str,
    password: &Secret,
) -> Result<Option<Session>, ServerError> {
    let reply = send_login(http, user, password, DEVICE_NAME).await?;
    let field = |name: &str| {
        reply
            .body
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match (
        reply.status,
        field("access_token"),
        field("user_id"),
        field("device_id"),
    ) {
        (StatusCode::OK, Some(token), Some(user_id), Some(device_id)) => Ok(Some(Session {
            token: Secret::new(token),
            user_id,
            device_id,
        })),
        (StatusCode::FORBIDDEN, ..) => Ok(None),
        _ => Err(ServerError::refused(
            format!("logging in as {user}"),
            &reply,
        )),
    }
}

/// Ends the session of `token`, so that no device is left behind; `whose`
/// names it in the error.
pub async fn logout(http: &Http, token: &Secret, whose: &str) -> Result<(), ServerError> {
    let reply = http
        .send(
            Method::POST,
            "/_matrix/client/v3/logout",
            Some(token),
            Body::Json(&json!({})),
        )
        .await?;
    match reply.status {
        StatusCode::OK => Ok(()),
        _ => Err(ServerError::refused(
            format!("logging out the session matrix_user opened for {whose}"),
            &reply,
        )),
    }
}

/// Who `token` belongs to; `None` when the homeserver does not know it.
pub async fn whoami(http: &Http, token: &Secret) -> Result<Option<String>, ServerError> {
    let reply = http
        .send(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some(token),
            Body::None,
        )
        .await?;
    match (
        reply.status,
        reply.body.get("user_id").and_then(Value::as_str),
    ) {
        (StatusCode::OK, Some(user_id)) => Ok(Some(user_id.to_string())),
        (StatusCode::UNAUTHORIZED, _) => Ok(None),
        _ => Err(ServerError::refused(
            "asking who the admin token belongs to",
            &reply,
        )),
    }
}

/// A user's display name as the homeserver's profile endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileName {
    /// The profile's display name; `None` when it has none (or an empty one).
    Shown(Option<String>),
    /// The homeserver has no profile of the user (a 404 with a Matrix
    /// error): Synapse's answer for a user it does not know. A 404 without
    /// one came from something that is not a homeserver, and is an error.
    NoProfile,
}

/// `GET /_matrix/client/v3/profile/{user}/displayname`, with `token` where
/// the homeserver wants one.
pub async fn displayname(
    http: &Http,
    user: &UserId,
    token: Option<&Secret>,
) -> Result<ProfileName, ServerError> {
    let path = format!(
        "/_matrix/client/v3/profile/{}/displayname",
        path_segment(&user.to_string())
    );
    let reply = http.send(Method::GET, &path, token, Body::None).await?;
    match reply.status {
        StatusCode::OK => Ok(ProfileName::Shown(
            reply
                .body
                .get("displayname")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .map(str::to_string),
        )),
        StatusCode::NOT_FOUND if !reply.errcode().is_empty() => Ok(ProfileName::NoProfile),
        _ => Err(ServerError::refused(
            format!("reading the displayname of {user}"),
            &reply,
        )),
    }
}

/// Now, in milliseconds since the Unix epoch, as Matrix timestamps are.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
