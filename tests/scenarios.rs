//! The contract every server shares, each scenario written once and run on
//! each server that supports it, as ripgrep's `rgtest!` runs one test under
//! each regex engine. `scenario!(name, [servers], |s| { ... })` makes a
//! module `name` with one test per server: `name::synapse`,
//! `name::dendrite::sqlite`, `name::dendrite::postgres` and `name::mas`.
//! `s` is a [`Backend`]: the module run against that server, and the facts a
//! user would check, read through the server's own API. A scenario that
//! only one server has stays in that server's file (synapse.rs, dendrite.rs,
//! mas.rs).

mod harness;

use harness::backend::{Backend, Dendrite, Mas, Synapse};
use serde_json::{json, Value};

/// `scenario!(name, [synapse, dendrite, mas], |s| { body })`: the body once,
/// as a test per listed server (`dendrite`: one on SQLite, one on PostgreSQL).
macro_rules! scenario {
    ($(#[$doc:meta])* $name:ident, [$($server:ident),+], |$s:ident| $body:block) => {
        $(#[$doc])*
        mod $name {
            use super::*;

            fn scenario($s: &dyn Backend) $body

            fn run(server: &dyn Backend) {
                scenario(server);
                server.after_scenario();
            }

            $(scenario!(@on $server);)+
        }
    };
    (@on synapse) => {
        #[test]
        fn synapse() {
            run(Synapse::shared())
        }
    };
    (@on dendrite) => {
        mod dendrite {
            #[test]
            fn sqlite() {
                super::run(super::Dendrite::shared("sqlite"))
            }
            #[test]
            fn postgres() {
                super::run(super::Dendrite::shared("postgres"))
            }
        }
    };
    (@on mas) => {
        #[test]
        fn mas() {
            run(Mas::shared())
        }
    };
}

scenario!(
    creates_a_user_who_can_log_in_and_a_second_run_changes_nothing,
    [synapse, dendrite],
    |s| {
        let user = json!({"username": "create-alice", "password": "correct horse", "admin": "yes",
                          "displayname": "Alice A."});
        let run = s.module(user.clone());
        assert_eq!(run.assert_changed().actions(0), ["created"]);
        assert_eq!(run.msg(), "@create-alice:localhost: created");
        assert!(s.can_log_in("create-alice", "correct horse"));
        assert!(s.is_admin("create-alice", "correct horse"));
        assert!(!s.is_deactivated("create-alice"));
        assert_eq!(s.displayname("create-alice").as_deref(), Some("Alice A."));

        let again = s.module(user);
        again.assert_unchanged();
        assert_eq!(again.msg(), "@create-alice:localhost: already as declared");
    }
);

scenario!(
    promotes_and_demotes_an_existing_user_each_once,
    [synapse, dendrite, mas],
    |s| {
        let password = "amber-fjord-kettle-0";
        s.module(json!({"username": "flip", "password": password, "admin": "no"}))
            .assert_changed();
        assert!(!s.is_admin("flip", password));

        let promote = s.module(json!({"username": "flip", "admin": true}));
        assert_eq!(promote.assert_changed().actions(0), ["promoted"]);
        assert!(s.is_admin("flip", password));
        s.module(json!({"username": "flip", "admin": "on"}))
            .assert_unchanged();

        let demote = s.module(json!({"username": "flip", "admin": "0"}));
        assert_eq!(demote.assert_changed().actions(0), ["demoted"]);
        assert!(!s.is_admin("flip", password));
        s.module(json!({"username": "flip", "admin": "no"}))
            .assert_unchanged();
    }
);

scenario!(
    on_create_keeps_the_first_password_and_always_replaces_a_different_one,
    [synapse, dendrite, mas],
    |s| {
        s.module(json!({"username": "pw-user", "password": "first violet lantern"}))
            .assert_changed();
        s.module(json!({"username": "pw-user", "password": "second amber fjord"}))
            .assert_unchanged();
        assert!(s.can_log_in("pw-user", "first violet lantern"));

        let always = json!({"username": "pw-user", "password": "second amber fjord",
                            "update_password": "always"});
        assert_eq!(
            s.module(always.clone()).assert_changed().actions(0),
            ["password changed"]
        );
        assert!(s.can_log_in("pw-user", "second amber fjord"));
        assert!(!s.can_log_in("pw-user", "first violet lantern"));
        s.module(always).assert_unchanged();
        assert_eq!(
            s.sessions("pw-user"),
            0,
            "the password check must log its session out"
        );
    }
);

/// `args` in check mode.
fn check_mode(mut args: Value) -> Value {
    args["_ansible_check_mode"] = json!(true);
    args
}

scenario!(
    check_mode_predicts_every_change_and_makes_none,
    [synapse, dendrite, mas],
    |s| {
        let password = "checked amber kettle";
        let create = json!({"username": "checked", "password": password, "admin": true});
        assert_eq!(
            s.module(check_mode(create)).assert_changed().actions(0),
            ["created"]
        );
        assert!(!s.exists("checked"));

        s.module(json!({"username": "checked", "password": password}))
            .assert_changed();
        for (args, predicted) in [
            (json!({"username": "checked", "admin": true}), "promoted"),
            (
                json!({"username": "checked", "password": "other violet harbor", "update_password": "always"}),
                "password changed",
            ),
            (
                json!({"username": "checked", "state": "absent"}),
                "deactivated",
            ),
        ] {
            let run = s.module(check_mode(args));
            assert_eq!(run.assert_changed().actions(0), [predicted]);
        }
        s.module(check_mode(
            json!({"username": "checked", "password": password, "update_password": "always"}),
        ))
        .assert_unchanged();
        assert!(!s.is_admin("checked", password));
        assert!(!s.is_deactivated("checked"));
        assert!(s.can_log_in("checked", password));

        s.module(json!({"username": "checked", "admin": true}))
            .assert_changed();
        let demote = s.module(check_mode(json!({"username": "checked", "admin": false})));
        assert_eq!(demote.assert_changed().actions(0), ["demoted"]);
        assert!(s.is_admin("checked", password));
        assert_eq!(s.sessions("checked"), 0);
    }
);

scenario!(
    check_mode_predicts_a_displayname_change_and_makes_none,
    [synapse, dendrite],
    |s| {
        s.module(json!({"username": "checked-name", "password": "checked-name-pw"}))
            .assert_changed();
        let before = s.displayname("checked-name");
        let run = s.module(check_mode(
            json!({"username": "checked-name", "displayname": "Checked"}),
        ));
        assert_eq!(run.assert_changed().actions(0), ["displayname changed"]);
        assert_eq!(s.displayname("checked-name"), before);
        assert_ne!(before.as_deref(), Some("Checked"));
    }
);

scenario!(
    passwords_with_special_characters_arrive_byte_exact,
    [synapse, dendrite, mas],
    |s| {
        let password = "it's \"quoted\" $HOME `id` back\\slash ünïcødé 🔑";
        s.module(json!({"username": "special", "password": password}))
            .assert_changed();
        assert!(s.can_log_in("special", password));
        s.module(json!({"username": "special", "password": password, "update_password": "always"}))
            .assert_unchanged();
    }
);

scenario!(
    /// A plain deactivation does not erase, where the server can erase.
    absent_deactivates_once_and_a_missing_user_stays_absent,
    [synapse, dendrite, mas],
    |s| {
        s.module(json!({"username": "leaver", "password": "leaver lupine granite"}))
            .assert_changed();
        let absent = json!({"username": "leaver", "state": "absent"});
        assert_eq!(
            s.module(absent.clone()).assert_changed().actions(0),
            ["deactivated"]
        );
        assert!(s.is_deactivated("leaver"));
        assert!(!s.can_log_in("leaver", "leaver lupine granite"));
        assert_eq!(s.sessions("leaver"), 0);
        assert_ne!(s.erased("leaver"), Some(true));
        assert_eq!(
            s.module(absent).assert_unchanged().msg(),
            "@leaver:localhost: already absent"
        );

        s.module(json!({"username": "never-existed", "state": "absent"}))
            .assert_unchanged();
        assert!(!s.exists("never-existed"));
    }
);

scenario!(
    a_deactivated_user_declared_present_is_reactivated_with_its_password,
    [synapse, dendrite, mas],
    |s| {
        s.module(json!({"username": "returner", "password": "old violet lantern", "admin": true}))
            .assert_changed();
        s.module(json!({"username": "returner", "state": "absent"}))
            .assert_changed();
        s.module(json!({"username": "returner"}))
            .assert_failed_with("must be reactivated, which needs a password");
        let back = json!({"username": "returner", "password": "new amber fjord", "admin": false});
        assert_eq!(
            s.module(back.clone()).assert_changed().actions(0),
            ["reactivated", "demoted"]
        );
        assert!(!s.is_deactivated("returner"));
        assert!(s.can_log_in("returner", "new amber fjord"));
        assert!(!s.is_admin("returner", "new amber fjord"));
        s.module(back).assert_unchanged();
    }
);

scenario!(
    /// The module logs in to check passwords and as its service account:
    /// the managed users keep no session, the service account exactly one.
    managed_users_keep_no_device_and_the_service_account_one,
    [synapse, dendrite],
    |s| {
        s.module(json!({"username": "deviceless", "password": "deviceless-pw", "admin": true}))
            .assert_changed();
        assert_eq!(s.sessions("deviceless"), 0);
        s.module(
            json!({"username": "deviceless", "password": "other-pw!", "update_password": "always"}),
        )
        .assert_changed();
        s.module(json!({"username": "deviceless", "admin": false, "displayname": "D"}))
            .assert_changed();
        s.module(json!({"username": "deviceless", "password": "other-pw!", "displayname": "E",
                        "admin": false, "update_password": "always"}))
            .assert_changed();
        assert_eq!(s.sessions("deviceless"), 0);
        assert_eq!(s.sessions("matrix-user-service"), 1);
    }
);
