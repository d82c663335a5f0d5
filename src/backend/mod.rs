//! Stage 2 and 4: read accounts from the server that holds them and apply
//! planned changes. Each such server (a homeserver, Synapse or Dendrite, or
//! MAS, which holds the accounts of the homeservers that delegate to it) is
//! a folder behind the [`AccountServer`] trait, whose files are its jobs
//! (users, rooms, media, listing, e-mails, upstream links...); nothing
//! outside this folder knows about HTTP paths or server quirks, including
//! what each server can manage and which credentials it takes
//! ([`AccountServer::check_declaration`], before any request, with the
//! shared rules of [`declaration`]).
//!
//! Shared by the homeservers: [`client_api`] (login, logout, whoami, a
//! user's display name, which MAS reads from the homeserver behind it too),
//! [`shared_secret`] (registration with the shared secret),
//! [`service_account`] (who the module acts as), [`token_cache`] (where
//! that account's token is kept) and [`proxy`] (a reverse proxy's answer
//! told from the homeserver's). [`ServerError`] is in [`error`], and when a
//! bulk read pays in [`listing`].

mod capabilities;
mod client_api;
mod declaration;
pub mod dendrite;
mod error;
mod listing;
pub mod mas;
mod proxy;
mod service_account;
mod shared_secret;
#[cfg(feature = "databases")]
mod sql;
pub mod synapse;
mod token_admin;
mod token_cache;

use std::collections::HashMap;

use crate::http::Http;
use crate::matrix_id::UserId;
use crate::model::tokens::{ObservedToken, Registration, TokenSettings};
use crate::model::ModuleArgs;
use crate::model::{Account, Change, DesiredUser, Fact};
use crate::secret::Secret;

pub use self::capabilities::Capabilities;
pub use self::declaration::DeclarationError;
pub use self::error::{ServerError, UserErrorKind};

/// What a server that holds the accounts must offer the reconciler.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait AccountServer {
    /// What lets the module in, as [`AccountServer::check_declaration`]
    /// finds it in the declaration.
    type Access;

    /// Whether the module registers and acts as `service_account` here
    /// (with the shared secret and no `admin_token`). MAS lets it in as an
    /// OAuth2 client, which is no user.
    const HAS_SERVICE_ACCOUNT: bool = true;

    /// What this server can manage, from which
    /// [`AccountServer::check_declaration`] refuses what it cannot.
    const CAPABILITIES: Capabilities;

    /// Refuses, before any request, what this server cannot do with the
    /// declaration: credentials it cannot use, fields it has no notion of
    /// or cannot compare, values it would refuse. Messages name the field.
    /// Returns the credentials to connect with.
    fn check_declaration(args: &ModuleArgs) -> Result<Self::Access, DeclarationError>
    where
        Self: Sized;

    /// `address` (declared or read back) in the form this server keeps
    /// it in, which is what is sent, shown and compared; `Err` says what to
    /// declare instead, when the server's form cannot be told.
    fn email_form(address: &str) -> Result<String, String>
    where
        Self: Sized,
    {
        Ok(address.to_string())
    }

    /// Whether this server takes two addresses, each in its form, for one.
    fn same_email(a: &str, b: &str) -> bool
    where
        Self: Sized,
    {
        a == b
    }

    /// Whether this server may take two addresses for one, as some of its
    /// set-ups do: two users cannot both be declared to hold them.
    fn may_share_email(a: &str, b: &str) -> bool
    where
        Self: Sized,
    {
        Self::same_email(a, b)
    }

    /// Authenticates with `access` through `http` and learns what the
    /// reconciler needs (the server name). Changes no managed user.
    async fn connect(
        args: &ModuleArgs,
        access: Self::Access,
        http: Http,
    ) -> Result<Self, ServerError>
    where
        Self: Sized;

    /// The server name user IDs end with (`example.com` in `@alice:example.com`).
    fn server_name(&self) -> &str;

    /// Reads the accounts of all `users` at once, when that is cheaper than
    /// one read per user; `declared` holds their declarations, in the same
    /// order. `None` asks the caller to use [`AccountServer::account`]. By
    /// default the server's lists are read
    /// ([`AccountServer::accounts_from_list`]) when the users are many
    /// enough for that to pay ([`listing::list_budget`]).
    async fn accounts(
        &self,
        users: &[UserId],
        declared: &[DesiredUser],
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        match listing::list_budget(users.len()) {
            Some(most) => self.accounts_from_list(users, declared, most).await,
            None => Ok(None),
        }
    }

    /// The accounts of `users` (declared as `declared`) from the server's
    /// lists, paging through at most `most` listed items; `None` (the
    /// default, for servers without a list) when reading each alone is
    /// cheaper. A user missing from the list does not exist.
    async fn accounts_from_list(
        &self,
        _users: &[UserId],
        _declared: &[DesiredUser],
        _most: u64,
    ) -> Result<Option<HashMap<UserId, Account>>, ServerError> {
        Ok(None)
    }

    /// Every local account but guests, deactivated accounts and the one the
    /// module acts as, for `undeclared`. Only servers whose
    /// `check_declaration` accepts `undeclared` are asked.
    async fn local_accounts(&self) -> Result<Vec<(UserId, Account)>, ServerError> {
        Err(ServerError::Unexpected {
            what: "listing users".into(),
            detail: "this server cannot list its users for undeclared".into(),
        })
    }

    /// Whether `user` belongs to an application service (a bridge's
    /// puppet), which `undeclared` never touches.
    async fn is_appservice_user(&self, _user: &UserId) -> Result<bool, ServerError> {
        Err(ServerError::Unexpected {
            what: "reading users".into(),
            detail: "this server cannot tell application-service users for undeclared".into(),
        })
    }

    /// Reads one account; `None` when it does not exist. `desired` tells a
    /// server whose reads differ in cost by field (Dendrite without its
    /// database) what the plan will compare.
    async fn account(
        &self,
        user: &UserId,
        desired: &DesiredUser,
    ) -> Result<Option<Account>, ServerError>;

    /// The display name the server gives a new user that declares none.
    fn default_displayname(&self, user: &UserId) -> Option<String> {
        Some(user.localpart().to_string())
    }

    /// Why the plan for `desired` could not be made: it depends on `fact`,
    /// which the read of `user` could not see, and what would show it. Only
    /// servers whose reads return [`crate::model::Seen::Unknown`] are asked.
    fn not_seen(&self, user: &UserId, _desired: &DesiredUser, fact: Fact) -> ServerError {
        ServerError::Unexpected {
            what: format!("reading {user}"),
            detail: format!("the homeserver did not show {fact}"),
        }
    }

    /// Refuses `changes` this server cannot make for `user` at all, found out
    /// without writing; checked in check mode too, so that it predicts right.
    fn refuse_impossible(&self, _user: &UserId, _changes: &[Change]) -> Result<(), ServerError> {
        Ok(())
    }

    /// Whether `password` is the user's stored password, leaving no session
    /// behind (and, where the server allows, without a rate-limited login).
    async fn password_matches(&self, user: &UserId, password: &Secret)
        -> Result<bool, ServerError>;

    /// Whether `desired.access_token_file` holds a personal access token of
    /// `user` that the server still accepts. Only servers whose
    /// `check_declaration` accepts `access_token_file` are asked.
    async fn access_token_valid(
        &self,
        _user: &UserId,
        _desired: &DesiredUser,
    ) -> Result<bool, ServerError> {
        Ok(true)
    }

    /// How long this run waited for the server's rate limits, and why; `None`
    /// for a server whose waits are not worth reporting.
    fn waited(&self) -> Option<crate::model::Waited> {
        None
    }

    /// Creates `user` with every declared attribute and `password` (the
    /// one [`Change::Create`] carries).
    /// [`UserErrorKind::CreatedMeanwhile`] when another run created it first.
    async fn create(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        password: &Secret,
    ) -> Result<(), ServerError>;

    /// Applies `changes` (from the plan, never `Create`) to
    /// an existing `user`.
    async fn update(
        &self,
        user: &UserId,
        desired: &DesiredUser,
        changes: &[Change],
    ) -> Result<(), ServerError>;
}

/// What a homeserver that keeps registration tokens offers the token
/// module (`matrix_registration_token`), once connected as for the users.
#[allow(async_fn_in_trait)] // used with concrete types on one thread only
pub trait RegistrationTokenServer {
    /// What the server does to a token declared absent, as results say it.
    const REMOVED: &'static str = "deleted";

    /// Every token the server has, read at once.
    async fn registration_tokens(&self) -> Result<Vec<ObservedToken>, ServerError>;

    /// Creates a token with `settings`; the server generates it when
    /// `token` is `None`. Returns it as the server keeps it.
    async fn create_registration_token(
        &self,
        token: Option<&Secret>,
        settings: TokenSettings,
    ) -> Result<ObservedToken, ServerError>;

    /// Sets the fields that are `Some` (`Some(None)`: unlimited, never),
    /// and with `revive`, unrevokes the token (only servers that revoke).
    async fn update_registration_token(
        &self,
        token: &Secret,
        uses_allowed: Option<Option<u32>>,
        expires: Option<Option<i64>>,
        revive: bool,
    ) -> Result<ObservedToken, ServerError>;

    async fn delete_registration_token(&self, token: &Secret) -> Result<(), ServerError>;

    /// What the server advertises to people who would register.
    async fn registration_advertised(&self) -> Result<Registration, ServerError>;
}

#[cfg(test)]
mod address_chars;
