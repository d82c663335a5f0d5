//! Each user attribute the module manages is one unit here: how it is
//! compared with what a read observed, which changes follow the creation of
//! an account, how a change is predicted (check mode), whether a read may
//! leave it unseen, and how its changes are described. The plan, the
//! prediction, the report and the reconciler iterate over [`ATTRIBUTES`];
//! what is not one attribute (creation, the password, deactivation) stays
//! with the plan. Reading an attribute from the arguments is the args
//! stage's job (`args/user.rs`), its parameter's name and type are in the
//! args stage's table, and which servers manage it is each backend's rule.

use super::{Account, Change, DesiredUser, Fact, Seen};

mod admin;
mod avatar;
mod displayname;
mod email;
mod exact_list;
mod ratelimit;
mod restriction;
mod rooms;
mod upstream_links;
mod user_type;

use super::Restriction;

/// One managed attribute of a user.
pub trait Attribute: Sync {
    /// The changes that make `account` match `desired` for this attribute
    /// (none when it is not declared); `Err` names the fact a read did not
    /// show that the comparison needs.
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact>;

    /// The changes that follow the creation of an account, which has none
    /// of this attribute yet, for it to be as declared.
    fn after_creation(&self, _desired: &DesiredUser) -> Vec<Change> {
        Vec::new()
    }

    /// Sets this attribute of `account`, just created for `desired`, as it
    /// will be (`default_displayname`: the server's name for a new user
    /// that declares none).
    fn created(
        &self,
        desired: &DesiredUser,
        default_displayname: Option<&str>,
        account: &mut Account,
    );

    /// Applies `change` to the predicted `account` when it is one of this
    /// attribute's (one it describes); `false` when it is not.
    fn predict(&self, desired: &DesiredUser, change: &Change, account: &mut Account) -> bool {
        let own = self.describe(change).is_some();
        if own {
            self.apply(desired, change, account);
        }
        own
    }

    /// Applies `change`, one of this attribute's, to the predicted `account`.
    fn apply(&self, desired: &DesiredUser, change: &Change, account: &mut Account);

    /// The word the report gives `change` when it is one of this attribute's.
    fn describe(&self, change: &Change) -> Option<&'static str>;

    /// Whether `desired` manages it and `account`, from a read of many users
    /// at once, lacks it (Synapse's list shows no `suspended`, no rate-limit
    /// override...), so that the user must be read alone. An attribute every
    /// read shows answers `false`.
    fn lacks(&self, _desired: &DesiredUser, _account: &Account) -> bool {
        false
    }

    /// Forgets it in `now` when `before` did not show it, so that a read that
    /// shows more than an earlier one finds no difference in it.
    fn forget_unseen(&self, _before: &Account, _now: &mut Account) {}
}

/// Every managed attribute, in the order their changes are made.
pub static ATTRIBUTES: &[&dyn Attribute] = &[
    &admin::Admin,
    &user_type::UserTypeAttribute,
    &displayname::Displayname,
    &email::Email,
    &restriction::Restricted(Restriction::Locked),
    &restriction::Restricted(Restriction::Suspended),
    &restriction::Restricted(Restriction::ShadowBanned),
    &ratelimit::RatelimitAttribute,
    &upstream_links::UpstreamLinks,
    &exact_list::Emails,
    &exact_list::ExternalIds,
    &avatar::AvatarAttribute,
    &rooms::Rooms,
];

/// The change `seen` calls for when `wanted` is declared: none when it is
/// already so, `change(wanted)` when it differs; `Err(fact)` unseen.
fn compared<T: PartialEq + Clone>(
    wanted: Option<&T>,
    seen: &Seen<T>,
    fact: Fact,
    change: impl FnOnce(T) -> Change,
) -> Result<Vec<Change>, Fact> {
    compared_by(wanted, seen, fact, |wanted, current| {
        Ok((current != wanted).then(|| change(wanted.clone())))
    })
}

/// The change `seen` calls for when `wanted` is declared, as `change_for`
/// finds it (`None`: already so): none when it is not declared; `Err(fact)`
/// when the read did not show it.
fn compared_by<W, S>(
    wanted: Option<&W>,
    seen: &Seen<S>,
    fact: Fact,
    change_for: impl FnOnce(&W, &S) -> Result<Option<Change>, Fact>,
) -> Result<Vec<Change>, Fact> {
    let Some(wanted) = wanted else {
        return Ok(Vec::new());
    };
    let Seen::Known(current) = seen else {
        return Err(fact);
    };
    Ok(change_for(wanted, current)?.into_iter().collect())
}

/// Forgets `field` of `now` when `before`'s is unknown.
fn forget<T>(before: &Seen<T>, now: &mut Seen<T>) {
    if before.is_unknown() {
        *now = Seen::Unknown;
    }
}

/// The same items, whatever their order (addresses: each in the server's form).
pub fn same_set<T: Ord>(current: &[T], wanted: &[T]) -> bool {
    use std::collections::BTreeSet;
    current.iter().collect::<BTreeSet<_>>() == wanted.iter().collect::<BTreeSet<_>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Avatar, Ratelimit, UpstreamLink, UserType};

    /// Every change an attribute makes is described by exactly one unit.
    #[test]
    fn each_attribute_change_is_described_by_one_unit() {
        let link = UpstreamLink {
            provider: "github".into(),
            subject: "1".into(),
        };
        let changes = [
            Change::SetAdmin(true),
            Change::SetAdmin(false),
            Change::SetUserType(UserType::Bot),
            Change::SetDisplayname,
            Change::AddEmail("a@example.com".into()),
            Change::Restrict(Restriction::Locked, true),
            Change::Restrict(Restriction::Suspended, false),
            Change::Restrict(Restriction::ShadowBanned, true),
            Change::SetRatelimit(Some(Ratelimit::UNLIMITED)),
            Change::SetRatelimit(None),
            Change::AddUpstreamLink(link.clone()),
            Change::RemoveUpstreamLink(link),
            Change::SetEmails,
            Change::SetExternalIds,
            Change::SetAvatar(Avatar::Uri("mxc://x/y".into())),
            Change::JoinRooms(Vec::new()),
        ];
        for change in changes {
            let units: Vec<&str> = ATTRIBUTES
                .iter()
                .filter_map(|a| a.describe(&change))
                .collect();
            assert_eq!(units.len(), 1, "{change:?}: {units:?}");
        }
    }
}
