//! Matrix user IDs and room names: the grammar checks that let bad names
//! fail before any request is sent.

use std::fmt;

use crate::secret::excerpt;

/// The longest user ID the Matrix specification allows, `@` and server included.
const MAX_USER_ID_LENGTH: usize = 255;
/// How much of a given name a message quotes back (a 50 MB username is not echoed).
const MAX_SUGGESTED_CHARS: usize = 64;

/// Why a username cannot become a Matrix user ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Nothing, or only a `@`/`:`, was given.
    #[error("is empty")]
    Empty,
    /// Matrix localparts are lower case; the homeserver would refuse or fold it.
    #[error("has upper-case letters: Matrix usernames are lower case (use {lowered:?})")]
    UpperCase { lowered: String },
    /// A character outside the localpart grammar.
    #[error("contains {character:?}: only a-z, 0-9 and . _ = - / + are allowed")]
    InvalidCharacter { character: char },
    /// Synapse reserves localparts that start with `_` for application services.
    #[error(
        "starts with '_', which homeservers reserve for bridges and bots of application services"
    )]
    LeadingUnderscore,
    /// Synapse reserves all-digit localparts for guest users.
    #[error("is all digits, which homeservers reserve for guest users")]
    AllDigits,
    /// A full ID must look like `@localpart:server.name`.
    #[error("is not a localpart like 'alice' nor a full ID like '@alice:example.com'")]
    Malformed,
    /// The full ID names another homeserver than the one being managed.
    #[error("belongs to server {found:?}, but this homeserver is {expected:?}")]
    ForeignServer { found: String, expected: String },
    /// The full user ID would exceed the specification's limit.
    #[error("makes a user ID of {length} characters; the limit is {MAX_USER_ID_LENGTH}")]
    TooLong { length: usize },
}

/// A username as the playbook wrote it: a bare localpart or a full user ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    localpart: String,
    server_name: Option<String>,
}

impl Username {
    pub fn parse(input: &str) -> Result<Username, UsernameError> {
        let (localpart, server_name) = match input.strip_prefix('@') {
            Some(full) => match full.split_once(':') {
                Some((localpart, server)) if !server.is_empty() => {
                    (localpart, Some(server.to_string()))
                }
                _ => return Err(UsernameError::Malformed),
            },
            None if input.contains(':') => return Err(UsernameError::Malformed),
            None => (input, None),
        };
        validate_localpart(localpart)?;
        Ok(Username {
            localpart: localpart.to_string(),
            server_name,
        })
    }

    pub fn localpart(&self) -> &str {
        &self.localpart
    }

    /// The user ID on `server_name`, refusing a full ID of another server.
    pub fn on_server(&self, server_name: &str) -> Result<UserId, UsernameError> {
        if let Some(found) = &self.server_name {
            if found != server_name {
                return Err(UsernameError::ForeignServer {
                    found: excerpt(found, MAX_SUGGESTED_CHARS),
                    expected: server_name.to_string(),
                });
            }
        }
        let user_id = UserId {
            localpart: self.localpart.clone(),
            server_name: server_name.to_string(),
        };
        let length = user_id.to_string().chars().count();
        if length > MAX_USER_ID_LENGTH {
            return Err(UsernameError::TooLong { length });
        }
        Ok(user_id)
    }
}

fn validate_localpart(localpart: &str) -> Result<(), UsernameError> {
    if localpart.is_empty() {
        return Err(UsernameError::Empty);
    }
    if localpart.chars().any(|c| c.is_uppercase()) {
        return Err(UsernameError::UpperCase {
            lowered: excerpt(&localpart.to_lowercase(), MAX_SUGGESTED_CHARS),
        });
    }
    if let Some(character) = localpart
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
    {
        return Err(UsernameError::InvalidCharacter { character });
    }
    if localpart.starts_with('_') {
        return Err(UsernameError::LeadingUnderscore);
    }
    if localpart.chars().all(|c| c.is_ascii_digit()) {
        return Err(UsernameError::AllDigits);
    }
    Ok(())
}

/// A fully qualified Matrix user ID, `@localpart:server_name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    localpart: String,
    server_name: String,
}

impl UserId {
    pub fn localpart(&self) -> &str {
        &self.localpart
    }

    /// A local user ID as the server itself lists it, taken as it is: it may
    /// be one the module would not register (a bridge's `_` localpart, a
    /// historical upper-case one). `None` for another server's.
    pub fn listed(user_id: &str, server_name: &str) -> Option<UserId> {
        let localpart = user_id
            .strip_prefix('@')?
            .strip_suffix(server_name)?
            .strip_suffix(':')?;
        (!localpart.is_empty()).then(|| UserId {
            localpart: localpart.to_string(),
            server_name: server_name.to_string(),
        })
    }

    /// This ID as a declaration names it, for a declaration the module makes
    /// itself (an undeclared user's).
    pub fn username(&self) -> Username {
        Username {
            localpart: self.localpart.clone(),
            server_name: Some(self.server_name.clone()),
        }
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}:{}", self.localpart, self.server_name)
    }
}

/// The longest room alias the Matrix specification allows, `#` and server included.
const MAX_ROOM_LENGTH: usize = 255;
/// Room IDs of room version 12 on (MSC4291) have no server: `!` and the
/// create event's reference hash, 43 characters of unpadded url-safe base64.
const SERVERLESS_ROOM_ID_CHARS: usize = 43;

/// A room as a playbook names it: an alias (`#room:example.com`) or an ID
/// (`!opaque:example.com`, or `!` and 43 url-safe base64 characters).
/// Only its shape is checked; whether it exists is the server's to say.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Room(String);

impl Room {
    /// `None` when `input` has neither shape.
    pub fn parse(input: &str) -> Option<Room> {
        let fits = input.len() <= MAX_ROOM_LENGTH
            && !input.chars().any(|c| c.is_whitespace() || c.is_control());
        let with_server = |rest: &str| {
            rest.split_once(':')
                .is_some_and(|(local, server)| !local.is_empty() && !server.is_empty())
        };
        let shaped = match (input.get(..1), input.get(1..).unwrap_or_default()) {
            (Some("#"), rest) => with_server(rest),
            (Some("!"), rest) => {
                with_server(rest)
                    || (rest.len() == SERVERLESS_ROOM_ID_CHARS
                        && rest
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            }
            _ => false,
        };
        (fits && shaped).then(|| Room(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An alias, which the server resolves to the room's ID.
    pub fn is_alias(&self) -> bool {
        self.0.starts_with('#')
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_aliases_or_ids_by_shape() {
        let v12 = format!("!{}", "aB3-_".repeat(8) + "xyz");
        for room in [
            "#general:example.com",
            "#a:localhost:8448",
            "!abc:example.com",
            &v12,
        ] {
            assert_eq!(
                Room::parse(room).map(|r| r.to_string()),
                Some(room.to_string())
            );
        }
        assert!(Room::parse("#general:example.com").unwrap().is_alias());
        assert!(!Room::parse(&v12).unwrap().is_alias());
        let too_long = format!("#{}:example.com", "a".repeat(250));
        for bad in [
            "general",
            "#general",
            "#:example.com",
            "#general:",
            "!abc",
            "!abc:",
            "@alice:example.com",
            "# general:example.com",
            "",
            "!",
            &v12[..40],
            &too_long,
        ] {
            assert_eq!(Room::parse(bad), None, "{bad}");
        }
    }

    fn user_id(input: &str, server: &str) -> Result<String, UsernameError> {
        Ok(Username::parse(input)?.on_server(server)?.to_string())
    }

    #[test]
    fn accepts_a_localpart_and_a_full_id() {
        assert_eq!(
            user_id("alice", "example.com").unwrap(),
            "@alice:example.com"
        );
        assert_eq!(
            user_id("@alice:example.com", "example.com").unwrap(),
            "@alice:example.com"
        );
        assert_eq!(
            user_id("a.b_c=d-e/f+g1", "localhost:8448").unwrap(),
            "@a.b_c=d-e/f+g1:localhost:8448"
        );
    }

    #[test]
    fn refuses_names_outside_the_grammar() {
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(Username::parse("@:example.com"), Err(UsernameError::Empty));
        assert_eq!(
            Username::parse("Alice"),
            Err(UsernameError::UpperCase {
                lowered: "alice".into()
            })
        );
        assert_eq!(
            Username::parse("al ice"),
            Err(UsernameError::InvalidCharacter { character: ' ' })
        );
        assert_eq!(
            Username::parse("ålice"),
            Err(UsernameError::InvalidCharacter { character: 'å' })
        );
        assert_eq!(
            Username::parse("_bridge"),
            Err(UsernameError::LeadingUnderscore)
        );
        assert_eq!(Username::parse("12345"), Err(UsernameError::AllDigits));
        assert_eq!(
            Username::parse("alice:example.com"),
            Err(UsernameError::Malformed)
        );
        assert_eq!(Username::parse("@alice"), Err(UsernameError::Malformed));
    }

    #[test]
    fn refuses_a_full_id_of_another_server() {
        assert_eq!(
            user_id("@alice:other.org", "example.com"),
            Err(UsernameError::ForeignServer {
                found: "other.org".into(),
                expected: "example.com".into()
            })
        );
    }

    #[test]
    fn refuses_ids_over_255_characters() {
        let long = "a".repeat(250);
        assert_eq!(
            user_id(&long, "example.com"),
            Err(UsernameError::TooLong { length: 263 })
        );
    }
}
