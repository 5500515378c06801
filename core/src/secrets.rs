//! The one redaction layer: every error report, URL and response snippet Strata prints passes
//! through [`redact`], so a secret never reaches a log line, an error message or a file.
//!
//! Two mechanisms, both applied by [`redact`]:
//! - **Known secrets**: connectors [`register`] every secret they are built with (passwords,
//!   tokens, keys, `${VAR}` values that fill a secret field), and the text is scrubbed of them
//!   wherever they appear, whatever echoed them (a server repeating the URL in its body, a
//!   driver's error message, a YAML parse error).
//! - **Secret shapes**: URL user-info passwords (`scheme://user:pass@host`) and the values of
//!   query parameters whose name looks secret (`api_key`, `token`, `sig`, `password`, ...).
//!
//! [`crate::Error`]'s `Display`, `Debug` and [`crate::Error::report`] call [`redact`].

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "***";

/// Secrets shorter than this are not registered: scrubbing two-letter strings from every
/// message would make errors unreadable, and such values are not secrets worth the name.
pub const MIN_SECRET_LEN: usize = 4;

static KNOWN: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// Remember `secret` so [`redact`] scrubs it from everything printed from now on, in this
/// process. Also registers its percent-encoded form (how it appears inside URLs).
pub fn register(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    remember([secret.to_string(), url_encode(secret)]);
}

/// Add `texts` to the known secrets, longest first (so a secret containing another is
/// scrubbed whole).
fn remember(texts: impl IntoIterator<Item = String>) {
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    for s in texts {
        if !known.contains(&s) {
            known.push(s);
        }
    }
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Remember the credentials of HTTP Basic authentication: the password, and the header value
/// an HTTP client sends for it (`base64(user:password)`), which a server echoing its request
/// headers would show and which contains the password in a form plain-text matching misses.
pub fn register_basic(user: &str, password: &str) {
    use base64::Engine as _;
    register(password);
    if password.len() >= MIN_SECRET_LEN {
        let engine = base64::engine::general_purpose::STANDARD;
        remember([engine.encode(format!("{user}:{password}"))]);
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Register the password of a URL's user info (`scheme://user:password@host`), as written and
/// percent-decoded.
pub fn register_url_password(url: &str) {
    let Some((_, rest)) = url.split_once("://") else {
        return;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((user, password)) = userinfo.split_once(':')
    {
        // An HTTP client sends the user info as Basic authentication, decoded or as written.
        register_basic(user, password);
        register_basic(&percent_decode(user), &percent_decode(password));
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `#[serde(deserialize_with)]` helper for secret fields: deserializes a
/// [`secrecy::SecretString`] and [`register`]s it (and a URL's password), so no error, log line
/// or echo from a server can show it.
///
/// # Errors
/// The deserializer's.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<secrecy::SecretString, D::Error> {
    use secrecy::ExposeSecret as _;
    let s = <secrecy::SecretString as serde::Deserialize>::deserialize(d)?;
    register(s.expose_secret());
    register_url_password(s.expose_secret());
    Ok(s)
}

/// [`deserialize`] for an optional secret.
///
/// # Errors
/// The deserializer's.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<secrecy::SecretString>, D::Error> {
    use secrecy::ExposeSecret as _;
    let s = <Option<secrecy::SecretString> as serde::Deserialize>::deserialize(d)?;
    if let Some(s) = &s {
        register(s.expose_secret());
        register_url_password(s.expose_secret());
    }
    Ok(s)
}

/// Query parameter names whose values are secrets (compared case-insensitively, also as a
/// suffix such as `x-api-key` or `access_token`).
const SECRET_PARAMS: &[&str] = &[
    "key",
    "apikey",
    "api_key",
    "api-key",
    "token",
    "access_token",
    "refresh_token",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "sig",
    "signature",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "credential",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// True when a parameter or header named `name` carries a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.contains("page") || n.starts_with("next") || n.starts_with("continuation") {
        return false; // pagination tokens are positions, not credentials
    }
    SECRET_PARAMS.iter().any(|p| n == *p)
        || [
            "key",
            "token",
            "secret",
            "password",
            "signature",
            "credential",
        ]
        .iter()
        .any(|s| n.ends_with(s))
}

/// `text` with every registered secret, URL password and secret-named query value replaced by
/// [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
        for s in known.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
    }
    if (out.contains("://") || out.contains('?'))
        && let Some(fixed) = redact_url_shapes(&out)
    {
        out = Cow::Owned(fixed);
    }
    out
}

/// Scrub `user:password@` after `://` and secret-named query values; `None` when nothing changed.
fn redact_url_shapes(text: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // User info: `://user:pass@` -> `://user:***@`.
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let auth_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..auth_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) if &userinfo[colon + 1..] != REDACTED => {
                        out.push_str(&userinfo[..colon + 1]);
                        out.push_str(REDACTED);
                        out.push_str(&authority[at..]);
                        changed = true;
                    }
                    _ => out.push_str(authority),
                }
            }
            None => out.push_str(authority),
        }
        rest = &tail[auth_end..];
    }
    out.push_str(rest);
    // Query values: `?api_key=v&x=1` -> `?api_key=***&x=1`.
    let text = out;
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let stop = |ch: char| matches!(ch, '&' | '#' | '"' | '\'' | ')' | ',') || ch.is_whitespace();
    while let Some(rel) = text[pos..].find(['?', '&', ';']) {
        let start = pos + rel + 1;
        out.push_str(&text[pos..start]);
        pos = start;
        let name_end = text[start..]
            .find(|ch: char| ch == '=' || stop(ch))
            .map_or(text.len(), |n| start + n);
        if text[name_end..].starts_with('=') && is_secret_name(&text[start..name_end]) {
            let value = name_end + 1;
            let value_end = text[value..].find(stop).map_or(text.len(), |n| value + n);
            if &text[value..value_end] != REDACTED {
                out.push_str(&text[start..value]);
                out.push_str(REDACTED);
                pos = value_end;
                changed = true;
            }
        }
    }
    out.push_str(&text[pos..]);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_and_url_shapes_are_scrubbed() {
        register("S3cr3tValue-42");
        assert_eq!(redact("echo: S3cr3tValue-42 again"), "echo: *** again");
        assert_eq!(redact("enc S3cr3tValue-42"), "enc ***");
        assert_eq!(
            redact("GET http://admin:hunter22@host:80/x?a=1&api_key=abc123&b=2 failed"),
            "GET http://admin:***@host:80/x?a=1&api_key=***&b=2 failed"
        );
        assert_eq!(
            redact("https://h/p?X-Amz-Signature=dead&Token=x"),
            "https://h/p?X-Amz-Signature=***&Token=***"
        );
        assert_eq!(redact("plain text, no url é"), "plain text, no url é");
        assert_eq!(redact("héllo?key=ü€&n=1"), "héllo?key=***&n=1");
        register_url_password("mongodb://strata:p%40ssw0rd@db:27017/?tls=true");
        assert_eq!(redact("auth failed for p@ssw0rd"), "auth failed for ***");
        register("ab"); // too short to register
        assert_eq!(redact("ab"), "ab");
    }

    #[test]
    fn basic_credentials_are_scrubbed_also_as_the_header_a_client_sends() {
        use base64::Engine as _;
        let header =
            |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        register_basic("loader", "Basic-Secret-77");
        let echoed = format!(
            "authorization=Basic {}",
            header("loader", "Basic-Secret-77")
        );
        assert_eq!(redact(&echoed), "authorization=Basic ***");
        register_url_password("http://admin:Url%2DSecret%2D88@api.example/x");
        let echoed = format!("authorization=Basic {}", header("admin", "Url-Secret-88"));
        assert_eq!(redact(&echoed), "authorization=Basic ***");
    }
}
