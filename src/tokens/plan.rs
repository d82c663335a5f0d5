//! Stage 3 for tokens: what to send, a pure function of the declared and
//! the observed tokens, the `undeclared` policy and the time.

use thiserror::Error;

use crate::model::tokens::{
    DesiredToken, ObservedToken, TokenSettings, TokenState, UndeclaredTokens,
};
use crate::rfc3339::format_millis;
use crate::secret::Secret;

/// A request that changes the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `token: None`: the server generates it.
    Create {
        token: Option<Secret>,
        settings: TokenSettings,
    },
    /// Only the fields that differ are `Some`; `revive`: the token is
    /// revoked and declared present.
    Update {
        token: Secret,
        uses_allowed: Option<Option<u32>>,
        expires: Option<Option<i64>>,
        revive: bool,
    },
    Delete {
        token: Secret,
    },
}

impl Action {
    /// The step's action, as results name it; `removed` is what the
    /// server does to a token that should be gone (`deleted`, `revoked`).
    pub fn describe(&self, removed: &'static str) -> &'static str {
        match self {
            Action::Create { .. } => "created",
            Action::Update { revive: true, .. } => "unrevoked",
            Action::Update { .. } => "updated",
            Action::Delete { .. } => removed,
        }
    }
}

/// A token's settings and uses, as observed or predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenView {
    pub uses_allowed: Option<u64>,
    pub expires: Option<i64>,
    pub pending: u64,
    pub completed: u64,
}

/// What happens to one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// `None`: it is as declared.
    pub action: Option<Action>,
    /// `None`: the token does not exist (before) or will not (after).
    pub before: Option<TokenView>,
    pub after: Option<TokenView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// One step per declared token, in the declared order.
    pub declared: Vec<Step>,
    /// With `undeclared: delete`, one per token the task does not declare.
    pub undeclared: Vec<Step>,
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = &Step> {
        self.declared
            .iter()
            .chain(&self.undeclared)
            .filter(|step| step.action.is_some())
    }
}

/// Why nothing can be sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// An expiry that would be sent has passed: every server refuses it, and
    /// the token would be useless anyway.
    #[error("{field}: {expires} is in the past (it is now {now}); give a later time, or never")]
    PastExpiry {
        field: String,
        expires: String,
        now: String,
    },
    /// Two declarations are the same token (a `token_file` may hold a token
    /// declared elsewhere).
    #[error("{name}: the same token as {first}; declare each token once")]
    Duplicate { name: String, first: String },
    /// `undeclared: delete` would delete more than allowed.
    #[error("undeclared: delete would delete {count} tokens the task does not declare, more than undeclared_max ({max}); nothing was changed. Raise undeclared_max to {count} if that is what you want, or declare the tokens to keep")]
    TooManyUndeclared { count: usize, max: usize },
}

/// The steps that make the server's tokens `observed` match `desired`, at
/// `now` (milliseconds since 1970).
pub fn plan(
    desired: &[DesiredToken],
    observed: &[ObservedToken],
    undeclared: UndeclaredTokens,
    now: i64,
) -> Result<Plan, PlanError> {
    refuse_duplicates(desired)?;
    let find = |token: &Secret| observed.iter().find(|o| o.token == *token);
    let mut plan = Plan::default();
    for token in desired {
        let found = token.known().and_then(find);
        let before = found.filter(|f| !f.revoked).map(view);
        let (action, after) = match (token.state, found) {
            (TokenState::Absent, None) => (None, None),
            (TokenState::Absent, Some(found)) if found.revoked => (None, None),
            (TokenState::Absent, Some(found)) => (
                Some(Action::Delete {
                    token: found.token.clone(),
                }),
                None,
            ),
            (TokenState::Present, None) => {
                refuse_past(token, token.settings.expires, now)?;
                let after = TokenView {
                    uses_allowed: token.settings.uses_allowed.map(u64::from),
                    expires: token.settings.expires,
                    pending: 0,
                    completed: 0,
                };
                let create = Action::Create {
                    token: token.known().cloned(),
                    settings: token.settings,
                };
                (Some(create), Some(after))
            }
            (TokenState::Present, Some(found)) => {
                let revive = found.revoked;
                let wanted = token.settings;
                let uses_allowed = (found.uses_allowed != wanted.uses_allowed.map(u64::from))
                    .then_some(wanted.uses_allowed);
                let expires = (found.expires != wanted.expires).then_some(wanted.expires);
                if let Some(expires) = expires {
                    refuse_past(token, expires, now)?;
                }
                let after = TokenView {
                    uses_allowed: wanted.uses_allowed.map(u64::from),
                    expires: wanted.expires,
                    ..view(found)
                };
                let update = (uses_allowed.is_some() || expires.is_some() || revive).then(|| {
                    Action::Update {
                        token: found.token.clone(),
                        uses_allowed,
                        expires,
                        revive,
                    }
                });
                (update, Some(after))
            }
        };
        plan.declared.push(Step {
            name: token.name.clone(),
            action,
            before,
            after,
        });
    }
    if undeclared.delete {
        let declared: Vec<&Secret> = desired.iter().filter_map(DesiredToken::known).collect();
        let others = observed
            .iter()
            .filter(|o| !o.revoked && !declared.contains(&&o.token));
        plan.undeclared = others
            .enumerate()
            .map(|(index, other)| Step {
                name: format!("undeclared[{index}]"),
                action: Some(Action::Delete {
                    token: other.token.clone(),
                }),
                before: Some(view(other)),
                after: None,
            })
            .collect();
        if plan.undeclared.len() > undeclared.max {
            return Err(PlanError::TooManyUndeclared {
                count: plan.undeclared.len(),
                max: undeclared.max,
            });
        }
    }
    Ok(plan)
}

fn view(token: &ObservedToken) -> TokenView {
    TokenView {
        uses_allowed: token.uses_allowed,
        expires: token.expires,
        pending: token.pending,
        completed: token.completed,
    }
}

fn refuse_past(token: &DesiredToken, expires: Option<i64>, now: i64) -> Result<(), PlanError> {
    match expires {
        Some(expires) if expires <= now => Err(PlanError::PastExpiry {
            field: token.field_name("expires"),
            expires: format_millis(expires),
            now: format_millis(now),
        }),
        _ => Ok(()),
    }
}

fn refuse_duplicates(desired: &[DesiredToken]) -> Result<(), PlanError> {
    for (index, token) in desired.iter().enumerate() {
        let Some(value) = token.known() else { continue };
        if let Some(first) = desired[..index].iter().find(|t| t.known() == Some(value)) {
            return Err(PlanError::Duplicate {
                name: token.name.clone(),
                first: first.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokens::TokenSource;
    use std::path::PathBuf;

    const NOW: i64 = 1_800_000_000_000;
    const KEEP: UndeclaredTokens = UndeclaredTokens {
        delete: false,
        max: 0,
    };

    fn declared(
        index: usize,
        token: &str,
        uses: Option<u32>,
        expires: Option<i64>,
    ) -> DesiredToken {
        DesiredToken {
            name: format!("tokens[{index}]"),
            prefix: format!("tokens[{index}]"),
            source: TokenSource::Given(Secret::new(token)),
            settings: TokenSettings {
                uses_allowed: uses,
                expires,
            },
            state: TokenState::Present,
        }
    }

    fn on_server(
        token: &str,
        uses: Option<u64>,
        expires: Option<i64>,
        completed: u64,
    ) -> ObservedToken {
        ObservedToken {
            token: Secret::new(token),
            uses_allowed: uses,
            expires,
            pending: 1,
            completed,
            revoked: false,
        }
    }

    /// The step of the one token `declared`, planned against `server` now.
    fn step_of(declared: DesiredToken, server: &[ObservedToken]) -> Step {
        plan(&[declared], server, KEEP, NOW)
            .unwrap()
            .declared
            .remove(0)
    }

    fn update(
        token: &str,
        uses_allowed: Option<Option<u32>>,
        expires: Option<Option<i64>>,
        revive: bool,
    ) -> Option<Action> {
        Some(Action::Update {
            token: Secret::new(token),
            uses_allowed,
            expires,
            revive,
        })
    }

    #[test]
    fn a_missing_token_is_created_with_its_settings() {
        let plan = plan(
            &[declared(0, "invite-1", Some(2), Some(NOW + 1))],
            &[],
            KEEP,
            NOW,
        )
        .unwrap();
        let step = &plan.declared[0];
        assert_eq!(
            step.action,
            Some(Action::Create {
                token: Some(Secret::new("invite-1")),
                settings: TokenSettings {
                    uses_allowed: Some(2),
                    expires: Some(NOW + 1)
                }
            })
        );
        assert_eq!(
            (step.before, step.after.map(|a| a.uses_allowed)),
            (None, Some(Some(2)))
        );
    }

    #[test]
    fn a_token_as_declared_is_unchanged_and_keeps_its_uses() {
        let server = [on_server("invite-1", Some(2), None, 1)];
        let plan = plan(
            &[declared(0, "invite-1", Some(2), None)],
            &server,
            KEEP,
            NOW,
        )
        .unwrap();
        assert_eq!(plan.declared[0].action, None);
        assert_eq!(plan.declared[0].after.unwrap().completed, 1);
        assert_eq!(plan.changes().count(), 0);
    }

    #[test]
    fn a_changed_limit_updates_only_the_limit() {
        let server = [on_server("invite-1", Some(2), Some(NOW + 5), 1)];
        let step = step_of(declared(0, "invite-1", Some(3), Some(NOW + 5)), &server);
        assert_eq!(step.action, update("invite-1", Some(Some(3)), None, false));
    }

    #[test]
    fn unlimited_and_never_are_compared_too() {
        // Synapse keeps 0, which it treats as unlimited: declaring unlimited sets null.
        let server = [on_server("a-token", Some(0), Some(NOW + 5), 0)];
        let step = step_of(declared(0, "a-token", None, None), &server);
        assert_eq!(
            step.action,
            update("a-token", Some(None), Some(None), false)
        );
    }

    #[test]
    fn a_past_expiry_is_refused_only_when_it_would_be_sent() {
        let past = declared(1, "invite-1", None, Some(NOW - 1000));
        let error = plan(std::slice::from_ref(&past), &[], KEEP, NOW).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tokens[1].expires: 2027-01-15T07:59:59Z is in the past (it is now 2027-01-15T08:00:00Z); give a later time, or never"
        );
        // A token that already expired as declared is left as it is.
        let server = [on_server("invite-1", None, Some(NOW - 1000), 0)];
        assert_eq!(
            plan(&[past], &server, KEEP, NOW).unwrap().declared[0].action,
            None
        );
    }

    #[test]
    fn absent_deletes_an_existing_token_and_nothing_else() {
        let mut gone = declared(0, "invite-1", None, None);
        gone.state = TokenState::Absent;
        let server = [
            on_server("invite-1", Some(1), None, 1),
            on_server("other-1", None, None, 0),
        ];
        let plan = plan(&[gone.clone()], &server, KEEP, NOW).unwrap();
        assert_eq!(
            plan.declared[0].action,
            Some(Action::Delete {
                token: Secret::new("invite-1")
            })
        );
        assert_eq!(plan.changes().count(), 1);
        let again = super::plan(&[gone], &server[1..], KEEP, NOW).unwrap();
        assert_eq!(again.changes().count(), 0);
    }

    #[test]
    fn a_token_file_not_yet_written_asks_the_server_for_a_token() {
        let mut generated = declared(0, "unused", Some(1), None);
        generated.source = TokenSource::File {
            path: PathBuf::from("/tmp/invitation"),
            existing: None,
        };
        let plan = plan(
            &[generated],
            &[on_server("x-token", None, None, 0)],
            KEEP,
            NOW,
        )
        .unwrap();
        assert!(matches!(
            plan.declared[0].action,
            Some(Action::Create { token: None, .. })
        ));
    }

    #[test]
    fn undeclared_delete_removes_exactly_the_others_within_the_limit() {
        let server = [
            on_server("keep-me", None, None, 0),
            on_server("stray-1", None, None, 0),
            on_server("stray-2", Some(5), None, 3),
        ];
        let delete = |max| UndeclaredTokens { delete: true, max };
        let plan = plan(
            &[declared(0, "keep-me", None, None)],
            &server,
            delete(2),
            NOW,
        )
        .unwrap();
        let deleted: Vec<_> = plan.undeclared.iter().map(|s| s.action.clone()).collect();
        assert_eq!(
            deleted,
            [
                Some(Action::Delete {
                    token: Secret::new("stray-1")
                }),
                Some(Action::Delete {
                    token: Secret::new("stray-2")
                })
            ]
        );
        assert_eq!(plan.declared[0].action, None);
        let error = super::plan(
            &[declared(0, "keep-me", None, None)],
            &server,
            delete(1),
            NOW,
        )
        .unwrap_err();
        assert_eq!(error, PlanError::TooManyUndeclared { count: 2, max: 1 });
    }

    #[test]
    fn the_same_token_declared_twice_is_refused_by_name() {
        let error = plan(
            &[
                declared(0, "invite-1", None, None),
                declared(1, "invite-1", Some(1), None),
            ],
            &[],
            KEEP,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "tokens[1]: the same token as tokens[0]; declare each token once"
        );
    }

    #[test]
    fn a_revoked_token_is_absent_and_declared_present_is_unrevoked() {
        let mut revoked = on_server("invite-1", Some(2), None, 1);
        revoked.revoked = true;
        let server = [revoked];
        let step = step_of(declared(0, "invite-1", Some(3), None), &server);
        assert_eq!(step.action, update("invite-1", Some(Some(3)), None, true));
        assert_eq!(step.before, None);
        let mut gone = declared(0, "invite-1", Some(2), None);
        gone.state = TokenState::Absent;
        assert_eq!(
            super::plan(&[gone], &server, KEEP, NOW)
                .unwrap()
                .changes()
                .count(),
            0
        );
        let delete = UndeclaredTokens {
            delete: true,
            max: 0,
        };
        assert_eq!(
            super::plan(&[], &server, delete, NOW).unwrap().undeclared,
            []
        );
    }
}
