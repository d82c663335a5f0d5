//! Bot access tokens (`access_token_file`): a personal access token of the
//! user, from one of MAS's personal sessions (admin API, MAS 1.5 and later).
//!
//! The file holds the token alone, as a bot reads it. Beside it,
//! `<file>.session` holds the ID of the personal session that issued it, so
//! that a run asks MAS whether that session still works (active, not
//! expired, acting as this user) without reading the token or sending it
//! anywhere. Both are written as the service account's token is
//! ([`TokenCache`]): mode 0600, never through a link, replaced in one step.
//! A revoked session is replaced by a new one; an expired one is regenerated.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{path_segment, unexpected, Mas, MasError};
use crate::backend::token_cache::{TokenCache, TokenCacheError, Whose};
use crate::backend::{DeclarationError, ServerError};
use crate::model::DesiredUser;
use crate::secret::{hold, Secret};

/// What a bot needs: the whole Matrix client API (MSC2967's scope, as MAS
/// 1.22's own examples give it).
const SCOPE: &str = "urn:matrix:org.matrix.msc2967.client:api:*";
/// How the session is named in MAS, so that an admin sees where it came from.
const HUMAN_NAME: &str = "matrix_user access_token_file";

/// A personal session as MAS describes it, for what the module decides.
struct PersonalSession {
    actor: String,
    revoked: bool,
    /// When its current token expires (Unix seconds), if ever.
    expires_at: Option<i64>,
}

impl Mas {
    /// Whether `desired.access_token_file` holds a token of a personal
    /// session that acts as the MAS user `actor` and still works. Reads, never writes.
    pub(super) async fn personal_token_valid(
        &self,
        actor: &str,
        desired: &DesiredUser,
    ) -> Result<bool, ServerError> {
        let Some(file) = &desired.access_token_file else {
            return Ok(true);
        };
        let Some(id) = read_if_present(&session_file(file))? else {
            return Ok(false);
        };
        if read_if_present(file)?.is_none() {
            return Ok(false);
        }
        Ok(match self.personal_session(id.expose()).await? {
            Some(session) => session.actor == actor && !session.revoked && !session.expired(),
            None => false,
        })
    }

    /// Gets a new token for the MAS user `actor` (regenerating the recorded
    /// session when it only expired, else creating one) and writes it.
    pub(super) async fn write_personal_token(
        &self,
        actor: &str,
        desired: &DesiredUser,
    ) -> Result<(), ServerError> {
        let Some(file) = &desired.access_token_file else {
            return Ok(());
        };
        let what = "writing access_token_file";
        // Both files can be written before a token exists.
        let prepare = |path: &Path| TokenCache::at(path).prepare_store().map_err(file_error);
        let (token_pending, session_pending) = (prepare(file)?, prepare(&session_file(file))?);
        let recorded = match read_if_present(&session_file(file))? {
            Some(id) => match self.personal_session(id.expose()).await? {
                Some(session) if session.actor == actor && !session.revoked => Some(id),
                _ => None,
            },
            None => None,
        };
        let reply = match &recorded {
            Some(id) => {
                let path = format!(
                    "/personal-sessions/{}/regenerate",
                    path_segment(id.expose())
                );
                self.admin(Method::POST, &path, Some(&json!({}))).await?
            }
            None => {
                let body =
                    json!({"actor_user_id": actor, "human_name": HUMAN_NAME, "scope": SCOPE});
                self.admin(Method::POST, "/personal-sessions", Some(&body))
                    .await?
            }
        };
        if reply.status != StatusCode::CREATED {
            return Err(ServerError::refused(
                "getting a personal access token",
                &reply,
            ));
        }
        let token = reply
            .body
            .pointer("/data/attributes/access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected(what, "no data.attributes.access_token"))?;
        hold(token);
        let id = reply
            .body
            .pointer("/data/id")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected(what, "no data.id"))?;
        token_pending
            .commit(&Secret::new(token))
            .map_err(file_error)?;
        session_pending.commit(&Secret::new(id)).map_err(file_error)
    }

    /// The personal session `id`, `None` when MAS has none such.
    async fn personal_session(&self, id: &str) -> Result<Option<PersonalSession>, ServerError> {
        let what = "reading the personal session of access_token_file";
        // A hand-edited file must not become a request the API refuses.
        if !is_ulid(id) {
            return Ok(None);
        }
        let path = format!("/personal-sessions/{}", path_segment(id));
        let reply = self.admin(Method::GET, &path, None).await?;
        let attributes = match reply.status {
            StatusCode::OK => reply
                .body
                .pointer("/data/attributes")
                .ok_or_else(|| unexpected(what, "no data.attributes"))?,
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(ServerError::refused(what, &reply)),
        };
        let text = |name: &str| attributes.get(name).and_then(Value::as_str);
        Ok(Some(PersonalSession {
            actor: text("actor_user_id")
                .ok_or_else(|| unexpected(what, "no actor_user_id"))?
                .to_string(),
            revoked: text("revoked_at").is_some(),
            expires_at: match text("expires_at") {
                Some(at) => Some(
                    unix_seconds(at)
                        .ok_or_else(|| unexpected(what, "expires_at is not RFC 3339"))?,
                ),
                None => None,
            },
        }))
    }
}

impl PersonalSession {
    fn expired(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// `<file>.session`, where the ID of the session behind `file`'s token is kept.
fn session_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".session");
    PathBuf::from(name)
}

/// The file's content, `None` when it does not exist: a read never creates
/// the folder, so that check mode writes nothing.
fn read_if_present(path: &Path) -> Result<Option<Secret>, ServerError> {
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => TokenCache::at(path).load().map_err(file_error),
    }
}

/// Refuses, changing nothing, a declared `access_token_file` (or the
/// `.session` file beside it) that writing the token would refuse later:
/// found before anything is sent, in check mode too, so that no user is
/// created and then left without its token.
pub(super) fn refuse_unusable_token_file(user: &DesiredUser) -> Result<(), DeclarationError> {
    let Some(file) = &user.access_token_file else {
        return Ok(());
    };
    for path in [file.clone(), session_file(file)] {
        if let Err(error) = TokenCache::at(&path).refuse_unsafe() {
            let field = user.field_name("access_token_file");
            return Err(DeclarationError::refused(field, described(&error)));
        }
    }
    Ok(())
}

/// [`TokenCache`]'s refusals, told about `access_token_file` rather than the
/// service account's token cache.
fn file_error(error: TokenCacheError) -> ServerError {
    ServerError::Mas(MasError::AccessTokenFile(described(&error)))
}

/// What is wrong with `access_token_file`, as [`TokenCache`] found it.
fn described(TokenCacheError { path, kind }: &TokenCacheError) -> String {
    kind.describe(path, &ACCESS_TOKEN_FILE)
}

/// A bot's token in `access_token_file`.
const ACCESS_TOKEN_FILE: Whose = Whose {
    token: "the token",
    choose: "choose",
};

fn is_ulid(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// Seconds since 1970 of an RFC 3339 time in UTC (`2022-01-16T13:00:00Z`,
/// with or without a fraction), as MAS writes them.
fn unix_seconds(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    if !text.ends_with('Z') || text.get(10..11) != Some("T") {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_as_mas_writes_them_count_from_1970() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2022-01-16T13:00:00Z"), Some(1_642_338_000));
        assert_eq!(
            unix_seconds("2024-02-29T23:59:59.123Z"),
            Some(1_709_251_199)
        );
        assert_eq!(unix_seconds("2022-01-16 13:00:00"), None);
    }

    #[test]
    fn the_session_id_sits_beside_the_token_file() {
        assert_eq!(
            session_file(Path::new("/etc/bot/token")),
            Path::new("/etc/bot/token.session")
        );
        assert!(is_ulid("01FSHN9AG0AJ6AC5HQ9X6H4RP4") && !is_ulid("../x"));
    }
}
