//! The declaration stage 1 produces and every later stage reads: the whole
//! validated request, how to reach the server, what to authenticate with,
//! and why arguments cannot be used.

use std::path::PathBuf;
use std::time::Duration;

use crate::http::Endpoint;
use crate::matrix_id::{Username, UsernameError};
use crate::model::{DesiredUser, HomeserverKind, UndeclaredPolicy};
use crate::secret::Secret;

/// Why the module's arguments cannot be used: the field it is about
/// (`users[3].admin`; none for the args file as a whole, a missing field
/// or two that exclude each other), stated once, and what is wrong with it.
/// No message ever contains a secret value.
#[derive(Debug)]
pub struct ArgsError {
    pub field: Option<String>,
    pub kind: ArgsErrorKind,
}

impl std::error::Error for ArgsError {}

impl ArgsError {
    /// What is wrong with `field`.
    pub fn at(field: impl Into<String>, kind: ArgsErrorKind) -> ArgsError {
        ArgsError {
            field: Some(field.into()),
            kind,
        }
    }

    /// `field` has the wrong JSON type; `expected` says what it takes.
    pub fn wrong_type(field: impl Into<String>, expected: &'static str) -> ArgsError {
        ArgsError::at(field, ArgsErrorKind::WrongType { expected })
    }

    /// What is wrong with the arguments as a whole.
    pub fn new(kind: ArgsErrorKind) -> ArgsError {
        ArgsError { field: None, kind }
    }
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// What is wrong, each message saying what is accepted or what to do.
#[derive(Debug, thiserror::Error)]
pub enum ArgsErrorKind {
    /// The args file Ansible passed could not be read.
    #[error("cannot read the module arguments file {path}: {source}; run the module from an Ansible task")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The args file is not a JSON object (the module was not run by Ansible?).
    #[error(
        "the module arguments file is not a JSON object ({0}); run the module from an Ansible task"
    )]
    NotJson(String),
    /// A parameter the module does not know, usually a typo.
    #[error("unsupported parameter; valid parameters are: {valid}")]
    UnknownParameter { valid: String },
    /// A parameter has the wrong JSON type.
    #[error("expected {expected}")]
    WrongType { expected: &'static str },
    /// A parameter is not one of its accepted values.
    #[error("{value:?} is not accepted; use {accepted}")]
    NotAccepted { value: String, accepted: String },
    /// A secret parameter has a value that cannot be used (its value is not shown).
    #[error("{problem}")]
    BadSecret { problem: &'static str },
    /// A username that is not a valid Matrix localpart or user ID.
    #[error("the username {username:?} {reason}")]
    BadUsername {
        username: String,
        reason: UsernameError,
    },
    /// Something required is missing: the message names it.
    #[error("{0}")]
    Missing(String),
    /// Two parameters that exclude each other were both given.
    #[error("{first} and {second} are mutually exclusive; give only one")]
    Exclusive { first: String, second: String },
    /// The same user is declared twice in `users`.
    #[error("user {username:?} is already declared in {first}; declare each user once")]
    DuplicateUser { username: String, first: String },
    /// An avatar file that cannot be uploaded (its content is never shown).
    #[error("{path}: {problem}")]
    AvatarFile { path: String, problem: String },
    /// A file that holds a secret could not be read, or is not a file to
    /// read (the content is never shown).
    #[error("cannot read {path}: {problem}")]
    SecretFile {
        /// The path as given (at most `PATH_MAX` bytes).
        path: String,
        problem: crate::host_file::FileProblem,
    },
}

/// How to reach the server, as declared: which URL the module talks to
/// is the chosen server's ([`ModuleArgs::endpoint`]).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `homeserver_url`, without a trailing `/`.
    pub homeserver_url: Option<String>,
    /// `mas_url`, without a trailing `/`.
    pub mas_url: Option<String>,
    pub server_name: Option<String>,
    pub validate_certs: bool,
    pub ca_path: Option<PathBuf>,
    pub timeout: Duration,
    pub wait_timeout: Duration,
}

impl ServerOptions {
    /// Where the server the parameter `field` (`homeserver_url` or
    /// `mas_url`) gives is, and how to reach it, for the HTTP client;
    /// `None` when it is not given.
    pub fn endpoint(&self, field: &'static str) -> Option<Endpoint> {
        let url = match field {
            "mas_url" => &self.mas_url,
            _ => &self.homeserver_url,
        };
        Some(Endpoint {
            url: url.clone()?,
            url_field: field,
            validate_certs: self.validate_certs,
            ca_path: self.ca_path.clone(),
            timeout: self.timeout,
            wait_timeout: self.wait_timeout,
        })
    }
}

/// What the module may authenticate with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub shared_secret: Option<Secret>,
    pub admin_token: Option<Secret>,
    /// The account the module registers for itself when it has only the shared secret.
    pub service_account: Username,
    /// `None` only when neither it, `XDG_CACHE_HOME` nor `HOME` is given;
    /// then the service account cannot be used (the backends that need it refuse that case).
    pub token_cache_dir: Option<PathBuf>,
    /// Dendrite's accounts database (PostgreSQL URL or SQLite path), for admin changes.
    pub dendrite_database: Option<Secret>,
    /// Synapse's database (PostgreSQL URL or SQLite path), read only, to
    /// confirm in bulk what its user list does not show.
    pub synapse_database: Option<Secret>,
    /// MAS's OAuth2 client, for the client-credentials grant.
    pub mas_client: Option<(String, Secret)>,
}

/// The whole validated request.
#[derive(Debug, Clone)]
pub struct ModuleArgs {
    /// The `homeserver` parameter, one of its choices.
    pub homeserver: String,
    pub server: ServerOptions,
    pub credentials: Credentials,
    pub users: Vec<DesiredUser>,
    /// What happens to the local accounts `users` does not declare.
    pub undeclared: UndeclaredPolicy,
    pub concurrency: usize,
    /// MAS only: create users the homeserver already has (half-made accounts) in MAS too.
    pub mas_adopt_existing: bool,
    pub check_mode: bool,
    pub diff: bool,
    /// What the result warns about (Ansible shows each), e.g. a secret file others can read.
    pub warnings: Vec<String>,
}

impl ModuleArgs {
    /// The server implementation the `homeserver` parameter chooses.
    pub fn homeserver_kind(&self) -> HomeserverKind {
        HomeserverKind::ALL
            .into_iter()
            .find(|kind| kind.name() == self.homeserver)
            .unwrap_or_default()
    }

    /// Where the server the module talks to is, whose URL the chosen
    /// server requires; refused by name, before anything is sent, when it
    /// is not given.
    pub fn endpoint(&self) -> Result<Endpoint, ArgsError> {
        let field = self.homeserver_kind().url_field();
        self.server.endpoint(field).ok_or_else(|| {
            ArgsError::new(ArgsErrorKind::Missing(format!(
                "{field} is required, e.g. http://127.0.0.1:8008"
            )))
        })
    }
}
