//! What a registration token is, as declared and as a server shows it.

use std::path::PathBuf;

use crate::secret::Secret;

/// The most uses a limit may allow: Dendrite, MAS and PostgreSQL keep it as
/// a signed 32-bit integer.
pub const MAX_USES_ALLOWED: u32 = i32::MAX as u32;

/// One declared token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredToken {
    /// Where it is declared (`token`, `tokens[2]`), or its `token_file`:
    /// how results and messages name it, never by its value.
    pub name: String,
    /// The field of the declaration its settings are in (`tokens[2]`, or
    /// empty at the top level), for messages about a field.
    pub prefix: String,
    pub source: TokenSource,
    pub settings: TokenSettings,
    pub state: TokenState,
}

impl DesiredToken {
    /// The name of `field` of this declaration (`tokens[2].expires`).
    pub fn field_name(&self, field: &str) -> String {
        match self.prefix.as_str() {
            "" => field.to_string(),
            prefix => format!("{prefix}.{field}"),
        }
    }

    /// The token's value, when the declaration knows it.
    pub fn known(&self) -> Option<&Secret> {
        match &self.source {
            TokenSource::Given(token) => Some(token),
            TokenSource::File { existing, .. } => existing.as_ref(),
        }
    }
}

/// Where the token's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token`.
    Given(Secret),
    /// `token_file`: the value it holds, or `None` when the file does not
    /// exist yet (the server generates one and the module writes it there).
    File {
        path: PathBuf,
        existing: Option<Secret>,
    },
}

/// What the module compares and sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSettings {
    /// `None`: unlimited.
    pub uses_allowed: Option<u32>,
    /// Milliseconds since 1970; `None`: never.
    pub expires: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Present,
    Absent,
}

/// A token as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedToken {
    pub token: Secret,
    /// As the server keeps it: Synapse may hold 0, which it treats as unlimited.
    pub uses_allowed: Option<u64>,
    pub expires: Option<i64>,
    pub pending: u64,
    pub completed: u64,
    /// Revoked (MAS): kept, refused at registration, revivable.
    pub revoked: bool,
}

/// `undeclared` and `undeclared_max` of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndeclaredTokens {
    pub delete: bool,
    pub max: usize,
}

/// What a homeserver advertises to people who would register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Nobody can register through the client API.
    Closed,
    /// Every way to register asks for a registration token.
    TokenRequired,
    /// Some way to register asks for no token.
    OpenWithoutToken,
    /// The server keeps tokens but never asks for one at registration;
    /// `open`: whether anyone can register anyway.
    TokensNotChecked { open: bool },
}

/// `matrix_registration_token`'s arguments: how to reach the server (as
/// `matrix_user` reads them, with no users) and the declared tokens.
#[derive(Debug, Clone)]
pub struct TokenArgs {
    pub connection: crate::model::ModuleArgs,
    pub tokens: Vec<DesiredToken>,
    pub undeclared: UndeclaredTokens,
}
