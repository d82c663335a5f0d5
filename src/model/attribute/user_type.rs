//! `user_type`: regular, bot, support or a type of the server's own.

use super::Attribute;
use crate::model::{Account, Change, DesiredUser, Fact, UserType};

pub struct UserTypeAttribute;

impl Attribute for UserTypeAttribute {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        Ok(desired
            .user_type
            .iter()
            .filter(|&wanted| *wanted != account.user_type)
            .map(|wanted| Change::SetUserType(wanted.clone()))
            .collect())
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        account.user_type = desired.user_type.clone().unwrap_or(UserType::Regular);
    }

    fn apply(&self, _: &DesiredUser, change: &Change, account: &mut Account) {
        if let Change::SetUserType(user_type) = change {
            account.user_type = user_type.clone();
        }
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        matches!(change, Change::SetUserType(_)).then_some("user type changed")
    }
}
