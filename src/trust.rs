//! Which certificates the module trusts for the homeserver, and what a
//! refused certificate means for the user.
//!
//! Trusted: the host's CA store, found and overridden as OpenSSL finds it
//! (`SSL_CERT_FILE` replaces the CA file, `SSL_CERT_DIR` the CA folders),
//! plus every certificate in `ca_path`. The Mozilla roots built into the
//! binary are used only on a host without any CA store (a minimal
//! container), so that a host's own choice of CAs is never widened.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

use crate::host_file;

/// Why `ca_path` cannot be used, or why a server's certificate is refused.
/// The certificate's refusals read as the end of a sentence about it ("is
/// not issued by..."): the request error that wraps them says whose
/// certificate it is, and where.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file named by `ca_path` cannot be read.
    #[error("ca_path: cannot read {path}: {detail}; give the path of a PEM file with the CA certificate(s) that issued the server's certificate")]
    CaFileUnreadable { path: String, detail: String },
    /// The file named by `ca_path` holds no certificate at all.
    #[error("ca_path: {path} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block); give a PEM file with the CA certificate(s) that issued the server's certificate")]
    CaFileEmpty { path: String },
    /// A certificate in `ca_path` is malformed.
    #[error("ca_path: {path} holds a certificate that cannot be used: {detail}; give a PEM file with the CA certificate(s) that issued the server's certificate")]
    CaFileUnusable { path: String, detail: String },
    /// The server's certificate chains to no CA this host trusts.
    #[error("is not issued by a CA this host trusts (trusted: {trusted}); give the CA that issued it as ca_path (a PEM file, several certificates allowed), or add it to this host's CA store (or SSL_CERT_FILE/SSL_CERT_DIR); validate_certs: false skips the check")]
    UntrustedCertificate { trusted: String },
    /// The certificate is for other names than the URL's host.
    #[error("is not valid for the name {host} ({detail}); use a {url_field} with a name the certificate lists, or give the server a certificate for {host}; ca_path cannot help, validate_certs: false skips the check")]
    CertificateNameMismatch {
        url_field: &'static str,
        host: String,
        detail: String,
    },
    /// The certificate is outside its validity period.
    #[error("has expired or is not valid yet ({detail}); renew it on the server (or correct this host's clock); ca_path cannot help, validate_certs: false skips the check")]
    CertificateExpired { detail: String },
    /// A self-signed certificate marked as a CA, which rustls never accepts
    /// as a server's own certificate, not even when `ca_path` names it.
    #[error("is marked as a CA (basicConstraints CA:TRUE, which `openssl req -x509` sets by default), and matrix_user (rustls) refuses a CA certificate as a server's own even when ca_path names it; give the server a certificate issued by a CA and that CA as ca_path, or make the self-signed one with -addext basicConstraints=critical,CA:FALSE and a subjectAltName, or set validate_certs: false")]
    CaCertificateAsServer,
    /// Any other refusal of the server's certificate.
    #[error("was refused: {detail}; check the server's certificate, ca_path and validate_certs")]
    CertificateRefused { detail: String },
}

impl TrustError {
    /// Whether this is about `ca_path` (a whole sentence), not about the
    /// server's certificate.
    pub fn is_about_ca_path(&self) -> bool {
        matches!(
            self,
            TrustError::CaFileUnreadable { .. }
                | TrustError::CaFileEmpty { .. }
                | TrustError::CaFileUnusable { .. }
        )
    }
}

/// The certificates a run trusts, and where they came from, for messages.
pub struct TrustStore {
    roots: RootCertStore,
    /// E.g. "147 certificates from /etc/ssl/certs/ca-certificates.crt and /etc/ssl/certs".
    pub description: String,
}

impl TrustStore {
    /// The system's store plus `ca_path`. `ca_path` must hold at least one
    /// PEM certificate; unreadable parts of the system store are skipped, as
    /// OpenSSL skips them.
    pub fn load(ca_path: Option<&Path>) -> Result<TrustStore, TrustError> {
        let system = SystemStore::locate(
            std::env::var_os("SSL_CERT_FILE"),
            std::env::var_os("SSL_CERT_DIR"),
        );
        let mut roots = RootCertStore::empty();
        let (added, _unusable) = roots.add_parsable_certificates(system.certificates());
        let mut description = if added > 0 {
            format!("{} from {}", certificates(added), system.places())
        } else {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let why = match system.places().as_str() {
                "" => "no CA file or folder found".to_string(),
                places => format!("no certificate in {places}"),
            };
            format!(
                "the {} Mozilla roots built into matrix_user (this host has no CA store: {why})",
                roots.len(),
            )
        };
        if let Some(path) = ca_path {
            let pinned = read_ca_path(path)?;
            for certificate in &pinned {
                roots
                    .add(certificate.clone())
                    .map_err(|e| TrustError::CaFileUnusable {
                        path: path.display().to_string(),
                        detail: e.to_string(),
                    })?;
            }
            description.push_str(&format!(
                ", and {} from ca_path {}",
                certificates(pinned.len()),
                path.display()
            ));
        }
        Ok(TrustStore { roots, description })
    }

    /// A TLS configuration that trusts exactly this store.
    pub fn client_config(self) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(self.roots)
        .with_no_client_auth()
    }
}

fn certificates(count: usize) -> String {
    match count {
        1 => "1 certificate".into(),
        n => format!("{n} certificates"),
    }
}

/// Every certificate in a PEM file; none at all is an error, since a
/// `ca_path` that trusts nothing is a mistake the user wants to hear about.
fn read_ca_path(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let shown = || path.display().to_string();
    let pem = host_file::read(path, host_file::CA_BUNDLE, true)
        .map_err(|problem| TrustError::CaFileUnreadable {
            path: shown(),
            detail: problem.to_string(),
        })?
        .bytes;
    let found: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TrustError::CaFileUnusable {
            path: shown(),
            detail: e.to_string(),
        })?;
    if found.is_empty() {
        return Err(TrustError::CaFileEmpty { path: shown() });
    }
    Ok(found)
}

/// Where the host's CA certificates are, as OpenSSL looks for them.
#[derive(Debug, PartialEq)]
struct SystemStore {
    /// The CA bundle file, and whether `SSL_CERT_FILE` named it.
    file: Option<(PathBuf, bool)>,
    /// The CA folders (every file in them is read), and whether `SSL_CERT_DIR` named them.
    dirs: (Vec<PathBuf>, bool),
}

impl SystemStore {
    /// Each variable, when set and not empty, replaces the corresponding
    /// default; `SSL_CERT_DIR` is a `:`-separated list, as for OpenSSL.
    fn locate(cert_file: Option<OsString>, cert_dir: Option<OsString>) -> SystemStore {
        let cert_file = cert_file.filter(|value| !value.is_empty());
        let cert_dir = cert_dir.filter(|value| !value.is_empty());
        let file = match cert_file {
            Some(file) => Some((PathBuf::from(file), true)),
            // Without SSL_CERT_FILE, probe() answers the first bundle that exists.
            None => openssl_probe::probe().cert_file.map(|file| (file, false)),
        };
        let dirs = match cert_dir {
            Some(dirs) => (std::env::split_paths(&dirs).collect(), true),
            None => (
                openssl_probe::candidate_cert_dirs()
                    .map(Path::to_path_buf)
                    .collect(),
                false,
            ),
        };
        SystemStore { file, dirs }
    }

    fn certificates(&self) -> Vec<CertificateDer<'static>> {
        let mut found = Vec::new();
        // Read with host_file, not rustls_native_certs, which would wait on a
        // FIFO for ever and read /dev/zero without end; an unusable bundle is
        // skipped, as OpenSSL skips it. (Of a folder, only regular files are read.)
        if let Some((file, _)) = &self.file {
            if let Ok(bundle) = host_file::read(file, host_file::CA_BUNDLE, true) {
                found.extend(
                    CertificateDer::pem_slice_iter(&bundle.bytes)
                        .filter_map(Result::ok)
                        .map(CertificateDer::into_owned),
                );
            }
        }
        for dir in &self.dirs.0 {
            found.extend(rustls_native_certs::load_certs_from_paths(None, Some(dir)).certs);
        }
        // The usual bundle file also sits in the usual folder.
        found.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        found.dedup();
        found
    }

    /// The places searched, for messages ("SSL_CERT_FILE=/x and /etc/ssl/certs"),
    /// empty when none exists.
    fn places(&self) -> String {
        let mut places = Vec::new();
        match &self.file {
            Some((file, true)) => places.push(format!("SSL_CERT_FILE={}", file.display())),
            Some((file, false)) => places.push(file.display().to_string()),
            None => {}
        }
        let (dirs, from_env) = &self.dirs;
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        match (dirs.is_empty(), from_env) {
            (true, _) => {}
            (false, true) => places.push(format!("SSL_CERT_DIR={}", dirs.join(":"))),
            (false, false) => places.push(dirs.join(" and ")),
        }
        places.join(" and ")
    }
}

/// The TLS failure inside a request error, if the request failed in TLS.
/// It sits inside `io::Error`s (hyper's and tokio-rustls'), whose
/// `source()` skips the error they wrap: those are opened with `get_ref()`.
pub fn tls_failure(error: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => current.source(),
        };
    }
    None
}

/// What a TLS failure means for the certificate of the server at `url`
/// (given by the parameter `url_field`), and what the user can set about
/// it; `None` when the failure is not about the certificate. `trusted` is
/// the [`TrustStore::description`].
pub fn explain(
    failure: &rustls::Error,
    (url, url_field): (&str, &'static str),
    trusted: &str,
) -> Option<TrustError> {
    let rustls::Error::InvalidCertificate(certificate) = failure else {
        return None;
    };
    Some(match certificate {
        CertificateError::UnknownIssuer => TrustError::UntrustedCertificate {
            trusted: trusted.to_string(),
        },
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            TrustError::CertificateNameMismatch {
                url_field,
                host,
                detail: certificate.to_string(),
            }
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => TrustError::CertificateExpired {
            detail: certificate.to_string(),
        },
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            TrustError::CaCertificateAsServer
        }
        other => TrustError::CertificateRefused {
            detail: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_cert_file_and_ssl_cert_dir_each_replace_their_default() {
        let both = SystemStore::locate(Some("/ca.pem".into()), Some("/a:/b".into()));
        assert_eq!(both.file, Some((PathBuf::from("/ca.pem"), true)));
        assert_eq!(
            both.dirs,
            (vec![PathBuf::from("/a"), PathBuf::from("/b")], true)
        );
        assert_eq!(
            both.places(),
            "SSL_CERT_FILE=/ca.pem and SSL_CERT_DIR=/a:/b"
        );

        let file_only = SystemStore::locate(Some("/ca.pem".into()), Some("".into()));
        assert_eq!(file_only.file, Some((PathBuf::from("/ca.pem"), true)));
        assert!(!file_only.dirs.1, "an empty SSL_CERT_DIR counts as unset");
        let defaults = SystemStore::locate(None, None);
        assert_eq!(file_only.dirs, defaults.dirs);
        assert!(defaults.file.as_ref().is_none_or(|(_, from_env)| !from_env));
    }

    #[test]
    fn a_ca_path_without_certificates_is_refused_and_a_bundle_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("matrix-user-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let message = TrustStore::load(Some(&empty)).err().unwrap().to_string();
        assert!(
            message.starts_with(&format!(
                "ca_path: {} holds no PEM certificate",
                empty.display()
            )),
            "{message}"
        );
        let bundle = dir.join("bundle.pem");
        std::fs::write(&bundle, include_str!("../tests/fixtures/two-cas.pem")).unwrap();
        let store = TrustStore::load(Some(&bundle)).unwrap();
        assert!(
            store.description.ends_with(&format!(
                "and 2 certificates from ca_path {}",
                bundle.display()
            )),
            "{}",
            store.description
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
