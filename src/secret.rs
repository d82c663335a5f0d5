//! A string that cannot be printed by accident.

use std::fmt;

/// A password, shared secret or access token.
///
/// It has no `Display` and its `Debug` prints `Secret(redacted)`, so no
/// `{:?}`, error message or report can leak it. The value is reachable only
/// through [`Secret::expose`], at the point where it is sent to the server.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(redacted)");
        assert_eq!(format!("{:?}", Some(secret)), "Some(Secret(redacted))");
    }
}
