//! How to reach and authenticate to the server: the connection,
//! authentication, TLS and timeout parameters, shared by every module of
//! this binary that talks to a homeserver.

use std::path::PathBuf;

use super::fields::{echo, Fields};
use crate::model::ArgsError;

/// The URL in `field`, without a trailing `/`; only http:// and https:// are accepted.
pub(super) fn read_url(top: &Fields, field: &'static str) -> Result<Option<String>, ArgsError> {
    let Some(url) = top.string(field)? else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ArgsError::NotAccepted {
            field: field.into(),
            value: echo(&url),
            accepted: "an http:// or https:// URL".into(),
        });
    }
    Ok(Some(url.trim_end_matches('/').to_string()))
}

/// `$XDG_CACHE_HOME/matrix_user`, else `$HOME/.cache/matrix_user`. Never a
/// shared folder such as /tmp: `None` when neither variable is usable (the
/// XDG spec ignores a relative `XDG_CACHE_HOME`; an empty one is unset).
pub(super) fn default_token_cache_dir(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let absolute =
        |value: std::ffi::OsString| Some(PathBuf::from(value)).filter(|p| p.is_absolute());
    xdg_cache_home
        .and_then(absolute)
        .or_else(|| home.and_then(absolute).map(|home| home.join(".cache")))
        .map(|base| base.join("matrix_user"))
}
