//! `ratelimit`: the account's override of the server's message rate limit.

use super::{compared, forget, Attribute};
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct RatelimitAttribute;

impl Attribute for RatelimitAttribute {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let declared = desired.ratelimit.as_ref();
        compared(
            declared,
            &account.ratelimit,
            Fact::Ratelimit,
            Change::SetRatelimit,
        )
    }

    /// A new account has no override.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        let ratelimit = desired.ratelimit.flatten();
        ratelimit
            .map(|r| Change::SetRatelimit(Some(r)))
            .into_iter()
            .collect()
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        account.ratelimit = desired.ratelimit.map_or(Seen::Unknown, Seen::Known);
    }

    fn apply(&self, _: &DesiredUser, change: &Change, account: &mut Account) {
        if let Change::SetRatelimit(ratelimit) = change {
            account.ratelimit = Seen::Known(*ratelimit);
        }
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        match change {
            Change::SetRatelimit(Some(_)) => Some("ratelimit set"),
            Change::SetRatelimit(None) => Some("ratelimit removed"),
            _ => None,
        }
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        desired.ratelimit.is_some() && account.ratelimit.is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        forget(&before.ratelimit, &mut now.ratelimit);
    }
}
