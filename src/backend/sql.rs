//! A connection to a homeserver's own database, shared by the backends that
//! open one (`dendrite_database`, `synapse_database`): a PostgreSQL URL or
//! the path of a SQLite file, opened read-write or read-only, and the few
//! ways of running a statement on either. The statements themselves, each
//! server's own, stay in that server's file.
//!
//! The location is a [`Secret`] (a PostgreSQL URL holds a password) and no
//! [`SqlError`] repeats it: PostgreSQL's own messages are taken without the
//! connection parameters, SQLite's name no file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::path::PathBuf;

use rusqlite::OpenFlags;

use crate::host_file;
use crate::http::server_words;
use crate::secret::Secret;

/// SQLite's limit on the values of one statement is 32766; a chunk stays
/// far below it and still reads hundreds of users at once.
const SQLITE_CHUNK: usize = 500;

/// Why a database could not be opened or read, in the driver's words; the
/// backend puts it in an error naming its own option.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SqlError(String);

impl SqlError {
    /// The driver's (or the database's) words, cut as a server's answer is:
    /// a database's error message may be megabytes long.
    fn new(detail: &str) -> SqlError {
        SqlError(server_words(detail))
    }
}

/// What the module may do on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// SQLite opened read-only; every PostgreSQL transaction read-only.
    ReadOnly,
}

/// A server's database as the module opens it: how, which tables (names of
/// the server's schema) it must have, and whose it then is, as an error
/// says when it lacks one.
pub struct Schema {
    pub access: Access,
    pub tables: &'static [&'static str],
    /// "Synapse's database", and where the user finds its location.
    pub database: &'static str,
}

pub enum Connection {
    /// A SQLite file, never created.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(tokio_postgres::Client),
}

/// One value of a row, whatever the database's column type.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Text(String),
    /// A type the statements here never expect (a float, bytes).
    Other,
}

impl Connection {
    /// Connects to `location`: a `postgres://` or `postgresql://` URL (no
    /// TLS), or the path of a SQLite file, with or without a `file:` prefix;
    /// `timeout` bounds the connection and SQLite's wait for the server's locks.
    pub async fn open(
        location: &Secret,
        access: Access,
        timeout: Duration,
    ) -> Result<Connection, SqlError> {
        let location = location.expose();
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            let connecting = tokio_postgres::connect(location, tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| SqlError::new(&format!("no answer within {}s", timeout.as_secs())))?
                .map_err(postgres_error)?;
            // The connection does the talking; it ends when the client is dropped.
            tokio::spawn(connection);
            if access == Access::ReadOnly {
                client
                    .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                    .await
                    .map_err(postgres_error)?;
            }
            return Ok(Connection::Postgres(client));
        }
        refuse_special_files(location)?;
        let location = location.to_string();
        let connection = blocking(move || {
            let mut flags = match access {
                Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
                Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            if location.starts_with("file:") {
                flags |= OpenFlags::SQLITE_OPEN_URI;
            }
            let connection = rusqlite::Connection::open_with_flags(&location, flags)?;
            // The homeserver writes to the same file: wait for its locks.
            connection.busy_timeout(timeout)?;
            Ok(connection)
        })
        .await?;
        Ok(Connection::Sqlite(Arc::new(Mutex::new(connection))))
    }

    /// [`Connection::open`] as `schema` says, checking that the database
    /// has each of its tables; else the error names the first it lacks.
    pub async fn open_holding(
        location: &Secret,
        timeout: Duration,
        schema: &Schema,
    ) -> Result<Connection, SqlError> {
        let connection = Connection::open(location, schema.access, timeout).await?;
        for table in schema.tables {
            if !connection.has_table(table).await? {
                let database = schema.database;
                let refusal = format!("it has no {table} table, so it is not {database}");
                return Err(SqlError(refusal));
            }
        }
        Ok(connection)
    }

    /// Whether the database has `table` (a name of the server's schema,
    /// never a value from the playbook).
    pub async fn has_table(&self, table: &'static str) -> Result<bool, SqlError> {
        let probe = format!("SELECT COUNT(*) FROM {table} WHERE 1 = 0");
        match self {
            Connection::Postgres(client) => match client.query_one(&probe, &[]).await {
                Ok(_) => Ok(true),
                Err(error)
                    if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                {
                    Ok(false)
                }
                Err(error) => Err(postgres_error(error)),
            },
            Connection::Sqlite(connection) => {
                sqlite(connection, move |c| {
                    match c.query_row(&probe, [], |_| Ok(())) {
                        Ok(()) => Ok(true),
                        Err(error) if error.to_string().contains("no such table") => Ok(false),
                        Err(error) => Err(error),
                    }
                })
                .await
            }
        }
    }

    /// The rows of `select` (a statement ending in `WHERE ... AND` or
    /// `WHERE`, without parameters) for the rows whose `key` is one of
    /// `values`, bound, never spliced: one statement on PostgreSQL (`=
    /// ANY`), one per chunk of values on SQLite (`IN`).
    pub async fn select_where_in(
        &self,
        select: &'static str,
        key: &'static str,
        values: &[String],
    ) -> Result<Vec<Vec<Cell>>, SqlError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Connection::Postgres(client) => {
                let sql = format!("{select} {key} = ANY($1)");
                let rows = client
                    .query(&sql, &[&values])
                    .await
                    .map_err(postgres_error)?;
                rows.iter()
                    .map(postgres_cells)
                    .collect::<Result<_, _>>()
                    .map_err(postgres_error)
            }
            Connection::Sqlite(connection) => {
                let values = values.to_vec();
                sqlite(connection, move |c| {
                    let mut rows = Vec::new();
                    for chunk in values.chunks(SQLITE_CHUNK) {
                        let marks = vec!["?"; chunk.len()].join(", ");
                        let mut statement = c.prepare(&format!("{select} {key} IN ({marks})"))?;
                        let columns = statement.column_count();
                        let mut found = statement.query(rusqlite::params_from_iter(chunk))?;
                        while let Some(row) = found.next()? {
                            let cells = (0..columns)
                                .map(|i| row.get_ref(i).map(sqlite_cell))
                                .collect::<Result<_, _>>()?;
                            rows.push(cells);
                        }
                    }
                    Ok(rows)
                })
                .await
            }
        }
    }
}

/// Refuses a SQLite location that is a FIFO, a device or a folder, or
/// whose journal files beside it are: SQLite would wait on a FIFO for ever.
/// Checked without reading; a file not there is left to SQLite.
fn refuse_special_files(location: &str) -> Result<(), SqlError> {
    let path = sqlite_path(location);
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{path}{suffix}"));
        if let Err(problem) = host_file::refuse_special(&file) {
            return Err(match suffix {
                "" => SqlError::new(&problem.to_string()),
                _ => SqlError::new(&format!("its SQLite file {suffix} beside it: {problem}")),
            });
        }
    }
    Ok(())
}

/// The file a SQLite location names: a path, or a `file:` URI (`file:x.db`,
/// `file:///var/x.db?mode=ro`) without its query.
fn sqlite_path(location: &str) -> &str {
    let Some(uri) = location.strip_prefix("file:") else {
        return location;
    };
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    match path.strip_prefix("//") {
        // The authority, empty or `localhost`, ends where the path starts.
        Some(rest) => rest.find('/').map_or(rest, |start| &rest[start..]),
        None => path,
    }
}

fn postgres_cells(row: &tokio_postgres::Row) -> Result<Vec<Cell>, tokio_postgres::Error> {
    use tokio_postgres::types::Type;
    (0..row.len())
        .map(|i| {
            let type_ = row.columns()[i].type_();
            Ok(if *type_ == Type::INT8 {
                row.try_get::<_, Option<i64>>(i)?
                    .map_or(Cell::Null, Cell::Integer)
            } else if *type_ == Type::INT4 {
                row.try_get::<_, Option<i32>>(i)?
                    .map_or(Cell::Null, |n| Cell::Integer(n.into()))
            } else if *type_ == Type::INT2 {
                row.try_get::<_, Option<i16>>(i)?
                    .map_or(Cell::Null, |n| Cell::Integer(n.into()))
            } else if *type_ == Type::TEXT || *type_ == Type::VARCHAR {
                row.try_get::<_, Option<String>>(i)?
                    .map_or(Cell::Null, Cell::Text)
            } else {
                Cell::Other
            })
        })
        .collect()
}

fn sqlite_cell(value: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(n) => Cell::Integer(n),
        ValueRef::Text(text) => match std::str::from_utf8(text) {
            Ok(text) => Cell::Text(text.to_string()),
            Err(_) => Cell::Other,
        },
        ValueRef::Real(_) | ValueRef::Blob(_) => Cell::Other,
    }
}

/// SQLite numbers its parameters `?1`, PostgreSQL `$1`; the statements
/// given here hold no other `$`.
pub fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Runs SQLite work off the async thread: it may wait for the server's locks.
pub async fn sqlite<T: Send + 'static>(
    connection: &Arc<Mutex<rusqlite::Connection>>,
    work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, SqlError> {
    let connection = connection.clone();
    blocking(move || {
        let mut connection = connection.lock().expect("no SQLite work panics");
        work(&mut connection)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, SqlError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("SQLite work does not panic")
        .map_err(|error| SqlError::new(&error.to_string()))
}

/// PostgreSQL's own message for an error it sent (never the connection
/// parameters), else the driver's chain of causes.
pub fn postgres_error(error: tokio_postgres::Error) -> SqlError {
    let detail = match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut detail = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                detail = format!("{detail}: {inner}");
                cause = inner.source();
            }
            detail
        }
    };
    SqlError::new(&detail)
}

/// A SQLite file of `schema` alone, for the tests of a database that is
/// not the server's: the error of opening it as one, removed after.
#[cfg(test)]
pub async fn refusal_of_foreign<T, F: std::future::Future<Output = Result<T, E>>, E>(
    schema: &str,
    open: impl FnOnce(Secret) -> F,
) -> E {
    let path = std::env::temp_dir().join(format!(
        "matrix-user-foreign-{}-{}.db",
        std::process::id(),
        schema.len()
    ));
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(schema)
        .unwrap();
    let refused = open(Secret::new(path.display().to_string())).await;
    std::fs::remove_file(&path).ok();
    refused.err().expect("a foreign database is refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("matrix-user-sql-{name}-{}", std::process::id()))
    }

    #[test]
    fn a_sqlite_uri_names_its_file_without_the_query() {
        assert_eq!(sqlite_path("/var/lib/x.db"), "/var/lib/x.db");
        assert_eq!(sqlite_path("file:x.db?mode=ro"), "x.db");
        assert_eq!(sqlite_path("file:///var/x.db?mode=ro"), "/var/x.db");
        assert_eq!(sqlite_path("file://localhost/var/x.db"), "/var/x.db");
    }

    #[tokio::test]
    async fn a_missing_sqlite_file_is_not_created_in_either_access() {
        for access in [Access::ReadWrite, Access::ReadOnly] {
            let path = temp_path("missing");
            let location = Secret::new(path.display().to_string());
            assert!(Connection::open(&location, access, Duration::from_secs(1))
                .await
                .is_err());
            assert!(!path.exists());
        }
    }

    #[tokio::test]
    async fn read_only_sqlite_reads_chunks_and_refuses_writes() {
        let path = temp_path("read-only");
        let setup = rusqlite::Connection::open(&path).unwrap();
        setup
            .execute_batch("CREATE TABLE t (k TEXT, n BIGINT, f REAL)")
            .unwrap();
        for i in 0..1200 {
            setup
                .execute(
                    "INSERT INTO t VALUES (?1, ?2, 0.5)",
                    (format!("k{i}"), (i % 2 == 0).then_some(i)),
                )
                .unwrap();
        }
        let location = Secret::new(path.display().to_string());
        let db = Connection::open(&location, Access::ReadOnly, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(db.has_table("t").await.unwrap());
        assert!(!db.has_table("absent").await.unwrap());
        let keys: Vec<String> = (0..1200)
            .map(|i| format!("k{i}"))
            .chain(["none".into()])
            .collect();
        let rows = db
            .select_where_in("SELECT k, n, f FROM t WHERE", "k", &keys)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1200);
        assert!(rows.contains(&vec![
            Cell::Text("k2".into()),
            Cell::Integer(2),
            Cell::Other
        ]));
        assert!(rows.contains(&vec![Cell::Text("k3".into()), Cell::Null, Cell::Other]));
        let Connection::Sqlite(connection) = &db else {
            unreachable!()
        };
        let write = sqlite(connection, |c| c.execute("DELETE FROM t", [])).await;
        std::fs::remove_file(&path).ok();
        assert!(
            write.unwrap_err().to_string().contains("readonly"),
            "a read-only connection refuses writes"
        );
    }
}
