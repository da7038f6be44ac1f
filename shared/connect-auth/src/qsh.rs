//! The canonical request and its query-string hash (qsh).
//!
//! The qsh binds a token to one request: `hex(SHA-256(METHOD & PATH & QUERY))`. Confluence computes it
//! with Atlassian's Java canonicaliser, so this module follows the Java rules where the Node library
//! differs (see docs/protocol.md §2): parameters are ordered by their *encoded* names.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use percent_encoding::percent_decode;
use sha2::{Digest, Sha256};

/// The literal qsh of context JWTs (`AP.context.getToken()`), opted into with `apiMigrations.context-qsh`.
pub const CONTEXT_QSH: &str = "context-qsh";

/// A request as it arrived on the wire, before any framework touched it.
///
/// `raw_path` is still percent-encoded; `raw_query` is the part after `?` (no `?`, may be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestParts<'a> {
    /// The HTTP method, any case.
    pub method: &'a str,
    /// The path as received, percent-encoded, without the query.
    pub raw_path: &'a str,
    /// The query string as received, without the leading `?` (may be empty).
    pub raw_query: &'a str,
    /// The path of the base URL to strip (`/wiki` for Confluence, the app base URL's path for the app).
    pub base_path: &'a str,
}

impl<'a> RequestParts<'a> {
    /// A request with nothing to strip from its path.
    pub fn new(method: &'a str, raw_path: &'a str, raw_query: &'a str) -> Self {
        Self {
            method,
            raw_path,
            raw_query,
            base_path: "",
        }
    }

    /// The same request with a base path to strip before hashing.
    pub fn with_base_path(self, base_path: &'a str) -> Self {
        Self { base_path, ..self }
    }

    /// Splits `path?query#fragment` (a path-and-query as on the request line) into a request.
    pub fn from_path_and_query(method: &'a str, path_and_query: &'a str) -> Self {
        let without_fragment = path_and_query.split('#').next().unwrap_or_default();
        let (raw_path, raw_query) = without_fragment
            .split_once('?')
            .unwrap_or((without_fragment, ""));
        Self::new(method, raw_path, raw_query)
    }

    /// The canonical request string: `METHOD&PATH&QUERY`.
    pub fn canonical(&self) -> String {
        canonical_request(self)
    }

    /// The query-string hash of this request: lower-case hex SHA-256 of [`Self::canonical`].
    pub fn qsh(&self) -> String {
        hex::encode(self.qsh_digest())
    }

    /// [`Self::qsh`] as bytes, without allocating: what a qsh claim is compared with.
    pub(crate) fn qsh_hex(&self) -> [u8; 64] {
        let hex_digit = |n: u8| if n < 10 { b'0' + n } else { b'a' + (n - 10) };
        let mut out = [0_u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.qsh_digest()) {
            if let [high, low] = pair {
                *high = hex_digit(byte >> 4);
                *low = hex_digit(byte & 0x0f);
            }
        }
        out
    }

    /// SHA-256 of [`Self::canonical`], hashed as it is written rather than from a string.
    fn qsh_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        write_canonical(&mut hasher, self);
        hasher.finalize().into()
    }
}

/// Where a canonical request is written: a `String`, or straight into its hash.
trait Sink {
    fn push_str(&mut self, s: &str);
    /// Pushes one ASCII byte (never called with another).
    fn push_ascii(&mut self, byte: u8);
}

impl Sink for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }
    fn push_ascii(&mut self, byte: u8) {
        self.push(char::from(byte));
    }
}

impl Sink for Sha256 {
    fn push_str(&mut self, s: &str) {
        self.update(s.as_bytes());
    }
    fn push_ascii(&mut self, byte: u8) {
        self.update([byte]);
    }
}

/// Builds the canonical request string `METHOD&PATH&QUERY` (docs/protocol.md §2).
pub fn canonical_request(request: &RequestParts<'_>) -> String {
    let mut out = String::with_capacity(
        request.method.len() + request.raw_path.len() + request.raw_query.len() + 8,
    );
    write_canonical(&mut out, request);
    out
}

fn write_canonical(out: &mut impl Sink, request: &RequestParts<'_>) {
    push_ascii_uppercase(out, request.method);
    out.push_ascii(b'&');
    push_canonical_path(out, request.raw_path, request.base_path);
    out.push_ascii(b'&');
    push_canonical_query(out, request.raw_query);
}

/// `str::to_ascii_uppercase`, written to `out`.
fn push_ascii_uppercase(out: &mut impl Sink, s: &str) {
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        out.push_str(c.to_ascii_uppercase().encode_utf8(&mut [0; 4]));
    }
}

/// Strips `base_path` from `path` on a segment boundary: `/app` strips from `/app/x` and `/app`, never
/// from `/application`.
fn strip_base_path<'p>(path: &'p str, base_path: &str) -> &'p str {
    let base = base_path.trim_end_matches('/');
    if base.is_empty() {
        return path;
    }
    match path.strip_prefix(base) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    }
}

fn push_canonical_path(out: &mut impl Sink, raw_path: &str, base_path: &str) {
    let path = strip_base_path(raw_path, base_path);
    // Java: empty -> "/", "&" -> "%26", ensure a leading "/", drop one trailing "/" when longer than 1.
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if !path.starts_with('/') {
        out.push_ascii(b'/');
    }
    for (i, piece) in path.split('&').enumerate() {
        if i > 0 {
            out.push_str("%26");
        }
        out.push_str(piece);
    }
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XX` are UTF-8 bytes.
/// Invalid UTF-8 becomes U+FFFD, as Java's decoder does, so no input can fail here.
fn form_decode(component: &str) -> String {
    let bytes: Vec<u8> = component
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&bytes).decode_utf8_lossy().into_owned()
}

/// Percent-encodes everything but the RFC 3986 unreserved set, upper-case hex (`*` → `%2A`, space → `%20`).
fn push_encoded(out: &mut impl Sink, value: &str) {
    // Upper-case hex digit of a nibble (0..=15).
    let hex = |n: u8| if n < 10 { b'0' + n } else { b'A' + (n - 10) };
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push_ascii(b);
        } else {
            out.push_ascii(b'%');
            out.push_ascii(hex(b >> 4));
            out.push_ascii(hex(b & 0x0f));
        }
    }
}

fn encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_encoded(&mut out, value);
    out
}

/// Orders strings by UTF-16 code units, as Java's `String.compareTo` does; differs from Rust's byte
/// order only around supplementary characters.
fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn push_canonical_query(out: &mut impl Sink, raw_query: &str) {
    if raw_query.is_empty() {
        return;
    }
    // Keyed by the encoded name: that is the Java sort order (docs/protocol.md §2 step 5).
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(raw_name);
        // Only the exact lower-case `jwt` parameter carries the token; `JWT` is an ordinary parameter.
        if name == "jwt" {
            continue;
        }
        params
            .entry(encoded(&name))
            .or_default()
            .push(form_decode(raw_value));
    }
    for (i, (name, values)) in params.iter_mut().enumerate() {
        if i > 0 {
            out.push_ascii(b'&');
        }
        out.push_str(name);
        out.push_ascii(b'=');
        values.sort_by(|a, b| utf16_order(a, b));
        for (j, value) in values.iter().enumerate() {
            if j > 0 {
                out.push_ascii(b',');
            }
            push_encoded(out, value);
        }
    }
}

/// Convenience: the qsh of a request.
pub fn query_string_hash(request: &RequestParts<'_>) -> String {
    request.qsh()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(method: &str, path: &str, query: &str, base: &str) -> String {
        RequestParts::new(method, path, query)
            .with_base_path(base)
            .canonical()
    }

    #[test]
    fn strips_the_base_path_only_on_a_segment_boundary() {
        assert_eq!(canon("GET", "/app/x", "", "/app"), "GET&/x&");
        assert_eq!(
            canon("GET", "/application/x", "", "/app"),
            "GET&/application/x&"
        );
        assert_eq!(canon("GET", "/app", "", "/app/"), "GET&/&");
        assert_eq!(
            canon("GET", "/wiki/api/v2/pages/1", "", "/wiki"),
            "GET&/api/v2/pages/1&"
        );
    }

    #[test]
    fn encodes_ampersands_in_the_path_and_keeps_the_rest_raw() {
        assert_eq!(canon("post", "/a&b/%20c/", "", ""), "POST&/a%26b/%20c&");
        assert_eq!(canon("GET", "", "", ""), "GET&/&");
        assert_eq!(canon("GET", "x", "", ""), "GET&/x&");
    }

    #[test]
    fn drops_only_the_lower_case_jwt_parameter() {
        assert_eq!(
            canon("GET", "/t", "jwt=abc&JWT=x&a=1", ""),
            "GET&/t&JWT=x&a=1"
        );
    }

    #[test]
    fn sorts_by_encoded_name_as_java_does() {
        // Decoded, "a{" > "aa"; encoded, "a%7B" < "aa".
        assert_eq!(canon("GET", "/t", "aa=1&a%7B=2", ""), "GET&/t&a%7B=2&aa=1");
    }

    #[test]
    fn orders_values_by_utf16_code_units() {
        // U+FF61 sorts after U+1F600 by code point but before it in UTF-16 (0xD83D < 0xFF61).
        let canonical = canon("GET", "/t", "v=%EF%BD%A1&v=%F0%9F%98%80", "");
        assert_eq!(canonical, "GET&/t&v=%F0%9F%98%80,%EF%BD%A1");
    }

    #[test]
    fn a_name_without_equals_has_the_empty_value_and_bad_escapes_do_not_fail() {
        assert_eq!(
            canon("GET", "/t", "flag&x=%zz&y=%FF", ""),
            "GET&/t&flag=&x=%25zz&y=%EF%BF%BD"
        );
    }
}
