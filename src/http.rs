//! The one HTTP client every backend uses: JSON in and out, a timeout on
//! every request, and patient retries while the homeserver is starting or
//! asks us to slow down.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::args::ServerOptions;
use crate::secret::Secret;

/// Longest pause between two attempts to reach a server that is starting.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How much of a non-JSON error body (a proxy's HTML page) a message may quote.
const MAX_QUOTED_BODY: usize = 200;

/// Why a request got no usable answer. Answers with an error status are
/// not errors here: the backend that sent the request interprets them.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connection refused, or 502/503/504 to a read, for longer than `wait_timeout`.
    #[error("cannot reach the homeserver at {url} (waited {waited}s: {detail}); check homeserver_url (mas_url for MAS), that the server is running, or raise wait_timeout")]
    Unreachable {
        url: String,
        waited: u64,
        detail: String,
    },
    /// A write got 502/503: it may have reached the server and been carried
    /// out before the answer was lost, so it is not sent again blindly; the
    /// caller reads the server to find out.
    #[error("the homeserver at {url} answered {detail} to a {method} that it may nonetheless have carried out; matrix_user does not send it again blindly; running again reads the server and converges")]
    AnswerLost {
        url: String,
        method: Method,
        detail: String,
    },
    /// One request took longer than `timeout`.
    #[error("the homeserver at {url} did not answer within {seconds}s (a change it was asked to make may or may not have happened; running again converges); raise timeout or check the server's load")]
    Timeout { url: String, seconds: u64 },
    /// The server keeps answering 429 beyond what `wait_timeout` allows.
    #[error("the homeserver rate-limits us and asks to wait {seconds}s more, longer than wait_timeout allows; run again later or raise wait_timeout")]
    RateLimited { seconds: u64 },
    /// TLS or protocol failure that waiting does not fix.
    #[error("request to {url} failed: {detail}; check homeserver_url (mas_url for MAS), validate_certs and ca_path")]
    Transport { url: String, detail: String },
    /// The CA bundle named by `ca_path` is unusable.
    #[error("ca_path {path}: {detail}; give a PEM file with the CA certificate")]
    CaFile { path: String, detail: String },
}

/// A homeserver's answer.
#[derive(Debug)]
pub struct Reply {
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

    /// The server's own explanation, for messages (Synapse's `error`,
    /// Dendrite's `message`, MAS's `errors[0].title`, or a quoted body).
    pub fn explanation(&self) -> String {
        let body = &self.body;
        body.get("error")
            .or_else(|| body.get("message"))
            .or_else(|| body.pointer("/errors/0/title"))
            .or_else(|| body.get("error_description"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| match body {
                Value::String(text) => text.chars().take(MAX_QUOTED_BODY).collect(),
                Value::Null => String::new(),
                other => other.to_string().chars().take(MAX_QUOTED_BODY).collect(),
            })
    }
}

/// What a request carries besides its method and path.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    /// `application/x-www-form-urlencoded`, as OAuth2's token endpoint takes.
    Form(&'a [(&'a str, &'a str)]),
}

/// How a request authenticates.
enum Auth<'a> {
    None,
    Bearer(&'a Secret),
    /// HTTP Basic, as OAuth2's `client_secret_basic`: a client ID and its secret.
    Basic(&'a str, &'a Secret),
}

pub struct Http {
    client: reqwest::Client,
    base_url: String,
    timeout: Duration,
    wait_timeout: Duration,
}

impl Http {
    pub fn new(options: &ServerOptions) -> Result<Http, HttpError> {
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .user_agent(concat!("matrix_user/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!options.validate_certs);
        if let Some(path) = &options.ca_path {
            let ca_error = |detail: String| HttpError::CaFile {
                path: path.display().to_string(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certificate =
                reqwest::Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|e| HttpError::Transport {
            url: options.url.clone(),
            detail: e.to_string(),
        })?;
        Ok(Http {
            client,
            base_url: options.url.clone(),
            timeout: options.timeout,
            wait_timeout: options.wait_timeout,
        })
    }

    /// Sends one request, retrying within `wait_timeout` while the server
    /// refuses connections, is overloaded (502/503/504 to a read, a locked
    /// SQLite database) or rate-limits us (429). A write that gets 502/503
    /// is not resent: [`HttpError::AnswerLost`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Body<'_>,
    ) -> Result<Reply, HttpError> {
        let auth = match token {
            Some(token) => Auth::Bearer(token),
            None => Auth::None,
        };
        self.send_as(method, path, auth, body).await
    }

    /// [`Http::send`], authenticated with HTTP Basic as `user` and `secret`.
    pub async fn send_basic(
        &self,
        method: Method,
        path: &str,
        (user, secret): (&str, &Secret),
        body: Body<'_>,
    ) -> Result<Reply, HttpError> {
        self.send_as(method, path, Auth::Basic(user, secret), body)
            .await
    }

    async fn send_as(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Body<'_>,
    ) -> Result<Reply, HttpError> {
        let url = format!("{}{}", self.base_url, path);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut request = self.client.request(method.clone(), &url);
            request = match auth {
                Auth::None => request,
                Auth::Bearer(token) => request.bearer_auth(token.expose()),
                Auth::Basic(user, secret) => request.basic_auth(user, Some(secret.expose())),
            };
            request = match body {
                Body::None => request,
                Body::Json(value) => request.json(value),
                Body::Form(fields) => request.form(fields),
            };
            let waited = started.elapsed();
            let pause = match request.send().await {
                Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let pause = retry_after(response).await;
                    if waited + pause > self.wait_timeout {
                        return Err(HttpError::RateLimited {
                            seconds: pause.as_secs().max(1),
                        });
                    }
                    pause
                }
                Ok(response) if is_starting_up(response.status()) => {
                    if !is_read(&method) {
                        return Err(HttpError::AnswerLost {
                            url,
                            method,
                            detail: format!("HTTP {}", response.status()),
                        });
                    }
                    if waited >= self.wait_timeout {
                        return Err(unreachable(
                            &url,
                            waited,
                            format!("HTTP {}", response.status()),
                        ));
                    }
                    backoff
                }
                Ok(response) => {
                    let reply = read_reply(response).await;
                    if !(is_database_busy(&reply) && waited < self.wait_timeout) {
                        return Ok(reply);
                    }
                    backoff
                }
                Err(error) if error.is_timeout() => {
                    return Err(HttpError::Timeout {
                        url,
                        seconds: self.timeout.as_secs(),
                    })
                }
                Err(error) if error.is_connect() => {
                    if waited >= self.wait_timeout {
                        return Err(unreachable(&url, waited, root_cause(&error)));
                    }
                    backoff
                }
                Err(error) => {
                    return Err(HttpError::Transport {
                        url,
                        detail: root_cause(&error),
                    })
                }
            };
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn unreachable(url: &str, waited: Duration, detail: String) -> HttpError {
    HttpError::Unreachable {
        url: url.to_string(),
        waited: waited.as_secs(),
        detail,
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

/// Dendrite on SQLite answers 500 "database is locked" while another writer
/// holds the file; the same request succeeds a moment later.
fn is_database_busy(reply: &Reply) -> bool {
    reply.status == StatusCode::INTERNAL_SERVER_ERROR
        && reply.explanation().contains("database is locked")
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

async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply { status, body }
}

/// The innermost cause, which says what actually went wrong ("Connection refused").
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Percent-encodes one path segment, such as a user ID (`@alice:example.com`).
pub fn path_segment(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(byte as char)
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_encoded_for_paths() {
        assert_eq!(path_segment("@alice:example.com"), "%40alice%3Aexample.com");
        assert_eq!(path_segment("a/b+c=d"), "a%2Fb%2Bc%3Dd");
    }

    #[test]
    fn explanations_come_from_each_servers_error_shape() {
        let reply = |body: Value| Reply {
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
        assert_eq!(
            reply(Value::String("x".repeat(500))).explanation().len(),
            MAX_QUOTED_BODY
        );
    }
}
