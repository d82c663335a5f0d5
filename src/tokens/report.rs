//! Stage 5 for tokens: the module's one JSON object, masked last. Tokens
//! are named by where they are declared, never by their value.

use serde_json::{json, Value};

use super::plan::{Plan, Step, TokenView};
use super::registration_message;
use crate::model::tokens::{Registration, TokenArgs};
use crate::report::printed_masked;
use crate::rfc3339::format_millis;

pub struct TokenReport {
    pub plan: Plan,
    /// What the server does to a token declared absent (`deleted`, `revoked`).
    pub removed: &'static str,
    /// What the server advertises for registration, or why it is not known.
    pub registration: Option<Result<Registration, String>>,
    check_mode: bool,
    diff: bool,
    warnings: Vec<String>,
}

impl TokenReport {
    pub fn new(args: &TokenArgs) -> TokenReport {
        TokenReport {
            plan: Plan::default(),
            removed: "deleted",
            registration: None,
            check_mode: args.connection.check_mode,
            diff: args.connection.diff,
            warnings: args.connection.warnings.clone(),
        }
    }

    /// The output of a run that failed before it knew anything.
    pub fn failed(message: String) -> (String, i32) {
        (
            printed_masked(json!({"changed": false, "failed": true, "msg": message})),
            1,
        )
    }

    /// The output and exit code, with `error` when the run failed: the
    /// steps that landed before it are reported, `changed` included.
    pub fn finish(self, error: Option<String>) -> (String, i32) {
        let changed = self.plan.changes().next().is_some();
        let mut messages = vec![match &error {
            Some(error) => error.clone(),
            None => self.summary(),
        }];
        let mut output = json!({
            "changed": changed,
            "failed": error.is_some(),
            "tokens": self.plan.declared.iter().map(|s| step_json(s, self.removed)).collect::<Vec<_>>(),
            "undeclared": self.plan.undeclared.iter().map(|s| step_json(s, self.removed)).collect::<Vec<_>>(),
        });
        match &self.registration {
            Some(Ok(registration)) => {
                messages.push(registration_message(*registration).to_string());
                output["registration"] = json!({
                    "enabled": !matches!(registration, Registration::Closed | Registration::TokensNotChecked { open: false }),
                    "token_required": *registration == Registration::TokenRequired,
                    "message": registration_message(*registration),
                });
            }
            Some(Err(why)) => messages.push(format!(
                "could not tell whether the homeserver lets people register with a token: {why}"
            )),
            None => {}
        }
        output["msg"] = json!(messages.join("; "));
        if self.diff && error.is_none() {
            output["diff"] = self.plan.changes().map(diff_json).collect();
        }
        if !self.warnings.is_empty() {
            output["warnings"] = json!(self.warnings);
        }
        (printed_masked(output), i32::from(error.is_some()))
    }

    fn summary(&self) -> String {
        let would = if self.check_mode { "would be " } else { "" };
        let described = |step: &Step| match &step.action {
            Some(action) => format!("{would}{}", action.describe(self.removed)),
            None => "unchanged".to_string(),
        };
        match (self.plan.declared.as_slice(), self.plan.undeclared.len()) {
            ([only], 0) => format!("{}: {}", only.name, described(only)),
            (all, undeclared) => {
                let changed = all.iter().filter(|s| s.action.is_some()).count();
                let mut summary = format!(
                    "{} tokens declared: {changed} {would}changed, {} unchanged",
                    all.len(),
                    all.len() - changed
                );
                if undeclared > 0 {
                    summary.push_str(&format!(
                        "; {undeclared} undeclared {would}{}",
                        self.removed
                    ));
                }
                summary
            }
        }
    }
}

fn step_json(step: &Step, removed: &'static str) -> Value {
    let shown = step.after.or(step.before);
    let mut value = json!({
        "name": step.name,
        "action": step.action.as_ref().map_or("unchanged", |a| a.describe(removed)),
        "exists": step.after.is_some(),
    });
    if let Some(view) = shown {
        value["uses_allowed"] = json!(view.uses_allowed);
        value["expires"] = json!(view.expires.map(format_millis));
        value["pending"] = json!(view.pending);
        value["completed"] = json!(view.completed);
    }
    value
}

fn diff_json(step: &Step) -> Value {
    let side = |view: Option<TokenView>| match view {
        None => json!({"state": "absent"}),
        Some(view) => json!({
            "state": "present",
            "uses_allowed": view.uses_allowed,
            "expires": view.expires.map(format_millis),
        }),
    };
    json!({
        "before_header": step.name,
        "after_header": step.name,
        "before": side(step.before),
        "after": side(step.after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    /// Printed as JSON, a harmless `"` or line break becomes `\"` or `\n`:
    /// a secret spelt that way must not appear in the printed output.
    #[test]
    fn a_secret_spelt_as_the_output_prints_it_is_masked() {
        let _quoted = Secret::new(r#"say \"hi\""#);
        let _line_break = Secret::new(r"two\nlines-secret");
        let message = "the homeserver answered 400: I say \"hi\" in two\nlines-secret".to_string();
        let (failed, code) = TokenReport::failed(message.clone());
        let report = TokenReport {
            plan: Plan::default(),
            removed: "deleted",
            registration: Some(Err(message.clone())),
            check_mode: false,
            diff: true,
            warnings: vec![message.clone()],
        };
        let (finished, _) = report.finish(Some(message));
        assert_eq!(code, 1);
        for printed in [failed, finished] {
            assert!(!printed.contains(r#"say \"hi\""#), "{printed}");
            assert!(!printed.contains(r"two\nlines-secret"), "{printed}");
            serde_json::from_str::<Value>(&printed).expect("still one JSON object");
        }
    }
}
