//! Synapse's user records: creating a user through the admin API, its
//! restrictions (lock, suspension, shadow ban) and rate-limit override, and
//! reading a user's record into an [`Account`].

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{Synapse, SynapseError, SynapseErrorKind};
use crate::backend::{AccountServer, ServerError, UserErrorKind};
use crate::http::path_segment;
use crate::matrix_id::UserId;
use crate::model::{Account, DesiredUser, Ratelimit, Restriction, Restrictions, Seen, UserType};
use crate::secret::Secret;

pub(super) fn user_path(user_id: &str) -> String {
    format!("/_synapse/admin/v2/users/{}", path_segment(user_id))
}

/// The admin API's `endpoint` about `user`:
/// `/_synapse/admin/v1/users/<user>/<endpoint>`.
pub(super) fn user_endpoint(user: &UserId, endpoint: &str) -> String {
    let id = path_segment(&user.to_string());
    format!("/_synapse/admin/v1/users/{id}/{endpoint}")
}

pub(super) fn ratelimit_path(user: &UserId) -> String {
    user_endpoint(user, "override_ratelimit")
}

pub(super) fn user_type_value(user_type: &UserType) -> Value {
    match user_type {
        UserType::Regular => Value::Null,
        other => json!(other.as_str()),
    }
}

/// `error`, named as a refusal of the declared user type when it is one:
/// Synapse answers 400 "Invalid user type" to a type that is neither built
/// in nor in its `user_types.extra_user_types`, before it writes anything
/// (synapse/rest/admin/users.py, UserRestServletV2 and UserRegisterServlet).
pub(super) fn name_refused_user_type(error: ServerError, desired: &DesiredUser) -> ServerError {
    match (&error, &desired.user_type) {
        (
            ServerError::Refused {
                status: 400,
                explanation,
                ..
            },
            Some(user_type),
        ) if explanation.contains("Invalid user type") => {
            let kind = SynapseErrorKind::UnknownUserType {
                user_type: user_type.as_str().to_string(),
                cause: Box::new(error),
            };
            SynapseError::new(desired.field_name("user_type"), kind).into()
        }
        _ => error,
    }
}

/// Synapse reports flags as booleans, or as 0/1 on older versions.
pub(super) fn truthy(value: &Value) -> bool {
    value.as_bool().unwrap_or_else(|| value.as_u64() == Some(1))
}

pub(super) fn parse_account(body: &Value) -> Account {
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
        admin: Seen::Known(body.get("admin").is_some_and(truthy)),
        deactivated: Seen::Known(body.get("deactivated").is_some_and(truthy)),
        user_type,
        displayname: Seen::Known(
            body.get("displayname")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        // Not in the user's record: account() reads them apart when declared.
        ..Account::unseen()
    }
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
    pub(super) async fn create_by_admin_api(
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
                    return Err(ServerError::user(
                        user,
                        UserErrorKind::CreationUnconfirmed {
                            cause: Box::new(lost),
                        },
                    ));
                }
                self.admin_send(Method::PUT, &path, &first).await?
            }
            other => other?,
        };
        match reply.status {
            StatusCode::CREATED => {}
            StatusCode::OK => return Err(ServerError::user(user, UserErrorKind::CreatedMeanwhile)),
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
        Err(ServerError::user(
            user,
            UserErrorKind::CreatedWithoutPassword {
                cause: Box::new(completed),
                state,
            },
        ))
    }

    /// Applies or lifts one restriction through its own endpoint.
    pub(super) async fn restrict(
        &self,
        user: &UserId,
        restriction: Restriction,
        value: bool,
    ) -> Result<(), ServerError> {
        let id = path_segment(&user.to_string());
        let shadow_ban = user_endpoint(user, "shadow_ban");
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
    pub(super) async fn ratelimit(&self, user: &UserId) -> Result<Option<Ratelimit>, ServerError> {
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
    pub(super) async fn set_ratelimit(
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
