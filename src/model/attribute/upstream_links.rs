//! `upstream_links`: the user's links to upstream identity providers, exactly.

use super::Attribute;
use crate::model::{Account, Change, DesiredUser, Fact};

pub struct UpstreamLinks;

impl Attribute for UpstreamLinks {
    /// The links to add, then those to remove, when the links are managed
    /// (so that a refused link leaves the user the ones it logs in with);
    /// the backend shows a declared link's provider as declared. A new
    /// account's links are made with it (the plan, which creates it without
    /// a password when they are declared).
    fn compare(&self, desired: &DesiredUser, account: &Account) -> Result<Vec<Change>, Fact> {
        let Some(declared) = &desired.login.upstream_links else {
            return Ok(Vec::new());
        };
        let removed = account
            .upstream_links
            .iter()
            .filter(|link| !declared.contains(link))
            .map(|link| Change::RemoveUpstreamLink(link.clone()));
        let added = declared
            .iter()
            .filter(|link| !account.upstream_links.contains(link))
            .map(|link| Change::AddUpstreamLink(link.clone()));
        Ok(added.chain(removed).collect())
    }

    fn created(&self, _: &DesiredUser, _: Option<&str>, account: &mut Account) {
        account.upstream_links = Vec::new();
    }

    fn apply(&self, _: &DesiredUser, change: &Change, account: &mut Account) {
        match change {
            Change::AddUpstreamLink(link) => account.upstream_links.push(link.clone()),
            Change::RemoveUpstreamLink(link) => account.upstream_links.retain(|l| l != link),
            _ => {}
        }
    }

    fn describe(&self, change: &Change) -> Option<&'static str> {
        match change {
            Change::AddUpstreamLink(_) => Some("upstream link added"),
            Change::RemoveUpstreamLink(_) => Some("upstream link removed"),
            _ => None,
        }
    }
}
