//! `email`: one address the account must have, its others kept.

use super::Attribute;
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct Email;

impl Attribute for Email {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let Some(email) = &desired.email else {
            return Ok(Vec::new());
        };
        let Seen::Known(emails) = &account.emails else {
            return Err(Fact::Emails);
        };
        Ok(match emails.contains(email) {
            true => Vec::new(),
            false => vec![Change::AddEmail(email.clone())],
        })
    }

    /// A new account has it, unless `emails` declares the list.
    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        if let (None, Some(email)) = (&desired.emails, &desired.email) {
            account.emails = Seen::Known(vec![email.clone()]);
        }
    }

    fn predict(&self, _: &DesiredUser, change: &Change, account: &mut Account) -> bool {
        let Change::AddEmail(email) = change else {
            return false;
        };
        if let Seen::Known(emails) = &mut account.emails {
            emails.push(email.clone());
        }
        true
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        matches!(change, Change::AddEmail(_)).then_some("email added")
    }
}
