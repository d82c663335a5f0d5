//! What happens to the accounts `users` does not declare: `undeclared`,
//! `undeclared_ignore` and `undeclared_max`.

use serde_json::Value;

use super::fields::{echo, Fields};
use crate::model::{ArgsError, ArgsErrorKind, Undeclared, UndeclaredPolicy};

/// The limit is a safety net, not a quota: 0 forbids touching anyone.
const UNDECLARED_MAX_LIMIT: u64 = 1_000_000;

/// `undeclared`, its ignore patterns and its limit. Only the list form
/// (`users`) declares the whole server; each pattern must match a whole
/// localpart (anchored here, so `bot` spares `bot` and not `robot`).
pub(super) fn read_undeclared(top: &Fields) -> Result<UndeclaredPolicy, ArgsError> {
    let action = top.choice("undeclared")?;
    let action = Undeclared::ALL
        .into_iter()
        .find(|undeclared| undeclared.name() == action)
        .unwrap_or_default();
    if action != Undeclared::Keep && !matches!(top.value("users"), Some(Value::Array(_))) {
        return Err(ArgsError::new(ArgsErrorKind::Missing(format!(
            "undeclared: {} needs the list form (users), which declares every user the server should have",
            action.name()
        ))));
    }
    let ignore = match top.list("undeclared_ignore", "a list of regular expressions")? {
        None => Vec::new(),
        Some(patterns) => patterns
            .iter()
            .enumerate()
            .map(|(index, pattern)| anchored_pattern(pattern, index))
            .collect::<Result<_, _>>()?,
    };
    let max = top.integer_or_default("undeclared_max", 0, UNDECLARED_MAX_LIMIT)? as usize;
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
        return Err(ArgsError::wrong_type(
            field,
            "a regular expression (a string)",
        ));
    };
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|error| {
        ArgsError::at(
            field,
            ArgsErrorKind::NotAccepted {
                value: echo(pattern),
                accepted: format!(
                    "a regular expression (Rust regex syntax); {}",
                    error.to_string().lines().last().unwrap_or_default()
                ),
            },
        )
    })
}
