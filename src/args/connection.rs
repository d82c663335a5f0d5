//! How to reach and authenticate to the server: the connection,
//! authentication, TLS and timeout parameters, shared by every module of
//! this binary that talks to a homeserver.

use std::path::PathBuf;
use std::time::Duration;

use super::fields::{echo, Fields};
use super::parameters;
use crate::matrix_id::Username;
use crate::model::{ArgsError, ArgsErrorKind, Credentials, ServerOptions};
use crate::secret::hold_basic_auth;

/// How to reach the server and what to authenticate with, from the top level.
pub(super) fn read_connection(top: &Fields) -> Result<(ServerOptions, Credentials), ArgsError> {
    let server = ServerOptions {
        homeserver_url: read_url(top, "homeserver_url")?,
        mas_url: read_url(top, "mas_url")?,
        server_name: top.string("server_name")?,
        validate_certs: top.boolean_or_default("validate_certs")?,
        ca_path: top.path("ca_path")?,
        timeout: Duration::from_secs(top.integer_or_default("timeout", 1, 3600)?),
        wait_timeout: Duration::from_secs(top.integer_or_default("wait_timeout", 0, 3600)?),
    };
    let credentials = Credentials {
        shared_secret: top.secret_or_file("registration_shared_secret")?,
        admin_token: top.secret_or_file("admin_token")?,
        service_account: match top.string("service_account")? {
            Some(name) => Username::parse(&name).map_err(|reason| {
                ArgsError::at(
                    "service_account",
                    ArgsErrorKind::BadUsername {
                        username: echo(&name),
                        reason,
                    },
                )
            })?,
            None => Username::parse(parameters::parameter("service_account").default_str())
                .expect("the default is a valid localpart"),
        },
        token_cache_dir: top.path("token_cache_dir")?.or_else(|| {
            default_token_cache_dir(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
        }),
        dendrite_database: top.secret_or_file("dendrite_database")?,
        synapse_database: top.secret_or_file("synapse_database")?,
        mas_client: match (
            top.string("mas_client_id")?,
            top.secret_or_file("mas_client_secret")?,
        ) {
            (Some(id), Some(secret)) => {
                hold_basic_auth(&id, &secret);
                Some((id, secret))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ArgsError::new(ArgsErrorKind::Missing(
                    "mas_client_id needs mas_client_secret (or mas_client_secret_file)".into(),
                )))
            }
            (None, Some(_)) => {
                return Err(ArgsError::new(ArgsErrorKind::Missing(
                    "mas_client_secret needs mas_client_id".into(),
                )))
            }
        },
    };
    Ok((server, credentials))
}

/// The URL in `field`, without a trailing `/`; only http:// and https:// are accepted.
fn read_url(top: &Fields, field: &'static str) -> Result<Option<String>, ArgsError> {
    let Some(url) = top.string(field)? else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ArgsError::at(
            field,
            ArgsErrorKind::NotAccepted {
                value: echo(&url),
                accepted: "an http:// or https:// URL".into(),
            },
        ));
    }
    Ok(Some(url.trim_end_matches('/').to_string()))
}

/// `$XDG_CACHE_HOME/matrix_user`, else `$HOME/.cache/matrix_user`. Never a
/// shared folder such as /tmp: `None` when neither variable is usable (the
/// XDG spec ignores a relative `XDG_CACHE_HOME`; an empty one is unset).
fn default_token_cache_dir(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_cache_is_never_a_shared_folder() {
        let dir = |xdg: Option<&str>, home: Option<&str>| {
            default_token_cache_dir(xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            dir(Some("/x/cache"), Some("/home/u")),
            Some(PathBuf::from("/x/cache/matrix_user"))
        );
        assert_eq!(
            dir(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/matrix_user"))
        );
        assert_eq!(dir(Some(""), Some("")), None);
        assert_eq!(dir(None, None), None);
    }
}
