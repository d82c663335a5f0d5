//! Stage 1: read Ansible's args file and turn it into a validated request.
//!
//! Every check of the input itself happens here: unknown parameters (binary
//! modules get no `argument_spec` from Ansible), wrong types, values out of
//! range, bad usernames. What a server can do with the declaration is its
//! backend's rule, checked next, still before anything is sent. Nothing here knows what a server supports.
//! Reading one field as a typed value is [`fields`]' job; this file decides
//! which fields there are and what they make together.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::matrix_id::{Room, Username};
use crate::model::{
    ArgsError, Credentials, DesiredUser, ExternalId, HomeserverKind, MasOptions, ModuleArgs,
    Ratelimit, Restrictions, ServerOptions, Undeclared, UndeclaredPolicy, UpdatePassword,
    UpdateType, UpstreamLink, UserState, UserType,
};
use crate::secret::{hold, hold_basic_auth, url_password};

mod avatar;
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
    "synapse_database",
    "synapse_database_file",
    "mas_url",
    "mas_client_id",
    "mas_client_secret",
    "mas_client_secret_file",
    "mas_adopt_existing",
    "users",
    "undeclared",
    "undeclared_ignore",
    "undeclared_max",
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
    "update_type",
    "erase",
    "email",
    "locked",
    "suspended",
    "shadow_banned",
    "ratelimit",
    "mas_skip_password_check",
    "upstream_links",
    "rooms",
    "emails",
    "external_ids",
    "avatar",
    "access_token_file",
];

/// Parameters whose values are secrets, at the top level or in each `users` entry.
const SECRET_PARAMETERS: &[&str] = &[
    "password",
    "registration_shared_secret",
    "admin_token",
    "mas_client_secret",
    "dendrite_database",
    "synapse_database",
];

const MAX_CONCURRENCY: usize = 64;
const DEFAULT_CONCURRENCY: usize = 8;

impl ModuleArgs {
    pub fn from_file(path: &Path) -> Result<ModuleArgs, ArgsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ArgsError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        // serde_json's messages give a position, never the content.
        let not_json = |e: serde_json::Error| ArgsError::NotJson(e.to_string());
        // The users are kept as text and read one at a time: a tree of
        // values for 100,000 users at once takes about 1 KB each.
        let raw_fields = match serde_json::from_str::<BTreeMap<String, &RawValue>>(&text) {
            Ok(raw_fields) => raw_fields,
            Err(error) => {
                serde_json::from_str::<Value>(&text).map_err(not_json)?;
                let _ = error;
                return Err(ArgsError::NotJson("expected an object".into()));
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
            url: read_url(&top, url_field)?.ok_or_else(|| {
                ArgsError::Missing(format!(
                    "{url_field} is required, e.g. http://127.0.0.1:8008"
                ))
            })?,
            url_field,
            server_name: top.string("server_name")?,
            validate_certs: top.boolean("validate_certs")?.unwrap_or(true),
            ca_path: top.path("ca_path")?,
            timeout: Duration::from_secs(top.integer("timeout", 1, 3600)?.unwrap_or(30)),
            wait_timeout: Duration::from_secs(top.integer("wait_timeout", 0, 3600)?.unwrap_or(60)),
        };
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
            synapse_database: top.secret_or_file("synapse_database")?,
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

        let users = read_users(&top, users)?;
        let undeclared = read_undeclared(&top)?;
        Ok(ModuleArgs {
            homeserver,
            server,
            credentials,
            users,
            undeclared,
            concurrency: top
                .integer("concurrency", 1, MAX_CONCURRENCY as u64)?
                .map_or(DEFAULT_CONCURRENCY, |n| n as usize),
            mas_adopt_existing: top.boolean("mas_adopt_existing")?.unwrap_or(false),
            mas_homeserver_url: match homeserver {
                HomeserverKind::Mas => read_url(&top, "homeserver_url")?,
                _ => None,
            },
            check_mode: top.internal_flag("_ansible_check_mode"),
            diff: top.internal_flag("_ansible_diff"),
            warnings: top.take_warnings(),
        })
    }
}

/// The URL in `field`, without a trailing `/`; only http:// and https:// are accepted.
fn read_url(top: &Fields, field: &'static str) -> Result<Option<String>, ArgsError> {
    let Some(url) = top.string(field)? else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ArgsError::NotAccepted {
            field: field.into(),
            value: echo(&url),
            accepted: "an http:// or https:// URL".into(),
        });
    }
    Ok(Some(url.trim_end_matches('/').to_string()))
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

/// The declared users: `top`'s, or, when given, those of `listed` (each
/// as its JSON text, read one at a time), which `top`'s `users` stands for.
fn read_users(top: &Fields, listed: Option<&[&RawValue]>) -> Result<Vec<DesiredUser>, ArgsError> {
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
            let entries: Box<dyn Iterator<Item = Result<Cow<Value>, ArgsError>>> = match listed {
                Some(listed) => Box::new(listed.iter().map(|raw| {
                    serde_json::from_str(raw.get())
                        .map(Cow::Owned)
                        .map_err(|e| ArgsError::NotJson(e.to_string()))
                })),
                None => Box::new(entries.iter().map(|entry| Ok(Cow::Borrowed(entry)))),
            };
            let mut users = Vec::with_capacity(listed.map_or(entries.size_hint().0, <[_]>::len));
            for (index, entry) in entries.enumerate() {
                let entry = entry?;
                let field = format!("users[{index}]");
                let Value::Object(map) = entry.as_ref() else {
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
    let user_type = read_user_type(fields)?;
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
    let update_type = match fields
        .choice("update_type", &["on_create", "always"])?
        .as_deref()
    {
        Some("on_create") => UpdateType::OnCreate,
        _ => UpdateType::Always,
    };
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
        update_type,
        erase: fields.boolean("erase")?.unwrap_or(false),
        email: fields.string("email")?,
        restrictions: Restrictions {
            locked: fields.boolean("locked")?,
            suspended: fields.boolean("suspended")?,
            shadow_banned: fields.boolean("shadow_banned")?,
        },
        ratelimit: read_ratelimit(fields)?,
        rooms: read_rooms(fields, state)?,
        emails: read_emails(fields)?,
        external_ids: read_external_ids(fields)?,
        avatar: avatar::read_avatar(fields)?,
        access_token_file: fields.path("access_token_file")?,
        mas: MasOptions {
            skip_password_check: fields.boolean("mas_skip_password_check")?.unwrap_or(false),
            upstream_links: read_upstream_links(fields)?,
        },
    })
}

/// Synapse's limit (`MAX_EMAIL_ADDRESS_LENGTH` in synapse/util/threepids.py).
const EMAIL_MAX_CHARS: usize = 500;

/// The addresses `emails` declares, as given (trimmed), refused by field
/// name when one is not an address at all. Each server's backend puts them
/// in the form it keeps them in, and refuses one given twice, by its own
/// comparison (`AccountServer::email_form`).
fn read_emails(fields: &Fields) -> Result<Option<Vec<String>>, ArgsError> {
    let Some(items) = read_list(fields, "emails", "a list of e-mail addresses")? else {
        return Ok(None);
    };
    let mut emails: Vec<String> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let field = format!("{}[{index}]", fields.name("emails"));
        let not_accepted = |value: &str, accepted: &str| ArgsError::NotAccepted {
            field: field.clone(),
            value: echo(value),
            accepted: accepted.into(),
        };
        let address = match item {
            Value::String(address) => address.trim(),
            other => return Err(not_accepted(&other.to_string(), "an e-mail address")),
        };
        let domain = match address.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.contains('@') => domain,
            _ => {
                return Err(not_accepted(
                    address,
                    "an e-mail address: one @ with a name before it and a domain after it",
                ))
            }
        };
        if address.chars().count() > EMAIL_MAX_CHARS
            || address.chars().any(|c| c.is_whitespace() || c.is_control())
            || domain.split('.').any(str::is_empty)
        {
            return Err(not_accepted(address, &format!("an e-mail address of at most {EMAIL_MAX_CHARS} characters, without spaces, with a domain such as example.com after the @")));
        }
        emails.push(address.to_string());
    }
    Ok(Some(emails))
}

const EXTERNAL_ID_FIELDS: [&str; 2] = ["auth_provider", "external_id"];

/// The SSO identities `external_ids` declares, each a mapping of a
/// non-empty `auth_provider` and `external_id`, none twice.
fn read_external_ids(fields: &Fields) -> Result<Option<Vec<ExternalId>>, ArgsError> {
    let accepted = "a list of mappings of auth_provider and external_id";
    let Some(items) = read_list(fields, "external_ids", accepted)? else {
        return Ok(None);
    };
    let mut ids: Vec<ExternalId> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let field = format!("{}[{index}]", fields.name("external_ids"));
        let Value::Object(map) = item else {
            return Err(ArgsError::WrongType {
                field,
                expected: "a mapping of auth_provider and external_id",
            });
        };
        let entry = Fields::nested(map, field.clone());
        entry.refuse_unknown(&EXTERNAL_ID_FIELDS)?;
        let [auth_provider, external_id] = EXTERNAL_ID_FIELDS.map(|name| match entry.string(name)? {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ArgsError::Missing(format!(
                "{}: give a non-empty {name} (the provider's idp_id as Synapse names it, such as oidc-github, and the user's ID there)",
                entry.name(name)
            ))),
        });
        let id = ExternalId {
            auth_provider: auth_provider?,
            external_id: external_id?,
        };
        if let Some(first) = ids.iter().position(|i| *i == id) {
            return Err(ArgsError::NotAccepted {
                field,
                value: echo(&id.to_string()),
                accepted: format!(
                    "each identity once: it is {}[{first}] again",
                    fields.name("external_ids")
                ),
            });
        }
        ids.push(id);
    }
    Ok(Some(ids))
}

/// The list `field` holds; `None` when it is left out.
fn read_list<'a>(
    fields: &Fields<'a>,
    field: &str,
    expected: &'static str,
) -> Result<Option<&'a Vec<Value>>, ArgsError> {
    match fields.value(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(ArgsError::WrongType {
            field: fields.name(field),
            expected,
        }),
    }
}

/// Room aliases or IDs, by shape. Refused with `state: absent`: deactivation
/// makes a user leave every room, so it could be in none of them.
fn read_rooms(fields: &Fields, state: UserState) -> Result<Vec<Room>, ArgsError> {
    let field = fields.name("rooms");
    let rooms = match fields.value("rooms") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(rooms)) => rooms,
        Some(_) => {
            return Err(ArgsError::WrongType {
                field,
                expected: "a list of room aliases (#room:example.com) or IDs (!abc:example.com)",
            })
        }
    };
    if state == UserState::Absent && !rooms.is_empty() {
        return Err(ArgsError::Exclusive {
            first: field,
            second: "state: absent".into(),
        });
    }
    let mut parsed: Vec<Room> = Vec::with_capacity(rooms.len());
    for (index, room) in rooms.iter().enumerate() {
        let text = match room {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let room = Room::parse(&text).ok_or_else(|| ArgsError::NotAccepted {
            field: format!("{field}[{index}]"),
            value: echo(&text),
            accepted: "a room alias like #room:example.com or a room ID like !abc:example.com"
                .into(),
        })?;
        if !parsed.contains(&room) {
            parsed.push(room);
        }
    }
    Ok(parsed)
}

/// Synapse keeps a user's type as text; a longer name is surely a mistake.
const USER_TYPE_MAX_CHARS: usize = 255;

/// `regular`, `bot`, `support` or a type of the server's own configuration,
/// which only the server can confirm: here only its shape is checked.
fn read_user_type(fields: &Fields) -> Result<Option<UserType>, ArgsError> {
    let Some(name) = fields.string("user_type")? else {
        return Ok(None);
    };
    let shaped = (1..=USER_TYPE_MAX_CHARS).contains(&name.chars().count())
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    match shaped {
        true => Ok(Some(UserType::from_name(&name))),
        false => Err(ArgsError::NotAccepted {
            field: fields.name("user_type"),
            value: echo(&name),
            accepted: format!(
                "regular, bot, support, or a type the homeserver is configured with \
                 (Synapse's user_types.extra_user_types): 1 to {USER_TYPE_MAX_CHARS} characters, \
                 no spaces"
            ),
        }),
    }
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

/// The limit is a safety net, not a quota: 0 forbids touching anyone.
const UNDECLARED_MAX_LIMIT: u64 = 1_000_000;

/// `undeclared`, its ignore patterns and its limit. Only the list form
/// (`users`) declares the whole server; each pattern must match a whole
/// localpart (anchored here, so `bot` spares `bot` and not `robot`).
fn read_undeclared(top: &Fields) -> Result<UndeclaredPolicy, ArgsError> {
    let names = Undeclared::ALL.map(Undeclared::name);
    let action = top
        .choice("undeclared", &names)?
        .and_then(|name| Undeclared::ALL.into_iter().find(|u| u.name() == name))
        .unwrap_or_default();
    if action != Undeclared::Keep && !matches!(top.value("users"), Some(Value::Array(_))) {
        return Err(ArgsError::Missing(format!(
            "undeclared: {} needs the list form (users), which declares every user the server should have",
            action.name()
        )));
    }
    let ignore = match top.value("undeclared_ignore") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(patterns)) => patterns
            .iter()
            .enumerate()
            .map(|(index, pattern)| anchored_pattern(pattern, index))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ArgsError::WrongType {
                field: "undeclared_ignore".into(),
                expected: "a list of regular expressions",
            })
        }
    };
    let max = top
        .integer("undeclared_max", 0, UNDECLARED_MAX_LIMIT)?
        .map_or(UndeclaredPolicy::DEFAULT_MAX, |n| n as usize);
    Ok(UndeclaredPolicy {
        action,
        ignore,
        max,
    })
}

/// `undeclared_ignore[index]` compiled to match a whole localpart.
fn anchored_pattern(pattern: &Value, index: usize) -> Result<regex::Regex, ArgsError> {
    let field = format!("undeclared_ignore[{index}]");
    let Value::String(pattern) = pattern else {
        return Err(ArgsError::WrongType {
            field,
            expected: "a regular expression (a string)",
        });
    };
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|error| ArgsError::NotAccepted {
        field,
        value: echo(pattern),
        accepted: format!(
            "a regular expression (Rust regex syntax); {}",
            error.to_string().lines().last().unwrap_or_default()
        ),
    })
}

/// A list of `{provider, subject}` mappings.
fn read_upstream_links(fields: &Fields) -> Result<Option<Vec<UpstreamLink>>, ArgsError> {
    let field = fields.name("upstream_links");
    let entries = match fields.value("upstream_links") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(ArgsError::WrongType {
                field,
                expected: "a list of mappings of provider and subject",
            })
        }
    };
    let mut links = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let entry_field = format!("{field}[{index}]");
        let Value::Object(map) = entry else {
            return Err(ArgsError::WrongType {
                field: entry_field,
                expected: "a mapping of provider and subject",
            });
        };
        let link = Fields::nested(map, entry_field);
        link.refuse_unknown(&["provider", "subject"])?;
        let [provider, subject] = ["provider", "subject"].map(|name| {
            link.string(name)?.filter(|v| !v.is_empty()).ok_or_else(|| {
                ArgsError::Missing(format!(
                    "{}: give a non-empty {name} (the provider's ID or human name as MAS lists it, and the user's subject there)",
                    link.name(name)
                ))
            })
        });
        links.push(UpstreamLink {
            provider: provider?,
            subject: subject?,
        });
    }
    Ok(Some(links))
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

/// Registers the secret arguments among `fields` (the top level's or one user's).
fn hold_user_secrets(fields: &Map<String, Value>) {
    for name in SECRET_PARAMETERS {
        match fields.get(*name) {
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

    #[test]
    fn with_mas_homeserver_url_is_optional_and_names_the_homeserver_behind_it() {
        let mas = json!({"homeserver": "mas", "mas_url": "http://mas/", "username": "alice"});
        assert_eq!(parse(mas.clone()).unwrap().mas_homeserver_url, None);
        let mut behind = mas.clone();
        behind["homeserver_url"] = json!("https://matrix.example.com/");
        let args = parse(behind).unwrap();
        assert_eq!(args.server.url, "http://mas");
        assert_eq!(
            args.mas_homeserver_url.as_deref(),
            Some("https://matrix.example.com")
        );
        let mut wrong = mas;
        wrong["homeserver_url"] = json!("matrix.example.com");
        assert!(error(wrong).starts_with("homeserver_url: "));
        assert_eq!(
            parse(with(json!({"username": "alice"})))
                .unwrap()
                .mas_homeserver_url,
            None
        );
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

    /// A database URL read from a file: its password alone is masked too,
    /// as a driver may quote it without the rest of the URL.
    #[test]
    fn the_synapse_database_may_come_from_a_file_and_its_password_is_masked() {
        let path = std::env::temp_dir().join(format!(
            "matrix-user-args-test-{}-synapse-database",
            std::process::id()
        ));
        std::fs::write(&path, "postgresql://synapse:syn-db-secret@db/synapse\n").unwrap();
        let parsed = parse(with(
            json!({"username": "a", "synapse_database_file": path}),
        ));
        std::fs::remove_file(&path).unwrap();
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
    fn mas_skip_password_check_is_a_boolean_named_when_wrong() {
        let args = parse(with(
            json!({"username": "a", "mas_skip_password_check": "yes"}),
        ))
        .unwrap();
        assert!(args.users[0].mas.skip_password_check);
        let message = error(with(
            json!({"users": [{"username": "a", "mas_skip_password_check": "sometimes"}]}),
        ));
        assert!(
            message.starts_with("users[0].mas_skip_password_check: \"sometimes\" is not accepted"),
            "{message}"
        );
    }

    #[test]
    fn upstream_links_are_provider_and_subject_mappings_named_when_wrong() {
        let user =
            |links: Value| with(json!({"users": [{"username": "a", "upstream_links": links}]}));
        let args = parse(user(json!([{"provider": "SSO", "subject": 42}]))).unwrap();
        assert_eq!(
            args.users[0].mas.upstream_links,
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
            let message = error(user(links));
            assert!(message.starts_with(expected), "{message}");
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
                message.contains("Synapse's user_types.extra_user_types"),
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
            let message = error(user(emails));
            assert!(message.starts_with("users[1].emails"), "{message}");
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
            let message = error(user(ids));
            assert!(message.starts_with(expected), "{message}");
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
