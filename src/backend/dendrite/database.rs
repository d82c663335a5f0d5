//! Dendrite's user API database, for what Dendrite has no API for: whether
//! an account is a server admin or deactivated, and changing either. Its
//! own documentation sends admins there to promote a user
//! (`userapi_accounts.account_type`).
//!
//! Every statement binds its values: nothing from the playbook is ever
//! spliced into SQL text. The location is a [`Secret`] (a PostgreSQL URL
//! holds a password) and no message repeats it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::types::ToSql;

use super::{AccountRow, AccountUpdate, DendriteError};
use crate::backend::sql::{self, sqlite_sql, Access, Connection, Schema};
use crate::backend::ServerError;
use crate::secret::Secret;

/// Reads the accounts of some localparts, profiles joined. The casts give
/// both databases the same column types (PostgreSQL stores `is_deactivated`
/// as a boolean and `account_type` as a smallint, SQLite both as integers).
const SELECT_ACCOUNTS: &str = "SELECT a.localpart, CAST(a.account_type AS INTEGER), \
     CAST(COALESCE(a.is_deactivated, FALSE) AS INTEGER), p.display_name \
     FROM userapi_accounts a LEFT JOIN userapi_profiles p \
     ON p.localpart = a.localpart AND p.server_name = a.server_name \
     WHERE a.server_name = $1 AND a.localpart = ";
/// Only between user and admin: guests and application services stay what they are.
const SET_ACCOUNT_TYPE: &str = "UPDATE userapi_accounts SET account_type = $1 \
     WHERE server_name = $2 AND localpart = $3 AND account_type IN (1, 3)";
const REACTIVATE: &str = "UPDATE userapi_accounts SET is_deactivated = FALSE \
     WHERE server_name = $1 AND localpart = $2";
/// Deactivated accounts included, which Dendrite's own lookup skips.
const SELECT_PASSWORD_HASH: &str = "SELECT password_hash FROM userapi_accounts \
     WHERE server_name = $1 AND localpart = $2";
const SET_PASSWORD_HASH: &str = "UPDATE userapi_accounts SET password_hash = $1 \
     WHERE server_name = $2 AND localpart = $3";
const SET_DISPLAYNAME: &str = "UPDATE userapi_profiles SET display_name = $1 \
     WHERE server_name = $2 AND localpart = $3";

/// Read-write; the accounts table, which a database must have to be Dendrite's.
const SCHEMA: Schema = Schema {
    access: Access::ReadWrite,
    tables: &["userapi_accounts"],
    database: "Dendrite's user API database (user_api.account_database in dendrite.yaml, or global.database)",
};

/// Dendrite's database, opened read-write (a SQLite file is never created),
/// for the accounts of one server name.
pub struct Database {
    connection: Connection,
    server_name: String,
}

impl Database {
    /// Connects to `location`: a `postgres://` or `postgresql://` URL (as in
    /// Dendrite's configuration; no TLS), or the path of the SQLite file,
    /// with or without Dendrite's `file:` prefix. Checks that it holds
    /// Dendrite's accounts; each read or change is of an account on
    /// `server_name`.
    pub async fn open(
        location: &Secret,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Database, ServerError> {
        let connection = Connection::open_holding(location, timeout, &SCHEMA).await;
        Ok(Database {
            connection: connection.map_err(database_error)?,
            server_name: server_name.to_string(),
        })
    }

    /// The accounts of `localparts` that exist.
    pub async fn accounts(
        &self,
        localparts: &[&str],
    ) -> Result<HashMap<String, AccountRow>, ServerError> {
        let server_name = self.server_name.clone();
        match &self.connection {
            Connection::Postgres(client) => {
                let sql = format!("{SELECT_ACCOUNTS}ANY($2)");
                let rows = client
                    .query(&sql, &[&server_name, &localparts])
                    .await
                    .map_err(postgres_error)?;
                rows.iter()
                    .map(|row| {
                        let localpart: String = row.try_get(0)?;
                        let account_type: i32 = row.try_get(1)?;
                        let deactivated: i32 = row.try_get(2)?;
                        Ok((
                            localpart,
                            account_row(account_type.into(), deactivated.into(), row.try_get(3)?),
                        ))
                    })
                    .collect::<Result<_, tokio_postgres::Error>>()
                    .map_err(postgres_error)
            }
            Connection::Sqlite(connection) => {
                let localparts: Vec<String> = localparts.iter().map(|l| l.to_string()).collect();
                sqlite(connection, move |c| {
                    let mut statement = c.prepare(&sqlite_sql(&format!("{SELECT_ACCOUNTS}$2")))?;
                    let mut found = HashMap::new();
                    for localpart in &localparts {
                        let mut rows = statement.query((&server_name, localpart))?;
                        if let Some(row) = rows.next()? {
                            found.insert(
                                row.get(0)?,
                                account_row(row.get(1)?, row.get(2)?, row.get(3)?),
                            );
                        }
                    }
                    Ok(found)
                })
                .await
            }
        }
    }

    /// The account's stored password hash (bcrypt), `None` when there is no
    /// such account; kept to put it back if a change that replaces it fails.
    pub async fn password_hash(&self, localpart: &str) -> Result<Option<Secret>, ServerError> {
        let (server_name, localpart) = (self.server_name.clone(), localpart.to_string());
        let hash: Option<Option<String>> = match &self.connection {
            Connection::Postgres(client) => client
                .query_opt(SELECT_PASSWORD_HASH, &[&server_name, &localpart])
                .await
                .and_then(|row| row.map(|row| row.try_get(0)).transpose())
                .map_err(postgres_error)?,
            Connection::Sqlite(connection) => {
                sqlite(connection, move |c| {
                    let mut statement = c.prepare(&sqlite_sql(SELECT_PASSWORD_HASH))?;
                    let mut rows = statement.query((&server_name, &localpart))?;
                    rows.next()?.map(|row| row.get(0)).transpose()
                })
                .await?
            }
        };
        // An account without a password has an empty or NULL hash.
        Ok(hash.map(|hash| Secret::new(hash.unwrap_or_default())))
    }

    /// Makes `update` to the account `localpart`; whether it changed a row
    /// (`false`: no such account, or for [`AccountUpdate::AccountType`] none
    /// of a user or an admin).
    pub async fn update(
        &self,
        localpart: &str,
        update: AccountUpdate<'_>,
    ) -> Result<bool, ServerError> {
        let (sql, set) = update.statement();
        let server_name = self.server_name.as_str();
        match &self.connection {
            Connection::Postgres(client) => {
                let mut values: Vec<&(dyn ToSql + Sync)> = match &set {
                    Some(Set::SmallInt(number)) => vec![number],
                    Some(Set::Text(text)) => vec![text],
                    None => Vec::new(),
                };
                values.extend([&server_name as &(dyn ToSql + Sync), &localpart]);
                let changed = client.execute(sql, &values).await;
                changed.map(|n| n > 0).map_err(postgres_error)
            }
            Connection::Sqlite(connection) => {
                let sql = sqlite_sql(sql);
                let set = set.map(|set| match set {
                    Set::SmallInt(number) => number.into(),
                    Set::Text(text) => text.to_string().into(),
                });
                let account = [server_name.to_string().into(), localpart.to_string().into()];
                let values: Vec<rusqlite::types::Value> = set.into_iter().chain(account).collect();
                sqlite(connection, move |c| {
                    c.execute(&sql, rusqlite::params_from_iter(values))
                })
                .await
                .map(|n| n > 0)
            }
        }
    }
}

/// The value an UPDATE sets, its first parameter.
enum Set<'a> {
    /// A smallint in PostgreSQL (`account_type`).
    SmallInt(i16),
    Text(&'a str),
}

impl<'a> AccountUpdate<'a> {
    /// Its UPDATE of the account's row, and the value that binds first,
    /// before the account's server name and localpart.
    fn statement(&self) -> (&'static str, Option<Set<'a>>) {
        match *self {
            AccountUpdate::AccountType(account_type) => {
                (SET_ACCOUNT_TYPE, Some(Set::SmallInt(account_type)))
            }
            AccountUpdate::Reactivate => (REACTIVATE, None),
            AccountUpdate::PasswordHash(hash) => {
                (SET_PASSWORD_HASH, Some(Set::Text(hash.expose())))
            }
            AccountUpdate::Displayname(name) => (SET_DISPLAYNAME, Some(Set::Text(name))),
        }
    }
}

fn account_row(account_type: i64, deactivated: i64, displayname: Option<String>) -> AccountRow {
    AccountRow {
        account_type: i16::try_from(account_type).unwrap_or(i16::MAX),
        deactivated: deactivated != 0,
        displayname,
    }
}

/// Runs SQLite work off the async thread: it may wait for Dendrite's locks.
async fn sqlite<T: Send + 'static>(
    connection: &Arc<Mutex<rusqlite::Connection>>,
    work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ServerError> {
    sql::sqlite(connection, work).await.map_err(database_error)
}

fn postgres_error(error: tokio_postgres::Error) -> ServerError {
    database_error(sql::postgres_error(error))
}

fn database_error(detail: impl std::fmt::Display) -> ServerError {
    ServerError::Dendrite(DendriteError::Database {
        detail: detail.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::dendrite::ACCOUNT_TYPE_ADMIN;
    use crate::backend::sql::refusal_of_foreign;

    #[test]
    fn statements_number_their_parameters_for_both_databases() {
        assert_eq!(
            sqlite_sql(SET_ACCOUNT_TYPE),
            SET_ACCOUNT_TYPE
                .replace("$1", "?1")
                .replace("$2", "?2")
                .replace("$3", "?3")
        );
        assert!(!sqlite_sql(SELECT_ACCOUNTS).contains('$'));
    }

    #[test]
    fn rows_map_flags_and_unknown_types() {
        assert_eq!(
            account_row(3, 1, Some("A".into())),
            AccountRow {
                account_type: ACCOUNT_TYPE_ADMIN,
                deactivated: true,
                displayname: Some("A".into())
            }
        );
        assert_eq!(account_row(70000, 0, None).account_type, i16::MAX);
    }

    #[tokio::test]
    async fn a_missing_sqlite_file_is_not_created() {
        let path = std::env::temp_dir().join(format!("matrix-user-no-db-{}", std::process::id()));
        let location = Secret::new(path.display().to_string());
        let error = Database::open(&location, "x", Duration::from_secs(1))
            .await
            .err()
            .expect("opening a missing file fails");
        assert!(
            matches!(error, ServerError::Dendrite(DendriteError::Database { .. })),
            "{error}"
        );
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_file_without_dendrites_tables_is_named_as_such() {
        let open =
            |location| async move { Database::open(&location, "x", Duration::from_secs(1)).await };
        let error = refusal_of_foreign("CREATE TABLE other (x)", open).await;
        assert!(
            error.to_string().contains("no userapi_accounts table"),
            "{error}"
        );
    }
}
