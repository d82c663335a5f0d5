//! Stands in for `database.rs` in a binary built without the
//! `databases` cargo feature (no SQLite, no PostgreSQL driver):
//! `dendrite_database` is then refused by `check_declaration` before
//! anything is sent, so no [`Database`] ever exists, and the type has no
//! value at all.

use std::collections::HashMap;
use std::time::Duration;

use super::{AccountRow, AccountUpdate, DendriteError};
use crate::backend::declaration::DATABASES_NOT_BUILT_IN;
use crate::backend::ServerError;
use crate::secret::Secret;

/// No database: a type without values, so every method below is never called.
pub enum Database {}

impl Database {
    pub async fn open(_: &Secret, _: &str, _: Duration) -> Result<Database, ServerError> {
        Err(ServerError::Dendrite(DendriteError::Database {
            detail: DATABASES_NOT_BUILT_IN.into(),
        }))
    }

    pub async fn accounts(&self, _: &[&str]) -> Result<HashMap<String, AccountRow>, ServerError> {
        match *self {}
    }

    pub async fn update(&self, _: &str, _: AccountUpdate<'_>) -> Result<bool, ServerError> {
        match *self {}
    }

    pub async fn password_hash(&self, _: &str) -> Result<Option<Secret>, ServerError> {
        match *self {}
    }
}
