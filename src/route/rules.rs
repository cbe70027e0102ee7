//! The pure path rules: how a raw path is decoded and checked, which API version and endpoint
//! name it reaches, and which paths the gateway owns (answers, refuses or relays itself). A leaf:
//! it imports no crate module, so the configuration can check public routes against it.
//!
//! Ambiguous spellings are refused rather than repaired: encoded `/`, `\` or `.`, NUL and other
//! control characters, dot segments, empty segments (`//`), `;` parameters and raw backslashes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    Forbidden,
    BadEscape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `POST /api/v1/login`: answered by the gateway, never forwarded.
    Login,
    /// `/api/v1/logout`: answered by the gateway, never forwarded.
    Logout,
    /// DDP login methods over REST (`method.call/login`, `method.callAnon/login`): never forwarded.
    LoginMethod,
    /// `/websocket`, `/sockjs/...`: the realtime API, closed until it is bridged.
    Realtime,
    /// Ways to obtain upstream credentials around authgate (registration, password reset,
    /// email verification, OAuth/SAML/CAS callbacks): never forwarded.
    Refused,
    /// Configured public paths: forwarded without identity.
    Public,
    /// Everything else: forwarded only with a live session.
    Protected,
}

/// Where a path sits in Rocket.Chat's REST API. Rocket.Chat serves the same endpoints on its
/// unversioned `/api/` as on `/api/v1/` (login and logout included), and a later version would
/// be `/api/v2/`: every one of them is a way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApiVersion {
    /// `/api/<name>`.
    Unversioned,
    /// `/api/v1/<name>`: the only version authgate answers login surfaces on.
    V1,
    /// `/api/v<digits>/<name>`, any other number.
    Other,
}

/// The API version and the endpoint name after it, for a path in comparable form.
fn api_endpoint(c: &str) -> Option<(ApiVersion, &str)> {
    let rest = c.strip_prefix("/api/")?;
    if let Some(slash) = memchr::memchr(b'/', rest.as_bytes()) {
        let (first, name) = (&rest[..slash], &rest[slash + 1..]);
        if let Some(digits) = first.strip_prefix('v') {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                let version = match digits {
                    "1" => ApiVersion::V1,
                    _ => ApiVersion::Other,
                };
                return Some((version, name));
            }
        }
    }
    Some((ApiVersion::Unversioned, rest))
}

/// The endpoint name after `/api/`, `/api/v1/` or `/api/v<N>/` (any case), case preserved.
pub fn api_endpoint_name(path: &str) -> Option<&str> {
    // Compared without case, without lower-casing a copy: this runs on every proxied request.
    let rest = path
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("/api/"))
        .map(|_| &path[5..])?;
    if let Some(slash) = memchr::memchr(b'/', rest.as_bytes()) {
        let (first, name) = (&rest[..slash], &rest[slash + 1..]);
        if let Some(digits) = first.strip_prefix(['v', 'V']) {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return Some(name);
            }
        }
    }
    Some(rest)
}

/// Endpoints authgate answers itself under `/api/v1/`, by their comparable name. Under any
/// other version (`/api/login`, `/api/v2/logout`) they are refused, never forwarded.
const GATEWAY_ENDPOINTS: [(&str, RouteKind); 4] = [
    ("login", RouteKind::Login),
    ("logout", RouteKind::Logout),
    ("method.call/login", RouteKind::LoginMethod),
    ("method.callanon/login", RouteKind::LoginMethod),
];

/// REST endpoints that hand out upstream credentials or accounts around authgate, refused
/// under every API version.
const CREDENTIAL_ENDPOINTS: [&str; 4] = [
    "users.register",
    "users.forgotpassword",
    "users.resetpassword",
    // Rocket.Chat's own login token for any user: only the bridge may ask, directly.
    "users.createtoken",
];

/// Meteor/Rocket.Chat methods that create an account, log the caller in upstream or mail a
/// password reset (Meteor's `forgotPassword` as well as Rocket.Chat's `sendForgotPasswordEmail`).
const CREDENTIAL_METHODS: [&str; 7] = [
    "registeruser",
    "createuser",
    "resetpassword",
    "verifyemail",
    "sendforgotpasswordemail",
    "forgotpassword",
    "setpassword",
];
/// OAuth, SAML and CAS callbacks: they log a browser in upstream.
const CREDENTIAL_PREFIXES: [&str; 3] = ["/_oauth/", "/_saml/", "/_cas/"];
/// Realtime paths outside the REST API.
const REALTIME_PATHS: [&str; 2] = ["/websocket", "/sockjs"];

/// True for a DDP method (any case) that must never run upstream, over REST or a socket.
pub fn is_credential_method(name: &str) -> bool {
    CREDENTIAL_METHODS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(name))
}

fn is_credential_endpoint(name: &str) -> bool {
    let method = name
        .strip_prefix("method.callanon/")
        .or_else(|| name.strip_prefix("method.call/"));
    method.is_some_and(is_credential_method) || CREDENTIAL_ENDPOINTS.contains(&name)
}

/// The route of a path authgate owns (answers, refuses, or relays frame by frame); `None` for
/// paths left to the public/protected rules. `c` is in comparable form.
pub(crate) fn gateway_kind(c: &str) -> Option<RouteKind> {
    if let Some((version, name)) = api_endpoint(c) {
        if let Some((_, kind)) = GATEWAY_ENDPOINTS.iter().find(|(n, _)| *n == name) {
            return Some(match version {
                ApiVersion::V1 => *kind,
                ApiVersion::Unversioned | ApiVersion::Other => RouteKind::Refused,
            });
        }
        if is_credential_endpoint(name) {
            return Some(RouteKind::Refused);
        }
    }
    if CREDENTIAL_PREFIXES
        .iter()
        .any(|p| c.starts_with(p) || c == p.trim_end_matches('/'))
    {
        return Some(RouteKind::Refused);
    }
    REALTIME_PATHS
        .iter()
        .any(|r| {
            c.strip_prefix(r)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .then_some(RouteKind::Realtime)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn forbidden_byte(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b'\\' || b == b';' || b == b'#' || b == b' '
}

/// Decodes and checks a raw path. The result keeps case and any trailing slash.
pub fn canonical_path(raw: &str) -> Result<String, PathError> {
    canonical_path_cow(raw).map(std::borrow::Cow::into_owned)
}

/// [`canonical_path`], borrowing `raw` when it holds no escape (it is then its own canonical
/// form): what every proxied request goes through.
pub(crate) fn canonical_path_cow(raw: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if !holds_escape(bytes)? {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let path = decode_path(bytes)?;
    if has_empty_or_dot_segment(&path) {
        return Err(PathError::Forbidden);
    }
    Ok(std::borrow::Cow::Owned(path))
}

/// One pass over a raw path (starting with `/`): true when it holds an escape (it must be
/// decoded before it can be judged), else whether it is canonical as it is: no forbidden byte,
/// no empty, `.` or `..` segment (one trailing slash allowed).
fn holds_escape(bytes: &[u8]) -> Result<bool, PathError> {
    let mut segment_start = 1;
    let mut bad_segment = false;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if b == b'%' {
            return Ok(true);
        }
        if b >= 0x80 || forbidden_byte(b) {
            return Err(PathError::Forbidden);
        }
        if b == b'/' {
            bad_segment |= matches!(&bytes[segment_start..i], b"" | b"." | b"..");
            segment_start = i + 1;
        }
    }
    let last = &bytes[segment_start..];
    // An empty last segment is the root or the one trailing slash allowed.
    bad_segment |= matches!(last, b"." | b"..");
    if bad_segment {
        return Err(PathError::Forbidden);
    }
    Ok(false)
}

/// True when a path (starting with `/`) holds an empty segment (`//`), or a `.` or `..` one;
/// one trailing slash is allowed. One pass over the bytes: this runs on every request.
fn has_empty_or_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.len() <= 1 {
        return false;
    }
    let inner = &bytes[1..];
    let inner = inner.strip_suffix(b"/").unwrap_or(inner);
    inner
        .split(|&b| b == b'/')
        .any(|seg| matches!(seg, b"" | b"." | b".."))
}

/// Decodes the percent escapes of a raw path, refusing those that would change its structure.
fn decode_path(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&c| hex_val(c)),
                bytes.get(i + 2).and_then(|&c| hex_val(c)),
            ) else {
                return Err(PathError::BadEscape);
            };
            let d = h * 16 + l;
            if d == b'/' || d == b'.' || d == b'%' || forbidden_byte(d) && d != b' ' {
                return Err(PathError::Forbidden);
            }
            out.push(d);
            i += 3;
        } else if b >= 0x80 || forbidden_byte(b) {
            return Err(PathError::Forbidden);
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::Forbidden)
}

/// The form gateway paths are compared in: ASCII lower case, without a trailing slash.
/// A path as the rules compare it: lower case, without a trailing slash. Borrowed (no
/// allocation on the proxied path) when the path is already in that form.
pub(crate) fn comparable(path: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = match path.strip_suffix('/') {
        Some(s) if !s.is_empty() => s,
        _ => path,
    };
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

/// True when a public route (exact path, or prefix ending in `/`) would expose a path the
/// gateway owns: one of them, a whole API version, or a folder holding one.
pub fn covers_gateway_path(path: &str, is_prefix: bool) -> bool {
    let c = comparable(path);
    if gateway_kind(&c).is_some() {
        return true;
    }
    if !is_prefix {
        return false;
    }
    let folder = format!("{}/", c.trim_end_matches('/'));
    if folder == "/" {
        return true;
    }
    if let Some((_, name)) = api_endpoint(&folder) {
        let owned_names = GATEWAY_ENDPOINTS
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(CREDENTIAL_ENDPOINTS.iter().map(|n| n.to_string()))
            .chain(
                CREDENTIAL_METHODS
                    .iter()
                    .flat_map(|m| [format!("method.call/{m}"), format!("method.callanon/{m}")]),
            );
        return name.is_empty() || owned_names.into_iter().any(|n| n.starts_with(name));
    }
    CREDENTIAL_PREFIXES
        .iter()
        .chain(REALTIME_PATHS.iter())
        .any(|p| p.starts_with(&folder))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check of a path without escapes judges as decoding and then checking the
    /// segments does.
    #[test]
    fn plain_paths_are_judged_as_decoded_ones() {
        let by_decoding = |raw: &str| -> Result<String, PathError> {
            if !raw.starts_with('/') {
                return Err(PathError::NotAbsolute);
            }
            let path = decode_path(raw.as_bytes())?;
            if has_empty_or_dot_segment(&path) {
                return Err(PathError::Forbidden);
            }
            Ok(path)
        };
        for raw in [
            "/",
            "//",
            "/a",
            "/a/",
            "/a//",
            "//a",
            "/.",
            "/..",
            "/./",
            "/../",
            "/a/.",
            "/a/..",
            "/a/./b",
            "/a/../b",
            "/.a",
            "/..a",
            "/a.",
            "/a/b/c/",
            "/a\\b",
            "/a;b",
            "/a b",
            "/a\u{e9}",
            "/api/v1/me",
            "/a/%2e",
            "/a/b%20c",
            "/%zz",
            "/./%41",
            "/a%",
        ] {
            assert_eq!(
                canonical_path_cow(raw).map(std::borrow::Cow::into_owned),
                by_decoding(raw),
                "{raw}"
            );
        }
    }
}
