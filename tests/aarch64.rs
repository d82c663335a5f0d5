//! The aarch64 build of the module (cross-compiled by `just build`), run
//! under qemu-aarch64-static against a real Synapse: the contract of
//! synapse.rs for what a different CPU, C compiler and libc build could
//! break (TLS/crypto, SQLite, JSON, the args file, the token cache).

mod harness;

use std::sync::OnceLock;

use harness::{ModuleBinary, ModuleRun, Server};
use serde_json::{json, Value};

fn aarch64() -> &'static ModuleBinary {
    static BINARY: OnceLock<ModuleBinary> = OnceLock::new();
    BINARY.get_or_init(ModuleBinary::aarch64_under_qemu)
}

/// One Synapse for this test binary, with the service account already
/// registered by the aarch64 binary, so parallel tests do not race for it.
fn synapse() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = Server::start("synapse", &[]);
        server
            .module_with(aarch64(), json!({"users": []}))
            .assert_unchanged();
        server
    })
}

fn module(args: Value) -> ModuleRun {
    synapse().module_with(aarch64(), args)
}

#[test]
fn the_binary_under_test_is_a_static_aarch64_executable() {
    let elf = aarch64().elf();
    assert_eq!(elf.machine(), "aarch64");
    assert!(
        elf.is_static(),
        "the aarch64 binary asks for a dynamic loader"
    );
}

#[test]
fn creates_a_user_who_can_log_in_and_a_second_run_changes_nothing() {
    let s = synapse();
    let user = json!({"username": "arm-alice", "password": "arm horse", "admin": "yes"});
    assert_eq!(
        module(user.clone()).assert_changed().actions(0),
        ["created"]
    );
    assert!(s.can_log_in("arm-alice", "arm horse"));
    assert!(s.is_admin("arm-alice"));
    assert_eq!(
        module(user).assert_unchanged().msg(),
        "@arm-alice:localhost: already as declared"
    );
}

#[test]
fn promotes_and_demotes_an_existing_user_each_once() {
    let s = synapse();
    module(json!({"username": "arm-flip", "password": "arm-flip-pw", "admin": "no"}))
        .assert_changed();
    assert!(!s.is_admin("arm-flip"));

    let promote = module(json!({"username": "arm-flip", "admin": true}));
    assert_eq!(promote.assert_changed().actions(0), ["promoted"]);
    assert!(s.is_admin("arm-flip"));
    module(json!({"username": "arm-flip", "admin": true})).assert_unchanged();

    let demote = module(json!({"username": "arm-flip", "admin": false}));
    assert_eq!(demote.assert_changed().actions(0), ["demoted"]);
    assert!(!s.is_admin("arm-flip"));
    module(json!({"username": "arm-flip", "admin": false})).assert_unchanged();
}

#[test]
fn a_password_with_awkward_characters_arrives_byte_exact() {
    let s = synapse();
    let password = "it's \"quoted\" $HOME `id` back\\slash with spaces ünïcødé 🔑";
    module(json!({"username": "arm-special", "password": password})).assert_changed();
    assert!(s.can_log_in("arm-special", password));
    module(json!({"username": "arm-special", "password": password, "update_password": "always"}))
        .assert_unchanged();
}

#[test]
fn a_wrong_shared_secret_says_so_without_echoing_it() {
    let s = synapse();
    let run = module(json!({
        "registration_shared_secret": "not-the-real-arm-secret",
        "token_cache_dir": s.data_dir.join("arm-wrong-secret-cache"),
        "username": "arm-wrong-secret", "password": "irrelevant-pw",
    }));
    run.assert_failed_with("HMAC incorrect: the registration_shared_secret does not match");
    assert!(!run.stdout.contains("not-the-real-arm-secret"));
    assert!(s.synapse_user("arm-wrong-secret").is_none());
}
