//! The module against a real Synapse: each test is one line of the contract.
//! What every server shares is in scenarios.rs, written once.

mod harness;

use std::sync::OnceLock;

use harness::{encode, FaultProxy, Proxy, Server};
use serde_json::{json, Value};
use std::process::Command;

/// One Synapse for this test binary, with the module's service account
/// already registered, so parallel tests do not race to create it. Its
/// configuration adds the user type `bridge` (user_types.extra_user_types).
fn synapse() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = Server::start("synapse", &["--extra-user-type", "bridge"]);
        server.module(json!({"users": []})).assert_unchanged();
        server
    })
}

#[test]
fn accepts_a_full_user_id_as_username() {
    let s = synapse();
    s.module(json!({"username": "@full-id:localhost", "password": "pw-full-id"}))
        .assert_changed();
    assert!(s.synapse_user("full-id").is_some());
    s.module(json!({"username": "full-id"})).assert_unchanged();
}

#[test]
fn an_erased_user_declared_present_is_reactivated_with_its_password() {
    let s = synapse();
    s.module(json!({"username": "returner", "password": "old-password"}))
        .assert_changed();
    s.module(json!({"username": "returner", "state": "absent", "erase": true}))
        .assert_changed();
    // Synapse's admin API says whether the user is marked erased (its
    // messages hidden from users who join rooms later).
    assert_eq!(s.synapse_user("returner").unwrap()["erased"], json!(true));
    s.module(json!({"username": "returner"}))
        .assert_failed_with("must be reactivated, which needs a password");
    let back = s.module(json!({"username": "returner", "password": "new-password"}));
    assert_eq!(back.assert_changed().actions(0), ["reactivated"]);
    assert!(s.can_log_in("returner", "new-password"));
}

#[test]
fn check_mode_predicts_an_erasure_and_erases_nothing() {
    let s = synapse();
    s.module(json!({"username": "checked-erase", "password": "checked-pw"}))
        .assert_changed();
    let run = s.module(
        json!({"username": "checked-erase", "state": "absent", "erase": true, "_ansible_check_mode": true}),
    );
    assert_eq!(run.assert_changed().actions(0), ["deactivated and erased"]);
    let user = s.synapse_user("checked-erase").unwrap();
    assert_eq!(user["deactivated"], json!(false));
    assert_eq!(user["erased"], json!(false));
    assert!(s.can_log_in("checked-erase", "checked-pw"));
}

#[test]
fn diff_mode_shows_before_and_after_without_secrets() {
    let s = synapse();
    let run = s.module(json!({
        "username": "diffed", "password": "diff-secret-pw", "admin": true,
        "displayname": "Diffed User", "_ansible_diff": true
    }));
    run.assert_changed();
    let diff = &run.output["diff"][0];
    assert_eq!(diff["before"], json!({"exists": false}));
    assert_eq!(
        diff["after"],
        json!({"exists": true, "admin": true, "deactivated": false, "user_type": "regular", "displayname": "Diffed User"})
    );
    let run = s.module(json!({"username": "diffed", "admin": false, "_ansible_diff": true}));
    assert_eq!(run.output["diff"][0]["before"]["admin"], json!(true));
    assert_eq!(run.output["diff"][0]["after"]["admin"], json!(false));
}

#[test]
fn bot_type_and_displayname_are_set_and_reconciled() {
    let s = synapse();
    s.module(json!({"username": "botty", "password": "bot-password", "user_type": "bot", "displayname": "Botty"}))
        .assert_changed();
    let user = s.synapse_user("botty").unwrap();
    assert_eq!(user["user_type"], json!("bot"));
    assert_eq!(user["displayname"], json!("Botty"));

    let run =
        s.module(json!({"username": "botty", "user_type": "regular", "displayname": "Botty II"}));
    assert_eq!(
        run.assert_changed().actions(0),
        ["user type changed", "displayname changed"]
    );
    let user = s.synapse_user("botty").unwrap();
    assert_eq!(user["user_type"], json!(null));
    assert_eq!(user["displayname"], json!("Botty II"));
    s.module(json!({"username": "botty", "user_type": "regular", "displayname": "Botty II"}))
        .assert_unchanged();
}

#[test]
fn fifty_users_in_one_task_then_nothing_to_change() {
    let s = synapse();
    let users: Vec<_> = (0..50)
        .map(|i| json!({"username": format!("bulk{i:02}"), "password": format!("bulk-password-{i}"), "admin": i % 10 == 0}))
        .collect();
    let run = s.module(json!({"users": users}));
    run.assert_changed();
    assert_eq!(run.msg(), "50 users: 50 changed, 0 already as declared");
    assert!(s.is_admin("bulk00") && !s.is_admin("bulk01"));
    assert!(s.can_log_in("bulk49", "bulk-password-49"));

    let again = s.module(json!({"users": users}));
    again.assert_unchanged();
    assert_eq!(again.msg(), "50 users: 0 changed, 50 already as declared");
}

#[test]
fn one_failing_user_does_not_stop_the_others_and_is_named() {
    let s = synapse();
    let run = s.module(json!({"users": [
        {"username": "mixed-ok", "password": "mixed-password"},
        {"username": "mixed-nopass"},
        {"username": "mixed-ok2", "password": "mixed-password"},
    ]}));
    run.assert_failed_with("1 of 3 users failed: @mixed-nopass:localhost: does not exist");
    assert_eq!(run.output["users"][0]["changed"], json!(true));
    assert_eq!(run.output["users"][1]["failed"], json!(true));
    assert!(s.synapse_user("mixed-ok").is_some() && s.synapse_user("mixed-ok2").is_some());
}

#[test]
fn bad_input_fails_before_anything_is_sent_and_names_the_field() {
    let s = synapse();
    let cases = [
        (
            json!({"username": ""}),
            "username: the username \"\" is empty",
        ),
        (json!({"username": "Upper"}), "upper-case letters"),
        (
            json!({"username": "sp ace", "password": "x"}),
            "contains ' '",
        ),
        (
            json!({"username": "_reserved", "password": "x"}),
            "starts with '_'",
        ),
        (json!({"username": "12345", "password": "x"}), "all digits"),
        (
            json!({"username": "@bob:elsewhere.org", "password": "x"}),
            "belongs to server \"elsewhere.org\"",
        ),
        (
            json!({"username": "bad-admin", "password": "x", "admin": "maybe"}),
            "admin: \"maybe\" is not accepted; use yes/no",
        ),
        (
            json!({"username": "bad-pw", "password": ""}),
            "password: is empty",
        ),
        (
            json!({"username": "bad-state", "state": "gone"}),
            "state: \"gone\" is not accepted; use present or absent",
        ),
        (
            json!({"username": "typo", "pasword": "x"}),
            "pasword: unsupported parameter; valid parameters are:",
        ),
        (
            json!({"users": [{"username": "dup"}, {"username": "@dup:localhost"}]}),
            "users[1]: user \"dup\" is already declared in users[0]",
        ),
        (
            json!({"username": &"x".repeat(250), "password": "x"}),
            "the limit is 255",
        ),
        (
            json!({"username": "tls", "password": "x", "ca_path": "/nonexistent.pem"}),
            "ca_path: cannot read /nonexistent.pem:",
        ),
        (
            json!({"username": "conc", "password": "x", "concurrency": 0}),
            "concurrency: \"0\" is not accepted",
        ),
    ];
    for (args, expected) in cases {
        s.module(args).assert_failed_with(expected);
    }
    for never in ["bad-admin", "bad-pw", "bad-state", "typo", "dup"] {
        assert!(
            s.synapse_user(never).is_none(),
            "{never} must not have been created"
        );
    }
    harness::run_module(
        json!({"homeserver_url": s.url, "username": "nocred", "password": "x"}),
        vec![],
    )
    .assert_failed_with("no credentials");
}

#[test]
fn a_wrong_shared_secret_says_so_without_echoing_it() {
    let s = synapse();
    let run = s.module(json!({
        "registration_shared_secret": "not-the-real-secret",
        "token_cache_dir": s.data_dir.join("wrong-secret-cache"),
        "username": "wrong-secret", "password": "irrelevant-pw",
    }));
    run.assert_failed_with("HMAC incorrect: the registration_shared_secret does not match");
    assert!(!run.stdout.contains("not-the-real-secret"));
}

/// mdad's default: Synapse behind a proxy that forwards only `/_matrix` and
/// `/_synapse/client`. The proxy's own 404 (no Matrix error body) must point
/// at the proxy, not at the shared secret; homeserver_url straight to Synapse
/// (the documented fix) then works.
#[test]
fn behind_a_proxy_without_the_admin_api_the_error_names_the_proxy_and_the_fix() {
    let s = synapse();
    let proxy = Proxy::start(&s.url);
    let through_proxy = |credentials: serde_json::Value| {
        let mut args = json!({
            "homeserver_url": proxy.url,
            "token_cache_dir": s.data_dir.join("proxy-cache"),
            "username": "proxied", "password": "proxied-pw",
        });
        args.as_object_mut()
            .unwrap()
            .extend(credentials.as_object().unwrap().clone());
        harness::run_module(args, vec![s.shared_secret.clone()])
    };
    for credentials in [
        json!({"registration_shared_secret": s.shared_secret}),
        json!({"admin_token": s.harness_admin_token()}),
    ] {
        let run = through_proxy(credentials);
        run.assert_failed_with(
            "answered 404 without a Matrix error: a reverse proxy in front of the homeserver does not forward /_synapse/admin",
        );
        assert!(
            run.msg()
                .contains("point homeserver_url at the homeserver itself"),
            "{}",
            run.msg()
        );
        assert!(!run
            .msg()
            .contains("registration_shared_secret in its configuration"));
    }
    assert!(s.synapse_user("proxied").is_none());
    s.module(json!({"username": "proxied", "password": "proxied-pw"}))
        .assert_changed();
}

/// Synapse with no registration_shared_secret answers the registration
/// itself (400 M_UNKNOWN "Shared secret registration is not enabled"):
/// that keeps its own message, distinct from the proxy's.
#[test]
fn a_synapse_without_a_shared_secret_says_so_not_proxy() {
    let s = Server::start("synapse", &["--no-shared-secret"]);
    let run = harness::run_module(
        json!({"homeserver_url": s.url, "registration_shared_secret": "a-secret-it-lacks",
               "token_cache_dir": s.token_cache_dir, "username": "nosecret", "password": "pw-nosecret"}),
        vec![],
    );
    run.assert_failed_with(
        "the homeserver does not accept shared-secret registration (no registration_shared_secret in its configuration)",
    );
    assert!(!run.msg().contains("proxy"), "{}", run.msg());
}

/// An account that already holds the service account's name (made by hand,
/// or with another secret) blocks that name for good, even deactivated: the
/// advice is another service_account, never to deactivate it.
#[test]
fn a_squatted_service_account_name_advises_another_service_account() {
    let s = synapse();
    s.module(json!({"username": "squatted-svc", "password": "squatter-pw"}))
        .assert_changed();
    let run = s.module(json!({
        "service_account": "squatted-svc",
        "token_cache_dir": s.data_dir.join("squatted-cache"),
        "username": "after-squat", "password": "irrelevant-pw",
    }));
    run.assert_failed_with("choose another service_account");
    assert!(
        !run.msg().contains("deactivate that account"),
        "{}",
        run.msg()
    );
    assert!(
        run.msg().contains("even if that account is deactivated"),
        "{}",
        run.msg()
    );
}

#[test]
fn an_unreachable_homeserver_gives_a_clear_error() {
    let run = harness::run_module(
        json!({"homeserver_url": "http://127.0.0.1:9", "registration_shared_secret": "whatever-secret",
               "username": "alice", "password": "pw", "wait_timeout": 1}),
        vec![],
    );
    run.assert_failed_with("cannot reach the homeserver at http://127.0.0.1:9");
}

#[test]
fn an_unusable_token_cache_dir_fails_before_the_service_account_is_registered() {
    let s = synapse();
    let in_the_way = s.data_dir.join("cache-in-the-way");
    std::fs::write(&in_the_way, "a file where a folder should be").unwrap();
    let shared = s.data_dir.join("shared-cache");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    for (account, folder, expected) in [
        (
            "svc-no-cache",
            in_the_way.join("cache"),
            "cannot keep the service account's token in",
        ),
        ("svc-shared-cache", shared, "can be written by other users"),
    ] {
        s.module(json!({
            "service_account": account, "token_cache_dir": folder,
            "username": "cacheless", "password": "cacheless-pw",
        }))
        .assert_failed_with(expected)
        .assert_failed_with("token_cache_dir");
        assert!(
            s.synapse_user(account).is_none(),
            "{account} must not be registered"
        );
    }
    assert!(s.synapse_user("cacheless").is_none());
}

/// A `token_cache_dir` that exists, is private, and cannot be written even
/// by root (immutable, `chattr +i`): the module fails naming it before the
/// service account is registered.
#[test]
fn an_unwritable_token_cache_dir_fails_before_the_service_account_is_registered() {
    struct Immutable(std::path::PathBuf);
    impl Drop for Immutable {
        fn drop(&mut self) {
            Command::new("chattr").arg("-i").arg(&self.0).status().ok();
        }
    }
    let s = synapse();
    let folder = s.data_dir.join("immutable-cache");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let status = Command::new("chattr").arg("+i").arg(&folder).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "chattr +i failed (e2fsprogs, tools/bootstrap)"
    );
    let _restore = Immutable(folder.clone());
    s.module(json!({
        "service_account": "svc-immutable-cache", "token_cache_dir": folder,
        "username": "immutable-cacheless", "password": "cacheless-pw",
    }))
    .assert_failed_with("cannot keep the service account's token in")
    .assert_failed_with("token_cache_dir");
    assert!(s.synapse_user("svc-immutable-cache").is_none());
    assert!(s.synapse_user("immutable-cacheless").is_none());
}

#[test]
fn without_home_nor_xdg_cache_home_the_cache_folder_must_be_given() {
    let s = synapse();
    let no_home = [("HOME", None), ("XDG_CACHE_HOME", None)];
    s.module_with_env(
        json!({"token_cache_dir": null, "username": "homeless", "password": "homeless-pw"}),
        &no_home,
    )
    .assert_failed_with("token_cache_dir is needed");
    assert!(s.synapse_user("homeless").is_none());
    // An admin token needs no cache.
    let token = s.harness_admin_token().to_string();
    harness::run_module_with_env(
        json!({"homeserver_url": s.url, "admin_token": token, "username": "homeless", "password": "homeless-pw"}),
        vec![token.clone()],
        &no_home,
    )
    .assert_changed();
}

#[test]
fn an_admin_token_alone_is_enough() {
    let s = synapse();
    let token = s.harness_admin_token().to_string();
    let args = json!({
        "homeserver_url": s.url, "admin_token": token,
        "username": "by-token", "password": "token-made-pw", "admin": true,
    });
    harness::run_module(args.clone(), vec![token.clone()]).assert_changed();
    assert!(s.can_log_in("by-token", "token-made-pw") && s.is_admin("by-token"));
    harness::run_module(args, vec![token]).assert_unchanged();
    harness::run_module(
        json!({"homeserver_url": s.url, "admin_token": "syt_bogus_token", "username": "x", "password": "y"}),
        vec!["syt_bogus_token".into()],
    )
    .assert_failed_with("the homeserver refused the admin token");
}

/// The token read from `admin_token_file` is the one used: the same run
/// with a file holding another token fails as that token does.
#[test]
fn admin_token_file_is_read_for_the_token() {
    let s = synapse();
    let token = s.harness_admin_token().to_string();
    let file = s.data_dir.join("admin-token-file");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let args = json!({"homeserver_url": s.url, "admin_token_file": file,
                      "username": "by-token-file", "password": "token-file-pw", "admin": true});
    harness::run_module(args.clone(), vec![token.clone()]).assert_changed();
    assert!(s.can_log_in("by-token-file", "token-file-pw") && s.is_admin("by-token-file"));

    std::fs::write(&file, "syt_bogus_token").unwrap();
    harness::run_module(args, vec![token])
        .assert_failed_with("the homeserver refused the admin token");
}

/// A valid token of a user who is not a server admin: the error says so,
/// and nothing is created.
#[test]
fn a_token_that_is_not_an_admins_fails_clearly() {
    let s = synapse();
    s.module(json!({"username": "plain-user", "password": "plain-user-pw"}))
        .assert_changed();
    // A session of its own (the harness's login closes the one it opens).
    let (status, session) = s.post(
        "/_matrix/client/v3/login",
        None,
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "plain-user"},
               "password": "plain-user-pw"}),
    );
    assert_eq!(status, 200, "{session}");
    let token = session["access_token"].as_str().unwrap().to_string();
    let run = harness::run_module(
        json!({"homeserver_url": s.url, "admin_token": token,
               "username": "by-plain-token", "password": "plain-token-pw"}),
        vec![token.clone()],
    );
    run.assert_failed_with("@plain-user:localhost is not a server admin");
    assert!(s.synapse_user("by-plain-token").is_none());
}

/// The usual fresh deployment: only the shared secret, Synapse's default rate
/// limits, and many runs in a row, including one after the token cache was lost.
#[test]
fn twenty_runs_in_a_row_under_default_rate_limits() {
    let s = Server::start("synapse", &["--default-rate-limits"]);
    for run in 0..20 {
        if run == 10 {
            std::fs::remove_dir_all(&s.token_cache_dir).unwrap();
        }
        let admin = run % 2 == 0;
        let outcome = s.module(json!({"users": [
            {"username": "steady", "password": "steady-password", "admin": admin},
            {"username": format!("new{run}"), "password": "new-password"},
        ]}));
        outcome.assert_changed();
        assert_eq!(
            outcome.actions(0),
            [if run == 0 {
                "created"
            } else if admin {
                "promoted"
            } else {
                "demoted"
            }]
        );
    }
    assert!(s.devices("steady").is_empty());
    assert!(s.devices("new19").is_empty());
    assert!(
        s.devices("matrix-user-service").len() <= 2,
        "{:?}",
        s.devices("matrix-user-service")
    );
}

/// Two runs that both find the user missing and race to create it: the
/// proxy holds both registrations until each run has sent its own, so both
/// provably read before either wrote. The loser sees M_USER_IN_USE, reads
/// the user again and reconciles, never fails.
#[test]
fn two_runs_racing_to_create_the_same_user_both_succeed() {
    let s = synapse();
    let registration = |name: &str| {
        json!({"method": "POST", "path": "/_synapse/admin/v1/register",
               "body_has": {"username": "race"}, "action": "hold", "name": name})
    };
    let proxy = FaultProxy::start(
        &s.url,
        json!([registration("first"), registration("second")]),
    );
    // A service account of its own (this URL's token cache starts empty, and
    // the shared account's devices are counted elsewhere), registered before
    // the race so that both runs find it cached instead of racing for it.
    s.module_via(
        &proxy,
        json!({"service_account": "svc-race", "username": "race-warm-up", "state": "absent"}),
    )
    .assert_unchanged();
    let args = json!({"service_account": "svc-race", "username": "race", "password": "race-password", "admin": true});
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| s.module_via(&proxy, args.clone()));
        let second = scope.spawn(|| s.module_via(&proxy, args.clone()));
        proxy.wait_until_held("first");
        proxy.wait_until_held("second");
        proxy.release("first");
        proxy.release("second");
        (first.join().unwrap(), second.join().unwrap())
    });
    for run in [&first, &second] {
        assert_eq!(run.exit_code, 0, "{}", run.stdout);
    }
    let created = [&first, &second]
        .iter()
        .filter(|run| run.actions(0) == ["created"])
        .count();
    assert_eq!(created, 1, "{}\n{}", first.stdout, second.stdout);
    assert!(s.is_admin("race"));
    s.module_via(&proxy, args).assert_unchanged();
}

#[test]
fn a_server_name_that_is_not_the_servers_fails_before_any_change() {
    let s = synapse();
    s.module(
        json!({"server_name": "example.org", "username": "named-server", "password": "pw-named"}),
    )
    .assert_failed_with(
        "server_name is \"example.org\", but the server at homeserver_url serves \"localhost\"",
    );
    assert!(s.synapse_user("named-server").is_none());
}

/// With `admin_token` alone, someone else creates the user between the
/// module's read and its write (the proxy does it just before forwarding the
/// module's first write): the module must not take the account over. It
/// reconciles it as an existing user: promoted as declared, its owner's
/// password left alone (`update_password: on_create`).
#[test]
fn admin_token_never_overwrites_a_user_created_between_read_and_write() {
    let s = synapse();
    let token = s.harness_admin_token().to_string();
    let path = format!(
        "/_synapse/admin/v2/users/{}",
        encode(&s.user_id("raced-by-hand"))
    );
    let proxy = FaultProxy::start(
        &s.url,
        json!([{"method": "PUT", "path": path, "action": "before",
                "request": {"method": "PUT", "path": path, "token": token,
                            "body": {"password": "their-own-password"}}}]),
    );
    let run = harness::run_module(
        json!({"homeserver_url": proxy.url, "admin_token": token,
               "username": "raced-by-hand", "password": "module-password", "admin": true}),
        vec![token.clone()],
    );
    run.assert_changed();
    assert_eq!(run.actions(0), ["promoted"], "{}", run.stdout);
    assert!(s.can_log_in("raced-by-hand", "their-own-password"));
    assert!(!s.can_log_in("raced-by-hand", "module-password"));
    assert!(s.is_admin("raced-by-hand"));
}

/// Synapse rate-limits the module's read (429 with `retry_after_ms`): a pause
/// within `wait_timeout` is waited out and the run succeeds; a longer one
/// is reported as a rate limit, nothing sent after it.
#[test]
fn a_rate_limited_answer_is_waited_out_or_reported() {
    let s = synapse();
    let read = |localpart: &str, retry_after_ms: u64| {
        json!({"method": "GET", "path": format!("/_synapse/admin/v2/users/{}", encode(&s.user_id(localpart))),
               "action": "answer_429", "retry_after_ms": retry_after_ms})
    };
    let proxy = FaultProxy::start(
        &s.url,
        json!([read("patient", 1500), read("impatient", 60_000)]),
    );
    // A service account of its own: the shared account's devices are counted elsewhere.
    let run = s.module_via(
        &proxy,
        json!({"service_account": "svc-rate-limited", "username": "patient", "password": "patient-pw"}),
    );
    assert_eq!(run.assert_changed().actions(0), ["created"]);
    assert!(
        run.elapsed >= std::time::Duration::from_millis(1500),
        "{:?}",
        run.elapsed
    );
    assert!(s.can_log_in("patient", "patient-pw"));

    s.module_via(
        &proxy,
        json!({"service_account": "svc-rate-limited", "username": "impatient", "password": "impatient-pw"}),
    )
    .assert_failed_with(
        "rate-limits us and asks to wait 60s more, longer than wait_timeout allows",
    );
    assert!(s.synapse_user("impatient").is_none());
}

/// The registration POST reaches Synapse, which creates the user, but the
/// answer is lost (a proxy's 502): the module must not resend it (its nonce
/// is spent), but find the user there and report it created.
#[test]
fn a_registration_whose_answer_is_lost_is_not_resent_blindly() {
    let s = synapse();
    let proxy = FaultProxy::start(
        &s.url,
        json!([{"method": "POST", "path": "/_synapse/admin/v1/register",
                "body_has": {"username": "lost-answer"}, "action": "forward_then_502"}]),
    );
    // A service account of its own: this URL's empty token cache then
    // registers it instead of logging in (rate-limited by Synapse).
    let run = s.module_via(
        &proxy,
        json!({"service_account": "svc-lost-answer",
               "username": "lost-answer", "password": "lost-answer-pw", "admin": true}),
    );
    run.assert_changed();
    assert_eq!(run.actions(0), ["created"], "{}", run.stdout);
    assert!(s.can_log_in("lost-answer", "lost-answer-pw") && s.is_admin("lost-answer"));
    s.module(json!({"username": "lost-answer", "password": "lost-answer-pw", "admin": true}))
        .assert_unchanged();
}

/// The same lost answer on the service account's own registration: the
/// module registers again with a fresh nonce, finds the account taken and
/// logs it in, instead of failing on a spent nonce.
#[test]
fn a_lost_answer_to_the_service_account_registration_is_recovered() {
    let s = synapse();
    let proxy = FaultProxy::start(
        &s.url,
        json!([{"method": "POST", "path": "/_synapse/admin/v1/register",
                "body_has": {"username": "svc-lost-own"}, "action": "forward_then_502"}]),
    );
    s.module_via(
        &proxy,
        json!({"service_account": "svc-lost-own",
               "username": "after-lost-own", "password": "after-lost-own-pw"}),
    )
    .assert_changed();
    assert!(s.can_log_in("after-lost-own", "after-lost-own-pw"));
}

/// The module's own service account is not a user it manages: declaring it,
/// in any state, fails before anything is sent.
#[test]
fn the_service_account_cannot_be_declared() {
    let s = synapse();
    for user in [
        json!({"username": "matrix-user-service", "state": "absent"}),
        json!({"username": "matrix-user-service", "password": "pw-svc", "admin": false}),
    ] {
        s.module(json!({"users": [user]}))
            .assert_failed_with("users[0].username: matrix-user-service is the service account");
    }
    let own = json!({"service_account": "svc-own-name", "users": [{"username": "@svc-own-name:localhost", "state": "absent"}]});
    s.module(own)
        .assert_failed_with("svc-own-name is the service account");
    assert!(
        s.synapse_user("svc-own-name").is_none(),
        "nothing may be sent"
    );
    let svc = s.synapse_user("matrix-user-service").unwrap();
    assert_eq!(
        (svc["admin"].clone(), svc["deactivated"].clone()),
        (json!(true), json!(false))
    );
}

/// The service account was demoted behind the module's back: its cached
/// token now belongs to a non-admin. The run fails once, saying how to fix
/// it, and the cache is discarded; once an admin promotes the account again,
/// the next run works (it logs in afresh, not with the stale token).
#[test]
fn a_demoted_service_account_fails_clearly_and_the_stale_token_is_dropped() {
    let s = synapse();
    let account = "svc-demoted";
    let args = |user: &str| json!({"service_account": account, "username": user, "password": "demoted-pw"});
    s.module(args("before-demotion")).assert_changed();
    let path = format!("/_synapse/admin/v2/users/{}", encode(&s.user_id(account)));
    let token = s.harness_admin_token().to_string();
    let demote = s.request(
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(json!({"admin": false})),
    );
    assert_eq!(demote.0, 200, "{:?}", demote);
    s.module(args("while-demoted"))
        .assert_failed_with("@svc-demoted:localhost is not a server admin");
    let cached: Vec<_> = std::fs::read_dir(&s.token_cache_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    let (_, whoami_of) = (0, |t: &str| {
        s.get("/_matrix/client/v3/account/whoami", Some(t)).1
    });
    for token in &cached {
        assert_ne!(
            whoami_of(token.trim())["user_id"],
            json!(s.user_id(account)),
            "the demoted account's token must not stay in the cache"
        );
    }
    let promote = s.request(
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(json!({"admin": true})),
    );
    assert_eq!(promote.0, 200, "{:?}", promote);
    s.module(args("after-promotion")).assert_changed();
}

/// With `admin_token` alone, creating takes two requests (see above); when
/// the second, which sets the password, fails (the proxy answers 500 without
/// forwarding it), the new account is deactivated rather than left without a
/// password, so that the next run reactivates it with its password.
#[test]
fn admin_token_creation_that_cannot_set_the_password_is_finished_by_the_next_run() {
    let s = synapse();
    let token = s.harness_admin_token().to_string();
    let path = format!(
        "/_synapse/admin/v2/users/{}",
        encode(&s.user_id("half-made"))
    );
    let proxy = FaultProxy::start(
        &s.url,
        json!([{"method": "PUT", "path": path, "body_has": {"admin": true}, "action": "fail_500"}]),
    );
    let args = |url: &str| {
        json!({"homeserver_url": url, "admin_token": token,
               "username": "half-made", "password": "half-made-pw", "admin": true})
    };
    harness::run_module(args(&proxy.url), vec![token.clone()])
        .assert_failed_with("the next run reactivates it with its password");
    assert_eq!(
        s.synapse_user("half-made").unwrap()["deactivated"],
        json!(true)
    );
    let run = harness::run_module(args(&proxy.url), vec![token.clone()]);
    run.assert_changed();
    assert_eq!(
        run.actions(0),
        ["reactivated", "promoted"],
        "{}",
        run.stdout
    );
    assert!(s.can_log_in("half-made", "half-made-pw") && s.is_admin("half-made"));
}

#[test]
fn a_locked_user_cannot_log_in_until_unlocked() {
    let s = synapse();
    let locked = json!({"username": "lockee", "password": "lockee-password", "locked": true});
    let run = s.module(locked.clone());
    assert_eq!(run.assert_changed().actions(0), ["created", "locked"]);
    assert!(s.synapse_flag("lockee", "locked"));
    assert_eq!(
        s.login("lockee", "lockee-password"),
        Err((401, "M_USER_LOCKED".to_string()))
    );
    s.module(locked).assert_unchanged();

    let unlock = json!({"username": "lockee", "locked": false, "_ansible_diff": true});
    let mut check = unlock.clone();
    check["_ansible_check_mode"] = json!(true);
    assert_eq!(s.module(check).assert_changed().actions(0), ["unlocked"]);
    assert!(s.synapse_flag("lockee", "locked"), "check mode unlocked it");

    let run = s.module(unlock.clone());
    assert_eq!(run.assert_changed().actions(0), ["unlocked"]);
    assert_eq!(run.output["diff"][0]["before"]["locked"], json!(true));
    assert_eq!(run.output["diff"][0]["after"]["locked"], json!(false));
    assert!(s.can_log_in("lockee", "lockee-password"));
    s.module(unlock).assert_unchanged();

    // A locked user cannot log in, so update_password: always cannot check
    // its password while the lock is declared; the first run after the
    // unlock does.
    let always = |password: &str, locked: bool| {
        json!({"username": "lockee", "password": password,
               "update_password": "always", "locked": locked})
    };
    let run = s.module(always("lockee-second-password", true));
    assert_eq!(
        run.assert_changed().actions(0),
        ["locked", "password changed"]
    );
    s.module(always("lockee-second-password", true))
        .assert_unchanged();
    s.module(always("lockee-third-password", true))
        .assert_unchanged();
    let run = s.module(always("lockee-third-password", false));
    assert_eq!(run.assert_changed().actions(0), ["unlocked"]);
    let run = s.module(always("lockee-third-password", false));
    assert_eq!(run.assert_changed().actions(0), ["password changed"]);
    assert!(s.can_log_in("lockee", "lockee-third-password"));
    s.module(always("lockee-third-password", false))
        .assert_unchanged();
}

#[test]
fn a_user_locked_by_someone_else_fails_update_password_always_with_the_fix() {
    let s = synapse();
    let declared = json!({"username": "locked-by-hand", "password": "by-hand-password",
                          "update_password": "always"});
    s.module(declared.clone()).assert_changed();
    let path = format!(
        "/_synapse/admin/v2/users/{}",
        encode(&s.user_id("locked-by-hand"))
    );
    let token = s.harness_admin_token().to_string();
    let (status, _) = s.request(
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(json!({"locked": true})),
    );
    assert_eq!(status, 200);

    s.module(declared).assert_failed_with(
        "is locked on the server, so its password cannot be checked: declare locked: false \
         to unlock it, locked: true to keep it locked, or update_password: on_create",
    );
    assert!(s.synapse_flag("locked-by-hand", "locked"), "the lock stays");
    // Declaring the lock keeps it, without a password check.
    s.module(
        json!({"username": "locked-by-hand", "password": "by-hand-password",
                    "update_password": "always", "locked": true}),
    )
    .assert_unchanged();
}

#[test]
fn check_mode_predicts_a_restricted_creation_and_creates_nothing() {
    let s = synapse();
    let run = s.module(json!({
        "username": "restricted-new", "password": "restricted-pw", "locked": true,
        "suspended": true, "shadow_banned": false,
        "_ansible_check_mode": true, "_ansible_diff": true
    }));
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "locked", "suspended"]
    );
    assert_eq!(
        run.output["diff"][0]["after"],
        json!({"exists": true, "admin": false, "deactivated": false, "user_type": "regular",
               "displayname": "restricted-new", "locked": true, "suspended": true, "shadow_banned": false})
    );
    assert!(s.synapse_user("restricted-new").is_none());
}

#[test]
fn suspension_is_set_reported_by_synapse_and_lifted() {
    let s = synapse();
    s.module(json!({"username": "suspendee", "password": "suspendee-pw"}))
        .assert_changed();
    let suspend = json!({"username": "suspendee", "suspended": true, "_ansible_diff": true});
    let mut check = suspend.clone();
    check["_ansible_check_mode"] = json!(true);
    assert_eq!(s.module(check).assert_changed().actions(0), ["suspended"]);
    assert!(
        !s.synapse_flag("suspendee", "suspended"),
        "check mode suspended it"
    );

    let run = s.module(suspend.clone());
    assert_eq!(run.assert_changed().actions(0), ["suspended"]);
    assert_eq!(run.output["diff"][0]["before"]["suspended"], json!(false));
    assert_eq!(run.output["diff"][0]["after"]["suspended"], json!(true));
    assert!(s.synapse_flag("suspendee", "suspended"));
    s.module(suspend).assert_unchanged();

    let lift = json!({"username": "suspendee", "suspended": false});
    assert_eq!(
        s.module(lift.clone()).assert_changed().actions(0),
        ["unsuspended"]
    );
    assert!(!s.synapse_flag("suspendee", "suspended"));
    s.module(lift).assert_unchanged();
}

#[test]
fn a_shadow_banned_users_messages_are_seen_by_nobody_else() {
    let s = synapse();
    let banned = json!({"username": "shadowed", "password": "shadowed-pw", "shadow_banned": true});
    let run = s.module(banned.clone());
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "shadow-banned"]
    );
    assert!(s.synapse_flag("shadowed", "shadow_banned"));
    s.module(banned).assert_unchanged();

    let admin = s.harness_admin_token();
    let (status, room) = s.post(
        "/_matrix/client/v3/createRoom",
        Some(admin),
        json!({"preset": "public_chat"}),
    );
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().unwrap().to_string();
    let token = s.session_token("shadowed", "shadowed-pw");
    let (status, body) = s.post(
        &format!("/_matrix/client/v3/join/{}", encode(&room)),
        Some(&token),
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let say = |text: &str| {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{text}",
            encode(&room)
        );
        let body = json!({"msgtype": "m.text", "body": text});
        let (status, reply) = s.request(reqwest::Method::PUT, &path, Some(&token), Some(body));
        assert_eq!(status, 200, "{reply}");
    };
    say("said-while-shadow-banned");
    assert!(!s
        .message_bodies(&room)
        .contains(&"said-while-shadow-banned".to_string()));

    let lift = json!({"username": "shadowed", "shadow_banned": "no"});
    assert_eq!(
        s.module(lift.clone()).assert_changed().actions(0),
        ["shadow-ban lifted"]
    );
    assert!(!s.synapse_flag("shadowed", "shadow_banned"));
    s.module(lift).assert_unchanged();
    say("said-after-the-ban");
    assert!(s
        .message_bodies(&room)
        .contains(&"said-after-the-ban".to_string()));
    s.post("/_matrix/client/v3/logout", Some(&token), json!({}));
}

/// Enough users for the module to read them with Synapse's user list, which
/// shows `locked` and `shadow_banned` but not `suspended`.
#[test]
fn restrictions_of_many_users_are_read_right_whether_the_list_shows_them_or_not() {
    let s = synapse();
    let users: Vec<_> = (0..25)
        .map(|i| {
            json!({"username": format!("many-restricted-{i}"), "password": "many-pw",
                        "locked": i % 2 == 0, "suspended": i % 3 == 0, "shadow_banned": i % 5 == 0})
        })
        .collect();
    let run = s.module(json!({ "users": users }));
    run.assert_changed();
    assert_eq!(
        run.actions(0),
        ["created", "locked", "suspended", "shadow-banned"]
    );
    assert_eq!(run.actions(1), ["created"]);
    s.module(json!({ "users": users })).assert_unchanged();
    assert!(s.synapse_flag("many-restricted-6", "suspended"));
    assert!(!s.synapse_flag("many-restricted-7", "suspended"));

    let flipped: Vec<_> = (0..25)
        .map(|i| json!({"username": format!("many-restricted-{i}"), "suspended": i % 3 != 0}))
        .collect();
    let run = s.module(json!({ "users": flipped }));
    assert_eq!(run.assert_changed().actions(0), ["unsuspended"]);
    assert_eq!(run.actions(1), ["suspended"]);
    assert!(!s.synapse_flag("many-restricted-6", "suspended"));
    s.module(json!({ "users": flipped })).assert_unchanged();
}

#[test]
fn a_ratelimit_override_is_set_changed_and_removed() {
    let s = synapse();
    s.module(json!({"username": "ratebot", "password": "ratebot-pw"}))
        .assert_changed();
    assert_eq!(s.synapse_ratelimit("ratebot"), json!({}));
    let unlimited = json!({"username": "ratebot", "ratelimit": "unlimited", "_ansible_diff": true});
    let mut check = unlimited.clone();
    check["_ansible_check_mode"] = json!(true);
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["ratelimit set"]);
    assert_eq!(
        run.diff_of(0, "ratelimit"),
        (json!("default"), json!("unlimited"))
    );
    assert_eq!(
        s.synapse_ratelimit("ratebot"),
        json!({}),
        "check mode set the override"
    );

    let run = s.module(unlimited.clone());
    assert_eq!(run.assert_changed().actions(0), ["ratelimit set"]);
    assert_eq!(
        run.diff_of(0, "ratelimit"),
        (json!("default"), json!("unlimited"))
    );
    assert_eq!(
        s.synapse_ratelimit("ratebot"),
        json!({"messages_per_second": 0, "burst_count": 0})
    );
    s.module(unlimited).assert_unchanged();

    let five_ten = json!({"username": "ratebot", "_ansible_diff": true,
                          "ratelimit": {"messages_per_second": 5, "burst_count": 10}});
    let run = s.module(five_ten.clone());
    assert_eq!(run.assert_changed().actions(0), ["ratelimit set"]);
    assert_eq!(
        run.diff_of(0, "ratelimit"),
        (
            json!("unlimited"),
            json!({"messages_per_second": 5, "burst_count": 10})
        )
    );
    assert_eq!(
        s.synapse_ratelimit("ratebot"),
        json!({"messages_per_second": 5, "burst_count": 10})
    );
    s.module(five_ten).assert_unchanged();

    let default = json!({"username": "ratebot", "ratelimit": "default"});
    assert_eq!(
        s.module(default.clone()).assert_changed().actions(0),
        ["ratelimit removed"]
    );
    assert_eq!(s.synapse_ratelimit("ratebot"), json!({}));
    s.module(default).assert_unchanged();
    // Undeclared, the override is neither read nor shown.
    let run = s.module(json!({"username": "ratebot", "_ansible_diff": true}));
    run.assert_unchanged();
    assert!(run.output["diff"][0]["before"].get("ratelimit").is_none());
}

#[test]
fn a_new_user_gets_its_declared_ratelimit_and_check_mode_creates_nothing() {
    let s = synapse();
    let bot = json!({"username": "new-ratebot", "password": "new-ratebot-pw",
                     "ratelimit": {"messages_per_second": 5, "burst_count": 10}});
    let mut check = bot.clone();
    check["_ansible_check_mode"] = json!(true);
    check["_ansible_diff"] = json!(true);
    let run = s.module(check);
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "ratelimit set"]
    );
    assert_eq!(
        run.output["diff"][0]["after"]["ratelimit"],
        json!({"messages_per_second": 5, "burst_count": 10})
    );
    assert!(s.synapse_user("new-ratebot").is_none());

    assert_eq!(
        s.module(bot.clone()).assert_changed().actions(0),
        ["created", "ratelimit set"]
    );
    assert_eq!(
        s.synapse_ratelimit("new-ratebot"),
        json!({"messages_per_second": 5, "burst_count": 10})
    );
    s.module(bot).assert_unchanged();
}

/// Enough users for the module to read them with Synapse's user list, which
/// has no rate-limit override: those declaring one are read alone.
#[test]
fn ratelimits_of_many_users_are_read_although_the_list_lacks_them() {
    let s = synapse();
    let users: Vec<_> = (0..25)
        .map(|i| match i % 2 {
            0 => json!({"username": format!("many-rated-{i}"), "password": "many-pw", "ratelimit": "unlimited"}),
            _ => json!({"username": format!("many-rated-{i}"), "password": "many-pw"}),
        })
        .collect();
    let run = s.module(json!({ "users": users }));
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "ratelimit set"]
    );
    assert_eq!(run.actions(1), ["created"]);
    s.module(json!({ "users": users })).assert_unchanged();
    assert_eq!(
        s.synapse_ratelimit("many-rated-4"),
        json!({"messages_per_second": 0, "burst_count": 0})
    );
    assert_eq!(s.synapse_ratelimit("many-rated-5"), json!({}));
}

/// A bad ratelimit fails naming the field and what is accepted, before any request.
#[test]
fn a_bad_ratelimit_is_refused_by_name_before_anything_is_sent() {
    let s = synapse();
    let bad = |ratelimit: Value| {
        json!({"users": [{"username": "bad-rate-0", "password": "bad-rate-pw"},
                         {"username": "bad-rate-1", "password": "bad-rate-pw"},
                         {"username": "bad-rate-2", "password": "bad-rate-pw"},
                         {"username": "bad-rate-3", "password": "bad-rate-pw", "ratelimit": ratelimit}]})
    };
    s.module(bad(json!("none"))).assert_failed_with(
        "users[3].ratelimit: \"none\" is not accepted; use default (no override), unlimited, \
         or a mapping of messages_per_second and burst_count, each a whole number from 0",
    );
    s.module(bad(json!({"messages_per_second": -1, "burst_count": 0})))
        .assert_failed_with("users[3].ratelimit.messages_per_second: \"-1\" is not accepted; use a whole number from 0");
    s.module(bad(json!({"messages_per_second": 1, "burst_count": 1, "burst": 2})))
        .assert_failed_with("users[3].ratelimit.burst: unsupported parameter; valid parameters are: messages_per_second, burst_count");
    let mut unreachable = bad(json!("fast"));
    // Nothing listens there: only a refusal before any request gets this far.
    unreachable["homeserver_url"] = json!("http://127.0.0.1:9");
    s.module(unreachable)
        .assert_failed_with("users[3].ratelimit: \"fast\" is not accepted");
    for i in 0..4 {
        assert!(s.synapse_user(&format!("bad-rate-{i}")).is_none());
    }
}

fn github(id: &str) -> Value {
    json!({"auth_provider": "oidc-github", "external_id": id})
}

#[test]
fn external_ids_are_set_changed_and_removed_and_found_by_synapses_lookup() {
    let s = synapse();
    s.module(json!({"username": "sso-user", "password": "sso-user-pw"}))
        .assert_changed();
    let me = Some(s.user_id("sso-user"));
    let declared =
        |ids: Value| json!({"username": "sso-user", "external_ids": ids, "_ansible_diff": true});

    let mut check = declared(json!([github("1001")]));
    check["_ansible_check_mode"] = json!(true);
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["external_ids changed"]);
    assert_eq!(
        run.diff_of(0, "external_ids"),
        (json!([]), json!([github("1001")]))
    );
    assert_eq!(
        s.synapse_user_by_external_id("oidc-github", "1001"),
        None,
        "check mode bound it"
    );

    let run = s.module(declared(json!([github("1001")])));
    assert_eq!(run.assert_changed().actions(0), ["external_ids changed"]);
    assert_eq!(s.synapse_user_by_external_id("oidc-github", "1001"), me);
    s.module(declared(json!([github("1001")])))
        .assert_unchanged();

    let two = json!([{"auth_provider": "saml", "external_id": "sso user/7"}, github("1002")]);
    let run = s.module(declared(two.clone()));
    assert_eq!(run.assert_changed().actions(0), ["external_ids changed"]);
    assert_eq!(
        run.diff_of(0, "external_ids"),
        (json!([github("1001")]), two.clone())
    );
    assert_eq!(s.synapse_user_by_external_id("oidc-github", "1001"), None);
    assert_eq!(s.synapse_user_by_external_id("oidc-github", "1002"), me);
    assert_eq!(s.synapse_user_by_external_id("saml", "sso user/7"), me);
    // The same set in another order is no change.
    let reordered = json!([two[1], two[0]]);
    s.module(declared(reordered)).assert_unchanged();

    let run = s.module(declared(json!([])));
    assert_eq!(run.assert_changed().actions(0), ["external_ids changed"]);
    assert_eq!(s.synapse_user_by_external_id("oidc-github", "1002"), None);
    assert_eq!(s.synapse_user_by_external_id("saml", "sso user/7"), None);
    s.module(declared(json!([]))).assert_unchanged();
    // Undeclared, they are neither compared nor shown.
    let run = s.module(json!({"username": "sso-user", "_ansible_diff": true}));
    run.assert_unchanged();
    assert!(run.output["diff"][0]["before"]
        .get("external_ids")
        .is_none());
}

#[test]
fn emails_are_set_changed_and_removed_exactly_and_found_by_synapses_lookup() {
    let s = synapse();
    s.module(json!({"username": "mail-user", "password": "mail-user-pw"}))
        .assert_changed();
    // A phone number is no e-mail address: declaring emails leaves it.
    s.put_synapse_user(
        "mail-user",
        json!({"threepids": [{"medium": "msisdn", "address": "15550001111"}]}),
    );
    let me = Some(s.user_id("mail-user"));
    let declared =
        |emails: Value| json!({"username": "mail-user", "emails": emails, "_ansible_diff": true});

    let mut check = declared(json!(["Mail.User@Example.COM"]));
    check["_ansible_check_mode"] = json!(true);
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["emails changed"]);
    assert_eq!(
        run.diff_of(0, "emails"),
        (json!([]), json!(["mail.user@example.com"]))
    );
    assert_eq!(
        s.synapse_user_by_email("mail.user@example.com"),
        None,
        "check mode added it"
    );

    let run = s.module(declared(json!(["Mail.User@Example.COM"])));
    assert_eq!(run.assert_changed().actions(0), ["emails changed"]);
    assert_eq!(s.synapse_user_by_email("mail.user@example.com"), me);
    // Synapse ignores the case of an address's letters, and so does the comparison.
    s.module(declared(json!(["mail.user@EXAMPLE.com"])))
        .assert_unchanged();

    let two = json!(["second@example.com", "mail.user@example.com"]);
    let run = s.module(declared(two.clone()));
    assert_eq!(run.assert_changed().actions(0), ["emails changed"]);
    assert_eq!(
        run.diff_of(0, "emails"),
        (json!(["mail.user@example.com"]), two.clone())
    );
    assert_eq!(s.synapse_user_by_email("second@example.com"), me);
    s.module(declared(two)).assert_unchanged();

    let run = s.module(declared(json!(["third@example.com"])));
    assert_eq!(run.assert_changed().actions(0), ["emails changed"]);
    assert_eq!(s.synapse_user_by_email("mail.user@example.com"), None);
    assert_eq!(s.synapse_user_by_email("second@example.com"), None);
    assert_eq!(s.synapse_user_by_email("third@example.com"), me);

    let run = s.module(declared(json!([])));
    assert_eq!(run.assert_changed().actions(0), ["emails changed"]);
    assert_eq!(s.synapse_user_by_email("third@example.com"), None);
    s.module(declared(json!([]))).assert_unchanged();
    let threepids = &s.synapse_user("mail-user").unwrap()["threepids"];
    assert_eq!(threepids.as_array().unwrap().len(), 1, "{threepids}");
    assert_eq!(threepids[0]["address"], "15550001111");
}

#[test]
fn a_new_user_gets_its_emails_and_external_ids_and_check_mode_creates_nothing() {
    let s = synapse();
    let user = json!({"username": "new-sso", "password": "new-sso-pw",
                      "emails": ["new-sso@example.com"], "external_ids": [github("2001")]});
    let mut check = user.clone();
    check["_ansible_check_mode"] = json!(true);
    check["_ansible_diff"] = json!(true);
    let run = s.module(check);
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "emails changed", "external_ids changed"]
    );
    assert_eq!(run.diff_of(0, "emails").1, json!(["new-sso@example.com"]));
    assert_eq!(run.diff_of(0, "external_ids").1, json!([github("2001")]));
    assert!(s.synapse_user("new-sso").is_none());

    assert_eq!(
        s.module(user.clone()).assert_changed().actions(0),
        ["created", "emails changed", "external_ids changed"]
    );
    let me = Some(s.user_id("new-sso"));
    assert_eq!(s.synapse_user_by_email("new-sso@example.com"), me);
    assert_eq!(s.synapse_user_by_external_id("oidc-github", "2001"), me);
    s.module(user).assert_unchanged();
}

/// Enough users for the module to read them with Synapse's user list, which
/// has neither threepids nor external IDs: those declaring them are read alone.
#[test]
fn emails_and_external_ids_of_many_users_are_read_although_the_list_lacks_them() {
    let s = synapse();
    let users: Vec<_> = (0..25)
        .map(|i| match i % 2 {
            0 => json!({"username": format!("many-sso-{i}"), "password": "many-pw",
                        "emails": [format!("many-sso-{i}@example.com")],
                        "external_ids": [github(&format!("many-{i}"))]}),
            _ => json!({"username": format!("many-sso-{i}"), "password": "many-pw"}),
        })
        .collect();
    let run = s.module(json!({ "users": users }));
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "emails changed", "external_ids changed"]
    );
    assert_eq!(run.actions(1), ["created"]);
    s.module(json!({ "users": users })).assert_unchanged();
    assert_eq!(
        s.synapse_user_by_external_id("oidc-github", "many-4"),
        Some(s.user_id("many-sso-4"))
    );
}

/// Synapse would move an address to the declared user silently and refuse
/// an identity with a bare 409: the module names both and takes neither.
#[test]
fn an_address_or_identity_of_another_user_is_not_taken_from_it() {
    let s = synapse();
    s.module(json!({"users": [
        {"username": "holder", "password": "holder-pw",
         "emails": ["held@example.com"], "external_ids": [github("held")]},
        {"username": "taker", "password": "taker-pw"}]}))
        .assert_changed();
    let holder = s.user_id("holder");
    let mut check = json!({"username": "taker", "emails": ["held@example.com"],
                           "external_ids": [github("held")], "_ansible_check_mode": true});
    s.module(check.clone()).assert_failed_with(&format!(
        "the e-mail address held@example.com belongs to {holder}"
    ));
    check["emails"] = json!([]);
    s.module(check).assert_failed_with(&format!(
        "the SSO identity held at oidc-github belongs to {holder}"
    ));
    s.module(json!({"username": "taker", "emails": ["Held@example.com"]}))
        .assert_failed_with(&format!(
            "{}: the e-mail address held@example.com belongs to {holder}; matrix_user does not take it from another account",
            s.user_id("taker")
        ));
    s.module(json!({"username": "taker", "external_ids": [github("held")]}))
        .assert_failed_with(&format!(
            "the SSO identity held at oidc-github belongs to {holder}"
        ));
    // A new user is refused before it is created.
    s.module(json!({"username": "new-taker", "password": "new-taker-pw",
                    "emails": ["held@example.com"]}))
        .assert_failed_with(&format!(
            "the e-mail address held@example.com belongs to {holder}"
        ));
    assert!(s.synapse_user("new-taker").is_none());
    assert_eq!(
        s.synapse_user_by_email("held@example.com"),
        Some(holder.clone())
    );
    assert_eq!(
        s.synapse_user_by_external_id("oidc-github", "held"),
        Some(holder)
    );
}

/// Synapse keeps an address with its local part case folded (Python's
/// `str.casefold` in `canonicalise_email`), which turns a capital sigma into
/// σ wherever it stands, where a lowercasing turns a word-final one into ς.
#[test]
fn addresses_are_folded_as_synapse_folds_them() {
    let s = synapse();
    let nikos =
        json!({"username": "nikos", "password": "nikos-pw", "emails": ["ΝΙΚΟΣ@Example.GR"]});
    assert_eq!(
        s.module(nikos.clone()).assert_changed().actions(0),
        ["created", "emails changed"]
    );
    assert_eq!(
        s.synapse_user_by_email("νικοσ@example.gr"),
        Some(s.user_id("nikos"))
    );
    s.module(nikos).assert_unchanged();
    s.module(json!({"username": "nikos", "emails": ["νικος@example.gr"]}))
        .assert_unchanged();

    // Set through Synapse's own API, which folds it.
    s.module(json!({"username": "odysseas", "password": "odysseas-pw"}))
        .assert_changed();
    s.put_synapse_user(
        "odysseas",
        json!({"threepids": [{"medium": "email", "address": "ΟΔΥΣΣΕΑΣ@example.gr"}]}),
    );
    let holder = s.user_id("odysseas");
    assert_eq!(
        s.synapse_user_by_email("οδυσσεασ@example.gr"),
        Some(holder.clone())
    );
    let taker = json!({"username": "odysseas-taker", "password": "taker-pw",
                       "emails": ["ΟΔΥΣΣΕΑΣ@example.gr"]});
    let taken = format!("the e-mail address οδυσσεασ@example.gr belongs to {holder}");
    s.module(check_mode(taker.clone()))
        .assert_failed_with(&taken);
    let run = s.module(taker);
    run.assert_failed_with(&taken);
    assert_eq!(run.actions(0), Vec::<String>::new());
    assert!(s.synapse_user("odysseas-taker").is_none());
    assert_eq!(s.synapse_user_by_email("οδυσσεασ@example.gr"), Some(holder));
    // ß folds to ss: declared either way, it is one address.
    let strasse =
        json!({"username": "odysseas", "emails": ["ΟΔΥΣΣΕΑΣ@example.gr", "Straße@example.de"]});
    s.module(strasse).assert_changed();
    assert_eq!(
        s.synapse_user_by_email("strasse@example.de"),
        Some(s.user_id("odysseas"))
    );
    s.module(
        json!({"username": "odysseas", "emails": ["οδυσσεας@example.gr", "STRASSE@example.de"]}),
    )
    .assert_unchanged();
}

/// Two users declaring one address (as Synapse folds it) would both be
/// reported fine while only one holds it: refused before anything is sent.
#[test]
fn one_address_declared_for_two_users_is_refused_before_anything_is_sent() {
    let s = synapse();
    let args = json!({"concurrency": 2, "users": [
        {"username": "twin-0", "password": "twin-pw", "emails": ["twin-0@example.com", "Twin@Example.com"]},
        {"username": "twin-1", "password": "twin-pw", "emails": ["twin@example.com"]}]});
    s.module(args).assert_failed_with(
        "users[1].emails[0]: \"twin@example.com\" is not accepted; use each address for one user only: users[0].emails[1] declares it too",
    );
    let greek = json!({"users": [
        {"username": "twin-0", "password": "twin-pw", "emails": ["ΣΑΣ@example.gr"]},
        {"username": "twin-1", "password": "twin-pw", "emails": ["σας@example.gr"]}]});
    s.module(greek)
        .assert_failed_with("users[1].emails[0]: \"σας@example.gr\" is not accepted");
    for i in 0..2 {
        assert!(s.synapse_user(&format!("twin-{i}")).is_none());
    }
}

/// What landed before a user's failure is listed, a creation first of all;
/// an identity another account holds fails a new user before it is created.
#[test]
fn a_creation_that_landed_is_listed_when_a_later_step_fails() {
    let s = synapse();
    let patio = s.create_room("public_chat", "landing-patio");
    let run = s.module(json!({"username": "landed-guest", "password": "landed-pw",
                              "rooms": ["#landing-patio:localhost", "#nowhere-landing:localhost"]}));
    run.assert_failed_with("#nowhere-landing:localhost cannot be joined");
    assert_eq!(run.actions(0), ["created"]);
    assert!(s.room_members(&patio).contains(&s.user_id("landed-guest")));

    s.module(json!({"username": "sso-holder", "password": "holder-pw",
                    "external_ids": [github("landing")]}))
        .assert_changed();
    let taker = json!({"username": "sso-taker", "password": "taker-pw",
                       "external_ids": [github("landing")]});
    let taken = format!(
        "the SSO identity landing at oidc-github belongs to {}",
        s.user_id("sso-holder")
    );
    s.module(check_mode(taker.clone()))
        .assert_failed_with(&taken);
    let run = s.module(taker);
    run.assert_failed_with(&taken);
    assert_eq!(run.actions(0), Vec::<String>::new());
    assert!(s.synapse_user("sso-taker").is_none());
}

/// Among enough users to be read with Synapse's user list, a new user
/// whose identity another account holds is still refused before it is
/// created.
#[test]
fn a_new_user_among_many_is_refused_a_held_identity_before_it_is_created() {
    let s = synapse();
    s.module(json!({"username": "bulk-holder", "password": "holder-pw",
                    "external_ids": [github("bulk-held")]}))
        .assert_changed();
    let mut users: Vec<Value> = (0..20)
        .map(|i| json!({"username": format!("bulk-new-{i}"), "password": "bulk-pw"}))
        .collect();
    users[7]["external_ids"] = json!([github("bulk-held")]);
    let run = s.module(json!({ "users": users }));
    run.assert_failed_with(&format!(
        "the SSO identity bulk-held at oidc-github belongs to {}",
        s.user_id("bulk-holder")
    ));
    assert_eq!(run.actions(7), Vec::<String>::new());
    assert!(s.synapse_user("bulk-new-7").is_none());
    assert_eq!(run.actions(8), ["created"]);
}

fn check_mode(mut args: Value) -> Value {
    args["_ansible_check_mode"] = json!(true);
    args
}

/// Bad emails and external_ids fail naming the field, before any request.
#[test]
fn bad_emails_and_external_ids_are_refused_by_name_before_anything_is_sent() {
    let s = synapse();
    let bad = |field: &str, value: Value| {
        json!({"users": [{"username": "bad-ids-0", "password": "bad-ids-pw"},
                         {"username": "bad-ids-1", "password": "bad-ids-pw", field: value}]})
    };
    s.module(bad("emails", json!(["ok@example.com", "not an address"])))
        .assert_failed_with(
            "users[1].emails[1]: \"not an address\" is not accepted; use an e-mail address",
        );
    s.module(bad("emails", json!("one@example.com")))
        .assert_failed_with("users[1].emails: expected a list of e-mail addresses");
    s.module(bad("emails", json!(["A@example.com", "a@EXAMPLE.com"])))
        .assert_failed_with(
            "users[1].emails[1]: \"a@EXAMPLE.com\" is not accepted; use each address once",
        );
    s.module(bad(
        "external_ids",
        json!([{"auth_provider": "oidc-github"}]),
    ))
    .assert_failed_with("users[1].external_ids[0].external_id: give a non-empty external_id");
    s.module(bad(
        "external_ids",
        json!([{"provider": "x", "external_id": "1"}]),
    ))
    .assert_failed_with("users[1].external_ids[0].provider: unsupported parameter");
    // Nothing listens there: only a refusal before any request gets this far.
    let mut unreachable = bad("emails", json!(["@example.com"]));
    unreachable["homeserver_url"] = json!("http://127.0.0.1:9");
    s.module(unreachable)
        .assert_failed_with("users[1].emails[0]: \"@example.com\" is not accepted");
    for i in 0..2 {
        assert!(s.synapse_user(&format!("bad-ids-{i}")).is_none());
    }
}

/// A type of the server's user_types.extra_user_types (`bridge` on the test
/// Synapse) is set on creation and on an existing user, kept, and shown;
/// one the server does not know is refused naming the field and the type,
/// and leaves nothing behind, whichever way the user would be created.
#[test]
fn an_extra_user_type_is_set_and_kept_and_an_unknown_one_is_refused_by_name() {
    let s = synapse();
    let bridge = json!({"username": "bridged", "password": "bridged-pw", "user_type": "bridge"});
    assert_eq!(
        s.module(bridge.clone()).assert_changed().actions(0),
        ["created"]
    );
    assert_eq!(s.synapse_user("bridged").unwrap()["user_type"], "bridge");
    s.module(bridge.clone()).assert_unchanged();

    s.module(json!({"username": "bridged", "user_type": "regular"}))
        .assert_changed();
    assert_eq!(s.synapse_user("bridged").unwrap()["user_type"], json!(null));
    let back = json!({"username": "bridged", "user_type": "bridge", "_ansible_diff": true});
    let mut check = back.clone();
    check["_ansible_check_mode"] = json!(true);
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["user type changed"]);
    assert_eq!(
        run.diff_of(0, "user_type"),
        (json!("regular"), json!("bridge"))
    );
    assert_eq!(s.synapse_user("bridged").unwrap()["user_type"], json!(null));
    let run = s.module(back.clone());
    assert_eq!(run.assert_changed().actions(0), ["user type changed"]);
    assert_eq!(s.synapse_user("bridged").unwrap()["user_type"], "bridge");
    s.module(back).assert_unchanged();

    let refused = "user_type: Synapse does not know the user type \"smuggler\" (";
    let advice =
        "the homeserver answered 400 M_UNKNOWN: Invalid user type); declare regular, bot, \
                  support, or a type listed in its user_types.extra_user_types";
    s.module(json!({"username": "bridged", "user_type": "smuggler"}))
        .assert_failed_with(&format!("{refused}updating @bridged:localhost: {advice}"));
    assert_eq!(s.synapse_user("bridged").unwrap()["user_type"], "bridge");
    s.module(json!({"users": [{"username": "bridged"},
                              {"username": "smuggled", "password": "smuggled-pw", "user_type": "smuggler"}]}))
        .assert_failed_with(&format!("users[1].{refused}registering smuggled: {advice}"));
    assert!(s.synapse_user("smuggled").is_none());
    // Without the shared secret, the admin API creates: still nothing is left.
    let token = s.harness_admin_token().to_string();
    harness::run_module(
        json!({"homeserver_url": s.url, "admin_token": token, "username": "smuggled",
               "password": "smuggled-pw", "user_type": "smuggler"}),
        vec![token],
    )
    .assert_failed_with(&format!("{refused}creating @smuggled:localhost: {advice}"));
    assert!(s.synapse_user("smuggled").is_none());
}

/// Rooms are joined through Synapse's admin join API, named by alias or by
/// ID, each only once; proved by the room's own member list.
#[test]
fn declared_rooms_are_joined_by_alias_and_id_and_a_rerun_changes_nothing() {
    let s = synapse();
    let lobby = s.create_room("public_chat", "lobby");
    let hall = s.create_room("public_chat", "");
    let joiner = s.user_id("joiner");
    s.module(json!({"username": "joiner", "password": "joiner-pw"}))
        .assert_changed();
    let rooms =
        json!({"username": "joiner", "rooms": ["#lobby:localhost", hall], "_ansible_diff": true});
    let mut check = rooms.clone();
    check["_ansible_check_mode"] = json!(true);
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["rooms joined"]);
    assert_eq!(
        run.diff_of(0, "rooms"),
        (json!([]), json!(["#lobby:localhost", hall]))
    );
    assert!(
        !s.room_members(&lobby).contains(&joiner),
        "check mode joined"
    );
    assert!(
        !s.room_members(&hall).contains(&joiner),
        "check mode joined"
    );

    let run = s.module(rooms.clone());
    assert_eq!(run.assert_changed().actions(0), ["rooms joined"]);
    assert!(s.room_members(&lobby).contains(&joiner));
    assert!(s.room_members(&hall).contains(&joiner));
    let run = s.module(rooms);
    run.assert_unchanged();
    assert_eq!(
        run.diff_of(0, "rooms"),
        (
            json!(["#lobby:localhost", hall]),
            json!(["#lobby:localhost", hall])
        )
    );
    // The lobby by its ID is the room already joined; the hall, left out, is not left.
    s.module(json!({"username": "joiner", "rooms": [lobby]}))
        .assert_unchanged();
    assert!(s.room_members(&hall).contains(&joiner));
    // Undeclared, membership is neither read nor shown.
    let run = s.module(json!({"username": "joiner", "_ansible_diff": true}));
    assert!(run.assert_unchanged().output["diff"][0]["before"]
        .get("rooms")
        .is_none());
}

#[test]
fn a_new_user_joins_its_rooms_after_creation_and_check_mode_creates_nothing() {
    let s = synapse();
    let foyer = s.create_room("public_chat", "foyer");
    let user =
        json!({"username": "newcomer", "password": "newcomer-pw", "rooms": ["#foyer:localhost"]});
    let mut check = user.clone();
    check["_ansible_check_mode"] = json!(true);
    check["_ansible_diff"] = json!(true);
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["created", "rooms joined"]);
    assert_eq!(run.diff_of(0, "rooms").1, json!(["#foyer:localhost"]));
    assert!(s.synapse_user("newcomer").is_none());

    let run = s.module(user.clone());
    assert_eq!(run.assert_changed().actions(0), ["created", "rooms joined"]);
    assert!(s.room_members(&foyer).contains(&s.user_id("newcomer")));
    s.module(user).assert_unchanged();
}

/// Synapse joins a user to a room that is not public by inviting it as the
/// module's own admin account, which must be in the room: the service
/// account is not, so the join fails naming the room and why; with the
/// token of the room's creator, it works.
#[test]
fn a_private_room_is_joined_only_through_an_admin_in_it() {
    let s = synapse();
    let backstage = s.create_room("private_chat", "backstage");
    let crew = s.user_id("crew");
    let user =
        json!({"username": "crew", "password": "crew-pw", "rooms": ["#backstage:localhost"]});
    s.module(user.clone()).assert_failed_with(
        "rooms: #backstage:localhost cannot be joined: joining @crew:localhost: the homeserver \
         answered 403 M_FORBIDDEN: ",
    );
    let run = s.module(user.clone());
    let message = run.msg();
    assert!(
        message.contains("(Synapse joins a user to a room that is not public by inviting it as the account matrix_user acts as"),
        "{message}"
    );
    assert!(!s.room_members(&backstage).contains(&crew));

    let token = s.harness_admin_token().to_string();
    let by_creator = json!({"homeserver_url": s.url, "admin_token": token,
                            "username": "crew", "rooms": ["#backstage:localhost"]});
    let run = harness::run_module(by_creator.clone(), vec![token.clone()]);
    assert_eq!(run.assert_changed().actions(0), ["rooms joined"]);
    assert!(s.room_members(&backstage).contains(&crew));
    harness::run_module(by_creator, vec![token]).assert_unchanged();
    s.module(user).assert_unchanged();
}

/// A room that cannot be joined fails its user, naming the room and the
/// server's reason; the other users are reconciled; bad names are refused
/// before anything is sent.
#[test]
fn a_room_that_cannot_be_joined_fails_its_user_with_the_reason() {
    let s = synapse();
    let patio = s.create_room("public_chat", "patio");
    let users = json!({"users": [
        {"username": "patio-guest", "password": "patio-pw", "rooms": ["#patio:localhost"]},
        {"username": "lost-guest", "password": "lost-pw", "rooms": ["#patio:localhost", "#nowhere:localhost"]},
    ]});
    // Created and joined to the patio; then the alias names no room.
    let run = s.module(users.clone());
    run.assert_failed_with(
        "1 of 2 users failed: @lost-guest:localhost: users[1].rooms: #nowhere:localhost cannot be \
         joined: joining @lost-guest:localhost: the homeserver answered 404 M_NOT_FOUND: Room alias \
         #nowhere:localhost not found",
    );
    assert_eq!(run.output["users"][1]["changed"], json!(true));
    assert_eq!(run.actions(0), ["created", "rooms joined"]);
    assert!(s.room_members(&patio).contains(&s.user_id("patio-guest")));
    assert!(s.room_members(&patio).contains(&s.user_id("lost-guest")));
    // Found at the read now, so check mode tells it too.
    let mut check = users.clone();
    check["_ansible_check_mode"] = json!(true);
    for args in [users, check] {
        let run = s.module(args);
        run.assert_failed_with(
            "1 of 2 users failed: @lost-guest:localhost: users[1].rooms: #nowhere:localhost cannot be \
             joined: looking up the room alias #nowhere:localhost: the homeserver answered 404 \
             M_NOT_FOUND: Room alias #nowhere:localhost not found",
        );
        assert_eq!(run.output["changed"], json!(false));
    }

    // A room ID the server does not know is found when its members are read.
    let unknown =
        json!({"username": "patio-guest", "rooms": ["!unknown:localhost", "#patio:localhost"]});
    let mut check = unknown.clone();
    check["_ansible_check_mode"] = json!(true);
    for args in [unknown, check] {
        s.module(args).assert_failed_with(
            "rooms: !unknown:localhost cannot be joined: reading the members of !unknown:localhost: \
             the homeserver answered 404 M_NOT_FOUND: Room not found",
        );
    }

    let mut refused = json!({"homeserver_url": "http://127.0.0.1:9", "username": "patio-guest"});
    refused["rooms"] = json!(["patio"]);
    // Nothing listens there: only a refusal before any request gets this far.
    s.module(refused.clone()).assert_failed_with(
        "rooms[0]: \"patio\" is not accepted; use a room alias like #room:example.com",
    );
    refused["rooms"] = json!(["#patio:localhost"]);
    refused["state"] = json!("absent");
    s.module(refused)
        .assert_failed_with("rooms and state: absent are mutually exclusive");
}

/// Enough users for the module to read them with Synapse's user list, which
/// has no room membership: those declaring rooms are read alone.
#[test]
fn rooms_of_many_users_are_read_although_the_list_lacks_them() {
    let s = synapse();
    let atrium = s.create_room("public_chat", "atrium");
    let users: Vec<_> = (0..25)
        .map(|i| match i % 2 {
            0 => json!({"username": format!("many-joined-{i}"), "password": "many-pw", "rooms": ["#atrium:localhost"]}),
            _ => json!({"username": format!("many-joined-{i}"), "password": "many-pw"}),
        })
        .collect();
    let run = s.module(json!({ "users": users }));
    assert_eq!(run.assert_changed().actions(0), ["created", "rooms joined"]);
    assert_eq!(run.actions(1), ["created"]);
    s.module(json!({ "users": users })).assert_unchanged();
    let members = s.room_members(&atrium);
    assert!(members.contains(&s.user_id("many-joined-4")));
    assert!(!members.contains(&s.user_id("many-joined-5")));
}

/// Synapse lets no suspended user join a room: a user declared suspended
/// and in rooms joins them before it is suspended, and one whose suspension
/// is lifted joins after.
#[test]
fn a_user_suspended_in_the_same_run_joins_its_rooms_first() {
    let s = synapse();
    let quiet = s.create_room("public_chat", "quiet");
    let loud = s.create_room("public_chat", "loud");
    let user = json!({"username": "hushed", "password": "hushed-pw", "suspended": true,
                      "rooms": ["#quiet:localhost"]});
    let run = s.module(user.clone());
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "suspended", "rooms joined"]
    );
    assert!(s.synapse_flag("hushed", "suspended"));
    assert!(s.room_members(&quiet).contains(&s.user_id("hushed")));
    s.module(user).assert_unchanged();

    let lifted = json!({"username": "hushed", "suspended": false, "rooms": ["#quiet:localhost", "#loud:localhost"]});
    assert_eq!(
        s.module(lifted).assert_changed().actions(0),
        ["unsuspended", "rooms joined"]
    );
    assert!(s.room_members(&loud).contains(&s.user_id("hushed")));
    // Still suspended, the user cannot join: Synapse's own reason, without the advice for private rooms.
    let run = s.module(json!({"username": "hushed", "suspended": true}));
    assert_eq!(run.assert_changed().actions(0), ["suspended"]);
    let hall = s.create_room("public_chat", "hushed-hall");
    let run = s.module(json!({"username": "hushed", "rooms": [hall]}));
    assert!(!run.msg().contains("not public"), "{}", run.msg());
    run.assert_failed_with(&format!(
        "rooms: {hall} cannot be joined: joining @hushed:localhost: the homeserver answered 403 \
         M_USER_SUSPENDED: Joining rooms while account is suspended is not allowed."
    ));
}

/// Rooms, e-mail addresses and SSO identities together: a new suspended user
/// gets all three in one run (joined before its suspension), and a re-run,
/// which must read it alone for each of them, changes nothing.
#[test]
fn a_new_suspended_user_gets_its_rooms_emails_and_external_ids_in_one_run() {
    let s = synapse();
    let room = s.create_room("public_chat", "all-at-once");
    let user = json!({"username": "all-at-once", "password": "all-at-once-pw", "suspended": true,
                      "rooms": ["#all-at-once:localhost"], "emails": ["all-at-once@example.com"],
                      "external_ids": [github("3001")]});
    assert_eq!(
        s.module(user.clone()).assert_changed().actions(0),
        [
            "created",
            "suspended",
            "emails changed",
            "external_ids changed",
            "rooms joined"
        ]
    );
    let me = Some(s.user_id("all-at-once"));
    assert!(s.synapse_flag("all-at-once", "suspended"));
    assert!(s.room_members(&room).contains(&s.user_id("all-at-once")));
    assert_eq!(s.synapse_user_by_email("all-at-once@example.com"), me);
    assert_eq!(s.synapse_user_by_external_id("oidc-github", "3001"), me);
    s.module(user).assert_unchanged();
}

// ---- undeclared: each test has a Synapse of its own, since it locks or
// deactivates every account it does not declare ----

/// Registers `localpart` through the application service of a server started
/// with `--appservice-and-notices`, as a bridge registers its puppets.
fn register_appservice_user(s: &Server, localpart: &str) {
    let token = s.info["appservice_token"].as_str().unwrap();
    let (status, body) = s.post(
        "/_matrix/client/v3/register",
        Some(token),
        json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true}),
    );
    assert_eq!(status, 200, "registering {localpart}: {body}");
}

#[test]
fn undeclared_lock_then_deactivate_spares_the_declared_the_service_account_appservices_and_the_ignored(
) {
    let s = Server::start("synapse", &["--appservice-and-notices"]);
    let everyone = json!({"users": [
        {"username": "kept", "password": "kept-password"},
        {"username": "eve", "password": "eve-password"},
        {"username": "mallory", "password": "mallory-password"},
        {"username": "bot-1", "password": "bot-1-password"},
    ]});
    s.module(everyone).assert_changed();
    register_appservice_user(&s, "_bridge_puppet");
    // The harness's admin, which the checks below use, is spared by name;
    // a server notice makes Synapse act as its notices user.
    let (status, body) = s.post(
        "/_synapse/admin/v1/send_server_notice",
        Some(s.harness_admin_token()),
        json!({"user_id": s.user_id("kept"), "content": {"msgtype": "m.text", "body": "hello"}}),
    );
    assert_eq!(status, 200, "server notice: {body}");
    let lock = json!({"users": [{"username": "kept"}], "undeclared": "lock",
        "undeclared_ignore": ["harness", "bot-[0-9]+"]});
    let locked = |localpart: &str| s.synapse_flag(localpart, "locked");

    let mut check = lock.clone();
    check["_ansible_check_mode"] = json!(true);
    check["_ansible_diff"] = json!(true);
    let predicted = s.module(check);
    predicted.assert_changed();
    assert_eq!(
        predicted.undeclared(),
        ["@eve:localhost", "@mallory:localhost"]
    );
    assert_eq!(predicted.actions(1), ["locked"]);
    assert_eq!(predicted.diff_of(1, "locked"), (json!(false), json!(true)));
    assert!(
        !locked("eve") && !locked("mallory"),
        "check mode locked someone"
    );

    let run = s.module(lock.clone());
    run.assert_changed();
    assert_eq!(run.undeclared(), ["@eve:localhost", "@mallory:localhost"]);
    assert_eq!(run.actions(0), Vec::<String>::new());
    for (user, password) in [("eve", "eve-password"), ("mallory", "mallory-password")] {
        assert_eq!(
            s.login(user, password).map(|_| ()),
            Err((401, "M_USER_LOCKED".to_string()))
        );
    }
    assert!(s.can_log_in("kept", "kept-password"));
    assert!(s.can_log_in("bot-1", "bot-1-password"));
    for spared in [
        "kept",
        "bot-1",
        "_bridge_puppet",
        "harness",
        "matrix-user-service",
    ] {
        assert!(!locked(spared), "{spared} was locked");
    }

    let again = s.module(lock);
    again.assert_unchanged();
    assert_eq!(again.undeclared(), Vec::<String>::new());

    // Deactivating takes the locked accounts too, and a new undeclared one.
    s.module(json!({"username": "trudy", "password": "trudy-password"}))
        .assert_changed();
    let deactivate = json!({"users": [{"username": "kept"}], "undeclared": "deactivate",
        "undeclared_ignore": ["harness", "bot-[0-9]+"]});
    let run = s.module(deactivate.clone());
    run.assert_changed();
    assert_eq!(
        run.undeclared(),
        ["@eve:localhost", "@mallory:localhost", "@trudy:localhost"]
    );
    assert_eq!(run.actions(1), ["deactivated"]);
    for gone in ["eve", "mallory", "trudy"] {
        assert_eq!(s.synapse_user(gone).unwrap()["deactivated"], json!(true));
    }
    for spared in [
        "kept",
        "bot-1",
        "_bridge_puppet",
        "harness",
        "matrix-user-service",
    ] {
        assert_eq!(
            s.synapse_user(spared).unwrap()["deactivated"],
            json!(false),
            "{spared} was deactivated"
        );
    }
    s.module(deactivate).assert_unchanged();
}

#[test]
fn undeclared_beyond_undeclared_max_fails_before_any_change_and_a_raised_limit_works() {
    let s = Server::start("synapse", &[]);
    // Registers the service account, which the admin_token runs below spare by name.
    s.module(json!({"users": []})).assert_unchanged();
    for user in ["one", "two", "three"] {
        s.module(json!({"username": user, "password": format!("{user}-password")}))
            .assert_changed();
    }
    // Acting as the harness's admin, which is spared as the account the module acts as.
    let token = s.harness_admin_token().to_string();
    let lock = |max: u64| {
        json!({"admin_token": token, "users": [{"username": "newcomer", "password": "newcomer-pw"}],
            "undeclared": "lock", "undeclared_max": max})
    };
    let refused = s.module(lock(2));
    refused.assert_failed_with("raise undeclared_max to 3");
    assert!(
        refused.msg().starts_with(
            "undeclared: lock would lock 3 users nobody declared, more than undeclared_max (2); nothing was changed"
        ),
        "{}",
        refused.msg()
    );
    assert!(
        s.synapse_user("newcomer").is_none(),
        "the declared user was created"
    );
    for user in ["one", "two", "three"] {
        assert!(!s.synapse_flag(user, "locked"), "{user} was locked");
    }

    let run = s.module(lock(3));
    run.assert_changed();
    assert_eq!(
        run.undeclared(),
        ["@one:localhost", "@three:localhost", "@two:localhost"]
    );
    assert!(s.synapse_flag("three", "locked"));
    assert!(!s.synapse_flag("harness", "locked"));
    assert!(!s.synapse_flag("matrix-user-service", "locked"));
    s.module(lock(0)).assert_unchanged();
}

/// Two valid 1x1 PNGs (red, blue) of the same length, so that only their
/// bytes tell them apart.
const RED_PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";
const BLUE_PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\x60\x60\xf8\x0f\x00\x01\x03\x01\x00\x08\x89\xc2\xec\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

/// Writes `bytes` as `name` in a folder of the test Synapse's (removed with it).
fn avatar_file(s: &Server, name: &str, bytes: &[u8]) -> String {
    let folder = s.data_dir.join("avatars");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn an_avatar_uri_is_set_kept_and_changed() {
    let s = synapse();
    s.module(json!({"username": "avatar-uri", "password": "avatar-uri-pw"}))
        .assert_changed();
    assert_eq!(s.profile_avatar("avatar-uri"), None);
    let first =
        json!({"username": "avatar-uri", "avatar": "mxc://localhost/first", "_ansible_diff": true});
    let mut check = first.clone();
    check["_ansible_check_mode"] = json!(true);
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["avatar set"]);
    assert_eq!(
        run.diff_of(0, "avatar"),
        (Value::Null, json!("mxc://localhost/first"))
    );
    assert_eq!(s.profile_avatar("avatar-uri"), None, "check mode set it");

    let run = s.module(first.clone());
    assert_eq!(run.assert_changed().actions(0), ["avatar set"]);
    assert_eq!(
        s.profile_avatar("avatar-uri").as_deref(),
        Some("mxc://localhost/first")
    );
    s.module(first).assert_unchanged();

    let second = json!({"username": "avatar-uri", "avatar": "mxc://example.org/Second_2", "_ansible_diff": true});
    let run = s.module(second.clone());
    assert_eq!(run.assert_changed().actions(0), ["avatar set"]);
    assert_eq!(
        run.diff_of(0, "avatar"),
        (
            json!("mxc://localhost/first"),
            json!("mxc://example.org/Second_2")
        )
    );
    assert_eq!(
        s.profile_avatar("avatar-uri").as_deref(),
        Some("mxc://example.org/Second_2")
    );
    s.module(second).assert_unchanged();
    // Undeclared, the avatar is left alone and not shown.
    let run = s.module(json!({"username": "avatar-uri", "_ansible_diff": true}));
    run.assert_unchanged();
    assert!(run.output["diff"][0]["before"].get("avatar").is_none());
}

/// The file is uploaded by the module's account (a service account of this
/// test's own, whose media Synapse counts), once per content.
#[test]
fn an_avatar_file_is_uploaded_once_and_again_only_when_its_content_changes() {
    let s = synapse();
    let uploader = "svc-avatar-file";
    let path = avatar_file(s, "bot.png", RED_PNG);
    let bot = json!({"service_account": uploader, "username": "avatar-file",
                     "password": "avatar-file-pw", "avatar": path, "_ansible_diff": true});
    let mut check = bot.clone();
    check["_ansible_check_mode"] = json!(true);
    let run = s.module(check.clone());
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "avatar uploaded"]
    );
    assert_eq!(run.output["diff"][0]["after"]["avatar"], json!(path));
    assert!(s.synapse_user("avatar-file").is_none());
    assert_eq!(s.media_count(uploader), 0, "check mode uploaded");

    let run = s.module(bot.clone());
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "avatar uploaded"]
    );
    let red = s.profile_avatar("avatar-file").expect("an avatar was set");
    assert!(red.starts_with("mxc://localhost/"), "{red}");
    assert_eq!(s.media_content(&red), RED_PNG);
    assert_eq!(s.media_count(uploader), 1);
    s.module(bot.clone()).assert_unchanged();
    s.module(check.clone()).assert_unchanged();
    assert_eq!(s.media_count(uploader), 1, "the re-run uploaded again");
    // The same content under another name is the same avatar.
    let copy = avatar_file(s, "copy-of-bot.png", RED_PNG);
    let mut elsewhere = bot.clone();
    elsewhere["avatar"] = json!(copy);
    s.module(elsewhere).assert_unchanged();

    std::fs::write(&path, BLUE_PNG).unwrap();
    let run = s.module(check);
    assert_eq!(run.assert_changed().actions(0), ["avatar uploaded"]);
    assert_eq!(run.diff_of(0, "avatar"), (json!(red), json!(path)));
    assert_eq!(s.media_count(uploader), 1, "check mode uploaded");
    assert_eq!(s.profile_avatar("avatar-file"), Some(red.clone()));

    let run = s.module(bot.clone());
    assert_eq!(run.assert_changed().actions(0), ["avatar uploaded"]);
    let blue = s.profile_avatar("avatar-file").unwrap();
    assert_ne!(blue, red);
    assert_eq!(s.media_content(&blue), BLUE_PNG);
    assert_eq!(s.media_count(uploader), 2);
    s.module(bot).assert_unchanged();
    assert_eq!(s.media_count(uploader), 2, "the re-run uploaded again");
}

/// A bad avatar fails naming the field (and the path), before any request.
#[test]
fn a_bad_avatar_is_refused_by_name_before_anything_is_sent() {
    let s = synapse();
    let svg = avatar_file(
        s,
        "logo.png",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    );
    let missing = s.data_dir.join("avatars/missing.png").display().to_string();
    let bad = |avatar: &str| {
        json!({"homeserver_url": "http://127.0.0.1:9", "users": [
            {"username": "bad-avatar-0", "password": "bad-avatar-pw"},
            {"username": "bad-avatar-1", "password": "bad-avatar-pw", "avatar": avatar}]})
    };
    // Nothing listens there: only a refusal before any request gets this far.
    s.module(bad("https://example.org/a.png")).assert_failed_with(
        "users[1].avatar: \"https://example.org/a.png\" is not accepted; use an mxc://server/media_id URI, \
         or the absolute path of a PNG, JPEG, GIF or WebP image on the managed host",
    );
    s.module(bad("mxc://localhost/with/slash"))
        .assert_failed_with("users[1].avatar: \"mxc://localhost/with/slash\" is not accepted");
    s.module(bad(&missing))
        .assert_failed_with(&format!("users[1].avatar: {missing}: cannot be read ("));
    s.module(bad(&svg)).assert_failed_with(&format!(
        "users[1].avatar: {svg}: is not a PNG, JPEG, GIF or WebP image"
    ));
    let mut reachable = bad(&svg);
    reachable["homeserver_url"] = json!(s.url);
    s.module(reachable).assert_failed_with("users[1].avatar: ");
    for i in 0..2 {
        assert!(s.synapse_user(&format!("bad-avatar-{i}")).is_none());
    }
}

// ---- synapse_database: Synapse's database, read only, confirms a re-run in bulk ----

/// A Synapse on `database` (`sqlite` or `postgres`) of its own for the
/// `synapse_database` tests, which count the module's requests and take
/// the list path (20 users or more) with few other accounts around.
fn synapse_with_database(database: &'static str) -> &'static Server {
    static SQLITE: OnceLock<Server> = OnceLock::new();
    static POSTGRES: OnceLock<Server> = OnceLock::new();
    let server = match database {
        "sqlite" => &SQLITE,
        _ => &POSTGRES,
    };
    server.get_or_init(|| {
        let server = Server::start("synapse", &["--database", database]);
        server.module(json!({"users": []})).assert_unchanged();
        server
    })
}

/// 24 users `{prefix}-{i}`, each declaring what Synapse's user list does
/// not show: a rate-limit override (none, unlimited or 5/10), an SSO
/// identity, an e-mail address, a room; and the restrictions it does show.
fn users_beyond_the_list(prefix: &str, room: &str) -> Vec<Value> {
    (0..24)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let ratelimit = match i % 3 {
                0 => json!("unlimited"),
                1 => json!({"messages_per_second": 5, "burst_count": 10}),
                _ => json!("default"),
            };
            json!({"username": name, "password": "beyond-the-list-pw", "locked": false,
                   "shadow_banned": false, "ratelimit": ratelimit,
                   "external_ids": [{"auth_provider": "oidc-test", "external_id": name}],
                   "emails": [format!("{name}@example.com")], "rooms": [room]})
        })
        .collect()
}

/// The requests that name one of the users `{prefix}-*` (a read or write
/// of that user alone), as opposed to the list and the room's members.
fn requests_naming(requests: &[String], prefix: &str) -> Vec<String> {
    let named = format!("%40{prefix}-");
    requests
        .iter()
        .filter(|request| request.contains(&named))
        .cloned()
        .collect()
}

/// The specification of `synapse_database` on one database: a re-run it
/// confirms reads no user alone; drift behind the module's back is still
/// found (check mode predicts it), fixed through the admin API, and the
/// next run is quiet again.
fn synapse_database_confirms_a_rerun_and_drift_is_still_fixed(s: &Server, database: &str) {
    let prefix = "beyond";
    s.create_room("public_chat", "beyond-lobby");
    let users = users_beyond_the_list(prefix, "#beyond-lobby:localhost");
    s.module(json!({ "users": users })).assert_changed();

    let without = FaultProxy::start(&s.url, json!([]));
    s.module_via(&without, json!({ "users": users }))
        .assert_unchanged();
    assert_eq!(
        requests_naming(&without.requests(), prefix).len(),
        2 * users.len(),
        "without synapse_database each user is read alone (record, override)"
    );

    let with = FaultProxy::start(&s.url, json!([]));
    let run = s.module_via(&with, json!({"users": users, "synapse_database": database}));
    run.assert_unchanged();
    let requests = with.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /_synapse/admin/v2/users?")),
        "the list was read through the proxy: {requests:?}"
    );
    assert_eq!(requests_naming(&requests, prefix), Vec::<String>::new());
    assert!(!run.stdout.contains(database), "{}", run.stdout);

    // Drift behind the module's back, through Synapse's own admin API.
    let (rated, identified) = (format!("{prefix}-1"), format!("{prefix}-2"));
    s.post_synapse_ratelimit(&rated, json!({"messages_per_second": 7, "burst_count": 7}));
    s.put_synapse_user(&identified, json!({"external_ids": []}));
    let declared = json!({"users": users, "synapse_database": database});
    let mut check = declared.clone();
    check["_ansible_check_mode"] = json!(true);
    let predicted = s.module(check);
    predicted.assert_changed();
    assert_eq!(predicted.actions(1), ["ratelimit set"]);
    assert_eq!(predicted.actions(2), ["external_ids changed"]);
    assert_eq!(predicted.actions(0), Vec::<String>::new());
    assert_eq!(
        s.synapse_ratelimit(&rated),
        json!({"messages_per_second": 7, "burst_count": 7})
    );

    let fixed = s.module(declared.clone());
    fixed.assert_changed();
    assert_eq!(fixed.actions(1), ["ratelimit set"]);
    assert_eq!(fixed.actions(2), ["external_ids changed"]);
    assert_eq!(
        s.synapse_ratelimit(&rated),
        json!({"messages_per_second": 5, "burst_count": 10})
    );
    assert_eq!(
        s.synapse_user_by_external_id("oidc-test", &identified),
        Some(s.user_id(&identified))
    );
    s.module(declared).assert_unchanged();
}

#[test]
fn synapse_database_on_sqlite_confirms_a_rerun_and_drift_is_still_fixed() {
    let s = synapse_with_database("sqlite");
    synapse_database_confirms_a_rerun_and_drift_is_still_fixed(s, &s.synapse_database());
}

/// On PostgreSQL through a role that may only read the three tables, as
/// the module's documentation tells an admin to create it.
#[test]
fn synapse_database_on_postgres_confirms_a_rerun_and_drift_is_still_fixed() {
    let s = synapse_with_database("postgres");
    let owner = s.synapse_database();
    harness::postgres_batch(
        &owner,
        "CREATE ROLE matrix_user_reader LOGIN PASSWORD 'reader-password-123';
         GRANT SELECT ON ratelimit_override, user_external_ids, user_threepids TO matrix_user_reader;",
    );
    let (_, at_host) = owner.split_once('@').unwrap();
    let reader = format!("postgresql://matrix_user_reader:reader-password-123@{at_host}");
    synapse_database_confirms_a_rerun_and_drift_is_still_fixed(s, &reader);
}

/// A wrong password fails naming synapse_database, and no message repeats it.
#[test]
fn a_wrong_synapse_database_password_fails_without_showing_it() {
    let s = synapse_with_database("postgres");
    let owner = s.synapse_database();
    let (_, after_scheme) = owner.split_once("://").unwrap();
    let (userinfo, at_host) = after_scheme.split_once('@').unwrap();
    let (_, real_password) = userinfo.split_once(':').unwrap();
    let wrong = format!("postgres://synapse:wrong-db-password-4321@{at_host}");
    let run = s.module(
        json!({"username": "db-wrong-password", "password": "pw-wrong-db",
                              "synapse_database": wrong}),
    );
    run.assert_failed_with("synapse_database: password authentication failed for user \"synapse\"");
    for shown in [run.stdout.as_str(), run.stderr.as_str()] {
        assert!(!shown.contains("wrong-db-password-4321"), "{shown}");
        assert!(!shown.contains(real_password), "{shown}");
    }
    assert!(s.synapse_user("db-wrong-password").is_none());
}

/// Refused on connecting, before anything is written: no user is created,
/// and a path with no file behind it stays without one.
#[test]
fn a_database_that_is_not_synapses_fails_naming_synapse_database_before_anything_is_written() {
    let s = synapse();
    let other = s.data_dir.join("not-synapse.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE userapi_accounts (localpart TEXT)")
        .unwrap();
    let user = |database: &std::path::Path| {
        json!({"username": "db-not-synapse", "password": "pw-not-synapse",
               "synapse_database": database})
    };
    s.module(user(&other)).assert_failed_with(
        "synapse_database: it has no ratelimit_override table, so it is not Synapse's database",
    );
    let missing = s.data_dir.join("no-such-homeserver.db");
    s.module(user(&missing))
        .assert_failed_with("synapse_database: unable to open database file");
    assert!(!missing.exists());
    assert!(s.synapse_user("db-not-synapse").is_none());
}

// ---- Files on the managed host: never blocked on, never read without bound ----

/// How long a run refused for a file may take: seconds, never a hang.
const FILE_REFUSAL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Every option that names a file, given a FIFO no one writes, /dev/zero
/// or a file of 1 GiB: each run ends at once with an error naming the
/// option and what is wrong with the file, and nothing is created.
#[test]
fn no_file_option_blocks_on_a_fifo_or_reads_a_file_without_bound() {
    let s = synapse();
    let files = harness::HostileFiles::in_folder(&s.data_dir.join("hostile-files"));
    type Args = fn(&std::path::Path) -> Value;
    let options: [(&str, Args, bool); 6] = [
        (
            "registration_shared_secret_file",
            |p| json!({"registration_shared_secret": null, "registration_shared_secret_file": p}),
            true,
        ),
        (
            "admin_token_file",
            |p| json!({ "admin_token_file": p }),
            true,
        ),
        (
            "synapse_database_file",
            |p| json!({ "synapse_database_file": p }),
            true,
        ),
        (
            "synapse_database",
            |p| json!({ "synapse_database": p }),
            false,
        ),
        ("ca_path", |p| json!({ "ca_path": p }), true),
        (
            "users[0].avatar",
            |p| {
                json!({"username": null, "password": null,
                       "users": [{"username": "hostile-avatar", "avatar": p}]})
            },
            true,
        ),
    ];
    for (option, args, sized) in options {
        for (path, problem) in files.cases(sized) {
            let mut run_args = json!({"username": "hostile-files", "password": "pw-hostile"});
            harness::merge(&mut run_args, args(path));
            let run = s.module_within(FILE_REFUSAL_LIMIT, run_args);
            run.assert_failed_with(option).assert_failed_with(problem);
            // A database location is held as a secret (a URL has a password): not quoted.
            let quoted =
                option == "synapse_database" || run.msg().contains(&path.display().to_string());
            assert!(
                run.msg().starts_with(option) && quoted,
                "{option} with {}: {}",
                path.display(),
                run.msg()
            );
        }
    }
    assert!(s.synapse_user("hostile-files").is_none());
    assert!(s.synapse_user("hostile-avatar").is_none());
}

/// The host's CA bundle is a path the module opens too: `SSL_CERT_FILE`
/// naming a FIFO or /dev/zero is skipped as an unreadable bundle is (the
/// run goes on), never waited on or read without end.
#[test]
fn an_ssl_cert_file_that_is_a_fifo_or_endless_is_skipped_not_waited_on() {
    let s = synapse();
    let files = harness::HostileFiles::in_folder(&s.data_dir.join("hostile-files"));
    for (path, _) in files.cases(true) {
        let path = path.display().to_string();
        s.module_within_env(
            FILE_REFUSAL_LIMIT,
            json!({"username": "hostile-ca-store", "state": "absent"}),
            &[("SSL_CERT_FILE", Some(&path))],
        )
        .assert_unchanged();
    }
}

/// The service account's cached token, replaced by a FIFO or a 1 GiB file
/// in its folder, is refused naming token_cache_dir, at once.
#[test]
fn a_token_cache_file_that_is_a_fifo_or_huge_is_refused_naming_token_cache_dir() {
    let s = synapse();
    let folder = s.data_dir.join("hostile-token-cache");
    std::fs::create_dir_all(&folder).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
    // An account of its own: a fresh cache logs in, which would add a
    // device to the shared service account.
    let args = json!({"username": "hostile-cache", "state": "absent", "token_cache_dir": folder,
                      "service_account": "svc-hostile-cache"});
    s.module(args.clone()).assert_unchanged();
    let cached: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "token"))
        .collect();
    let [token_file] = &cached[..] else {
        panic!("one cached token expected, found {cached:?}")
    };
    for (kind, problem) in [
        ("fifo", "is a FIFO (named pipe), not a regular file"),
        ("huge", "is larger than"),
    ] {
        std::fs::remove_file(token_file).unwrap();
        match kind {
            "fifo" => assert!(Command::new("mkfifo")
                .arg(token_file)
                .status()
                .unwrap()
                .success()),
            _ => std::fs::File::create(token_file)
                .unwrap()
                .set_len(1 << 30)
                .unwrap(),
        }
        s.module_within(FILE_REFUSAL_LIMIT, args.clone())
            .assert_failed_with("token_cache_dir")
            .assert_failed_with(problem);
    }
}

/// A secret file is read as it is, less one line ending at its end (as
/// `echo` and editors leave one): a second one is part of the secret.
#[test]
fn a_secret_file_loses_one_trailing_line_ending_and_no_more() {
    let s = synapse();
    let folder = s.data_dir.join("secret-files");
    std::fs::create_dir_all(&folder).unwrap();
    let secret_file = |name: &str, content: String| {
        use std::os::unix::fs::PermissionsExt;
        let path = folder.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    // A fresh token cache each time, so that the secret is used, for an
    // account of its own (each fresh login adds a device to it).
    let run = |name: &str, file: std::path::PathBuf| {
        s.module(json!({"registration_shared_secret": null,
                        "registration_shared_secret_file": file,
                        "token_cache_dir": folder.join(format!("cache-{name}")),
                        "service_account": "svc-newline-secret",
                        "username": "newline-secret", "state": "absent"}))
    };
    for (name, ending) in [("lf", "\n"), ("crlf", "\r\n"), ("none", "")] {
        let file = secret_file(name, format!("{}{ending}", s.shared_secret));
        let ran = run(name, file);
        ran.assert_unchanged();
        assert_eq!(ran.output.get("warnings"), None, "{}", ran.stdout);
    }
    // Not the server's secret: the service account's registration is refused.
    let two = secret_file("two", format!("{}\n\n", s.shared_secret));
    run("two", two).assert_failed_with("registration_shared_secret");
}

/// A secret file anyone on the host can read is used, with a warning, as
/// ssh warns of a private key others can read.
#[test]
fn a_secret_file_readable_by_everyone_is_used_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let s = synapse();
    let folder = s.data_dir.join("open-secret-files");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("shared-secret");
    std::fs::write(&path, format!("{}\n", s.shared_secret)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = s.module(json!({"registration_shared_secret": null,
                              "registration_shared_secret_file": path,
                              "username": "open-secret", "state": "absent"}));
    run.assert_unchanged();
    let warnings = run.output["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{}", run.stdout);
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with("registration_shared_secret_file: ")
            && warning.contains(&path.display().to_string())
            && warning.contains("is readable by every user of the host (mode 0644)"),
        "{warning}"
    );
}

// ---- The server's own answers about other servers ----

/// Synapse's own 502 about another server (`Failed to fetch alias`) is its
/// answer for that room, reported at once as the room's failure: it is not
/// a homeserver to wait for, and homeserver_url is not to blame.
#[test]
fn an_alias_on_an_unreachable_server_fails_that_room_at_once_with_synapses_answer() {
    let s = synapse();
    let alias = "#lobby:127.0.0.1:1";
    let run = s.module_within(
        std::time::Duration::from_secs(40),
        json!({"username": "remote-alias", "password": "pw-remote-alias",
               "rooms": [alias], "wait_timeout": 61}),
    );
    run.assert_failed_with(&format!("{alias} cannot be joined"))
        .assert_failed_with("Failed to fetch alias");
    assert!(!run.msg().contains("homeserver_url"), "{}", run.msg());
}

// ---- Database errors are quoted as briefly as server answers ----

/// A database whose error message is 2 MB long (a view raising it): the
/// module's output quotes it cut short, as it quotes HTTP answers.
#[test]
fn a_huge_synapse_database_error_is_cut_short() {
    let s = synapse_with_database("postgres");
    let owner = s.synapse_database();
    harness::postgres_batch(&owner, "DROP DATABASE IF EXISTS hostile_errors");
    harness::postgres_batch(&owner, "CREATE DATABASE hostile_errors");
    let (server, _) = owner.rsplit_once('/').unwrap();
    let hostile = format!("{server}/hostile_errors");
    harness::postgres_batch(&hostile, HUGE_ERROR_TABLES);
    let run = s.module(
        json!({"username": "huge-db-error", "password": "pw-huge-db-error",
                              "synapse_database": hostile}),
    );
    run.assert_failed_with("synapse_database: ");
    assert!(run.stdout.len() < 4096, "{} bytes", run.stdout.len());
    assert!(s.synapse_user("huge-db-error").is_none());
}

/// Synapse's three tables, the first a view whose every read raises an
/// error of 2 MB (planning it evaluates the immutable call in its filter).
const HUGE_ERROR_TABLES: &str = "
    CREATE FUNCTION huge_error() RETURNS bigint IMMUTABLE LANGUAGE plpgsql
        AS $$ BEGIN RAISE EXCEPTION '%', repeat('x', 2000000); END $$;
    CREATE VIEW ratelimit_override AS
        SELECT 'u'::text AS user_id, 0::bigint AS messages_per_second, 0::bigint AS burst_count
        WHERE huge_error() IS NOT NULL;
    CREATE TABLE user_external_ids (user_id text, auth_provider text, external_id text);
    CREATE TABLE user_threepids (user_id text, medium text, address text);";
