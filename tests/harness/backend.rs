//! One trait for every homeserver a scenario runs on: how the module is run
//! against it, and the facts a user would check, each read through that
//! server's own API or database (never the module's code). A scenario written
//! once against [`Backend`] runs on each server that implements it
//! (tests/scenarios.rs).

use std::ops::Deref;
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::{ModuleRun, Server};

/// A real homeserver as a scenario sees it.
pub trait Backend: Sync {
    /// The server under the scenario, for what is not a shared fact.
    fn server(&self) -> &Server;

    /// Runs the module with `args` on top of this server's connection
    /// parameters, checking that no secret appears in its output.
    fn module(&self, args: Value) -> ModuleRun;

    /// Whether the account `localpart` exists (deactivated ones included).
    fn exists(&self, localpart: &str) -> bool;

    /// Whether `localpart` is a server admin. `password` is its current
    /// one: Dendrite's flag, read from its database, must also show in what
    /// the user's own session may do (its admin API).
    fn is_admin(&self, localpart: &str, password: &str) -> bool;

    fn is_deactivated(&self, localpart: &str) -> bool;

    /// `Some(erased)` where the server can erase a user, `None` where not.
    fn erased(&self, localpart: &str) -> Option<bool>;

    /// The display name the server shows for `localpart`.
    fn displayname(&self, localpart: &str) -> Option<String>;

    /// How many sessions (devices) `localpart` has open.
    fn sessions(&self, localpart: &str) -> usize;

    fn can_log_in(&self, localpart: &str, password: &str) -> bool {
        self.server().can_log_in(localpart, password)
    }

    /// What every scenario ends with (MAS: no request and no answer broke
    /// the spec).
    fn after_scenario(&self) {}
}

/// A real Synapse (tools/servers/synapse.py, SQLite).
pub struct Synapse(pub Server);

/// A real Dendrite v0.13.8 (tools/servers/dendrite.py), with its database
/// given to the module as `dendrite_database`.
pub struct Dendrite(pub Server);

/// The MAS contract server (tools/servers/mas.py).
pub struct Mas(pub Server);

macro_rules! deref_to_server {
    ($($backend:ty),*) => {$(
        impl Deref for $backend {
            type Target = Server;
            fn deref(&self) -> &Server {
                &self.0
            }
        }
    )*};
}
deref_to_server!(Synapse, Dendrite, Mas);

impl Synapse {
    /// One Synapse for this test binary, with the module's service account
    /// already registered, so parallel tests do not race to create it.
    pub fn shared() -> &'static Synapse {
        static SERVER: OnceLock<Synapse> = OnceLock::new();
        SERVER.get_or_init(|| {
            let server = Server::start("synapse", &[]);
            server.module(json!({"users": []})).assert_unchanged();
            Synapse(server)
        })
    }
}

impl Dendrite {
    /// One Dendrite per database (`sqlite` or `postgres`) for this test
    /// binary, its service account already registered.
    pub fn shared(database: &str) -> &'static Dendrite {
        static SQLITE: OnceLock<Dendrite> = OnceLock::new();
        static POSTGRES: OnceLock<Dendrite> = OnceLock::new();
        let cell = match database {
            "sqlite" => &SQLITE,
            "postgres" => &POSTGRES,
            other => panic!("no Dendrite on {other}"),
        };
        cell.get_or_init(|| {
            let server = Server::start_dendrite(database, &[]);
            server.dendrite(json!({"users": []})).assert_unchanged();
            Dendrite(server)
        })
    }
}

impl Mas {
    /// One contract server for this test binary.
    pub fn shared() -> &'static Mas {
        static SERVER: OnceLock<Mas> = OnceLock::new();
        SERVER.get_or_init(|| Mas(Server::start("mas", &[])))
    }
}

impl Backend for Synapse {
    fn server(&self) -> &Server {
        &self.0
    }

    fn module(&self, args: Value) -> ModuleRun {
        self.0.module(args)
    }

    fn exists(&self, localpart: &str) -> bool {
        self.synapse_user(localpart).is_some()
    }

    fn is_admin(&self, localpart: &str, _password: &str) -> bool {
        self.0.is_admin(localpart)
    }

    fn is_deactivated(&self, localpart: &str) -> bool {
        self.synapse_user(localpart).expect("the user exists")["deactivated"] == json!(true)
    }

    fn erased(&self, localpart: &str) -> Option<bool> {
        let user = self.synapse_user(localpart).expect("the user exists");
        Some(user["erased"].as_bool().expect("Synapse reports erased"))
    }

    fn displayname(&self, localpart: &str) -> Option<String> {
        let user = self.synapse_user(localpart).expect("the user exists");
        user["displayname"].as_str().map(str::to_string)
    }

    fn sessions(&self, localpart: &str) -> usize {
        self.devices(localpart).len()
    }
}

impl Backend for Dendrite {
    fn server(&self) -> &Server {
        &self.0
    }

    fn module(&self, args: Value) -> ModuleRun {
        self.dendrite(args)
    }

    fn exists(&self, localpart: &str) -> bool {
        self.dendrite_account(localpart).is_some()
    }

    fn is_admin(&self, localpart: &str, password: &str) -> bool {
        let in_database = self.dendrite_is_admin(localpart);
        let in_effect = self.uses_admin_api(localpart, password);
        assert_eq!(
            in_database, in_effect,
            "the database says admin: {in_database}, the admin API lets {localpart} in: {in_effect}"
        );
        in_database
    }

    fn is_deactivated(&self, localpart: &str) -> bool {
        self.dendrite_account(localpart)
            .expect("the user exists")
            .deactivated
    }

    fn erased(&self, _localpart: &str) -> Option<bool> {
        None
    }

    fn displayname(&self, localpart: &str) -> Option<String> {
        self.dendrite_account(localpart)
            .expect("the user exists")
            .displayname
    }

    fn sessions(&self, localpart: &str) -> usize {
        self.dendrite_devices(localpart).len()
    }
}

impl Backend for Mas {
    fn server(&self) -> &Server {
        &self.0
    }

    fn module(&self, args: Value) -> ModuleRun {
        self.mas_module(args)
    }

    fn exists(&self, localpart: &str) -> bool {
        self.mas_user(localpart).is_some()
    }

    fn is_admin(&self, localpart: &str, _password: &str) -> bool {
        self.mas_is_admin(localpart)
    }

    fn is_deactivated(&self, localpart: &str) -> bool {
        self.mas_is_deactivated(localpart)
    }

    fn erased(&self, _localpart: &str) -> Option<bool> {
        None
    }

    fn displayname(&self, localpart: &str) -> Option<String> {
        self.mas_homeserver_displayname(localpart)
            .as_str()
            .map(str::to_string)
    }

    /// MAS counts a Matrix client's login as a compatibility session.
    fn sessions(&self, localpart: &str) -> usize {
        usize::from(self.mas_has_active_session(localpart))
    }

    fn after_scenario(&self) {
        self.assert_no_contract_violations();
    }
}
