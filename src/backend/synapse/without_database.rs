//! Stands in for `database.rs` in a binary built without the `databases`
//! cargo feature: `synapse_database` is then refused by `check_declaration`
//! before anything is sent, so no [`Database`] ever exists, and the type has
//! no value at all.

use std::collections::HashMap;
use std::time::Duration;

use super::SynapseError;
use crate::backend::declaration::DATABASES_NOT_BUILT_IN;
use crate::backend::ServerError;
use crate::model::{ExternalId, Ratelimit};
use crate::secret::Secret;

/// No database: a type without values, so every method below is never called.
pub enum Database {}

impl Database {
    pub async fn open(_location: &Secret, _timeout: Duration) -> Result<Database, ServerError> {
        Err(SynapseError::database(DATABASES_NOT_BUILT_IN).into())
    }

    pub async fn ratelimits(
        &self,
        _users: &[String],
    ) -> Result<HashMap<String, Option<Ratelimit>>, ServerError> {
        match *self {}
    }

    pub async fn external_ids(
        &self,
        _users: &[String],
    ) -> Result<HashMap<String, Vec<ExternalId>>, ServerError> {
        match *self {}
    }

    pub async fn emails(
        &self,
        _users: &[String],
    ) -> Result<HashMap<String, Vec<String>>, ServerError> {
        match *self {}
    }
}
