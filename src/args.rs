//! Stage 1: read Ansible's args file and turn it into a validated request.
//!
//! Every check of the input itself happens here: unknown parameters (binary
//! modules get no `argument_spec` from Ansible), wrong types, values out of
//! range, bad usernames. What a server can do with the declaration is its
//! backend's rule (`check_declaration` in [`crate::backend`]), checked next,
//! still before anything is sent. Nothing here knows what a server supports.
//! Reading one field as a typed value is [`fields`]' job; this file decides
//! which fields there are and what they make together.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::matrix_id::{Username, UsernameError};
use crate::model::{
    DesiredUser, HomeserverKind, Ratelimit, Restrictions, UpdatePassword, UserState, UserType,
};
use crate::secret::{hold, hold_basic_auth, url_password, Secret};

mod fields;

use fields::{echo, Fields};

/// Parameters of the module itself; the per-user ones are in [`USER_PARAMETERS`].
const MODULE_PARAMETERS: &[&str] = &[
    "homeserver",
    "homeserver_url",
    "server_name",
    "registration_shared_secret",
    "registration_shared_secret_file",
    "admin_token",
    "admin_token_file",
    "service_account",
    "token_cache_dir",
    "dendrite_database",
    "dendrite_database_file",
    "mas_url",
    "mas_client_id",
    "mas_client_secret",
    "mas_client_secret_file",
    "mas_adopt_existing",
    "users",
    "concurrency",
    "validate_certs",
    "ca_path",
    "timeout",
    "wait_timeout",
];

/// Parameters that describe one user, at the top level or in each `users` entry.
const USER_PARAMETERS: &[&str] = &[
    "username",
    "password",
    "admin",
    "user_type",
    "displayname",
    "state",
    "update_password",
    "erase",
    "email",
    "locked",
    "suspended",
    "shadow_banned",
    "ratelimit",
    "access_token_file",
];

/// Parameters whose values are secrets, at the top level or in each `users` entry.
const SECRET_PARAMETERS: &[&str] = &[
    "password",
    "registration_shared_secret",
    "admin_token",
    "mas_client_secret",
    "dendrite_database",
];

const MAX_CONCURRENCY: usize = 64;
const DEFAULT_CONCURRENCY: usize = 8;

/// Why the module's arguments cannot be used. Each message names the field
/// (and the user, for per-user fields) and says what is accepted; none of
/// them ever contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// The args file Ansible passed could not be read.
    #[error("cannot read the module arguments file {path}: {source}; run the module from an Ansible task")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The args file is not a JSON object (the module was not run by Ansible?).
    #[error(
        "the module arguments file is not a JSON object ({0}); run the module from an Ansible task"
    )]
    NotJson(String),
    /// A parameter the module does not know, usually a typo.
    #[error("{field}: unsupported parameter; valid parameters are: {valid}")]
    UnknownParameter { field: String, valid: String },
    /// A parameter has the wrong JSON type.
    #[error("{field}: expected {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    /// A parameter is not one of its accepted values.
    #[error("{field}: {value:?} is not accepted; use {accepted}")]
    NotAccepted {
        field: String,
        value: String,
        accepted: String,
    },
    /// A secret parameter has a value that cannot be used (its value is not shown).
    #[error("{field}: {problem}")]
    BadSecret {
        field: String,
        problem: &'static str,
    },
    /// A username that is not a valid Matrix localpart or user ID.
    #[error("{field}: the username {username:?} {reason}")]
    BadUsername {
        field: String,
        username: String,
        reason: UsernameError,
    },
    /// Something required is missing.
    #[error("{0}")]
    Missing(String),
    /// The chosen homeserver cannot manage this field.
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: &'static str },
    /// Two parameters that exclude each other were both given.
    #[error("{first} and {second} are mutually exclusive; give only one")]
    Exclusive { first: String, second: String },
    /// The same user is declared twice in `users`.
    #[error("{field}: user {username:?} is already declared in {first}; declare each user once")]
    DuplicateUser {
        field: String,
        username: String,
        first: String,
    },
    /// A file that holds a secret could not be read (the content is never shown).
    #[error("{field}: cannot read {path}: {source}")]
    SecretFile {
        field: String,
        /// The path as given, cut to a short prefix.
        path: String,
        source: std::io::Error,
    },
}

/// How to reach the homeserver.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub url: String,
    /// The parameter that gave `url`, for messages that ask to check it.
    pub url_field: &'static str,
    pub server_name: Option<String>,
    pub validate_certs: bool,
    pub ca_path: Option<PathBuf>,
    pub timeout: Duration,
    pub wait_timeout: Duration,
}

/// What the module may authenticate with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub shared_secret: Option<Secret>,
    pub admin_token: Option<Secret>,
    /// The account the module registers for itself when it has only the shared secret.
    pub service_account: Username,
    /// `None` only when neither it, `XDG_CACHE_HOME` nor `HOME` is given;
    /// then the service account cannot be used (the backends that need it refuse that case).
    pub token_cache_dir: Option<PathBuf>,
    /// Dendrite's accounts database (PostgreSQL URL or SQLite path), for admin changes.
    pub dendrite_database: Option<Secret>,
    /// MAS's OAuth2 client, for the client-credentials grant.
    pub mas_client: Option<(String, Secret)>,
}

/// The whole validated request.
#[derive(Debug, Clone)]
pub struct ModuleArgs {
    pub homeserver: HomeserverKind,
    pub server: ServerOptions,
    pub credentials: Credentials,
    pub users: Vec<DesiredUser>,
    pub concurrency: usize,
    /// MAS only: create users the homeserver already has (half-made accounts) in MAS too.
    pub mas_adopt_existing: bool,
    pub check_mode: bool,
    pub diff: bool,
}

impl ModuleArgs {
    pub fn from_file(path: &Path) -> Result<ModuleArgs, ArgsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ArgsError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        // serde_json's messages give a position, never the content.
        let value: Value =
            serde_json::from_str(&text).map_err(|e| ArgsError::NotJson(e.to_string()))?;
        match value {
            Value::Object(map) => ModuleArgs::from_map(&map),
            _ => Err(ArgsError::NotJson("expected an object".into())),
        }
    }

    pub fn from_map(map: &Map<String, Value>) -> Result<ModuleArgs, ArgsError> {
        hold_secret_arguments(map);
        let top = Fields::top(map);
        let all_top_level: Vec<&str> = MODULE_PARAMETERS
            .iter()
            .chain(USER_PARAMETERS)
            .copied()
            .collect();
        top.refuse_unknown(&all_top_level)?;

        let homeserver = top
            .choice("homeserver", &HomeserverKind::ALL.map(HomeserverKind::name))?
            .and_then(|name| HomeserverKind::ALL.into_iter().find(|k| k.name() == name))
            .unwrap_or_default();
        let url_field = homeserver.url_field();
        let server = ServerOptions {
            url: top
                .string(url_field)?
                .ok_or_else(|| {
                    ArgsError::Missing(format!(
                        "{url_field} is required, e.g. http://127.0.0.1:8008"
                    ))
                })?
                .trim_end_matches('/')
                .to_string(),
            url_field,
            server_name: top.string("server_name")?,
            validate_certs: top.boolean("validate_certs")?.unwrap_or(true),
            ca_path: top.path("ca_path")?,
            timeout: Duration::from_secs(top.integer("timeout", 1, 3600)?.unwrap_or(30)),
            wait_timeout: Duration::from_secs(top.integer("wait_timeout", 0, 3600)?.unwrap_or(60)),
        };
        if !(server.url.starts_with("http://") || server.url.starts_with("https://")) {
            return Err(ArgsError::NotAccepted {
                field: url_field.into(),
                value: echo(&server.url),
                accepted: "an http:// or https:// URL".into(),
            });
        }
        let credentials = Credentials {
            shared_secret: top.secret_or_file("registration_shared_secret")?,
            admin_token: top.secret_or_file("admin_token")?,
            service_account: match top.string("service_account")? {
                Some(name) => Username::parse(&name).map_err(|reason| ArgsError::BadUsername {
                    field: "service_account".into(),
                    username: echo(&name),
                    reason,
                })?,
                None => Username::parse("matrix-user-service")
                    .expect("the default is a valid localpart"),
            },
            token_cache_dir: top.path("token_cache_dir")?.or_else(|| {
                default_token_cache_dir(
                    std::env::var_os("XDG_CACHE_HOME"),
                    std::env::var_os("HOME"),
                )
            }),
            dendrite_database: top.secret_or_file("dendrite_database")?,
            mas_client: match (
                top.string("mas_client_id")?,
                top.secret_or_file("mas_client_secret")?,
            ) {
                (Some(id), Some(secret)) => {
                    hold_basic_auth(&id, &secret);
                    Some((id, secret))
                }
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ArgsError::Missing(
                        "mas_client_id needs mas_client_secret (or mas_client_secret_file)".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(ArgsError::Missing(
                        "mas_client_secret needs mas_client_id".into(),
                    ))
                }
            },
        };

        let users = read_users(&top)?;
        Ok(ModuleArgs {
            homeserver,
            server,
            credentials,
            users,
            concurrency: top
                .integer("concurrency", 1, MAX_CONCURRENCY as u64)?
                .map_or(DEFAULT_CONCURRENCY, |n| n as usize),
            mas_adopt_existing: top.boolean("mas_adopt_existing")?.unwrap_or(false),
            check_mode: top.internal_flag("_ansible_check_mode"),
            diff: top.internal_flag("_ansible_diff"),
        })
    }
}

/// `$XDG_CACHE_HOME/matrix_user`, else `$HOME/.cache/matrix_user`. Never a
/// shared folder such as /tmp: `None` when neither variable is usable (the
/// XDG spec ignores a relative `XDG_CACHE_HOME`; an empty one is unset).
fn default_token_cache_dir(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let absolute =
        |value: std::ffi::OsString| Some(PathBuf::from(value)).filter(|p| p.is_absolute());
    xdg_cache_home
        .and_then(absolute)
        .or_else(|| home.and_then(absolute).map(|home| home.join(".cache")))
        .map(|base| base.join("matrix_user"))
}

fn read_users(top: &Fields) -> Result<Vec<DesiredUser>, ArgsError> {
    let single_user_fields: Vec<&str> = USER_PARAMETERS
        .iter()
        .copied()
        .filter(|f| top.has(f))
        .collect();
    let users = match top.value("users") {
        None | Some(Value::Null) => {
            if !top.has("username") {
                return Err(ArgsError::Missing(
                    "give username (one user) or users (a list of users)".into(),
                ));
            }
            vec![read_user(top)?]
        }
        Some(Value::Array(entries)) => {
            if let Some(field) = single_user_fields.first() {
                return Err(ArgsError::Exclusive {
                    first: "users".into(),
                    second: field.to_string(),
                });
            }
            let mut users = Vec::with_capacity(entries.len());
            for (index, entry) in entries.iter().enumerate() {
                let field = format!("users[{index}]");
                let Value::Object(map) = entry else {
                    return Err(ArgsError::WrongType {
                        field,
                        expected: "a mapping with username, password, admin, ...",
                    });
                };
                let fields = Fields::nested(map, field);
                fields.refuse_unknown(USER_PARAMETERS)?;
                users.push(read_user(&fields)?);
            }
            users
        }
        Some(_) => {
            return Err(ArgsError::WrongType {
                field: "users".into(),
                expected: "a list of users",
            })
        }
    };
    refuse_duplicates(&users)?;
    Ok(users)
}

fn read_user(fields: &Fields) -> Result<DesiredUser, ArgsError> {
    let raw = fields
        .string("username")?
        .ok_or_else(|| ArgsError::Missing(format!("{}: username is required", fields.context())))?;
    let username = Username::parse(&raw).map_err(|reason| ArgsError::BadUsername {
        field: fields.name("username"),
        username: echo(&raw),
        reason,
    })?;
    let password = fields.secret("password")?;
    if password.as_ref().is_some_and(|p| p.expose().is_empty()) {
        return Err(ArgsError::BadSecret {
            field: fields.name("password"),
            problem: "is empty; give a password or leave the field out",
        });
    }
    let user_type = fields
        .choice("user_type", &["regular", "bot", "support"])?
        .map(|t| match t.as_str() {
            "bot" => UserType::Bot,
            "support" => UserType::Support,
            _ => UserType::Regular,
        });
    let state = match fields.choice("state", &["present", "absent"])?.as_deref() {
        Some("absent") => UserState::Absent,
        _ => UserState::Present,
    };
    let update_password = match fields
        .choice("update_password", &["on_create", "always"])?
        .as_deref()
    {
        Some("always") => UpdatePassword::Always,
        _ => UpdatePassword::OnCreate,
    };
    if update_password == UpdatePassword::Always && password.is_none() {
        return Err(ArgsError::Missing(format!(
            "{}: update_password=always needs a password",
            fields.context()
        )));
    }
    Ok(DesiredUser {
        field: fields.context(),
        username,
        password,
        admin: fields.boolean("admin")?,
        user_type,
        displayname: match fields.string("displayname")? {
            Some(name) if name.is_empty() => {
                return Err(ArgsError::NotAccepted {
                    field: fields.name("displayname"),
                    value: name,
                    accepted: "a non-empty name (leave displayname out to leave it as it is)"
                        .into(),
                })
            }
            name => name,
        },
        state,
        update_password,
        erase: fields.boolean("erase")?.unwrap_or(false),
        email: fields.string("email")?,
        restrictions: Restrictions {
            locked: fields.boolean("locked")?,
            suspended: fields.boolean("suspended")?,
            shadow_banned: fields.boolean("shadow_banned")?,
        },
        ratelimit: read_ratelimit(fields)?,
        access_token_file: fields.path("access_token_file")?,
    })
}

const RATELIMIT_FIELDS: [&str; 2] = ["messages_per_second", "burst_count"];
/// Synapse keeps each number in a signed 64-bit column.
const RATELIMIT_MAX: u64 = i64::MAX as u64;
const RATELIMIT_ACCEPTED: &str =
    "default (no override), unlimited, or a mapping of messages_per_second and burst_count";

/// `default` (no override: `Some(None)`), `unlimited`, or both numbers.
fn read_ratelimit(fields: &Fields) -> Result<Option<Option<Ratelimit>>, ArgsError> {
    let field = fields.name("ratelimit");
    let not_accepted = |value: String| ArgsError::NotAccepted {
        field: field.clone(),
        value: echo(&value),
        accepted: format!("{RATELIMIT_ACCEPTED}, each a whole number from 0 to {RATELIMIT_MAX}"),
    };
    match fields.value("ratelimit") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(word)) => match word.as_str() {
            "default" => Ok(Some(None)),
            "unlimited" => Ok(Some(Some(Ratelimit::UNLIMITED))),
            _ => Err(not_accepted(word.clone())),
        },
        Some(Value::Object(map)) => {
            let numbers = Fields::nested(map, field.clone());
            numbers.refuse_unknown(&RATELIMIT_FIELDS)?;
            let [messages_per_second, burst_count] = RATELIMIT_FIELDS.map(|name| {
                numbers.integer(name, 0, RATELIMIT_MAX)?.ok_or_else(|| {
                    ArgsError::Missing(format!(
                        "{}: give both messages_per_second and burst_count (0 and 0 is unlimited)",
                        field
                    ))
                })
            });
            Ok(Some(Some(Ratelimit {
                messages_per_second: messages_per_second?,
                burst_count: burst_count?,
            })))
        }
        Some(other) => Err(not_accepted(other.to_string())),
    }
}

fn refuse_duplicates(users: &[DesiredUser]) -> Result<(), ArgsError> {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for user in users {
        if let Some(first) = seen.insert(user.username.localpart(), &user.field) {
            return Err(ArgsError::DuplicateUser {
                field: user.field.clone(),
                username: echo(user.username.localpart()),
                first: first.to_string(),
            });
        }
    }
    Ok(())
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
        for name in SECRET_PARAMETERS {
            match fields.get(*name) {
                Some(Value::String(value)) => hold(value),
                Some(Value::Number(value)) => hold(&value.to_string()),
                _ => {}
            }
        }
    }
    for name in ["homeserver_url", "mas_url", "dendrite_database"] {
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
    use crate::secret::mask_secrets;
    use serde_json::json;

    fn parse(value: Value) -> Result<ModuleArgs, ArgsError> {
        ModuleArgs::from_map(value.as_object().unwrap())
    }

    fn error(value: Value) -> String {
        parse(value).unwrap_err().to_string()
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
        assert_eq!(args.server.url, "http://127.0.0.1:8008");
        assert_eq!(args.users[0].state, UserState::Present);
        assert_eq!(args.users[0].update_password, UpdatePassword::OnCreate);
    }

    #[test]
    fn a_non_boolean_admin_names_the_field_and_the_accepted_values() {
        let message = error(with(json!({"username": "alice", "admin": "maybe"})));
        assert_eq!(
            message,
            "admin: \"maybe\" is not accepted; use yes/no, true/false, 1/0 or on/off"
        );
        let message = error(with(
            json!({"users": [{"username": "bob", "admin": "maybe"}]}),
        ));
        assert!(
            message.starts_with("users[0].admin: \"maybe\""),
            "{message}"
        );
    }

    #[test]
    fn unknown_parameters_list_the_valid_ones() {
        let message = error(with(json!({"username": "alice", "pasword": "x"})));
        assert!(message
            .starts_with("pasword: unsupported parameter; valid parameters are: homeserver,"));
        assert!(message.contains("update_password"));
        let message = error(with(
            json!({"users": [{"username": "alice", "homeserver": "x"}]}),
        ));
        assert!(
            message.starts_with("users[0].homeserver: unsupported parameter"),
            "{message}"
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
        let message = error(
            json!({"homeserver_url": "http://x", "registration_shared_secret": "s3cret-value",
            "registration_shared_secret_file": "/nonexistent", "username": "alice"}),
        );
        assert!(!message.contains("s3cret-value"), "{message}");
        let message = error(with(json!({"username": "alice", "password": ""})));
        assert_eq!(
            message,
            "password: is empty; give a password or leave the field out"
        );
        let message = error(with(json!({"username": "alice", "password": ["hunter2"]})));
        assert!(!message.contains("hunter2"), "{message}");
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

    /// The Dendrite database URL holds a password, so it has a `_file` form
    /// like every other secret.
    #[test]
    fn the_dendrite_database_may_come_from_a_file() {
        let path = std::env::temp_dir().join(format!(
            "matrix-user-args-test-{}-dendrite-database",
            std::process::id()
        ));
        std::fs::write(&path, "postgres://dendrite:db-pw@127.0.0.1/userapi\n").unwrap();
        let mut args = with(
            json!({"homeserver": "dendrite", "username": "a", "dendrite_database_file": path}),
        );
        let parsed = parse(args.clone());
        std::fs::remove_file(&path).unwrap();
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
    fn the_token_cache_is_never_a_shared_folder() {
        let dir = |xdg: Option<&str>, home: Option<&str>| {
            default_token_cache_dir(xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            dir(Some("/x/cache"), Some("/home/u")),
            Some(PathBuf::from("/x/cache/matrix_user"))
        );
        assert_eq!(
            dir(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/matrix_user"))
        );
        assert_eq!(dir(Some(""), Some("")), None);
        assert_eq!(dir(None, None), None);
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
        let message = error(with(json!({"username": "alice", "homeserver": long})));
        assert!(
            message.starts_with(&format!(
                "homeserver: \"{}... (100 bytes)\" is not accepted",
                "v".repeat(64)
            )),
            "{message}"
        );
    }

    #[test]
    fn a_password_in_the_url_is_a_secret() {
        let message = error(
            json!({"homeserver_url": "ftp://admin:url-pass-123@host", "username": "alice", "registration_shared_secret": "s3cret-value"}),
        );
        assert!(!message.contains("url-pass-123"), "{message}");
        assert!(message.contains("ftp://admin:********@host"), "{message}");
        assert_eq!(
            mask_secrets("server said url-pass-123"),
            "server said ********"
        );
    }

    #[test]
    fn every_secret_argument_is_masked_in_any_error() {
        // The bad value comes before the secrets are parsed: they are masked all the same.
        let message = error(
            json!({"homeserver": "early-secret-1", "homeserver_url": "http://x",
            "registration_shared_secret": "early-secret-1", "username": "alice"}),
        );
        assert!(!message.contains("early-secret-1"), "{message}");
        let message = error(
            json!({"homeserver_url": "http://x", "admin_token": "early-secret-2",
            "users": [{"username": "alice", "password": "early-secret-3", "state": "early-secret-3"}]}),
        );
        assert!(!message.contains("early-secret-3"), "{message}");
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
            let message = error(user(bad));
            assert!(message.starts_with("users[1].ratelimit: "), "{message}");
            assert!(message.contains("default (no override), unlimited, or a mapping of messages_per_second and burst_count"), "{message}");
        }
        let negative = error(user(json!({"messages_per_second": -1, "burst_count": 0})));
        assert!(
            negative.starts_with("users[1].ratelimit.messages_per_second: "),
            "{negative}"
        );
        assert!(negative.contains("a whole number from 0 to"), "{negative}");
        let fraction = error(user(json!({"messages_per_second": 1, "burst_count": 0.5})));
        assert!(
            fraction.starts_with("users[1].ratelimit.burst_count: "),
            "{fraction}"
        );
        let unknown = error(user(
            json!({"messages_per_second": 1, "burst_count": 1, "burst": 2}),
        ));
        assert!(
            unknown.starts_with("users[1].ratelimit.burst: unsupported parameter"),
            "{unknown}"
        );
        let missing = error(user(json!({"messages_per_second": 1})));
        assert!(
            missing.starts_with("users[1].ratelimit: give both"),
            "{missing}"
        );
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
        let known: Vec<&str> = MODULE_PARAMETERS
            .iter()
            .chain(USER_PARAMETERS)
            .copied()
            .collect();
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
            .flat_map(|fields| {
                SECRET_PARAMETERS
                    .iter()
                    .filter_map(|name| fields.get(*name))
            })
            .filter_map(|value| value.as_str().map(str::to_string))
            .collect()
    }

    proptest::proptest! {
        /// Whatever the arguments, the parser answers (no panic), a refusal
        /// becomes one failed JSON object, and that object holds none of the
        /// secrets given (long enough to be masked, and not made of the mask's `*`).
        #[test]
        fn any_arguments_give_one_json_object_without_secrets(
            map in proptest::collection::btree_map(parameter_name(), any_json(), 0..10),
        ) {
            let map: Map<String, Value> = map.into_iter().collect();
            let Err(error) = ModuleArgs::from_map(&map) else {
                return Ok(());
            };
            let output = crate::report::Report::fatal(error.to_string()).to_json();
            proptest::prop_assert_eq!(&output["failed"], &json!(true));
            proptest::prop_assert!(output["msg"].is_string());
            let printed = output.to_string();
            for secret in secret_values(&map).iter().filter(|s| s.chars().count() >= 4 && s.contains(|c| c != '*')) {
                proptest::prop_assert!(!printed.contains(secret.as_str()), "{:?} in {}", secret, printed);
            }
        }
    }
}
