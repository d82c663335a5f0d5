//! A user's upstream OAuth links (the identities it signs in with at an
//! upstream provider): resolving the declared providers, reading, adding
//! and removing links, and refusing one another user holds.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::admin_api::unexpected;
use super::{Mas, MasError, MasFieldProblem, MasLink, MasUser};
use crate::backend::ServerError;
use crate::http::{path_segment, server_word};
use crate::model::{DesiredUser, UpstreamLink};

impl Mas {
    /// The ID of every provider the users' links name, by ID or by the
    /// human name MAS lists; a provider MAS does not know is refused by field.
    pub(super) async fn resolve_providers(&self, users: &[DesiredUser]) -> Result<(), ServerError> {
        let what = "listing the upstream OAuth 2.0 providers";
        let listed = self
            .list_all("/upstream-oauth-providers", None, what)
            .await?;
        let providers: Vec<(&str, &str)> = listed
            .iter()
            .filter_map(|p| {
                let name = p.pointer("/attributes/human_name").and_then(Value::as_str);
                Some((p.get("id")?.as_str()?, name.unwrap_or_default()))
            })
            .collect();
        let mut resolved = self.providers.borrow_mut();
        for user in users {
            let links = user.login.upstream_links.iter().flatten();
            for (index, link) in links.enumerate() {
                let by_id = providers.iter().find(|(id, _)| *id == link.provider);
                let by_name: Vec<_> = providers
                    .iter()
                    .filter(|(_, name)| *name == link.provider)
                    .collect();
                let id = match (by_id, by_name.as_slice()) {
                    (Some((id, _)), _) | (None, [(id, _)]) => id,
                    _ => {
                        return Err(ServerError::Mas(MasError::Field {
                            field: user.field_name(&format!("upstream_links[{index}].provider")),
                            kind: MasFieldProblem::UnknownProvider {
                                provider: server_word(&link.provider),
                                known: providers
                                    .iter()
                                    .map(|(id, name)| format!("{} ({id})", server_word(name)))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            },
                        }))
                    }
                };
                resolved.insert(link.provider.clone(), id.to_string());
            }
        }
        Ok(())
    }

    /// A declared provider's ID; a provider shown by its ID is its own.
    pub(super) fn provider_id(&self, provider: &str) -> String {
        let resolved = self.providers.borrow();
        resolved
            .get(provider)
            .cloned()
            .unwrap_or(provider.to_string())
    }

    /// A user's upstream links, read alone (see [`Mas::parse_links`]).
    pub(super) async fn upstream_links(
        &self,
        user_id: &str,
        desired: &DesiredUser,
    ) -> Result<Vec<MasLink>, ServerError> {
        let what = "listing the user's upstream links";
        let items = self
            .list_all("/upstream-oauth-links", Some(user_id), what)
            .await?;
        self.parse_links(&items.iter().collect::<Vec<_>>(), desired, what)
    }

    /// Upstream link items of MAS's list, each provider shown as `desired`
    /// declares it when it does, else by its ID.
    pub(super) fn parse_links(
        &self,
        items: &[&Value],
        desired: &DesiredUser,
        what: &str,
    ) -> Result<Vec<MasLink>, ServerError> {
        let declared = desired.login.upstream_links.iter().flatten();
        items
            .iter()
            .map(|item| {
                let field = |name: &str| {
                    item.pointer(name)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| unexpected(what, &format!("an item without {name}")))
                };
                let (id, provider_id) = (field("/id")?, field("/attributes/provider_id")?);
                let subject = field("/attributes/subject")?;
                let provider = declared
                    .clone()
                    .find(|l| self.provider_id(&l.provider) == provider_id)
                    .map_or(provider_id, |l| l.provider.clone());
                Ok(MasLink {
                    id,
                    shown: UpstreamLink { provider, subject },
                })
            })
            .collect()
    }

    /// Fails when a link `desired` declares, which `found` (the user, when
    /// it exists) lacks, has a subject MAS links to another user: MAS would
    /// refuse to add it (409), and a run that removed the user's other links
    /// first would leave it unable to log in. Asked at the read, so that
    /// check mode predicts the failure and nothing of the user is written.
    pub(super) async fn refuse_taken_links(
        &self,
        desired: &DesiredUser,
        found: Option<&MasUser>,
    ) -> Result<(), ServerError> {
        let held =
            |link: &UpstreamLink| found.is_some_and(|f| f.links.iter().any(|l| l.shown == *link));
        let lacked = desired
            .login
            .upstream_links
            .iter()
            .flatten()
            .filter(|l| !held(l));
        for link in lacked {
            let what = format!(
                "looking up the subject {:?} of {:?}",
                link.subject, link.provider
            );
            let provider = self.provider_id(&link.provider);
            let query = [
                ("filter[provider]", provider.as_str()),
                ("filter[subject]", link.subject.as_str()),
                ("page[first]", "1"),
            ];
            let listed = self.listed("/upstream-oauth-links", &query, &what).await?;
            let owners = listed
                .iter()
                .filter_map(|item| item.pointer("/attributes/user_id").and_then(Value::as_str));
            // A link of no user yet is associated to this one (MAS's 200).
            for owner in owners {
                if found.is_none_or(|f| f.id != owner) {
                    return Err(ServerError::Mas(MasError::LinkTaken {
                        provider: link.provider.clone(),
                        subject: link.subject.clone(),
                    }));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn add_link(
        &self,
        user_id: &str,
        link: &UpstreamLink,
    ) -> Result<(), ServerError> {
        let body = json!({"user_id": user_id, "provider_id": self.provider_id(&link.provider),
                          "subject": link.subject});
        let reply = self
            .admin(Method::POST, "/upstream-oauth-links", Some(&body))
            .await?;
        match reply.status {
            StatusCode::CREATED | StatusCode::OK => Ok(()),
            StatusCode::CONFLICT => Err(ServerError::Mas(MasError::LinkTaken {
                provider: link.provider.clone(),
                subject: link.subject.clone(),
            })),
            _ => Err(ServerError::refused("adding the upstream link", &reply)),
        }
    }

    pub(super) async fn remove_link(
        &self,
        found: &MasUser,
        link: &UpstreamLink,
    ) -> Result<(), ServerError> {
        let what = "removing the upstream link";
        let id = found
            .links
            .iter()
            .find(|l| l.shown == *link)
            .map(|l| l.id.clone())
            .ok_or_else(|| unexpected(what, "the link is no longer listed"))?;
        let path = format!("/upstream-oauth-links/{}", path_segment(&id));
        let reply = self.admin(Method::DELETE, &path, None).await?;
        match reply.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(ServerError::refused(what, &reply)),
        }
    }
}
