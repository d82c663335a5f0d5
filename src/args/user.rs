//! One declared user: each per-user parameter read as a typed value, and
//! the list of users (`users`), each declared once.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::Value;

use super::avatar;
use super::fields::{echo, Fields};
use super::parameters::{self, Scope};
use crate::matrix_id::{Room, Username};
use crate::model::{
    ArgsError, ArgsErrorKind, DesiredUser, ExternalId, LoginOptions, Ratelimit, Restrictions,
    UpdatePassword, UpdateType, UpstreamLink, UserState, UserType,
};

/// The declared users: `top`'s, or, when given, those of `listed` (each
/// as its JSON text, read one at a time), which `top`'s `users` stands for.
pub(super) fn read_users(
    top: &Fields,
    listed: Option<&[&RawValue]>,
) -> Result<Vec<DesiredUser>, ArgsError> {
    let user_parameters: Vec<&str> = parameters::names(Scope::User).collect();
    let single_user_fields: Vec<&str> = user_parameters
        .iter()
        .copied()
        .filter(|f| top.has(f))
        .collect();
    let users = match top.value("users") {
        None | Some(Value::Null) => {
            if !top.has("username") {
                return Err(ArgsError::new(ArgsErrorKind::Missing(
                    "give username (one user) or users (a list of users)".into(),
                )));
            }
            vec![read_user(top)?]
        }
        Some(Value::Array(entries)) => {
            if let Some(field) = single_user_fields.first() {
                return Err(ArgsError::new(ArgsErrorKind::Exclusive {
                    first: "users".into(),
                    second: field.to_string(),
                }));
            }
            let entries: Box<dyn Iterator<Item = Result<Cow<Value>, ArgsError>>> = match listed {
                Some(listed) => Box::new(listed.iter().map(|raw| {
                    serde_json::from_str(raw.get())
                        .map(Cow::Owned)
                        .map_err(|e| ArgsError::new(ArgsErrorKind::NotJson(e.to_string())))
                })),
                None => Box::new(entries.iter().map(|entry| Ok(Cow::Borrowed(entry)))),
            };
            let mut users = Vec::with_capacity(listed.map_or(entries.size_hint().0, <[_]>::len));
            for (index, entry) in entries.enumerate() {
                let entry = entry?;
                let field = format!("users[{index}]");
                let fields = Fields::entry(
                    entry.as_ref(),
                    field,
                    &user_parameters,
                    "a mapping with username, password, admin, ...",
                )?;
                users.push(read_user(&fields)?);
            }
            users
        }
        Some(_) => return Err(ArgsError::wrong_type("users", "a list of users")),
    };
    refuse_duplicates(&users)?;
    Ok(users)
}

fn read_user(fields: &Fields) -> Result<DesiredUser, ArgsError> {
    let raw = fields.string("username")?.ok_or_else(|| {
        ArgsError::new(ArgsErrorKind::Missing(format!(
            "{}: username is required",
            fields.context()
        )))
    })?;
    let username = Username::parse(&raw).map_err(|reason| {
        ArgsError::at(
            fields.name("username"),
            ArgsErrorKind::BadUsername {
                username: echo(&raw),
                reason,
            },
        )
    })?;
    let password = fields.secret("password")?;
    if password.as_ref().is_some_and(|p| p.expose().is_empty()) {
        return Err(ArgsError::at(
            fields.name("password"),
            ArgsErrorKind::BadSecret {
                problem: "is empty; give a password or leave the field out",
            },
        ));
    }
    let user_type = read_user_type(fields)?;
    let state = match fields.choice("state")?.as_str() {
        "absent" => UserState::Absent,
        _ => UserState::Present,
    };
    let update_password = match fields.choice("update_password")?.as_str() {
        "always" => UpdatePassword::Always,
        _ => UpdatePassword::OnCreate,
    };
    if update_password == UpdatePassword::Always && password.is_none() {
        return Err(ArgsError::new(ArgsErrorKind::Missing(format!(
            "{}: update_password=always needs a password",
            fields.context()
        ))));
    }
    let update_type = match fields.choice("update_type")?.as_str() {
        "on_create" => UpdateType::OnCreate,
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
                return Err(ArgsError::at(
                    fields.name("displayname"),
                    ArgsErrorKind::NotAccepted {
                        value: name,
                        accepted: "a non-empty name (leave displayname out to leave it as it is)"
                            .into(),
                    },
                ))
            }
            name => name,
        },
        state,
        update_password,
        update_type,
        erase: fields.boolean_or_default("erase")?,
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
        login: LoginOptions {
            skip_password_check: fields.boolean_or_default("mas_skip_password_check")?,
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
    let Some(items) = fields.list("emails", "a list of e-mail addresses")? else {
        return Ok(None);
    };
    let mut emails: Vec<String> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let field = format!("{}[{index}]", fields.name("emails"));
        let not_accepted = |value: &str, accepted: &str| {
            ArgsError::at(
                field.clone(),
                ArgsErrorKind::NotAccepted {
                    value: echo(value),
                    accepted: accepted.into(),
                },
            )
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
    let Some(items) = fields.list("external_ids", accepted)? else {
        return Ok(None);
    };
    let mut ids: Vec<ExternalId> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let field = format!("{}[{index}]", fields.name("external_ids"));
        let entry = Fields::entry(
            item,
            field.clone(),
            &EXTERNAL_ID_FIELDS,
            "a mapping of auth_provider and external_id",
        )?;
        let [auth_provider, external_id] = EXTERNAL_ID_FIELDS.map(|name| match entry.string(name)? {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ArgsError::new(ArgsErrorKind::Missing(format!(
                "{}: give a non-empty {name} (the identity provider's ID as the homeserver names it, such as oidc-github, and the user's ID there)",
                entry.name(name)
            )))),
        });
        let id = ExternalId {
            auth_provider: auth_provider?,
            external_id: external_id?,
        };
        if let Some(first) = ids.iter().position(|i| *i == id) {
            return Err(ArgsError::at(
                field,
                ArgsErrorKind::NotAccepted {
                    value: echo(&id.to_string()),
                    accepted: format!(
                        "each identity once: it is {}[{first}] again",
                        fields.name("external_ids")
                    ),
                },
            ));
        }
        ids.push(id);
    }
    Ok(Some(ids))
}

/// Room aliases or IDs, by shape. Refused with `state: absent`: deactivation
/// makes a user leave every room, so it could be in none of them.
fn read_rooms(fields: &Fields, state: UserState) -> Result<Vec<Room>, ArgsError> {
    let field = fields.name("rooms");
    let accepted = "a list of room aliases (#room:example.com) or IDs (!abc:example.com)";
    let Some(rooms) = fields.list("rooms", accepted)? else {
        return Ok(Vec::new());
    };
    if state == UserState::Absent && !rooms.is_empty() {
        return Err(ArgsError::new(ArgsErrorKind::Exclusive {
            first: field,
            second: "state: absent".into(),
        }));
    }
    let mut parsed: Vec<Room> = Vec::with_capacity(rooms.len());
    for (index, room) in rooms.iter().enumerate() {
        let text = match room {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let room = Room::parse(&text).ok_or_else(|| {
            ArgsError::at(
                format!("{field}[{index}]"),
                ArgsErrorKind::NotAccepted {
                    value: echo(&text),
                    accepted:
                        "a room alias like #room:example.com or a room ID like !abc:example.com"
                            .into(),
                },
            )
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
        false => Err(ArgsError::at(
            fields.name("user_type"),
            ArgsErrorKind::NotAccepted {
                value: echo(&name),
                accepted: format!(
                    "regular, bot, support, or a type the homeserver is configured with: \
                 1 to {USER_TYPE_MAX_CHARS} characters, no spaces"
                ),
            },
        )),
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
    let not_accepted = |value: String| {
        ArgsError::at(
            field.clone(),
            ArgsErrorKind::NotAccepted {
                value: echo(&value),
                accepted: format!(
                    "{RATELIMIT_ACCEPTED}, each a whole number from 0 to {RATELIMIT_MAX}"
                ),
            },
        )
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
                    ArgsError::new(ArgsErrorKind::Missing(format!(
                        "{}: give both messages_per_second and burst_count (0 and 0 is unlimited)",
                        field
                    )))
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

/// A list of `{provider, subject}` mappings.
fn read_upstream_links(fields: &Fields) -> Result<Option<Vec<UpstreamLink>>, ArgsError> {
    let field = fields.name("upstream_links");
    let accepted = "a list of mappings of provider and subject";
    let Some(entries) = fields.list("upstream_links", accepted)? else {
        return Ok(None);
    };
    let mut links = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let entry_field = format!("{field}[{index}]");
        let link = Fields::entry(
            entry,
            entry_field,
            &["provider", "subject"],
            "a mapping of provider and subject",
        )?;
        let [provider, subject] = ["provider", "subject"].map(|name| {
            link.string(name)?.filter(|v| !v.is_empty()).ok_or_else(|| {
                ArgsError::new(ArgsErrorKind::Missing(format!(
                    "{}: give a non-empty {name} (the provider's ID or human name as the server lists it, and the user's subject there)",
                    link.name(name)
                )))
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
            return Err(ArgsError::at(
                user.field.clone(),
                ArgsErrorKind::DuplicateUser {
                    username: echo(user.username.localpart()),
                    first: first.to_string(),
                },
            ));
        }
    }
    Ok(())
}
