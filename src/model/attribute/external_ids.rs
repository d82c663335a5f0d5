//! `external_ids`: exactly the SSO identities the account must have.

use super::emails::exactly;
use super::{forget, Attribute};
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct ExternalIds;

impl Attribute for ExternalIds {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let wanted = desired.external_ids.as_deref();
        exactly(
            wanted,
            &account.external_ids,
            Fact::ExternalIds,
            Change::SetExternalIds,
        )
    }

    /// A new account has no SSO identity.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        let declared = desired.external_ids.as_ref().is_some_and(|e| !e.is_empty());
        declared
            .then_some(Change::SetExternalIds)
            .into_iter()
            .collect()
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        let declared = desired.external_ids.clone();
        account.external_ids = declared.map_or(Seen::Unknown, Seen::Known);
    }

    fn predict(&self, desired: &DesiredUser, change: &Change, account: &mut Account) -> bool {
        let Change::SetExternalIds = change else {
            return false;
        };
        if let Some(ids) = &desired.external_ids {
            account.external_ids = Seen::Known(ids.clone());
        }
        true
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        matches!(change, Change::SetExternalIds).then_some("external_ids changed")
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        desired.external_ids.is_some() && account.external_ids.is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        forget(&before.external_ids, &mut now.external_ids);
    }
}
