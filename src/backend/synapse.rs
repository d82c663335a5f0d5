//! Synapse, through its admin API (`/_synapse/admin`).
//!
//! Authentication: an `admin_token` when given; otherwise the module keeps a
//! service account of its own, registered once with the shared secret, and
//! caches that account's token between runs (see [`super::service_account`]).
//! This avoids `/login`, whose default rate limit (a handful per hour) would break
//! repeated runs, and leaves no device on any managed user.
//!
//! With `synapse_database`, the bulk read of many users confirms in
//! Synapse's database, read only, what its user list does not show
//! ([`database`]).

#[cfg(feature = "databases")]
mod database;
#[cfg(not(feature = "databases"))]
#[path = "synapse/without_database.rs"]
mod database;
mod email;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use self::database::Database;
use super::client_api::unix_millis;
use super::client_api::{logout, post_with_password};
use super::service_account::{identify, require_credentials, Access, AdminCheck};
use super::shared_secret::{register, Registration};
use super::{from_homeserver, list_budget, refuse_declared, AccountServer, ServerError};
use crate::http::{path_segment, server_word, Body, Download, Http, Reply};
use crate::matrix_id::{split_mxc, Room, UserId};
use crate::model::{
    Account, Avatar, AvatarFile, Change, DesiredUser, ExternalId, Ratelimit, Restriction,
    Restrictions, Seen, SeenAvatar, UserType,
};
use crate::model::{ArgsError, ModuleArgs};
use crate::plan::same_set;
use crate::secret::Secret;

/// Synapse sorts its whole user list for every page (about 0.3 s at
/// 100,000 users), so pages of 10,000 read 100,000 users ten times faster
/// than pages of 1,000; each page is about 2.6 MB of JSON.
const LIST_PAGE_SIZE: u64 = 10_000;
/// How long the short-lived token used for a password check may live.
const PASSWORD_CHECK_TOKEN_MS: u64 = 5 * 60 * 1000;
/// Why a room that is not public may refuse a join
/// (synapse/rest/admin/rooms.py, JoinRoomAliasServlet).
const JOIN_NOT_PUBLIC: &str = " (Synapse joins a user to a room that is not public by inviting \
     it as the account matrix_user acts as, service_account or the owner of admin_token, which \
     must be in the room and allowed to invite)";

/// A failure only Synapse reports, naming the declared field it is about.
#[derive(Debug, thiserror::Error)]
pub enum SynapseError {
    /// The server has no such user type.
    #[error("{field}: Synapse does not know the user type {user_type:?} ({cause}); declare regular, bot, support, or a type listed in its user_types.extra_user_types (homeserver.yaml)")]
    UnknownUserType {
        field: String,
        user_type: String,
        cause: Box<ServerError>,
    },
    /// Declared rooms the user cannot be joined to, each with the reason.
    #[error("{field}: {}", .failures.join("; "))]
    RoomsNotJoined {
        field: String,
        failures: Vec<String>,
    },
    /// Synapse's database could not be opened or read, or is not Synapse's.
    #[error("synapse_database: {detail}; give the postgres:// (or postgresql://) URL of Synapse's database, as database.args in homeserver.yaml name it (reading is enough; no TLS), or the path of its SQLite file homeserver.db")]
    Database { detail: String },
}

/// A room alias's room ID, or the server's reason why it has none.
type AliasLookup = Result<String, String>;
/// A room's joined members, or the server's reason why it shows none.
type MembersLookup = Result<HashSet<String>, String>;

const SINGLE_EMAIL: &str = "email (one address, verified) is for homeserver: mas; \
     on Synapse declare emails, the exact list of the user's addresses";

pub struct Synapse {
    http: Http,
    token: Secret,
    server_name: String,
    /// The account `token` belongs to, which `undeclared` never touches.
    acting_user: String,
    /// When given, users are created by shared-secret registration, which
    /// refuses an existing user instead of overwriting it.
    shared_secret: Option<Secret>,
    /// The room aliases looked up in this run, each once however many users
    /// declare it.
    aliases: RefCell<HashMap<Room, Rc<OnceCell<AliasLookup>>>>,
    /// The members of the rooms declared in this run, each read once.
    members: RefCell<HashMap<String, Rc<OnceCell<MembersLookup>>>>,
    /// Synapse's database, read only (`synapse_database`).
    database: Option<Database>,
}

impl Synapse {
    /// Creates `user` through the admin API, which only the admin token
    /// allows. Its PUT is an upsert: one carrying the password would
    /// overwrite the password of an account someone else created since our
    /// read. So the first PUT carries no password, which leaves an existing
    /// account's password alone and tells by its status who created it (201:
    /// this run); only then does a second PUT set the password and
    /// attributes. The first carries a declared extra user type, which
    /// Synapse checks before it creates anything: a type it does not know
    /// then leaves no account behind.
    async fn create_by_admin_api(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError> {
        let path = user_path(&user.to_string());
        let mut first = json!({});
        if let Some(extra @ UserType::Extra(_)) = &desired.user_type {
            first["user_type"] = user_type_value(extra);
        }
        let reply = match self.admin_send(Method::PUT, &path, &first).await {
            // Resending the first PUT is harmless, but its 200 would no
            // longer say who created the account: only resend when it is not there.
            Err(lost) if lost.is_answer_lost() => {
                if self.account(user, desired).await?.is_some() {
                    return Err(ServerError::CreationUnconfirmed {
                        user: user.to_string(),
                        cause: Box::new(lost),
                    });
                }
                self.admin_send(Method::PUT, &path, &first).await?
            }
            other => other?,
        };
        match reply.status {
            StatusCode::CREATED => {}
            StatusCode::OK => {
                return Err(ServerError::CreatedMeanwhile {
                    user: user.to_string(),
                })
            }
            _ => {
                let refused = ServerError::refused(format!("creating {user}"), &reply);
                return Err(name_refused_user_type(refused, desired));
            }
        }
        let mut body = json!({
            "password": password.expose(),
            "admin": desired.admin.unwrap_or(false),
            "user_type": user_type_value(desired.user_type.as_ref().unwrap_or(&UserType::Regular)),
        });
        if let Some(displayname) = &desired.displayname {
            body["displayname"] = json!(displayname);
        }
        let completed = match self.admin_send(Method::PUT, &path, &body).await {
            Ok(reply) if reply.status == StatusCode::OK => return Ok(()),
            Ok(reply) => ServerError::refused(format!("setting up the new {user}"), &reply),
            Err(error) => error,
        };
        // Synapse cannot tell later whether a user has a password, so a run
        // with update_password: on_create would never set it. Deactivated,
        // the account is one the next run reactivates, with its password.
        let deactivated = self
            .admin_send(Method::PUT, &path, &json!({"deactivated": true}))
            .await;
        let state = match deactivated {
            Ok(reply) if reply.status == StatusCode::OK => "then deactivated so that nobody uses it without a password; the next run reactivates it with its password".to_string(),
            Ok(reply) => format!("but has no password yet, and deactivating it failed too ({}); run again with update_password: always for this user", ServerError::refused("deactivating it", &reply)),
            Err(error) => format!("but has no password yet, and deactivating it failed too ({error}); run again with update_password: always for this user"),
        };
        Err(ServerError::CreatedWithoutPassword {
            user: user.to_string(),
            cause: Box::new(completed),
            state,
        })
    }

    /// Applies or lifts one restriction through its own endpoint.
    async fn restrict(
        &self,
        user: &UserId,
        restriction: Restriction,
        value: bool,
    ) -> Result<(), ServerError> {
        let id = path_segment(&user.to_string());
        let shadow_ban = format!("/_synapse/admin/v1/users/{id}/shadow_ban");
        let (method, path, body) = match (restriction, value) {
            (Restriction::Locked, _) => (
                Method::PUT,
                user_path(&user.to_string()),
                json!({"locked": value}),
            ),
            (Restriction::Suspended, _) => (
                Method::PUT,
                format!("/_synapse/admin/v1/suspend/{id}"),
                json!({"suspend": value}),
            ),
            (Restriction::ShadowBanned, true) => (Method::POST, shadow_ban, json!({})),
            (Restriction::ShadowBanned, false) => (Method::DELETE, shadow_ban, json!({})),
        };
        let reply = self.admin_send(method, &path, &body).await?;
        match reply.status {
            StatusCode::OK => Ok(()),
            _ => Err(ServerError::refused(
                format!("setting {} to {value} for {user}", restriction.field()),
                &reply,
            )),
        }
    }

    /// The user's rate-limit override; `None` when it has none. Synapse
    /// answers `{}` then, and an override of zeros (unlimited) as zeros.
    async fn ratelimit(&self, user: &UserId) -> Result<Option<Ratelimit>, ServerError> {
        let what = format!("reading the rate-limit override of {user}");
        let reply = self.admin_get(&ratelimit_path(user), &[]).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        let number = |name: &str| reply.body.get(name).map(Value::as_u64);
        match (number("messages_per_second"), number("burst_count")) {
            (None, None) => Ok(None),
            (Some(Some(messages_per_second)), Some(Some(burst_count))) => Ok(Some(Ratelimit {
                messages_per_second,
                burst_count,
            })),
            _ => Err(ServerError::Unexpected {
                what,
                detail: format!("not an override: {}", reply.body),
            }),
        }
    }

    /// Sets the user's rate-limit override, or removes it (`None`).
    async fn set_ratelimit(
        &self,
        user: &UserId,
        ratelimit: Option<Ratelimit>,
    ) -> Result<(), ServerError> {
        let path = ratelimit_path(user);
        let (method, body, what) = match ratelimit {
            Some(r) => (
                Method::POST,
                json!({"messages_per_second": r.messages_per_second, "burst_count": r.burst_count}),
                "setting",
            ),
            None => (Method::DELETE, json!({}), "removing"),
        };
        let reply = self.admin_send(method, &path, &body).await?;
        match reply.status {
            StatusCode::OK => Ok(()),
            _ => Err(ServerError::refused(
                format!("{what} the rate-limit override of {user}"),
                &reply,
            )),
        }
    }

    /// Puts the declared `threepids` and `external_ids` into the user's PUT
    /// `body`; Synapse replaces each whole set with it (`on_PUT` in
    /// synapse/rest/admin/users.py). First refuses an address or identity
    /// another account holds: Synapse would move the address to this user
    /// silently (an upsert on medium and address) and answer a bare 409 for
    /// the identity.
    async fn replace_identifiers(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
        body: &mut Map<String, Value>,
    ) -> Result<(), ServerError> {
        let what = format!("reading {user}");
        let reply = self.admin_get(&user_path(&user.to_string()), &[]).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        if let (true, Some(emails)) = (changes.contains(&Change::SetEmails), &desired.emails) {
            let current = email_threepids(&reply.body, &what)?;
            self.refuse_taken_emails(user, emails, &current).await?;
            // Only e-mail is declared: a phone number (msisdn) stays.
            let mut threepids: Vec<Value> = threepids(&reply.body)
                .filter(|t| t.get("medium").and_then(Value::as_str) != Some("email"))
                .map(|t| json!({"medium": t.get("medium"), "address": t.get("address")}))
                .collect();
            threepids.extend(
                emails
                    .iter()
                    .map(|email| json!({"medium": "email", "address": email})),
            );
            body.insert("threepids".into(), Value::Array(threepids));
        }
        if let (true, Some(ids)) = (
            changes.contains(&Change::SetExternalIds),
            &desired.external_ids,
        ) {
            let current = parse_external_ids(&reply.body, &what)?;
            self.refuse_taken_ids(user, ids, &current).await?;
            // Synapse clears its lookup cache (get_user_by_external_id, which
            // SSO logins use) only for the identities a PUT writes, so a
            // removed one would still log in until a restart: writing the
            // current set again first clears theirs.
            if current.iter().any(|id| !ids.contains(id)) {
                let path = user_path(&user.to_string());
                let reply = self
                    .admin_send(Method::PUT, &path, &json!({"external_ids": current}))
                    .await?;
                if reply.status != StatusCode::OK {
                    let what =
                        format!("rewriting the SSO identities of {user} before removing some");
                    return Err(ServerError::refused(what, &reply));
                }
            }
            body.insert("external_ids".into(), json!(ids));
        }
        Ok(())
    }

    /// Refuses each of the `wanted` addresses that `user` lacks and another
    /// account has (see [`Synapse::replace_identifiers`]).
    async fn refuse_taken_emails(
        &self,
        user: &UserId,
        wanted: &[String],
        current: &[String],
    ) -> Result<(), ServerError> {
        let lacked = wanted.iter().filter(|e| !current.contains(e));
        for email in lacked {
            let path = format!(
                "/_synapse/admin/v1/threepid/email/users/{}",
                path_segment(email)
            );
            self.refuse_taken(user, &path, format!("the e-mail address {email}"))
                .await?;
        }
        Ok(())
    }

    /// Refuses each of the `wanted` SSO identities that `user` lacks and
    /// another account has.
    async fn refuse_taken_ids(
        &self,
        user: &UserId,
        wanted: &[ExternalId],
        current: &[ExternalId],
    ) -> Result<(), ServerError> {
        for id in wanted.iter().filter(|id| !current.contains(id)) {
            let path = format!(
                "/_synapse/admin/v1/auth_providers/{}/users/{}",
                path_segment(&id.auth_provider),
                path_segment(&id.external_id)
            );
            self.refuse_taken(user, &path, format!("the SSO identity {id}"))
                .await?;
        }
        Ok(())
    }

    /// Fails when Synapse's lookup at `path` (by e-mail address or external
    /// ID) finds an account other than `user`.
    async fn refuse_taken(
        &self,
        user: &UserId,
        path: &str,
        what: String,
    ) -> Result<(), ServerError> {
        let reply = self.admin_get(path, &[]).await?;
        let holder = reply.body.get("user_id").and_then(Value::as_str);
        match (reply.status, holder) {
            (StatusCode::NOT_FOUND, _) => Ok(()),
            (StatusCode::OK, Some(holder)) if holder == user.to_string() => Ok(()),
            (StatusCode::OK, Some(holder)) => Err(ServerError::TakenByOther {
                user: user.to_string(),
                what,
                holder: server_word(holder),
            }),
            _ => Err(ServerError::refused(format!("looking up {what}"), &reply)),
        }
    }

    /// Of the rooms `desired` declares, those `user` has joined. Each room's
    /// members are read once per run, however many users declare it, so a
    /// list of users sharing rooms costs a request per room, not per user.
    /// Aliases are looked up first; a room that names no room, or that the
    /// server does not know, fails the user, as a join to it would.
    async fn joined_rooms(
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
    async fn is_member(
        &self,
        room_id: &str,
        user: &UserId,
    ) -> Result<Result<bool, String>, ServerError> {
        let members = self
            .members
            .borrow_mut()
            .entry(room_id.to_string())
            .or_default()
            .clone();
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
    async fn room_id(&self, alias: &Room) -> Result<AliasLookup, ServerError> {
        let looked_up = self
            .aliases
            .borrow_mut()
            .entry(alias.clone())
            .or_default()
            .clone();
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
    async fn join_rooms(
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

    /// Adds to the listed accounts in `found` what the list does not show
    /// but their declarations need: the declared rooms each has joined
    /// (each room's members read once), and, from `synapse_database`, the
    /// rate-limit override, SSO identities and e-mail addresses, where the
    /// database shows them as declared. Whatever stays unknown (a fact
    /// that differs, a room that cannot be joined) sends the user to a
    /// read of its own through the admin API, which decides the change and
    /// checks that no other account holds a declared address or identity.
    async fn complete_listed(
        &self,
        found: &mut HashMap<UserId, Account>,
        users: &[UserId],
        declared: &[DesiredUser],
    ) -> Result<(), ServerError> {
        let listed: Vec<(&UserId, &DesiredUser)> = users
            .iter()
            .zip(declared)
            .filter(|(user, _)| found.contains_key(*user))
            .collect();
        for &(user, desired) in &listed {
            if desired.rooms.is_empty() {
                continue;
            }
            // A room that cannot be joined fails the user in its own read.
            if let (Ok(joined), Some(account)) =
                (self.joined_rooms(user, desired).await, found.get_mut(user))
            {
                account.rooms = Seen::Known(joined);
            }
        }
        let Some(database) = &self.database else {
            return Ok(());
        };
        let declaring = |declares: fn(&DesiredUser) -> bool| -> Vec<String> {
            listed
                .iter()
                .filter(|(_, desired)| declares(desired))
                .map(|(user, _)| user.to_string())
                .collect()
        };
        let ratelimits = database
            .ratelimits(&declaring(|d| d.ratelimit.is_some()))
            .await?;
        let external_ids = database
            .external_ids(&declaring(|d| d.external_ids.is_some()))
            .await?;
        let emails = database.emails(&declaring(|d| d.emails.is_some())).await?;
        for (user, desired) in listed {
            let id = user.to_string();
            let Some(account) = found.get_mut(user) else {
                continue;
            };
            if let (Some(wanted), Some(&seen)) = (desired.ratelimit, ratelimits.get(&id)) {
                if seen == wanted {
                    account.ratelimit = Seen::Known(seen);
                }
            }
            if let (Some(wanted), Some(seen)) = (&desired.external_ids, external_ids.get(&id)) {
                if same_set(seen, wanted) {
                    account.external_ids = Seen::Known(seen.clone());
                }
            }
            if let (Some(wanted), Some(seen)) = (&desired.emails, emails.get(&id)) {
                let seen: Vec<String> = seen.iter().map(|a| as_synapse_folds(a)).collect();
                if same_set(&seen, wanted) {
                    account.emails = Seen::Known(seen);
                }
            }
        }
        Ok(())
    }

    /// One page of Synapse's user list from `from`, with `filters`
    /// (synapse/rest/admin/users.py `UsersRestServletV2`).
    async fn list_page(
        &self,
        from: u64,
        filters: &[(&str, &str)],
    ) -> Result<ListPage, ServerError> {
        let (start, limit) = (from.to_string(), LIST_PAGE_SIZE.to_string());
        let mut query = vec![("from", start.as_str()), ("limit", limit.as_str())];
        query.extend_from_slice(filters);
        let mut reply = self.admin_get("/_synapse/admin/v2/users", &query).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused("listing users", &reply));
        }
        let total = reply.body.get("total").and_then(Value::as_u64).unwrap_or(0);
        let users = match reply.body.get_mut("users").map(Value::take) {
            Some(Value::Array(users)) => users,
            _ => {
                return Err(ServerError::Unexpected {
                    what: "listing users".into(),
                    detail: "no users array".into(),
                })
            }
        };
        let next = match reply.body.get("next_token") {
            Some(next) if !users.is_empty() => Some(
                next.as_u64()
                    .or_else(|| next.as_str().and_then(|s| s.parse().ok()))
                    .filter(|&next| next > from)
                    .ok_or_else(|| ServerError::Unexpected {
                        what: "listing users".into(),
                        detail: format!("next_token {next} does not move past {from}"),
                    })?,
            ),
            _ => None,
        };
        Ok(ListPage { users, total, next })
    }

    /// The avatar in `user`'s record, and, for a declared file, whether
    /// its content is that file's.
    async fn avatar(
        &self,
        user: &UserId,
        record: &Value,
        declared: &Avatar,
    ) -> Result<SeenAvatar, ServerError> {
        let uri = record
            .get("avatar_url")
            .and_then(Value::as_str)
            .filter(|uri| !uri.is_empty())
            .map(str::to_string);
        let is_declared_file = match (declared, &uri) {
            (Avatar::File(file), Some(uri)) => Some(self.media_is(user, uri, file).await?),
            (Avatar::File(_), None) => Some(false),
            (Avatar::Uri(_), _) => None,
        };
        Ok(SeenAvatar {
            uri,
            is_declared_file,
        })
    }

    /// Whether the media at `uri` is this server's and holds `file`'s bytes,
    /// downloaded with the module's token through the authenticated media
    /// API (synapse/rest/client/media.py), stopping at a length that differs.
    async fn media_is(
        &self,
        user: &UserId,
        uri: &str,
        file: &AvatarFile,
    ) -> Result<bool, ServerError> {
        // Another server's media (or none at all) is replaced by an upload here.
        let Some((server, media_id)) = split_mxc(uri).filter(|(s, _)| *s == self.server_name)
        else {
            return Ok(false);
        };
        let what = format!("downloading the avatar {uri} of {user}");
        let path = format!(
            "/_matrix/client/v1/media/download/{}/{}",
            path_segment(server),
            path_segment(media_id)
        );
        let response = match self.http.download(&path, &self.token).await? {
            Download::Found(response) => response,
            // Deleted or quarantined media: the declared file is uploaded again.
            Download::Refused(reply)
                if reply.status == StatusCode::NOT_FOUND && reply.errcode() == "M_NOT_FOUND" =>
            {
                return Ok(false)
            }
            Download::Refused(reply) => return Err(ServerError::refused(what, &reply)),
        };
        if response
            .content_length()
            .is_some_and(|length| length != file.bytes.len() as u64)
        {
            return Ok(false);
        }
        let content = response
            .bytes()
            .await
            .map_err(|error| ServerError::Unexpected {
                what,
                detail: error.to_string(),
            })?;
        Ok(content[..] == file.bytes[..])
    }

    /// Uploads `file` as the module's account (so the media is that
    /// account's) and returns its mxc URI.
    async fn upload(&self, user: &UserId, file: &AvatarFile) -> Result<String, ServerError> {
        const UPLOAD: &str = "/_matrix/media/v3/upload";
        let what = format!("uploading {} as the avatar of {user}", file.path);
        let name = std::path::Path::new(&file.path)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = Body::Bytes {
            content_type: file.content_type,
            bytes: &file.bytes,
        };
        let reply = self
            .http
            .send_query(
                Method::POST,
                UPLOAD,
                &[("filename", &name)],
                Some(&self.token),
                body,
            )
            .await?;
        let reply = from_homeserver(UPLOAD, reply)?;
        match reply.body.get("content_uri").and_then(Value::as_str) {
            Some(uri) if reply.status == StatusCode::OK => Ok(uri.to_string()),
            _ => Err(ServerError::refused(what, &reply)),
        }
    }

    async fn admin_get(&self, path: &str, query: &[(&str, &str)]) -> Result<Reply, ServerError> {
        let reply = self
            .http
            .send_query(Method::GET, path, query, Some(&self.token), Body::None)
            .await?;
        from_homeserver(path, reply)
    }

    async fn admin_send(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Reply, ServerError> {
        let reply = self
            .http
            .send(method, path, Some(&self.token), Body::Json(body))
            .await?;
        from_homeserver(path, reply)
    }
}

impl AccountServer for Synapse {
    type Access = Access;

    fn check_declaration(args: &ModuleArgs) -> Result<Access, ArgsError> {
        let access = require_credentials(&args.credentials)?;
        super::refuse_mas_only(args)?;
        let database = args.credentials.synapse_database.is_some();
        super::refuse_without_databases("synapse_database", database)?;
        for user in &args.users {
            refuse_declared(user, "email", user.email.is_some(), SINGLE_EMAIL)?;
        }
        Ok(access)
    }

    /// Opens `synapse_database` when given, authenticates and learns the
    /// server name. It changes no managed user; it may register the service
    /// account (first run) or log it in and end its idle sessions (token
    /// cache lost), but only once the database opened.
    fn email_form(address: &str) -> Result<String, String> {
        email::canonical(address)
    }

    async fn connect(
        args: &ModuleArgs,
        access: Access,
        http: Http,
    ) -> Result<Synapse, ServerError> {
        let database = match &args.credentials.synapse_database {
            Some(location) => Some(Database::open(location, args.server.timeout).await?),
            None => None,
        };
        let identity = identify(
            args,
            &access,
            &http,
            "synapse",
            Some(UserType::Bot.as_str()),
            &SynapseAdminCheck,
        )
        .await?;
        Ok(Synapse {
            http,
            token: identity.token,
            server_name: identity.server_name,
            acting_user: identity.user_id,
            shared_secret: args.credentials.shared_secret.clone(),
            aliases: RefCell::default(),
            members: RefCell::default(),
            database,
        })
    }

    fn server_name(&self) -> &str {
        &self.server_name
    }

    async fn accounts(
        &self,
        users: &[UserId],
        declared: &[DesiredUser],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        let Some(most) = list_budget(users.len()) else {
            return Ok(None);
        };
        // Every declared user is of this server: known by its localpart.
        let wanted: HashMap<&str, &UserId> = users.iter().map(|u| (u.localpart(), u)).collect();
        let mut found = HashMap::with_capacity(users.len());
        let mut from = 0;
        loop {
            let filters = [
                ("guests", "false"),
                ("deactivated", "true"),
                ("locked", "true"),
            ];
            let page = self.list_page(from, &filters).await?;
            if from == 0 && page.total > most {
                return Ok(None);
            }
            for entry in &page.users {
                let localpart = entry
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(|name| name.strip_prefix('@'))
                    .and_then(|name| name.strip_suffix(self.server_name.as_str()))
                    .and_then(|name| name.strip_suffix(':'));
                if let Some(&user) = localpart.and_then(|l| wanted.get(l)) {
                    found.insert(user.clone(), parse_account(entry));
                }
            }
            match page.next {
                Some(next) => from = next,
                None => break,
            }
        }
        self.complete_listed(&mut found, users, declared).await?;
        Ok(Some(found))
    }

    /// Guests are left out: Synapse makes them on demand for guest access
    /// (numeric localparts, no password), so nobody can declare them. So are
    /// deactivated accounts (the list's default), which are never touched.
    async fn local_accounts(&self) -> Result<Vec<(UserId, Account)>, ServerError> {
        let mut accounts = Vec::new();
        let mut from = 0;
        loop {
            let page = self
                .list_page(from, &[("guests", "false"), ("locked", "true")])
                .await?;
            for entry in &page.users {
                let name = entry.get("name").and_then(Value::as_str);
                let Some(user) = name.and_then(|name| UserId::listed(name, &self.server_name))
                else {
                    return Err(ServerError::Unexpected {
                        what: "listing users".into(),
                        detail: format!(
                            "{:?} is not a user ID of {}",
                            server_word(name.unwrap_or_default()),
                            self.server_name
                        ),
                    });
                };
                if name != Some(self.acting_user.as_str()) {
                    accounts.push((user, parse_account(entry)));
                }
            }
            match page.next {
                Some(next) => from = next,
                None => return Ok(accounts),
            }
        }
    }

    /// The user list does not say; one user's record has `appservice_id`
    /// (synapse/handlers/admin.py `get_user`).
    async fn is_appservice_user(&self, user: &UserId) -> Result<bool, ServerError> {
        let what = format!("reading {user}");
        let reply = self.admin_get(&user_path(&user.to_string()), &[]).await?;
        match reply.status {
            StatusCode::OK => Ok(reply
                .body
                .get("appservice_id")
                .is_some_and(|id| !id.is_null())),
            _ => Err(ServerError::refused(what, &reply)),
        }
    }

    async fn account(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Option<Account>, ServerError> {
        let what = format!("reading {user}");
        let reply = self.admin_get(&user_path(&user.to_string()), &[]).await?;
        let mut account = match reply.status {
            StatusCode::OK => parse_account(&reply.body),
            StatusCode::NOT_FOUND => {
                // Refused before the user is created, in check mode too.
                if let Some(wanted) = &desired.emails {
                    self.refuse_taken_emails(user, wanted, &[]).await?;
                }
                if let Some(wanted) = &desired.external_ids {
                    self.refuse_taken_ids(user, wanted, &[]).await?;
                }
                return Ok(None);
            }
            _ => return Err(ServerError::refused(what, &reply)),
        };
        // A request of its own, so made only for a user that declares it.
        if desired.ratelimit.is_some() {
            account.ratelimit = Seen::Known(self.ratelimit(user).await?);
        }
        if !desired.rooms.is_empty() {
            account.rooms = Seen::Known(self.joined_rooms(user, desired).await?);
        }
        // In the user's record, but shown only when declared, like the
        // override. One another account has fails the user here already, so
        // that check mode predicts the failure; update() checks again.
        if let Some(wanted) = &desired.emails {
            let current = email_threepids(&reply.body, &what)?;
            self.refuse_taken_emails(user, wanted, &current).await?;
            account.emails = Seen::Known(current);
        }
        if let Some(wanted) = &desired.external_ids {
            let current = parse_external_ids(&reply.body, &what)?;
            self.refuse_taken_ids(user, wanted, &current).await?;
            account.external_ids = Seen::Known(current);
        }
        // A file's content is compared by downloading: only for a user that declares one.
        if let Some(declared) = &desired.avatar {
            account.avatar = Seen::Known(self.avatar(user, &reply.body, declared).await?);
        }
        Ok(Some(account))
    }

    async fn password_matches(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<bool, ServerError> {
        let what = format!("checking the password of {user}");
        // A token issued by the admin API has no device; the password is then
        // checked by user-interactive auth on a request that changes nothing.
        let expires = unix_millis() + PASSWORD_CHECK_TOKEN_MS;
        let reply = self
            .admin_send(
                Method::POST,
                &format!(
                    "/_synapse/admin/v1/users/{}/login",
                    path_segment(&user.to_string())
                ),
                &json!({"valid_until_ms": expires}),
            )
            .await?;
        let user_token = match reply.body.get("access_token").and_then(Value::as_str) {
            Some(token) if reply.status == StatusCode::OK => Secret::new(token),
            _ => return Err(ServerError::refused(what, &reply)),
        };
        let verdict = post_with_password(
            &self.http,
            "/_matrix/client/v3/delete_devices",
            &user_token,
            (&user.to_string(), password),
            json!({ "devices": [] }),
        )
        .await;
        let logged_out = logout(
            &self.http,
            &user_token,
            &format!("the password check of {user}"),
        )
        .await;
        let verdict = verdict?;
        logged_out?;
        match (verdict.status, verdict.errcode()) {
            (StatusCode::OK, _) => Ok(true),
            (StatusCode::UNAUTHORIZED, "M_FORBIDDEN") => Ok(false),
            _ => Err(ServerError::refused(what, &verdict)),
        }
    }

    async fn create(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError> {
        let admin = desired.admin.unwrap_or(false);
        let user_type = desired.user_type.as_ref().unwrap_or(&UserType::Regular);
        if let Some(secret) = &self.shared_secret {
            let registration = Registration {
                localpart: user.localpart(),
                password,
                admin,
                user_type: (*user_type != UserType::Regular).then_some(user_type.as_str()),
                displayname: desired.displayname.as_deref(),
                inhibit_login: Some(true),
            };
            return register(&self.http, secret, &registration)
                .await
                .map(|_| ())
                .map_err(|error| name_refused_user_type(error, desired));
        }
        self.create_by_admin_api(user, desired, password).await
    }

    async fn update(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError> {
        let path = user_path(&user.to_string());
        if let Some(&Change::Deactivate { erase }) = changes
            .iter()
            .find(|c| matches!(c, Change::Deactivate { .. }))
        {
            let reply = self
                .admin_send(
                    Method::POST,
                    &format!(
                        "/_synapse/admin/v1/deactivate/{}",
                        path_segment(&user.to_string())
                    ),
                    &json!({"erase": erase}),
                )
                .await?;
            return match reply.status {
                StatusCode::OK => Ok(()),
                _ => Err(ServerError::refused(format!("deactivating {user}"), &reply)),
            };
        }
        // Everything the user's PUT takes is one request, so that part is
        // never left half-applied; suspension, shadow-ban, the rate-limit
        // override and joins have endpoints of their own.
        let mut body = Map::new();
        let mut apart = Vec::new();
        let mut ratelimit = None;
        let mut rooms: &[Room] = &[];
        if changes
            .iter()
            .any(|c| matches!(c, Change::SetEmails | Change::SetExternalIds))
        {
            self.replace_identifiers(user, desired, changes, &mut body)
                .await?;
        }
        for change in changes {
            match change {
                Change::Reactivate { password } => {
                    body.insert("deactivated".into(), json!(false));
                    body.insert("password".into(), json!(password.expose()));
                }
                Change::SetPassword { password } => {
                    body.insert("password".into(), json!(password.expose()));
                }
                Change::SetAdmin(admin) => {
                    body.insert("admin".into(), json!(admin));
                }
                Change::SetUserType(user_type) => {
                    body.insert("user_type".into(), user_type_value(user_type));
                }
                Change::SetDisplayname => {
                    body.insert("displayname".into(), json!(desired.displayname));
                }
                Change::Restrict(Restriction::Locked, locked) => {
                    body.insert("locked".into(), json!(locked));
                }
                Change::Restrict(restriction, value) => apart.push((*restriction, *value)),
                Change::SetRatelimit(wanted) => ratelimit = Some(*wanted),
                Change::JoinRooms(missing) => rooms = missing,
                // Put into the body by replace_identifiers above.
                Change::SetEmails | Change::SetExternalIds => {}
                // Uploaded first, so that the URI goes with the rest in one PUT.
                Change::SetAvatar(avatar) => {
                    let uri = match avatar {
                        Avatar::Uri(uri) => uri.clone(),
                        Avatar::File(file) => self.upload(user, file).await?,
                    };
                    body.insert("avatar_url".into(), json!(uri));
                }
                // Create goes to create(), and check_declaration refuses
                // e-mail and the MAS options for Synapse, so neither is planned.
                Change::Create { .. }
                | Change::Deactivate { .. }
                | Change::AddEmail(_)
                | Change::WriteAccessToken
                | Change::Mas(_) => {}
            }
        }
        if !body.is_empty() {
            let reply = self
                .admin_send(Method::PUT, &path, &Value::Object(body))
                .await?;
            if reply.status != StatusCode::OK {
                let refused = ServerError::refused(format!("updating {user}"), &reply);
                return Err(name_refused_user_type(refused, desired));
            }
        }
        // A suspended user cannot join a room (M_USER_SUSPENDED): joins
        // come after a lifted restriction and before an applied one.
        let (applied, lifted): (Vec<_>, Vec<_>) = apart.into_iter().partition(|&(_, on)| on);
        for (restriction, value) in lifted {
            self.restrict(user, restriction, value).await?;
        }
        if let Some(wanted) = ratelimit {
            self.set_ratelimit(user, wanted).await?;
        }
        if !rooms.is_empty() {
            self.join_rooms(user, desired, rooms).await?;
        }
        for (restriction, value) in applied {
            self.restrict(user, restriction, value).await?;
        }
        Ok(())
    }
}

/// One page of the user list.
struct ListPage {
    users: Vec<Value>,
    total: u64,
    /// Where the next page starts; `None` on the last.
    next: Option<u64>,
}

/// Synapse's admin API answers only admins: its view of the token's own
/// account says whether it is one.
struct SynapseAdminCheck;

impl AdminCheck for SynapseAdminCheck {
    async fn is_admin(
        &self,
        http: &Http,
        token: &Secret,
        user_id: &str,
    ) -> Result<bool, ServerError> {
        let path = user_path(user_id);
        let reply = http
            .send(Method::GET, &path, Some(token), Body::None)
            .await?;
        let reply = from_homeserver(&path, reply)?;
        match reply.status {
            StatusCode::OK => Ok(reply.body.get("admin").is_some_and(truthy)),
            StatusCode::FORBIDDEN => Ok(false),
            _ => Err(ServerError::refused(format!("reading {user_id}"), &reply)),
        }
    }
}

fn user_path(user_id: &str) -> String {
    format!("/_synapse/admin/v2/users/{}", path_segment(user_id))
}

fn ratelimit_path(user: &UserId) -> String {
    format!(
        "/_synapse/admin/v1/users/{}/override_ratelimit",
        path_segment(&user.to_string())
    )
}

fn user_type_value(user_type: &UserType) -> Value {
    match user_type {
        UserType::Regular => Value::Null,
        other => json!(other.as_str()),
    }
}

fn rooms_not_joined(desired: &DesiredUser, failures: Vec<String>) -> ServerError {
    SynapseError::RoomsNotJoined {
        field: desired.field_name("rooms"),
        failures,
    }
    .into()
}

/// `error`, named as a refusal of the declared user type when it is one:
/// Synapse answers 400 "Invalid user type" to a type that is neither built
/// in nor in its `user_types.extra_user_types`, before it writes anything
/// (synapse/rest/admin/users.py, UserRestServletV2 and UserRegisterServlet).
fn name_refused_user_type(error: ServerError, desired: &DesiredUser) -> ServerError {
    match (&error, &desired.user_type) {
        (
            ServerError::Refused {
                status: 400,
                explanation,
                ..
            },
            Some(user_type),
        ) if explanation.contains("Invalid user type") => SynapseError::UnknownUserType {
            field: desired.field_name("user_type"),
            user_type: user_type.as_str().to_string(),
            cause: Box::new(error),
        }
        .into(),
        _ => error,
    }
}

/// Synapse reports flags as booleans, or as 0/1 on older versions.
fn truthy(value: &Value) -> bool {
    value.as_bool().unwrap_or_else(|| value.as_u64() == Some(1))
}

fn parse_account(body: &Value) -> Account {
    // Besides bot and support, any type of the server's extra_user_types.
    let user_type = body
        .get("user_type")
        .and_then(Value::as_str)
        .map_or(UserType::Regular, UserType::from_name);
    // The user list has no `suspended`; reading one user shows all three.
    let restriction = |name: &str| {
        body.get(name)
            .map_or(Seen::Unknown, |v| Seen::Known(truthy(v)))
    };
    Account {
        restrictions: Restrictions {
            locked: restriction("locked"),
            suspended: restriction("suspended"),
            shadow_banned: restriction("shadow_banned"),
        },
        // Not in the user's record: account() reads them apart when declared.
        ratelimit: Seen::Unknown,
        rooms: Seen::Unknown,
        emails: Seen::Unknown,
        external_ids: Seen::Unknown,
        avatar: Seen::Unknown,
        upstream_links: Vec::new(),
        admin: Seen::Known(body.get("admin").is_some_and(truthy)),
        deactivated: Seen::Known(body.get("deactivated").is_some_and(truthy)),
        user_type,
        displayname: Seen::Known(
            body.get("displayname")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
    }
}

fn threepids(body: &Value) -> impl Iterator<Item = &Value> {
    body.get("threepids")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The user's e-mail addresses among the `threepids` of its record.
fn email_threepids(body: &Value, what: &str) -> Result<Vec<String>, ServerError> {
    if body.get("threepids").and_then(Value::as_array).is_none() {
        return Err(ServerError::Unexpected {
            what: what.into(),
            detail: "no threepids list in the user's record".into(),
        });
    }
    Ok(threepids(body)
        .filter(|t| t.get("medium").and_then(Value::as_str) == Some("email"))
        .filter_map(|t| t.get("address").and_then(Value::as_str))
        .map(as_synapse_folds)
        .collect())
}

/// An address Synapse stored, in the form it stores addresses now: an older
/// Synapse stored them as given. One whose form depends on Synapse's Python
/// stays as stored.
fn as_synapse_folds(address: &str) -> String {
    email::canonical(address).unwrap_or_else(|_| address.to_string())
}

/// The user's SSO identities, from the `external_ids` of its record.
fn parse_external_ids(body: &Value, what: &str) -> Result<Vec<ExternalId>, ServerError> {
    let unexpected = |detail: String| ServerError::Unexpected {
        what: what.into(),
        detail,
    };
    let entries = body
        .get("external_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| unexpected("no external_ids list in the user's record".into()))?;
    entries
        .iter()
        .map(|entry| {
            let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_string);
            match (field("auth_provider"), field("external_id")) {
                (Some(auth_provider), Some(external_id)) => Ok(ExternalId {
                    auth_provider,
                    external_id,
                }),
                _ => Err(unexpected(format!("not an external ID: {entry}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_parse_from_synapse_json() {
        let account = parse_account(
            &json!({"name": "@a:x", "admin": 1, "deactivated": false, "user_type": "bot", "displayname": "A"}),
        );
        assert_eq!(
            account,
            Account {
                restrictions: Restrictions::default(),
                ratelimit: Seen::Unknown,
                rooms: Seen::Unknown,
                emails: Seen::Unknown,
                external_ids: Seen::Unknown,
                avatar: Seen::Unknown,
                admin: Seen::Known(true),
                deactivated: Seen::Known(false),
                user_type: UserType::Bot,
                displayname: Seen::Known(Some("A".into())),
                upstream_links: Vec::new(),
            }
        );
        let custom = parse_account(&json!({"user_type": "custom"}));
        assert_eq!(custom.user_type, UserType::Extra("custom".into()));
    }

    #[test]
    fn restrictions_parse_and_what_the_list_lacks_stays_unknown() {
        let listed = parse_account(&json!({"locked": true, "shadow_banned": 0}));
        assert_eq!(
            listed.restrictions,
            Restrictions {
                locked: Seen::Known(true),
                suspended: Seen::Unknown,
                shadow_banned: Seen::Known(false),
            }
        );
        let read = parse_account(&json!({"suspended": true}));
        assert_eq!(read.restrictions.suspended, Seen::Known(true));
    }
}
