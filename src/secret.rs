//! A string that cannot be printed by accident.

use std::fmt;
use std::sync::Mutex;

/// Every secret value this process has held: passwords and secrets from the
/// arguments, and tokens and passwords made or received at run time, so that
/// the report can mask any of them wherever they turn up.
/// Each is kept as written and as JSON text quotes it (as in a quoted server answer).
static EVERY_SECRET: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Values shorter than this are not masked: replacing every "ab" would make
/// messages unreadable. Masking is only a backstop: no message is built
/// from a secret in the first place.
const MIN_MASKED_LENGTH: usize = 4;
const MASK: &str = "********";

/// A password, shared secret or access token.
///
/// It has no `Display` and its `Debug` prints `Secret(redacted)`, so no
/// `{:?}`, error message or report can leak it. The value is reachable only
/// through [`Secret::expose`], at the point where it is sent to the server.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        if value.len() >= MIN_MASKED_LENGTH {
            let escaped = serde_json::to_string(&value).expect("a string serializes");
            let escaped = escaped.trim_matches('"').to_string();
            let mut every = EVERY_SECRET.lock().unwrap_or_else(|e| e.into_inner());
            if escaped != value {
                every.push(escaped);
            }
            every.push(value.clone());
        }
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// `text` with every secret this process has held replaced by a mask, also
/// where JSON text quotes one (as in a quoted server answer).
pub fn mask_secrets(text: &str) -> String {
    let every = EVERY_SECRET.lock().unwrap_or_else(|e| e.into_inner());
    let mut masked = text.to_string();
    for form in every.iter() {
        if masked.contains(form.as_str()) {
            masked = masked.replace(form.as_str(), MASK);
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_held_is_masked_even_as_json_text() {
        let _plain = Secret::new("token-4f9a2c");
        let _quoted = Secret::new("pa\"ss\\word");
        assert_eq!(
            mask_secrets(r#"got token-4f9a2c and {"password":"pa\"ss\\word"}"#),
            r#"got ******** and {"password":"********"}"#
        );
        assert_eq!(mask_secrets("nothing secret"), "nothing secret");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(redacted)");
        assert_eq!(format!("{:?}", Some(secret)), "Some(Secret(redacted))");
    }
}
