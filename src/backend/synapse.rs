//! Synapse, through its admin API (`/_synapse/admin`).
//!
//! Authentication: an `admin_token` when given; otherwise the module keeps a
//! service account of its own, registered once with the shared secret, and
//! caches that account's token between runs (see [`TokenCache`]). This avoids
//! `/login`, whose default rate limit (a handful per hour) would break
//! repeated runs, and leaves no device on any managed user.

use std::collections::HashMap;
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use super::{Homeserver, ServerError};
use crate::args::{DesiredUser, ModuleArgs, UserType};
use crate::http::{path_segment, Body, Http, Reply};
use crate::matrix_id::{UserId, Username};
use crate::plan::{Account, Change};
use crate::secret::Secret;

/// Below this many declared users, one read per user is cheaper than listing.
const LIST_MIN_USERS: usize = 20;
/// Listing pays only while the server holds at most this many accounts per declared user.
const LIST_MAX_RATIO: u64 = 10;
const LIST_PAGE_SIZE: u64 = 1000;
/// How long the short-lived token used for a password check may live.
const PASSWORD_CHECK_TOKEN_MS: u64 = 5 * 60 * 1000;
/// A service-account session unused this long belongs to a lost token cache.
const SERVICE_SESSION_IDLE_MS: u64 = 60 * 60 * 1000;

pub struct Synapse {
    http: Http,
    token: Secret,
    server_name: String,
    /// When given, users are created by shared-secret registration, which
    /// refuses an existing user instead of overwriting it.
    shared_secret: Option<Secret>,
}

impl Synapse {
    /// Authenticates and learns the server name; reads only, except for
    /// registering the service account on the very first run.
    pub async fn connect(args: &ModuleArgs, http: Http) -> Result<Synapse, ServerError> {
        let credentials = &args.credentials;
        let (token, user_id) = match (&credentials.admin_token, &credentials.shared_secret) {
            (Some(token), _) => {
                let user_id =
                    whoami(&http, token)
                        .await?
                        .ok_or_else(|| ServerError::TokenRefused {
                            detail: "unknown or expired token".into(),
                        })?;
                (token.clone(), user_id)
            }
            (None, Some(secret)) => {
                let cache = TokenCache::new(
                    &credentials.token_cache_dir,
                    &args.server.url,
                    &credentials.service_account,
                );
                service_account_token(&http, secret, &credentials.service_account, &cache).await?
            }
            (None, None) => unreachable!("args require a credential"),
        };
        let server_name = user_id
            .split_once(':')
            .map(|(_, server)| server.to_string())
            .ok_or_else(|| ServerError::Unexpected {
                what: "asking who the admin token belongs to".into(),
                detail: format!("{user_id:?} is not a user ID"),
            })?;
        if let Some(given) = &args.server.server_name {
            if *given != server_name {
                return Err(ServerError::WrongServerName {
                    given: given.clone(),
                    actual: server_name,
                });
            }
        }
        let synapse = Synapse {
            http,
            token,
            server_name,
            shared_secret: credentials.shared_secret.clone(),
        };
        synapse.require_admin(&user_id).await?;
        Ok(synapse)
    }

    async fn require_admin(&self, user_id: &str) -> Result<(), ServerError> {
        let reply = self.admin_get(&user_path(user_id)).await?;
        let is_admin =
            reply.status == StatusCode::OK && reply.body.get("admin").is_some_and(truthy);
        match reply.status {
            StatusCode::OK | StatusCode::FORBIDDEN if !is_admin => Err(ServerError::NotAdmin {
                account: user_id.to_string(),
            }),
            StatusCode::OK => Ok(()),
            _ => Err(ServerError::refused(format!("reading {user_id}"), &reply)),
        }
    }

    async fn admin_get(&self, path: &str) -> Result<Reply, ServerError> {
        Ok(self
            .http
            .send(Method::GET, path, Some(&self.token), Body::None)
            .await?)
    }

    async fn admin_send(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Reply, ServerError> {
        Ok(self
            .http
            .send(method, path, Some(&self.token), Body::Json(body))
            .await?)
    }

    async fn create(&self, user: &UserId, desired: &DesiredUser) -> Result<(), ServerError> {
        let password = desired
            .password
            .as_ref()
            .expect("the plan creates only users with a password");
        let admin = desired.admin.unwrap_or(false);
        let user_type = desired.user_type.unwrap_or(UserType::Regular);
        if let Some(secret) = &self.shared_secret {
            let registration = Registration {
                localpart: user.localpart(),
                password,
                admin,
                user_type,
                displayname: desired.displayname.as_deref(),
                inhibit_login: true,
            };
            return register(&self.http, secret, &registration)
                .await
                .map(|_| ());
        }
        let mut body = json!({"password": password.expose(), "admin": admin, "user_type": user_type_value(user_type)});
        if let Some(displayname) = &desired.displayname {
            body["displayname"] = json!(displayname);
        }
        let reply = self
            .admin_send(Method::PUT, &user_path(&user.to_string()), &body)
            .await?;
        match reply.status {
            StatusCode::CREATED => Ok(()),
            StatusCode::OK => Err(ServerError::CreatedMeanwhile {
                user: user.to_string(),
            }),
            _ => Err(ServerError::refused(format!("creating {user}"), &reply)),
        }
    }
}

impl Homeserver for Synapse {
    fn server_name(&self) -> &str {
        &self.server_name
    }

    async fn accounts(
        &self,
        users: &[UserId],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        if users.len() < LIST_MIN_USERS {
            return Ok(None);
        }
        let wanted: HashMap<String, &UserId> = users.iter().map(|u| (u.to_string(), u)).collect();
        let mut found = HashMap::new();
        let mut from = 0;
        loop {
            let path = format!(
                "/_synapse/admin/v2/users?from={from}&limit={LIST_PAGE_SIZE}&guests=false&deactivated=true&locked=true"
            );
            let reply = self.admin_get(&path).await?;
            if reply.status != StatusCode::OK {
                return Err(ServerError::refused("listing users", &reply));
            }
            let total = reply.body.get("total").and_then(Value::as_u64).unwrap_or(0);
            if from == 0 && total > LIST_MAX_RATIO * users.len() as u64 {
                return Ok(None);
            }
            let page = reply
                .body
                .get("users")
                .and_then(Value::as_array)
                .ok_or_else(|| ServerError::Unexpected {
                    what: "listing users".into(),
                    detail: "no users array".into(),
                })?;
            for entry in page {
                let name = entry
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(&user) = wanted.get(name) {
                    found.insert(user.clone(), parse_account(entry, "listing users")?);
                }
            }
            match reply.body.get("next_token") {
                Some(next) if !page.is_empty() => {
                    from = next
                        .as_u64()
                        .or_else(|| next.as_str().and_then(|s| s.parse().ok()))
                        .ok_or_else(|| ServerError::Unexpected {
                            what: "listing users".into(),
                            detail: format!("next_token {next}"),
                        })?;
                }
                _ => return Ok(Some(found)),
            }
        }
    }

    async fn account(&self, user: &UserId) -> Result<Option<Account>, ServerError> {
        let what = format!("reading {user}");
        let reply = self.admin_get(&user_path(&user.to_string())).await?;
        match reply.status {
            StatusCode::OK => parse_account(&reply.body, &what).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(ServerError::refused(what, &reply)),
        }
    }

    async fn password_matches(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<bool, ServerError> {
        let what = format!("checking the password of {user}");
        // A token issued by the admin API has no device; the password is then
        // checked by user-interactive auth on a request that changes nothing.
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            + PASSWORD_CHECK_TOKEN_MS;
        let reply = self
            .admin_send(
                Method::POST,
                &format!(
                    "{}/login",
                    user_path(&user.to_string()).replace("/v2/", "/v1/")
                ),
                &json!({"valid_until_ms": expires}),
            )
            .await?;
        let user_token = match reply.body.get("access_token").and_then(Value::as_str) {
            Some(token) if reply.status == StatusCode::OK => Secret::new(token),
            _ => return Err(ServerError::refused(what, &reply)),
        };
        let check = json!({
            "devices": [],
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user.to_string()},
                "password": password.expose(),
            }
        });
        let verdict = self
            .http
            .send(
                Method::POST,
                "/_matrix/client/v3/delete_devices",
                Some(&user_token),
                Body::Json(&check),
            )
            .await;
        let logout = self
            .http
            .send(
                Method::POST,
                "/_matrix/client/v3/logout",
                Some(&user_token),
                Body::Json(&json!({})),
            )
            .await;
        let verdict = verdict?;
        logout?;
        match (verdict.status, verdict.errcode()) {
            (StatusCode::OK, _) => Ok(true),
            (StatusCode::UNAUTHORIZED, "M_FORBIDDEN") => Ok(false),
            _ => Err(ServerError::refused(what, &verdict)),
        }
    }

    async fn apply(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError> {
        if changes.contains(&Change::Create) {
            return self.create(user, desired).await;
        }
        let path = user_path(&user.to_string());
        if let Some(&Change::Deactivate { erase }) = changes
            .iter()
            .find(|c| matches!(c, Change::Deactivate { .. }))
        {
            let reply = self
                .admin_send(
                    Method::POST,
                    &format!(
                        "/_synapse/admin/v1/deactivate/{}",
                        path_segment(&user.to_string())
                    ),
                    &json!({"erase": erase}),
                )
                .await?;
            return match reply.status {
                StatusCode::OK => Ok(()),
                _ => Err(ServerError::refused(format!("deactivating {user}"), &reply)),
            };
        }
        // Everything else is one PUT, so a user is never left half-updated.
        let mut body = Map::new();
        for change in changes {
            match *change {
                Change::Reactivate => {
                    body.insert("deactivated".into(), json!(false));
                }
                Change::SetAdmin(admin) => {
                    body.insert("admin".into(), json!(admin));
                }
                Change::SetUserType(user_type) => {
                    body.insert("user_type".into(), user_type_value(user_type));
                }
                Change::SetDisplayname => {
                    body.insert("displayname".into(), json!(desired.displayname));
                }
                // Args refuse e-mail for Synapse, so AddEmail is never planned here.
                Change::SetPassword
                | Change::Create
                | Change::Deactivate { .. }
                | Change::AddEmail => {}
            }
        }
        if changes
            .iter()
            .any(|c| matches!(c, Change::SetPassword | Change::Reactivate))
        {
            let password = desired
                .password
                .as_ref()
                .expect("the plan sets only declared passwords");
            body.insert("password".into(), json!(password.expose()));
        }
        let reply = self
            .admin_send(Method::PUT, &path, &Value::Object(body))
            .await?;
        match reply.status {
            StatusCode::OK => Ok(()),
            _ => Err(ServerError::refused(format!("updating {user}"), &reply)),
        }
    }
}

fn user_path(user_id: &str) -> String {
    format!("/_synapse/admin/v2/users/{}", path_segment(user_id))
}

fn user_type_value(user_type: UserType) -> Value {
    match user_type {
        UserType::Regular => Value::Null,
        other => json!(other.as_str()),
    }
}

/// Synapse reports flags as booleans, or as 0/1 on older versions.
fn truthy(value: &Value) -> bool {
    value.as_bool().unwrap_or_else(|| value.as_u64() == Some(1))
}

fn parse_account(body: &Value, what: &str) -> Result<Account, ServerError> {
    let user_type = match body.get("user_type").and_then(Value::as_str) {
        None => UserType::Regular,
        Some("bot") => UserType::Bot,
        Some("support") => UserType::Support,
        Some(other) => {
            return Err(ServerError::Unexpected {
                what: what.into(),
                detail: format!(
                    "user type {other:?} is not one this module manages (regular, bot, support)"
                ),
            })
        }
    };
    Ok(Account {
        admin: body.get("admin").is_some_and(truthy),
        deactivated: body.get("deactivated").is_some_and(truthy),
        user_type,
        displayname: body
            .get("displayname")
            .and_then(Value::as_str)
            .map(str::to_string),
        emails: Vec::new(),
    })
}

async fn whoami(http: &Http, token: &Secret) -> Result<Option<String>, ServerError> {
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

/// One shared-secret registration (`/_synapse/admin/v1/register`).
struct Registration<'a> {
    localpart: &'a str,
    password: &'a Secret,
    admin: bool,
    user_type: UserType,
    displayname: Option<&'a str>,
    /// Without it Synapse logs the new user in, leaving a device behind.
    inhibit_login: bool,
}

/// Registers a user; returns its ID and, unless login was inhibited, its token.
async fn register(
    http: &Http,
    secret: &Secret,
    registration: &Registration<'_>,
) -> Result<(String, Option<Secret>), ServerError> {
    const PATH: &str = "/_synapse/admin/v1/register";
    let what = format!("registering {}", registration.localpart);
    // A fresh nonce per attempt: Synapse forgets each one after a single use.
    let reply = http.send(Method::GET, PATH, None, Body::None).await?;
    let nonce = match reply.body.get("nonce").and_then(Value::as_str) {
        Some(nonce) if reply.status == StatusCode::OK => nonce.to_string(),
        _ => {
            return Err(ServerError::refused(
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
        "mac": registration_mac(secret, &nonce, registration),
        "inhibit_login": registration.inhibit_login,
    });
    if registration.user_type != UserType::Regular {
        body["user_type"] = json!(registration.user_type.as_str());
    }
    if let Some(displayname) = registration.displayname {
        body["displayname"] = json!(displayname);
    }
    let reply = http
        .send(Method::POST, PATH, None, Body::Json(&body))
        .await?;
    match (reply.status, reply.errcode()) {
        (StatusCode::OK, _) => {
            let user_id = reply
                .body
                .get("user_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let token = reply
                .body
                .get("access_token")
                .and_then(Value::as_str)
                .map(Secret::new);
            Ok((user_id, token))
        }
        (_, "M_USER_IN_USE") => Err(ServerError::CreatedMeanwhile {
            user: registration.localpart.to_string(),
        }),
        (StatusCode::FORBIDDEN, _) if reply.explanation().contains("HMAC") => {
            Err(ServerError::WrongSharedSecret)
        }
        (StatusCode::BAD_REQUEST, _) if reply.explanation().contains("not enabled") => {
            Err(ServerError::SharedSecretDisabled)
        }
        _ => Err(ServerError::refused(what, &reply)),
    }
}

/// Synapse's MAC: HMAC-SHA1 over the NUL-separated nonce, username,
/// password, `admin`/`notadmin` and, when set, the user type.
fn registration_mac(secret: &Secret, nonce: &str, registration: &Registration) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(registration.localpart.as_bytes());
    mac.update(b"\0");
    mac.update(registration.password.expose().as_bytes());
    mac.update(b"\0");
    mac.update(if registration.admin {
        b"admin"
    } else {
        b"notadmin"
    });
    if registration.user_type != UserType::Regular {
        mac.update(b"\0");
        mac.update(registration.user_type.as_str().as_bytes());
    }
    hex(&mac.finalize().into_bytes())
}

/// The service account's password, derived from the shared secret so that
/// any host holding the secret can recover the account's token.
fn service_account_password(secret: &Secret, localpart: &str) -> Secret {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"matrix_user service account\0");
    mac.update(localpart.as_bytes());
    Secret::new(hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The service account's token, from the cache when it still works, else by
/// registering the account (first run) or logging it in (cache lost).
async fn service_account_token(
    http: &Http,
    secret: &Secret,
    account: &Username,
    cache: &TokenCache,
) -> Result<(Secret, String), ServerError> {
    if let Some(token) = cache.load() {
        if let Some(user_id) = whoami(http, &token).await? {
            return Ok((token, user_id));
        }
    }
    let password = service_account_password(secret, account.localpart());
    let registration = Registration {
        localpart: account.localpart(),
        password: &password,
        admin: true,
        user_type: UserType::Bot,
        displayname: Some("matrix_user (Ansible)"),
        inhibit_login: false,
    };
    let (token, user_id) = match register(http, secret, &registration).await {
        Ok((user_id, Some(token))) => (token, user_id),
        Ok((_, None)) => {
            return Err(ServerError::Unexpected {
                what: "registering the service account".into(),
                detail: "no access token in the answer".into(),
            })
        }
        Err(ServerError::CreatedMeanwhile { .. }) => {
            recover_service_account(http, account, &password).await?
        }
        Err(other) => return Err(other),
    };
    cache.store(&token)?;
    Ok((token, user_id))
}

/// Logs the existing service account in and removes its idle sessions, so
/// sessions do not pile up however often the cache is lost. Sessions in use
/// stay: another run may be working with one right now.
async fn recover_service_account(
    http: &Http,
    account: &Username,
    password: &Secret,
) -> Result<(Secret, String), ServerError> {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.localpart()},
        "password": password.expose(),
        "initial_device_display_name": "matrix_user (Ansible)",
    });
    let reply = http
        .send(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Body::Json(&body),
        )
        .await?;
    let field = |name: &str| {
        reply
            .body
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (Some(token), Some(user_id), Some(device_id)) =
        (field("access_token"), field("user_id"), field("device_id"))
    else {
        return Err(match reply.status {
            StatusCode::FORBIDDEN => ServerError::ServiceAccountPassword {
                account: account.localpart().to_string(),
            },
            _ => ServerError::refused("logging in the service account", &reply),
        });
    };
    let token = Secret::new(token);
    let devices_path = format!("{}/devices", user_path(&user_id));
    let reply = http
        .send(Method::GET, &devices_path, Some(&token), Body::None)
        .await?;
    let stale: Vec<&str> = reply
        .body
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| is_idle(d))
        .filter_map(|d| d.get("device_id").and_then(Value::as_str))
        .filter(|id| *id != device_id)
        .collect();
    if !stale.is_empty() {
        let reply = http
            .send(
                Method::POST,
                &format!("{}/delete_devices", user_path(&user_id)),
                Some(&token),
                Body::Json(&json!({ "devices": stale })),
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(
                "removing the service account's old sessions",
                &reply,
            ));
        }
    }
    Ok((token, user_id))
}

/// Whether a device has not been used for [`SERVICE_SESSION_IDLE_MS`].
fn is_idle(device: &Value) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    device
        .get("last_seen_ts")
        .and_then(Value::as_u64)
        .is_some_and(|seen| seen + SERVICE_SESSION_IDLE_MS < now)
}

/// Where the service account's token is kept between runs: one file per
/// homeserver URL and account, readable only by the user running the module.
struct TokenCache {
    path: PathBuf,
}

impl TokenCache {
    fn new(dir: &std::path::Path, url: &str, account: &Username) -> TokenCache {
        let key = hex(&Sha1::digest(
            format!("{url}\0{}", account.localpart()).as_bytes(),
        ));
        TokenCache {
            path: dir.join(format!("synapse-{}.token", &key[..16])),
        }
    }

    fn load(&self) -> Option<Secret> {
        let token = std::fs::read_to_string(&self.path).ok()?;
        Some(Secret::new(token.trim())).filter(|t| !t.expose().is_empty())
    }

    fn store(&self, token: &Secret) -> Result<(), ServerError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let fail = |e: std::io::Error| ServerError::TokenCache {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        };
        let dir = self
            .path
            .parent()
            .expect("the cache file is inside a folder");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(fail)?;
        file.write_all(token.expose().as_bytes()).map_err(fail)?;
        std::fs::rename(&temporary, &self.path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration<'a>(
        localpart: &'a str,
        password: &'a Secret,
        admin: bool,
        user_type: UserType,
    ) -> Registration<'a> {
        Registration {
            localpart,
            password,
            admin,
            user_type,
            displayname: None,
            inhibit_login: true,
        }
    }

    /// Expected values computed with Python's hmac module, as Synapse does.
    #[test]
    fn the_mac_matches_synapses_layout() {
        let secret = Secret::new("shared-secret");
        let password = Secret::new("pä$s w\"rd");
        assert_eq!(
            registration_mac(
                &secret,
                "abc123",
                &registration("alice", &password, true, UserType::Bot)
            ),
            "ac91c267bdbf6c899c448b8f5795ff0e8e8b34e6"
        );
        let password = Secret::new("pw");
        assert_eq!(
            registration_mac(
                &secret,
                "abc123",
                &registration("bob", &password, false, UserType::Regular)
            ),
            "30c7c3d71e4c221226d44c332d9e4536f6896a15"
        );
    }

    #[test]
    fn accounts_parse_from_synapse_json() {
        let account = parse_account(
            &json!({"name": "@a:x", "admin": 1, "deactivated": false, "user_type": "bot", "displayname": "A"}),
            "test",
        )
        .unwrap();
        assert_eq!(
            account,
            Account {
                admin: true,
                deactivated: false,
                user_type: UserType::Bot,
                displayname: Some("A".into()),
                emails: vec![],
            }
        );
        assert!(parse_account(&json!({"user_type": "custom"}), "test").is_err());
    }

    #[test]
    fn the_service_password_is_stable_and_secret_dependent() {
        let a = service_account_password(&Secret::new("one"), "svc");
        assert_eq!(a, service_account_password(&Secret::new("one"), "svc"));
        assert_ne!(a, service_account_password(&Secret::new("two"), "svc"));
        assert_eq!(a.expose().len(), 40);
    }
}
