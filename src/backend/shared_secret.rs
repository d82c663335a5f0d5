//! What Synapse and Dendrite share around the registration shared secret:
//! the registration MAC, and the module's service account, which it
//! registers once with that secret, logs in when its cached token is lost,
//! and acts as when no `admin_token` is given.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::client_api::{logout, password_auth, password_login, whoami, DEVICE_NAME};
use super::{confirm_server_name, from_homeserver, ServerError};
use crate::args::{ArgsError, Credentials, ModuleArgs};
use crate::http::{server_word, Body, Http, HttpError, Reply};
use crate::matrix_id::Username;
use crate::secret::Secret;

/// How the module gets into Synapse or Dendrite.
pub enum Access {
    /// A server admin's access token (`admin_token`), used as it is.
    AdminToken(Secret),
    /// The registration shared secret: the module acts as its service
    /// account, whose token it keeps in `token_cache_dir` between runs.
    ServiceAccount {
        secret: Secret,
        token_cache_dir: PathBuf,
    },
}

/// The credentials Synapse and Dendrite accept: the shared secret (the
/// module then acts as its service account, whose token needs a private
/// folder) or an admin's token.
pub fn require_credentials(credentials: &Credentials) -> Result<Access, ArgsError> {
    match (&credentials.admin_token, &credentials.shared_secret) {
        (Some(token), _) => Ok(Access::AdminToken(token.clone())),
        (None, Some(secret)) => match &credentials.token_cache_dir {
            Some(folder) => Ok(Access::ServiceAccount {
                secret: secret.clone(),
                token_cache_dir: folder.clone(),
            }),
            None => Err(ArgsError::Missing(
            "token_cache_dir is needed: neither HOME nor XDG_CACHE_HOME is set, so there is no private \
             folder of this user to keep the service account's token in between runs; set token_cache_dir \
             to a folder only the user running the module can write, or give admin_token"
                .into(),
            )),
        },
        (None, None) => Err(ArgsError::Missing(
            "no credentials: give registration_shared_secret (or registration_shared_secret_file) \
             or admin_token (or admin_token_file)"
                .into(),
        )),
    }
}

/// Who the module acts as: the owner of `admin_token`, or the service account.
pub struct Identity {
    pub token: Secret,
    pub server_name: String,
}

/// How a homeserver tells whether a token is a server admin's.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait AdminCheck {
    /// Whether `token`, which belongs to `user_id`, may manage users.
    async fn is_admin(
        &self,
        http: &Http,
        token: &Secret,
        user_id: &str,
    ) -> Result<bool, ServerError>;
}

/// Authenticates with `admin_token`, else as the service account (see
/// [`service_account_token`]), makes sure the identity is a server admin,
/// and checks the configured `server_name`. `service_user_type` is the user
/// type the service account is registered with (Synapse's `bot`; Dendrite
/// has none).
pub async fn identify(
    args: &ModuleArgs,
    access: &Access,
    http: &Http,
    kind: &str,
    service_user_type: Option<&str>,
    admin_check: &impl AdminCheck,
) -> Result<Identity, ServerError> {
    let (token, user_id) = match access {
        Access::AdminToken(token) => {
            let user_id = whoami(http, token)
                .await?
                .ok_or_else(|| ServerError::TokenRefused {
                    detail: "unknown or expired token".into(),
                })?;
            if !admin_check.is_admin(http, token, &user_id).await? {
                return Err(ServerError::NotAdmin { account: user_id });
            }
            (token.clone(), user_id)
        }
        Access::ServiceAccount {
            secret,
            token_cache_dir,
        } => {
            let account = &args.credentials.service_account;
            let cache = TokenCache::new(kind, token_cache_dir, &args.server.url, account);
            let password = service_account_password(secret, account.localpart());
            let registration = Registration {
                localpart: account.localpart(),
                password: &password,
                admin: true,
                user_type: service_user_type,
                displayname: Some(DEVICE_NAME),
                // The session this registration opens is the one the module keeps.
                inhibit_login: Some(false),
            };
            service_account_token(http, secret, &registration, &cache, admin_check).await?
        }
    };
    let server_name = user_id
        .split_once(':')
        .map(|(_, server)| server.to_string())
        .ok_or_else(|| ServerError::Unexpected {
            what: "asking who the admin token belongs to".into(),
            detail: format!("{:?} is not a user ID", server_word(&user_id)),
        })?;
    let server_name = confirm_server_name(args, server_name)?;
    Ok(Identity { token, server_name })
}

/// The service account's token, from the cache when it still works as an
/// admin's, else by registering the account (first run) or logging it in
/// (cache lost, token revoked, or the account demoted since).
async fn service_account_token(
    http: &Http,
    secret: &Secret,
    registration: &Registration<'_>,
    cache: &TokenCache,
    admin_check: &impl AdminCheck,
) -> Result<(Secret, String), ServerError> {
    if let Some(token) = cache.load()? {
        if let Some(user_id) = whoami(http, &token).await? {
            if admin_check.is_admin(http, &token, &user_id).await? {
                return Ok((token, user_id));
            }
            // Demoted since it was cached: the token can never manage users
            // again, whatever happens to the account, so it goes.
            cache.discard()?;
            let _ = logout(http, &token, "the service account").await;
        }
    }
    let pending = cache.prepare_store()?;
    let (token, user_id) = register_service_account(http, secret, registration).await?;
    if !admin_check.is_admin(http, &token, &user_id).await? {
        // Not cached, so that the run after the account is promoted again
        // logs in afresh; the session is ended so that none piles up.
        let _ = logout(http, &token, "the service account").await;
        return Err(ServerError::ServiceAccountNotAdmin { account: user_id });
    }
    pending.commit(&token)?;
    Ok((token, user_id))
}

/// Registers the service account, or logs it in when it exists. A
/// registration whose answer was lost is sent again with a fresh nonce:
/// registration refuses an existing user, so the second answer says which.
async fn register_service_account(
    http: &Http,
    secret: &Secret,
    registration: &Registration<'_>,
) -> Result<(Secret, String), ServerError> {
    let mut registered = register(http, secret, registration).await;
    if let Err(ServerError::RegistrationUnanswered { .. }) = registered {
        registered = register(http, secret, registration).await;
    }
    match registered {
        Ok((user_id, Some(token))) => Ok((token, user_id)),
        Ok((_, None)) => Err(ServerError::Unexpected {
            what: "registering the service account".into(),
            detail: "no access token in the answer".into(),
        }),
        Err(ServerError::CreatedMeanwhile { .. }) => {
            recover_service_account(http, registration.localpart, registration.password).await
        }
        Err(other) => Err(other),
    }
}

/// Logs the existing service account in and removes its idle sessions, so
/// sessions do not pile up however often the cache is lost. Sessions in use
/// stay: another run may be working with one right now.
async fn recover_service_account(
    http: &Http,
    localpart: &str,
    password: &Secret,
) -> Result<(Secret, String), ServerError> {
    let session = password_login(http, localpart, password)
        .await?
        .ok_or_else(|| ServerError::ServiceAccountPassword {
            account: localpart.to_string(),
        })?;
    let reply = http
        .send(
            Method::GET,
            "/_matrix/client/v3/devices",
            Some(&session.token),
            Body::None,
        )
        .await?;
    let stale: Vec<&str> = reply
        .body
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| is_idle(d))
        .filter_map(|d| d.get("device_id").and_then(Value::as_str))
        .filter(|id| *id != session.device_id)
        .collect();
    if !stale.is_empty() {
        let body = json!({
            "devices": stale,
            "auth": password_auth(&session.user_id, password),
        });
        let reply = http
            .send(
                Method::POST,
                "/_matrix/client/v3/delete_devices",
                Some(&session.token),
                Body::Json(&body),
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(
                "removing the service account's old sessions",
                &reply,
            ));
        }
    }
    Ok((session.token, session.user_id))
}

/// A service-account session unused this long belongs to a lost token cache.
const SERVICE_SESSION_IDLE_MS: u64 = 60 * 60 * 1000;

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
        Err(lost @ HttpError::AnswerLost { .. }) => {
            return Err(ServerError::RegistrationUnanswered {
                user: registration.localpart.to_string(),
                cause: Box::new(lost.into()),
            })
        }
        Err(other) => return Err(other.into()),
    };
    let field = |name: &str| reply.body.get(name).and_then(Value::as_str);
    match (reply.status, reply.errcode(), field("user_id")) {
        (StatusCode::OK, _, Some(user_id)) => {
            Ok((user_id.to_string(), field("access_token").map(Secret::new)))
        }
        (_, "M_USER_IN_USE", _) => Err(ServerError::CreatedMeanwhile {
            user: registration.localpart.to_string(),
        }),
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

/// The service account's password, derived from the shared secret so that
/// any host holding the secret can recover the account's token.
fn service_account_password(secret: &Secret, localpart: &str) -> Secret {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"matrix_user service account\0");
    mac.update(localpart.as_bytes());
    Secret::new(hex(&mac.finalize().into_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a device has not been used for [`SERVICE_SESSION_IDLE_MS`].
fn is_idle(device: &Value) -> bool {
    device
        .get("last_seen_ts")
        .and_then(Value::as_u64)
        .is_some_and(|seen| seen.saturating_add(SERVICE_SESSION_IDLE_MS) < unix_millis())
}

/// Now, in milliseconds since the Unix epoch, as Matrix timestamps are.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the service account's token is kept between runs: one file per
/// homeserver implementation, URL and account, readable only by the user
/// running the module, in a folder no one else can write. Links are never
/// followed: another user able to plant one could read or replace the token.
struct TokenCache {
    path: PathBuf,
}

impl TokenCache {
    /// `kind` names the homeserver implementation (`synapse`, `dendrite`).
    fn new(kind: &str, dir: &Path, url: &str, account: &Username) -> TokenCache {
        let key = hex(&Sha1::digest(
            format!("{url}\0{}", account.localpart()).as_bytes(),
        ));
        TokenCache {
            path: dir.join(format!("{kind}-{}.token", &key[..16])),
        }
    }

    fn folder(&self) -> &Path {
        self.path
            .parent()
            .expect("the cache file is inside a folder")
    }

    fn failed(&self, error: std::io::Error) -> ServerError {
        ServerError::TokenCache {
            path: self.path.display().to_string(),
            detail: error.to_string(),
        }
    }

    /// Creates the folder (mode 0700) if missing, and refuses one that
    /// another user owns or that others can write: its owner, or anyone
    /// who can write it, could swap the token for theirs. A folder is
    /// never changed, since it may be shared with other files.
    fn ensure_private_folder(&self) -> Result<(), ServerError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let folder = self.folder();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|e| self.failed(e))?;
        let metadata = std::fs::metadata(folder).map_err(|e| self.failed(e))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = unsafe { libc::geteuid() };
        if metadata.uid() != user {
            return Err(ServerError::TokenCacheForeign {
                folder: folder.display().to_string(),
                owner: metadata.uid(),
            });
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(ServerError::TokenCacheShared {
                folder: folder.display().to_string(),
                mode: format!("{mode:04o}"),
            });
        }
        Ok(())
    }

    /// The cached token, `None` when there is none yet.
    fn load(&self) -> Result<Option<Secret>, ServerError> {
        use std::io::Read;
        self.ensure_private_folder()?;
        let mut file = match open_no_follow(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(ServerError::TokenCacheLink {
                    path: self.path.display().to_string(),
                })
            }
            Err(e) => return Err(self.failed(e)),
        };
        let mut token = String::new();
        file.read_to_string(&mut token)
            .map_err(|e| self.failed(e))?;
        Ok(Some(Secret::new(token.trim())).filter(|t| !t.expose().is_empty()))
    }

    /// Opens a fresh temporary file beside the cache file, so that a folder
    /// the token cannot be written to is found before a token exists (that
    /// is, before the service account is registered or logged in).
    fn prepare_store(&self) -> Result<PendingToken, ServerError> {
        self.ensure_private_folder()?;
        let mut suffix = [0u8; 8];
        getrandom::getrandom(&mut suffix).expect("the operating system provides random bytes");
        // A name no one can guess, for each run: runs sharing the folder
        // must not write into each other's file, nor anyone into ours.
        let temporary =
            self.path
                .with_extension(format!("{}-{}.tmp", std::process::id(), hex(&suffix)));
        let file = create_private_file(&temporary).map_err(|e| self.failed(e))?;
        Ok(PendingToken {
            file,
            temporary,
            path: self.path.clone(),
        })
    }

    /// Forgets the cached token; a cache already gone is fine.
    fn discard(&self) -> Result<(), ServerError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.failed(e)),
            _ => Ok(()),
        }
    }

    #[cfg(test)]
    fn store(&self, token: &Secret) -> Result<(), ServerError> {
        self.prepare_store()?.commit(token)
    }
}

/// A token file being written: renamed over the cache file when complete,
/// removed when dropped before that.
struct PendingToken {
    file: std::fs::File,
    temporary: PathBuf,
    path: PathBuf,
}

impl PendingToken {
    /// Writes `token` and puts the file in place in one step (a rename
    /// replaces a link at the cache path; it never writes through it).
    fn commit(mut self, token: &Secret) -> Result<(), ServerError> {
        use std::io::Write;
        let fail = |e: std::io::Error| ServerError::TokenCache {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        };
        self.file
            .write_all(token.expose().as_bytes())
            .and_then(|()| self.file.sync_all())
            .map_err(fail)?;
        std::fs::rename(&self.temporary, &self.path).map_err(fail)
    }
}

impl Drop for PendingToken {
    fn drop(&mut self) {
        // After a commit the name is gone already; nothing else is there.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Creates `path` for writing, mode 0600; fails if anything, a link
/// included, is already there.
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// Opens `path` for reading; a link there fails with `ELOOP`.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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

    #[test]
    fn both_servers_registration_errors_get_the_same_messages() {
        let reply = |status: u16, body: Value| Reply {
            server: crate::http::HOMESERVER,
            status: StatusCode::from_u16(status).unwrap(),
            body,
        };
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
        let reply = |status: u16, body: Value| Reply {
            server: crate::http::HOMESERVER,
            status: StatusCode::from_u16(status).unwrap(),
            body,
        };
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

    #[test]
    fn the_service_password_is_stable_and_secret_dependent() {
        let a = service_account_password(&Secret::new("one"), "svc");
        assert_eq!(a, service_account_password(&Secret::new("one"), "svc"));
        assert_ne!(a, service_account_password(&Secret::new("two"), "svc"));
        assert_eq!(a.expose().len(), 40);
    }

    /// A fresh folder for one test, removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("matrix-user-unit-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn cache_in(dir: &Path) -> TokenCache {
        TokenCache::new("synapse", dir, "http://x", &Username::parse("svc").unwrap())
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_token_is_kept_in_a_private_file_of_a_private_folder() {
        let scratch = Scratch::new("private");
        let dir = scratch.0.join("new").join("cache");
        let cache = cache_in(&dir);
        cache.store(&Secret::new("syt_token")).unwrap();
        assert_eq!(cache.load().unwrap().unwrap().expose(), "syt_token");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&cache.path), 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }

    #[test]
    fn a_link_planted_at_the_cache_path_is_replaced_and_never_read() {
        let scratch = Scratch::new("link-at-path");
        let victim = scratch.0.join("victim");
        std::fs::write(&victim, "syt_planted").unwrap();
        let dir = scratch.0.join("cache");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o700);
        let cache = cache_in(&dir);
        std::os::unix::fs::symlink(&victim, &cache.path).unwrap();
        let refused = cache.load().unwrap_err().to_string();
        assert!(refused.contains("is a symbolic link"), "{refused}");

        cache.store(&Secret::new("syt_ours")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "syt_planted");
        assert!(!std::fs::symlink_metadata(&cache.path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(cache.load().unwrap().unwrap().expose(), "syt_ours");
    }

    #[test]
    fn a_link_planted_at_a_temporary_name_is_not_followed() {
        let scratch = Scratch::new("link-at-temp");
        let victim = scratch.0.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let dir = scratch.0.join("cache");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o700);
        let cache = cache_in(&dir);
        // The name a run used to write through, guessable from its pid.
        let guessable = cache
            .path
            .with_extension(format!("{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &guessable).unwrap();
        cache.store(&Secret::new("syt_ours")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(cache.load().unwrap().unwrap().expose(), "syt_ours");
        // Whatever the name, an existing entry is never opened.
        let error = create_private_file(&guessable).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn a_folder_others_can_write_is_refused_and_left_as_it_is() {
        let scratch = Scratch::new("shared");
        for shared_mode in [0o777, 0o770, 0o1777] {
            set_mode(&scratch.0, shared_mode);
            let cache = cache_in(&scratch.0);
            let refused = cache
                .store(&Secret::new("syt_token"))
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains("can be written by other users"),
                "{refused}"
            );
            assert!(
                cache.load().is_err(),
                "{shared_mode:o}: read from a shared folder"
            );
            assert_eq!(mode(&scratch.0), shared_mode);
            assert!(!cache.path.exists());
        }
    }

    #[test]
    fn a_folder_of_another_user_is_refused() {
        let scratch = Scratch::new("foreign");
        // Running as root, a folder handed to `nobody`; otherwise `/`, root's.
        let foreign = if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&scratch.0, Some(65534), Some(65534)).unwrap();
            scratch.0.clone()
        } else {
            PathBuf::from("/")
        };
        let cache = cache_in(&foreign);
        let refused = cache
            .store(&Secret::new("syt_token"))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("belongs to another user"), "{refused}");
        assert!(!cache.path.exists());
    }

    #[test]
    fn an_unwritable_folder_is_found_before_a_token_exists() {
        let scratch = Scratch::new("unwritable");
        let in_the_way = scratch.0.join("file");
        std::fs::write(&in_the_way, "").unwrap();
        let refused = cache_in(&in_the_way.join("cache"))
            .prepare_store()
            .err()
            .expect("a folder inside a file cannot be made")
            .to_string();
        assert!(
            refused.starts_with("cannot keep the service account's token in"),
            "{refused}"
        );
    }

    #[test]
    fn each_homeserver_kind_has_its_own_cache_file() {
        let account = Username::parse("svc").unwrap();
        let synapse = TokenCache::new("synapse", Path::new("/c"), "http://x", &account);
        let dendrite = TokenCache::new("dendrite", Path::new("/c"), "http://x", &account);
        assert_ne!(synapse.path, dendrite.path);
        assert!(synapse.path.to_str().unwrap().starts_with("/c/synapse-"));
    }
}
