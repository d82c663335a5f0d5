//! `displayname`: the user's display name.

use super::Attribute;
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct Displayname;

impl Attribute for Displayname {
    /// One the read could not see is left alone: a server that cannot show
    /// it sets it at creation only (see the backend).
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        Ok(match (&desired.displayname, &account.displayname) {
            (Some(wanted), Seen::Known(current)) if current.as_ref() != Some(wanted) => {
                vec![Change::SetDisplayname]
            }
            _ => Vec::new(),
        })
    }

    fn created(&self, desired: &DesiredUser, default: Option<&str>, account: &mut Account) {
        let name = desired.displayname.clone();
        account.displayname = Seen::Known(name.or_else(|| default.map(str::to_string)));
    }

    fn apply(&self, desired: &DesiredUser, _: &Change, account: &mut Account) {
        account.displayname = Seen::Known(desired.displayname.clone());
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        matches!(change, Change::SetDisplayname).then_some("displayname changed")
    }
}
