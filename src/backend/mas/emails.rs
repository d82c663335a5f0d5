//! A user's e-mail addresses in MAS: reading and replacing them, and the
//! comparison MAS makes (`LOWER()` in its database's locale), so that an
//! address another user holds is refused before anything is sent.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::admin_api::unexpected;
use super::{Mas, MasEmail, MasError, MasUser};
use crate::backend::ServerError;
use crate::http::path_segment;
use crate::model::DesiredUser;

/// The addresses `desired` declares, by `emails` or `email` (not both, see
/// [`super::refuse_unsupported`]).
pub(super) fn declared_emails(desired: &DesiredUser) -> impl Iterator<Item = &String> {
    desired.emails.iter().flatten().chain(&desired.email)
}

/// MAS keeps an address as given and finds it whatever the case of its
/// letters, comparing `LOWER(email) = LOWER($1)` in its PostgreSQL
/// (crates/storage-pg/src/user/email.rs). What LOWER lowercases is the
/// database's `LC_CTYPE`'s: matrix-docker-ansible-deploy makes MAS's
/// database `C` (ansible-role-postgres's `postgres_default_lc_type`), where
/// it lowercases ASCII letters only, so `Σ` and `σ` differ. That is the
/// rule here; where another locale lowercases more (see [`loose_key`]),
/// MAS's own lookup of a declared address decides (see
/// [`Mas::refuse_taken_emails`]).
pub(super) fn same_address(a: &str, b: &str) -> bool {
    address_key(a) == address_key(b)
}

/// What MAS compares of an address (see [`same_address`]).
pub(super) fn address_key(address: &str) -> String {
    address.to_ascii_lowercase()
}

/// What a database whose locale lowercases more than ASCII may compare of
/// an address: a Unicode locale of the C library lowercases each character
/// alone (`İ` to `i`), ICU by its context too, and case folding covers
/// both. Addresses of one loose key but not one [`address_key`] are in
/// doubt: MAS's lookup decides.
pub(super) fn loose_key(address: &str) -> String {
    let lowered: String = address
        .chars()
        .flat_map(|c| match c {
            'İ' => 'i'.to_lowercase(),
            c => c.to_lowercase(),
        })
        .collect();
    caseless::default_case_fold_str(&lowered)
}

/// Shows each of `held` that MAS takes for an address `desired` declares
/// (by [`same_address`], or found by MAS's lookup: `found_by_mas`, IDs with
/// the declared address) as declared, so that the plan finds it held.
pub(super) fn show_as_declared(
    held: &mut [MasEmail],
    desired: &DesiredUser,
    found_by_mas: &[(String, String)],
) {
    for email in held {
        let declared = declared_emails(desired)
            .find(|d| same_address(d, &email.address))
            .or_else(|| {
                found_by_mas
                    .iter()
                    .find(|(id, _)| *id == email.id)
                    .map(|(_, d)| d)
            });
        if let Some(declared) = declared {
            email.address = declared.clone();
        }
    }
}

pub(super) fn holds(held: &[MasEmail], email: &str) -> bool {
    held.iter().any(|h| same_address(&h.address, email))
}

/// A `UserEmail` of a list: the ID of the user who has it, and the address.
pub(super) fn parse_email(item: &Value, what: &str) -> Result<(String, MasEmail), ServerError> {
    let field = |name: &str| {
        item.pointer(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| unexpected(what, &format!("an item without {name}")))
    };
    let email = MasEmail {
        id: field("/id")?,
        address: field("/attributes/email")?,
    };
    Ok((field("/attributes/user_id")?, email))
}

impl Mas {
    pub(super) async fn emails(&self, user_id: &str) -> Result<Vec<MasEmail>, ServerError> {
        let what = "listing the user's e-mail addresses";
        let items = self.list_all("/user-emails", Some(user_id), what).await?;
        items
            .iter()
            .map(|item| parse_email(item, what).map(|(_, email)| email))
            .collect()
    }

    /// Fails when an address `desired` declares, which `held` (the user's
    /// own, `owner` its ID when it exists) lacks, belongs to another MAS
    /// user. Asked at the read, so that check mode predicts the failure and
    /// nothing of the user is written. Returns the held addresses MAS's
    /// lookup found for a declared one that the module's comparison missed
    /// (MAS compares in its database), each ID with the declared address.
    pub(super) async fn refuse_taken_emails(
        &self,
        desired: &DesiredUser,
        owner: Option<&str>,
        held: &[MasEmail],
    ) -> Result<Vec<(String, String)>, ServerError> {
        let mut found_by_mas = Vec::new();
        for email in declared_emails(desired).filter(|e| !holds(held, e)) {
            let what = format!("looking up the e-mail address {email}");
            let query = [("filter[email]", email.as_str()), ("page[first]", "1")];
            for item in &self.listed("/user-emails", &query, &what).await? {
                let (holder, found) = parse_email(item, &what)?;
                if Some(holder.as_str()) != owner {
                    return Err(ServerError::Mas(MasError::EmailInUse {
                        email: email.clone(),
                    }));
                }
                found_by_mas.push((found.id, email.clone()));
            }
        }
        Ok(found_by_mas)
    }

    pub(super) async fn add_email(&self, id: &str, email: &str) -> Result<(), ServerError> {
        let reply = self
            .admin(
                Method::POST,
                "/user-emails",
                Some(&json!({"user_id": id, "email": email})),
            )
            .await?;
        match reply.status {
            StatusCode::CREATED | StatusCode::OK => Ok(()),
            StatusCode::CONFLICT => Err(ServerError::Mas(MasError::EmailInUse {
                email: email.to_string(),
            })),
            _ => Err(ServerError::refused(
                format!("adding the e-mail address {email}"),
                &reply,
            )),
        }
    }

    /// Makes the user's addresses exactly `wanted`: the missing ones added
    /// first, so that a refused one leaves the user its old ones, then the
    /// others removed.
    pub(super) async fn set_emails(
        &self,
        found: &MasUser,
        wanted: &[String],
    ) -> Result<(), ServerError> {
        for email in wanted.iter().filter(|e| !holds(&found.emails, e)) {
            self.add_email(&found.id, email).await?;
        }
        let unwanted = found
            .emails
            .iter()
            .filter(|held| !wanted.iter().any(|e| same_address(e, &held.address)));
        for email in unwanted {
            let what = format!("removing the e-mail address {}", email.address);
            let path = format!("/user-emails/{}", path_segment(&email.id));
            let reply = self.admin(Method::DELETE, &path, None).await?;
            match reply.status {
                // 404: removed meanwhile, as wanted.
                StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => {}
                _ => return Err(ServerError::refused(what, &reply)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::address_chars::address_char;
    use proptest::prelude::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Mutex, OnceLock};

    /// A real PostgreSQL (Debian's, in a private cluster started by
    /// tools/servers/postgres.py) answering `LOWER($1) = LOWER($2)` as
    /// MAS's lookup by address asks it (crates/storage-pg/src/user/email.rs).
    struct PostgresLower {
        runtime: tokio::runtime::Runtime,
        /// A database made as matrix-docker-ansible-deploy makes MAS's:
        /// its postgres role (mother-of-all-self-hosting/ansible-role-postgres)
        /// runs `CREATE DATABASE ... WITH LC_CTYPE 'C' LC_COLLATE 'C'` in a
        /// cluster of `--lc-ctype C --encoding UTF8` (`postgres_default_*`).
        as_deployed: tokio_postgres::Client,
        /// The cluster's own database, of `LC_CTYPE` `C.UTF-8`, which
        /// lowercases every cased letter.
        unicode: tokio_postgres::Client,
        /// Stops the cluster when the test process ends and its input closes.
        _cluster: Child,
    }

    impl PostgresLower {
        fn shared() -> &'static Mutex<PostgresLower> {
            static POSTGRES: OnceLock<Mutex<PostgresLower>> = OnceLock::new();
            POSTGRES.get_or_init(|| Mutex::new(PostgresLower::start()))
        }

        fn start() -> PostgresLower {
            let root = env!("CARGO_MANIFEST_DIR");
            let mut cluster = Command::new(format!("{root}/.venv/bin/python"))
                .args([&format!("{root}/tools/servers/postgres.py"), "--ephemeral"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the project's .venv (tools/bootstrap) runs tools/servers/postgres.py");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(cluster.stdout.take().unwrap()),
                &mut line,
            )
            .unwrap();
            let info: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
                panic!("PostgreSQL did not start (tools/install-dendrite installs it): {line:?}")
            });
            let url = info["url"].as_str().unwrap().to_string();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let connect = |url: String| {
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(connection);
                    client
                })
            };
            let unicode = connect(url.clone());
            runtime
                .block_on(unicode.batch_execute(
                    "CREATE DATABASE mas TEMPLATE template0 ENCODING 'UTF8' \
                     LC_CTYPE 'C' LC_COLLATE 'C'",
                ))
                .unwrap();
            let as_deployed = connect(url.replace("/matrix_user?", "/mas?"));
            PostgresLower {
                runtime,
                as_deployed,
                unicode,
                _cluster: cluster,
            }
        }

        fn same(&self, client: &tokio_postgres::Client, a: &str, b: &str) -> bool {
            self.runtime
                .block_on(client.query_one("SELECT LOWER($1) = LOWER($2)", &[&a, &b]))
                .unwrap()
                .get(0)
        }
    }

    /// [`address_char`], with the dotted and dotless i, which the C and
    /// Unicode locales lowercase differently.
    fn mas_address_char() -> impl Strategy<Value = char> {
        address_char(prop_oneof![Just('İ'), Just('ı')])
    }

    fn local_part() -> impl Strategy<Value = String> {
        proptest::collection::vec(mas_address_char(), 1..10).prop_map(|c| c.into_iter().collect())
    }

    /// `text` with each character kept, lowercased or uppercased as `changes`
    /// says, in turn.
    fn recased(text: &str, changes: &[u8]) -> String {
        text.chars()
            .zip(changes.iter().cycle())
            .map(|(c, change)| match change % 3 {
                0 => c.to_string(),
                1 => c.to_lowercase().collect(),
                _ => c.to_uppercase().collect(),
            })
            .collect()
    }

    fn address() -> impl Strategy<Value = String> {
        (local_part(), "[a-zA-Z]{1,4}").prop_map(|(local, domain)| format!("{local}@{domain}.org"))
    }

    /// Two addresses: the second mostly the first with the case of some
    /// letters changed, sometimes another address altogether.
    fn address_pair() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            4 => (address(), proptest::collection::vec(any::<u8>(), 1..8))
                .prop_map(|(a, changes): (String, Vec<u8>)| {
                    let b = recased(&a, &changes);
                    (a, b)
                }),
            1 => (address(), address()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// Two addresses are the same exactly when PostgreSQL's LOWER says
        /// so in a database made as matrix-docker-ansible-deploy makes
        /// MAS's, and then in a Unicode locale too; those a Unicode locale
        /// takes for one are in doubt (MAS's lookup decides).
        #[test]
        fn addresses_compare_as_postgres_lower_compares_them_for_mas((a, b) in address_pair()) {
            let postgres = PostgresLower::shared().lock().unwrap();
            let ours = same_address(&a, &b);
            prop_assert_eq!(ours, postgres.same(&postgres.as_deployed, &a, &b), "as deployed");
            let in_unicode = postgres.same(&postgres.unicode, &a, &b);
            prop_assert!(!ours || in_unicode, "the same in C.UTF-8 too");
            prop_assert!(!in_unicode || loose_key(&a) == loose_key(&b), "in doubt in C.UTF-8");
        }
    }

    #[test]
    fn addresses_compare_as_mas_lower_compares_them_in_the_c_locale() {
        assert!(same_address("Alice@Example.ORG", "alice@example.org"));
        assert!(!same_address("ΝΙΚΟΣ@example.gr", "νικοσ@example.gr"));
        assert_eq!(loose_key("ΝΙΚΟΣ@example.gr"), loose_key("νικοσ@example.gr"));
        assert_eq!(loose_key("İ@x"), loose_key("i@x"));
        assert_ne!(loose_key("a@x"), loose_key("b@x"));
    }
}
