//! Synapse's database (`synapse_database`), read only, to confirm in bulk
//! what its user list does not show: rate-limit overrides, SSO identities
//! and e-mail addresses. It never decides a change: a user whose rows are
//! as declared needs no read of its own; any other is read alone through
//! the admin API, as without the database.
//!
//! The tables and columns are those Synapse's admin API reads
//! (synapse/storage/databases/main/room.py `get_ratelimit_for_user`,
//! registration.py `get_external_ids_by_user` and `user_get_threepids`).
//! Every statement binds its values; the location is a [`Secret`] and no
//! message repeats it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::SynapseError;
use crate::backend::sql::{Access, Cell, Connection, Schema};
use crate::backend::ServerError;
use crate::model::{ExternalId, Ratelimit};
use crate::secret::Secret;

/// Read only; the tables read, which a database must have to be Synapse's.
const SCHEMA: Schema = Schema {
    access: Access::ReadOnly,
    tables: &["ratelimit_override", "user_external_ids", "user_threepids"],
    database: "Synapse's database",
};
const SELECT_RATELIMITS: &str =
    "SELECT user_id, messages_per_second, burst_count FROM ratelimit_override WHERE";
const SELECT_EXTERNAL_IDS: &str =
    "SELECT user_id, auth_provider, external_id FROM user_external_ids WHERE";
const SELECT_EMAILS: &str =
    "SELECT user_id, address FROM user_threepids WHERE medium = 'email' AND";

/// Synapse's database, opened read-only.
pub struct Database(Connection);

impl Database {
    /// Connects to `location` read-only (a `postgres://` or `postgresql://`
    /// URL, or the path of `homeserver.db`) and checks that it has the
    /// tables of Synapse's that are read.
    pub async fn open(location: &Secret, timeout: Duration) -> Result<Database, ServerError> {
        let connection = Connection::open_holding(location, timeout, &SCHEMA).await;
        connection.map(Database).map_err(database_error)
    }

    /// The rate-limit override of each of `users` as the admin API shows
    /// it: `None` when it has none, zeros for a stored NULL (Synapse's
    /// `RateLimitRestServlet`). A user whose row is not such an override is
    /// left out.
    pub async fn ratelimits(
        &self,
        users: &[String],
    ) -> Result<HashMap<String, Option<Ratelimit>>, ServerError> {
        let rows = self
            .rows_of(SELECT_RATELIMITS, users, |cells| match cells {
                [per_second, burst] => Some(Ratelimit {
                    messages_per_second: count(per_second)?,
                    burst_count: count(burst)?,
                }),
                _ => None,
            })
            .await?;
        // One row at most per user (a unique index).
        Ok(rows
            .into_iter()
            .filter_map(|(user, overrides)| match overrides[..] {
                [] => Some((user, None)),
                [one] => Some((user, Some(one))),
                _ => None,
            })
            .collect())
    }

    /// The SSO identities of each of `users`.
    pub async fn external_ids(
        &self,
        users: &[String],
    ) -> Result<HashMap<String, Vec<ExternalId>>, ServerError> {
        self.rows_of(SELECT_EXTERNAL_IDS, users, |cells| match cells {
            [Cell::Text(auth_provider), Cell::Text(external_id)] => Some(ExternalId {
                auth_provider: auth_provider.clone(),
                external_id: external_id.clone(),
            }),
            _ => None,
        })
        .await
    }

    /// The e-mail addresses of each of `users`.
    pub async fn emails(
        &self,
        users: &[String],
    ) -> Result<HashMap<String, Vec<String>>, ServerError> {
        self.rows_of(SELECT_EMAILS, users, |cells| match cells {
            [Cell::Text(address)] => Some(address.clone()),
            _ => None,
        })
        .await
    }

    /// For each of `users`, what `read` makes of its rows of `select` (the
    /// cells after `user_id`); a user with a row `read` cannot make
    /// anything of is left out, and so read alone.
    async fn rows_of<T>(
        &self,
        select: &'static str,
        users: &[String],
        read: impl Fn(&[Cell]) -> Option<T>,
    ) -> Result<HashMap<String, Vec<T>>, ServerError> {
        let rows = self
            .0
            .select_where_in(select, "user_id", users)
            .await
            .map_err(database_error)?;
        let mut found: HashMap<String, Vec<T>> = users
            .iter()
            .map(|user| (user.clone(), Vec::new()))
            .collect();
        let mut unreadable = HashSet::new();
        for row in rows {
            let Some((Cell::Text(user), cells)) = row.split_first() else {
                continue;
            };
            match (read(cells), found.get_mut(user)) {
                (Some(value), Some(values)) => values.push(value),
                _ => {
                    unreadable.insert(user.clone());
                }
            }
        }
        found.retain(|user, _| !unreadable.contains(user));
        Ok(found)
    }
}

/// A stored count as the admin API reports it (NULL as 0); a negative one
/// is no override the API would show.
fn count(cell: &Cell) -> Option<u64> {
    match cell {
        Cell::Null => Some(0),
        Cell::Integer(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn database_error(detail: impl std::fmt::Display) -> ServerError {
    SynapseError::database(detail).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sql::refusal_of_foreign;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("matrix-user-synapse-{name}-{}", std::process::id()))
    }

    /// A file with Synapse's three tables, as its SQLite schema makes them.
    fn synapse_like(name: &str, rows: &str) -> (std::path::PathBuf, Secret) {
        let path = temp_path(name);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(&format!(
                "CREATE TABLE ratelimit_override (user_id TEXT NOT NULL, messages_per_second BIGINT, burst_count BIGINT);
                 CREATE TABLE user_external_ids (auth_provider TEXT NOT NULL, external_id TEXT NOT NULL, user_id TEXT NOT NULL);
                 CREATE TABLE user_threepids (user_id TEXT NOT NULL, medium TEXT NOT NULL, address TEXT NOT NULL, validated_at BIGINT NOT NULL, added_at BIGINT NOT NULL);
                 {rows}"
            ))
            .unwrap();
        let location = Secret::new(path.display().to_string());
        (path, location)
    }

    #[tokio::test]
    async fn rows_read_as_the_admin_api_shows_them() {
        let (path, location) = synapse_like(
            "rows",
            "INSERT INTO ratelimit_override VALUES ('@a:x', 5, 10), ('@b:x', NULL, NULL), ('@c:x', -1, 3);
             INSERT INTO user_external_ids VALUES ('oidc', '1', '@a:x'), ('saml', 'a', '@a:x');
             INSERT INTO user_threepids VALUES ('@a:x', 'email', 'A@example.com', 0, 0), ('@a:x', 'msisdn', '123', 0, 0);",
        );
        let db = Database::open(&location, Duration::from_secs(1))
            .await
            .unwrap();
        let users: Vec<String> = ["@a:x", "@b:x", "@c:x", "@d:x"].map(String::from).to_vec();
        let ratelimits = db.ratelimits(&users).await.unwrap();
        let ids = db.external_ids(&users).await.unwrap();
        let emails = db.emails(&users).await.unwrap();
        std::fs::remove_file(&path).ok();
        let five_ten = Ratelimit {
            messages_per_second: 5,
            burst_count: 10,
        };
        assert_eq!(ratelimits["@a:x"], Some(five_ten));
        assert_eq!(ratelimits["@b:x"], Some(Ratelimit::UNLIMITED));
        assert!(
            !ratelimits.contains_key("@c:x"),
            "a negative count is not confirmed"
        );
        assert_eq!(ratelimits["@d:x"], None);
        assert_eq!(ids["@a:x"].len(), 2);
        assert!(ids["@d:x"].is_empty());
        assert_eq!(emails["@a:x"], ["A@example.com"]);
        assert!(emails["@b:x"].is_empty());
    }

    #[tokio::test]
    async fn a_database_without_synapses_tables_is_named_as_such() {
        let open =
            |location| async move { Database::open(&location, Duration::from_secs(1)).await };
        let error = refusal_of_foreign("CREATE TABLE userapi_accounts (x)", open).await;
        assert!(
            error.to_string().starts_with(
                "synapse_database: it has no ratelimit_override table, so it is not Synapse's database"
            ),
            "{error}"
        );
    }
}
