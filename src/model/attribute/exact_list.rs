//! `emails` and `external_ids`: a list the account must hold exactly (others
//! removed, `[]` removes all), compared whatever the order; each a
//! [`ListField`], the unit for both.

use super::{compared_by, forget, same_set, Attribute};
use crate::model::{Account, Change, DesiredUser, ExternalId, Fact, Seen};

/// A list of the declaration the account must hold exactly, and where the
/// account's is.
pub trait ListField: Sync {
    type Item: Ord + Clone;
    /// What a read must show to compare it.
    const FACT: Fact;
    /// The change that makes the account's list the declared one.
    const CHANGE: Change;
    /// The report's word for that change.
    const WORD: &'static str;

    fn declared(desired: &DesiredUser) -> Option<&Vec<Self::Item>>;
    fn seen(account: &Account) -> &Seen<Vec<Self::Item>>;
    fn seen_mut(account: &mut Account) -> &mut Seen<Vec<Self::Item>>;
}

/// Exactly the e-mail addresses the account must have.
pub struct Emails;

impl ListField for Emails {
    type Item = String;
    const FACT: Fact = Fact::Emails;
    const CHANGE: Change = Change::SetEmails;
    const WORD: &'static str = "emails changed";

    fn declared(desired: &DesiredUser) -> Option<&Vec<String>> {
        desired.emails.as_ref()
    }
    fn seen(account: &Account) -> &Seen<Vec<String>> {
        &account.emails
    }
    fn seen_mut(account: &mut Account) -> &mut Seen<Vec<String>> {
        &mut account.emails
    }
}

/// Exactly the SSO identities the account must have.
pub struct ExternalIds;

impl ListField for ExternalIds {
    type Item = ExternalId;
    const FACT: Fact = Fact::ExternalIds;
    const CHANGE: Change = Change::SetExternalIds;
    const WORD: &'static str = "external_ids changed";

    fn declared(desired: &DesiredUser) -> Option<&Vec<ExternalId>> {
        desired.external_ids.as_ref()
    }
    fn seen(account: &Account) -> &Seen<Vec<ExternalId>> {
        &account.external_ids
    }
    fn seen_mut(account: &mut Account) -> &mut Seen<Vec<ExternalId>> {
        &mut account.external_ids
    }
}

/// Each list field is an attribute: the same unit, its own field.
impl<L: ListField> Attribute for L {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let declared = L::declared(desired);
        compared_by(declared, L::seen(account), L::FACT, |wanted, current| {
            Ok((!same_set(current, wanted)).then_some(L::CHANGE))
        })
    }

    /// A new account's list is empty.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        let declared = L::declared(desired).is_some_and(|list| !list.is_empty());
        declared.then_some(L::CHANGE).into_iter().collect()
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        if let Some(list) = L::declared(desired) {
            *L::seen_mut(account) = Seen::Known(list.clone());
        }
    }

    fn apply(&self, desired: &DesiredUser, _: &Change, account: &mut Account) {
        self.created(desired, None, account);
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        (*change == L::CHANGE).then_some(L::WORD)
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        L::declared(desired).is_some() && L::seen(account).is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        forget(L::seen(before), L::seen_mut(now));
    }
}
