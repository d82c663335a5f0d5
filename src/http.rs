//! The one HTTP client every backend uses: JSON in and out, a timeout on
//! every request, and patient retries while the server is starting or
//! asks us to slow down. Messages name the server as its backend says
//! ([`Http::naming`]) and the parameter that gave its URL.

use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use std::path::PathBuf;

use crate::secret::{excerpt, Secret};
use crate::trust::{self, tls_failure, TrustError, TrustStore};

/// Longest pause between two attempts to reach a server that is starting.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How much of a server's own error message a message may quote.
const MAX_QUOTED_ERROR: usize = 300;
/// How much of a short server value (an errcode, a user type, a scope) a message may quote.
const MAX_QUOTED_WORD: usize = 64;
/// How much of a plain-text error body (a proxy's "404 page not found") a message may quote.
const MAX_QUOTED_TEXT: usize = 100;

/// Why a request to a server got no usable answer, or the client for it
/// could not be made. The context is stated once: `server` (as messages
/// name it, [`Http::naming`]), its `url` and `url_field`, the parameter that
/// gave the URL. Answers with an error status are not errors here: the
/// backend that sent the request interprets them.
#[derive(Debug)]
pub struct HttpError {
    pub server: &'static str,
    pub url: String,
    pub url_field: &'static str,
    pub kind: HttpErrorKind,
}

/// What went wrong, each with what the user can do about it.
#[derive(Debug)]
pub enum HttpErrorKind {
    /// Connection refused, or 502/503/504 to a read (other than the
    /// server's own Matrix error), for longer than `wait_timeout`.
    Unreachable { waited: u64, detail: String },
    /// A write got 502/503: it may have reached the server and been carried
    /// out before the answer was lost, so it is not sent again blindly; the
    /// caller reads the server to find out.
    AnswerLost { method: Method, detail: String },
    /// One request took longer than `timeout`.
    Timeout { seconds: u64 },
    /// The server keeps answering 429 beyond what `wait_timeout` allows.
    RateLimited { seconds: u64 },
    /// A TLS or protocol failure that waiting does not fix.
    Transport { detail: String },
    /// `ca_path` cannot be used, or the server's certificate is refused.
    Trust(TrustError),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let HttpError {
            server,
            url,
            url_field,
            kind,
        } = self;
        match kind {
            HttpErrorKind::Unreachable { waited, detail } => write!(
                f,
                "cannot reach {server} at {url} (waited {waited}s: {detail}); check {url_field}, that the server is running, or raise wait_timeout"
            ),
            HttpErrorKind::AnswerLost { method, detail } => write!(
                f,
                "{server} at {url} answered {detail} to a {method} that it may nonetheless have carried out; matrix_user does not send it again blindly; running again reads the server and converges"
            ),
            HttpErrorKind::Timeout { seconds } => write!(
                f,
                "{server} at {url} did not answer within {seconds}s (a change it was asked to make may or may not have happened; running again converges); raise timeout or check the server's load"
            ),
            HttpErrorKind::RateLimited { seconds } => write!(
                f,
                "{server} rate-limits us and asks to wait {seconds}s more, longer than wait_timeout allows; run again later or raise wait_timeout"
            ),
            HttpErrorKind::Transport { detail } => write!(
                f,
                "request to {url} failed: {detail}; check {url_field}, validate_certs and ca_path"
            ),
            HttpErrorKind::Trust(trust) if trust.is_about_ca_path() => write!(f, "{trust}"),
            HttpErrorKind::Trust(trust) => write!(f, "the certificate of {server} at {url} {trust}"),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            HttpErrorKind::Trust(trust) => Some(trust),
            _ => None,
        }
    }
}

impl HttpError {
    /// A write that may have been carried out although its answer was lost.
    pub fn is_answer_lost(&self) -> bool {
        matches!(self.kind, HttpErrorKind::AnswerLost { .. })
    }
}

/// A server's answer.
#[derive(Debug)]
pub struct Reply {
    /// Who answered, as messages name it ([`HOMESERVER`] unless the backend said otherwise).
    pub server: &'static str,
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The Matrix `errcode`, or `""` when the body has none.
    pub fn errcode(&self) -> &str {
        self.body
            .get("errcode")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The server's own explanation, for messages: Synapse's `error`,
    /// Dendrite's `message`, MAS's `errors[0].title` (OAuth2's
    /// `error_description`). Anything else the server sent is described, not
    /// quoted: it may echo the request, password included. Each quote is
    /// masked before it is cut, so a cut never leaves part of a secret.
    pub fn explanation(&self) -> String {
        let body = &self.body;
        let own_words = body
            .get("error")
            .or_else(|| body.get("message"))
            .or_else(|| body.pointer("/errors/0/title"))
            .or_else(|| body.get("error_description"))
            .and_then(Value::as_str);
        if let Some(words) = own_words {
            return server_words(words);
        }
        match body {
            Value::Null => String::new(),
            Value::String(text) if looks_like_html(text) => match html_title(text) {
                Some(title) => format!(
                    "an HTML page of {} bytes titled {:?}",
                    text.len(),
                    excerpt(title.trim(), MAX_QUOTED_TEXT)
                ),
                None => format!("an HTML page of {} bytes", text.len()),
            },
            Value::String(text) => excerpt(text.trim(), MAX_QUOTED_TEXT),
            other => format!(
                "no explanation (a JSON answer of {} bytes)",
                other.to_string().len()
            ),
        }
    }
}

/// A server's own error message (or OAuth2 `error_description`) for a
/// message: masked, then cut to a few lines.
pub fn server_words(text: &str) -> String {
    excerpt(text, MAX_QUOTED_ERROR)
}

/// A short value from a server's answer (an errcode, a user type, a scope)
/// for a message: masked, then cut, since a broken server may send anything.
pub fn server_word(text: &str) -> String {
    excerpt(text, MAX_QUOTED_WORD)
}

fn looks_like_html(text: &str) -> bool {
    let start = text.trim_start().get(..64).unwrap_or(text.trim_start());
    start.starts_with('<') || start.to_ascii_lowercase().contains("<html")
}

/// The text of an HTML page's `<title>`, which proxies fill with the status.
fn html_title(page: &str) -> Option<&str> {
    let lower = page.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    Some(&page[start..end])
}

/// What a request carries besides its method and path.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    /// `application/x-www-form-urlencoded`, as OAuth2's token endpoint takes.
    Form(&'a [(&'a str, &'a str)]),
    /// Raw content of this media type, as a media upload takes.
    Bytes {
        content_type: &'a str,
        bytes: &'a [u8],
    },
}

/// How a request authenticates.
enum Auth<'a> {
    None,
    Bearer(&'a Secret),
    /// HTTP Basic, as OAuth2's `client_secret_basic`: a client ID and its secret.
    Basic(&'a str, &'a Secret),
}

/// How messages name the server unless its backend names it otherwise ([`Http::naming`]).
pub const HOMESERVER: &str = "the homeserver";

/// Where one server is and how to reach it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    /// The parameter that gave `url`, for messages that ask to check it.
    pub url_field: &'static str,
    pub validate_certs: bool,
    pub ca_path: Option<PathBuf>,
    /// How long one request may take.
    pub timeout: Duration,
    /// How long to keep trying while the server is away or rate-limits us.
    pub wait_timeout: Duration,
}

pub struct Http {
    client: reqwest::Client,
    base_url: String,
    /// How messages name the server ([`HOMESERVER`], or the backend's word).
    server: &'static str,
    /// The parameter that gave `base_url`, for messages that ask to check it.
    url_field: &'static str,
    /// What the client trusts, for the message when a certificate is refused.
    trusted: String,
    timeout: Duration,
    wait_timeout: Duration,
    /// The server's own "try again" answers, if it has any (see [`Http::retrying`]).
    busy: Option<fn(&Reply) -> bool>,
    /// How long one request may wait out 429s, when not `wait_timeout`
    /// (see [`Http::waiting_out_rate_limits`]).
    rate_limit_wait: Option<Duration>,
    /// The pauses 429s asked for so far, summed over all requests.
    rate_limited: std::cell::Cell<Duration>,
}

impl Http {
    pub fn new(options: &Endpoint) -> Result<Http, HttpError> {
        let failure = |kind| HttpError {
            server: HOMESERVER,
            url: options.url.clone(),
            url_field: options.url_field,
            kind,
        };
        let builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .user_agent(concat!("matrix_user/", env!("CARGO_PKG_VERSION")));
        // A bad ca_path is refused even when validate_certs is off: it is
        // a mistake in the playbook either way.
        let trust = TrustStore::load(options.ca_path.as_deref())
            .map_err(|e| failure(HttpErrorKind::Trust(e)))?;
        let trusted = trust.description.clone();
        let builder = if options.validate_certs {
            builder.use_preconfigured_tls(trust.client_config())
        } else {
            builder.danger_accept_invalid_certs(true)
        };
        let client = builder.build().map_err(|e| {
            failure(HttpErrorKind::Transport {
                detail: e.to_string(),
            })
        })?;
        Ok(Http {
            client,
            trusted,
            base_url: options.url.clone(),
            server: HOMESERVER,
            url_field: options.url_field,
            timeout: options.timeout,
            wait_timeout: options.wait_timeout,
            busy: None,
            rate_limit_wait: None,
            rate_limited: std::cell::Cell::new(Duration::ZERO),
        })
    }

    /// The failure `kind` of a request to `url`, of this client's server.
    fn failure(&self, url: &str, kind: HttpErrorKind) -> HttpError {
        HttpError {
            server: self.server,
            url: url.to_string(),
            url_field: self.url_field,
            kind,
        }
    }

    fn unreachable(&self, url: &str, waited: Duration, detail: String) -> HttpError {
        let waited = waited.as_secs();
        self.failure(url, HttpErrorKind::Unreachable { waited, detail })
    }

    /// The server's URL, as the declaration gave it.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// This client, naming its server `server` in messages ("MAS" rather
    /// than [`HOMESERVER`]).
    pub fn naming(self, server: &'static str) -> Http {
        Http { server, ..self }
    }

    /// This client, waiting out a 429 for up to `most` per request rather
    /// than `wait_timeout`: a server that rate-limits on purpose (MAS's
    /// login limit) is not one that is down.
    pub fn waiting_out_rate_limits(self, most: Duration) -> Http {
        Http {
            rate_limit_wait: Some(most),
            ..self
        }
    }

    /// The pauses the server's 429s asked for so far, summed over all requests.
    pub fn rate_limited_for(&self) -> Duration {
        self.rate_limited.get()
    }

    /// This client, also resending (within `wait_timeout`) a request whose
    /// answer `busy` recognises as the server's "a moment later" (a
    /// backend's rule for its own server).
    pub fn retrying(self, busy: fn(&Reply) -> bool) -> Http {
        Http {
            busy: Some(busy),
            ..self
        }
    }

    /// Sends one request, retrying within `wait_timeout` while the server
    /// refuses connections, is overloaded (502/503/504 to a read, or an
    /// answer the backend's [`Http::retrying`] rule recognises) or
    /// rate-limits us (429). A write that gets 502/503
    /// is not resent: [`HttpErrorKind::AnswerLost`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Body<'_>,
    ) -> Result<Reply, HttpError> {
        self.send_as(method, path, &[], bearer(token), body).await
    }

    /// [`Http::send`] with a query string, built (and percent-encoded) from
    /// `query`'s name-value pairs.
    pub async fn send_query(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&Secret>,
        body: Body<'_>,
    ) -> Result<Reply, HttpError> {
        self.send_as(method, path, query, bearer(token), body).await
    }

    /// [`Http::send`], authenticated with HTTP Basic as `user` and `secret`.
    pub async fn send_basic(
        &self,
        method: Method,
        path: &str,
        (user, secret): (&str, &Secret),
        body: Body<'_>,
    ) -> Result<Reply, HttpError> {
        self.send_as(method, path, &[], Auth::Basic(user, secret), body)
            .await
    }

    /// Downloads media: its content as it comes when the server has it
    /// (read by the caller, who may stop at its length), else the server's
    /// error. Retried as any read is.
    pub async fn download(&self, path: &str, token: &Secret) -> Result<Download, HttpError> {
        self.send_as(Method::GET, path, &[], Auth::Bearer(token), Body::None)
            .await
    }

    async fn send_as<A: Answer>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        auth: Auth<'_>,
        body: Body<'_>,
    ) -> Result<A, HttpError> {
        let url = format!("{}{}", self.base_url, path);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut request = self.client.request(method.clone(), &url);
            if !query.is_empty() {
                request = request.query(query);
            }
            request = match auth {
                Auth::None => request,
                Auth::Bearer(token) => request.bearer_auth(token.expose()),
                Auth::Basic(user, secret) => request.basic_auth(user, Some(secret.expose())),
            };
            request = match body {
                Body::None => request,
                Body::Json(value) => request.json(value),
                Body::Form(fields) => request.form(fields),
                Body::Bytes {
                    content_type,
                    bytes,
                } => request
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes.to_vec()),
            };
            let waited = started.elapsed();
            let pause = match request.send().await {
                Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let pause = retry_after(response).await;
                    let budget = self.rate_limit_wait.unwrap_or(self.wait_timeout);
                    // A server may ask for more seconds than a clock can add.
                    if waited.checked_add(pause).is_none_or(|until| until > budget) {
                        let seconds = pause.as_secs().max(1);
                        return Err(self.failure(&url, HttpErrorKind::RateLimited { seconds }));
                    }
                    self.rate_limited.set(self.rate_limited.get() + pause);
                    pause
                }
                Ok(response) if is_starting_up(response.status()) => {
                    let status = response.status();
                    let answer = A::read(response, self.server).await;
                    // The server's own error, such as Synapse's 502 "Failed to
                    // fetch alias" about another server: its answer, not a
                    // gateway's word that it is away.
                    if answer.is_matrix_error() {
                        return Ok(answer);
                    }
                    if !is_read(&method) {
                        let detail = format!("HTTP {status}");
                        return Err(
                            self.failure(&url, HttpErrorKind::AnswerLost { method, detail })
                        );
                    }
                    if waited >= self.wait_timeout {
                        return Err(self.unreachable(&url, waited, format!("HTTP {status}")));
                    }
                    backoff
                }
                Ok(response) => {
                    let answer = A::read(response, self.server).await;
                    let busy = self.busy.is_some_and(|busy| answer.is_busy(busy));
                    if !(busy && waited < self.wait_timeout) {
                        return Ok(answer);
                    }
                    backoff
                }
                Err(error) if error.is_timeout() => {
                    let seconds = self.timeout.as_secs();
                    return Err(self.failure(&url, HttpErrorKind::Timeout { seconds }));
                }
                Err(error) => match tls_failure(&error) {
                    // A refused certificate fails at once: waiting does not fix it.
                    Some(failure) => {
                        let kind = match trust::explain(failure, (&self.base_url, self.url_field), &self.trusted) {
                            Some(refused) => HttpErrorKind::Trust(refused),
                            None => HttpErrorKind::Transport {
                                detail: format!("TLS failed: {failure} (does {}'s scheme match the server: https:// to a port that speaks plain HTTP fails like this?)", self.url_field),
                            },
                        };
                        return Err(self.failure(&self.base_url, kind));
                    }
                    None if error.is_connect() => {
                        if waited >= self.wait_timeout {
                            return Err(self.unreachable(&url, waited, root_cause(&error)));
                        }
                        backoff
                    }
                    None => {
                        let detail = root_cause(&error);
                        return Err(self.failure(&url, HttpErrorKind::Transport { detail }));
                    }
                },
            };
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Answers that mean the server is not (yet) there, or that a proxy lost
/// its answer. For a gateway timeout, only the latter.
fn is_starting_up(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Requests that change nothing, so that sending one twice is harmless.
/// Writes are never resent after a 502/503/504: a proxy in front of the
/// server may have forwarded them and lost only the answer (a registration
/// resent that way fails on its spent nonce, after creating the user).
fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// The pause a 429 asks for: Matrix's `retry_after_ms`, else `Retry-After`.
async fn retry_after(response: reqwest::Response) -> Duration {
    let header = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body.get("retry_after_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .or(header)
        .unwrap_or(Duration::from_secs(1))
}

/// How an answer that ends the retries is read.
trait Answer: Sized {
    async fn read(response: reqwest::Response, server: &'static str) -> Self;
    /// Whether the backend's rule calls this answer "a moment later".
    fn is_busy(&self, busy: fn(&Reply) -> bool) -> bool;
    /// Whether this is a Matrix error (a JSON `errcode`), which only a
    /// homeserver sends, never a proxy in front of it.
    fn is_matrix_error(&self) -> bool;
}

impl Answer for Reply {
    async fn read(response: reqwest::Response, server: &'static str) -> Reply {
        read_reply(response, server).await
    }

    fn is_busy(&self, busy: fn(&Reply) -> bool) -> bool {
        busy(self)
    }

    fn is_matrix_error(&self) -> bool {
        !self.errcode().is_empty()
    }
}

/// A media download's answer.
pub enum Download {
    /// The media's content, still to be read from the response.
    Found(reqwest::Response),
    /// Any other answer: the server's error.
    Refused(Reply),
}

impl Answer for Download {
    async fn read(response: reqwest::Response, server: &'static str) -> Download {
        match response.status() {
            StatusCode::OK => Download::Found(response),
            _ => Download::Refused(read_reply(response, server).await),
        }
    }

    fn is_busy(&self, busy: fn(&Reply) -> bool) -> bool {
        matches!(self, Download::Refused(reply) if busy(reply))
    }

    fn is_matrix_error(&self) -> bool {
        matches!(self, Download::Refused(reply) if reply.is_matrix_error())
    }
}

async fn read_reply(response: reqwest::Response, server: &'static str) -> Reply {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        server,
        status,
        body,
    }
}

/// The innermost cause, which says what actually went wrong ("Connection refused").
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn bearer(token: Option<&Secret>) -> Auth<'_> {
    match token {
        Some(token) => Auth::Bearer(token),
        None => Auth::None,
    }
}

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
/// Everything else, `/` included, is encoded, so that a user ID stays one
/// segment whatever it contains.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment, such as a user ID (`@alice:example.com`).
pub fn path_segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_encoded_for_paths() {
        assert_eq!(path_segment("@alice:example.com"), "%40alice%3Aexample.com");
        assert_eq!(path_segment("a/b+c=d"), "a%2Fb%2Bc%3Dd");
        assert_eq!(path_segment("ä ~*[]"), "%C3%A4%20~%2A%5B%5D");
    }

    /// A user ID in a query string goes out as it does in a path: every
    /// character a localpart or server name may hold is encoded the same.
    #[test]
    fn queries_encode_user_ids_as_paths_do() {
        let user = "@a.b_c=d-e/f+g:[::1]:8448";
        let request = reqwest::Client::new()
            .get("http://127.0.0.1/_matrix/client/v3/register/available")
            .query(&[("username", user), ("from", "0")])
            .build()
            .unwrap();
        assert_eq!(
            request.url().query(),
            Some(format!("username={}&from=0", path_segment(user)).as_str())
        );
    }

    #[test]
    fn explanations_come_from_each_servers_error_shape() {
        let reply = |body: Value| Reply {
            server: HOMESERVER,
            status: StatusCode::BAD_REQUEST,
            body,
        };
        assert_eq!(
            reply(serde_json::json!({"errcode": "M_X", "error": "synapse says"})).explanation(),
            "synapse says"
        );
        assert_eq!(
            reply(serde_json::json!({"message": "dendrite says"})).explanation(),
            "dendrite says"
        );
        assert_eq!(
            reply(serde_json::json!({"errors": [{"title": "mas says"}]})).explanation(),
            "mas says"
        );
        let text = reply(Value::String("y".repeat(500))).explanation();
        assert_eq!(
            text,
            format!("{}... (500 bytes)", "y".repeat(MAX_QUOTED_TEXT))
        );
    }

    #[test]
    fn explanations_never_quote_a_secret_even_in_part() {
        let password = "p".repeat(150) + &"q".repeat(150);
        let _held = crate::secret::Secret::new(password.clone());
        let reply = |body: Value| Reply {
            server: HOMESERVER,
            status: StatusCode::BAD_GATEWAY,
            body,
        };
        let page = format!(
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>{}{password}{}</body></html>",
            "x".repeat(150 - 67),
            "z".repeat(1000)
        );
        let explanation = reply(Value::String(page.clone())).explanation();
        assert_eq!(
            explanation,
            format!(
                "an HTML page of {} bytes titled \"502 Bad Gateway\"",
                page.len()
            )
        );
        // A quoted body in the error field, double-escaped, is masked before it is cut.
        let body = serde_json::to_string(&serde_json::json!({"password": password})).unwrap();
        let echo = serde_json::to_string(&body).unwrap();
        let explanation = reply(
            serde_json::json!({"errcode": "M_UNKNOWN", "error": format!("bad request {echo}")}),
        )
        .explanation();
        assert!(!explanation.contains("ppp"), "{explanation}");
        assert!(explanation.starts_with("bad request"), "{explanation}");
        // A JSON answer without an explanation of its own is not quoted.
        let explanation =
            reply(serde_json::json!({"request": {"password": password}})).explanation();
        assert!(!explanation.contains("ppp"), "{explanation}");
        assert!(
            explanation.starts_with("no explanation (a JSON answer of "),
            "{explanation}"
        );
    }
}
