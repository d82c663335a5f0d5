//! Registration with the homeserver's registration shared secret
//! (`/_synapse/admin/v1/register`, which Synapse and Dendrite both serve):
//! the nonce, the HMAC over the registration, and the error shapes of both.

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha1::Sha1;

use super::{ServerError, UserErrorKind};
use crate::backend::proxy::from_homeserver;
use crate::http::{Body, Http, Reply};
use crate::secret::Secret;

/// One shared-secret registration (`/_synapse/admin/v1/register`).
pub struct Registration<'a> {
    pub localpart: &'a str,
    pub password: &'a Secret,
    pub admin: bool,
    /// Synapse's user type (`bot`, `support`), part of its MAC; Dendrite
    /// has none, and a MAC with one fails there.
    pub user_type: Option<&'a str>,
    pub displayname: Option<&'a str>,
    /// Synapse only: without it Synapse logs the new user in, leaving a
    /// device behind. Dendrite ignores it and always does.
    pub inhibit_login: Option<bool>,
}

/// Registers a user; returns its ID and, when the homeserver logged it in,
/// its session's token. Reads the error shapes of Synapse and Dendrite.
pub async fn register(
    http: &Http,
    secret: &Secret,
    registration: &Registration<'_>,
) -> Result<(String, Option<Secret>), ServerError> {
    const PATH: &str = "/_synapse/admin/v1/register";
    let what = format!("registering {}", registration.localpart);
    // A fresh nonce per attempt: Synapse forgets each one after a single use.
    let reply = from_homeserver(PATH, http.send(Method::GET, PATH, None, Body::None).await?)?;
    let nonce = match reply.body.get("nonce").and_then(Value::as_str) {
        Some(nonce) if reply.status == StatusCode::OK => nonce.to_string(),
        _ => {
            return Err(registration_refused(
                format!("{what} (getting a nonce)"),
                &reply,
            ))
        }
    };
    let mut body = json!({
        "nonce": nonce,
        "username": registration.localpart,
        "password": registration.password.expose(),
        "admin": registration.admin,
        "mac": registration_mac(
            secret,
            &nonce,
            registration.localpart,
            registration.password,
            registration.admin,
            registration.user_type,
        ),
    });
    if let Some(user_type) = registration.user_type {
        body["user_type"] = json!(user_type);
    }
    if let Some(displayname) = registration.displayname {
        body["displayname"] = json!(displayname);
    }
    if let Some(inhibit_login) = registration.inhibit_login {
        body["inhibit_login"] = json!(inhibit_login);
    }
    let reply = match http.send(Method::POST, PATH, None, Body::Json(&body)).await {
        Ok(reply) => from_homeserver(PATH, reply)?,
        Err(lost) if lost.is_answer_lost() => {
            return Err(ServerError::user(
                registration.localpart,
                UserErrorKind::RegistrationUnanswered {
                    cause: Box::new(lost.into()),
                },
            ))
        }
        Err(other) => return Err(other.into()),
    };
    let field = |name: &str| reply.body.get(name).and_then(Value::as_str);
    match (reply.status, reply.errcode(), field("user_id")) {
        (StatusCode::OK, _, Some(user_id)) => {
            Ok((user_id.to_string(), field("access_token").map(Secret::new)))
        }
        (_, "M_USER_IN_USE", _) => Err(ServerError::user(
            registration.localpart,
            UserErrorKind::CreatedMeanwhile,
        )),
        _ => Err(registration_refused(what, &reply)),
    }
}

fn registration_refused(what: String, reply: &Reply) -> ServerError {
    let explanation = reply.explanation();
    match reply.status {
        // Synapse says "HMAC incorrect", Dendrite "bad mac".
        StatusCode::FORBIDDEN if explanation.to_lowercase().contains("mac") => {
            ServerError::WrongSharedSecret
        }
        // Synapse answers 400 "... not enabled" (synapse/rest/admin/users.py,
        // UserRegisterServlet); Dendrite has no such endpoint then, and
        // answers its own Matrix 404 (a proxy's 404 is caught before).
        StatusCode::BAD_REQUEST if explanation.contains("not enabled") => {
            ServerError::SharedSecretDisabled
        }
        StatusCode::NOT_FOUND => ServerError::SharedSecretDisabled,
        // Dendrite keeps its nonces in one process's memory, for five minutes.
        StatusCode::INTERNAL_SERVER_ERROR if explanation.contains("nonce") => {
            ServerError::Refused {
                what,
                server: reply.server,
                status: reply.status.as_u16(),
                errcode: String::new(),
                explanation: format!(
                    "{explanation} (the homeserver forgot the nonce it gave a moment ago: did it restart, \
                     or does homeserver_url balance over several of its processes?)"
                ),
            }
        }
        _ => ServerError::refused(what, reply),
    }
}

/// The MAC of `/_synapse/admin/v1/register`: HMAC-SHA1 over the
/// NUL-separated nonce, username, password, `admin`/`notadmin` and, when
/// given (Synapse only), the user type.
pub fn registration_mac(
    secret: &Secret,
    nonce: &str,
    localpart: &str,
    password: &Secret,
    admin: bool,
    user_type: Option<&str>,
) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(localpart.as_bytes());
    mac.update(b"\0");
    mac.update(password.expose().as_bytes());
    mac.update(b"\0");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
    hex(&mac.finalize().into_bytes())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed with Python's hmac module, as Synapse does.
    #[test]
    fn the_mac_matches_synapses_layout() {
        let secret = Secret::new("shared-secret");
        let password = Secret::new("pä$s w\"rd");
        assert_eq!(
            registration_mac(&secret, "abc123", "alice", &password, true, Some("bot")),
            "ac91c267bdbf6c899c448b8f5795ff0e8e8b34e6"
        );
        let password = Secret::new("pw");
        assert_eq!(
            registration_mac(&secret, "abc123", "bob", &password, false, None),
            "30c7c3d71e4c221226d44c332d9e4536f6896a15"
        );
    }

    /// The homeserver's answer `status` with `body`.
    fn reply(status: u16, body: Value) -> Reply {
        Reply {
            server: crate::http::HOMESERVER,
            status: StatusCode::from_u16(status).unwrap(),
            body,
        }
    }

    #[test]
    fn both_servers_registration_errors_get_the_same_messages() {
        let refused = |r: Reply| registration_refused("registering bob".into(), &r);
        for wrong_mac in [
            reply(
                403,
                json!({"errcode": "M_FORBIDDEN", "error": "HMAC incorrect"}),
            ),
            reply(403, json!({"errcode": "M_FORBIDDEN", "error": "bad mac"})),
        ] {
            assert!(matches!(refused(wrong_mac), ServerError::WrongSharedSecret));
        }
        for disabled in [
            reply(
                400,
                json!({"error": "Shared secret registration is not enabled"}),
            ),
            reply(404, json!({"errcode": "M_UNRECOGNIZED"})),
        ] {
            assert!(matches!(
                refused(disabled),
                ServerError::SharedSecretDisabled
            ));
        }
        let stale = refused(reply(
            500,
            json!({"message": "incorrect or expired nonce: abc"}),
        ));
        assert!(
            stale
                .to_string()
                .starts_with("registering bob: the homeserver answered 500: incorrect or expired nonce: abc (the homeserver forgot"),
            "{stale}"
        );
    }

    #[test]
    fn a_proxys_404_is_told_apart_from_the_homeservers_own_answers() {
        const PATH: &str = "/_synapse/admin/v1/register";
        for proxy in [
            reply(404, Value::String("404 page not found\n".into())),
            reply(
                404,
                Value::String("<html><body>Not Found</body></html>".into()),
            ),
            reply(404, Value::Null),
        ] {
            let error = from_homeserver(PATH, proxy).expect_err("a proxy's 404");
            assert!(
                matches!(&error, ServerError::AdminApiNotForwarded { path } if path == PATH),
                "{error}"
            );
            let message = error.to_string();
            assert!(message.contains("point homeserver_url at the homeserver itself"));
            assert!(!message.contains("registration_shared_secret"));
        }
        // Synapse with the secret unset, and a homeserver's own 404.
        for homeserver in [
            reply(
                400,
                json!({"errcode": "M_UNKNOWN", "error": "Shared secret registration is not enabled"}),
            ),
            reply(
                404,
                json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
            ),
        ] {
            let reply = from_homeserver(PATH, homeserver).expect("the homeserver's own answer");
            assert!(matches!(
                registration_refused("registering bob".into(), &reply),
                ServerError::SharedSecretDisabled
            ));
        }
    }
}
