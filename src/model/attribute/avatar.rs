//! `avatar`: the user's avatar, an mxc:// URI or an image file's content.

use super::{compared_by, forget, Attribute};
use crate::model::{Account, Avatar, Change, DesiredUser, Fact, Seen, SeenAvatar};

pub struct AvatarAttribute;

impl Attribute for AvatarAttribute {
    /// A change when the account's avatar is another URI, or (for a file)
    /// other content.
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let declared = desired.avatar.as_ref();
        compared_by(declared, &account.avatar, Fact::Avatar, |avatar, seen| {
            let differs = match avatar {
                Avatar::Uri(uri) => seen.uri.as_deref() != Some(uri.as_str()),
                Avatar::File(_) => !seen.is_declared_file.ok_or(Fact::Avatar)?,
            };
            Ok(differs.then(|| Change::SetAvatar(avatar.clone())))
        })
    }

    /// A new account has no avatar.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        desired
            .avatar
            .clone()
            .map(Change::SetAvatar)
            .into_iter()
            .collect()
    }

    /// None yet: a declared one follows creation.
    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        account.avatar = match desired.avatar {
            Some(_) => Seen::Known(SeenAvatar {
                uri: None,
                is_declared_file: None,
            }),
            None => Seen::Unknown,
        };
    }

    fn apply(&self, _: &DesiredUser, change: &Change, account: &mut Account) {
        if let Change::SetAvatar(avatar) = change {
            account.avatar = Seen::Known(SeenAvatar {
                uri: Some(avatar.declared().to_string()),
                is_declared_file: matches!(avatar, Avatar::File(_)).then_some(true),
            });
        }
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        match change {
            Change::SetAvatar(Avatar::Uri(_)) => Some("avatar set"),
            Change::SetAvatar(Avatar::File(_)) => Some("avatar uploaded"),
            _ => None,
        }
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        desired.avatar.is_some() && account.avatar.is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        forget(&before.avatar, &mut now.avatar);
    }
}
