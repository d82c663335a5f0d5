//! `emails` and `external_ids`: a list the account must hold exactly (others
//! removed, `[]` removes all), compared whatever the order; one row each.

use super::{compared_by, forget, same_set, Attribute};
use crate::model::{Account, Change, DesiredUser, ExternalId, Fact, Seen};

pub struct ExactList<T: 'static> {
    declared: fn(&DesiredUser) -> Option<&Vec<T>>,
    seen: fn(&Account) -> &Seen<Vec<T>>,
    seen_mut: fn(&mut Account) -> &mut Seen<Vec<T>>,
    fact: Fact,
    /// The change that makes the account's list the declared one.
    change: Change,
    word: &'static str,
}

/// Exactly the e-mail addresses the account must have.
pub const EMAILS: ExactList<String> = ExactList {
    declared: |desired| desired.emails.as_ref(),
    seen: |account| &account.emails,
    seen_mut: |account| &mut account.emails,
    fact: Fact::Emails,
    change: Change::SetEmails,
    word: "emails changed",
};

/// Exactly the SSO identities the account must have.
pub const EXTERNAL_IDS: ExactList<ExternalId> = ExactList {
    declared: |desired| desired.external_ids.as_ref(),
    seen: |account| &account.external_ids,
    seen_mut: |account| &mut account.external_ids,
    fact: Fact::ExternalIds,
    change: Change::SetExternalIds,
    word: "external_ids changed",
};

impl<T: Ord + Clone + Sync> Attribute for ExactList<T> {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let declared = (self.declared)(desired);
        compared_by(
            declared,
            (self.seen)(account),
            self.fact,
            |wanted, current| Ok((!same_set(current, wanted)).then(|| self.change.clone())),
        )
    }

    /// A new account's list is empty.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        let declared = (self.declared)(desired).is_some_and(|list| !list.is_empty());
        declared.then(|| self.change.clone()).into_iter().collect()
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        if let Some(list) = (self.declared)(desired) {
            *(self.seen_mut)(account) = Seen::Known(list.clone());
        }
    }

    fn apply(&self, desired: &DesiredUser, _: &Change, account: &mut Account) {
        self.created(desired, None, account);
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        (*change == self.change).then_some(self.word)
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        (self.declared)(desired).is_some() && (self.seen)(account).is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        forget((self.seen)(before), (self.seen_mut)(now));
    }
}
