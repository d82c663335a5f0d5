//! `matrix_registration_token`: makes a homeserver's registration tokens
//! match their declaration, through the same pipeline as the users:
//! arguments -> read the server -> plan (pure) -> apply -> report.

// The model and the plan are used by the Synapse backend's commit, next.
#[cfg_attr(not(test), allow(dead_code))]
pub mod model;
#[cfg_attr(not(test), allow(dead_code))]
mod plan;

use std::ffi::OsString;

use crate::report::Report;

/// Runs the module on Ansible's args file and returns its JSON output and
/// exit code (0 success, 1 failure).
pub fn run(_args_path: Option<OsString>) -> (String, i32) {
    let report = Report::fatal(
        "matrix_registration_token is not built into this version of the binary yet; use a later build of the collection".into(),
    );
    (report.printed(), 1)
}
