//! `admin`: whether the account is a server admin.

use super::{compared, Attribute};
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct Admin;

impl Attribute for Admin {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let declared = desired.admin.as_ref();
        compared(declared, &account.admin, Fact::Admin, Change::SetAdmin)
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        account.admin = Seen::Known(desired.admin.unwrap_or(false));
    }

    fn apply(&self, _: &DesiredUser, change: &Change, account: &mut Account) {
        if let Change::SetAdmin(admin) = change {
            account.admin = Seen::Known(*admin);
        }
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        match change {
            Change::SetAdmin(true) => Some("promoted"),
            Change::SetAdmin(false) => Some("demoted"),
            _ => None,
        }
    }
}
