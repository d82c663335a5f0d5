//! The module over TLS: a real Synapse behind `tools/servers/tls_proxy.py`,
//! whose certificates come from a private CA the test controls. Which
//! certificates are trusted (`ca_path`, the system store and its
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`), and how a refused certificate is
//! reported: at once, saying what is wrong and what to set.

mod harness;

use std::sync::OnceLock;
use std::time::Duration;

use harness::tls::TlsProxy;
use harness::Server;
use serde_json::{json, Value};

/// A certificate error must not wait for the server to "come up".
const WAIT_TIMEOUT: u64 = 30;
const FAST: Duration = Duration::from_secs(10);

struct Bench {
    synapse: Server,
    proxy: TlsProxy,
}

fn bench() -> &'static Bench {
    static BENCH: OnceLock<Bench> = OnceLock::new();
    BENCH.get_or_init(|| {
        let synapse = Server::start("synapse", &[]);
        // The service account, registered once over plain HTTP.
        synapse.module(json!({"users": []})).assert_unchanged();
        let proxy = TlsProxy::start(&synapse);
        Bench { synapse, proxy }
    })
}

/// Module arguments for the listener `name`, on top of `extra`.
fn over_tls(name: &str, extra: Value) -> Value {
    let mut args = json!({"homeserver_url": bench().proxy.url(name), "wait_timeout": WAIT_TIMEOUT});
    args.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    args
}

#[test]
fn a_private_ca_given_as_ca_path_is_trusted_even_second_in_a_bundle() {
    let b = bench();
    let bundle = b.proxy.data_dir.join("bundle-right-one-second.pem");
    let mut pem = std::fs::read(&b.proxy.other_ca).unwrap();
    pem.extend(std::fs::read(&b.proxy.ca).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let user = json!({"ca_path": bundle, "username": "tls-bundle", "password": "tls-bundle-pw"});
    b.synapse
        .module(over_tls("trusted", user.clone()))
        .assert_changed();
    assert!(b.synapse.can_log_in("tls-bundle", "tls-bundle-pw"));
    b.synapse
        .module(over_tls("trusted", user))
        .assert_unchanged();
}

#[test]
fn ssl_cert_file_and_ssl_cert_dir_choose_the_system_store() {
    let b = bench();
    let ca = b.proxy.ca.to_str().unwrap();
    let ca_dir = b.proxy.ca_dir.to_str().unwrap();
    let user = json!({"username": "tls-system", "password": "tls-system-pw"});
    b.synapse
        .module_with_env(
            over_tls("trusted", user.clone()),
            &[("SSL_CERT_FILE", Some(ca)), ("SSL_CERT_DIR", None)],
        )
        .assert_changed();
    b.synapse
        .module_with_env(
            over_tls("trusted", user.clone()),
            &[("SSL_CERT_FILE", None), ("SSL_CERT_DIR", Some(ca_dir))],
        )
        .assert_unchanged();
    // SSL_CERT_FILE replaces the system's CA file, as with OpenSSL.
    let other = b.proxy.other_ca.to_str().unwrap();
    let run = b.synapse.module_with_env(
        over_tls("trusted", user),
        &[
            ("SSL_CERT_FILE", Some(other)),
            (
                "SSL_CERT_DIR",
                Some(b.proxy.data_dir.join("none").to_str().unwrap()),
            ),
        ],
    );
    run.assert_failed_with("is not issued by a CA this host trusts");
    assert!(run.msg().contains(other), "{}", run.msg());
}

#[test]
fn a_ca_path_without_a_certificate_is_refused_by_name() {
    let b = bench();
    for (file, content) in [
        ("empty.pem", ""),
        ("not-pem.pem", "this is not a certificate\n"),
    ] {
        let path = b.proxy.data_dir.join(file);
        std::fs::write(&path, content).unwrap();
        b.synapse
            .module(over_tls(
                "trusted",
                json!({"ca_path": path, "username": "tls-empty-ca", "password": "tls-empty-pw"}),
            ))
            .assert_failed_with(&format!(
                "ca_path: {} holds no PEM certificate",
                path.display()
            ));
    }
    assert!(b.synapse.synapse_user("tls-empty-ca").is_none());
}

#[test]
fn certificate_errors_fail_at_once_and_say_what_is_wrong() {
    let b = bench();
    let ca = b.proxy.ca.to_str().unwrap();
    let self_signed = b.proxy.self_signed_ca.to_str().unwrap();
    for (listener, ca_path, expected) in [
        ("trusted", None, "is not issued by a CA this host trusts"),
        (
            "wrong_name",
            Some(ca),
            "is not valid for the name 127.0.0.1",
        ),
        ("expired", Some(ca), "has expired"),
        ("self_signed_ca", Some(self_signed), "is marked as a CA"),
        ("self_signed_ca", None, "is marked as a CA"),
    ] {
        let run = b.synapse.module(over_tls(
            listener,
            json!({"ca_path": ca_path, "username": "tls-refused", "password": "tls-refused-pw"}),
        ));
        run.assert_failed_with(expected);
        for advice in ["ca_path", "validate_certs"] {
            assert!(run.msg().contains(advice), "{listener}: {}", run.msg());
        }
        assert!(
            !run.msg().contains("cannot reach"),
            "{listener}: {}",
            run.msg()
        );
        assert!(
            run.elapsed < FAST,
            "{listener}: failed after {:?}, not at once",
            run.elapsed
        );
    }
    assert!(b.synapse.synapse_user("tls-refused").is_none());
}

#[test]
fn validate_certs_false_accepts_any_certificate() {
    let b = bench();
    let user = json!({"validate_certs": false, "username": "tls-unchecked", "password": "tls-unchecked-pw"});
    b.synapse
        .module(over_tls("expired", user.clone()))
        .assert_changed();
    b.synapse
        .module(over_tls("self_signed_ca", user))
        .assert_unchanged();
}
