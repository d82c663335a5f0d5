//! The shared model every stage uses: the user as the playbook declares it
//! (built by the args stage), the account as a read observes it (built by
//! the backends), and the changes the plan stage decides between the two.
//! Types only: parsing, observing and deciding live in their own stages.

use std::sync::Arc;

use serde::Serialize;

use crate::matrix_id::{Room, Username};
use crate::secret::Secret;

mod attribute;
mod declaration;
pub mod tokens;

pub use attribute::{same_set, Attribute, ATTRIBUTES};
pub use declaration::{ArgsError, ArgsErrorKind, Credentials, ModuleArgs, ServerOptions};

/// Which server implementation holds the users (the `homeserver` parameter).
/// What each can manage is its backend's business (`check_declaration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HomeserverKind {
    #[default]
    Synapse,
    Dendrite,
    /// The Matrix Authentication Service, when the homeserver delegates accounts to it.
    Mas,
}

impl HomeserverKind {
    /// Every kind, in the order the `homeserver` parameter lists them.
    pub const ALL: [HomeserverKind; 3] = [
        HomeserverKind::Synapse,
        HomeserverKind::Dendrite,
        HomeserverKind::Mas,
    ];

    /// The value of the `homeserver` parameter that chooses this kind.
    pub fn name(self) -> &'static str {
        match self {
            HomeserverKind::Synapse => "synapse",
            HomeserverKind::Dendrite => "dendrite",
            HomeserverKind::Mas => "mas",
        }
    }

    /// The parameter that gives the server's URL. With MAS, users live in
    /// MAS: the module talks to MAS, not the homeserver.
    pub fn url_field(self) -> &'static str {
        match self {
            HomeserverKind::Mas => "mas_url",
            _ => "homeserver_url",
        }
    }
}

/// When a declared password is written to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdatePassword {
    /// Only when the user is created (Ansible's `user` module calls this `on_create`).
    OnCreate,
    /// Whenever the stored password differs from the declared one.
    Always,
}

/// When a declared `admin` flag and `user_type` are written to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateType {
    /// Only when the user is created: matrix-docker-ansible-deploy's
    /// `initial_type`, which a later hand promotion outlives.
    OnCreate,
    /// Whenever the account's flag or type differs from the declared one.
    Always,
}

/// Whether the account should exist and be usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Present,
    /// Deactivated: the account stays reserved but nobody can log in.
    Absent,
}

/// Synapse's user types; `Regular` is the type of ordinary accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserType {
    Regular,
    Bot,
    Support,
    /// A type the server's configuration adds (Synapse's
    /// `user_types.extra_user_types`); only the server knows whether it exists.
    Extra(String),
}

impl UserType {
    pub fn from_name(name: &str) -> UserType {
        match name {
            "regular" => UserType::Regular,
            "bot" => UserType::Bot,
            "support" => UserType::Support,
            other => UserType::Extra(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            UserType::Regular => "regular",
            UserType::Bot => "bot",
            UserType::Support => "support",
            UserType::Extra(name) => name,
        }
    }
}

/// One user as the playbook declares it. `None` means "not managed": the
/// module leaves that attribute of an existing user alone.
#[derive(Debug, Clone)]
pub struct DesiredUser {
    /// Where the user was declared (`username` or `users[3]`), for messages.
    pub field: String,
    pub username: Username,
    pub password: Option<Secret>,
    pub admin: Option<bool>,
    pub user_type: Option<UserType>,
    pub displayname: Option<String>,
    pub state: UserState,
    pub update_password: UpdatePassword,
    pub update_type: UpdateType,
    pub erase: bool,
    /// An address the user must have (MAS only), verified, so no e-mail round trip is needed.
    pub email: Option<String>,
    /// Each restriction the account must have (`true`) or not have (`false`).
    pub restrictions: Restrictions<Option<bool>>,
    /// The rate-limit override the account must have; `Some(None)`
    /// (`ratelimit: default`) means none, so the server's limits apply.
    pub ratelimit: Option<Option<Ratelimit>>,
    /// Exactly the e-mail addresses the account must have (Synapse's
    /// threepids), in the form the server keeps them in (the reconcile
    /// stage puts them in it): `Some(vec![])` removes all.
    pub emails: Option<Vec<String>>,
    /// Exactly the SSO identities the account must have: `Some(vec![])` removes all.
    pub external_ids: Option<Vec<ExternalId>>,
    /// Rooms the account must be joined to; empty: membership is not
    /// managed. Joins only: a room left out is never left.
    pub rooms: Vec<Room>,
    pub avatar: Option<Avatar>,
    /// Where, on the managed host, to keep a valid personal access token of
    /// the user (MAS only), for a bot to read.
    pub access_token_file: Option<std::path::PathBuf>,
    /// How the user logs in besides its password.
    pub login: LoginOptions,
}

/// How a user logs in besides its password: through upstream identity
/// providers, and whether the server's password policy applies. Only MAS
/// takes them today (`mas_skip_password_check`, `upstream_links`); each
/// backend refuses what it cannot manage.
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// Set the password even if the server's complexity policy would refuse it.
    pub skip_password_check: bool,
    /// The user's links to upstream identity providers, exactly; `None`: not managed.
    pub upstream_links: Option<Vec<UpstreamLink>>,
}

/// A link of a user to its account at an upstream identity provider (MAS
/// logs the user in through it), the provider by MAS's ID or human name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamLink {
    pub provider: String,
    pub subject: String,
}

impl DesiredUser {
    /// `username`, present, declared at `field` with nothing else managed.
    pub fn managing_nothing(field: String, username: Username) -> DesiredUser {
        DesiredUser {
            field,
            username,
            password: None,
            admin: None,
            user_type: None,
            displayname: None,
            state: UserState::Present,
            update_password: UpdatePassword::OnCreate,
            update_type: UpdateType::Always,
            erase: false,
            email: None,
            restrictions: Restrictions::default(),
            ratelimit: None,
            emails: None,
            external_ids: None,
            rooms: Vec::new(),
            avatar: None,
            access_token_file: None,
            login: LoginOptions::default(),
        }
    }

    /// Whether it declares what only one account can hold (an e-mail
    /// address, an SSO identity, an upstream link), whose holder the read
    /// of a user looks up, before a new user is created too.
    pub fn claims_identifiers(&self) -> bool {
        self.email.is_some()
            || self.emails.as_ref().is_some_and(|e| !e.is_empty())
            || self.external_ids.as_ref().is_some_and(|e| !e.is_empty())
            || self
                .login
                .upstream_links
                .as_ref()
                .is_some_and(|l| !l.is_empty())
    }

    /// How to name one of this user's fields in a message (`users[3].admin`).
    pub fn field_name(&self, name: &str) -> String {
        match self.field.as_str() {
            "username" => name.to_string(),
            prefix => format!("{prefix}.{name}"),
        }
    }
}

/// One fact about an account as a read found it: known, or not visible to
/// this run (Dendrite without its database shows neither the admin flag
/// nor deactivation). The plan never guesses an unknown fact; the diff
/// shows it as the string `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seen<T> {
    Known(T),
    #[default]
    Unknown,
}

impl<T> Seen<T> {
    pub fn is_unknown(&self) -> bool {
        matches!(self, Seen::Unknown)
    }
}

impl<T: Serialize> Serialize for Seen<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Seen::Known(value) => value.serialize(s),
            Seen::Unknown => s.serialize_str("unknown"),
        }
    }
}

/// What an admin can do to an account short of deactivating it, each undone
/// by setting it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    /// Nobody can log in; nothing is erased.
    Locked,
    /// The user can read but not send (Synapse's suspension, MSC3823).
    Suspended,
    /// What the user sends is accepted but shown to nobody else.
    ShadowBanned,
}

impl Restriction {
    pub const ALL: [Restriction; 3] = [
        Restriction::Locked,
        Restriction::Suspended,
        Restriction::ShadowBanned,
    ];

    /// The per-user parameter that declares it.
    pub fn field(self) -> &'static str {
        match self {
            Restriction::Locked => "locked",
            Restriction::Suspended => "suspended",
            Restriction::ShadowBanned => "shadow_banned",
        }
    }
}

/// One value per [`Restriction`]: what is declared (`Option<bool>`) or seen (`Seen<bool>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restrictions<T> {
    pub locked: T,
    pub suspended: T,
    pub shadow_banned: T,
}

impl<T: Copy> Restrictions<T> {
    pub fn get(&self, restriction: Restriction) -> T {
        match restriction {
            Restriction::Locked => self.locked,
            Restriction::Suspended => self.suspended,
            Restriction::ShadowBanned => self.shadow_banned,
        }
    }

    pub fn set(&mut self, restriction: Restriction, value: T) {
        match restriction {
            Restriction::Locked => self.locked = value,
            Restriction::Suspended => self.suspended = value,
            Restriction::ShadowBanned => self.shadow_banned = value,
        }
    }
}

/// Only the restrictions a read saw: a server without them shows none, and
/// the diffs of servers and reads that have them stay as they were.
impl Serialize for Restrictions<Seen<bool>> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for restriction in Restriction::ALL {
            if let Seen::Known(value) = self.get(restriction) {
                map.serialize_entry(restriction.field(), &value)?;
            }
        }
        map.end()
    }
}

/// A per-user override of the server's message rate limit, which bots need
/// (Synapse's `override_ratelimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ratelimit {
    pub messages_per_second: u64,
    pub burst_count: u64,
}

impl Ratelimit {
    /// Synapse documents both at 0 as no rate limit at all.
    pub const UNLIMITED: Ratelimit = Ratelimit {
        messages_per_second: 0,
        burst_count: 0,
    };
}

/// A seen override as it is declared: `default` (none), `unlimited`, or the two numbers.
fn serialize_ratelimit<S: serde::Serializer>(
    ratelimit: &Seen<Option<Ratelimit>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ratelimit {
        Seen::Known(None) => s.serialize_str("default"),
        Seen::Known(Some(Ratelimit::UNLIMITED)) => s.serialize_str("unlimited"),
        Seen::Known(Some(ratelimit)) => ratelimit.serialize(s),
        Seen::Unknown => s.serialize_str("unknown"),
    }
}

/// An identity at an SSO provider that logs in as the account (Synapse's
/// `external_ids`), so that an SSO login lands on the existing account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ExternalId {
    pub auth_provider: String,
    pub external_id: String,
}

impl std::fmt::Display for ExternalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.external_id, self.auth_provider)
    }
}

/// The avatar a user must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Avatar {
    /// An `mxc://server/media_id` URI, set as it is.
    Uri(String),
    /// An image on the managed host, uploaded unless the avatar already has its content.
    File(AvatarFile),
}

impl Avatar {
    /// As the playbook gave it: the URI, or the file's path.
    pub fn declared(&self) -> &str {
        match self {
            Avatar::Uri(uri) => uri,
            Avatar::File(file) => &file.path,
        }
    }
}

/// An image file, read and checked before anything is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct AvatarFile {
    pub path: String,
    /// Its media type, judged by its first bytes.
    pub content_type: &'static str,
    /// Shared: every copy of the declaration holds the same content.
    pub bytes: Arc<[u8]>,
}

/// The path and type, not the content.
impl std::fmt::Debug for AvatarFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AvatarFile({}, {}, {} bytes)",
            self.path,
            self.content_type,
            self.bytes.len()
        )
    }
}

/// An account's avatar as a read saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenAvatar {
    /// Its mxc URI, `None` when it has none. A prediction shows an avatar
    /// still to be uploaded as the file's path.
    pub uri: Option<String>,
    /// Whether its content is the declared file's: read (downloaded) only
    /// for a user that declares a file.
    pub is_declared_file: Option<bool>,
}

/// A seen avatar as the diff shows it: its URI (or the file to upload), `null` for none.
fn serialize_avatar<S: serde::Serializer>(
    avatar: &Seen<SeenAvatar>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match avatar {
        Seen::Known(avatar) => avatar.uri.serialize(s),
        Seen::Unknown => s.serialize_str("unknown"),
    }
}

/// A fact a plan may need but a read may not have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// Whether the account is a server admin.
    Admin,
    /// Whether the account is deactivated.
    Deactivated,
    Restriction(Restriction),
    /// Whether the account has a rate-limit override, and which.
    Ratelimit,
    Emails,
    ExternalIds,
    /// Which of the declared rooms the account has joined.
    Rooms,
    /// The account's avatar, and whether it is the declared file's content.
    Avatar,
}

impl std::fmt::Display for Fact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fact::Admin => "whether it is a server admin",
            Fact::Deactivated => "whether it is deactivated",
            Fact::Restriction(Restriction::Locked) => "whether it is locked",
            Fact::Restriction(Restriction::Suspended) => "whether it is suspended",
            Fact::Restriction(Restriction::ShadowBanned) => "whether it is shadow-banned",
            Fact::Ratelimit => "its rate-limit override",
            Fact::Emails => "its e-mail addresses",
            Fact::ExternalIds => "its SSO identities (external_ids)",
            Fact::Rooms => "which of the declared rooms it has joined",
            Fact::Avatar => "its avatar",
        })
    }
}

/// An account as the homeserver reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub admin: Seen<bool>,
    pub deactivated: Seen<bool>,
    #[serde(serialize_with = "serialize_user_type")]
    pub user_type: UserType,
    /// `None`: it has none. Unknown when the read cannot see it (MAS shows
    /// none; the homeserver behind it, when given, may): an unknown one is
    /// not compared, and the diff leaves it out.
    #[serde(skip_serializing_if = "Seen::is_unknown")]
    pub displayname: Seen<Option<String>>,
    /// Addresses the account has: always read on MAS, on Synapse only for a
    /// user that declares `emails` (its user list lacks them).
    #[serde(skip_serializing_if = "Seen::is_unknown")]
    pub emails: Seen<Vec<String>>,
    /// Its upstream links (MAS only; empty elsewhere), each provider as declared when it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_links: Vec<UpstreamLink>,
    #[serde(flatten)]
    pub restrictions: Restrictions<Seen<bool>>,
    /// Read only for a user that declares `ratelimit` (it is not in Synapse's user list).
    #[serde(
        skip_serializing_if = "Seen::is_unknown",
        serialize_with = "serialize_ratelimit"
    )]
    pub ratelimit: Seen<Option<Ratelimit>>,
    /// Read only for a user that declares `external_ids` (not in Synapse's user list).
    #[serde(skip_serializing_if = "Seen::is_unknown")]
    pub external_ids: Seen<Vec<ExternalId>>,
    /// Of the declared rooms, those the account has joined, named as
    /// declared; read only for a user that declares rooms (membership is
    /// not in Synapse's user list, and the rest of it is not managed).
    #[serde(skip_serializing_if = "Seen::is_unknown")]
    pub rooms: Seen<Vec<Room>>,
    /// Read only for a user that declares `avatar` (Synapse's list is not
    /// asked for it, and a file's content is compared apart).
    #[serde(
        skip_serializing_if = "Seen::is_unknown",
        serialize_with = "serialize_avatar"
    )]
    pub avatar: Seen<SeenAvatar>,
}

impl Account {
    /// An account of which a read saw nothing yet: a regular user without
    /// upstream links, every other fact unknown. Each read fills in what it
    /// sees, so that an attribute a server does not show needs no line there.
    pub fn unseen() -> Account {
        Account {
            admin: Seen::Unknown,
            deactivated: Seen::Unknown,
            user_type: UserType::Regular,
            displayname: Seen::Unknown,
            emails: Seen::Unknown,
            upstream_links: Vec::new(),
            restrictions: Restrictions::default(),
            ratelimit: Seen::Unknown,
            external_ids: Seen::Unknown,
            rooms: Seen::Unknown,
            avatar: Seen::Unknown,
        }
    }

    /// Whether this read lacks something `desired` manages, so that the
    /// user must be read alone (Synapse's list has no `suspended`, no
    /// rate-limit override, no room membership, no e-mail addresses, no
    /// SSO identities and no avatar content).
    pub fn lacks_any_of(&self, desired: &DesiredUser) -> bool {
        ATTRIBUTES.iter().any(|a| a.lacks(desired, self))
    }
}

fn serialize_user_type<S: serde::Serializer>(
    user_type: &UserType,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(user_type.as_str())
}

/// Everything read from the server about one declared user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `None` when the user does not exist.
    pub account: Option<Account>,
    /// Whether the declared password is the stored one; only read when
    /// `update_password: always` makes it matter.
    pub password_matches: Option<bool>,
    /// Whether `access_token_file` holds a token the server still accepts;
    /// only read for an existing user that declares the file.
    pub access_token_valid: Option<bool>,
}

/// One change to make on the server. The changes that write a password
/// carry it, so a backend never looks for one the plan did not give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Register the user with every declared attribute and this password.
    Create {
        password: Secret,
    },
    /// Make a deactivated account usable again, with this password.
    Reactivate {
        password: Secret,
    },
    SetAdmin(bool),
    /// Replace the stored password, which differs, with this one.
    SetPassword {
        password: Secret,
    },
    SetDisplayname,
    SetUserType(UserType),
    /// Add this declared e-mail address, which the account lacks.
    AddEmail(String),
    /// Apply (`true`) or lift (`false`) a restriction.
    Restrict(Restriction, bool),
    /// Set this rate-limit override, or remove it (`None`).
    SetRatelimit(Option<Ratelimit>),
    /// Make the account's e-mail addresses exactly the declared ones.
    SetEmails,
    /// Make the account's SSO identities exactly the declared ones.
    SetExternalIds,
    /// Join these declared rooms, which the account has not joined.
    JoinRooms(Vec<Room>),
    /// Give the account this avatar, uploading it first when it is a file.
    SetAvatar(Avatar),
    /// Create the user without a password: it logs in through its upstream links.
    CreateWithoutPassword,
    /// Reactivate such a user, which needs no password either.
    ReactivateWithoutPassword,
    /// Link the account to this account at an upstream identity provider.
    AddUpstreamLink(UpstreamLink),
    /// Remove this link to an upstream identity provider.
    RemoveUpstreamLink(UpstreamLink),
    Deactivate {
        erase: bool,
    },
    /// Get a new personal access token and write it to `access_token_file`.
    WriteAccessToken,
}

impl Change {
    /// The word the module reports for this change: the creation, the
    /// password and deactivation here, each attribute's by its unit.
    pub fn describe(&self) -> &'static str {
        match self {
            Change::Create { .. } | Change::CreateWithoutPassword => "created",
            Change::Reactivate { .. } | Change::ReactivateWithoutPassword => "reactivated",
            Change::SetPassword { .. } => "password changed",
            Change::Deactivate { erase: false } => "deactivated",
            Change::Deactivate { erase: true } => "deactivated and erased",
            Change::WriteAccessToken => "access token written",
            change => ATTRIBUTES
                .iter()
                .find_map(|attribute| attribute.describe(change))
                .unwrap_or("changed"),
        }
    }
}

/// What happens to local accounts the list form (`users`) does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Undeclared {
    /// Left alone (the default).
    #[default]
    Keep,
    /// Locked: nobody can log in, nothing is erased, unlocking undoes it.
    Lock,
    /// Deactivated, not erased.
    Deactivate,
}

impl Undeclared {
    pub const ALL: [Undeclared; 3] = [Undeclared::Keep, Undeclared::Lock, Undeclared::Deactivate];

    /// The value of the `undeclared` parameter.
    pub fn name(self) -> &'static str {
        match self {
            Undeclared::Keep => "keep",
            Undeclared::Lock => "lock",
            Undeclared::Deactivate => "deactivate",
        }
    }
}

/// The `undeclared` option with the patterns and the limit that go with it.
#[derive(Debug, Clone)]
pub struct UndeclaredPolicy {
    pub action: Undeclared,
    /// Localparts that are never touched; each pattern matches the whole localpart.
    pub ignore: Vec<regex::Regex>,
    /// The most accounts one run may touch; more fails the run before any change.
    pub max: usize,
}

impl UndeclaredPolicy {
    pub const DEFAULT_MAX: usize = 10;
}

impl Default for UndeclaredPolicy {
    fn default() -> Self {
        UndeclaredPolicy {
            action: Undeclared::Keep,
            ignore: Vec::new(),
            max: UndeclaredPolicy::DEFAULT_MAX,
        }
    }
}

/// A wait the server asked for (429s), reported so that a slow run explains itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited {
    pub seconds: u64,
    pub reason: String,
}
