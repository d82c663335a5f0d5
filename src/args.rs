//! Stage 1: read Ansible's args file and turn it into a validated request.
//!
//! Every check of the input itself happens here: unknown parameters (binary
//! modules get no `argument_spec` from Ansible), wrong types, values out of
//! range, bad usernames. What a server can do with the declaration is its
//! backend's rule, checked next, still before anything is sent. Nothing here knows what a server supports.
//! Reading one field as a typed value is [`fields`]' job; this file decides
//! which fields there are and what they make together.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::model::{ArgsError, ArgsErrorKind, ModuleArgs};
use crate::secret::{hold, url_password};

mod avatar;
mod connection;
mod fields;
mod parameters;
mod registration_tokens;
mod undeclared;
mod user;

use connection::read_connection;
use fields::Fields;
use undeclared::read_undeclared;
use user::read_users;

const MAX_CONCURRENCY: usize = 64;

impl ModuleArgs {
    pub fn from_file(path: &Path) -> Result<ModuleArgs, ArgsError> {
        let text = read_args_file(path)?;
        // serde_json's messages give a position, never the content.
        let not_json = |e: serde_json::Error| ArgsError::new(ArgsErrorKind::NotJson(e.to_string()));
        // The users are kept as text and read one at a time: a tree of
        // values for 100,000 users at once takes about 1 KB each.
        let raw_fields = match serde_json::from_str::<BTreeMap<String, &RawValue>>(&text) {
            Ok(raw_fields) => raw_fields,
            Err(error) => {
                serde_json::from_str::<Value>(&text).map_err(not_json)?;
                let _ = error;
                return Err(ArgsError::new(ArgsErrorKind::NotJson(
                    "expected an object".into(),
                )));
            }
        };
        let mut fields: Map<String, Value> = Map::new();
        let mut users: Option<Vec<&RawValue>> = None;
        for (name, raw) in raw_fields {
            let list = (name == "users")
                .then(|| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
                .flatten();
            let value = match list {
                Some(list) => {
                    users = Some(list);
                    // Stands for the list wherever only its presence matters.
                    Value::Array(Vec::new())
                }
                None => serde_json::from_str(raw.get()).map_err(not_json)?,
            };
            fields.insert(name, value);
        }
        ModuleArgs::from_parts(&fields, users.as_deref())
    }

    /// The arguments in `map`, all read as values (for the tests).
    #[cfg(test)]
    pub fn from_map(map: &Map<String, Value>) -> Result<ModuleArgs, ArgsError> {
        ModuleArgs::from_parts(map, None)
    }

    /// The arguments in `map`, where `users`, when given, is the list
    /// `map["users"]` stands for, each user as its JSON text.
    fn from_parts(
        map: &Map<String, Value>,
        users: Option<&[&RawValue]>,
    ) -> Result<ModuleArgs, ArgsError> {
        hold_secret_arguments(map);
        for user in users.unwrap_or_default() {
            if let Ok(Value::Object(fields)) = serde_json::from_str(user.get()) {
                hold_user_secrets(&fields);
            }
        }
        let top = Fields::top(map);
        top.refuse_unknown(&parameters::top_level_names())?;

        let homeserver = top.choice("homeserver")?;
        let (server, credentials) = read_connection(&top)?;
        let users = read_users(&top, users)?;
        let undeclared = read_undeclared(&top)?;
        Ok(ModuleArgs {
            homeserver,
            server,
            credentials,
            users,
            undeclared,
            concurrency: top.integer_or_default("concurrency", 1, MAX_CONCURRENCY as u64)? as usize,
            mas_adopt_existing: top.boolean_or_default("mas_adopt_existing")?,
            check_mode: top.internal_flag("_ansible_check_mode"),
            diff: top.internal_flag("_ansible_diff"),
            warnings: top.take_warnings(),
        })
    }
}

/// The text of Ansible's args file at `path` (each module's arguments).
fn read_args_file(path: &Path) -> Result<String, ArgsError> {
    std::fs::read_to_string(path).map_err(|source| {
        ArgsError::new(ArgsErrorKind::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Registers the secret arguments among `fields` (the top level's or one user's).
fn hold_user_secrets(fields: &Map<String, Value>) {
    for name in parameters::secret_names() {
        match fields.get(name) {
            Some(Value::String(value)) => hold(value),
            Some(Value::Number(value)) => hold(&value.to_string()),
            _ => {}
        }
    }
}

/// Registers every secret argument for masking before anything is parsed,
/// so that an error about any field, found before the secret fields are
/// read, masks them too. The password of a `user:password@` URL is one.
fn hold_secret_arguments(map: &Map<String, Value>) {
    let entries = match map.get("users") {
        Some(Value::Array(users)) => users.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    for fields in std::iter::once(map).chain(entries) {
        hold_user_secrets(fields);
    }
    for name in [
        "homeserver_url",
        "mas_url",
        "dendrite_database",
        "synapse_database",
    ] {
        if let Some(Value::String(url)) = map.get(name) {
            if let Some((start, end)) = url_password(url) {
                hold(&url[start..end]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_file::TempFile;
    use crate::model::{
        ExternalId, Ratelimit, Undeclared, UpdatePassword, UpdateType, UpstreamLink, UserState,
        UserType,
    };
    use crate::secret::mask_secrets;
    use serde_json::json;

    /// `value` read as Ansible gives it, from a file (where the users are
    /// read one at a time), and checked to read the same as a tree of values.
    fn parse(value: Value) -> Result<ModuleArgs, ArgsError> {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let number = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "matrix-user-args-{}-{number}.json",
            std::process::id()
        ));
        std::fs::write(&path, value.to_string()).unwrap();
        let from_file = ModuleArgs::from_file(&path);
        std::fs::remove_file(&path).unwrap();
        let from_map = ModuleArgs::from_map(value.as_object().unwrap());
        assert_eq!(format!("{from_file:?}"), format!("{from_map:?}"));
        from_file
    }

    fn error(value: Value) -> String {
        parse(value).unwrap_err().to_string()
    }

    /// Asserts that `value` is refused with a message starting with `start`
    /// (the field and what is wrong); returns the message.
    #[track_caller]
    fn refused_with(value: Value, start: &str) -> String {
        let message = error(value);
        assert!(message.starts_with(start), "{message}");
        message
    }

    /// Asserts that `value` is refused with a message that does not show
    /// `secret`; returns the message.
    #[track_caller]
    fn refused_hiding(value: Value, secret: &str) -> String {
        let message = error(value);
        assert!(!message.contains(secret), "{message}");
        message
    }

    fn base() -> Value {
        json!({"homeserver_url": "http://127.0.0.1:8008/", "registration_shared_secret": "s3cret-value"})
    }

    fn with(extra: Value) -> Value {
        let mut value = base();
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        value
    }

    #[test]
    fn reads_one_user_with_ansible_booleans() {
        for (spelling, expected) in [
            ("yes", true),
            ("No", false),
            ("on", true),
            ("0", false),
            ("true", true),
        ] {
            let args = parse(with(
                json!({"username": "alice", "password": "pw", "admin": spelling}),
            ))
            .unwrap();
            assert_eq!(args.users[0].admin, Some(expected), "{spelling}");
        }
        let args = parse(with(
            json!({"username": "alice", "admin": true, "_ansible_check_mode": true}),
        ))
        .unwrap();
        assert!(args.check_mode);
        assert_eq!(args.endpoint().unwrap().url, "http://127.0.0.1:8008");
        assert_eq!(args.users[0].state, UserState::Present);
        assert_eq!(args.users[0].update_password, UpdatePassword::OnCreate);
        assert_eq!(args.users[0].update_type, UpdateType::Always);
        let initial = parse(with(json!({"users": [
            {"username": "alice", "admin": false, "update_type": "on_create"}
        ]})))
        .unwrap();
        assert_eq!(initial.users[0].update_type, UpdateType::OnCreate);
        let message = parse(with(json!({"username": "alice", "update_type": "once"})))
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("update_type: \"once\""), "{message}");
    }

    /// Both URLs are read as given (the chosen server's backend says which
    /// it needs); the one the module talks to is the chosen server's.
    #[test]
    fn urls_are_optional_here_and_the_chosen_server_says_which_it_needs() {
        let mas = json!({"homeserver": "mas", "mas_url": "http://mas/", "username": "alice"});
        let args = parse(mas.clone()).unwrap();
        assert_eq!(args.server.homeserver_url, None);
        assert_eq!(args.endpoint().unwrap().url, "http://mas");
        let mut behind = mas.clone();
        behind["homeserver_url"] = json!("https://matrix.example.com/");
        let args = parse(behind).unwrap();
        assert_eq!(args.endpoint().unwrap().url, "http://mas");
        assert_eq!(
            args.server.homeserver_url.as_deref(),
            Some("https://matrix.example.com")
        );
        let mut wrong = mas;
        wrong["homeserver_url"] = json!("matrix.example.com");
        assert!(error(wrong).starts_with("homeserver_url: "));
        let synapse = parse(json!({"username": "alice", "mas_url": "http://mas"})).unwrap();
        assert_eq!(
            synapse.endpoint().unwrap_err().to_string(),
            "homeserver_url is required, e.g. http://127.0.0.1:8008"
        );
        let mas = parse(json!({"homeserver": "mas", "username": "alice"})).unwrap();
        assert_eq!(
            mas.endpoint().unwrap_err().to_string(),
            "mas_url is required, e.g. http://127.0.0.1:8008"
        );
    }

    #[test]
    fn a_non_boolean_admin_names_the_field_and_the_accepted_values() {
        let message = error(with(json!({"username": "alice", "admin": "maybe"})));
        assert_eq!(
            message,
            "admin: \"maybe\" is not accepted; use yes/no, true/false, 1/0 or on/off"
        );
        refused_with(
            with(json!({"users": [{"username": "bob", "admin": "maybe"}]})),
            "users[0].admin: \"maybe\"",
        );
    }

    #[test]
    fn unknown_parameters_list_the_valid_ones() {
        let message = error(with(json!({"username": "alice", "pasword": "x"})));
        assert!(message
            .starts_with("pasword: unsupported parameter; valid parameters are: homeserver,"));
        assert!(message.contains("update_password"));
        refused_with(
            with(json!({"users": [{"username": "alice", "homeserver": "x"}]})),
            "users[0].homeserver: unsupported parameter",
        );
    }

    #[test]
    fn internal_ansible_keys_are_ignored() {
        parse(with(
            json!({"username": "alice", "_ansible_verbosity": 3, "_ansible_new_key": "x"}),
        ))
        .unwrap();
    }

    #[test]
    fn bad_usernames_are_named() {
        let message = error(with(
            json!({"users": [{"username": "ok"}, {"username": "Bad"}]}),
        ));
        assert_eq!(
            message,
            "users[1].username: the username \"Bad\" has upper-case letters: Matrix usernames are lower case (use \"bad\")"
        );
    }

    #[test]
    fn duplicates_are_refused_whatever_the_spelling() {
        let message = error(with(json!({"users": [
            {"username": "alice"}, {"username": "bob"}, {"username": "@alice:example.com"}
        ]})));
        assert_eq!(
            message,
            "users[2]: user \"alice\" is already declared in users[0]; declare each user once"
        );
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        refused_hiding(
            json!({"homeserver_url": "http://x", "registration_shared_secret": "s3cret-value",
            "registration_shared_secret_file": "/nonexistent", "username": "alice"}),
            "s3cret-value",
        );
        let message = error(with(json!({"username": "alice", "password": ""})));
        assert_eq!(
            message,
            "password: is empty; give a password or leave the field out"
        );
        refused_hiding(
            with(json!({"username": "alice", "password": ["hunter2"]})),
            "hunter2",
        );
    }

    #[test]
    fn user_and_users_exclude_each_other() {
        let message = error(with(json!({"username": "alice", "users": []})));
        assert_eq!(
            message,
            "users and username are mutually exclusive; give only one"
        );
        assert!(parse(with(json!({"users": []}))).unwrap().users.is_empty());
    }

    #[test]
    fn numbers_are_range_checked() {
        let message = error(with(json!({"username": "a", "concurrency": 0})));
        assert_eq!(
            message,
            "concurrency: \"0\" is not accepted; use a whole number from 1 to 64"
        );
        assert_eq!(
            parse(with(json!({"username": "a", "concurrency": "4"})))
                .unwrap()
                .concurrency,
            4
        );
    }

    /// A database URL read from a file: its password alone is masked too,
    /// as a driver may quote it without the rest of the URL.
    #[test]
    fn the_synapse_database_may_come_from_a_file_and_its_password_is_masked() {
        let file = TempFile::with(
            "synapse-database",
            b"postgresql://synapse:syn-db-secret@db/synapse\n",
        );
        let parsed = parse(with(
            json!({"username": "a", "synapse_database_file": file.path()}),
        ));
        let database = parsed.unwrap().credentials.synapse_database.unwrap();
        assert_eq!(
            database.expose(),
            "postgresql://synapse:syn-db-secret@db/synapse"
        );
        assert!(!mask_secrets("failed for syn-db-secret").contains("syn-db-secret"));
    }

    /// The Dendrite database URL holds a password, so it has a `_file` form
    /// like every other secret.
    #[test]
    fn the_dendrite_database_may_come_from_a_file() {
        let file = TempFile::with(
            "dendrite-database",
            b"postgres://dendrite:db-pw@127.0.0.1/userapi\n",
        );
        let mut args = with(
            json!({"homeserver": "dendrite", "username": "a", "dendrite_database_file": file.path()}),
        );
        let parsed = parse(args.clone());
        let database = parsed.unwrap().credentials.dendrite_database.unwrap();
        assert_eq!(
            database.expose(),
            "postgres://dendrite:db-pw@127.0.0.1/userapi"
        );
        args["dendrite_database"] = json!("/var/lib/dendrite/userapi.db");
        assert_eq!(
            error(args),
            "dendrite_database and dendrite_database_file are mutually exclusive; give only one"
        );
    }

    #[test]
    fn mas_skip_password_check_is_a_boolean_named_when_wrong() {
        let args = parse(with(
            json!({"username": "a", "mas_skip_password_check": "yes"}),
        ))
        .unwrap();
        assert!(args.users[0].login.skip_password_check);
        refused_with(
            with(json!({"users": [{"username": "a", "mas_skip_password_check": "sometimes"}]})),
            "users[0].mas_skip_password_check: \"sometimes\" is not accepted",
        );
    }

    #[test]
    fn upstream_links_are_provider_and_subject_mappings_named_when_wrong() {
        let user =
            |links: Value| with(json!({"users": [{"username": "a", "upstream_links": links}]}));
        let args = parse(user(json!([{"provider": "SSO", "subject": 42}]))).unwrap();
        assert_eq!(
            args.users[0].login.upstream_links,
            Some(vec![UpstreamLink {
                provider: "SSO".into(),
                subject: "42".into()
            }])
        );
        for (links, expected) in [
            (json!("SSO"), "users[0].upstream_links: expected a list"),
            (
                json!(["SSO"]),
                "users[0].upstream_links[0]: expected a mapping",
            ),
            (
                json!([{"provider": "SSO", "subject": "x"}, {"provider": "SSO"}]),
                "users[0].upstream_links[1].subject: give a non-empty subject",
            ),
            (
                json!([{"provider": "", "subject": "x"}]),
                "users[0].upstream_links[0].provider: give a non-empty provider",
            ),
            (
                json!([{"provider": "SSO", "subject": "x", "sub": "y"}]),
                "users[0].upstream_links[0].sub: unsupported parameter",
            ),
        ] {
            refused_with(user(links), expected);
        }
    }

    #[test]
    fn always_needs_a_password() {
        let message = error(with(
            json!({"username": "alice", "update_password": "always"}),
        ));
        assert_eq!(message, "username: update_password=always needs a password");
    }

    #[test]
    fn invalid_values_are_echoed_as_a_short_prefix() {
        // 1 MiB is past the point where values are described by size only; the
        // integration test (tests/secrets.rs) sends 50 MB.
        let huge = "h".repeat(1 << 20);
        for args in [
            with(json!({"username": "alice", "homeserver": huge})),
            with(json!({"username": "alice", huge.clone(): "x"})),
            with(json!({"users": [{"username": "alice", huge.clone(): "x"}]})),
            with(json!({"username": huge.clone() + "!"})),
            with(json!({"username": huge.to_uppercase()})),
            with(json!({"users": [{"username": huge}, {"username": huge}]})),
            with(json!({"username": "alice", "ca_path": huge})),
            with(json!({"username": "alice", "token_cache_dir": huge})),
            with(json!({"username": "alice", "admin": huge})),
            with(json!({"username": "alice", "timeout": huge})),
            with(json!({"username": "alice", "homeserver_url": huge})),
            with(json!({"username": "alice", "service_account": huge.clone() + "!"})),
            with(json!({"username": "alice", "registration_shared_secret_file": huge})),
        ] {
            let message = error(args);
            assert!(
                message.len() < 1000,
                "{} bytes: {}",
                message.len(),
                &message[..1000]
            );
        }
        let long = "v".repeat(100);
        refused_with(
            with(json!({"username": "alice", "homeserver": long})),
            &format!(
                "homeserver: \"{}... (100 bytes)\" is not accepted",
                "v".repeat(64)
            ),
        );
    }

    #[test]
    fn a_password_in_the_url_is_a_secret() {
        let message = refused_hiding(
            json!({"homeserver_url": "ftp://admin:url-pass-123@host", "username": "alice", "registration_shared_secret": "s3cret-value"}),
            "url-pass-123",
        );
        assert!(message.contains("ftp://admin:********@host"), "{message}");
        assert_eq!(
            mask_secrets("server said url-pass-123"),
            "server said ********"
        );
    }

    #[test]
    fn every_secret_argument_is_masked_in_any_error() {
        // The bad value comes before the secrets are parsed: they are masked all the same.
        for (declaration, secret) in [
            (
                json!({"homeserver": "early-secret-1", "homeserver_url": "http://x",
                "registration_shared_secret": "early-secret-1", "username": "alice"}),
                "early-secret-1",
            ),
            (
                json!({"homeserver_url": "http://x", "admin_token": "early-secret-2",
                "users": [{"username": "alice", "password": "early-secret-3", "state": "early-secret-3"}]}),
                "early-secret-3",
            ),
        ] {
            refused_hiding(declaration, secret);
        }
    }

    #[test]
    fn a_user_type_is_any_name_of_the_right_shape() {
        let read = |user_type: &str| {
            parse(with(json!({"username": "a", "user_type": user_type})))
                .map(|args| args.users[0].user_type.clone())
        };
        assert_eq!(read("regular").unwrap(), Some(UserType::Regular));
        assert_eq!(read("bot").unwrap(), Some(UserType::Bot));
        assert_eq!(
            read("com.example.bridge").unwrap(),
            Some(UserType::Extra("com.example.bridge".into()))
        );
        for bad in ["", "two words", "bot\n", &"x".repeat(256)] {
            let message = read(bad).unwrap_err().to_string();
            assert!(message.starts_with("user_type: "), "{message}");
            assert!(
                message.contains("a type the homeserver is configured with"),
                "{message}"
            );
        }
        assert_eq!(
            read(&"x".repeat(255)).unwrap(),
            Some(UserType::Extra("x".repeat(255)))
        );
    }

    #[test]
    fn rooms_are_aliases_or_ids_and_only_for_a_present_user() {
        let rooms = |rooms: Value, state: &str| {
            parse(with(json!({"users": [{"username": "a"},
                {"username": "b", "rooms": rooms, "state": state}]})))
        };
        let read = rooms(json!(["#general:x", "!abc:x", "#general:x"]), "present").unwrap();
        let names: Vec<&str> = read.users[1].rooms.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["#general:x", "!abc:x"]);
        assert!(read.users[0].rooms.is_empty());
        let message = rooms(json!(["#general:x", "general"]), "present")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "users[1].rooms[1]: \"general\" is not accepted; use a room alias like \
             #room:example.com or a room ID like !abc:example.com"
        );
        let message = rooms(json!("#general:x"), "present")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("users[1].rooms: expected a list"),
            "{message}"
        );
        let message = rooms(json!(["#general:x"]), "absent")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "users[1].rooms and state: absent are mutually exclusive; give only one"
        );
        assert!(rooms(json!([]), "absent").is_ok());
    }

    #[test]
    fn ratelimit_is_default_unlimited_or_two_whole_numbers() {
        let user = |ratelimit: Value| {
            with(
                json!({"users": [{"username": "bot"}, {"username": "bot2", "ratelimit": ratelimit}]}),
            )
        };
        let read = |ratelimit: Value| parse(user(ratelimit)).unwrap().users[1].ratelimit;
        assert_eq!(read(json!("default")), Some(None));
        assert_eq!(read(json!("unlimited")), Some(Some(Ratelimit::UNLIMITED)));
        assert_eq!(
            read(json!({"messages_per_second": "5", "burst_count": 10})),
            Some(Some(Ratelimit {
                messages_per_second: 5,
                burst_count: 10
            }))
        );
        assert_eq!(parse(user(Value::Null)).unwrap().users[1].ratelimit, None);
        for bad in [json!("none"), json!(5), json!(true), json!([])] {
            let message = refused_with(user(bad), "users[1].ratelimit: ");
            assert!(message.contains("default (no override), unlimited, or a mapping of messages_per_second and burst_count"), "{message}");
        }
        let negative = refused_with(
            user(json!({"messages_per_second": -1, "burst_count": 0})),
            "users[1].ratelimit.messages_per_second: ",
        );
        assert!(negative.contains("a whole number from 0 to"), "{negative}");
        refused_with(
            user(json!({"messages_per_second": 1, "burst_count": 0.5})),
            "users[1].ratelimit.burst_count: ",
        );
        refused_with(
            user(json!({"messages_per_second": 1, "burst_count": 1, "burst": 2})),
            "users[1].ratelimit.burst: unsupported parameter",
        );
        refused_with(
            user(json!({"messages_per_second": 1})),
            "users[1].ratelimit: give both",
        );
    }

    #[test]
    fn emails_are_addresses_kept_as_given() {
        let user = |emails: Value| {
            with(json!({"users": [{"username": "a"}, {"username": "b", "emails": emails}]}))
        };
        let read = |emails: Value| parse(user(emails)).unwrap().users[1].emails.clone();
        assert_eq!(
            read(json!([" Alice.Ä@Example.COM ", "b@x"])),
            Some(vec!["Alice.Ä@Example.COM".to_string(), "b@x".to_string()])
        );
        assert_eq!(read(json!([])), Some(vec![]));
        assert_eq!(read(Value::Null), None);
        let refused = |emails: Value, accepted: &str| {
            let message = refused_with(user(emails), "users[1].emails");
            assert!(message.contains(accepted), "{message}");
        };
        refused(json!("a@x"), "expected a list of e-mail addresses");
        for bad in ["alice", "@x", "a@b@c", "a@"] {
            refused(json!(["ok@x", bad]), "[1]: ");
        }
        refused(json!(["a b@x"]), "without spaces");
        refused(json!(["a@x..com"]), "a domain such as example.com");
        refused(json!([5]), "an e-mail address");
        refused(
            json!([format!("{}@x", "a".repeat(500))]),
            "at most 500 characters",
        );
    }

    #[test]
    fn external_ids_are_provider_and_id_mappings_each_once() {
        let user = |ids: Value| with(json!({"username": "a", "external_ids": ids}));
        let ids = parse(user(
            json!([{"auth_provider": "oidc-github", "external_id": "1234"}]),
        ))
        .unwrap()
        .users[0]
            .external_ids
            .clone();
        assert_eq!(
            ids,
            Some(vec![ExternalId {
                auth_provider: "oidc-github".into(),
                external_id: "1234".into()
            }])
        );
        let refused = |ids: Value, expected: &str| {
            refused_with(user(ids), expected);
        };
        refused(
            json!({"auth_provider": "x"}),
            "external_ids: expected a list of mappings",
        );
        refused(json!(["x"]), "external_ids[0]: expected a mapping");
        refused(
            json!([{"auth_provider": "oidc", "external_id": ""}]),
            "external_ids[0].external_id: give a non-empty external_id",
        );
        refused(
            json!([{"external_id": "1"}]),
            "external_ids[0].auth_provider: give a non-empty auth_provider",
        );
        refused(
            json!([{"auth_provider": "oidc", "external_id": "1", "provider": "x"}]),
            "external_ids[0].provider: unsupported parameter",
        );
        let twice = json!({"auth_provider": "saml", "external_id": "7"});
        refused(
            json!([twice, twice]),
            "external_ids[1]: \"7 at saml\" is not accepted; use each identity once: it is external_ids[0] again",
        );
    }

    #[test]
    fn undeclared_needs_the_list_form_and_valid_anchored_patterns() {
        let args = parse(with(json!({"users": [], "undeclared": "lock",
            "undeclared_ignore": ["bot", "_discord_.*"], "undeclared_max": "3"})))
        .unwrap();
        assert_eq!(args.undeclared.action, Undeclared::Lock);
        assert_eq!(args.undeclared.max, 3);
        let matches = |name: &str| args.undeclared.ignore.iter().any(|p| p.is_match(name));
        assert!(matches("bot") && matches("_discord_123"));
        assert!(!matches("robot") && !matches("bot2") && !matches("x_discord_1"));

        let defaults = parse(with(json!({"users": []}))).unwrap().undeclared;
        assert_eq!((defaults.action, defaults.max), (Undeclared::Keep, 10));
        assert_eq!(
            error(with(json!({"username": "alice", "undeclared": "deactivate"}))),
            "undeclared: deactivate needs the list form (users), which declares every user the server should have"
        );
        let bad = error(with(
            json!({"users": [], "undeclared": "lock", "undeclared_ignore": ["ok", "a(b"]}),
        ));
        assert!(
            bad.starts_with(
                "undeclared_ignore[1]: \"a(b\" is not accepted; use a regular expression"
            ),
            "{bad}"
        );
        assert!(bad.ends_with("unclosed group"), "{bad}");
        assert!(
            error(with(json!({"users": [], "undeclared_ignore": "bot"})))
                .starts_with("undeclared_ignore: expected a list")
        );
        assert!(error(with(json!({"users": [], "undeclared": "remove"})))
            .contains("use keep or lock or deactivate"));
    }

    /// Any JSON value, a few levels deep.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            "\\PC{0,24}".prop_map(Value::String),
            proptest::sample::select(vec![
                "yes",
                "no",
                "synapse",
                "mas",
                "dendrite",
                "absent",
                "always",
                "http://127.0.0.1:8008",
                "alice",
                "@bob:example.com"
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(parameter_name(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A known parameter name, most of the time, or anything.
    fn parameter_name() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let known = parameters::top_level_names();
        prop_oneof![
            4 => proptest::sample::select(known).prop_map(str::to_string),
            1 => "\\PC{0,12}",
        ]
    }

    /// The strings given as secret parameters, at the top level and in `users`.
    fn secret_values(args: &Map<String, Value>) -> Vec<String> {
        let users = match args.get("users") {
            Some(Value::Array(users)) => users.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        };
        std::iter::once(args)
            .chain(users)
            .flat_map(|fields| parameters::secret_names().filter_map(|name| fields.get(name)))
            .filter_map(|value| value.as_str().map(str::to_string))
            .collect()
    }

    proptest::proptest! {
        /// Whatever the arguments, the parser answers (no panic), and a
        /// refusal, masked as the report masks its output, holds none of the
        /// secrets given (long enough to be masked, and not made of the mask's `*`).
        #[test]
        fn any_arguments_give_one_json_object_without_secrets(
            map in proptest::collection::btree_map(parameter_name(), any_json(), 0..10),
        ) {
            let map: Map<String, Value> = map.into_iter().collect();
            let Err(error) = ModuleArgs::from_map(&map) else {
                return Ok(());
            };
            let printed = mask_secrets(&error.to_string());
            for secret in secret_values(&map).iter().filter(|s| s.chars().count() >= 4 && s.contains(|c| c != '*')) {
                proptest::prop_assert!(!printed.contains(secret.as_str()), "{:?} in {}", secret, printed);
            }
        }
    }
}
