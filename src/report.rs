//! Stage 5: the one JSON object Ansible reads back, with `changed`, `failed`,
//! `msg`, one entry per user and, in diff mode, a before/after per user.
//! Secrets are masked in every string, success or failure, as a last line of defence.

use std::any::Any;
use std::io::Write;
use std::panic::Location;

use serde_json::{json, Value};

use crate::model::{Account, Change, UserState, Waited};
use crate::secret::{mask_secrets, MASK};

/// What happened to one declared user.
#[derive(Debug)]
pub struct UserOutcome {
    /// The full user ID.
    pub user: String,
    pub state: UserState,
    pub changes: Vec<Change>,
    /// Boxed: only the diff shows them, and a run keeps every outcome.
    pub before: Option<Box<Account>>,
    pub after: Option<Box<Account>>,
    pub error: Option<String>,
    /// The changes of a failed user that landed before its failure, when known.
    pub landed: Vec<Change>,
    /// A failed user was changed in part (or may have been) before the failure.
    pub partly_applied: bool,
}

impl UserOutcome {
    fn changed(&self) -> bool {
        match self.error {
            None => !self.changes.is_empty(),
            Some(_) => self.partly_applied,
        }
    }

    /// What was done: for a failed user, only what is known to have landed.
    fn actions(&self) -> Vec<&'static str> {
        let done = match self.error {
            None => &self.changes,
            Some(_) => &self.landed,
        };
        done.iter().map(|c| c.describe()).collect()
    }

    fn summary(&self, check_mode: bool) -> String {
        if let Some(error) = &self.error {
            return match self.partly_applied {
                true => format!("failed after changing part of it (run again to finish): {error}"),
                false => format!("failed: {error}"),
            };
        }
        if self.changes.is_empty() {
            return match self.state {
                UserState::Present => "already as declared".into(),
                UserState::Absent => "already absent".into(),
            };
        }
        let actions: Vec<&str> = self.changes.iter().map(|c| c.describe()).collect();
        let prefix = if check_mode { "would be " } else { "" };
        format!("{prefix}{}", actions.join(", "))
    }
}

/// The whole result of one module run.
pub struct Report {
    pub outcomes: Vec<UserOutcome>,
    /// A failure that stopped the run before any user was handled.
    pub fatal: Option<String>,
    pub check_mode: bool,
    pub diff: bool,
    /// With `undeclared: lock | deactivate`: the undeclared users this run
    /// touched (or, in check mode, would touch), whose outcomes follow the
    /// declared users'.
    pub undeclared: Option<Vec<String>>,
    /// How long the run waited for the server's rate limits, and why.
    pub waited: Option<Waited>,
    /// What Ansible shows as warnings, whatever the outcome.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn fatal(message: String) -> Report {
        Report {
            outcomes: Vec::new(),
            fatal: Some(message),
            check_mode: false,
            diff: false,
            undeclared: None,
            waited: None,
            warnings: Vec::new(),
        }
    }

    pub fn failed(&self) -> bool {
        self.fatal.is_some() || self.outcomes.iter().any(|o| o.error.is_some())
    }

    /// The module's JSON output, printed, with every secret the run held
    /// masked. Each user's entry is masked and printed as it is made, so
    /// that the output of 100,000 users is held once, as text, and not
    /// also as a tree of values.
    pub fn printed(&self) -> String {
        let mut top = json!({
            "changed": self.outcomes.iter().any(UserOutcome::changed),
            "failed": self.failed(),
            "msg": self.message(),
        });
        if let Some(undeclared) = &self.undeclared {
            top["undeclared"] = json!(undeclared);
        }
        if let Some(waited) = &self.waited {
            top["waited"] = json!({"seconds": waited.seconds, "reason": waited.reason});
        }
        if !self.warnings.is_empty() {
            top["warnings"] = json!(self.warnings);
        }
        let mut printed = printed_masked(top);
        printed.pop(); // the closing brace: the lists follow
        let users = self.outcomes.iter().map(|o| {
            json!({
                "user_id": o.user,
                "changed": o.changed(),
                "failed": o.error.is_some(),
                "actions": o.actions(),
                "msg": o.summary(self.check_mode),
            })
        });
        push_list(&mut printed, "users", users);
        if self.diff && self.fatal.is_none() {
            let diff = self.outcomes.iter().filter(|o| o.error.is_none()).map(|o| {
                json!({
                    "before_header": o.user,
                    "after_header": o.user,
                    "before": account_json(o.before.as_deref()),
                    "after": account_json(o.after.as_deref()),
                })
            });
            push_list(&mut printed, "diff", diff);
        }
        printed.push('}');
        printed
    }

    /// [`Report::printed`], read back (for the tests).
    #[cfg(test)]
    pub fn to_json(&self) -> Value {
        serde_json::from_str(&self.printed()).expect("the output is one JSON object")
    }

    fn message(&self) -> String {
        if let Some(fatal) = &self.fatal {
            return fatal.clone();
        }
        let failures: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.user)))
            .collect();
        if !failures.is_empty() {
            return format!(
                "{} of {} users failed: {}",
                failures.len(),
                self.outcomes.len(),
                failures.join("; ")
            );
        }
        match self.outcomes.as_slice() {
            [] => "no users declared".into(),
            [only] => format!("{}: {}", only.user, only.summary(self.check_mode)),
            all => {
                let changed = all.iter().filter(|o| o.changed()).count();
                let verb = if self.check_mode {
                    "would change"
                } else {
                    "changed"
                };
                let undeclared = match self.undeclared.as_deref().unwrap_or_default() {
                    [] => String::new(),
                    touched => format!(" ({} of them undeclared)", touched.len()),
                };
                format!(
                    "{} users: {changed} {verb}{undeclared}, {} already as declared",
                    all.len(),
                    all.len() - changed
                )
            }
        }
    }
}

/// Makes a panic (a bug) still print one JSON object, `failed: true`, masked
/// like any other output, and exit with 1. The release build aborts on a
/// panic (`panic = "abort"`) and would otherwise print nothing Ansible can read.
pub fn print_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let output = panic_output(info.payload(), info.location());
        // Nothing more can be done if stdout is gone.
        let _ = writeln!(std::io::stdout(), "{output}");
        std::process::exit(1);
    }));
}

/// What [`print_on_panic`] prints for a panic with `payload` at `location`.
fn panic_output(payload: &(dyn Any + Send), location: Option<&Location>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    let place = location.map(|l| format!(" at {l}")).unwrap_or_default();
    Report::fatal(format!(
        "internal error in matrix_user{place}: {message}; this is a bug, please report it. \
         Changes made before it may have landed: run the task again in check mode to see"
    ))
    .printed()
}

fn account_json(account: Option<&Account>) -> Value {
    match account {
        None => json!({"exists": false}),
        Some(account) => {
            let mut value = serde_json::to_value(account).expect("an account serializes");
            value["exists"] = json!(true);
            value
        }
    }
}

/// `value` masked (last, on everything: success messages and diffs quote
/// values too) and printed: the one masking of every module's output.
pub(crate) fn printed_masked(mut value: Value) -> String {
    scrub(&mut value);
    value.to_string()
}

/// Appends `,"name":[...]` to `printed`, each item masked and printed in turn.
fn push_list(printed: &mut String, name: &str, items: impl Iterator<Item = Value>) {
    printed.push_str(&format!(",{}:[", Value::from(name)));
    for (index, item) in items.enumerate() {
        if index > 0 {
            printed.push(',');
        }
        printed.push_str(&printed_masked(item));
    }
    printed.push(']');
}

/// Masks every string as it will be printed (JSON-escaped), since printing
/// can turn a harmless `a"b` into a secret `a\"b`.
fn scrub(value: &mut Value) {
    match value {
        Value::String(text) => *text = masked_as_printed(text),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

fn masked_as_printed(text: &str) -> String {
    let printed = Value::String(text.to_string()).to_string();
    let masked = mask_secrets(&printed);
    if masked == printed {
        return text.to_string();
    }
    // A mask that cut an escape sequence in half leaves no valid JSON
    // string: then nothing of this string is shown.
    match serde_json::from_str::<Value>(&masked) {
        Ok(Value::String(unescaped)) => unescaped,
        _ => MASK.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Seen;
    use crate::secret::Secret;

    fn outcome(changes: Vec<Change>, error: Option<&str>) -> UserOutcome {
        UserOutcome {
            user: "@alice:x".into(),
            state: UserState::Present,
            changes,
            before: None,
            after: Some(Box::new(Account {
                admin: Seen::Known(true),
                deactivated: Seen::Known(false),
                displayname: Seen::Known(None),
                ..Account::unseen()
            })),
            error: error.map(str::to_string),
            landed: vec![],
            partly_applied: false,
        }
    }

    fn report(outcomes: Vec<UserOutcome>) -> Report {
        Report {
            outcomes,
            fatal: None,
            check_mode: false,
            diff: true,
            undeclared: None,
            waited: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn one_user_reports_what_happened_to_it() {
        let json = report(vec![outcome(
            vec![
                Change::Create {
                    password: Secret::new("pw"),
                },
                Change::SetAdmin(true),
            ],
            None,
        )])
        .to_json();
        assert_eq!(json["changed"], true);
        assert_eq!(json["failed"], false);
        assert_eq!(json["msg"], "@alice:x: created, promoted");
        assert_eq!(json["diff"][0]["before"], json!({"exists": false}));
        assert_eq!(json["diff"][0]["after"]["admin"], true);
    }

    #[test]
    fn failures_name_each_failed_user_and_are_scrubbed() {
        let _secret = Secret::new("hunter22");
        let json = report(vec![
            outcome(vec![], Some("server said hunter22 is weak")),
            outcome(vec![], None),
        ])
        .to_json();
        assert_eq!(json["failed"], true);
        assert_eq!(json["changed"], false);
        assert_eq!(
            json["msg"],
            "1 of 2 users failed: @alice:x: server said ******** is weak"
        );
        assert!(!json.to_string().contains("hunter22"));
    }

    #[test]
    fn success_is_masked_too_in_its_printed_form() {
        let _secret = Secret::new("display-secret");
        // Printed, `say "hi"` becomes `say \"hi\"`: that spelling is a secret too.
        let _escaped = Secret::new(r#"say \"hi\""#);
        let mut success = outcome(
            vec![Change::Create {
                password: Secret::new("pw"),
            }],
            None,
        );
        success.user = "@display-secret:x".into();
        success.after.as_mut().unwrap().displayname = Seen::Known(Some(r#"I say "hi""#.into()));
        let printed = report(vec![success]).to_json().to_string();
        assert!(!printed.contains("display-secret"), "{printed}");
        assert!(!printed.contains(r#"say \"hi\""#), "{printed}");
        serde_json::from_str::<Value>(&printed).expect("still one JSON object");
    }

    #[test]
    fn a_panic_prints_one_failed_object_with_secrets_masked() {
        let _secret = Secret::new("panicky-secret");
        let message = String::from("index out of range near panicky-secret");
        let output: Value =
            serde_json::from_str(&panic_output(&message, Some(Location::caller()))).unwrap();
        assert_eq!(output["failed"], true);
        assert_eq!(output["changed"], false);
        let msg = output["msg"].as_str().unwrap();
        assert!(
            msg.starts_with("internal error in matrix_user at src/report.rs:"),
            "{msg}"
        );
        assert!(
            msg.contains("index out of range near ********; this is a bug"),
            "{msg}"
        );
        let output: Value = serde_json::from_str(&panic_output(&"a static message", None)).unwrap();
        assert!(output["msg"]
            .as_str()
            .unwrap()
            .starts_with("internal error in matrix_user: a static message;"));
    }
}
