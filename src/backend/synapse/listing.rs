//! Reading many users at once from the admin API's user list: the bulk read
//! of declared users (completed from `synapse_database` or one read each
//! where the list does not show a field) and the list of local users for
//! `undeclared`.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::Value;

use super::identifiers::as_synapse_folds;
use super::users::parse_account;
use super::Synapse;
use crate::backend::ServerError;
use crate::http::server_word;
use crate::matrix_id::UserId;
use crate::model::same_set;
use crate::model::{Account, DesiredUser, Seen};

/// Synapse sorts its whole user list for every page (about 0.3 s at
/// 100,000 users), so pages of 10,000 read 100,000 users ten times faster
/// than pages of 1,000; each page is about 2.6 MB of JSON.
pub(super) const LIST_PAGE_SIZE: u64 = 10_000;

/// One page of the user list.
pub(super) struct ListPage {
    users: Vec<Value>,
    total: u64,
    /// Where the next page starts; `None` on the last.
    next: Option<u64>,
}

impl Synapse {
    /// Adds to the listed accounts in `found` what the list does not show
    /// but their declarations need: the declared rooms each has joined
    /// (each room's members read once), and, from `synapse_database`, the
    /// rate-limit override, SSO identities and e-mail addresses, where the
    /// database shows them as declared. Whatever stays unknown (a fact
    /// that differs, a room that cannot be joined) sends the user to a
    /// read of its own through the admin API, which decides the change and
    /// checks that no other account holds a declared address or identity.
    pub(super) async fn complete_listed(
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
    pub(super) async fn list_page(
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

    /// The accounts of the declared `users`, read from the user list when
    /// it holds at most `most` accounts
    /// ([`crate::backend::AccountServer::accounts_from_list`]).
    pub(super) async fn list_declared(
        &self,
        users: &[UserId],
        declared: &[DesiredUser],
        most: u64,
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
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

    /// Every local account for `undeclared`. Guests are left out: Synapse makes them on demand for guest access
    /// (numeric localparts, no password), so nobody can declare them. So are
    /// deactivated accounts (the list's default), which are never touched.
    pub(super) async fn list_local(&self) -> Result<Vec<(UserId, Account)>, ServerError> {
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
}
