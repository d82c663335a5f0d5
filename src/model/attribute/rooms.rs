//! `rooms`: rooms the user must have joined (joins only; none is left).

use super::{compared_by, forget, Attribute};
use crate::matrix_id::Room;
use crate::model::{Account, Change, DesiredUser, Fact, Seen};

pub struct Rooms;

impl Attribute for Rooms {
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let declared = (!desired.rooms.is_empty()).then_some(&desired.rooms);
        compared_by(declared, &account.rooms, Fact::Rooms, |declared, joined| {
            let missing: Vec<Room> = declared
                .iter()
                .filter(|room| !joined.contains(room))
                .cloned()
                .collect();
            Ok((!missing.is_empty()).then_some(Change::JoinRooms(missing)))
        })
    }

    /// A new account has joined no room.
    fn after_creation(&self, desired: &DesiredUser) -> Vec<Change> {
        let rooms = &desired.rooms;
        (!rooms.is_empty())
            .then(|| Change::JoinRooms(rooms.clone()))
            .into_iter()
            .collect()
    }

    fn created(&self, desired: &DesiredUser, _: Option<&str>, account: &mut Account) {
        account.rooms = joined_as_declared(desired);
    }

    fn apply(&self, desired: &DesiredUser, _: &Change, account: &mut Account) {
        account.rooms = joined_as_declared(desired);
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        matches!(change, Change::JoinRooms(_)).then_some("rooms joined")
    }

    fn lacks(&self, desired: &DesiredUser, account: &Account) -> bool {
        !desired.rooms.is_empty() && account.rooms.is_unknown()
    }

    fn forget_unseen(&self, before: &Account, now: &mut Account) {
        forget(&before.rooms, &mut now.rooms);
    }
}

/// Once joined, the account is in every declared room; with none declared,
/// membership is not managed and the diff leaves it out.
fn joined_as_declared(desired: &DesiredUser) -> Seen<Vec<Room>> {
    match desired.rooms.is_empty() {
        true => Seen::Unknown,
        false => Seen::Known(desired.rooms.clone()),
    }
}
