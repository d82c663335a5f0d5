//! `emails`: exactly the e-mail addresses the account must have.

use super::{forget, same_set, Attribute};
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct Emails;

impl Attribute for Emails {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        exactly(
            desired.emails.as_deref(),
            &account.emails,
            Fact::Emails,
            Change::SetEmails,
        )
    }

    /// A new account has no address.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        let declared = desired.emails.as_ref().is_some_and(|e| !e.is_empty());
        declared.then_some(Change::SetEmails).into_iter().collect()
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        if let Some(emails) = &desired.emails {
            account.emails = Seen::Known(emails.clone());
        }
    }

    fn predict(&self, desired: &DesiredUser, change: &Change, account: &mut Account) -> bool {
        let Change::SetEmails = change else {
            return false;
        };
        if let Some(emails) = &desired.emails {
            account.emails = Seen::Known(emails.clone());
        }
        true
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        matches!(change, Change::SetEmails).then_some("emails changed")
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        desired.emails.is_some() && account.emails.is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        forget(&before.emails, &mut now.emails);
    }
}

/// `change` when the `wanted` list is declared and `seen` holds other
/// items, whatever their order; `Err(fact)` unseen.
pub(super) fn exactly<T: Ord>(
    wanted: Option<&[T]>,
    seen: &Seen<Vec<T>>,
    fact: Fact,
    change: Change,
) -> Result<Vec<Change>, Fact> {
    let Some(wanted) = wanted else {
        return Ok(Vec::new());
    };
    match seen {
        Seen::Known(current) if same_set(current, wanted) => Ok(Vec::new()),
        Seen::Known(_) => Ok(vec![change]),
        Seen::Unknown => Err(fact),
    }
}
