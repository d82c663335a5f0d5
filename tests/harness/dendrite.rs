//! What the harness needs to check a Dendrite on its own: the module's
//! Dendrite arguments, Dendrite's database read directly (admin flag,
//! deactivation, display name, sessions), an admin made with Dendrite's own
//! `create-account`, and a call to Dendrite's admin API with a user's token.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::{merge, repo_root, ModuleRun, Server};

/// One account as Dendrite's `userapi_accounts` and `userapi_profiles` hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DendriteAccount {
    /// `account_type` 3.
    pub admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
}

impl Server {
    /// Starts a Dendrite on `database` (`sqlite` or `postgres`).
    pub fn start_dendrite(database: &str, flags: &[&str]) -> Server {
        let mut all = vec!["--database", database];
        all.extend_from_slice(flags);
        Server::start("dendrite", &all)
    }

    /// What the module's `dendrite_database` takes for this server.
    pub fn dendrite_database(&self) -> String {
        self.info["database"].as_str().unwrap().to_string()
    }

    /// Runs the module with `homeserver: dendrite` and `dendrite_database`
    /// (`"dendrite_database": null` in `args` leaves it out), checking that
    /// neither the shared secret nor the database location leaks.
    pub fn dendrite(&self, args: Value) -> ModuleRun {
        self.dendrite_within(super::MODULE_RUN_LIMIT, args)
    }

    /// [`Server::dendrite`] that must end within `limit` (see [`Server::module_within`]).
    pub fn dendrite_within(&self, limit: std::time::Duration, args: Value) -> ModuleRun {
        let mut all = self.connection();
        merge(
            &mut all,
            json!({"homeserver": "dendrite", "dendrite_database": self.dendrite_database()}),
        );
        merge(&mut all, args);
        all.as_object_mut()
            .unwrap()
            .retain(|_, value| !value.is_null());
        let mut secrets = vec![self.shared_secret.clone(), self.dendrite_database()];
        secrets.extend(self.admin_token.get().cloned());
        super::run_module_limited(&super::ModuleBinary::native(), all, secrets, &[], limit)
    }

    /// The account of `localpart`, read from Dendrite's database.
    pub fn dendrite_account(&self, localpart: &str) -> Option<DendriteAccount> {
        let rows = self.dendrite_query(
            "SELECT CAST(CAST(a.account_type AS INTEGER) AS TEXT), \
             CAST(CAST(a.is_deactivated AS INTEGER) AS TEXT), p.display_name \
             FROM userapi_accounts a LEFT JOIN userapi_profiles p \
             ON p.localpart = a.localpart AND p.server_name = a.server_name \
             WHERE a.localpart = $1 AND a.server_name = $2",
            localpart,
        );
        rows.into_iter().next().map(|row| DendriteAccount {
            admin: row[0].as_deref() == Some("3"),
            deactivated: row[1].as_deref() == Some("1"),
            displayname: row[2].clone(),
        })
    }

    pub fn dendrite_is_admin(&self, localpart: &str) -> bool {
        self.dendrite_account(localpart)
            .expect("the user exists")
            .admin
    }

    /// The device IDs (sessions) of `localpart`, from Dendrite's database.
    pub fn dendrite_devices(&self, localpart: &str) -> Vec<String> {
        self.dendrite_query(
            "SELECT device_id FROM userapi_devices WHERE localpart = $1 AND server_name = $2",
            localpart,
        )
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect()
    }

    /// Makes every session of `localpart` look unused for decades.
    pub fn dendrite_age_devices(&self, localpart: &str) {
        self.dendrite_execute(
            "UPDATE userapi_devices SET last_seen_ts = 0 WHERE localpart = $1 AND server_name = $2",
            localpart,
        );
    }

    /// Marks `localpart` deactivated in the database alone, as Dendrite's
    /// own deactivation does last: behind the module's back.
    pub fn dendrite_deactivate_in_database(&self, localpart: &str) {
        self.dendrite_execute(
            "UPDATE userapi_accounts SET is_deactivated = TRUE WHERE localpart = $1 AND server_name = $2",
            localpart,
        );
    }

    /// Runs one statement with `$1` the localpart and `$2` the server name.
    fn dendrite_execute(&self, sql: &str, localpart: &str) {
        let database = self.dendrite_database();
        let values = [localpart, self.server_name.as_str()];
        if database.starts_with("postgres") {
            runtime().block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&database, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                let driver = tokio::spawn(connection);
                client
                    .execute(sql, &[&values[0], &values[1]])
                    .await
                    .unwrap();
                drop(client);
                driver.await.unwrap().unwrap();
            });
        } else {
            let connection = rusqlite::Connection::open(&database).unwrap();
            connection
                .busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            connection.execute(&sql.replace('$', "?"), values).unwrap();
        }
    }

    /// Whether `localpart`, logged in with `password`, may use Dendrite's
    /// admin API: the proof that its admin flag took effect. Logs out after.
    pub fn uses_admin_api(&self, localpart: &str, password: &str) -> bool {
        let (status, body) = self.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": password}),
        );
        assert_eq!(status, 200, "login of {localpart}: {body}");
        let token = body["access_token"].as_str().unwrap().to_string();
        let (status, body) = self.get("/_dendrite/admin/registrationTokens", Some(&token));
        self.post("/_matrix/client/v3/logout", Some(&token), json!({}));
        match status {
            200 => true,
            403 => false,
            other => panic!("admin API answered {other}: {body}"),
        }
    }

    /// A token of an admin the harness made itself, with Dendrite's own
    /// `create-account` (not the module's code).
    pub fn dendrite_admin_token(&self) -> &str {
        self.admin_token.get_or_init(|| {
            let password = "harness-admin-password";
            let bin = Command::new(repo_root().join("tools/install-dendrite"))
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            let bin = String::from_utf8(bin.stdout).unwrap();
            let status = Command::new(format!("{}/create-account", bin.trim()))
                .arg("-config")
                .arg(self.data_dir.join("dendrite.yaml"))
                .args([
                    "-url",
                    &self.url,
                    "-username",
                    "harness",
                    "-password",
                    password,
                    "-admin",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "create-account failed");
            self.session_token("harness", password)
        })
    }

    /// Runs `sql` with `$1` = `localpart` and `$2` = the server name; its
    /// columns must be text (or NULL).
    fn dendrite_query(&self, sql: &str, localpart: &str) -> Vec<Vec<Option<String>>> {
        let database = self.dendrite_database();
        if database.starts_with("postgres") {
            postgres_query(&database, sql, &[localpart, &self.server_name])
        } else {
            let connection = rusqlite::Connection::open_with_flags(
                &database,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            connection
                .busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            let mut statement = connection.prepare(&sql.replace('$', "?")).unwrap();
            let columns = statement.column_count();
            let rows = statement
                .query_map((localpart, &self.server_name), |row| {
                    (0..columns).map(|i| row.get(i)).collect()
                })
                .unwrap();
            rows.map(Result::unwrap).collect()
        }
    }
}

fn postgres_query(url: &str, sql: &str, values: &[&str]) -> Vec<Vec<Option<String>>> {
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = client.query(sql, &values).await.unwrap();
        drop(client);
        driver.await.unwrap().unwrap();
        rows.iter()
            .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
            .collect()
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}
