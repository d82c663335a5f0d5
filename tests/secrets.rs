//! No secret in any output: a server that echoes the request in every
//! encoding we know of (tools/servers/echo.py), a password in the URL,
//! a 50 MB value, and a panic.

mod harness;

use harness::{run_module, Server};
use serde_json::{json, Value};

/// 300 characters, with what each encoding changes: quotes, backslashes,
/// spaces, `+`, `%`, `&`, non-ASCII and a character outside the BMP.
fn long_password() -> String {
    let mut password = String::from("Pa\"ss\\ w+rd%26&amp;ü𝄞-");
    while password.chars().count() < 300 {
        password.push(char::from(b'a' + (password.len() % 26) as u8));
    }
    password
}

fn echo_server() -> Server {
    Server::start("echo", &[])
}

/// The module run against `server` as admin `token`, creating `@<mode>:echo.test`.
fn create_on(server: &Server, token: &str, mode: &str, password: &str) -> harness::ModuleRun {
    run_module(
        json!({
            "homeserver_url": server.url,
            "admin_token": token,
            "username": mode,
            "password": password,
            "wait_timeout": 0,
        }),
        vec![token.to_string()],
    )
}

/// Neither `secret` nor any 12-character piece of it, raw or percent-encoded,
/// is in stdout or stderr.
fn assert_no_trace(run: &harness::ModuleRun, secret: &str) {
    let output = format!("{}\n{}", run.stdout, run.stderr);
    let chars: Vec<char> = secret.chars().collect();
    for piece in chars.windows(12) {
        let piece: String = piece.iter().collect();
        let encoded = harness::encode(&piece);
        assert!(
            !output.contains(&piece) && !output.contains(&encoded),
            "{piece:?} of the secret is in the output: {output}"
        );
    }
}

#[test]
fn a_server_echoing_the_password_in_any_encoding_leaks_none_of_it() {
    let server = echo_server();
    let password = long_password();
    let token = "echo-admin-token-4e1c9b";
    for (mode, expected) in [
        ("double-escaped", "setting up the new @double-escaped:echo.test: the homeserver answered 400 M_UNKNOWN: bad request {"),
        ("u-escaped", "the homeserver answered 400 M_UNKNOWN: bad request \\u0042\\u0065"),
        ("percent-encoded", "the homeserver answered 400 M_UNKNOWN: bad request request="),
        ("html", "the homeserver answered 400: an HTML page of "),
        ("plain", "the homeserver answered 400: "),
    ] {
        let run = create_on(&server, token, mode, &password);
        run.assert_failed_with(expected);
        assert_no_trace(&run, &password);
        assert_no_trace(&run, token);
        assert!(run.stdout.len() < 2000, "{mode}: {} bytes", run.stdout.len());
    }
}

#[test]
fn a_password_in_the_homeserver_url_is_masked() {
    let url_password = "url-pass-7f3e91";
    let run = run_module(
        json!({
            "homeserver_url": format!("http://matrix-admin:{url_password}@127.0.0.1:1"),
            "admin_token": "some-admin-token",
            "username": "alice",
            "wait_timeout": 0,
        }),
        vec![url_password.to_string()],
    );
    run.assert_failed_with(
        "cannot reach the homeserver at http://matrix-admin:********@127.0.0.1:1/",
    );
    assert_no_trace(&run, url_password);
}

#[test]
fn a_50_mb_value_gives_a_short_answer() {
    let run = run_module(
        json!({
            "homeserver": "h".repeat(50 << 20),
            "homeserver_url": "http://127.0.0.1:1",
            "admin_token": "some-admin-token",
            "username": "alice",
        }),
        vec![],
    );
    run.assert_failed_with(&format!(
        "homeserver: \"(a value of {} bytes, not shown)\" is not accepted; use synapse or dendrite or mas",
        50 << 20
    ));
    assert!(run.stdout.len() < 1000, "{} bytes", run.stdout.len());
}

#[test]
fn a_huge_retry_after_is_reported_as_a_rate_limit_not_a_crash() {
    let server = echo_server();
    // One second first, then 2^64-1 seconds: more than any clock can add.
    let token = "overflow-admin-token-91ab";
    let run = run_module(
        json!({
            "homeserver_url": server.url,
            "admin_token": token,
            "username": "plain",
            "password": long_password(),
            "wait_timeout": 2,
        }),
        vec![token.to_string()],
    );
    run.assert_failed_with("rate-limits us and asks to wait 18446744073709551615s more");
    assert_no_trace(&run, token);
}

#[test]
fn a_panic_still_prints_one_json_object_without_secrets() {
    // Debug builds (the ones tests run) panic on purpose after reading the
    // arguments when MATRIX_USER_TEST_PANIC is set, with the first password
    // in the panic message; release builds have no such trigger.
    let password = long_password();
    let run = harness::run_module_with_env(
        json!({
            "homeserver_url": "http://127.0.0.1:9",
            "admin_token": "panic-admin-token-5e7d",
            "username": "plain",
            "password": password,
        }),
        vec!["panic-admin-token-5e7d".to_string()],
        &[("MATRIX_USER_TEST_PANIC", Some("1"))],
    );
    assert_eq!(run.exit_code, 1, "{}", run.stdout);
    assert_eq!(run.output["failed"], Value::Bool(true), "{}", run.stdout);
    assert!(
        run.msg().contains("internal error in matrix_user"),
        "{}",
        run.msg()
    );
    assert!(run.msg().contains("deliberate test panic"), "{}", run.msg());
    assert_eq!(run.stdout.trim().lines().count(), 1, "{}", run.stdout);
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    assert_no_trace(&run, &password);
}
