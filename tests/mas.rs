//! The module against the MAS contract server (tools/servers/mas.py), which
//! checks every request against the admin API that MAS 1.22 publishes. Each
//! test is one line of the contract, and ends by proving from the server's
//! request log that no request and no answer broke the spec. What every
//! server shares is in scenarios.rs, written once.

mod harness;

use std::sync::OnceLock;
use std::time::Instant;

use harness::Server;
use serde_json::{json, Value};

/// One contract server for the tests that need no special configuration.
fn mas() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(
            "mas",
            &[
                "--reserve-username",
                "held-by-homeserver",
                "--reserve-username",
                "half-made",
            ],
        )
    })
}

fn check_mode(mut args: Value) -> Value {
    args["_ansible_check_mode"] = json!(true);
    args
}

#[test]
fn creates_a_user_with_password_admin_and_email_then_changes_nothing() {
    let s = mas();
    let user = json!({"username": "alice", "password": "violet harbor lantern 42",
                      "admin": true, "email": "alice@example.com"});
    let run = s.mas_module(user.clone());
    run.assert_changed();
    assert_eq!(run.actions(0), ["created"]);
    assert_eq!(run.msg(), "@alice:localhost: created");
    assert!(s.can_log_in("alice", "violet harbor lantern 42"));
    assert!(s.mas_is_admin("alice"));
    assert_eq!(s.mas_emails("alice"), ["alice@example.com"]);

    let again = s.mas_module(user);
    again.assert_unchanged();
    assert_eq!(again.msg(), "@alice:localhost: already as declared");
    s.assert_no_contract_violations();
}

#[test]
fn an_email_is_added_to_an_existing_user_once_whatever_its_case() {
    let s = mas();
    s.mas_module(json!({"username": "mailer", "password": "ferry lupine granite"}))
        .assert_changed();
    assert!(s.mas_emails("mailer").is_empty());
    let run = s.mas_module(json!({"username": "mailer", "email": "Mailer@Example.com"}));
    assert_eq!(run.assert_changed().actions(0), ["email added"]);
    s.mas_module(json!({"username": "mailer", "email": "mailer@example.com"}))
        .assert_unchanged();
    assert_eq!(s.mas_emails("mailer"), ["Mailer@Example.com"]);

    s.mas_module(json!({"username": "other-mailer", "password": "quiet orbit mosaic"}))
        .assert_changed();
    s.mas_module(json!({"username": "other-mailer", "email": "mailer@example.com"}))
        .assert_failed_with(
            "the e-mail address mailer@example.com already belongs to another MAS user",
        );
    s.assert_no_contract_violations();
}

#[test]
fn check_mode_predicts_an_email_added_and_adds_none() {
    let s = mas();
    let create = json!({"username": "checked-mail", "password": "checked amber kettle",
                        "email": "checked@example.com"});
    assert_eq!(
        s.mas_module(check_mode(create)).assert_changed().actions(0),
        ["created"]
    );
    assert!(s.mas_user("checked-mail").is_none());

    s.mas_module(json!({"username": "checked-mail", "password": "checked amber kettle"}))
        .assert_changed();
    let run = s.mas_module(check_mode(
        json!({"username": "checked-mail", "email": "checked@example.com"}),
    ));
    assert_eq!(run.assert_changed().actions(0), ["email added"]);
    assert!(s.mas_emails("checked-mail").is_empty());
    s.assert_no_contract_violations();
}

#[test]
fn diff_mode_shows_before_and_after_with_emails() {
    let s = mas();
    let run = s.mas_module(
        json!({"username": "diffed", "password": "diffed ferry granite",
        "email": "diffed@example.com", "_ansible_diff": true}),
    );
    run.assert_changed();
    assert_eq!(run.output["diff"][0]["before"], json!({"exists": false}));
    // No display name declared: MAS cannot show one, so none is predicted.
    assert_eq!(run.output["diff"][0]["after"]["displayname"], json!(null));
    assert_eq!(
        run.output["diff"][0]["after"]["emails"],
        json!(["diffed@example.com"])
    );
    let run = s.mas_module(json!({"username": "diffed", "admin": true, "_ansible_diff": true}));
    let diff = &run.output["diff"][0];
    assert_eq!(diff["before"]["admin"], json!(false));
    assert_eq!(diff["after"]["admin"], json!(true));
    assert_eq!(diff["before"]["emails"], json!(["diffed@example.com"]));
    s.assert_no_contract_violations();
}

#[test]
fn a_weak_password_fails_that_user_only_and_a_later_run_finishes_it() {
    let s = mas();
    let run = s.mas_module(json!({"users": [
        {"username": "weakling", "password": "password1", "admin": true},
        {"username": "strongling", "password": "strong quiet orbit mosaic"},
    ]}));
    run.assert_failed_with(
        "1 of 2 users failed: @weakling:localhost: MAS refused the password as too weak",
    );
    assert!(run
        .msg()
        .contains("then deactivated so that nobody uses it without a password"));
    assert_eq!(run.output["users"][1]["changed"], json!(true));
    // The account was created (then deactivated) before the failure: a change.
    assert_eq!(run.output["users"][0]["changed"], json!(true));
    assert_eq!(run.output["changed"], json!(true));
    assert!(run.output["users"][0]["msg"]
        .as_str()
        .unwrap()
        .starts_with("failed after changing part of it (run again to finish)"));
    assert!(s.mas_is_deactivated("weakling"));

    let fixed = json!({"username": "weakling", "password": "weakling amber fjord", "admin": true});
    assert_eq!(
        s.mas_module(fixed.clone()).assert_changed().actions(0),
        ["reactivated", "promoted"]
    );
    assert!(s.can_log_in("weakling", "weakling amber fjord"));
    assert!(s.mas_is_admin("weakling"));
    s.mas_module(fixed).assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn usernames_the_homeserver_holds_are_refused_clearly() {
    let s = mas();
    s.mas_module(json!({"username": "held-by-homeserver", "password": "held lupine granite"}))
        .assert_failed_with("MAS will not create @held-by-homeserver:localhost: the homeserver reports the username as reserved or taken")
        .assert_failed_with("set mas_adopt_existing: true");
    assert!(s.mas_user("held-by-homeserver").is_none());
    s.assert_no_contract_violations();
}

/// A user the homeserver has but MAS lacks (made behind MAS's back) is
/// created in MAS over it with mas_adopt_existing, and then is whole.
#[test]
fn mas_adopt_existing_makes_a_half_made_account_whole() {
    let s = mas();
    let user = json!({"username": "half-made", "password": "half made lupine granite",
                      "admin": true, "mas_adopt_existing": true});
    let check = s.mas_module(check_mode(user.clone()));
    assert_eq!(check.assert_changed().actions(0), ["created"]);
    assert!(s.mas_user("half-made").is_none());
    let run = s.mas_module(user.clone());
    assert_eq!(run.assert_changed().actions(0), ["created"]);
    assert!(s.can_log_in("half-made", "half made lupine granite"));
    assert!(s.mas_is_admin("half-made"));
    s.mas_module(user).assert_unchanged();
    let creations = s
        .mas_request_log()
        .iter()
        .filter(|e| {
            e["operation"] == json!("createUser") && e["path"] == json!("/api/admin/v1/users")
        })
        .map(|e| e["status"].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert!(
        creations.contains(&409) && creations.contains(&201),
        "{creations:?}"
    );
    s.assert_no_contract_violations();
}

#[test]
fn mas_adopt_existing_is_refused_by_name_on_homeservers() {
    for homeserver in ["synapse", "dendrite"] {
        harness::run_module(
            json!({"homeserver": homeserver, "homeserver_url": "http://127.0.0.1:9",
                   "admin_token": "syt_x", "username": "alice", "mas_adopt_existing": true}),
            vec!["syt_x".into()],
        )
        .assert_failed_with("mas_adopt_existing: only MAS keeps accounts apart");
    }
}

#[test]
fn an_unreachable_mas_is_called_mas_and_its_url_field_named() {
    harness::run_module(
        json!({"homeserver": "mas", "mas_url": "http://127.0.0.1:9", "username": "alice",
               "mas_client_id": "01J0000000000000000000000", "mas_client_secret": "client-secret",
               "wait_timeout": 1}),
        vec!["client-secret".into()],
    )
    .assert_failed_with("cannot reach MAS at http://127.0.0.1:9")
    .assert_failed_with("; check mas_url, that the server is running");
}

#[test]
fn what_mas_cannot_manage_fails_before_any_request() {
    let s = mas();
    s.mas_module(
        json!({"username": "botty", "password": "botty ferry granite", "user_type": "bot"}),
    )
    .assert_failed_with("user_type: MAS has no user types");
    assert!(s.mas_user("botty").is_none());
    harness::run_module(
        json!({"homeserver": "mas", "mas_url": s.url, "username": "nocred", "password": "x"}),
        vec![],
    )
    .assert_failed_with("no credentials: give mas_client_id with mas_client_secret");
}

#[test]
fn a_wrong_client_secret_names_the_parameters_without_echoing_it() {
    let s = mas();
    let run = s.mas_module(json!({
        "mas_client_secret": "not-the-real-client-secret",
        "username": "wrong-secret", "password": "irrelevant violet harbor",
    }));
    run.assert_failed_with("mas_client_id/mas_client_secret are wrong");
    assert!(run.msg().contains("invalid_client"), "{}", run.msg());
    assert!(s.mas_user("wrong-secret").is_none());
    s.assert_no_contract_violations();
}

/// The client secret read from `mas_client_secret_file` is the one used: a
/// file holding another secret fails as a wrong secret does.
#[test]
fn mas_client_secret_file_is_read_for_the_secret() {
    let s = mas();
    let file = s.data_dir.join("client-secret-file");
    std::fs::write(
        &file,
        format!("{}\n", s.info["client_secret"].as_str().unwrap()),
    )
    .unwrap();
    let args = json!({"mas_client_secret": null, "mas_client_secret_file": file,
                      "username": "by-secret-file", "password": "secret file lupine"});
    s.mas_module(args.clone()).assert_changed();
    assert!(s.can_log_in("by-secret-file", "secret file lupine"));

    std::fs::write(&file, "not-the-real-client-secret").unwrap();
    s.mas_module(args)
        .assert_failed_with("mas_client_id/mas_client_secret are wrong");
    s.assert_no_contract_violations();
}

/// MAS refuses a locked user's logins, so its password cannot be compared:
/// the module says so and how to go on, instead of calling it changed.
#[test]
fn a_locked_users_password_check_fails_naming_the_lock() {
    let s = mas();
    let user = json!({"username": "locked-out", "password": "locked amber kettle"});
    s.mas_module(user.clone()).assert_changed();
    let id = s.mas_user("locked-out").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = s.post(
        &format!("/api/admin/v1/users/{id}/lock"),
        Some(&s.mas_harness_token()),
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let mut always = user;
    always["update_password"] = json!("always");
    s.mas_module(always).assert_failed_with(
        "@locked-out:localhost: is locked on the server, so its password cannot be checked",
    );
    assert!(s.mas_user("locked-out").unwrap()["locked_at"].is_string());
    s.assert_no_contract_violations();
}

/// A client MAS's policy does not list as an admin client gets no
/// urn:mas:admin scope: the error names the client and the policy to change.
#[test]
fn a_client_denied_the_admin_scope_is_told_which_policy_to_change() {
    let s = Server::start("mas", &["--not-admin-client"]);
    let run = s.mas_module(json!({"username": "scope-denied", "password": "scope denied lupine"}));
    run.assert_failed_with("MAS does not grant the urn:mas:admin scope to the OAuth2 client")
        .assert_failed_with("policy.data.admin_clients");
    s.assert_no_contract_violations();
}

#[test]
fn an_admin_token_alone_is_enough_and_a_bogus_one_is_refused() {
    let s = mas();
    let token = s.mas_harness_token();
    let args = json!({"homeserver": "mas", "mas_url": s.url, "admin_token": token,
                      "username": "by-token", "password": "token made lupine", "admin": true});
    harness::run_module(args.clone(), vec![token.clone()]).assert_changed();
    assert!(s.can_log_in("by-token", "token made lupine") && s.mas_is_admin("by-token"));
    harness::run_module(args, vec![token]).assert_unchanged();

    let bogus = "mat_000000000000000000000000000000_000000";
    harness::run_module(
        json!({"homeserver": "mas", "mas_url": s.url, "admin_token": bogus,
               "username": "x-user", "password": "irrelevant violet"}),
        vec![bogus.into()],
    )
    .assert_failed_with("MAS refused the admin_token");
    s.assert_no_contract_violations();
}

#[test]
fn a_server_name_that_is_not_mas_s_is_refused() {
    let s = mas();
    s.mas_module(json!({"server_name": "example.org", "username": "misnamed", "password": "misnamed ferry granite"}))
        .assert_failed_with("server_name is \"example.org\", but the server at mas_url serves \"localhost\"");
    assert!(s.mas_user("misnamed").is_none());
}

/// MAS's tokens live minutes; a run that outlasts its token fetches another
/// one, once for all the requests that found it expired.
#[test]
fn an_expired_token_is_fetched_again_within_one_run() {
    let s = Server::start("mas", &["--token-uses", "25"]);
    let users: Vec<Value> = (0..40)
        .map(|i| {
            json!({"username": format!("bulk{i:02}"), "password": format!("amber-fjord-kettle-{i}"),
                        "admin": i % 10 == 0, "email": format!("bulk{i}@example.com")})
        })
        .collect();
    let run = s.mas_module(json!({"users": users}));
    run.assert_changed();
    assert_eq!(run.msg(), "40 users: 40 changed, 0 already as declared");

    let log = s.mas_request_log();
    let expired = log
        .iter()
        .filter(|e| e["status"] == json!(401) && e["path"].as_str().unwrap().starts_with("/api/"))
        .count();
    let tokens = log
        .iter()
        .filter(|e| e["path"] == json!("/oauth2/token"))
        .count();
    assert!(expired >= 1, "no token expired: lower --token-uses");
    assert!(
        tokens - 1 <= expired,
        "{tokens} tokens fetched for {expired} refusals"
    );
    assert!(s.mas_is_admin("bulk30") && !s.mas_is_admin("bulk31"));
    assert!(s.can_log_in("bulk39", "amber-fjord-kettle-39"));
    assert_eq!(s.mas_emails("bulk07"), ["bulk7@example.com"]);

    let again = s.mas_module(json!({"users": users}));
    again.assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn a_client_configured_for_client_secret_post_works_too() {
    let s = Server::start("mas", &["--client-auth-method", "client_secret_post"]);
    let user = json!({"username": "posted", "password": "posted lupine granite", "admin": true});
    s.mas_module(user.clone()).assert_changed();
    assert!(s.mas_is_admin("posted"));
    s.mas_module(user).assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn without_password_login_passwords_are_refused_before_anything_changes() {
    let s = Server::start("mas", &["--no-password-login"]);
    s.mas_module(json!({"username": "sso-only", "password": "sso only lupine granite"}))
        .assert_failed_with("MAS has password login disabled (passwords.enabled: false");
    assert!(s.mas_user("sso-only").is_none());

    // A user MAS got from elsewhere (an upstream identity provider, here the harness).
    let (status, body) = s.post(
        "/api/admin/v1/users",
        Some(&s.mas_harness_token()),
        json!({"username": "upstream"}),
    );
    assert_eq!(status, 201, "{body}");
    s.mas_module(json!({"username": "upstream", "admin": true}))
        .assert_changed();
    s.mas_module(
        json!({"username": "upstream", "password": "upstream ferry granite",
                        "update_password": "always"}),
    )
    .assert_failed_with("MAS has password login disabled");
    s.assert_no_contract_violations();
}

/// MAS allows 3 logins a minute from one address by default, so checking
/// more passwords than that waits for MAS rather than failing.
#[test]
fn password_checks_under_default_rate_limits_wait_instead_of_failing() {
    let s = Server::start("mas", &["--default-rate-limits"]);
    let users: Vec<Value> = (0..4)
        .map(|i| json!({"username": format!("limited{i}"), "password": format!("limited quiet orbit {i}"),
                        "update_password": "always"}))
        .collect();
    s.mas_module(json!({"users": users})).assert_changed();
    let started = Instant::now();
    s.mas_module(json!({"users": users, "wait_timeout": 60}))
        .assert_unchanged();
    let log = s.mas_request_log();
    assert!(
        log.iter().any(|e| e["status"] == json!(429)),
        "the fourth login should have been limited"
    );
    assert!(started.elapsed().as_secs() >= 10, "{:?}", started.elapsed());
    s.assert_no_contract_violations();
}

#[test]
fn the_leak_check_recognises_mas_tokens() {
    let token = "mat_7WO6TQug3zns1ANp7DgvbtFWsScSKZ_0qhyGJ";
    assert_eq!(
        harness::mas::find_mas_token(&format!("msg: {token}.")),
        Some(token)
    );
    assert_eq!(harness::mas::find_mas_token(token), Some(token));
    assert_eq!(
        harness::mas::find_mas_token("MAS refused the admin_token (Invalid type of access token)"),
        None
    );
}

#[test]
fn locks_and_unlocks_through_the_admin_api_and_a_declared_lock_survives_reactivation() {
    let s = mas();
    let locked = json!({"username": "lockee", "password": "copper willow basin 7", "locked": true});
    let run = s.mas_module(locked.clone());
    assert_eq!(run.assert_changed().actions(0), ["created", "locked"]);
    assert!(s.mas_is_locked("lockee"));
    assert_eq!(
        s.login("lockee", "copper willow basin 7"),
        Err((401, "M_USER_LOCKED".to_string()))
    );
    s.mas_module(locked.clone()).assert_unchanged();

    let unlock = json!({"username": "lockee", "locked": false, "_ansible_diff": true});
    let check = s.mas_module(check_mode(unlock.clone()));
    assert_eq!(check.assert_changed().actions(0), ["unlocked"]);
    assert!(s.mas_is_locked("lockee"), "check mode unlocked it");
    let run = s.mas_module(unlock.clone());
    assert_eq!(run.assert_changed().actions(0), ["unlocked"]);
    assert_eq!(run.output["diff"][0]["before"]["locked"], json!(true));
    assert_eq!(run.output["diff"][0]["after"]["locked"], json!(false));
    assert!(s.can_log_in("lockee", "copper willow basin 7"));
    s.mas_module(unlock).assert_unchanged();

    // MAS's reactivation does not unlock: a lock declared with it stays.
    s.mas_module(locked.clone()).assert_changed();
    s.mas_module(json!({"username": "lockee", "state": "absent"}))
        .assert_changed();
    let run = s.mas_module(locked.clone());
    assert_eq!(run.assert_changed().actions(0), ["reactivated"]);
    assert!(s.mas_is_locked("lockee") && !s.mas_is_deactivated("lockee"));
    s.mas_module(locked).assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn ratelimit_rooms_and_avatar_are_refused_by_name_before_any_request() {
    let s = mas();
    let refusals = [
        (
            "rate-limited",
            "ratelimit",
            json!("unlimited"),
            "ratelimit: MAS has no per-user rate-limit override",
        ),
        (
            "room-joiner",
            "rooms",
            json!(["#lobby:localhost"]),
            "rooms: MAS holds accounts, not rooms",
        ),
        (
            "avatar-holder",
            "avatar",
            json!("mxc://localhost/a"),
            "avatar: MAS has no avatars",
        ),
    ];
    for (username, field, value, refusal) in refusals {
        let mut user =
            json!({"username": username, "password": format!("{username} ferry granite")});
        user[field] = value;
        s.mas_module(user.clone()).assert_failed_with(refusal);
        // Nothing listens there: only a refusal before any request gets this far.
        user["mas_url"] = json!("http://127.0.0.1:9");
        s.mas_module(user).assert_failed_with(refusal);
        assert!(s.mas_user(username).is_none());
    }
    s.assert_no_contract_violations();
}

#[test]
fn suspension_and_shadow_ban_are_refused_by_name_before_any_request() {
    let s = mas();
    for field in ["suspended", "shadow_banned"] {
        s.mas_module(
            json!({"username": "restricted", "password": "restricted ferry granite", field: true}),
        )
        .assert_failed_with(&format!(
            "{field}: MAS's admin API (1.22) cannot suspend or shadow-ban"
        ));
    }
    assert!(s.mas_user("restricted").is_none());
    s.assert_no_contract_violations();
}

/// Issue 13, item 9: what landed before the failure is reported, in order.
#[test]
fn a_user_deactivated_after_its_weak_password_reports_both_actions() {
    let s = mas();
    let run = s.mas_module(json!({"username": "weak-report", "password": "password1"}));
    run.assert_failed_with("MAS refused the password as too weak");
    assert_eq!(run.actions(0), ["created", "deactivated"]);
    assert_eq!(run.output["users"][0]["changed"], json!(true));
    assert!(s.mas_is_deactivated("weak-report"));
    s.assert_no_contract_violations();
}

/// Issue 13, item 5: MAS's complexity policy is skipped only when asked.
#[test]
fn mas_skip_password_check_sets_a_password_mas_would_refuse() {
    let s = mas();
    let weak = json!({"username": "weak-allowed", "password": "password1",
                      "mas_skip_password_check": true});
    let check = s.mas_module(check_mode(weak.clone()));
    assert_eq!(check.assert_changed().actions(0), ["created"]);
    assert!(s.mas_user("weak-allowed").is_none());
    let run = s.mas_module(weak.clone());
    assert_eq!(run.assert_changed().actions(0), ["created"]);
    assert!(s.can_log_in("weak-allowed", "password1"));
    s.mas_module(weak).assert_unchanged();

    let always = json!({"username": "weak-allowed", "password": "qwerty12",
                        "update_password": "always", "mas_skip_password_check": "yes"});
    assert_eq!(
        s.mas_module(always.clone()).assert_changed().actions(0),
        ["password changed"]
    );
    assert!(s.can_log_in("weak-allowed", "qwerty12"));
    s.mas_module(always).assert_unchanged();
    // Without it, MAS's policy applies as before.
    s.mas_module(json!({"username": "weak-allowed", "password": "letmein1",
                        "update_password": "always", "mas_skip_password_check": false}))
        .assert_failed_with("MAS refused the password as too weak");
    assert!(s.can_log_in("weak-allowed", "qwerty12"));
    s.assert_no_contract_violations();
}

/// Issue 13, item 2: MAS 1.18 and later take a display name at creation and
/// hand it to the homeserver; MAS cannot show it, so it is not compared later.
#[test]
fn a_display_name_is_set_at_creation_and_not_compared_afterwards() {
    let s = mas();
    let named = json!({"username": "named", "password": "named ferry granite",
                       "displayname": "Named Person", "_ansible_diff": true});
    let check = s.mas_module(check_mode(named.clone()));
    assert_eq!(check.assert_changed().actions(0), ["created"]);
    assert_eq!(check.diff_of(0, "displayname").1, json!("Named Person"));
    assert!(s.mas_user("named").is_none());

    let run = s.mas_module(named.clone());
    assert_eq!(run.assert_changed().actions(0), ["created"]);
    assert_eq!(run.diff_of(0, "displayname").1, json!("Named Person"));
    assert_eq!(s.mas_homeserver_displayname("named"), json!("Named Person"));
    s.mas_module(named).assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn a_mas_older_than_1_18_refuses_display_names_before_anything_is_written() {
    let s = Server::start("mas", &["--mas-version", "v1.17.1"]);
    s.mas_module(
        json!({"username": "old-named", "password": "old named ferry granite",
                        "displayname": "Old Named"}),
    )
    .assert_failed_with(
        "displayname: MAS v1.17.1 cannot set display names; it needs MAS 1.18 or later",
    );
    assert!(s.mas_user("old-named").is_none());
    s.mas_module(json!({"username": "old-named", "password": "old named ferry granite"}))
        .assert_changed();
    s.assert_no_contract_violations();
}

/// The homeserver behind MAS, which keeps the profiles MAS cannot show: a
/// real Synapse whose server name is the contract server's, so that a user
/// MAS holds is a local user of it. The harness gives it the users, with
/// their display names, as MAS's provisioning would.
fn homeserver() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let homeserver = Server::start("synapse", &[]);
        assert_eq!(homeserver.server_name, mas().server_name);
        homeserver
    })
}

/// A user MAS holds and the homeserver knows as `displayname`.
fn provisioned(s: &Server, homeserver: &Server, localpart: &str, displayname: &str) {
    s.mas_module(json!({"username": localpart, "password": format!("{localpart} lupine fjord 7")}))
        .assert_changed();
    homeserver.put_synapse_user(localpart, json!({"displayname": displayname}));
}

/// Issue 13, item 2: with homeserver_url, an existing MAS user's display
/// name is read from the homeserver's profile and compared.
#[test]
fn with_homeserver_url_an_existing_users_display_name_is_read_from_the_homeserver() {
    let (s, hs) = (mas(), homeserver());
    provisioned(s, hs, "profiled", "Old");
    let run = s.mas_module(json!({"homeserver_url": hs.url, "username": "profiled",
                                  "displayname": "Old", "_ansible_diff": true}));
    run.assert_unchanged();
    assert_eq!(run.diff_of(0, "displayname"), (json!("Old"), json!("Old")));
    s.assert_no_contract_violations();
}

/// MAS cannot change an existing user's display name: a different declared
/// one fails that user before anything is written for it (predicted in
/// check mode), saying where it can be changed; the run's other users are
/// still handled.
#[test]
fn a_changed_display_name_of_an_existing_user_fails_it_naming_where_to_change_it() {
    let (s, hs) = (mas(), homeserver());
    provisioned(s, hs, "renamed", "Old");
    let users = json!({"homeserver_url": hs.url, "users": [
        {"username": "renamed", "displayname": "New", "admin": true},
        {"username": "renamed-peer", "password": "renamed peer lupine 8", "admin": true}]});
    let check = s.mas_module(check_mode(users.clone()));
    check.assert_failed_with(
        "1 of 2 users failed: @renamed:localhost: the homeserver shows its display name as \"Old\", not the declared one, \
         and MAS cannot change the display name of an existing user",
    );
    assert_eq!(check.actions(1), ["created"]);
    assert!(s.mas_user("renamed-peer").is_none());

    let run = s.mas_module(users);
    run.assert_failed_with(
        "change it on the homeserver - with Synapse's admin API, PUT /_synapse/admin/v2/users/@renamed:localhost \
         with {\"displayname\": ...} - or in the user's Matrix client, or declare the current one",
    );
    assert_eq!(run.output["users"][0]["changed"], json!(false));
    assert_eq!(run.actions(1), ["created"]);
    assert!(
        !s.mas_is_admin("renamed"),
        "nothing is written for the refused user"
    );
    assert!(s.mas_is_admin("renamed-peer"));
    assert_eq!(
        hs.synapse_user("renamed").unwrap()["displayname"],
        json!("Old")
    );
    s.assert_no_contract_violations();
}

/// Without homeserver_url, as before: the display name of an existing user
/// is not compared (MAS cannot show it), and the diff does not show one.
#[test]
fn without_homeserver_url_an_existing_users_display_name_is_not_compared() {
    let (s, hs) = (mas(), homeserver());
    provisioned(s, hs, "unread", "Old");
    let run =
        s.mas_module(json!({"username": "unread", "displayname": "New", "_ansible_diff": true}));
    run.assert_unchanged();
    assert_eq!(run.diff_of(0, "displayname"), (json!(null), json!(null)));
    assert_eq!(
        hs.synapse_user("unread").unwrap()["displayname"],
        json!("Old")
    );
    s.assert_no_contract_violations();
}

/// A user the homeserver has no profile of (MAS provisions users on the
/// homeserver in the background) has no display name to compare yet: it is
/// left alone, as without homeserver_url, and compared on a later run.
#[test]
fn a_user_the_homeserver_has_no_profile_of_is_not_compared() {
    let (s, hs) = (mas(), homeserver());
    s.mas_module(json!({"username": "unprovisioned", "password": "unprovisioned amber 9"}))
        .assert_changed();
    assert!(hs.synapse_user("unprovisioned").is_none());
    let run = s.mas_module(
        json!({"homeserver_url": hs.url, "username": "unprovisioned",
                                  "displayname": "New", "_ansible_diff": true}),
    );
    run.assert_unchanged();
    assert_eq!(run.diff_of(0, "displayname"), (json!(null), json!(null)));
    s.assert_no_contract_violations();
}

/// A homeserver that does not answer is an error before anything is
/// written, not a comparison silently skipped; it is asked only when a user
/// declares a display name.
#[test]
fn an_unreachable_homeserver_fails_the_run_before_anything_is_written() {
    let s = mas();
    s.mas_module(json!({"username": "unreached", "password": "unreached amber 10"}))
        .assert_changed();
    let peer = json!({"username": "unreached-peer", "password": "unreached peer amber 11"});
    let unreachable = json!({"homeserver_url": "http://127.0.0.1:9", "wait_timeout": 1,
        "users": [{"username": "unreached", "displayname": "New"}, peer]});
    s.mas_module(unreachable)
        .assert_failed_with("cannot reach the homeserver at http://127.0.0.1:9")
        .assert_failed_with("check homeserver_url");
    assert!(s.mas_user("unreached-peer").is_none());
    s.mas_module(json!({"homeserver_url": "http://127.0.0.1:9", "users": [peer]}))
        .assert_changed();
    s.assert_no_contract_violations();
}

/// A homeserver that shows profiles only to signed-in users (Synapse's
/// require_auth_for_profile_requests) cannot show display names: the run
/// fails before anything is written, saying so, rather than skipping the
/// comparison silently.
#[test]
fn a_homeserver_that_shows_profiles_only_with_a_token_fails_the_run_naming_its_option() {
    let s = mas();
    let hs = Server::start("synapse", &["--require-auth-for-profile-requests"]);
    provisioned(s, &hs, "guarded", "Old");
    s.mas_module(json!({"homeserver_url": hs.url, "users": [
        {"username": "guarded", "displayname": "Old"},
        {"username": "guarded-peer", "password": "guarded peer amber 12"}]}))
        .assert_failed_with(
            "shows profiles only to signed-in users (Synapse's require_auth_for_profile_requests)",
        )
        .assert_failed_with("leave homeserver_url out");
    assert!(s.mas_user("guarded-peer").is_none());
    s.assert_no_contract_violations();
}

/// Read from MAS's lists, users' display names are read from the homeserver
/// too, one request each, and compared as from single reads.
#[test]
fn listed_users_display_names_are_compared_too() {
    let s = Server::start("mas", &[]);
    let hs = homeserver();
    let users: Vec<Value> = (0..20)
        .map(|i| json!({"username": format!("listed{i:02}"), "password": format!("listed amber fjord {i}")}))
        .collect();
    s.mas_module(json!({"users": users})).assert_changed();
    hs.put_synapse_user("listed03", json!({"displayname": "Listed Three"}));
    hs.put_synapse_user("listed04", json!({"displayname": "Old"}));
    let mut named = users.clone();
    named[3]["displayname"] = json!("Listed Three");
    named[4]["displayname"] = json!("New");
    let before = s.mas_request_log().len();
    let run = s.mas_module(json!({"homeserver_url": hs.url, "users": named}));
    run.assert_failed_with("1 of 20 users failed: @listed04:localhost: the homeserver shows its display name as \"Old\"");
    assert_eq!(run.output["users"][3]["failed"], json!(false));
    let log = s.mas_request_log();
    assert!(log[before..]
        .iter()
        .any(|e| e["operation"] == json!("listUsers")));
    assert!(!log[before..]
        .iter()
        .any(|e| e["operation"] == json!("getUserByUsername")));
    s.assert_no_contract_violations();
}

/// The contract server is a check, not a mirror: a request the spec does not
/// allow is refused as MAS's extractors refuse it, marked in the log, and the
/// check every other test ends with fails on it.
#[test]
fn the_contract_server_refuses_a_request_the_spec_does_not_allow() {
    let s = Server::start("mas", &[]);
    let token = s.mas_harness_token();
    let (status, _) = s.post(
        "/api/admin/v1/users",
        Some(&token),
        json!({"username": "off-spec", "skip_homeserver_check": "yes"}),
    );
    assert_eq!(status, 422);
    assert!(s.mas_user("off-spec").is_none());
    let log = s.mas_request_log();
    let refused = log
        .iter()
        .find(|e| e["operation"] == json!("createUser"))
        .expect("the request is logged");
    assert_eq!(refused["request_valid"], json!(false));
    assert!(
        refused["request_violations"][0]
            .as_str()
            .unwrap()
            .starts_with("body.skip_homeserver_check: must satisfy type"),
        "{refused}"
    );
    let check = std::panic::catch_unwind(|| s.assert_no_contract_violations());
    assert!(check.is_err(), "the violation went unnoticed");
}

/// Issue 13, item 1: users who log in through an upstream identity provider
/// need no password; their links are kept exactly as declared.
#[test]
fn an_sso_user_is_created_without_a_password_and_its_links_kept_exactly() {
    let s = Server::start(
        "mas",
        &[
            "--upstream-provider",
            "Corporate SSO",
            "--upstream-provider",
            "GitHub",
        ],
    );
    let (corporate, github) = (
        s.mas_provider_id("Corporate SSO"),
        s.mas_provider_id("GitHub"),
    );
    let sso = json!({"username": "sso-user", "admin": true, "_ansible_diff": true,
                     "upstream_links": [{"provider": "Corporate SSO", "subject": "u-123"}]});
    let check = s.mas_module(check_mode(sso.clone()));
    assert_eq!(
        check.assert_changed().actions(0),
        ["created", "upstream link added"]
    );
    assert!(s.mas_user("sso-user").is_none());

    let run = s.mas_module(sso.clone());
    assert_eq!(
        run.assert_changed().actions(0),
        ["created", "upstream link added"]
    );
    assert_eq!(
        run.diff_of(0, "upstream_links").1,
        json!([{"provider": "Corporate SSO", "subject": "u-123"}])
    );
    assert_eq!(
        s.mas_upstream_links("sso-user"),
        [(corporate.clone(), "u-123".to_string())]
    );
    assert!(s.mas_is_admin("sso-user"));
    s.mas_module(sso).assert_unchanged();

    // By ID as well as by name; what is not declared is removed.
    let moved = json!({"username": "sso-user", "_ansible_diff": true,
                       "upstream_links": [{"provider": github, "subject": "gh-9"}]});
    let check = s.mas_module(check_mode(moved.clone()));
    assert_eq!(
        check.assert_changed().actions(0),
        ["upstream link added", "upstream link removed"]
    );
    let run = s.mas_module(moved.clone());
    assert_eq!(
        run.assert_changed().actions(0),
        ["upstream link added", "upstream link removed"]
    );
    assert_eq!(
        run.diff_of(0, "upstream_links"),
        (
            json!([{"provider": corporate, "subject": "u-123"}]),
            json!([{"provider": github, "subject": "gh-9"}])
        )
    );
    assert_eq!(
        s.mas_upstream_links("sso-user"),
        [(github, "gh-9".to_string())]
    );
    s.mas_module(moved).assert_unchanged();
    let none = json!({"username": "sso-user", "upstream_links": []});
    assert_eq!(
        s.mas_module(none.clone()).assert_changed().actions(0),
        ["upstream link removed"]
    );
    assert!(s.mas_upstream_links("sso-user").is_empty());
    s.mas_module(none).assert_unchanged();

    // Linked again, a deactivated SSO user is reactivated without a password.
    let back = json!({"username": "sso-user", "upstream_links": [{"provider": "GitHub", "subject": "gh-9"}]});
    s.mas_module(json!({"username": "sso-user", "state": "absent"}))
        .assert_changed();
    assert_eq!(
        s.mas_module(back.clone()).assert_changed().actions(0),
        ["reactivated", "upstream link added"]
    );
    assert!(!s.mas_is_deactivated("sso-user"));
    s.mas_module(back).assert_unchanged();

    // Still a password or a link to create a user.
    s.mas_module(json!({"username": "sso-none", "upstream_links": []}))
        .assert_failed_with(
            "needs a password: add password to this user (or, on MAS, upstream_links)",
        );
    assert!(s.mas_user("sso-none").is_none());
    s.assert_no_contract_violations();
}

#[test]
fn an_unknown_upstream_provider_is_named_before_anything_is_written() {
    let s = Server::start("mas", &["--upstream-provider", "Corporate SSO"]);
    let run = s.mas_module(json!({"users": [
        {"username": "sso-first", "password": "sso first ferry granite"},
        {"username": "sso-second", "upstream_links": [
            {"provider": "Corporate SSO", "subject": "a"}, {"provider": "Gitlab", "subject": "b"}]},
    ]}));
    run.assert_failed_with(
        "users[1].upstream_links[1].provider: MAS has no upstream provider \"Gitlab\"",
    )
    .assert_failed_with("Corporate SSO");
    assert!(s.mas_user("sso-first").is_none() && s.mas_user("sso-second").is_none());
    s.assert_no_contract_violations();
}

// ---- undeclared: each test has a contract server of its own, since it
// locks or deactivates every user it does not declare ----

/// The admin API writes (anything but a read) in the request log from `from` on.
fn writes_since(s: &Server, from: usize) -> Vec<Value> {
    s.mas_request_log()[from..]
        .iter()
        .filter(|e| e["method"] != json!("GET") && e["path"] != json!("/oauth2/token"))
        .cloned()
        .collect()
}

#[test]
fn undeclared_lock_then_deactivate_spares_the_declared_the_ignored_and_the_deactivated() {
    let s = Server::start("mas", &[]);
    let everyone = json!({"users": [
        {"username": "kept", "password": "kept lupine granite"},
        {"username": "eve", "password": "eve lupine granite"},
        {"username": "mallory", "password": "mallory lupine granite"},
        {"username": "bot-1", "password": "bot one lupine granite"},
        {"username": "gone", "password": "gone lupine granite"},
    ]});
    s.mas_module(everyone).assert_changed();
    s.mas_module(json!({"username": "gone", "state": "absent"}))
        .assert_changed();
    let lock = json!({"users": [{"username": "kept"}], "undeclared": "lock",
        "undeclared_ignore": ["bot-[0-9]+"]});

    let mut check = check_mode(lock.clone());
    check["_ansible_diff"] = json!(true);
    let from = s.mas_request_log().len();
    let predicted = s.mas_module(check);
    predicted.assert_changed();
    assert_eq!(
        predicted.undeclared(),
        ["@eve:localhost", "@mallory:localhost"]
    );
    assert_eq!(predicted.actions(1), ["locked"]);
    assert_eq!(predicted.diff_of(1, "locked"), (json!(false), json!(true)));
    assert_eq!(writes_since(&s, from), Vec::<Value>::new());
    assert!(!s.mas_is_locked("eve") && !s.mas_is_locked("mallory"));

    let run = s.mas_module(lock.clone());
    run.assert_changed();
    assert_eq!(run.undeclared(), ["@eve:localhost", "@mallory:localhost"]);
    assert_eq!(run.actions(0), Vec::<String>::new());
    for (user, password) in [
        ("eve", "eve lupine granite"),
        ("mallory", "mallory lupine granite"),
    ] {
        assert_eq!(
            s.login(user, password).map(|_| ()),
            Err((401, "M_USER_LOCKED".to_string()))
        );
    }
    assert!(s.can_log_in("kept", "kept lupine granite"));
    assert!(s.can_log_in("bot-1", "bot one lupine granite"));
    assert!(!s.mas_is_locked("gone"), "a deactivated user was locked");
    assert!(s.mas_is_deactivated("gone"));

    let again = s.mas_module(lock);
    again.assert_unchanged();
    assert_eq!(again.undeclared(), Vec::<String>::new());

    // Deactivating takes the locked users too, and a new undeclared one.
    s.mas_module(json!({"username": "trudy", "password": "trudy lupine granite"}))
        .assert_changed();
    let deactivate = json!({"users": [{"username": "kept"}], "undeclared": "deactivate",
        "undeclared_ignore": ["bot-[0-9]+"]});
    let run = s.mas_module(deactivate.clone());
    run.assert_changed();
    assert_eq!(
        run.undeclared(),
        ["@eve:localhost", "@mallory:localhost", "@trudy:localhost"]
    );
    assert_eq!(run.actions(1), ["deactivated"]);
    for gone in ["eve", "mallory", "trudy"] {
        assert!(s.mas_is_deactivated(gone), "{gone} is still active");
    }
    for spared in ["kept", "bot-1"] {
        assert!(!s.mas_is_deactivated(spared) && !s.mas_is_locked(spared));
    }
    s.mas_module(deactivate).assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn undeclared_beyond_undeclared_max_fails_before_any_change_and_a_raised_limit_works() {
    let s = Server::start("mas", &[]);
    for user in ["one", "two", "three"] {
        s.mas_module(json!({"username": user, "password": format!("{user} lupine granite")}))
            .assert_changed();
    }
    let lock = |max: u64| {
        json!({"users": [{"username": "newcomer", "password": "newcomer lupine granite"}],
            "undeclared": "lock", "undeclared_max": max})
    };
    let from = s.mas_request_log().len();
    let refused = s.mas_module(lock(2));
    refused.assert_failed_with("raise undeclared_max to 3");
    assert!(
        refused.msg().starts_with(
            "undeclared: lock would lock 3 users nobody declared, more than undeclared_max (2); nothing was changed"
        ),
        "{}",
        refused.msg()
    );
    assert_eq!(writes_since(&s, from), Vec::<Value>::new());
    assert!(
        s.mas_user("newcomer").is_none(),
        "the declared user was created"
    );

    let run = s.mas_module(lock(3));
    run.assert_changed();
    assert_eq!(
        run.undeclared(),
        ["@one:localhost", "@three:localhost", "@two:localhost"]
    );
    for user in ["one", "two", "three"] {
        assert!(s.mas_is_locked(user), "{user} is not locked");
    }
    assert!(!s.mas_is_locked("newcomer"));
    s.mas_module(lock(0)).assert_unchanged();
    s.assert_no_contract_violations();
}

/// MAS holds more users than one page of its list: every page is read.
#[test]
fn undeclared_reads_every_page_of_mas_user_list() {
    let s = Server::start("mas", &[]);
    let users: Vec<Value> = (0..120)
        .map(|i| json!({"username": format!("paged{i:03}"), "password": format!("paged lupine granite {i}")}))
        .collect();
    s.mas_module(json!({"users": users})).assert_changed();
    let from = s.mas_request_log().len();
    let run = s.mas_module(check_mode(
        json!({"users": users[..115].to_vec(), "undeclared": "lock"}),
    ));
    run.assert_changed();
    assert_eq!(
        run.undeclared(),
        (115..120)
            .map(|i| format!("@paged{i:03}:localhost"))
            .collect::<Vec<_>>()
    );
    let lists = s.mas_request_log()[from..]
        .iter()
        .filter(|e| e["operation"] == json!("listUsers"))
        .count();
    // Two pages for undeclared, two for the declared users' bulk read.
    assert_eq!(lists, 4);
    s.assert_no_contract_violations();
}

/// A bot's access_token_file holds a working personal access token of it:
/// written once, kept while MAS accepts it, replaced when its session was
/// revoked (a new session) or its token expired (the session regenerated).
#[test]
fn access_token_file_keeps_a_valid_personal_token_of_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let s = mas();
    let file = s.data_dir.join("bot-tokens").join("token-bot");
    let session_file = s.data_dir.join("bot-tokens").join("token-bot.session");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    let bot = json!({"username": "token-bot", "password": "token bot lupine granite",
                     "access_token_file": file});
    let written = ["created", "access token written"];
    assert_eq!(
        s.mas_module(check_mode(bot.clone()))
            .assert_changed()
            .actions(0),
        written
    );
    assert!(!file.exists() && s.mas_user("token-bot").is_none());

    assert_eq!(
        s.mas_module(bot.clone()).assert_changed().actions(0),
        written
    );
    let (token, id) = (read(&file), read(&session_file));
    assert!(token.starts_with("mpt_"), "not a personal access token");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let session = |id: &str| {
        let (status, body) = s.get(
            &format!("/api/admin/v1/personal-sessions/{id}"),
            Some(&s.mas_harness_token()),
        );
        assert_eq!(status, 200, "{body}");
        body["data"]["attributes"].clone()
    };
    let user_id = s.mas_user("token-bot").unwrap()["id"].clone();
    assert_eq!(session(&id)["actor_user_id"], user_id);
    s.mas_module(bot.clone()).assert_unchanged();
    assert_eq!(read(&file), token);

    // Revoked in MAS: a new session, and a new token.
    let revoke = format!("/api/admin/v1/personal-sessions/{id}/revoke");
    let (status, body) = s.post(&revoke, Some(&s.mas_harness_token()), json!({}));
    assert_eq!(status, 200, "{body}");
    let predicted = s.mas_module(check_mode(bot.clone()));
    assert_eq!(
        predicted.assert_changed().actions(0),
        ["access token written"]
    );
    assert_eq!(read(&file), token, "check mode wrote the file");
    let run = s.mas_module(bot.clone());
    assert_eq!(run.assert_changed().actions(0), ["access token written"]);
    let (renewed, new_id) = (read(&file), read(&session_file));
    assert!(renewed != token && new_id != id);
    assert_eq!(session(&new_id)["revoked_at"], json!(null));
    s.mas_module(bot.clone()).assert_unchanged();

    // Expired: the same session is regenerated.
    let regenerate = format!("/api/admin/v1/personal-sessions/{new_id}/regenerate");
    let (status, body) = s.post(
        &regenerate,
        Some(&s.mas_harness_token()),
        json!({"expires_in": 1}),
    );
    assert_eq!(status, 201, "{body}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let run = s.mas_module(bot.clone());
    assert_eq!(run.assert_changed().actions(0), ["access token written"]);
    assert!(read(&file) != renewed && read(&session_file) == new_id);
    assert_eq!(session(&new_id)["expires_at"], json!(null));
    s.mas_module(bot).assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn access_token_file_is_refused_by_name_on_homeservers() {
    for homeserver in ["synapse", "dendrite"] {
        harness::run_module(
            json!({"homeserver": homeserver, "homeserver_url": "http://127.0.0.1:9", "wait_timeout": 0,
                   "admin_token": "syt_x", "username": "alice", "access_token_file": "/tmp/x"}),
            vec!["syt_x".into()],
        )
        .assert_failed_with("access_token_file: personal access tokens are kept only with homeserver: mas");
    }
}

/// A re-run of many unchanged users reads MAS's user and e-mail lists a
/// page at a time, not each user alone.
#[test]
fn a_rerun_of_many_users_reads_mas_in_pages() {
    let s = Server::start("mas", &["--upstream-provider", "Corporate SSO"]);
    let mut users: Vec<Value> = (0..60)
        .map(|i| {
            json!({"username": format!("paged{i:02}"), "password": format!("paged amber fjord {i}"),
                   "admin": i % 7 == 0, "email": format!("paged{i}@example.com")})
        })
        .collect();
    // Listed, a display name is not compared either (MAS cannot show it).
    users[3]["displayname"] = json!("Paged Three");
    for (i, user) in users.iter_mut().enumerate().take(15).skip(5) {
        user["upstream_links"] = json!([{"provider": "Corporate SSO", "subject": format!("p{i}")}]);
    }
    s.mas_module(json!({"users": users})).assert_changed();
    let before = s.mas_request_log().len();
    let again = s.mas_module(json!({"users": users}));
    again.assert_unchanged();
    let log = s.mas_request_log();
    let count = |operation: &str| {
        log[before..]
            .iter()
            .filter(|e| e["operation"] == json!(operation))
            .count()
    };
    // Nobody is read alone, linked users included: one page of each list.
    assert_eq!(count("getUserByUsername") + count("getUser"), 0);
    assert_eq!(
        (count("listUsers"), count("listUserEmails")),
        (1, 1),
        "one page of users and one of e-mails"
    );
    assert_eq!(count("listUpstreamOAuthLinks"), 1, "one page of links");

    // Changes found through the lists are made as from single reads.
    let mut changed = users.clone();
    changed[7]["admin"] = json!(false);
    changed[8]["state"] = json!("absent");
    changed[9]["upstream_links"] = json!([]);
    let run = s.mas_module(json!({"users": changed}));
    assert_eq!(run.assert_changed().actions(7), ["demoted"]);
    assert_eq!(run.actions(8), ["deactivated"]);
    assert_eq!(run.actions(9), ["upstream link removed"]);
    assert!(!s.mas_is_admin("paged07") && s.mas_is_deactivated("paged08"));
    assert!(s.mas_upstream_links("paged09").is_empty());
    assert_eq!(s.mas_upstream_links("paged10").len(), 1);
    s.assert_no_contract_violations();
}

/// MAS's login limit is a wait MAS asks for, not a server that is down: a
/// bulk password check under MAS's defaults outlasts wait_timeout and
/// completes, and its result says how long it waited and why.
#[test]
fn a_bulk_password_check_waits_out_mas_login_limit_beyond_wait_timeout() {
    let s = Server::start("mas", &["--default-rate-limits"]);
    let users: Vec<Value> = (0..5)
        .map(|i| json!({"username": format!("bulk-check{i}"), "password": format!("bulk check lupine {i}"),
                        "update_password": "always"}))
        .collect();
    let created = s.mas_module(json!({"users": users}));
    assert_eq!(created.assert_changed().output["waited"], json!(null));
    let started = Instant::now();
    let run = s.mas_module(json!({"users": users, "wait_timeout": 2}));
    run.assert_unchanged();
    assert!(started.elapsed().as_secs() > 2, "{:?}", started.elapsed());
    let waited = &run.output["waited"];
    assert!(waited["seconds"].as_u64().unwrap() >= 2, "{waited}");
    assert!(
        waited["reason"]
            .as_str()
            .unwrap()
            .contains("rate_limiting.login"),
        "{waited}"
    );
    s.assert_no_contract_violations();
}

/// A token file others could swap is refused, naming access_token_file,
/// before MAS issues any token.
#[test]
fn access_token_file_in_a_folder_others_can_write_is_refused_before_any_token() {
    use std::os::unix::fs::PermissionsExt;
    // Its own server, so that its request log holds no other test's sessions.
    let s = Server::start("mas", &[]);
    let shared = s.data_dir.join("shared-tokens");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    s.mas_module(json!({"username": "shared-bot", "password": "shared bot lupine granite"}))
        .assert_changed();
    s.mas_module(json!({"username": "shared-bot", "access_token_file": shared.join("token")}))
        .assert_failed_with("access_token_file: the folder")
        .assert_failed_with("can be written by other users (mode 0777)");
    assert!(!shared.join("token").exists());
    let log = s.mas_request_log();
    assert!(!log
        .iter()
        .any(|e| e["operation"] == json!("createPersonalSession")));
    s.assert_no_contract_violations();
}

/// `emails` on MAS: exactly the declared addresses, each added verified
/// (`addUserEmail`) or removed (`deleteUserEmail`), compared ignoring case.
#[test]
fn emails_are_kept_exactly_as_declared() {
    let s = mas();
    let sorted = |localpart: &str| {
        let mut emails = s.mas_emails(localpart);
        emails.sort();
        emails
    };
    let two = json!({"username": "two-mails", "password": "two mails lupine granite",
                     "emails": ["work@example.com", "home@example.org"]});
    let created = s.mas_module(two.clone());
    assert_eq!(
        created.assert_changed().actions(0),
        ["created", "emails changed"]
    );
    assert_eq!(
        sorted("two-mails"),
        ["home@example.org", "work@example.com"]
    );
    s.mas_module(two).assert_unchanged();
    // Another order and other case are the same addresses.
    s.mas_module(json!({"username": "two-mails",
                        "emails": ["HOME@example.org", "work@Example.com"]}))
        .assert_unchanged();

    let replaced = s.mas_module(json!({"username": "two-mails",
                                       "emails": ["work@example.com", "new@example.net"]}));
    assert_eq!(replaced.assert_changed().actions(0), ["emails changed"]);
    assert_eq!(sorted("two-mails"), ["new@example.net", "work@example.com"]);

    let none = json!({"username": "two-mails", "emails": []});
    assert_eq!(
        s.mas_module(none.clone()).assert_changed().actions(0),
        ["emails changed"]
    );
    assert!(s.mas_emails("two-mails").is_empty());
    s.mas_module(none).assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn check_mode_and_diff_show_the_emails_and_write_none() {
    let s = mas();
    let new = json!({"username": "mail-checked", "password": "mail checked amber kettle",
                     "emails": ["one@example.com", "two@example.com"],
                     "_ansible_diff": true});
    let predicted = s.mas_module(check_mode(new.clone()));
    assert_eq!(
        predicted.assert_changed().actions(0),
        ["created", "emails changed"]
    );
    assert_eq!(
        predicted.diff_of(0, "emails").1,
        json!(["one@example.com", "two@example.com"])
    );
    assert!(s.mas_user("mail-checked").is_none());

    s.mas_module(new).assert_changed();
    let change = json!({"username": "mail-checked", "emails": ["two@example.com", "three@example.com"],
                        "_ansible_diff": true});
    let predicted = s.mas_module(check_mode(change.clone()));
    assert_eq!(predicted.assert_changed().actions(0), ["emails changed"]);
    let (before, after) = predicted.diff_of(0, "emails");
    assert_eq!(before, json!(["one@example.com", "two@example.com"]));
    assert_eq!(after, json!(["two@example.com", "three@example.com"]));
    let mut emails = s.mas_emails("mail-checked");
    emails.sort();
    assert_eq!(emails, ["one@example.com", "two@example.com"]);

    let run = s.mas_module(change);
    assert_eq!(run.assert_changed().diff_of(0, "emails"), (before, after));
    s.assert_no_contract_violations();
}

#[test]
fn an_address_of_another_user_fails_naming_it_and_changes_nothing() {
    let s = mas();
    s.mas_module(
        json!({"username": "mail-holder", "password": "mail holder quiet orbit",
                        "emails": ["held@example.com"]}),
    )
    .assert_changed();
    s.mas_module(
        json!({"username": "mail-taker", "password": "mail taker ferry lupine",
                        "emails": ["own@example.com"]}),
    )
    .assert_changed();
    let taking = json!({"username": "mail-taker",
                        "emails": ["own@example.com", "extra@example.com", "Held@Example.com"]});
    // Named as declared: MAS keeps addresses as given.
    let taken_as_declared =
        "the e-mail address Held@Example.com already belongs to another MAS user";
    s.mas_module(check_mode(taking.clone()))
        .assert_failed_with(taken_as_declared);
    s.mas_module(taking).assert_failed_with(taken_as_declared);
    assert_eq!(s.mas_emails("mail-taker"), ["own@example.com"]);
    assert_eq!(s.mas_emails("mail-holder"), ["held@example.com"]);

    // A user the run would create is not created.
    let taken = "the e-mail address held@example.com already belongs to another MAS user";
    let new = json!({"username": "mail-newcomer", "password": "mail newcomer granite fjord",
                     "emails": ["held@example.com"]});
    s.mas_module(check_mode(new.clone()))
        .assert_failed_with(taken);
    s.mas_module(new).assert_failed_with(taken);
    assert!(s.mas_user("mail-newcomer").is_none());
    s.assert_no_contract_violations();
}

#[test]
fn email_and_emails_together_are_refused_naming_both_before_any_request() {
    // Its own server: the request log of the shared one grows with the
    // tests that run meanwhile.
    let s = Server::start("mas", &[]);
    let before = s.mas_request_log().len();
    s.mas_module(
        json!({"users": [{"username": "mail-both", "password": "mail both amber fjord",
                                   "email": "a@example.com", "emails": ["a@example.com"]}]}),
    )
    .assert_failed_with("users[0].email: declare either email");
    s.mas_module(json!({"username": "mail-both", "email": "a@example.com", "emails": []}))
        .assert_failed_with("or emails");
    assert_eq!(s.mas_request_log().len(), before, "a request was sent");
    s.assert_no_contract_violations();
}

/// From 20 users on, every user's addresses come from MAS's e-mail list,
/// and an address another user holds is found there too.
#[test]
fn many_users_emails_are_read_from_the_list_and_kept_exactly() {
    let s = Server::start("mas", &[]);
    let mut users: Vec<Value> = (0..25)
        .map(|i| {
            json!({"username": format!("listed{i:02}"), "password": format!("listed amber fjord {i}"),
                   "emails": [format!("listed{i}@example.com"), format!("listed{i}@example.org")]})
        })
        .collect();
    s.mas_module(json!({"users": users})).assert_changed();
    let before = s.mas_request_log().len();
    s.mas_module(json!({"users": users})).assert_unchanged();
    let log = s.mas_request_log();
    let count = |operation: &str| {
        log[before..]
            .iter()
            .filter(|e| e["operation"] == json!(operation))
            .count()
    };
    assert_eq!(count("getUserByUsername"), 0);
    assert_eq!((count("listUsers"), count("listUserEmails")), (1, 1));

    users[3]["emails"] = json!(["listed3@example.com", "third@example.net"]);
    users[4]["emails"] = json!([]);
    users[5]["emails"] = json!(["listed5@example.com", "listed6@example.org"]);
    // Declared for two users in one run, it would be refused before anything
    // is sent; here listed06 holds it without declaring it.
    users[6].as_object_mut().unwrap().remove("emails");
    let run = s.mas_module(json!({"users": users}));
    run.assert_failed_with(
        "the e-mail address listed6@example.org already belongs to another MAS user",
    );
    assert_eq!(run.actions(3), ["emails changed"]);
    assert_eq!(run.actions(4), ["emails changed"]);
    let mut third = s.mas_emails("listed03");
    third.sort();
    assert_eq!(third, ["listed3@example.com", "third@example.net"]);
    assert!(s.mas_emails("listed04").is_empty());
    assert_eq!(s.mas_emails("listed05").len(), 2);
    assert_eq!(s.mas_emails("listed06").len(), 2);
    s.assert_no_contract_violations();
}

/// Among 20 users and more, an address that differs from a held one only
/// in the case of a non-ASCII letter is in doubt (a database of the C
/// locale, as matrix-docker-ansible-deploy makes MAS's, takes it for
/// another; this MAS, of a Unicode locale, for the same): MAS's own lookup
/// decides, here that it is the one held, its user's or another's.
#[test]
fn many_users_addresses_in_doubt_are_decided_by_mas_lookup() {
    let s = Server::start("mas", &[]);
    let mut users: Vec<Value> = (0..21)
        .map(|i| {
            json!({"username": format!("greek{i:02}"), "password": format!("greek amber fjord {i}"),
                   "emails": [format!("ΔΕΛΤΑ{i}@example.gr")]})
        })
        .collect();
    s.mas_module(json!({"users": users})).assert_changed();
    users[3]["emails"] = json!(["δελτα3@Example.GR"]);
    s.mas_module(json!({"users": users})).assert_unchanged();
    assert_eq!(s.mas_emails("greek03"), ["ΔΕΛΤΑ3@example.gr"]);
    users[4]["emails"] = json!(["Δελτα5@example.gr"]);
    // greek05 keeps its address undeclared: declared for both, it is refused up front.
    users[5].as_object_mut().unwrap().remove("emails");
    s.mas_module(json!({"users": users})).assert_failed_with(
        "the e-mail address Δελτα5@example.gr already belongs to another MAS user",
    );
    assert_eq!(s.mas_emails("greek04"), ["ΔΕΛΤΑ4@example.gr"]);
    assert_eq!(s.mas_emails("greek05"), ["ΔΕΛΤΑ5@example.gr"]);
    s.assert_no_contract_violations();
}

/// MAS's file options, given a FIFO no one writes, /dev/zero or a file of
/// 1 GiB: the client secret's file, a bot's access_token_file and the
/// `.session` file beside it. Each run ends at once with an error naming
/// the option, and MAS is asked for nothing that changes it.
#[test]
fn no_mas_file_option_blocks_on_a_fifo_or_reads_without_bound() {
    let s = mas();
    let files = harness::HostileFiles::in_folder(&s.data_dir.join("hostile-files"));
    let limit = std::time::Duration::from_secs(30);
    for (path, problem) in files.cases(true) {
        let run = s.mas_module_within(
            limit,
            json!({"mas_client_secret": null, "mas_client_secret_file": path,
                   "username": "hostile-files", "password": "hostile files lupine granite"}),
        );
        run.assert_failed_with("mas_client_secret_file: ")
            .assert_failed_with(problem);
        // The token file itself, and the session file beside a token file.
        let bot = json!({"username": "hostile-files", "password": "hostile files lupine granite",
                         "access_token_file": path});
        s.mas_module_within(limit, bot)
            .assert_failed_with("access_token_file: ")
            .assert_failed_with(problem);
    }
    let tokens = s.data_dir.join("hostile-session");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(tokens.join("token"), "mpt_not_checked").unwrap();
    let session = tokens.join("token.session");
    assert!(std::process::Command::new("mkfifo")
        .arg(&session)
        .status()
        .unwrap()
        .success());
    s.mas_module_within(
        limit,
        json!({"username": "hostile-files", "password": "hostile files lupine granite",
               "access_token_file": tokens.join("token")}),
    )
    .assert_failed_with("access_token_file: ")
    .assert_failed_with("is a FIFO (named pipe), not a regular file");
    assert!(s.mas_user("hostile-files").is_none());
    s.assert_no_contract_violations();
}

/// A new bot whose token file would sit in a folder others can write:
/// check mode predicts the refusal, and the real run refuses it before
/// creating the user (no half-made bot without its token).
#[test]
fn access_token_file_in_a_folder_others_can_write_is_refused_before_the_user_is_created() {
    use std::os::unix::fs::PermissionsExt;
    let s = mas();
    let shared = s.data_dir.join("shared-new-bot");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bot = json!({"username": "shared-new-bot", "password": "shared new bot lupine granite",
                     "access_token_file": shared.join("token")});
    for run in [s.mas_module(check_mode(bot.clone())), s.mas_module(bot)] {
        run.assert_failed_with("access_token_file: the folder")
            .assert_failed_with("can be written by other users (mode 0777)");
        assert_eq!(run.output["changed"], json!(false), "{}", run.stdout);
    }
    assert!(s.mas_user("shared-new-bot").is_none());
    assert!(!shared.join("token").exists());
    s.assert_no_contract_violations();
}

/// A new bot whose token file would sit in a folder that cannot be
/// written, even by root (immutable, `chattr +i`): refused in check mode
/// and before the user is created, as a folder others can write is.
#[test]
fn access_token_file_in_a_folder_that_cannot_be_written_is_refused_before_the_user_is_created() {
    struct Immutable(std::path::PathBuf);
    impl Drop for Immutable {
        fn drop(&mut self) {
            std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status()
                .ok();
        }
    }
    let s = mas();
    let folder = s.data_dir.join("immutable-bot-tokens");
    std::fs::create_dir_all(&folder).unwrap();
    let status = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&folder)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "chattr +i failed (e2fsprogs, tools/bootstrap)"
    );
    let _restore = Immutable(folder.clone());
    // The folder itself, and one inside it that would have to be made.
    for file in [folder.join("token"), folder.join("bots").join("token")] {
        let bot = json!({"username": "immutable-bot", "password": "immutable bot lupine granite",
                         "access_token_file": file});
        for run in [s.mas_module(check_mode(bot.clone())), s.mas_module(bot)] {
            run.assert_failed_with("access_token_file: cannot keep the token in")
                .assert_failed_with("make its folder writable");
            assert_eq!(run.output["changed"], json!(false), "{}", run.stdout);
        }
    }
    assert!(s.mas_user("immutable-bot").is_none());
    s.assert_no_contract_violations();
}

/// Issue 21, item 10: MAS accepts several links to one provider for one
/// user, so a link is replaced by adding the new one before removing the
/// old; a subject another user holds is found before anything is written,
/// in check mode too, and the user keeps the link it logs in with.
#[test]
fn a_subject_another_user_holds_is_refused_before_any_write_and_links_are_added_first() {
    let s = Server::start("mas", &["--upstream-provider", "Corporate SSO"]);
    let corporate = s.mas_provider_id("Corporate SSO");
    let link = |subject: &str| json!([{"provider": "Corporate SSO", "subject": subject}]);
    s.mas_module(json!({"users": [
        {"username": "sso-holder", "upstream_links": link("held-1")},
        {"username": "sso-mover", "upstream_links": link("own-1")}]}))
        .assert_changed();

    let taken = "the subject \"held-1\" of the upstream provider \"Corporate SSO\" is already linked to another MAS user";
    let mover = json!({"username": "sso-mover", "upstream_links": link("held-1")});
    s.mas_module(check_mode(mover.clone()))
        .assert_failed_with(taken);
    let writes_before = writes(&s);
    let run = s.mas_module(mover);
    run.assert_failed_with(taken);
    assert_eq!(run.actions(0), Vec::<String>::new());
    assert_eq!(run.output["changed"], json!(false));
    assert_eq!(writes(&s), writes_before, "a write was sent");
    assert_eq!(
        s.mas_upstream_links("sso-mover"),
        [(corporate.clone(), "own-1".to_string())]
    );

    let newcomer = json!({"username": "sso-newcomer", "upstream_links": link("held-1")});
    s.mas_module(check_mode(newcomer.clone()))
        .assert_failed_with(taken);
    let run = s.mas_module(newcomer);
    run.assert_failed_with(taken);
    assert_eq!(run.actions(0), Vec::<String>::new());
    assert!(s.mas_user("sso-newcomer").is_none());

    // A free subject replaces the old one: added first, then the old removed.
    let log_start = s.mas_request_log().len();
    let run = s.mas_module(json!({"username": "sso-mover", "upstream_links": link("own-2")}));
    assert_eq!(
        run.assert_changed().actions(0),
        ["upstream link added", "upstream link removed"]
    );
    let order: Vec<Value> = s.mas_request_log()[log_start..]
        .iter()
        .filter(|e| e["method"] != json!("GET") && e["path"] != json!("/oauth2/token"))
        .map(|e| e["operation"].clone())
        .collect();
    assert_eq!(
        order,
        [
            json!("addUpstreamOAuthLink"),
            json!("deleteUpstreamOAuthLink")
        ]
    );
    assert_eq!(
        s.mas_upstream_links("sso-mover"),
        [(corporate, "own-2".to_string())]
    );
    s.assert_no_contract_violations();
}

/// The admin API writes the contract server logged so far.
fn writes(s: &Server) -> usize {
    s.mas_request_log()
        .iter()
        .filter(|e| {
            e["method"] != json!("GET") && e["path"].as_str().unwrap().starts_with("/api/admin/v1/")
        })
        .count()
}

/// Issue 21, item 6: a new user whose later step fails lists its creation.
#[test]
fn a_creation_that_landed_is_listed_when_a_later_step_fails() {
    let s = mas();
    let proxy = harness::FaultProxy::start(
        &s.url,
        json!([{"method": "POST", "path": "/api/admin/v1/user-emails", "action": "fail_500"}]),
    );
    let mut args = json!({"username": "landed-mas", "password": "landed ferry granite 7",
                          "emails": ["landed-mas@example.com"]});
    args["mas_url"] = json!(proxy.url);
    let run = s.mas_module(args);
    run.assert_failed_with("landed-mas@example.com");
    assert_eq!(run.actions(0), ["created"]);
    assert_eq!(run.output["changed"], json!(true));
    assert!(s.mas_user("landed-mas").is_some());
}

/// Issue 21, item 11: `email` and `emails` keep an address as given (MAS
/// stores it so and compares without regard to case), and a MAS whose
/// version is no release number is not taken for one older than 1.18.
#[test]
fn emails_keep_the_case_given_like_email() {
    let s = mas();
    let user = json!({"username": "mixed-case", "password": "mixed case ferry 9",
                      "emails": ["Mixed.Case@Example.com"]});
    s.mas_module(user).assert_changed();
    assert_eq!(s.mas_emails("mixed-case"), ["Mixed.Case@Example.com"]);
    s.mas_module(json!({"username": "mixed-case", "emails": ["mixed.case@example.COM"]}))
        .assert_unchanged();
    s.assert_no_contract_violations();
}

#[test]
fn a_mas_without_a_release_version_takes_display_names() {
    // What MAS reports when built without git metadata (vergen's placeholder).
    let s = Server::start("mas", &["--mas-version", "VERGEN_IDEMPOTENT_OUTPUT"]);
    let run = s.mas_module(
        json!({"username": "unversioned", "password": "unversioned ferry 5",
                                  "displayname": "Un Versioned"}),
    );
    assert_eq!(run.assert_changed().actions(0), ["created"]);
    assert_eq!(
        s.mas_homeserver_displayname("unversioned"),
        json!("Un Versioned")
    );
    s.assert_no_contract_violations();
}

/// MAS takes any non-ASCII letter in an address (lettre's check, the
/// email_address crate) and compares `LOWER(email)` in its database; in a
/// Unicode locale, as this MAS's, each character alone: `ΝΙΚΟΣ` is `νικοσ`
/// there, not the word-final `νικος`. The module's own rule is the C
/// locale's (ASCII only), so MAS's lookup decides these.
#[test]
fn a_greek_address_is_kept_as_given_and_compared_as_mas_compares_it() {
    let s = mas();
    let nikos = json!({"username": "mas-nikos", "password": "nikos ferry granite 3",
                       "emails": ["ΝΙΚΟΣ@example.gr"]});
    s.mas_module(nikos.clone()).assert_changed();
    assert_eq!(s.mas_emails("mas-nikos"), ["ΝΙΚΟΣ@example.gr"]);
    s.mas_module(nikos).assert_unchanged();
    s.mas_module(json!({"username": "mas-nikos", "emails": ["νικοσ@Example.GR"]}))
        .assert_unchanged();
    s.mas_module(
        json!({"username": "mas-nikos-2", "password": "nikos ferry granite 4",
                        "emails": ["Νικοσ@example.gr"]}),
    )
    .assert_failed_with("the e-mail address Νικοσ@example.gr already belongs to another MAS user");
    assert!(s.mas_user("mas-nikos-2").is_none());
    s.assert_no_contract_violations();
}

/// Two users declaring addresses that a MAS database in a Unicode locale
/// takes for one (`ΝΙΚΟΣ` and `νικοσ`; in mdad's `C` locale they are two)
/// could not both be made true there: refused before anything is sent, as
/// the same address in another case is.
#[test]
fn two_users_declaring_addresses_mas_may_take_for_one_are_refused_before_anything_is_sent() {
    let s = mas();
    let twins = json!({"concurrency": 2, "users": [
        {"username": "greek-twin-0", "password": "greek twin ferry 1", "emails": ["ΝΙΚΟΣ@example.gr"]},
        {"username": "greek-twin-1", "password": "greek twin ferry 1", "emails": ["νικοσ@example.gr"]}]});
    s.mas_module(twins).assert_failed_with(
        "users[1].emails[0]: \"νικοσ@example.gr\" is not accepted; use each address for one user only: users[0].emails[0] declares it too",
    );
    for i in 0..2 {
        assert!(s.mas_user(&format!("greek-twin-{i}")).is_none());
    }
    s.assert_no_contract_violations();
}
