//! `locked`, `suspended`, `shadow_banned`: each [`Restriction`] an admin
//! can apply to an account and lift.

use super::{compared, forget, Attribute};
use crate::model::{Account, Change, DesiredUser, Fact, Restriction, Seen};

pub struct Restricted(pub Restriction);

impl Attribute for Restricted {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let Restricted(restriction) = *self;
        compared(
            desired.restrictions.get(restriction).as_ref(),
            &account.restrictions.get(restriction),
            Fact::Restriction(restriction),
            |wanted| Change::Restrict(restriction, wanted),
        )
    }

    /// A new account has no restriction.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        let Restricted(restriction) = *self;
        match desired.restrictions.get(restriction) {
            Some(true) => vec![Change::Restrict(restriction, true)],
            _ => Vec::new(),
        }
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        let Restricted(restriction) = *self;
        let declared = desired.restrictions.get(restriction);
        let seen = declared.map_or(Seen::Unknown, Seen::Known);
        account.restrictions.set(restriction, seen);
    }

    fn apply(&self, _: &DesiredUser, change: &Change, account: &mut Account) {
        if let Change::Restrict(restriction, value) = *change {
            account.restrictions.set(restriction, Seen::Known(value));
        }
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        let Change::Restrict(restriction, applied) = *change else {
            return None;
        };
        (restriction == self.0).then_some(match (restriction, applied) {
            (Restriction::Locked, true) => "locked",
            (Restriction::Locked, false) => "unlocked",
            (Restriction::Suspended, true) => "suspended",
            (Restriction::Suspended, false) => "unsuspended",
            (Restriction::ShadowBanned, true) => "shadow-banned",
            (Restriction::ShadowBanned, false) => "shadow-ban lifted",
        })
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        let Restricted(restriction) = *self;
        desired.restrictions.get(restriction).is_some()
            && account.restrictions.get(restriction).is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        let Restricted(restriction) = *self;
        let mut seen = now.restrictions.get(restriction);
        forget(&before.restrictions.get(restriction), &mut seen);
        now.restrictions.set(restriction, seen);
    }
}
