//! Stage 1 of `matrix_registration_token`: the declared tokens, their
//! `undeclared` policy, each checked before anything is sent. The
//! connection options are read as for `matrix_user`
//! ([`super::connection`]).

use std::path::Path;

use serde_json::{json, Map, Value};

use super::fields::{echo, Fields};
use crate::model::tokens::{
    DesiredToken, TokenArgs, TokenSettings, TokenSource, TokenState, UndeclaredTokens,
    MAX_USES_ALLOWED,
};
use crate::model::{ArgsError, ArgsErrorKind, ModuleArgs};
use crate::secret::hold;

/// How to reach and authenticate to the server: read exactly as for
/// `matrix_user` ([`ModuleArgs`]), so `module_defaults` for the
/// collection's group sets them for both modules.
const CONNECTION_OPTIONS: [&str; 21] = [
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
    "validate_certs",
    "ca_path",
    "timeout",
    "wait_timeout",
];

/// The options of one token, at the top level or in each entry of `tokens`.
pub const TOKEN_OPTIONS: [&str; 5] = ["token", "token_file", "uses_allowed", "expires", "state"];

/// The options that apply to the whole run.
pub const RUN_OPTIONS: [&str; 3] = ["tokens", "undeclared", "undeclared_max"];

/// The limit is a safety net, not a quota: 0 forbids deleting any.
const UNDECLARED_MAX_LIMIT: u64 = 1_000_000;

/// The Matrix specification's opaque identifier alphabet, also Synapse's rule.
const TOKEN_RULE: &str =
    "must be 1 to 64 characters of A-Z a-z 0-9 . _ ~ - (the Matrix specification's rule for registration tokens)";

impl TokenArgs {
    pub fn from_file(path: &Path) -> Result<TokenArgs, ArgsError> {
        let text = super::read_args_file(path)?;
        // serde_json's messages give a position, never the content.
        let map = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(ArgsError::new(ArgsErrorKind::NotJson(
                    "expected an object".into(),
                )))
            }
            Err(error) => return Err(ArgsError::new(ArgsErrorKind::NotJson(error.to_string()))),
        };
        TokenArgs::from_map(&map)
    }

    pub(super) fn from_map(map: &Map<String, Value>) -> Result<TokenArgs, ArgsError> {
        hold_tokens(map);
        let top = Fields::top(map);
        top.refuse_unknown(&[&CONNECTION_OPTIONS[..], &TOKEN_OPTIONS, &RUN_OPTIONS].concat())?;
        // The connection as matrix_user reads it: its options, Ansible's
        // own keys (check and diff mode), and no users.
        let mut connection: Map<String, Value> = map
            .iter()
            .filter(|(name, _)| {
                CONNECTION_OPTIONS.contains(&name.as_str()) || name.starts_with("_ansible_")
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        connection.insert("users".into(), json!([]));
        let mut connection = ModuleArgs::from_parts(&connection, None)?;
        let (tokens, undeclared) = read_tokens(&top)?;
        connection.warnings.extend(top.take_warnings());
        Ok(TokenArgs {
            connection,
            tokens,
            undeclared,
        })
    }
}

/// Registers every declared token for masking, before any field is read,
/// so that an error about any field masks them.
pub(super) fn hold_tokens(map: &Map<String, Value>) {
    let entries = match map.get("tokens") {
        Some(Value::Array(entries)) => entries.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    for fields in std::iter::once(map).chain(entries) {
        match fields.get("token") {
            Some(Value::String(token)) => hold(token),
            Some(Value::Number(token)) => hold(&token.to_string()),
            _ => {}
        }
    }
}

/// The declared tokens (one at the top level, or the list `tokens`) and
/// what to do with the others.
pub(super) fn read_tokens(
    top: &Fields,
) -> Result<(Vec<DesiredToken>, UndeclaredTokens), ArgsError> {
    let tokens = match top.list("tokens", "a list of mappings")? {
        None => {
            if !TOKEN_OPTIONS[..2].iter().any(|option| top.has(option)) {
                return Err(ArgsError::new(ArgsErrorKind::Missing(
                    "one of token, token_file or tokens is required".into(),
                )));
            }
            vec![read_token(top, "token".into())?]
        }
        Some(entries) => {
            if let Some(option) = TOKEN_OPTIONS.iter().find(|option| top.has(option)) {
                return Err(ArgsError::new(ArgsErrorKind::Exclusive {
                    first: "tokens".into(),
                    second: format!("{option} (give it in each entry of tokens)"),
                }));
            }
            entries
                .iter()
                .enumerate()
                .map(|(index, entry)| {
                    let prefix = format!("tokens[{index}]");
                    let fields = Fields::entry(
                        entry,
                        prefix.clone(),
                        &TOKEN_OPTIONS,
                        "a mapping of token, token_file, uses_allowed, expires and state",
                    )?;
                    read_token(&fields, prefix)
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok((tokens, read_undeclared(top)?))
}

fn read_token(fields: &Fields, name: String) -> Result<DesiredToken, ArgsError> {
    let source = match fields.path("token_file")? {
        // A file not written yet: the server generates the token.
        Some(path) if !fields.has("token") && std::fs::symlink_metadata(&path).is_err() => {
            TokenSource::File {
                path,
                existing: None,
            }
        }
        path => {
            let token = fields
                .secret_or_file("token")?
                .expect("token or token_file is given");
            let valid = (1..=64).contains(&token.expose().len())
                && token
                    .expose()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
            if !valid {
                let field = if path.is_some() {
                    "token_file"
                } else {
                    "token"
                };
                return Err(ArgsError::at(
                    fields.name(field),
                    ArgsErrorKind::BadSecret {
                        problem: TOKEN_RULE,
                    },
                ));
            }
            match path {
                Some(path) => TokenSource::File {
                    path,
                    existing: Some(token),
                },
                None => TokenSource::Given(token),
            }
        }
    };
    let state = match fields.one_of("state", &["present", "absent"])?.as_deref() {
        Some("absent") => TokenState::Absent,
        _ => TokenState::Present,
    };
    let prefix = match name.as_str() {
        "token" => String::new(),
        _ => name.clone(),
    };
    Ok(DesiredToken {
        name,
        prefix,
        source,
        settings: TokenSettings {
            uses_allowed: read_uses_allowed(fields)?,
            expires: read_expires(fields)?,
        },
        state,
    })
}

fn read_uses_allowed(fields: &Fields) -> Result<Option<u32>, ArgsError> {
    let value = match fields.value("uses_allowed") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) if text.trim() == "unlimited" => return Ok(None),
        Some(Value::Number(number)) => number.as_u64(),
        Some(Value::String(text)) => text.trim().parse().ok(),
        Some(_) => None,
    };
    let shown = || {
        echo(
            &fields
                .value("uses_allowed")
                .map(Value::to_string)
                .unwrap_or_default(),
        )
    };
    match value {
        Some(0) => Err(ArgsError::at(
fields.name("uses_allowed"),
ArgsErrorKind::NotAccepted {
            value: "0".into(),
            accepted: format!(
                "a whole number from 1 to {MAX_USES_ALLOWED}, or unlimited. Some homeservers let any number of accounts register with a token whose limit is 0, though 0 is documented as disabling it; to stop a token, use state: absent"
            ),
        })),
        Some(uses) if uses <= u64::from(MAX_USES_ALLOWED) => Ok(Some(uses as u32)),
        _ => Err(ArgsError::at(
fields.name("uses_allowed"),
ArgsErrorKind::NotAccepted {
            value: shown(),
            accepted: format!("a whole number from 1 to {MAX_USES_ALLOWED}, or unlimited"),
        })),
    }
}

fn read_expires(fields: &Fields) -> Result<Option<i64>, ArgsError> {
    match fields.string("expires")?.as_deref().map(str::trim) {
        None | Some("never") => Ok(None),
        Some(text) => crate::rfc3339::parse_millis(text).map(Some).ok_or_else(|| {
            ArgsError::at(
fields.name("expires"),
ArgsErrorKind::NotAccepted {
                value: echo(text),
                accepted: "an RFC 3339 time with its offset, such as 2027-01-31T18:00:00Z or 2027-01-31T19:00:00+01:00, or never".into(),
            })
        }),
    }
}

fn read_undeclared(top: &Fields) -> Result<UndeclaredTokens, ArgsError> {
    let delete = top.one_of("undeclared", &["keep", "delete"])?.as_deref() == Some("delete");
    if delete && !matches!(top.value("tokens"), Some(Value::Array(_))) {
        return Err(ArgsError::new(ArgsErrorKind::Missing(
            "undeclared: delete needs the list form (tokens), which declares every token the server should have".into(),
        )));
    }
    let max = top
        .integer("undeclared_max", 0, UNDECLARED_MAX_LIMIT)?
        .unwrap_or(0) as usize;
    Ok(UndeclaredTokens { delete, max })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{mask_secrets, Secret};
    use serde_json::json;

    fn parse(value: Value) -> Result<(Vec<DesiredToken>, UndeclaredTokens), ArgsError> {
        let mut all =
            json!({"homeserver_url": "http://127.0.0.1:8008", "admin_token": "an-admin-token"});
        all.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        TokenArgs::from_map(all.as_object().unwrap()).map(|args| (args.tokens, args.undeclared))
    }

    #[test]
    fn the_connection_is_read_as_for_matrix_user_and_user_options_are_refused() {
        let args = TokenArgs::from_map(
            json!({"homeserver_url": "http://h:8008/", "admin_token": "an-admin-token", "wait_timeout": 7,
                   "_ansible_check_mode": true, "_matrix_user_module": "matrix_registration_token", "token": "abc"})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            args.connection.server.homeserver_url.as_deref(),
            Some("http://h:8008")
        );
        assert_eq!(args.connection.server.wait_timeout.as_secs(), 7);
        assert!(args.connection.check_mode && args.connection.users.is_empty());
        let message = error(json!({"token": "abc", "username": "alice"}));
        assert!(
            message
                .starts_with("username: unsupported parameter; valid parameters are: homeserver, "),
            "{message}"
        );
        assert!(error(json!({"token": "abc", "wait_timeout": -1})).starts_with("wait_timeout: "));
        for name in CONNECTION_OPTIONS {
            super::super::parameters::parameter(name);
        }
    }

    fn error(value: Value) -> String {
        mask_secrets(&parse(value).unwrap_err().to_string())
    }

    /// The module's documentation (with the doc fragments it extends, as
    /// Ansible reads it) names exactly the options the parser takes, and
    /// says of each connection option what matrix_user's parameter table
    /// says (the same parser reads them).
    #[test]
    fn documentation_agrees_with_the_options() {
        use super::super::parameters::{
            parameter,
            tests::{documented, read_docs, specified},
        };
        let docs = read_docs("matrix_registration_token");
        let options = docs["options"].as_object().unwrap();
        let mut taken = [&CONNECTION_OPTIONS[..], &TOKEN_OPTIONS, &RUN_OPTIONS].concat();
        let mut documented_names: Vec<&str> = options.keys().map(String::as_str).collect();
        taken.sort();
        documented_names.sort();
        let mut disagreements = Vec::new();
        if taken != documented_names {
            disagreements.push(format!(
                "options: here {taken:?}, there {documented_names:?}"
            ));
        }
        for name in CONNECTION_OPTIONS {
            let (ours, theirs) = (
                documented(parameter(name)),
                specified(&docs["options"][name]),
            );
            if ours != theirs {
                disagreements.push(format!("option {name}: here {ours}, there {theirs}"));
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }

    #[test]
    fn one_token_with_its_settings() {
        let (tokens, undeclared) = parse(json!({
            "token": "A.z_~-9", "uses_allowed": "3", "expires": "2027-01-31T19:00:00+01:00"
        }))
        .unwrap();
        assert_eq!(
            tokens,
            [DesiredToken {
                name: "token".into(),
                prefix: String::new(),
                source: TokenSource::Given(Secret::new("A.z_~-9")),
                settings: TokenSettings {
                    uses_allowed: Some(3),
                    expires: Some(1_801_418_400_000)
                },
                state: TokenState::Present,
            }]
        );
        assert!(!undeclared.delete);
    }

    #[test]
    fn unlimited_and_never_are_the_defaults_and_can_be_said() {
        for value in [
            json!({"token": "abc"}),
            json!({"token": "abc", "uses_allowed": "unlimited", "expires": "never"}),
            json!({"token": "abc", "uses_allowed": null, "expires": null}),
        ] {
            let (tokens, _) = parse(value).unwrap();
            assert_eq!(
                tokens[0].settings,
                TokenSettings {
                    uses_allowed: None,
                    expires: None
                }
            );
        }
    }

    #[test]
    fn a_token_outside_the_alphabet_or_length_is_refused_without_quoting_it() {
        assert_eq!(error(json!({"token": ""})), "token: is empty");
        for token in ["bad token", &"x".repeat(65), "naïve", "a/b"] {
            let message = error(json!({"token": token}));
            assert_eq!(message, format!("token: {TOKEN_RULE}"), "{token}");
        }
        let message = error(json!({"tokens": [{"token": "ok"}, {"token": "no way!"}]}));
        assert!(
            message.starts_with("tokens[1].token: must be 1 to 64"),
            "{message}"
        );
    }

    #[test]
    fn zero_uses_is_refused_with_the_reason() {
        let message = error(json!({"token": "abc", "uses_allowed": 0}));
        assert_eq!(message, "uses_allowed: \"0\" is not accepted; use a whole number from 1 to 2147483647, or unlimited. Some homeservers let any number of accounts register with a token whose limit is 0, though 0 is documented as disabling it; to stop a token, use state: absent");
        for bad in [
            json!(-1),
            json!(2_147_483_648u64),
            json!("many"),
            json!(1.5),
        ] {
            let message = error(json!({"tokens": [{"token": "abc", "uses_allowed": bad}]}));
            assert!(message.starts_with("tokens[0].uses_allowed: "), "{message}");
            assert!(
                message.ends_with("use a whole number from 1 to 2147483647, or unlimited"),
                "{message}"
            );
        }
    }

    #[test]
    fn an_expiry_must_be_a_whole_rfc3339_time() {
        for bad in ["2027-01-31", "2027-01-31T18:00:00", "tomorrow"] {
            let message = error(json!({"token": "abc", "expires": bad}));
            assert!(
                message.starts_with(&format!(
                    "expires: {bad:?} is not accepted; use an RFC 3339 time"
                )),
                "{message}"
            );
        }
    }

    #[test]
    fn the_list_form_reads_each_entry_and_refuses_top_level_token_options() {
        let (tokens, _) =
            parse(json!({"tokens": [{"token": "one"}, {"token": "two", "state": "absent"}]}))
                .unwrap();
        assert_eq!(
            tokens
                .iter()
                .map(|t| (t.name.as_str(), t.state))
                .collect::<Vec<_>>(),
            [
                ("tokens[0]", TokenState::Present),
                ("tokens[1]", TokenState::Absent)
            ]
        );
        assert_eq!(tokens[1].field_name("expires"), "tokens[1].expires");
        assert_eq!(
            error(json!({"tokens": [], "uses_allowed": 2})),
            "tokens and uses_allowed (give it in each entry of tokens) are mutually exclusive; give only one"
        );
        assert!(error(json!({"tokens": [{"token": "one", "uses": 2}]}))
            .starts_with("tokens[0].uses: unsupported parameter"));
        assert_eq!(
            error(json!({"tokens": [{"token": "one", "state": "gone"}]})),
            "tokens[0].state: \"gone\" is not accepted; use present or absent"
        );
        assert_eq!(
            error(json!({"uses_allowed": 2})),
            "one of token, token_file or tokens is required"
        );
        assert_eq!(
            error(json!({"tokens": "one"})),
            "tokens: expected a list of mappings"
        );
        assert_eq!(
            error(json!({"tokens": ["one"]})),
            "tokens[0]: expected a mapping of token, token_file, uses_allowed, expires and state"
        );
    }

    #[test]
    fn undeclared_delete_needs_the_list_and_defaults_to_deleting_none() {
        let (_, undeclared) = parse(json!({"tokens": [], "undeclared": "delete"})).unwrap();
        assert_eq!(
            undeclared,
            UndeclaredTokens {
                delete: true,
                max: 0
            }
        );
        assert!(error(json!({"token": "abc", "undeclared": "delete"}))
            .starts_with("undeclared: delete needs the list form"));
        assert_eq!(
            error(json!({"tokens": [], "undeclared": "lock"})),
            "undeclared: \"lock\" is not accepted; use keep or delete"
        );
    }

    #[test]
    fn a_token_file_is_read_when_it_exists_and_generated_when_not() {
        let dir =
            std::env::temp_dir().join(format!("matrix-user-token-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (written, missing) = (dir.join("written"), dir.join("missing"));
        std::fs::write(&written, "from-file-1\n").unwrap();
        let (tokens, _) =
            parse(json!({"tokens": [{"token_file": written}, {"token_file": missing}]})).unwrap();
        assert_eq!(tokens[0].known(), Some(&Secret::new("from-file-1")));
        assert_eq!(
            tokens[1].source,
            TokenSource::File {
                path: missing.clone(),
                existing: None
            }
        );
        std::fs::write(&written, "not valid\n").unwrap();
        assert_eq!(
            error(json!({"token_file": written})),
            format!("token_file: {TOKEN_RULE}")
        );
        assert_eq!(
            error(json!({"token": "abc", "token_file": missing})),
            "token and token_file are mutually exclusive; give only one"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
