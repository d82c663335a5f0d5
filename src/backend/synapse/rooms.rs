//! The rooms a user is declared in: which it has joined, and joining it to
//! the others through the admin API (each alias looked up and each room's
//! members read once a run).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::rc::Rc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::{Synapse, SynapseError, SynapseErrorKind};
use crate::backend::ServerError;
use crate::http::path_segment;
use crate::matrix_id::{Room, UserId};
use crate::model::DesiredUser;

/// Why a room that is not public may refuse a join
/// (synapse/rest/admin/rooms.py, JoinRoomAliasServlet).
pub(super) const JOIN_NOT_PUBLIC: &str =
    " (Synapse joins a user to a room that is not public by inviting \
     it as the account matrix_user acts as, service_account or the owner of admin_token, which \
     must be in the room and allowed to invite)";

/// A room alias's room ID, or the server's reason why it has none.
pub(super) type AliasLookup = Result<String, String>;
/// A room's joined members, or the server's reason why it shows none.
pub(super) type MembersLookup = Result<HashSet<String>, String>;

/// The cell that keeps the lookup of `key` for the rest of the run,
/// shared by every user that declares it.
fn kept_for_the_run<K: Eq + Hash, V>(
    cells: &RefCell<HashMap<K, Rc<OnceCell<V>>>>,
    key: K,
) -> Rc<OnceCell<V>> {
    cells.borrow_mut().entry(key).or_default().clone()
}

pub(super) fn rooms_not_joined(desired: &DesiredUser, failures: Vec<String>) -> ServerError {
    let kind = SynapseErrorKind::RoomsNotJoined { failures };
    SynapseError::new(desired.field_name("rooms"), kind).into()
}

impl Synapse {
    /// Of the rooms `desired` declares, those `user` has joined. Each room's
    /// members are read once per run, however many users declare it, so a
    /// list of users sharing rooms costs a request per room, not per user.
    /// Aliases are looked up first; a room that names no room, or that the
    /// server does not know, fails the user, as a join to it would.
    pub(super) async fn joined_rooms(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Vec<Room>, ServerError> {
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for room in &desired.rooms {
            let id = match room.is_alias() {
                false => room.to_string(),
                true => match self.room_id(room).await? {
                    Ok(id) => id,
                    Err(reason) => {
                        failures.push(format!("{room} cannot be joined: {reason}"));
                        continue;
                    }
                },
            };
            match self.is_member(&id, user).await? {
                Ok(true) => found.push(room.clone()),
                Ok(false) => {}
                Err(reason) => failures.push(format!("{room} cannot be joined: {reason}")),
            }
        }
        match failures.is_empty() {
            true => Ok(found),
            false => Err(rooms_not_joined(desired, failures)),
        }
    }

    /// Whether `user` is among the joined members of the room `room_id`
    /// (synapse/rest/admin/rooms.py, RoomMembersRestServlet), which are read
    /// once per run; a room the server does not know gives the reason no
    /// one can join it.
    pub(super) async fn is_member(
        &self,
        room_id: &str,
        user: &UserId,
    ) -> Result<Result<bool, String>, ServerError> {
        let members = kept_for_the_run(&self.members, room_id.to_string());
        let read = || async {
            let what = format!("reading the members of {room_id}");
            let path = format!("/_synapse/admin/v1/rooms/{}/members", path_segment(room_id));
            let reply = self.admin_get(&path, &[]).await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Ok(Err(ServerError::refused(what, &reply).to_string()));
            }
            if reply.status != StatusCode::OK {
                return Err(ServerError::refused(what, &reply));
            }
            let listed = reply.body.get("members").and_then(Value::as_array);
            let Some(listed) = listed else {
                return Err(ServerError::Unexpected {
                    what,
                    detail: "no members array".into(),
                });
            };
            Ok(Ok(listed
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()))
        };
        Ok(match members.get_or_try_init(read).await? {
            Ok(joined) => Ok(joined.contains(&user.to_string())),
            Err(reason) => Err(reason.clone()),
        })
    }

    /// The ID of the room `alias` names, or the server's reason why there
    /// is none; a failure to ask is not kept, so the next user asks again.
    pub(super) async fn room_id(&self, alias: &Room) -> Result<AliasLookup, ServerError> {
        let looked_up = kept_for_the_run(&self.aliases, alias.clone());
        let lookup = || async {
            let path = format!(
                "/_matrix/client/v3/directory/room/{}",
                path_segment(alias.as_str())
            );
            let reply = self.admin_get(&path, &[]).await?;
            Ok(match reply.body.get("room_id").and_then(Value::as_str) {
                Some(id) if reply.status == StatusCode::OK => Ok(id.to_string()),
                _ => Err(ServerError::refused(
                    format!("looking up the room alias {alias}"),
                    &reply,
                )
                .to_string()),
            })
        };
        looked_up.get_or_try_init(lookup).await.cloned()
    }

    /// Joins `user` to each of `rooms` through the admin API; a room that
    /// cannot be joined keeps the user out of no other.
    pub(super) async fn join_rooms(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        rooms: &[Room],
    ) -> Result<(), ServerError> {
        let mut failures = Vec::new();
        for room in rooms {
            let path = format!("/_synapse/admin/v1/join/{}", path_segment(room.as_str()));
            let body = json!({"user_id": user.to_string()});
            let reply = self.admin_send(Method::POST, &path, &body).await?;
            if reply.status != StatusCode::OK {
                let refused = ServerError::refused(format!("joining {user}"), &reply);
                let hint = match (reply.status, reply.errcode()) {
                    (StatusCode::FORBIDDEN, "M_FORBIDDEN") => JOIN_NOT_PUBLIC,
                    _ => "",
                };
                failures.push(format!("{room} cannot be joined: {refused}{hint}"));
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(rooms_not_joined(desired, failures)),
        }
    }
}
