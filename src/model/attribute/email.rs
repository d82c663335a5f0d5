//! `email`: one address the account must have, its others kept.

use super::{compared_by, Attribute};
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct Email;

impl Attribute for Email {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let declared = desired.email.as_ref();
        compared_by(declared, &account.emails, Fact::Emails, |email, emails| {
            Ok((!emails.contains(email)).then(|| Change::AddEmail(email.clone())))
        })
    }

    /// A new account has it, unless `emails` declares the list.
    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        if let (None, Some(email)) = (&desired.emails, &desired.email) {
            account.emails = Seen::Known(vec![email.clone()]);
        }
    }

    fn apply(&self, _: &DesiredUser, change: &Change, account: &mut Account) {
        if let (Change::AddEmail(email), Seen::Known(emails)) = (change, &mut account.emails) {
            emails.push(email.clone());
        }
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        matches!(change, Change::AddEmail(_)).then_some("email added")
    }
}
