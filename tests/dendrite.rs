//! The module against a real Dendrite, on SQLite and on PostgreSQL: each
//! scenario is one line of the contract and runs once per database, each
//! database with its own server (`sqlite::…` and `postgres::…`). What every
//! server shares is in scenarios.rs, written once.

mod harness;

use harness::backend::Dendrite;
use harness::{FaultProxy, Server};
use serde_json::{json, Value};

/// One Dendrite per database for this test binary, with the module's
/// service account already registered.
fn dendrite(database: &str) -> &'static Server {
    Dendrite::shared(database)
}

/// Each scenario below, as a test on each database.
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $scenario() { super::$scenario(super::dendrite("sqlite")) })*
        }
        mod postgres {
            $(#[test] fn $scenario() { super::$scenario(super::dendrite("postgres")) })*
        }
    };
}

on_both_databases!(
    displayname_changes_through_the_users_session_or_the_database,
    twenty_users_in_one_task_then_nothing_to_change,
    bad_input_fails_before_anything_is_sent_and_names_the_field,
    without_the_database_an_admin_change_on_an_existing_user_asks_for_it,
    an_admin_token_alone_manages_but_cannot_create,
    without_the_database_a_deactivated_user_declared_present_fails_clearly,
    a_failed_deactivation_leaves_the_user_as_it_was,
    restrictions_are_refused_by_name_before_any_request,
    ratelimit_is_refused_by_name_before_any_request,
    rooms_are_refused_by_name_before_any_request,
    avatar_is_refused_by_name_before_any_request,
);

fn displayname_changes_through_the_users_session_or_the_database(s: &Server) {
    s.dendrite(json!({"username": "named", "password": "named-password"}))
        .assert_changed();
    // Dendrite names a new user after its localpart, as the plan predicts.
    assert_eq!(
        s.dendrite_account("named").unwrap().displayname.as_deref(),
        Some("named")
    );
    let with_password =
        json!({"username": "named", "password": "named-password", "displayname": "Named One"});
    assert_eq!(
        s.dendrite(with_password.clone())
            .assert_changed()
            .actions(0),
        ["displayname changed"]
    );
    let (status, body) = s.get("/_matrix/client/v3/profile/@named:localhost", None);
    assert_eq!((status, &body["displayname"]), (200, &json!("Named One")));
    s.dendrite(with_password).assert_unchanged();

    let without_password = json!({"username": "named", "displayname": "Named Two"});
    assert_eq!(
        s.dendrite(without_password.clone())
            .assert_changed()
            .actions(0),
        ["displayname changed"]
    );
    assert_eq!(
        s.dendrite_account("named").unwrap().displayname.as_deref(),
        Some("Named Two")
    );
    s.dendrite(without_password).assert_unchanged();
    assert!(s.dendrite_devices("named").is_empty());
}

fn twenty_users_in_one_task_then_nothing_to_change(s: &Server) {
    let users: Vec<_> = (0..20)
        .map(|i| json!({"username": format!("bulk{i:02}"), "password": format!("bulk-password-{i}"), "admin": i % 10 == 0}))
        .collect();
    let run = s.dendrite(json!({"users": users}));
    run.assert_changed();
    assert_eq!(run.msg(), "20 users: 20 changed, 0 already as declared");
    assert!(s.dendrite_is_admin("bulk00") && !s.dendrite_is_admin("bulk01"));
    assert!(s.can_log_in("bulk19", "bulk-password-19"));

    let again = s.dendrite(json!({"users": users}));
    again.assert_unchanged();
    assert_eq!(again.msg(), "20 users: 0 changed, 20 already as declared");
}

fn bad_input_fails_before_anything_is_sent_and_names_the_field(s: &Server) {
    let cases = [
        (
            json!({"username": "bad-type", "password": "long enough", "user_type": "bot"}),
            "user_type: Dendrite has no user types",
        ),
        (
            json!({"users": [{"username": "bad-erase", "state": "absent", "erase": true}]}),
            "users[0].erase: Dendrite cannot erase",
        ),
        (
            json!({"username": "bad-short", "password": "seven77"}),
            "password: Dendrite accepts only passwords of 8 to 512 bytes",
        ),
        (
            json!({"username": "Upper", "password": "long enough"}),
            "upper-case letters",
        ),
    ];
    for (args, expected) in cases {
        s.dendrite(args).assert_failed_with(expected);
    }
    for never in ["bad-type", "bad-erase", "bad-short"] {
        assert!(
            s.dendrite_account(never).is_none(),
            "{never} must not have been created"
        );
    }
    let run = s.dendrite(json!({
        "registration_shared_secret": "not-the-real-secret",
        "token_cache_dir": s.data_dir.join("wrong-secret-cache"),
        "username": "wrong-secret", "password": "irrelevant-pw",
    }));
    run.assert_failed_with("HMAC incorrect: the registration_shared_secret does not match");
    assert!(!run.stdout.contains("not-the-real-secret"));
    s.dendrite(json!({"dendrite_database": "/nonexistent/userapi.db", "username": "x", "password": "long enough"}))
        .assert_failed_with("dendrite_database: unable to open database file");
}

fn without_the_database_an_admin_change_on_an_existing_user_asks_for_it(s: &Server) {
    let without = |args: Value| {
        let mut args = args;
        args["dendrite_database"] = Value::Null;
        s.dendrite(args)
    };
    // Creation needs no database, admin flag included, and neither does a
    // re-run whose declared password shows the flag.
    let user = json!({"username": "no-db", "password": "no-db-password", "admin": true});
    assert_eq!(
        without(user.clone()).assert_changed().actions(0),
        ["created"]
    );
    assert!(s.uses_admin_api("no-db", "no-db-password"));
    without(user).assert_unchanged();

    let expected = "demoting @no-db:localhost needs dendrite_database: the PostgreSQL URL or SQLite path of Dendrite's user API database";
    without(json!({"username": "no-db", "password": "no-db-password", "admin": false}))
        .assert_failed_with(expected);
    let mut check = json!({"username": "no-db", "password": "no-db-password", "admin": false});
    check["_ansible_check_mode"] = json!(true);
    without(check).assert_failed_with(expected);
    without(json!({"username": "no-db", "admin": false})).assert_failed_with(
        "reading whether @no-db:localhost is a server admin without its current password needs dendrite_database",
    );
    without(json!({"username": "no-db", "state": "absent"}))
        .assert_failed_with("state: absent for the existing user @no-db:localhost");
    assert!(s.dendrite_is_admin("no-db"));
    assert!(!s.dendrite_account("no-db").unwrap().deactivated);
    assert!(s.dendrite_devices("no-db").is_empty());

    // What the APIs can do still works without it.
    let always =
        json!({"username": "no-db", "password": "no-db-changed", "update_password": "always"});
    assert_eq!(
        without(always.clone()).assert_changed().actions(0),
        ["password changed"]
    );
    without(always).assert_unchanged();
    assert!(s.dendrite_devices("no-db").is_empty());
    without(json!({"username": "no-db-missing", "state": "absent"})).assert_unchanged();
}

fn an_admin_token_alone_manages_but_cannot_create(s: &Server) {
    s.dendrite(json!({"username": "by-token", "password": "token-first-pw"}))
        .assert_changed();
    let token = s.dendrite_admin_token().to_string();
    let by_token = |args: Value| {
        let mut all = json!({"registration_shared_secret": null, "admin_token": token});
        all.as_object_mut()
            .unwrap()
            .extend(args.as_object().unwrap().clone());
        s.dendrite(all)
    };
    let always = json!({"username": "by-token", "password": "token-second-pw",
                        "update_password": "always", "admin": true});
    assert_eq!(
        by_token(always.clone()).assert_changed().actions(0),
        ["promoted", "password changed"]
    );
    assert!(s.uses_admin_api("by-token", "token-second-pw"));
    by_token(always).assert_unchanged();
    by_token(json!({"username": "token-new", "password": "token-new-pw"}))
        .assert_failed_with("creating @token-new:localhost needs registration_shared_secret");
    // Check mode predicts the same failure instead of "would be created".
    by_token(
        json!({"username": "token-new", "password": "token-new-pw", "_ansible_check_mode": true}),
    )
    .assert_failed_with("creating @token-new:localhost needs registration_shared_secret");
    by_token(json!({"admin_token": "bogus-token", "username": "x"}))
        .assert_failed_with("the homeserver refused the admin token");
}

/// A fresh deployment as Dendrite ships: default rate limits, only the
/// shared secret, no database, and many runs in a row, one of them after
/// the token cache was lost.
#[test]
fn ten_runs_in_a_row_under_default_rate_limits() {
    let s = Server::start_dendrite("sqlite", &["--default-rate-limits"]);
    for run in 0..10 {
        if run == 5 {
            std::fs::remove_dir_all(&s.token_cache_dir).unwrap();
        }
        let users: Vec<_> = (0..6)
            .map(|i| {
                json!({"username": format!("steady{i}"), "password": "steady-password",
                            "admin": i == 0, "update_password": "always"})
            })
            .chain([json!({"username": format!("new{run}"), "password": "new-password"})])
            .collect();
        let outcome = s.dendrite(json!({"users": users, "dendrite_database": null}));
        outcome.assert_changed();
        let expected = if run == 0 { 7 } else { 1 };
        assert_eq!(
            outcome.msg(),
            format!(
                "7 users: {expected} changed, {} already as declared",
                7 - expected
            )
        );
    }
    for user in ["steady0", "steady5", "new9"] {
        assert!(s.dendrite_devices(user).is_empty(), "{user}");
    }
    assert!(s.dendrite_is_admin("steady0") && !s.dendrite_is_admin("steady1"));
    let service = s.dendrite_devices("matrix-user-service");
    assert!(service.len() <= 2, "{service:?}");

    // Sessions unused for long belong to lost caches: the next recovery removes them.
    s.dendrite_age_devices("matrix-user-service");
    std::fs::remove_dir_all(&s.token_cache_dir).unwrap();
    s.dendrite(json!({"username": "steady1", "password": "steady-password", "admin": false, "dendrite_database": null}))
        .assert_unchanged();
    let recovered = s.dendrite_devices("matrix-user-service");
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(!service.contains(&recovered[0]));
}

/// Without the database, Dendrite shows neither the admin flag nor
/// deactivation. A user deactivated behind the module's back (its declared
/// password then no longer logs in) must not be reported "already as
/// declared": the module says it needs the database, and the diff shows what
/// it could not see as unknown.
fn without_the_database_a_deactivated_user_declared_present_fails_clearly(s: &Server) {
    let without = |args: Value| {
        let mut args = args;
        args["dendrite_database"] = Value::Null;
        s.dendrite(args)
    };
    let user = json!({"username": "gone-no-db", "password": "gone-no-db-pw"});
    s.dendrite(user.clone()).assert_changed();
    s.dendrite_deactivate_in_database("gone-no-db");
    let expected = "whether @gone-no-db:localhost is deactivated";
    without(user.clone())
        .assert_failed_with(expected)
        .assert_failed_with("needs dendrite_database");
    let mut check = user.clone();
    check["_ansible_check_mode"] = json!(true);
    without(check).assert_failed_with(expected);
    // What it did not need to read is shown as unknown, never guessed: the
    // admin flag of an active user whose admin flag is not declared.
    s.dendrite(json!({"username": "unseen-no-db", "password": "unseen-no-db-pw", "admin": true}))
        .assert_changed();
    let run = without(
        json!({"username": "unseen-no-db", "password": "unseen-no-db-pw",
                             "_ansible_diff": true}),
    );
    run.assert_unchanged();
    assert_eq!(
        run.output["diff"][0]["before"]["admin"],
        json!("unknown"),
        "{}",
        run.stdout
    );
    assert_eq!(run.output["diff"][0]["before"]["deactivated"], json!(false));
    // update_password: always sets a password that does not log in, then
    // finds out with a login whether the account was deactivated.
    without(
        json!({"username": "gone-no-db", "password": "gone-no-db-new",
                   "update_password": "always"}),
    )
    .assert_failed_with(
        "reactivating @gone-no-db:localhost (its password was set, but it still does not log in",
    );
    // With the database, the same declaration reactivates it.
    assert_eq!(
        s.dendrite(user).assert_changed().actions(0),
        ["reactivated"]
    );
    assert!(s.can_log_in("gone-no-db", "gone-no-db-pw"));
}

/// Dendrite's deactivation needs a password the module knows; if the
/// deactivation itself fails (the proxy answers 500 without forwarding it),
/// the user must keep its own password, not a random one nobody knows.
fn a_failed_deactivation_leaves_the_user_as_it_was(s: &Server) {
    s.dendrite(json!({"username": "keeps-pw", "password": "keeps-pw-own"}))
        .assert_changed();
    let proxy = FaultProxy::start(
        &s.url,
        json!([{"method": "POST", "path": "/_matrix/client/v3/account/deactivate",
                "action": "fail_500"}]),
    );
    let absent = |url: &str| {
        s.dendrite(
            json!({"homeserver_url": url, "admin_token": s.dendrite_admin_token(),
                          "registration_shared_secret": null,
                          "username": "keeps-pw", "state": "absent"}),
        )
    };
    absent(&proxy.url).assert_failed_with("deactivating @keeps-pw:localhost");
    assert!(s.can_log_in("keeps-pw", "keeps-pw-own"));
    assert!(!s.dendrite_account("keeps-pw").unwrap().deactivated);
    assert_eq!(
        absent(&proxy.url).assert_changed().actions(0),
        ["deactivated"]
    );
    assert!(s.dendrite_account("keeps-pw").unwrap().deactivated);
}

fn restrictions_are_refused_by_name_before_any_request(s: &Server) {
    for field in ["locked", "suspended", "shadow_banned"] {
        let user = json!({"username": "restrict-me", "password": "long enough", field: false});
        s.dendrite(json!({ "users": [user] }))
            .assert_failed_with(&format!(
                "users[0].{field}: Dendrite (0.13) cannot lock, suspend or shadow-ban"
            ));
        // Nothing listens there: only a refusal before any request gets this far.
        s.dendrite(
            json!({"homeserver_url": "http://127.0.0.1:9", "username": "restrict-me",
                          "password": "long enough", field: true}),
        )
        .assert_failed_with(&format!("{field}: Dendrite (0.13) cannot"));
    }
    assert!(s.dendrite_account("restrict-me").is_none());
}

fn ratelimit_is_refused_by_name_before_any_request(s: &Server) {
    for ratelimit in [json!("unlimited"), json!("default")] {
        let user =
            json!({"username": "rate-me", "password": "long enough", "ratelimit": ratelimit});
        s.dendrite(json!({ "users": [user] })).assert_failed_with(
            "users[0].ratelimit: Dendrite (0.13) has no per-user rate-limit override",
        );
    }
    // Nothing listens there: only a refusal before any request gets this far.
    s.dendrite(json!({"homeserver_url": "http://127.0.0.1:9", "username": "rate-me",
                      "password": "long enough", "ratelimit": {"messages_per_second": 5, "burst_count": 10}}))
        .assert_failed_with("ratelimit: Dendrite (0.13) has no per-user rate-limit override");
    assert!(s.dendrite_account("rate-me").is_none());
}

fn rooms_are_refused_by_name_before_any_request(s: &Server) {
    let user =
        json!({"username": "join-me", "password": "long enough", "rooms": ["#lobby:localhost"]});
    s.dendrite(json!({ "users": [user] })).assert_failed_with(
        "users[0].rooms: Dendrite (0.13) has no admin API that joins a user to a room",
    );
    // Nothing listens there: only a refusal before any request gets this far.
    s.dendrite(
        json!({"homeserver_url": "http://127.0.0.1:9", "username": "join-me",
                      "password": "long enough", "rooms": ["!abc:localhost"]}),
    )
    .assert_failed_with("rooms: Dendrite (0.13) has no admin API that joins a user to a room");
    assert!(s.dendrite_account("join-me").is_none());
}

/// Nothing listens at the URL: only a refusal before any request gets this far.
#[test]
fn undeclared_other_than_keep_is_refused_by_name_before_any_request() {
    for action in ["lock", "deactivate"] {
        let run = harness::run_module(
            json!({"homeserver": "dendrite", "homeserver_url": "http://127.0.0.1:9",
                   "registration_shared_secret": "dendrite-secret", "users": [], "wait_timeout": 0,
                   "undeclared": action}),
            vec![],
        );
        run.assert_failed_with("undeclared: Dendrite's admin API has no user list and no lock");
    }
}

fn avatar_is_refused_by_name_before_any_request(s: &Server) {
    let user =
        json!({"username": "avatar-me", "password": "long enough", "avatar": "mxc://localhost/a"});
    s.dendrite(json!({ "users": [user] }))
        .assert_failed_with("users[0].avatar: matrix_user manages avatars on Synapse only");
    // Nothing listens there: only a refusal before any request gets this far.
    s.dendrite(
        json!({"homeserver_url": "http://127.0.0.1:9", "username": "avatar-me",
                      "password": "long enough", "avatar": "mxc://localhost/a"}),
    )
    .assert_failed_with("avatar: matrix_user manages avatars on Synapse only");
    assert!(s.dendrite_account("avatar-me").is_none());
}

/// Nothing listens at the URL: only a refusal before any request gets this far.
#[test]
fn synapse_database_is_refused_by_name_before_any_request() {
    let run = harness::run_module(
        json!({"homeserver": "dendrite", "homeserver_url": "http://127.0.0.1:9",
               "registration_shared_secret": "dendrite-secret", "users": [], "wait_timeout": 0,
               "synapse_database": "/var/lib/synapse/homeserver.db"}),
        vec![],
    );
    run.assert_failed_with(
        "synapse_database: it is Synapse's database, read only with homeserver: synapse",
    );
}

/// Dendrite's database options, given a FIFO no one writes, /dev/zero or
/// (for the file holding the location) a file of 1 GiB: each run ends at
/// once with an error naming the option, and nothing is created.
#[test]
fn no_dendrite_database_option_blocks_on_a_fifo_or_reads_without_bound() {
    let s = dendrite("sqlite");
    let files = harness::HostileFiles::in_folder(&s.data_dir.join("hostile-files"));
    type Args = fn(&std::path::Path) -> Value;
    let options: [(&str, Args, bool); 2] = [
        (
            "dendrite_database_file",
            |p| json!({"dendrite_database": null, "dendrite_database_file": p}),
            true,
        ),
        (
            "dendrite_database",
            |p| json!({ "dendrite_database": p }),
            false,
        ),
    ];
    for (option, args, sized) in options {
        for (path, problem) in files.cases(sized) {
            let mut run_args = json!({"username": "hostile-files", "password": "pw-hostile"});
            harness::merge(&mut run_args, args(path));
            let run = s.dendrite_within(std::time::Duration::from_secs(30), run_args);
            run.assert_failed_with(option).assert_failed_with(problem);
            assert!(run.msg().starts_with(option), "{}", run.msg());
        }
    }
    assert!(s.dendrite_account("hostile-files").is_none());
}

/// A database error of 2 MB (a view raising it) is quoted cut short, as
/// server answers are.
#[test]
fn a_huge_dendrite_database_error_is_cut_short() {
    let s = dendrite("postgres");
    let owner = s.dendrite_database();
    harness::postgres_batch(&owner, "DROP DATABASE IF EXISTS hostile_errors");
    harness::postgres_batch(&owner, "CREATE DATABASE hostile_errors");
    let (server, _) = owner.rsplit_once('/').unwrap();
    let hostile = format!("{server}/hostile_errors");
    harness::postgres_batch(
        &hostile,
        "CREATE FUNCTION huge_error() RETURNS text IMMUTABLE LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION '%', repeat('x', 2000000); END $$;
         CREATE VIEW userapi_accounts AS SELECT 'u'::text AS localpart
             WHERE huge_error() IS NOT NULL;",
    );
    let run = s.dendrite(
        json!({"username": "huge-db-error", "password": "pw-huge-db-error",
                                "dendrite_database": hostile}),
    );
    run.assert_failed_with("dendrite_database: ");
    assert!(run.stdout.len() < 4096, "{} bytes", run.stdout.len());
    assert!(s.dendrite_account("huge-db-error").is_none());
}
