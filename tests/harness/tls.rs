//! A TLS front (`tools/servers/tls_proxy.py`) for a real homeserver, with
//! certificates it makes itself: one trusted through a private CA, one
//! expired, one for another name, and one self-signed CA-flagged.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Mutex;

use super::{launch, Server};

pub struct TlsProxy {
    info: serde_json::Value,
    /// The private CA that issued the `trusted`, `expired` and `wrong_name` certificates.
    pub ca: PathBuf,
    /// A CA that issued none of them.
    pub other_ca: PathBuf,
    /// A folder holding only the private CA, for `SSL_CERT_DIR`.
    pub ca_dir: PathBuf,
    /// The `self_signed_ca` listener's own certificate.
    pub self_signed_ca: PathBuf,
    pub data_dir: PathBuf,
    _launcher: Mutex<Child>,
}

impl TlsProxy {
    /// Puts TLS in front of `server`.
    pub fn start(server: &Server) -> TlsProxy {
        let (child, info) = launch("tls_proxy", &["--upstream", &server.url]);
        let path = |key: &str| PathBuf::from(info[key].as_str().unwrap());
        TlsProxy {
            ca: path("ca"),
            other_ca: path("other_ca"),
            ca_dir: path("ca_dir"),
            self_signed_ca: path("self_signed_ca"),
            data_dir: path("data_dir"),
            info,
            _launcher: Mutex::new(child),
        }
    }

    /// The https:// URL of the listener with certificate `name`
    /// (`trusted`, `expired`, `wrong_name`, `self_signed_ca`).
    pub fn url(&self, name: &str) -> String {
        self.info["urls"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no TLS listener {name}"))
            .to_string()
    }
}
