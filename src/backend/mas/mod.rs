//! The Matrix Authentication Service (MAS), through its admin API
//! (`/api/admin/v1`, as MAS 1.22 publishes it).
//!
//! When a homeserver delegates authentication to MAS, accounts, passwords and
//! e-mail addresses live in MAS, and MAS provisions the users on the
//! homeserver itself. So everything here talks to MAS; the homeserver is
//! asked only, with `homeserver_url`, for the display names MAS cannot show
//! (see [`homeserver`]).
//!
//! Authentication: an OAuth2 client-credentials token for `mas_client_id`
//! (HTTP Basic, as `client_secret_basic`; else `client_secret_post`), fetched
//! at the start of each run and fetched again, once for all users, when MAS
//! refuses it (its tokens live five minutes by default); or a ready
//! `admin_token`, which cannot be renewed (see [`oauth`]).
//!
//! MAS cannot tell a password. With `update_password: always` the declared
//! one is tried by a compatibility login (`/_matrix/client/v3/login`, what
//! Matrix clients use with MAS), whose session is logged out at once. MAS
//! rate-limits those logins (by default 3 a minute from one address, per its
//! `rate_limiting.login`); the module then waits as MAS asks, up to
//! [`LOGIN_RATE_LIMIT_WAIT`] a request, whatever `wait_timeout` says (one
//! client serves MAS's admin API and its logins, so a 429 of the admin API
//! is waited out as long).

mod admin_api;
mod capabilities;
mod emails;
mod homeserver;
mod listing;
mod oauth;
mod personal_token;
mod registration_tokens;
mod upstream_links;
mod users;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use self::admin_api::unexpected;
use self::emails::{loose_key, same_address, show_as_declared};
use self::users::{mas_account, parse_user};
use super::client_api::{logout, send_login};
use super::{AccountServer, ServerError};
use crate::backend::service_account::confirm_server_name;
use crate::backend::{Capabilities, DeclarationError};
use crate::http::{path_segment, server_word, Http};
use crate::matrix_id::UserId;
use crate::model::ModuleArgs;
use crate::model::Waited;
use crate::model::{Account, Change, DesiredUser, Seen, UpstreamLink};
use crate::secret::Secret;
use oauth::{OAuthClient, Tokens};

const PAGE_SIZE: usize = 100;
/// MAS's default `passwords.minimum_complexity`, when site-config omits it.
const DEFAULT_MINIMUM_COMPLEXITY: u64 = 3;
/// How long one compatibility login may wait for MAS's login rate limit
/// (`rate_limiting.login`), whatever `wait_timeout` says: MAS asks for that
/// wait on purpose, and under its defaults (3 a minute from one address)
/// checking many passwords takes minutes.
const LOGIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(600);
/// The name the password check's short session carries in MAS and on the homeserver.
const CHECK_DEVICE_NAME: &str = "matrix_user password check";

pub struct Mas {
    http: Http,
    tokens: Tokens,
    server_name: String,
    /// `passwords.enabled` in MAS's configuration.
    password_login: bool,
    minimum_complexity: u64,
    /// `mas_adopt_existing`: create users the homeserver already has.
    adopt_existing: bool,
    /// What MAS said about each user read so far, for the writes that follow.
    known: RefCell<HashMap<UserId, MasUser>>,
    /// The ID of each upstream provider the declaration names, as it names it.
    providers: RefCell<HashMap<String, String>>,
    /// The homeserver behind MAS (`homeserver_url`), for display names.
    homeserver: Option<Http>,
    /// The display name the homeserver showed for each user read so far,
    /// for the message that refuses to change it.
    shown_displaynames: RefCell<HashMap<UserId, Option<String>>>,
    /// How many users are read at once (`concurrency`).
    concurrency: usize,
    /// The ID of each registration token listed, by its string: MAS's API
    /// names a token by ID only.
    registration_token_ids: RefCell<HashMap<String, String>>,
}

/// A user as MAS's admin API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MasUser {
    /// MAS's ULID, which every write addresses.
    id: String,
    admin: bool,
    deactivated: bool,
    locked: bool,
    /// Read only when the declaration manages them.
    links: Vec<MasLink>,
    /// Its e-mail addresses, always read.
    emails: Vec<MasEmail>,
}

impl MasUser {
    fn addresses(&self) -> Vec<String> {
        self.emails.iter().map(|e| e.address.clone()).collect()
    }
}

/// An e-mail address as MAS lists it: its ID, which removing it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MasEmail {
    id: String,
    address: String,
}

/// An upstream link as MAS lists it: its ID, which removing it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MasLink {
    id: String,
    shown: UpstreamLink,
}

/// A failure only MAS reports, wrapped in [`ServerError::Mas`]. Messages
/// say what failed and what to change in MAS or in the declaration.
#[derive(Debug, thiserror::Error)]
pub enum MasError {
    /// MAS's token endpoint refused the OAuth2 client (wrong ID or secret,
    /// or a client that may not use the client-credentials grant).
    #[error("MAS refused the OAuth2 client {client_id} ({code}{detail}): mas_client_id/mas_client_secret are wrong, or MAS's configuration does not list that client under clients: with client_auth_method client_secret_basic or client_secret_post; copy both from MAS's configuration")]
    ClientRefused {
        client_id: String,
        code: String,
        detail: String,
    },
    /// MAS's policy does not give the client the admin scope.
    #[error("MAS does not grant the urn:mas:admin scope to the OAuth2 client {client_id} ({detail}); list the client in MAS's policy.data.admin_clients")]
    AdminScopeDenied { client_id: String, detail: String },
    /// MAS refused the given `admin_token`, which the module cannot renew.
    #[error("MAS refused the admin_token ({detail}); give a current token with the urn:mas:admin scope, or mas_client_id and mas_client_secret so that matrix_user fetches its own")]
    TokenRefused { detail: String },
    /// MAS is configured without passwords (`passwords.enabled: false`).
    #[error("MAS has password login disabled (passwords.enabled: false in its configuration), so it can neither set nor check passwords; leave password and update_password out for this user, or enable passwords in MAS")]
    PasswordsDisabled,
    /// MAS's password policy refused the declared password.
    #[error("MAS refused the password as too weak: it needs a zxcvbn strength of at least {minimum} of 4 (its passwords.minimum_complexity); choose a longer, less guessable password")]
    PasswordTooWeak { minimum: u64 },
    /// The declared e-mail address belongs to another MAS user.
    #[error("the e-mail address {email} already belongs to another MAS user; declare another address, or remove it from that user first")]
    EmailInUse { email: String },
    /// The homeserver shows profiles only to requests with an access token
    /// (Synapse's `require_auth_for_profile_requests`), which MAS's admin token is not.
    #[error("the homeserver at homeserver_url shows profiles only to signed-in users (Synapse's require_auth_for_profile_requests), so matrix_user cannot read display names to compare them: leave homeserver_url out (then the display names of existing MAS users are not compared), or turn that option off")]
    ProfilesNeedToken,
    /// The provider's subject is linked to another MAS user.
    #[error("the subject {subject:?} of the upstream provider {provider:?} is already linked to another MAS user; remove that link first")]
    LinkTaken { provider: String, subject: String },
    /// `access_token_file` (or its `.session` beside it) cannot be kept safely.
    #[error("access_token_file: {0}")]
    AccessTokenFile(String),
    /// Something about the declared `user` MAS refuses or cannot do; `kind` says what.
    #[error("{}", .kind.message(.user))]
    User { user: String, kind: MasUserProblem },
    /// A declared option (`field`) MAS cannot honour; `kind` says why.
    #[error("{field}: {kind}")]
    Field {
        field: String,
        kind: MasFieldProblem,
    },
}

/// What MAS refuses or cannot do about one user ([`MasError::User`]).
#[derive(Debug)]
pub enum MasUserProblem {
    /// The homeserver behind MAS reports the username as taken or reserved.
    UsernameReserved,
    /// MAS refuses logins of a locked user, so its password cannot be compared.
    Locked,
    /// The homeserver shows an existing user's display name (`shown`: `its
    /// display name as "…"` or `no display name for it`) other than the
    /// declared one, which MAS cannot change.
    DisplaynameUnchangeable { shown: String },
    /// A new MAS user was created, but a later step failed.
    CreatedUnfinished {
        cause: Box<ServerError>,
        state: String,
        /// The changes that landed before the failure, in order.
        landed: Vec<Change>,
    },
}

impl MasUserProblem {
    /// What went wrong with `user`, and what to do.
    fn message(&self, user: &str) -> String {
        match self {
            MasUserProblem::UsernameReserved => format!("MAS will not create {user}: the homeserver reports the username as reserved or taken: either the homeserver has this account but MAS does not (a half-made account, e.g. registered through Synapse's admin API behind MAS's back; set mas_adopt_existing: true to create it in MAS so that it becomes whole), or it is in an application service's namespace (choose another username)"),
            MasUserProblem::Locked => format!("{user} is locked in MAS, so its password cannot be checked by logging in; unlock it in MAS, or use update_password: on_create"),
            MasUserProblem::DisplaynameUnchangeable { shown } => format!("the homeserver shows {shown}, not the declared one, and MAS cannot change the display name of an existing user (the homeserver keeps it): change it on the homeserver - with Synapse's admin API, PUT /_synapse/admin/v2/users/{user} with {{\"displayname\": ...}} - or in the user's Matrix client, or declare the current one"),
            MasUserProblem::CreatedUnfinished { cause, state, .. } => format!("{cause}; {user} was created in MAS, {state}"),
        }
    }
}

/// Why MAS cannot honour a declared option ([`MasError::Field`]).
#[derive(Debug, thiserror::Error)]
pub enum MasFieldProblem {
    /// A display name is declared, and MAS is older than 1.18, which ignores it at creation.
    #[error("MAS {version} cannot set display names; it needs MAS 1.18 or later: upgrade MAS, or leave displayname out")]
    DisplaynameNeedsVersion { version: String },
    /// A declared upstream provider is not one MAS lists (by ID or human name, once).
    #[error("MAS has no upstream provider {provider:?} (by ID, or by a human name only one provider has); MAS lists: {known}")]
    UnknownProvider { provider: String, known: String },
}

impl MasError {
    /// `kind`, about `user`.
    fn user(user: &UserId, kind: MasUserProblem) -> ServerError {
        ServerError::Mas(MasError::User {
            user: user.to_string(),
            kind,
        })
    }
}

/// How the module gets into MAS's admin API.
pub enum Access {
    /// A given `admin_token`, used first; the OAuth2 client, when given too,
    /// renews it once MAS refuses it.
    Token {
        token: Secret,
        renewed_by: Option<OAuthClient>,
    },
    /// The OAuth2 client alone, which fetches the first token too.
    Client(OAuthClient),
}

const EMAIL_AND_EMAILS: &str =
    "declare either email (one address the user must have; its others stay) or emails \
     (exactly the user's addresses), not both; to keep this address with emails, list it there";

/// Refuses a user declaring both `email` and `emails`, which MAS supports
/// each but not together.
fn refuse_email_and_emails(user: &DesiredUser) -> Result<(), DeclarationError> {
    match user.email.is_some() && user.emails.is_some() {
        true => Err(DeclarationError::unsupported(
            user.field_name("email"),
            EMAIL_AND_EMAILS,
        )),
        false => Ok(()),
    }
}

impl AccountServer for Mas {
    type Access = Access;

    const HAS_SERVICE_ACCOUNT: bool = false;

    const CAPABILITIES: Capabilities = capabilities::CAPABILITIES;

    fn same_email(a: &str, b: &str) -> bool {
        same_address(a, b)
    }

    fn may_share_email(a: &str, b: &str) -> bool {
        loose_key(a) == loose_key(b)
    }

    fn check_declaration(args: &ModuleArgs) -> Result<Access, DeclarationError> {
        let credentials = &args.credentials;
        let client = credentials
            .mas_client
            .as_ref()
            .map(|(id, secret)| OAuthClient::new(id.clone(), secret.clone()));
        let access = match (&credentials.admin_token, client) {
            (Some(token), client) => Access::Token {
                token: token.clone(),
                renewed_by: client,
            },
            (None, Some(client)) => Access::Client(client),
            (None, None) => {
                return Err(DeclarationError::NoCredentials(
                    "no credentials: give mas_client_id with mas_client_secret (or mas_client_secret_file), \
                     or admin_token (or admin_token_file) with the urn:mas:admin scope",
                ))
            }
        };
        Self::CAPABILITIES.refuse_unsupported(args)?;
        args.users.iter().try_for_each(refuse_email_and_emails)?;
        args.users
            .iter()
            .try_for_each(personal_token::refuse_unusable_token_file)?;
        Ok(access)
    }

    /// Gets an admin token and reads MAS's site configuration (server name,
    /// whether passwords are enabled). Changes nothing.
    async fn connect(args: &ModuleArgs, access: Access, http: Http) -> Result<Mas, ServerError> {
        let http = http
            .naming("MAS")
            .waiting_out_rate_limits(LOGIN_RATE_LIMIT_WAIT);
        let (token, client) = match access {
            Access::Token { token, renewed_by } => (token, renewed_by),
            Access::Client(client) => (client.fetch_token(&http).await?, Some(client)),
        };
        // The homeserver behind MAS, when given: its profiles show the
        // display names MAS cannot.
        let homeserver = match args.server.endpoint("homeserver_url") {
            Some(endpoint) => Some(Http::new(&endpoint)?),
            None => None,
        };
        let mut mas = Mas {
            http,
            tokens: Tokens::new(token, client),
            server_name: String::new(),
            password_login: true,
            minimum_complexity: DEFAULT_MINIMUM_COMPLEXITY,
            adopt_existing: args.mas_adopt_existing,
            known: RefCell::new(HashMap::new()),
            providers: RefCell::new(HashMap::new()),
            homeserver,
            shown_displaynames: RefCell::new(HashMap::new()),
            concurrency: args.concurrency,
            registration_token_ids: RefCell::new(HashMap::new()),
        };
        let what = "reading MAS's site configuration";
        let reply = mas.admin(Method::GET, "/site-config", None).await?;
        if reply.status != StatusCode::OK {
            return Err(ServerError::refused(what, &reply));
        }
        let config = &reply.body;
        mas.server_name = config
            .get("server_name")
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected(what, "no server_name"))?
            .to_string();
        mas.password_login = config
            .get("password_login_enabled")
            .and_then(Value::as_bool)
            .ok_or_else(|| unexpected(what, "no password_login_enabled"))?;
        if let Some(minimum) = config
            .get("minimum_password_complexity")
            .and_then(Value::as_u64)
        {
            mas.minimum_complexity = minimum;
        }
        mas.server_name = confirm_server_name(args, mas.server_name)?;
        if let Some(named) = args.users.iter().find(|u| u.displayname.is_some()) {
            mas.refuse_displaynames_before_1_18(named).await?;
        }
        mas.reach_homeserver(&args.users).await?;
        if args.users.iter().any(|u| u.login.upstream_links.is_some()) {
            mas.resolve_providers(&args.users).await?;
        }
        Ok(mas)
    }

    fn server_name(&self) -> &str {
        &self.server_name
    }

    /// MAS does not show display names; a new user without one gets the homeserver's default.
    fn default_displayname(&self, _user: &UserId) -> Option<String> {
        None
    }

    /// Without password login MAS can neither take nor check a password, and
    /// a user created without one could not log in. MAS cannot change an
    /// existing user's display name, which the plan changes only where the
    /// homeserver showed another one.
    fn refuse_impossible(&self, user: &UserId, changes: &[Change]) -> Result<(), ServerError> {
        if changes.contains(&Change::SetDisplayname) {
            let shown = match self.shown_displaynames.borrow().get(user) {
                Some(Some(name)) => format!("its display name as {:?}", server_word(name)),
                _ => "no display name for it".to_string(),
            };
            return Err(MasError::user(
                user,
                MasUserProblem::DisplaynameUnchangeable { shown },
            ));
        }
        let needs_password = changes.iter().any(|c| {
            matches!(
                c,
                Change::Create { .. } | Change::Reactivate { .. } | Change::SetPassword { .. }
            )
        });
        if needs_password && !self.password_login {
            return Err(ServerError::Mas(MasError::PasswordsDisabled));
        }
        Ok(())
    }

    async fn account(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Option<Account>, ServerError> {
        let what = "reading the user";
        let path = format!("/users/by-username/{}", path_segment(user.localpart()));
        let reply = self.admin(Method::GET, &path, None).await?;
        let mut found = match reply.status {
            StatusCode::OK => {
                let mut found = parse_user(&reply.body, what)?;
                if desired.login.upstream_links.is_some() {
                    found.links = self.upstream_links(&found.id, desired).await?;
                }
                found
            }
            StatusCode::NOT_FOUND => {
                self.known.borrow_mut().remove(user);
                self.refuse_taken_emails(desired, None, &[]).await?;
                self.refuse_taken_links(desired, None).await?;
                return Ok(None);
            }
            _ => return Err(ServerError::refused(what, &reply)),
        };
        found.emails = self.emails(&found.id).await?;
        let found_by_mas = self
            .refuse_taken_emails(desired, Some(&found.id), &found.emails)
            .await?;
        show_as_declared(&mut found.emails, desired, &found_by_mas);
        self.refuse_taken_links(desired, Some(&found)).await?;
        let displayname = self.homeserver_displayname(user, desired).await?;
        let account = mas_account(&found, Seen::Known(found.addresses()), displayname);
        self.known.borrow_mut().insert(user.clone(), found);
        Ok(Some(account))
    }

    async fn accounts_from_list(
        &self,
        users: &[UserId],
        declared: &[DesiredUser],
        most: u64,
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        self.list_accounts(users, declared, most).await
    }

    async fn local_accounts(&self) -> Result<Vec<(UserId, Account)>, ServerError> {
        self.list_local_accounts().await
    }

    /// Application services and the server-notices user register on the
    /// homeserver, never in MAS, so MAS's user list holds none of them.
    async fn is_appservice_user(&self, _user: &UserId) -> Result<bool, ServerError> {
        Ok(false)
    }

    /// MAS's admin API has no rate limit; its compatibility logins (the
    /// password checks) have one.
    fn waited(&self) -> Option<Waited> {
        let seconds = self.http.rate_limited_for().as_secs();
        (seconds > 0).then(|| Waited {
            seconds,
            reason:
                "MAS rate-limits compatibility logins (rate_limiting.login in its configuration, \
                     by default 3 a minute from one address), which the password checks of \
                     update_password: always use; the seconds are summed over the checks made at \
                     the same time. Raise rate_limiting.login in MAS for a bulk password check"
                    .to_string(),
        })
    }

    async fn access_token_valid(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<bool, ServerError> {
        let found = self.known_user(user, desired).await?;
        self.personal_token_valid(&found.id, desired).await
    }

    async fn password_matches(
        &self,
        user: &UserId,
        password: &Secret,
    ) -> Result<bool, ServerError> {
        if !self.password_login {
            return Err(ServerError::Mas(MasError::PasswordsDisabled));
        }
        let reply = send_login(&self.http, user.localpart(), password, CHECK_DEVICE_NAME).await?;
        match (reply.status, reply.errcode()) {
            (StatusCode::OK, _) => {}
            // Also MAS's answer for a user without a password.
            (StatusCode::FORBIDDEN, "M_FORBIDDEN") => return Ok(false),
            (StatusCode::UNAUTHORIZED, "M_USER_LOCKED") => {
                return Err(MasError::user(user, MasUserProblem::Locked))
            }
            (StatusCode::BAD_REQUEST, _) if reply.explanation() == "Invalid login type" => {
                return Err(ServerError::Mas(MasError::PasswordsDisabled))
            }
            _ => return Err(ServerError::refused("checking the password", &reply)),
        }
        let session = reply
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .map(Secret::new)
            .ok_or_else(|| unexpected("checking the password", "no access_token"))?;
        let whose = format!("{user} as \"{CHECK_DEVICE_NAME}\" (end it in MAS)");
        logout(&self.http, &session, &whose).await.map(|()| true)
    }

    async fn create(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError> {
        self.create_account(user, desired, Some(password)).await
    }

    async fn update(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError> {
        let created = Change::CreateWithoutPassword;
        if changes.contains(&created) {
            self.create_account(user, desired, None).await?;
            // What fails from here on fails a user that exists now.
            return self.apply(user, desired, changes).await.map_err(|cause| {
                let landed = std::iter::once(created)
                    .chain(cause.landed().to_vec())
                    .collect();
                MasError::user(
                    user,
                    MasUserProblem::CreatedUnfinished {
                        cause: Box::new(cause),
                        state: "without a password (it logs in upstream); run again to finish it"
                            .to_string(),
                        landed,
                    },
                )
            });
        }
        self.apply(user, desired, changes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_problem_names_its_user_and_keeps_what_landed() {
        let locked = ServerError::Mas(MasError::User {
            user: "@bob:example.org".into(),
            kind: MasUserProblem::Locked,
        });
        assert_eq!(locked.to_string(), "@bob:example.org is locked in MAS, so its password cannot be checked by logging in; unlock it in MAS, or use update_password: on_create");
        assert!(locked.landed().is_empty());

        let unfinished = ServerError::Mas(MasError::User {
            user: "@bob:example.org".into(),
            kind: MasUserProblem::CreatedUnfinished {
                cause: Box::new(ServerError::SharedSecretDisabled),
                state: "without a password".into(),
                landed: vec![Change::SetAdmin(true)],
            },
        });
        assert!(
            unfinished
                .to_string()
                .ends_with("; @bob:example.org was created in MAS, without a password"),
            "{unfinished}"
        );
        assert_eq!(unfinished.landed(), &[Change::SetAdmin(true)]);
    }
}
