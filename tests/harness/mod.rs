//! The one harness every integration test goes through: it starts real
//! homeservers (from tools/servers/), runs the compiled module exactly as
//! Ansible does (an args file in argv[1], one JSON object on stdout), and
//! checks the servers with requests of its own, independent of the module.
//!
//! A server that cannot start fails the test loudly; nothing is skipped.

#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod backend;
pub mod dendrite;
pub mod mas;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tools/bootstrap (or `tools/just test`) first",
        path.display()
    );
    path
}

/// A homeserver started for this test binary. It stops when the test
/// process exits: the launcher watches its stdin, which closes then.
pub struct Server {
    pub url: String,
    pub server_name: String,
    pub shared_secret: String,
    pub data_dir: PathBuf,
    /// The raw launcher answer, for backend-specific fields.
    pub info: Value,
    /// Where the module keeps its service-account token for this server.
    pub token_cache_dir: PathBuf,
    admin_token: OnceLock<String>,
    _launcher: Mutex<Child>,
}

impl Server {
    /// Starts `tools/servers/<launcher>.py --ephemeral <flags>`.
    pub fn start(launcher: &str, flags: &[&str]) -> Server {
        let (child, info) = launch(launcher, flags);
        let data_dir = PathBuf::from(info["data_dir"].as_str().unwrap());
        Server {
            url: info["url"].as_str().unwrap().to_string(),
            server_name: info["server_name"].as_str().unwrap().to_string(),
            shared_secret: info["registration_shared_secret"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            token_cache_dir: data_dir.join("matrix_user-token-cache"),
            data_dir,
            info,
            admin_token: OnceLock::new(),
            _launcher: Mutex::new(child),
        }
    }

    /// [`Server::module`], through `proxy` instead of straight to the server.
    pub fn module_via(&self, proxy: &FaultProxy, args: Value) -> ModuleRun {
        let mut all = args;
        all["homeserver_url"] = json!(proxy.url);
        self.module(all)
    }

    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// The connection parameters every module run against this server needs.
    pub fn connection(&self) -> Value {
        json!({
            "homeserver_url": self.url,
            "registration_shared_secret": self.shared_secret,
            "token_cache_dir": self.token_cache_dir,
            "wait_timeout": 5,
        })
    }

    /// Runs the module with `args` on top of [`Server::connection`].
    pub fn module(&self, args: Value) -> ModuleRun {
        self.module_as(&ModuleBinary::native(), args, &[])
    }

    /// [`Server::module`] that must end within `limit`: a run still going
    /// then is killed and the test fails, so a module that hangs fails
    /// instead of hanging the suite.
    pub fn module_within(&self, limit: Duration, args: Value) -> ModuleRun {
        self.module_within_env(limit, args, &[])
    }

    /// [`Server::module_within`] with environment variables set or removed.
    pub fn module_within_env(
        &self,
        limit: Duration,
        args: Value,
        env: &[(&str, Option<&str>)],
    ) -> ModuleRun {
        let mut all = self.connection();
        merge(&mut all, args);
        let secrets = vec![self.shared_secret.clone()];
        run_module_limited(&ModuleBinary::native(), all, secrets, env, limit)
    }

    /// [`Server::module`] with environment variables set or removed, as
    /// [`run_module_with_env`] does.
    pub fn module_with_env(&self, args: Value, env: &[(&str, Option<&str>)]) -> ModuleRun {
        self.module_as(&ModuleBinary::native(), args, env)
    }

    /// [`Server::module`] with another build of the module.
    pub fn module_with(&self, binary: &ModuleBinary, args: Value) -> ModuleRun {
        self.module_as(binary, args, &[])
    }

    fn module_as(
        &self,
        binary: &ModuleBinary,
        args: Value,
        env: &[(&str, Option<&str>)],
    ) -> ModuleRun {
        let mut all = self.connection();
        merge(&mut all, args);
        let mut secrets = vec![self.shared_secret.clone()];
        secrets.extend(self.admin_token.get().cloned());
        run_module_as(binary, all, secrets, env)
    }

    // ---- Independent checks, through the Matrix APIs, not the module ----

    /// Logs in with a password; `Ok(token)` or `Err(status, errcode)`.
    pub fn login(&self, user: &str, password: &str) -> Result<String, (u16, String)> {
        let reply = self.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
        );
        match reply.0 {
            200 => {
                let token = reply.1["access_token"].as_str().unwrap().to_string();
                self.post("/_matrix/client/v3/logout", Some(&token), json!({}));
                Ok(token)
            }
            status => Err((
                status,
                reply.1["errcode"].as_str().unwrap_or_default().to_string(),
            )),
        }
    }

    pub fn can_log_in(&self, user: &str, password: &str) -> bool {
        match self.login(user, password) {
            Ok(_) => true,
            Err((403, _)) => false,
            Err(other) => panic!("login of {user} answered {other:?}"),
        }
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, token, Some(body))
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = http().request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// A token of an admin the harness registered itself, with Synapse's own
    /// `register_new_matrix_user` (not the module's code).
    pub fn harness_admin_token(&self) -> &str {
        self.admin_token.get_or_init(|| {
            let password = "harness-admin-password";
            let status = Command::new(venv_bin("register_new_matrix_user"))
                // `--shared-secret=`: a secret may start with '-'.
                .args(["-u", "harness", "-p", password, "-a"])
                .arg(format!("--shared-secret={}", self.shared_secret))
                .arg(&self.url)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "register_new_matrix_user failed");
            self.session_token("harness", password)
        })
    }

    /// Logs in and keeps the session: for the harness's own admin account.
    pub fn session_token(&self, user: &str, password: &str) -> String {
        let (status, body) = self.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
        );
        assert_eq!(status, 200, "login of {user}: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// What the module's `synapse_database` takes for this Synapse: the
    /// path of its SQLite file, or the URL of its PostgreSQL database.
    pub fn synapse_database(&self) -> String {
        self.info["database"].as_str().unwrap().to_string()
    }

    /// Sets the user's rate-limit override directly with Synapse's admin
    /// API (not the module's code).
    pub fn post_synapse_ratelimit(&self, localpart: &str, body: Value) {
        let path = format!(
            "/_synapse/admin/v1/users/{}/override_ratelimit",
            encode(&self.user_id(localpart))
        );
        let token = self.harness_admin_token().to_string();
        let (status, reply) = self.post(&path, Some(&token), body);
        assert_eq!(status, 200, "override_ratelimit of {localpart}: {reply}");
    }

    /// Synapse's admin view of a user, or `None` when it does not exist.
    pub fn synapse_user(&self, localpart: &str) -> Option<Value> {
        let path = format!(
            "/_synapse/admin/v2/users/{}",
            encode(&self.user_id(localpart))
        );
        match self.get(&path, Some(self.harness_admin_token())) {
            (200, body) => Some(body),
            (404, _) => None,
            other => panic!("reading {localpart}: {other:?}"),
        }
    }

    /// A flag of Synapse's admin view of a user (`locked`, `suspended`,
    /// `shadow_banned`), which must be a boolean.
    pub fn synapse_flag(&self, localpart: &str, flag: &str) -> bool {
        let user = self.synapse_user(localpart).expect("the user exists");
        user[flag]
            .as_bool()
            .unwrap_or_else(|| panic!("{flag} of {localpart} is not a boolean: {user}"))
    }

    /// The user's rate-limit override as Synapse's own admin API reports it:
    /// `{}` when it has none.
    pub fn synapse_ratelimit(&self, localpart: &str) -> Value {
        let path = format!(
            "/_synapse/admin/v1/users/{}/override_ratelimit",
            encode(&self.user_id(localpart))
        );
        let (status, body) = self.get(&path, Some(self.harness_admin_token()));
        assert_eq!(status, 200, "override_ratelimit of {localpart}: {body}");
        body
    }

    /// Who Synapse's own lookup by SSO identity finds, or `None`.
    pub fn synapse_user_by_external_id(&self, provider: &str, external_id: &str) -> Option<String> {
        let path = format!(
            "/_synapse/admin/v1/auth_providers/{}/users/{}",
            encode(provider),
            encode(external_id)
        );
        self.synapse_lookup(&path)
    }

    /// Who Synapse's own lookup by e-mail address finds, or `None`.
    pub fn synapse_user_by_email(&self, address: &str) -> Option<String> {
        let path = format!(
            "/_synapse/admin/v1/threepid/email/users/{}",
            encode(address)
        );
        self.synapse_lookup(&path)
    }

    fn synapse_lookup(&self, path: &str) -> Option<String> {
        match self.get(path, Some(self.harness_admin_token())) {
            (200, body) => Some(body["user_id"].as_str().unwrap().to_string()),
            (404, _) => None,
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Sets fields of a user directly with Synapse's admin API (not the module's code).
    pub fn put_synapse_user(&self, localpart: &str, body: Value) {
        let path = format!(
            "/_synapse/admin/v2/users/{}",
            encode(&self.user_id(localpart))
        );
        let token = self.harness_admin_token().to_string();
        let (status, reply) = self.request(reqwest::Method::PUT, &path, Some(&token), Some(body));
        assert!(status == 200 || status == 201, "PUT {localpart}: {reply}");
    }

    /// Creates a room as the harness's admin, who stays in it: `preset` is
    /// `public_chat` or `private_chat`, `alias` a localpart for
    /// `#alias:server` (none when empty). Returns the room ID.
    pub fn create_room(&self, preset: &str, alias: &str) -> String {
        let mut body = json!({ "preset": preset });
        if !alias.is_empty() {
            body["room_alias_name"] = json!(alias);
        }
        let token = self.harness_admin_token();
        let (status, room) = self.post("/_matrix/client/v3/createRoom", Some(token), body);
        assert_eq!(status, 200, "creating a {preset} room: {room}");
        room["room_id"].as_str().unwrap().to_string()
    }

    /// The users joined to `room`, as Synapse's room admin API lists them.
    pub fn room_members(&self, room: &str) -> Vec<String> {
        let path = format!("/_synapse/admin/v1/rooms/{}/members", encode(room));
        let (status, body) = self.get(&path, Some(self.harness_admin_token()));
        assert_eq!(status, 200, "members of {room}: {body}");
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|member| member.as_str().unwrap().to_string())
            .collect()
    }

    /// The user's avatar as Synapse's own profile API reports it (`None`: no avatar).
    pub fn profile_avatar(&self, localpart: &str) -> Option<String> {
        let path = format!(
            "/_matrix/client/v3/profile/{}/avatar_url",
            encode(&self.user_id(localpart))
        );
        match self.get(&path, Some(self.harness_admin_token())) {
            (200, body) => body["avatar_url"].as_str().map(str::to_string),
            (404, _) => None,
            other => panic!("avatar_url of {localpart}: {other:?}"),
        }
    }

    /// The content of the media at `mxc`, downloaded by the harness's admin.
    pub fn media_content(&self, mxc: &str) -> Vec<u8> {
        let server_and_id = mxc.strip_prefix("mxc://").expect("an mxc URI");
        let url = format!(
            "{}/_matrix/client/v1/media/download/{server_and_id}",
            self.url
        );
        let response = http()
            .get(url)
            .bearer_auth(self.harness_admin_token())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "downloading {mxc}");
        response.bytes().unwrap().to_vec()
    }

    /// How many media `localpart` has uploaded, as Synapse's admin API counts them.
    pub fn media_count(&self, localpart: &str) -> u64 {
        let path = format!(
            "/_synapse/admin/v1/users/{}/media",
            encode(&self.user_id(localpart))
        );
        let (status, body) = self.get(&path, Some(self.harness_admin_token()));
        assert_eq!(status, 200, "media of {localpart}: {body}");
        body["total"].as_u64().unwrap()
    }

    /// The bodies of the last messages in `room`, as the harness's admin (a
    /// member) reads them.
    pub fn message_bodies(&self, room: &str) -> Vec<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            encode(room)
        );
        let (status, body) = self.get(&path, Some(self.harness_admin_token()));
        assert_eq!(status, 200, "messages of {room}: {body}");
        body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|event| event["content"]["body"].as_str().map(str::to_string))
            .collect()
    }

    pub fn is_admin(&self, localpart: &str) -> bool {
        self.synapse_user(localpart).expect("the user exists")["admin"] == json!(true)
    }

    pub fn devices(&self, localpart: &str) -> Vec<Value> {
        let path = format!(
            "/_synapse/admin/v2/users/{}/devices",
            encode(&self.user_id(localpart))
        );
        let (status, body) = self.get(&path, Some(self.harness_admin_token()));
        assert_eq!(status, 200, "devices of {localpart}: {body}");
        body["devices"].as_array().unwrap().clone()
    }
}

/// Runs `tools/servers/<launcher>.py --ephemeral <flags>` and reads the one
/// JSON line it prints when ready. The launcher stops when this process
/// exits: it watches its stdin, which closes then.
pub fn launch(launcher: &str, flags: &[&str]) -> (Child, Value) {
    let script = repo_root()
        .join("tools/servers")
        .join(format!("{launcher}.py"));
    let mut command = Command::new(venv_bin("python"));
    command.arg(&script).arg("--ephemeral").args(flags);
    start_service(command, &format!("{launcher} server"))
}

/// A reverse proxy in front of a server, shaped like matrix-docker-ansible-deploy's
/// default Traefik routers for Synapse (tools/servers/proxy.py): it forwards
/// only `/`, `/_matrix` and `/_synapse/client` and answers Traefik's
/// plain-text 404 to anything else.
pub struct Proxy {
    pub url: String,
    _launcher: Child,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let (child, info) = launch("proxy", &["--upstream", upstream]);
        Proxy {
            url: info["url"].as_str().unwrap().to_string(),
            _launcher: child,
        }
    }
}

fn http() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::blocking::Client::new)
}

pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn merge(base: &mut Value, extra: Value) {
    let base = base.as_object_mut().unwrap();
    for (key, value) in extra.as_object().expect("module args are a mapping") {
        base.insert(key.clone(), value.clone());
    }
}

/// A build of the module and how to run it: the one cargo built for this
/// machine, or a cross-compiled one under an emulator.
pub struct ModuleBinary {
    binary: PathBuf,
    /// Runs the binary when this machine cannot (qemu-user for aarch64).
    emulator: Option<PathBuf>,
}

impl ModuleBinary {
    /// The debug build cargo made for these tests.
    pub fn native() -> ModuleBinary {
        ModuleBinary {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_matrix_user")),
            emulator: None,
        }
    }

    /// The release build for aarch64 that `just build` cross-compiles,
    /// run by Debian's qemu-aarch64-static.
    pub fn aarch64_under_qemu() -> ModuleBinary {
        let binary = repo_root().join("target/aarch64-unknown-linux-musl/release/matrix_user");
        assert!(
            binary.exists(),
            "{} is missing: run `tools/just build`, which cross-compiles it",
            binary.display()
        );
        let emulator = on_path("qemu-aarch64-static").unwrap_or_else(|| {
            panic!("qemu-aarch64-static is not on PATH: install Debian's qemu-user-static (tools/bootstrap does)")
        });
        let built = ModuleBinary {
            binary,
            emulator: Some(emulator),
        };
        assert_eq!(
            built.elf().machine(),
            "aarch64",
            "{} is not an aarch64 build",
            built.binary.display()
        );
        built
    }

    pub fn elf(&self) -> Elf {
        Elf(std::fs::read(&self.binary).unwrap())
    }

    fn command(&self) -> Command {
        match &self.emulator {
            Some(emulator) => {
                let mut command = Command::new(emulator);
                command.arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        }
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The header fields of a 64-bit little-endian ELF executable that say
/// which CPU it is for and whether it needs a dynamic loader.
pub struct Elf(Vec<u8>);

impl Elf {
    fn u16_at(&self, offset: usize) -> usize {
        u16::from_le_bytes(self.0[offset..offset + 2].try_into().unwrap()) as usize
    }

    pub fn machine(&self) -> &'static str {
        assert_eq!(&self.0[..5], b"\x7fELF\x02", "not a 64-bit ELF file");
        match self.u16_at(18) {
            0x3e => "x86_64",
            0xb7 => "aarch64",
            _ => "other",
        }
    }

    /// No PT_INTERP program header: the kernel runs it without ld.so.
    pub fn is_static(&self) -> bool {
        const PT_INTERP: u32 = 3;
        let table = u64::from_le_bytes(self.0[32..40].try_into().unwrap()) as usize;
        let (entry_size, entries) = (self.u16_at(54), self.u16_at(56));
        (0..entries).all(|i| {
            let at = table + i * entry_size;
            u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap()) != PT_INTERP
        })
    }
}

/// One run of the module binary.
pub struct ModuleRun {
    /// How long the module ran.
    pub elapsed: Duration,
    pub output: Value,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the module binary on `args` as Ansible does, and checks that none of
/// `secrets` (nor any password in `args`) appears anywhere in its output.
pub fn run_module(args: Value, secrets: Vec<String>) -> ModuleRun {
    run_module_as(&ModuleBinary::native(), args, secrets, &[])
}

/// [`run_module`] with environment variables set (`Some`) or removed
/// (`None`) for the module's process only.
pub fn run_module_with_env(
    args: Value,
    secrets: Vec<String>,
    env: &[(&str, Option<&str>)],
) -> ModuleRun {
    run_module_as(&ModuleBinary::native(), args, secrets, env)
}

/// [`run_module`] with another build of the module.
pub fn run_module_with(binary: &ModuleBinary, args: Value, secrets: Vec<String>) -> ModuleRun {
    run_module_as(binary, args, secrets, &[])
}

/// How long any module run may take before the harness kills it: longer
/// than any run of the suite needs, short enough that a hang fails.
pub(crate) const MODULE_RUN_LIMIT: Duration = Duration::from_secs(300);

fn run_module_as(
    binary: &ModuleBinary,
    args: Value,
    secrets: Vec<String>,
    env: &[(&str, Option<&str>)],
) -> ModuleRun {
    run_module_limited(binary, args, secrets, env, MODULE_RUN_LIMIT)
}

pub(crate) fn run_module_limited(
    binary: &ModuleBinary,
    args: Value,
    mut secrets: Vec<String>,
    env: &[(&str, Option<&str>)],
    limit: Duration,
) -> ModuleRun {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    collect_passwords(&args, &mut secrets);
    // A file per run, removed after it: nothing of a test is left in /tmp.
    let path = std::env::temp_dir().join(format!(
        "matrix-user-test-{}-{}.json",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, serde_json::to_vec(&args).unwrap()).unwrap();
    let run = run_binary(binary, &path, env, limit);
    std::fs::remove_file(&path).ok();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        assert!(
            !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
            "a secret leaked into the module's output: {}",
            run.stdout
        );
    }
    run
}

fn run_binary(
    binary: &ModuleBinary,
    args_file: &Path,
    env: &[(&str, Option<&str>)],
    limit: Duration,
) -> ModuleRun {
    let mut command = binary.command();
    command.arg(args_file);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Read;
    // Read while it runs: a full pipe would stall the module.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).ok();
            bytes
        })
    };
    let stdout_reader = drain(Box::new(child.stdout.take().unwrap()));
    let stderr_reader = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            std::fs::remove_file(args_file).ok();
            panic!("the module did not finish within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let output = std::process::Output {
        status,
        stdout: stdout_reader.join().unwrap(),
        stderr: stderr_reader.join().unwrap(),
    };
    let stdout = String::from_utf8(output.stdout).unwrap();
    let parsed = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!("the module must print exactly one JSON object, printed {stdout:?}")
    });
    ModuleRun {
        elapsed,
        output: parsed,
        exit_code: output.status.code().unwrap_or(-1),
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn collect_passwords(args: &Value, into: &mut Vec<String>) {
    match args {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::String(s)
                        if key.contains("password")
                            || key.contains("secret")
                            || key.contains("token") =>
                    {
                        if !key.ends_with("_file")
                            && !key.ends_with("_dir")
                            && key != "update_password"
                        {
                            into.push(s.clone())
                        }
                    }
                    other => collect_passwords(other, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_passwords(item, into)),
        _ => {}
    }
}

impl ModuleRun {
    pub fn msg(&self) -> &str {
        self.output["msg"].as_str().unwrap_or_default()
    }

    /// The user IDs the module reports under `undeclared`, sorted.
    pub fn undeclared(&self) -> Vec<String> {
        let mut users: Vec<String> = self.output["undeclared"]
            .as_array()
            .unwrap_or_else(|| panic!("no undeclared list: {}", self.stdout))
            .iter()
            .map(|u| u.as_str().unwrap().to_string())
            .collect();
        users.sort();
        users
    }

    /// Succeeded and changed something.
    pub fn assert_changed(&self) -> &Self {
        assert_eq!(self.exit_code, 0, "the module failed: {}", self.stdout);
        assert_eq!(
            self.output["changed"],
            json!(true),
            "expected changed: {}",
            self.stdout
        );
        self
    }

    /// Succeeded and changed nothing.
    pub fn assert_unchanged(&self) -> &Self {
        assert_eq!(self.exit_code, 0, "the module failed: {}", self.stdout);
        assert_eq!(
            self.output["changed"],
            json!(false),
            "expected no change: {}",
            self.stdout
        );
        self
    }

    /// Failed (exit 1, `failed: true`) with a message containing `expected`.
    pub fn assert_failed_with(&self, expected: &str) -> &Self {
        assert_eq!(self.exit_code, 1, "expected failure: {}", self.stdout);
        assert_eq!(self.output["failed"], json!(true), "{}", self.stdout);
        assert!(
            self.msg().contains(expected),
            "expected {expected:?} in {:?}",
            self.msg()
        );
        self
    }

    /// The actions the module reports for the user at `index`.
    pub fn actions(&self, index: usize) -> Vec<String> {
        self.output["users"][index]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    /// `field` of the user at `index` in the diff, before and after.
    pub fn diff_of(&self, index: usize, field: &str) -> (Value, Value) {
        let diff = &self.output["diff"][index];
        (diff["before"][field].clone(), diff["after"][field].clone())
    }
}

/// Runs `sql` (statements without values) on the PostgreSQL database at
/// `url`, as its owner: for what a database admin sets up by hand.
pub fn postgres_batch(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        driver.await.unwrap().unwrap();
    })
}

/// `tools/servers/proxy.py --forward-all --faults` in front of a real
/// server: it forwards everything and misbehaves once on each request
/// `faults` names (see the script), until the test process exits.
pub struct FaultProxy {
    pub url: String,
    _process: Mutex<Child>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Value) -> FaultProxy {
        let faults = faults.to_string();
        let (child, info) = launch(
            "proxy",
            &["--upstream", upstream, "--forward-all", "--faults", &faults],
        );
        FaultProxy {
            url: info["url"].as_str().unwrap().to_string(),
            _process: Mutex::new(child),
        }
    }

    /// Blocks until the request the fault `{"action": "hold", "name": name}`
    /// matches has reached the proxy, which holds it.
    pub fn wait_until_held(&self, name: &str) {
        self.control(reqwest::Method::GET, "held", name);
    }

    /// Lets the held request `name` go on to the server.
    pub fn release(&self, name: &str) {
        self.control(reqwest::Method::POST, "release", name);
    }

    /// Every request the proxy has relayed so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        let reply = http()
            .get(format!("{}/_fault_proxy/requests", self.url))
            .send()
            .unwrap();
        let body: Value = reply.json().unwrap();
        body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|request| request.as_str().unwrap().to_string())
            .collect()
    }

    fn control(&self, method: reqwest::Method, verb: &str, name: &str) {
        let reply = http()
            .request(method, format!("{}/_fault_proxy/{verb}/{name}", self.url))
            .timeout(std::time::Duration::from_secs(90))
            .send()
            .unwrap();
        assert!(
            reply.status().is_success(),
            "fault_proxy {verb} {name}: {}",
            reply.text().unwrap_or_default()
        );
    }
}

/// Starts a helper process that prints one JSON line when ready and runs
/// until its stdin closes (the test process exits); returns it and that line.
fn start_service(mut command: Command, name: &str) -> (Child, Value) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!("{name} did not start (it said {line:?}); see the output above")
    });
    (child, info)
}

/// Files a module must neither block on nor read without bound, in
/// `folder`: a FIFO no one writes to (opening it for reading waits for a
/// writer), `/dev/zero` (endless), and a sparse regular file of 1 GiB.
pub struct HostileFiles {
    pub fifo: PathBuf,
    pub zero: PathBuf,
    pub huge: PathBuf,
}

impl HostileFiles {
    pub fn in_folder(folder: &Path) -> HostileFiles {
        std::fs::create_dir_all(folder).unwrap();
        let fifo = folder.join("fifo");
        let huge = folder.join("huge");
        if !fifo.exists() {
            let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
            assert!(made.success(), "mkfifo {}", fifo.display());
        }
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        HostileFiles {
            fifo,
            zero: PathBuf::from("/dev/zero"),
            huge,
        }
    }

    /// Each file with what the refusal of it says: a special file is not
    /// a regular file; the huge one is larger than what the option holds.
    /// `sized` leaves the huge file out for options that open a database,
    /// which SQLite reads page by page.
    pub fn cases(&self, sized: bool) -> Vec<(&Path, &'static str)> {
        let mut cases = vec![
            (
                self.fifo.as_path(),
                "is a FIFO (named pipe), not a regular file",
            ),
            (
                self.zero.as_path(),
                "is a character device, not a regular file",
            ),
        ];
        if sized {
            cases.push((self.huge.as_path(), "is larger than"));
        }
        cases
    }
}
