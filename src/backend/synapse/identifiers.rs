//! A user's e-mail addresses and SSO identities (Synapse's threepids and
//! external IDs): replacing them in the user's record, and refusing those
//! another account holds, which Synapse would move or refuse.

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::email;
use super::users::user_path;
use super::Synapse;
use crate::backend::{ServerError, UserErrorKind};
use crate::http::{path_segment, server_word};
use crate::matrix_id::UserId;
use crate::model::{Change, DesiredUser, ExternalId};

pub(super) fn threepids(body: &Value) -> impl Iterator<Item = &Value> {
    body.get("threepids")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The user's e-mail addresses among the `threepids` of its record.
pub(super) fn email_threepids(body: &Value, what: &str) -> Result<Vec<String>, ServerError> {
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
pub(super) fn as_synapse_folds(address: &str) -> String {
    email::canonical(address).unwrap_or_else(|_| address.to_string())
}

/// The user's SSO identities, from the `external_ids` of its record.
pub(super) fn parse_external_ids(body: &Value, what: &str) -> Result<Vec<ExternalId>, ServerError> {
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

impl Synapse {
    /// Puts the declared `threepids` and `external_ids` into the user's PUT
    /// `body`; Synapse replaces each whole set with it (`on_PUT` in
    /// synapse/rest/admin/users.py). First refuses an address or identity
    /// another account holds: Synapse would move the address to this user
    /// silently (an upsert on medium and address) and answer a bare 409 for
    /// the identity.
    pub(super) async fn replace_identifiers(
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
            self.refuse_taken(user, emails, &current).await?;
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
            self.refuse_taken(user, ids, &current).await?;
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

    /// Refuses each of the `wanted` addresses or identities that `user`
    /// lacks (has not among `current`) and another account has (see
    /// [`Synapse::replace_identifiers`]).
    pub(super) async fn refuse_taken<I: Identifier>(
        &self,
        user: &UserId,
        wanted: &[I],
        current: &[I],
    ) -> Result<(), ServerError> {
        let lacked = wanted.iter().filter(|i| !current.contains(i));
        for (path, what) in lacked.map(I::lookup) {
            let reply = self.admin_get(&path, &[]).await?;
            let holder = reply.body.get("user_id").and_then(Value::as_str);
            match (reply.status, holder) {
                (StatusCode::NOT_FOUND, _) => {}
                (StatusCode::OK, Some(holder)) if holder == user.to_string() => {}
                (StatusCode::OK, Some(holder)) => {
                    let holder = server_word(holder);
                    let taken = UserErrorKind::TakenByOther { what, holder };
                    return Err(ServerError::user(user, taken));
                }
                _ => return Err(ServerError::refused(format!("looking up {what}"), &reply)),
            }
        }
        Ok(())
    }
}

/// What one account at most may hold: an e-mail address or an SSO identity.
pub(super) trait Identifier: PartialEq {
    /// The admin API path that finds its holder, and what it is, for messages.
    fn lookup(&self) -> (String, String);
}

/// An e-mail address.
impl Identifier for String {
    fn lookup(&self) -> (String, String) {
        let path = format!(
            "/_synapse/admin/v1/threepid/email/users/{}",
            path_segment(self)
        );
        (path, format!("the e-mail address {self}"))
    }
}

impl Identifier for ExternalId {
    fn lookup(&self) -> (String, String) {
        let path = format!(
            "/_synapse/admin/v1/auth_providers/{}/users/{}",
            path_segment(&self.auth_provider),
            path_segment(&self.external_id)
        );
        (path, format!("the SSO identity {self}"))
    }
}
