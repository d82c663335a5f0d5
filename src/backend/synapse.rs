//! Synapse, through its admin API (`/_synapse/admin`).
//!
//! Authentication: an `admin_token` when given; otherwise the module keeps a
//! service account of its own, registered once with the shared secret, and
//! caches that account's token between runs (see [`super::service_account`]).
//! This avoids `/login`, whose default rate limit (a handful per hour) would break
//! repeated runs, and leaves no device on any managed user.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::client_api::unix_millis;
use super::client_api::{logout, post_with_password};
use super::service_account::{identify, require_credentials, Access, AdminCheck};
use super::shared_secret::{register, Registration};
use super::{from_homeserver, refuse_email, AccountServer, ServerError};
use crate::args::{ArgsError, ModuleArgs};
use crate::http::{path_segment, server_word, Body, Http, Reply};
use crate::matrix_id::UserId;
use crate::model::{
    Account, Change, DesiredUser, Ratelimit, Restriction, Restrictions, Seen, UserType,
};
use crate::secret::Secret;

/// Below this many declared users, one read per user is cheaper than listing.
const LIST_MIN_USERS: usize = 20;
/// Listing pays only while the server holds at most this many accounts per declared user.
const LIST_MAX_RATIO: u64 = 10;
const LIST_PAGE_SIZE: u64 = 1000;
/// How long the short-lived token used for a password check may live.
const PASSWORD_CHECK_TOKEN_MS: u64 = 5 * 60 * 1000;

pub struct Synapse {
    http: Http,
    token: Secret,
    server_name: String,
    /// When given, users are created by shared-secret registration, which
    /// refuses an existing user instead of overwriting it.
    shared_secret: Option<Secret>,
}

impl Synapse {
    /// Creates `user` through the admin API, which only the admin token
    /// allows. Its PUT is an upsert: one carrying the password would
    /// overwrite the password of an account someone else created since our
    /// read. So the first PUT is empty, which changes nothing on an existing
    /// account and tells by its status who created it (201: this run);
    /// only then does a second PUT set the password and attributes.
    async fn create_by_admin_api(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError> {
        let path = user_path(&user.to_string());
        let reply = match self.admin_send(Method::PUT, &path, &json!({})).await {
            // Resending the empty PUT is harmless, but its 200 would no
            // longer say who created the account: only resend when it is not there.
            Err(lost) if lost.is_answer_lost() => {
                if self.account(user, desired).await?.is_some() {
                    return Err(ServerError::CreationUnconfirmed {
                        user: user.to_string(),
                        cause: Box::new(lost),
                    });
                }
                self.admin_send(Method::PUT, &path, &json!({})).await?
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
            _ => return Err(ServerError::refused(format!("creating {user}"), &reply)),
        }
        let mut body = json!({
            "password": password.expose(),
            "admin": desired.admin.unwrap_or(false),
            "user_type": user_type_value(desired.user_type.unwrap_or(UserType::Regular)),
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
        args.users.iter().try_for_each(refuse_email)?;
        Ok(access)
    }

    /// Authenticates and learns the server name. It changes no managed user;
    /// it may register the service account (first run) or log it in and end
    /// its idle sessions (token cache lost).
    async fn connect(
        args: &ModuleArgs,
        access: Access,
        http: Http,
    ) -> Result<Synapse, ServerError> {
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
            shared_secret: args.credentials.shared_secret.clone(),
        })
    }

    fn server_name(&self) -> &str {
        &self.server_name
    }

    async fn accounts(
        &self,
        users: &[UserId],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        if users.len() < LIST_MIN_USERS {
            return Ok(None);
        }
        let wanted: HashMap<String, &UserId> = users.iter().map(|u| (u.to_string(), u)).collect();
        let mut found = HashMap::new();
        let mut from = 0;
        loop {
            let (start, limit) = (from.to_string(), LIST_PAGE_SIZE.to_string());
            let query = [
                ("from", start.as_str()),
                ("limit", limit.as_str()),
                ("guests", "false"),
                ("deactivated", "true"),
                ("locked", "true"),
            ];
            let reply = self.admin_get("/_synapse/admin/v2/users", &query).await?;
            if reply.status != StatusCode::OK {
                return Err(ServerError::refused("listing users", &reply));
            }
            let total = reply.body.get("total").and_then(Value::as_u64).unwrap_or(0);
            if from == 0 && total > LIST_MAX_RATIO * users.len() as u64 {
                return Ok(None);
            }
            let page = reply
                .body
                .get("users")
                .and_then(Value::as_array)
                .ok_or_else(|| ServerError::Unexpected {
                    what: "listing users".into(),
                    detail: "no users array".into(),
                })?;
            for entry in page {
                let name = entry
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(&user) = wanted.get(name) {
                    found.insert(user.clone(), parse_account(entry, "listing users")?);
                }
            }
            match reply.body.get("next_token") {
                Some(next) if !page.is_empty() => {
                    let next = next
                        .as_u64()
                        .or_else(|| next.as_str().and_then(|s| s.parse().ok()))
                        .filter(|&next| next > from)
                        .ok_or_else(|| ServerError::Unexpected {
                            what: "listing users".into(),
                            detail: format!("next_token {next} does not move past {from}"),
                        })?;
                    from = next;
                }
                _ => return Ok(Some(found)),
            }
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
            StatusCode::OK => parse_account(&reply.body, &what)?,
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(ServerError::refused(what, &reply)),
        };
        // A request of its own, so made only for a user that declares it.
        if desired.ratelimit.is_some() {
            account.ratelimit = Seen::Known(self.ratelimit(user).await?);
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
        let user_type = desired.user_type.unwrap_or(UserType::Regular);
        if let Some(secret) = &self.shared_secret {
            let registration = Registration {
                localpart: user.localpart(),
                password,
                admin,
                user_type: (user_type != UserType::Regular).then_some(user_type.as_str()),
                displayname: desired.displayname.as_deref(),
                inhibit_login: Some(true),
            };
            return register(&self.http, secret, &registration)
                .await
                .map(|_| ());
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
        // never left half-applied; suspension, shadow-ban and the rate-limit
        // override have endpoints of their own.
        let mut body = Map::new();
        let mut apart = Vec::new();
        let mut ratelimit = None;
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
                    body.insert("user_type".into(), user_type_value(*user_type));
                }
                Change::SetDisplayname => {
                    body.insert("displayname".into(), json!(desired.displayname));
                }
                Change::Restrict(Restriction::Locked, locked) => {
                    body.insert("locked".into(), json!(locked));
                }
                Change::Restrict(restriction, value) => apart.push((*restriction, *value)),
                Change::SetRatelimit(wanted) => ratelimit = Some(*wanted),
                // Create goes to create(), and check_declaration refuses
                // e-mail for Synapse, so AddEmail is never planned.
                Change::Create { .. }
                | Change::Deactivate { .. }
                | Change::AddEmail(_)
                | Change::WriteAccessToken => {}
            }
        }
        if !body.is_empty() {
            let reply = self
                .admin_send(Method::PUT, &path, &Value::Object(body))
                .await?;
            if reply.status != StatusCode::OK {
                return Err(ServerError::refused(format!("updating {user}"), &reply));
            }
        }
        for (restriction, value) in apart {
            self.restrict(user, restriction, value).await?;
        }
        if let Some(wanted) = ratelimit {
            self.set_ratelimit(user, wanted).await?;
        }
        Ok(())
    }
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

fn user_type_value(user_type: UserType) -> Value {
    match user_type {
        UserType::Regular => Value::Null,
        other => json!(other.as_str()),
    }
}

/// Synapse reports flags as booleans, or as 0/1 on older versions.
fn truthy(value: &Value) -> bool {
    value.as_bool().unwrap_or_else(|| value.as_u64() == Some(1))
}

fn parse_account(body: &Value, what: &str) -> Result<Account, ServerError> {
    let user_type = match body.get("user_type").and_then(Value::as_str) {
        None => UserType::Regular,
        Some("bot") => UserType::Bot,
        Some("support") => UserType::Support,
        Some(other) => {
            return Err(ServerError::Unexpected {
                what: what.into(),
                detail: format!(
                    "user type {:?} is not one this module manages (regular, bot, support)",
                    server_word(other)
                ),
            })
        }
    };
    // The user list has no `suspended`; reading one user shows all three.
    let restriction = |name: &str| {
        body.get(name)
            .map_or(Seen::Unknown, |v| Seen::Known(truthy(v)))
    };
    Ok(Account {
        restrictions: Restrictions {
            locked: restriction("locked"),
            suspended: restriction("suspended"),
            shadow_banned: restriction("shadow_banned"),
        },
        // Not in the user's record: account() reads it apart when declared.
        ratelimit: Seen::Unknown,
        admin: Seen::Known(body.get("admin").is_some_and(truthy)),
        deactivated: Seen::Known(body.get("deactivated").is_some_and(truthy)),
        user_type,
        displayname: body
            .get("displayname")
            .and_then(Value::as_str)
            .map(str::to_string),
        emails: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_parse_from_synapse_json() {
        let account = parse_account(
            &json!({"name": "@a:x", "admin": 1, "deactivated": false, "user_type": "bot", "displayname": "A"}),
            "test",
        )
        .unwrap();
        assert_eq!(
            account,
            Account {
                restrictions: Restrictions::default(),
                ratelimit: Seen::Unknown,
                admin: Seen::Known(true),
                deactivated: Seen::Known(false),
                user_type: UserType::Bot,
                displayname: Some("A".into()),
                emails: vec![],
            }
        );
        assert!(parse_account(&json!({"user_type": "custom"}), "test").is_err());
    }

    #[test]
    fn restrictions_parse_and_what_the_list_lacks_stays_unknown() {
        let listed = parse_account(&json!({"locked": true, "shadow_banned": 0}), "test").unwrap();
        assert_eq!(
            listed.restrictions,
            Restrictions {
                locked: Seen::Known(true),
                suspended: Seen::Unknown,
                shadow_banned: Seen::Known(false),
            }
        );
        let read = parse_account(&json!({"suspended": true}), "test").unwrap();
        assert_eq!(read.restrictions.suspended, Seen::Known(true));
    }
}
