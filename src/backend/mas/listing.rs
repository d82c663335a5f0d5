//! Reading many MAS users at once: the admin API's user list, e-mail list
//! and (when a user declares them) upstream link list, a page of
//! [`super::PAGE_SIZE`] at a time, instead of two or three requests per
//! user, when listing pays
//! ([`crate::backend::AccountServer::accounts`]).
//! When a declared address belongs to another user, every user is read
//! alone, so that the one declaring it fails with its own message; so too
//! when MAS's locale decides whether a listed address is a declared one
//! (see [`super::emails::loose_key`]), so that MAS's lookup decides.
//! `undeclared` reads the whole user list the same way.
//! A declared display name is read from the homeserver, one request per
//! user that declares one (see [`super::homeserver`]).

use std::collections::HashMap;

use futures_util::{stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use super::admin_api::unexpected;
use super::emails::{address_key, declared_emails, loose_key, parse_email, show_as_declared};
use super::users::{mas_account, parse_user};
use super::{Mas, MasUser, PAGE_SIZE};
use crate::backend::ServerError;
use crate::matrix_id::UserId;
use crate::model::{Account, DesiredUser, Seen};

impl Mas {
    /// The accounts of `users` (declared as `declared`, in the same order)
    /// from MAS's lists, paging through at most `most` items of each
    /// ([`crate::backend::AccountServer::accounts_from_list`]).
    pub(super) async fn list_accounts(
        &self,
        users: &[UserId],
        declared: &[DesiredUser],
        most: u64,
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        let Some(listed) = self
            .list_pages("/users", &[], "listing users", most)
            .await?
        else {
            return Ok(None);
        };
        let wanted: HashMap<&str, (&UserId, &DesiredUser)> = users
            .iter()
            .zip(declared)
            .map(|(user, desired)| (user.localpart(), (user, desired)))
            .collect();
        let mut found: HashMap<String, (&UserId, &DesiredUser, MasUser)> = HashMap::new();
        for item in &listed {
            let username = item.pointer("/attributes/username").and_then(Value::as_str);
            if let Some(&(user, desired)) = username.and_then(|name| wanted.get(name)) {
                // parse_user reads a SingleResponse; a list item is its data.
                let user_body = serde_json::json!({ "data": item });
                let mas_user = parse_user(&user_body, "listing users")?;
                found.insert(mas_user.id.clone(), (user, desired, mas_user));
            }
        }
        let what = "listing e-mail addresses";
        let Some(emails) = self.list_pages("/user-emails", &[], what, most).await? else {
            return Ok(None);
        };
        let mut holders: HashMap<String, String> = HashMap::new();
        let mut by_loose_key: HashMap<String, Vec<String>> = HashMap::new();
        for item in &emails {
            let (owner, email) = parse_email(item, what)?;
            holders.insert(address_key(&email.address), owner.clone());
            by_loose_key
                .entry(loose_key(&email.address))
                .or_default()
                .push(address_key(&email.address));
            if let Some((_, _, mas_user)) = found.get_mut(&owner) {
                mas_user.emails.push(email);
            }
        }
        let ids: HashMap<&str, &str> = listed
            .iter()
            .filter_map(|item| {
                let username = item.pointer("/attributes/username")?.as_str()?;
                Some((username, item.get("id")?.as_str()?))
            })
            .collect();
        if taken_by_another(users, declared, &ids, &holders) || in_doubt(declared, &by_loose_key) {
            // Read alone, each such user fails with its own message, and
            // MAS's lookup decides each address in doubt.
            return Ok(None);
        }
        if declared.iter().any(|d| d.login.upstream_links.is_some()) {
            let what = "listing upstream links";
            let Some(links) = self
                .list_pages("/upstream-oauth-links", &[], what, most)
                .await?
            else {
                return Ok(None);
            };
            if self.link_taken_by_another(users, declared, &ids, &links) {
                // Read alone, each such user fails with its own message.
                return Ok(None);
            }
            let mut by_user: HashMap<&str, Vec<&Value>> = HashMap::new();
            for item in &links {
                // A link not yet tied to a user has a null user_id.
                if let Some(owner) = item.pointer("/attributes/user_id").and_then(Value::as_str) {
                    by_user.entry(owner).or_default().push(item);
                }
            }
            for (id, (_, desired, mas_user)) in found.iter_mut() {
                if desired.login.upstream_links.is_some() {
                    let items = by_user.remove(id.as_str()).unwrap_or_default();
                    mas_user.links = self.parse_links(&items, desired, what)?;
                }
            }
        }
        // What the homeserver shows of declared display names, a request
        // each, `concurrency` at a time.
        let found: Vec<_> = found.values().collect();
        let displaynames: Vec<_> = stream::iter(&found)
            .map(|(user, desired, _)| self.homeserver_displayname(user, desired))
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let mut accounts = HashMap::new();
        for ((user, desired, mas_user), displayname) in found.into_iter().zip(displaynames) {
            let mut mas_user = mas_user.clone();
            show_as_declared(&mut mas_user.emails, desired, &[]);
            let emails = Seen::Known(mas_user.addresses());
            accounts.insert((*user).clone(), mas_account(&mas_user, emails, displayname));
            self.known.borrow_mut().insert((*user).clone(), mas_user);
        }
        Ok(Some(accounts))
    }

    /// Whether a link a declared user declares has a subject MAS links to
    /// another user (`ids`: the MAS ID of each listed user by username;
    /// `links`: every link MAS listed).
    fn link_taken_by_another(
        &self,
        users: &[UserId],
        declared: &[DesiredUser],
        ids: &HashMap<&str, &str>,
        links: &[Value],
    ) -> bool {
        fn attribute<'a>(item: &'a Value, name: &str) -> Option<&'a str> {
            item.pointer(name)?.as_str()
        }
        let owners: HashMap<(&str, &str), &str> = links
            .iter()
            .filter_map(|item| {
                let provider = attribute(item, "/attributes/provider_id")?;
                let subject = attribute(item, "/attributes/subject")?;
                Some(((provider, subject), attribute(item, "/attributes/user_id")?))
            })
            .collect();
        users.iter().zip(declared).any(|(user, desired)| {
            desired.login.upstream_links.iter().flatten().any(|link| {
                let provider = self.provider_id(&link.provider);
                owners
                    .get(&(provider.as_str(), link.subject.as_str()))
                    .is_some_and(|owner| ids.get(user.localpart()) != Some(owner))
            })
        })
    }

    /// Every MAS user that `undeclared` may touch, for
    /// [`crate::backend::AccountServer::local_accounts`]. Legacy guests
    /// (Synapse's guests, carried over by syn2mas) are left out, as on
    /// Synapse; so are
    /// deactivated users, which are never touched: MAS's `filter[status]`
    /// cannot ask for them all (`active` leaves out the locked ones, which
    /// `deactivate` takes, and `locked` includes the deactivated), so they are
    /// dropped here. The module acts as an OAuth2 client, which is no user,
    /// so there is no account of its own to leave out.
    pub(super) async fn list_local_accounts(&self) -> Result<Vec<(UserId, Account)>, ServerError> {
        let what = "listing users";
        let filters = [("filter[legacy-guest]", "false")];
        let listed = self.list_all_filtered("/users", &filters, what).await?;
        let mut accounts = Vec::new();
        for item in &listed {
            let username = item
                .pointer("/attributes/username")
                .and_then(Value::as_str)
                .ok_or_else(|| unexpected(what, "an item without attributes.username"))?;
            let user = UserId::listed(
                &format!("@{username}:{}", self.server_name),
                &self.server_name,
            )
            .ok_or_else(|| unexpected(what, "an item with an empty username"))?;
            let mas_user = parse_user(&serde_json::json!({ "data": item }), what)?;
            if mas_user.deactivated {
                continue;
            }
            // Neither e-mail addresses nor display names are declared for them.
            let account = mas_account(&mas_user, Seen::Unknown, Seen::Unknown);
            self.known.borrow_mut().insert(user.clone(), mas_user);
            accounts.push((user, account));
        }
        Ok(accounts)
    }
}

/// Whether an address a declared user declares belongs to another user
/// (`ids`: the MAS ID of each listed user by username; `holders`: each
/// listed address as MAS compares it, and the ID of its user).
fn taken_by_another(
    users: &[UserId],
    declared: &[DesiredUser],
    ids: &HashMap<&str, &str>,
    holders: &HashMap<String, String>,
) -> bool {
    users.iter().zip(declared).any(|(user, desired)| {
        declared_emails(desired).any(|email| {
            holders
                .get(&address_key(email))
                .is_some_and(|holder| ids.get(user.localpart()) != Some(&holder.as_str()))
        })
    })
}

/// Whether a declared address is one a listed address may be, by MAS's
/// locale (`by_loose_key`: the listed addresses' [`address_key`]s by their
/// [`loose_key`]), but is not by [`address_key`].
fn in_doubt(declared: &[DesiredUser], by_loose_key: &HashMap<String, Vec<String>>) -> bool {
    declared.iter().flat_map(declared_emails).any(|email| {
        by_loose_key
            .get(&loose_key(email))
            .is_some_and(|keys| keys.iter().any(|key| *key != address_key(email)))
    })
}

impl Mas {
    /// Every item of a list, of one user's when `user_id` is given.
    pub(super) async fn list_all(
        &self,
        path: &str,
        user_id: Option<&str>,
        what: &str,
    ) -> Result<Vec<Value>, ServerError> {
        let filters: Vec<_> = user_id.map(|id| ("filter[user]", id)).into_iter().collect();
        self.list_all_filtered(path, &filters, what).await
    }

    /// Every item of a list that passes `filters`.
    async fn list_all_filtered(
        &self,
        path: &str,
        filters: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<Value>, ServerError> {
        // No list counts more than u64::MAX items: this always has them all.
        let items = self.list_pages(path, filters, what, u64::MAX).await?;
        Ok(items.unwrap_or_default())
    }

    /// Every item of a list that passes `filters`, a page at a time; `None`
    /// when MAS counts more than `most` items.
    pub(super) async fn list_pages(
        &self,
        path: &str,
        filters: &[(&str, &str)],
        what: &str,
        most: u64,
    ) -> Result<Option<Vec<Value>>, ServerError> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page_size = PAGE_SIZE.to_string();
            let mut query = vec![("page[first]", page_size.as_str())];
            query.extend_from_slice(filters);
            if let Some(after) = &after {
                query.push(("page[after]", after));
            }
            let reply = self.admin_list(path, &query).await?;
            if reply.status != StatusCode::OK {
                return Err(ServerError::refused(what, &reply));
            }
            let count = reply.body.pointer("/meta/count").and_then(Value::as_u64);
            if after.is_none() && count.is_some_and(|count| count > most) {
                return Ok(None);
            }
            let page = reply
                .body
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| unexpected(what, "no data array"))?;
            items.extend(page.iter().cloned());
            // Pages are asked for by ID rather than by following links.next,
            // whose path lacks any prefix MAS is mounted under.
            let last = page.last().and_then(|item| item.get("id")?.as_str());
            match (reply.body.pointer("/links/next"), last) {
                // A cursor that does not move would page forever.
                (Some(_), Some(last)) if after.as_deref() != Some(last) => {
                    after = Some(last.to_string())
                }
                _ => return Ok(Some(items)),
            }
        }
    }
}
