//! Secrets: a string that cannot be printed by accident, and the masking of
//! every secret the process held, in every encoding a server may echo it in.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use aho_corasick::AhoCorasick;

/// Every secret value a run has held: passwords and secrets from the
/// arguments, and tokens and passwords made or received at run time, so that
/// the report can mask any of them wherever they turn up, on any thread
/// (a panic on a blocking thread is masked too).
struct Registry(std::sync::Mutex<Held>);

impl Registry {
    const fn new() -> Registry {
        Registry(std::sync::Mutex::new(Held::new()))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Held) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The run's registry: the module runs once per process.
static PROCESS: Registry = Registry::new();

/// The secrets held, and one matcher for all of them, built when first
/// needed after a secret was added: masking a text costs one pass over it
/// per decoded view, whatever the number of secrets (a run declaring 100,000
/// passwords masks every string of its output).
struct Held {
    values: Option<HashSet<String>>,
    matcher: Option<Arc<AhoCorasick>>,
}

impl Held {
    const fn new() -> Held {
        Held {
            values: None,
            matcher: None,
        }
    }

    fn insert(&mut self, value: &str) {
        let values = self.values.get_or_insert_with(HashSet::new);
        if !values.contains(value) {
            values.insert(value.to_string());
            self.matcher = None;
        }
    }

    /// One automaton for every secret, and the `+` spelling of a secret
    /// with spaces (how a form encodes a space); `None` when none is held.
    fn matcher(&mut self) -> Option<Arc<AhoCorasick>> {
        let values = self.values.as_ref().filter(|values| !values.is_empty())?;
        if self.matcher.is_none() {
            let plus_spelled = values
                .iter()
                .filter(|secret| secret.contains(' '))
                .map(|secret| secret.replace(' ', "+"));
            let patterns: Vec<String> = values.iter().cloned().chain(plus_spelled).collect();
            let matcher = AhoCorasick::new(patterns).expect("secrets build a matcher");
            self.matcher = Some(Arc::new(matcher));
        }
        self.matcher.clone()
    }
}

/// The registry [`hold`] and [`mask_secrets`] use: the process's. Unit
/// tests, which run many declarations in one process at once, each get one
/// of their own thread, used the same way, so that one test's secrets (a
/// property test's "alice") do not mask another test's expected text.
fn registry() -> &'static Registry {
    #[cfg(not(test))]
    return &PROCESS;
    #[cfg(test)]
    {
        thread_local! {
            static OWN: &'static Registry = Box::leak(Box::new(Registry::new()));
        }
        OWN.with(|own| *own)
    }
}

/// Values shorter than this are not masked: masking every "ab" in a message
/// would make it unreadable and would itself tell the value. Masking is only
/// a backstop for what servers echo: no message is ever built from a secret,
/// so a short secret is not printed either.
const MIN_MASKED_LENGTH: usize = 4;
pub const MASK: &str = "********";

/// How many layers of encoding (JSON string escaping, `\u` escapes,
/// percent-encoding, HTML entities, in any mix) masking looks through. One
/// layer is the report's own JSON; a server quoting a request body inside
/// its JSON answer adds one or two.
const DECODING_DEPTH: usize = 4;

/// Texts longer than this are described by their size only in an excerpt:
/// masking looks at the whole text before cutting, and a value of megabytes
/// is never worth quoting.
const MAX_EXCERPT_SOURCE: usize = 64 * 1024;

/// A password, shared secret or access token.
///
/// It has no `Display` and its `Debug` prints `Secret(redacted)`, so no
/// `{:?}`, error message or report can leak it. The value is reachable only
/// through [`Secret::expose`], at the point where it is sent to the server.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        hold(&value);
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Adds `value` to the secrets every output is masked for, before it is
/// wrapped in a [`Secret`] (the arguments register theirs before parsing, so
/// that an error about any field already masks them).
pub fn hold(value: &str) {
    hold_in(registry(), value);
}

fn hold_in(registry: &Registry, value: &str) {
    if value.chars().count() >= MIN_MASKED_LENGTH {
        registry.with(|held| held.insert(value));
    }
}

/// Also masks `user` and `secret` in the form HTTP Basic authentication
/// sends them (base64 of `user:secret`), which a server or proxy that
/// echoes request headers would show.
pub fn hold_basic_auth(user: &str, secret: &Secret) {
    use base64::Engine;
    let credentials = format!("{user}:{}", secret.expose());
    hold(&base64::engine::general_purpose::STANDARD.encode(credentials));
}

/// `text` with every secret this process has held replaced by [`MASK`],
/// wherever it appears as written or encoded: JSON string escapes at any of
/// [`DECODING_DEPTH`] levels (`\"`, `\\`, `\u00e9` or `\u0041` for any
/// character, upper or lower case), percent-encoding (either case, `+` for
/// a space) and HTML entities, in any mix. The whole encoded stretch is
/// masked, so no part of the secret is left. The password of any
/// `scheme://user:password@` URL in `text` is masked too.
pub fn mask_secrets(text: &str) -> String {
    mask_in(registry(), text)
}

fn mask_in(registry: &Registry, text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let mut hidden: Vec<(usize, usize)> = Vec::new();
    if let Some(wanted) = registry.with(Held::matcher) {
        let mut layer = vec![View::of(text)];
        for depth in 0..=DECODING_DEPTH {
            for view in &layer {
                view.find(&wanted, &mut hidden);
            }
            if depth == DECODING_DEPTH {
                break;
            }
            layer = layer
                .iter()
                .flat_map(|view| {
                    [
                        View::json_unescaped,
                        View::percent_decoded,
                        View::html_decoded,
                    ]
                    .into_iter()
                    .filter_map(move |decode| decode(view))
                })
                .collect();
            if layer.is_empty() {
                break;
            }
        }
    }
    // A URL's password is masked whatever its length: messages quote URLs.
    for (at, _) in text.match_indices("://") {
        if let Some((start, end)) = url_password(&text[at..]) {
            hidden.push((at + start, at + end));
        }
    }
    replace_spans(text, hidden)
}

/// At most `max_chars` characters of `text` for a message, masked before it
/// is cut (so a cut never leaves the start of a secret), with its full size
/// when cut. A text over [`MAX_EXCERPT_SOURCE`] bytes is described by its size only.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    if text.len() > MAX_EXCERPT_SOURCE {
        return format!("(a value of {} bytes, not shown)", text.len());
    }
    let masked = mask_secrets(text);
    if masked.chars().count() <= max_chars {
        return masked;
    }
    let cut: String = masked.chars().take(max_chars).collect();
    format!("{cut}... ({} bytes)", text.len())
}

/// Where the password of `scheme://user:password@host` lies in `url` (or
/// in a text, for its first `://`).
pub fn url_password(url: &str) -> Option<(usize, usize)> {
    let authority_start = url.find("://")? + 3;
    // Characters that end a URL's authority, or the URL itself in a text.
    let authority_len = url[authority_start..]
        .find(|c: char| "/?#\"'<>\\".contains(c) || c.is_whitespace())
        .unwrap_or(url.len() - authority_start);
    let authority = &url[authority_start..authority_start + authority_len];
    let userinfo_len = authority.rfind('@')?;
    let colon = authority[..userinfo_len].find(':')?;
    Some((authority_start + colon + 1, authority_start + userinfo_len))
}

/// A text decoded some layers deep, each byte of it knowing the stretch of
/// the original text it came from.
struct View {
    text: String,
    /// `origin[i]`: the original bytes that byte `i` of `text` was decoded
    /// from; `None` for the original text itself (which saves memory on a
    /// long text with nothing to decode).
    origin: Option<Vec<(usize, usize)>>,
}

impl View {
    fn of(text: &str) -> View {
        View {
            text: text.to_string(),
            origin: None,
        }
    }

    /// The original stretch of bytes `start..end` of this view.
    fn original(&self, start: usize, end: usize) -> (usize, usize) {
        match &self.origin {
            None => (start, end),
            Some(origin) => (origin[start].0, origin[end - 1].1),
        }
    }

    /// Records where each secret `wanted` matches occurs, overlapping or
    /// not, in original-text positions.
    fn find(&self, wanted: &AhoCorasick, hidden: &mut Vec<(usize, usize)>) {
        for found in wanted.find_overlapping_iter(&self.text) {
            hidden.push(self.original(found.start(), found.end()));
        }
    }

    /// Builds a new view by handing each position to `decode`, which either
    /// decodes a sequence starting there (the character and how many bytes it
    /// took) or leaves the character as it is. `None` when nothing decoded.
    fn decoded(&self, decode: impl Fn(&str) -> Option<(char, usize)>) -> Option<View> {
        let mut text = String::with_capacity(self.text.len());
        let mut origin = Vec::with_capacity(self.text.len());
        let mut changed = false;
        let mut at = 0;
        while at < self.text.len() {
            let rest = &self.text[at..];
            let (c, used) = match decode(rest) {
                Some(decoded) => {
                    changed = true;
                    decoded
                }
                None => {
                    let c = rest.chars().next().expect("at is inside the text");
                    (c, c.len_utf8())
                }
            };
            let span = self.original(at, at + used);
            origin.extend(std::iter::repeat_n(span, c.len_utf8()));
            text.push(c);
            at += used;
        }
        changed.then_some(View {
            text,
            origin: Some(origin),
        })
    }

    /// JSON string escapes: `\"`, `\\`, `\/`, `\n`..., `\uXXXX` and surrogate pairs.
    fn json_unescaped(&self) -> Option<View> {
        if !self.text.contains('\\') {
            return None;
        }
        self.decoded(|rest| {
            let mut chars = rest.chars();
            if chars.next()? != '\\' {
                return None;
            }
            let c = match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => return unicode_escape(rest),
                _ => return None,
            };
            Some((c, 2))
        })
    }

    /// Percent-encoding, either case; multi-byte UTF-8 characters decode whole.
    fn percent_decoded(&self) -> Option<View> {
        if !self.text.contains('%') {
            return None;
        }
        self.decoded(|rest| {
            let mut bytes = Vec::with_capacity(4);
            let mut used = 0;
            while bytes.len() < 4 {
                let byte = rest.get(used..used + 3).and_then(percent_byte)?;
                bytes.push(byte);
                used += 3;
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    return Some((text.chars().next()?, used));
                }
            }
            None
        })
    }

    /// HTML character references: the five named ones and numeric ones.
    fn html_decoded(&self) -> Option<View> {
        if !self.text.contains('&') {
            return None;
        }
        self.decoded(|rest| {
            if !rest.starts_with('&') {
                return None;
            }
            let end = rest.char_indices().take(12).find(|(_, c)| *c == ';')?.0;
            let name = &rest[1..end];
            let c = match name {
                "quot" => '"',
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "apos" => '\'',
                _ => {
                    let number = name.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => hex_number(hex)?,
                        None => number
                            .parse()
                            .ok()
                            .filter(|_| number.bytes().all(|b| b.is_ascii_digit()))?,
                    };
                    char::from_u32(code)?
                }
            };
            Some((c, end + 1))
        })
    }
}

/// `\uXXXX` at the start of `rest`, with a following low surrogate when the
/// first is a high one.
fn unicode_escape(rest: &str) -> Option<(char, usize)> {
    let unit = |at: usize| hex_number(rest.get(at..at + 6)?.strip_prefix("\\u")?);
    let first = unit(0)?;
    if (0xD800..0xDC00).contains(&first) {
        let second = unit(6).filter(|low| (0xDC00..0xE000).contains(low))?;
        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        return Some((char::from_u32(code)?, 12));
    }
    Some((char::from_u32(first)?, 6))
}

fn percent_byte(triplet: &str) -> Option<u8> {
    u8::try_from(hex_number(triplet.strip_prefix('%')?)?).ok()
}

/// Hexadecimal digits only (`from_str_radix` would also take a sign).
fn hex_number(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// `text` with each stretch in `spans` (merged where they overlap) replaced by [`MASK`].
fn replace_spans(text: &str, mut spans: Vec<(usize, usize)>) -> String {
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_unstable();
    let mut masked = String::with_capacity(text.len());
    let mut copied = 0;
    let mut current = spans[0];
    for &(start, end) in &spans[1..] {
        if start <= current.1 {
            current.1 = current.1.max(end);
        } else {
            masked.push_str(&text[copied..current.0]);
            masked.push_str(MASK);
            copied = current.1;
            current = (start, end);
        }
    }
    masked.push_str(&text[copied..current.0]);
    masked.push_str(MASK);
    masked.push_str(&text[current.1..]);
    masked
}

#[cfg(test)]
mod tests {
    /// The process's registry, which production uses: a secret held on one
    /// thread is masked on another (the report's, or a panic's).
    #[test]
    fn the_process_registry_masks_on_every_thread_what_any_held() {
        let secret = "process-registry-test-secret-7f3a";
        std::thread::spawn(move || super::hold_in(&super::PROCESS, secret))
            .join()
            .unwrap();
        let masked = super::mask_in(&super::PROCESS, &format!("token={secret}&x=1"));
        assert_eq!(masked, format!("token={}&x=1", super::MASK));
        assert_eq!(super::mask_secrets(secret), secret, "a test's own registry");
    }

    use super::*;

    #[test]
    fn every_secret_held_is_masked_even_as_json_text() {
        let _plain = Secret::new("token-4f9a2c");
        let _quoted = Secret::new("pa\"ss\\word");
        assert_eq!(
            mask_secrets(r#"got token-4f9a2c and {"password":"pa\"ss\\word"}"#),
            r#"got ******** and {"password":"********"}"#
        );
        assert_eq!(mask_secrets("nothing secret"), "nothing secret");
    }

    /// What a server does to a request body before echoing it, in every way we know of.
    fn every_echo_of(secret: &str) -> Vec<String> {
        let json = |s: &str| serde_json::to_string(s).unwrap();
        let inner = |s: &str| {
            let quoted = json(s);
            quoted[1..quoted.len() - 1].to_string()
        };
        let every_char_as_u = |s: &str, upper: bool| {
            s.encode_utf16()
                .map(|u| match upper {
                    true => format!("\\u{u:04X}"),
                    false => format!("\\u{u:04x}"),
                })
                .collect::<String>()
        };
        let percent = |s: &str, upper: bool, plus: bool| {
            s.bytes()
                .map(|b| match b {
                    b' ' if plus => "+".to_string(),
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                    _ if upper => format!("%{b:02X}"),
                    _ => format!("%{b:02x}"),
                })
                .collect::<String>()
        };
        let once = inner(secret);
        vec![
            secret.to_string(),
            once.clone(),
            // JSON inside a JSON string, twice and three times over.
            format!(r#"{{"error": "{}"}}"#, inner(&json(secret))),
            inner(&inner(&json(secret))),
            inner(&inner(&inner(&json(secret)))),
            every_char_as_u(secret, false),
            every_char_as_u(secret, true),
            inner(&every_char_as_u(secret, false)),
            percent(secret, true, false),
            percent(secret, false, true),
            inner(&percent(secret, true, true)),
            percent(&json(secret), true, false),
            html_escape(secret),
        ]
    }

    fn html_escape(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                '"' => "&quot;".to_string(),
                '&' => "&amp;".to_string(),
                '<' => "&lt;".to_string(),
                '>' => "&gt;".to_string(),
                '\'' => "&#39;".to_string(),
                c if !c.is_ascii() => format!("&#x{:x};", c as u32),
                c => c.to_string(),
            })
            .collect()
    }

    #[test]
    fn every_encoding_a_server_may_echo_is_masked() {
        for secret in [
            "pa\"ss\\word",
            "sp ace+plus%&=?/",
            "ümlaut-𝄞-パス",
            "<tag>&amp;'",
            "plain-token-value",
        ] {
            let _held = Secret::new(secret);
            for echo in every_echo_of(secret) {
                let text = format!("the server said: {echo} (end)");
                let masked = mask_secrets(&text);
                for form in every_echo_of(secret) {
                    assert!(
                        !masked.contains(&form),
                        "{secret:?} leaked as {form:?} in {masked:?}"
                    );
                }
                assert!(masked.contains(MASK), "{secret:?} not masked in {masked:?}");
                assert!(masked.starts_with("the server said: "), "{masked}");
            }
        }
    }

    #[test]
    fn a_secret_held_after_a_masking_is_masked_by_the_next() {
        let _first = Secret::new("first-secret");
        assert_eq!(
            mask_secrets("first-secret second-secret"),
            "******** second-secret"
        );
        let _second = Secret::new("second-secret");
        assert_eq!(
            mask_secrets("first-secret second-secret"),
            "******** ********"
        );
    }

    #[test]
    fn every_one_of_many_secrets_is_masked_wherever_it_is() {
        let held: Vec<Secret> = (0..2000)
            .map(|i| Secret::new(format!("pw-{i}-{}", i * 7919 % 10007)))
            .collect();
        let text: String = held
            .iter()
            .rev()
            .map(|secret| format!("[{}]", serde_json::to_string(secret.expose()).unwrap()))
            .collect();
        assert_eq!(mask_secrets(&text), "[\"********\"]".repeat(held.len()));
    }

    #[test]
    fn an_excerpt_is_cut_after_masking() {
        let password = "p".repeat(150) + &"q".repeat(150);
        let _held = Secret::new(password.clone());
        let page = format!(
            "<html>{}{password}{}</html>",
            "x".repeat(140),
            "y".repeat(400)
        );
        let short = excerpt(&page, 200);
        assert!(!short.contains("ppppp"), "{short}");
        assert!(
            short.ends_with(&format!("... ({} bytes)", page.len())),
            "{short}"
        );
        assert_eq!(excerpt("short and sweet", 64), "short and sweet");
        let huge = "h".repeat(50 << 20);
        let described = excerpt(&huge, 64);
        assert!(described.len() < 200, "{described}");
        assert!(described.contains(&(50 << 20).to_string()), "{described}");
    }

    #[test]
    fn the_password_of_a_url_is_found() {
        let password = |url: &'static str| url_password(url).map(|(start, end)| &url[start..end]);
        assert_eq!(
            password("https://admin:hunter2-in-url@matrix.example.com:8448/x"),
            Some("hunter2-in-url")
        );
        assert_eq!(password("https://a:p@ss:w@host"), Some("p@ss:w"));
        assert_eq!(password("http://127.0.0.1:8008"), None);
        assert_eq!(password("https://only-user@example.com/path:x@y"), None);
    }

    #[test]
    fn a_url_password_is_masked_whatever_its_length() {
        assert_eq!(
            mask_secrets("cannot reach http://u:pw@127.0.0.1:1/x (waited 0s) for @alice:x"),
            "cannot reach http://u:********@127.0.0.1:1/x (waited 0s) for @alice:x"
        );
        assert_eq!(
            mask_secrets("\"https://a:b@h\" and https://only-user@h"),
            "\"https://a:********@h\" and https://only-user@h"
        );
    }

    #[test]
    fn http_basic_credentials_are_masked() {
        hold_basic_auth("01J-client", &Secret::new("client-s3cret"));
        // base64("01J-client:client-s3cret"), as a server echoing headers shows it.
        assert_eq!(
            mask_secrets("got Authorization: Basic MDFKLWNsaWVudDpjbGllbnQtczNjcmV0"),
            "got Authorization: Basic ********"
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(redacted)");
        assert_eq!(format!("{:?}", Some(secret)), "Some(Secret(redacted))");
    }

    proptest::proptest! {
        /// Any secret long enough to be masked, in any encoding we know of,
        /// anywhere in a text, never shows. Texts around it hold no escape
        /// characters (a stray `\\` or `%` before an escape changes what it
        /// means) and no `*` (the mask itself).
        #[test]
        fn no_encoding_of_any_secret_survives_masking(
            secret in "[^*]{4,40}",
            before in "[^*\\\\%&+]{0,40}",
            after in "[^*\\\\%&+]{0,40}",
        ) {
            let _held = Secret::new(secret.clone());
            for echo in every_echo_of(&secret) {
                let masked = mask_secrets(&format!("{before} {echo} {after}"));
                proptest::prop_assert!(!masked.contains(&secret), "{:?} in {:?}", secret, masked);
                proptest::prop_assert!(!masked.contains(&echo), "{:?} in {:?} ({:x?})", echo, masked, secret.chars().map(|c| c as u32).collect::<Vec<_>>());
            }
        }
    }
}
