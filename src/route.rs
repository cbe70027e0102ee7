//! The one path canonicaliser: it decides the route and produces the path that is forwarded, so
//! the decision is always made on exactly the bytes the upstream receives.
//!
//! Ambiguous spellings are refused rather than repaired: encoded `/`, `\` or `.`, NUL and other
//! control characters, dot segments, empty segments (`//`), `;` parameters and raw backslashes.

use crate::config::RoutesConfig;

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

/// A request target after canonicalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    /// The canonical path, decoded, case preserved.
    pub path: String,
    /// Path and query exactly as they will be forwarded.
    pub forward: String,
}

const LOGIN: &str = "/api/v1/login";
const LOGOUT: &str = "/api/v1/logout";
const LOGIN_METHODS: [&str; 2] = ["/api/v1/method.call/login", "/api/v1/method.callanon/login"];
/// Paths a public route may never cover: the gateway's own endpoints and the login surfaces.
const GATEWAY_PATHS: [&str; 7] = [
    LOGIN,
    LOGOUT,
    "/api/v1/method.call/login",
    "/api/v1/method.callanon/login",
    "/api/v1/users.createtoken",
    "/websocket",
    "/sockjs/",
];

/// Meteor/Rocket.Chat methods that create an account or log the caller in upstream.
const CREDENTIAL_METHODS: [&str; 6] = [
    "registeruser",
    "createuser",
    "resetpassword",
    "verifyemail",
    "sendforgotpasswordemail",
    "setpassword",
];
/// REST endpoints and callback prefixes of the same kind.
const CREDENTIAL_PATHS: [&str; 3] = [
    "/api/v1/users.register",
    "/api/v1/users.forgotpassword",
    "/api/v1/users.resetpassword",
];
const CREDENTIAL_PREFIXES: [&str; 3] = ["/_oauth/", "/_saml/", "/_cas/"];

fn is_credential_path(c: &str) -> bool {
    let method = c
        .strip_prefix("/api/v1/method.callanon/")
        .or_else(|| c.strip_prefix("/api/v1/method.call/"));
    method.is_some_and(|m| CREDENTIAL_METHODS.contains(&m))
        || CREDENTIAL_PATHS.contains(&c)
        || CREDENTIAL_PREFIXES
            .iter()
            .any(|p| c.starts_with(p) || c == p.trim_end_matches('/'))
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
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
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
    let path = String::from_utf8(out).map_err(|_| PathError::Forbidden)?;
    let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
    if path.len() > 1
        && inner
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(PathError::Forbidden);
    }
    Ok(path)
}

/// Re-encodes a canonical path for the request line: RFC 3986 `pchar`s stay as they are,
/// everything else is percent-encoded.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The form gateway paths are compared in: ASCII lower case, without a trailing slash.
fn comparable(path: &str) -> String {
    let lower = path.to_ascii_lowercase();
    match lower.strip_suffix('/') {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => lower,
    }
}

/// True when a public route (exact path, or prefix ending in `/`) would expose a gateway path.
pub fn covers_gateway_path(path: &str, is_prefix: bool) -> bool {
    let c = comparable(path);
    GATEWAY_PATHS.iter().any(|g| {
        let g_trim = g.trim_end_matches('/');
        c == g_trim
            || c.starts_with(&format!("{g_trim}/"))
            || (is_prefix && g.starts_with(&format!("{}/", c.trim_end_matches('/'))))
    }) || (is_prefix && c.trim_end_matches('/').is_empty())
}

pub fn classify(path: &str, routes: &RoutesConfig) -> RouteKind {
    let c = comparable(path);
    if c == LOGIN {
        RouteKind::Login
    } else if c == LOGOUT {
        RouteKind::Logout
    } else if LOGIN_METHODS.contains(&c.as_str()) {
        RouteKind::LoginMethod
    } else if is_credential_path(&c) {
        RouteKind::Refused
    } else if c == "/websocket"
        || c == "/sockjs"
        || c.starts_with("/sockjs/")
        || c.starts_with("/websocket/")
    {
        RouteKind::Realtime
    } else if routes.public_exact.iter().any(|p| p == path)
        || routes
            .public_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    {
        RouteKind::Public
    } else {
        RouteKind::Protected
    }
}

/// Canonicalises a request target (path plus optional query) and decides its route.
pub fn route(path: &str, query: Option<&str>, routes: &RoutesConfig) -> Result<Route, PathError> {
    let canonical = canonical_path(path)?;
    let kind = classify(&canonical, routes);
    let mut forward = encode_path(&canonical);
    if let Some(q) = query {
        if q.bytes()
            .any(|b| b < 0x20 || b == 0x7f || b == b'#' || b >= 0x80)
        {
            return Err(PathError::Forbidden);
        }
        // Rocket.Chat reads credentials from these parameters on file and avatar routes; only
        // authgate's own (as headers or cookies) may reach it.
        let kept: Vec<&str> = q
            .split('&')
            .filter(|pair| {
                let name = pair
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase()
                    .replace("%5f", "_");
                name != "rc_uid" && name != "rc_token"
            })
            .collect();
        // An empty query stays (`/me?` is what some SDKs send); one that held only credentials goes.
        if q.is_empty() || !kept.is_empty() {
            forward.push('?');
            forward.push_str(&kept.join("&"));
        }
    }
    Ok(Route {
        kind,
        path: canonical,
        forward,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> RoutesConfig {
        RoutesConfig {
            public_exact: vec!["/api/info".into()],
            public_prefixes: vec!["/assets/".into()],
            anonymous_forward: false,
        }
    }

    fn kind(p: &str) -> Result<RouteKind, PathError> {
        route(p, None, &routes()).map(|r| r.kind)
    }

    #[test]
    fn login_spellings_all_reach_the_login_route() {
        for p in [
            "/api/v1/login",
            "/API/V1/LOGIN",
            "/api/v1/login/",
            "/api/v1/%6cogin",
            "/api/v1/%6Cogin/",
        ] {
            assert_eq!(kind(p), Ok(RouteKind::Login), "{p}");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for p in [
            "/api/v1/../v1/login",
            "/api/./v1/me",
            "/api//v1/me",
            "/api/v1%2flogin",
            "/api/v1%2Flogin",
            "/api\\v1\\login",
            "/api/v1/login%00",
            "/api/v1/login;x=1",
            "/api/v1/%2e%2e/login",
            "/api/v1/me%",
            "/api/v1/me%zz",
            "api/v1/me",
            "/api/v1/%5clogin",
            "/api/info/..",
            "/api/info/.",
        ] {
            assert!(kind(p).is_err(), "{p} should be refused");
        }
    }

    #[test]
    fn public_is_exact_or_prefix_and_case_sensitive() {
        assert_eq!(kind("/api/info"), Ok(RouteKind::Public));
        assert_eq!(kind("/api/%69nfo"), Ok(RouteKind::Public));
        assert_eq!(kind("/API/INFO"), Ok(RouteKind::Protected));
        assert_eq!(kind("/api/info/x"), Ok(RouteKind::Protected));
        assert_eq!(kind("/api/infox"), Ok(RouteKind::Protected));
        assert_eq!(kind("/assets/a.css"), Ok(RouteKind::Public));
        assert_eq!(kind("/assets"), Ok(RouteKind::Protected));
    }

    #[test]
    fn gateway_paths_are_classified() {
        assert_eq!(kind("/api/v1/logout"), Ok(RouteKind::Logout));
        assert_eq!(
            kind("/api/v1/method.callAnon/login"),
            Ok(RouteKind::LoginMethod)
        );
        assert_eq!(
            kind("/api/v1/method.call/login"),
            Ok(RouteKind::LoginMethod)
        );
        assert_eq!(kind("/websocket"), Ok(RouteKind::Realtime));
        assert_eq!(kind("/sockjs/info"), Ok(RouteKind::Realtime));
        assert_eq!(kind("/api/v1/me"), Ok(RouteKind::Protected));
        for p in [
            "/api/v1/method.callAnon/registerUser",
            "/api/v1/method.call/resetPassword",
            "/API/V1/USERS.REGISTER",
            "/_oauth/google",
            "/_saml/x",
            "/api/v1/method.callAnon/verifyEmail/",
        ] {
            assert_eq!(kind(p), Ok(RouteKind::Refused), "{p}");
        }
    }

    #[test]
    fn forwarded_target_is_the_canonical_one() {
        let r = route("/api/v1/%6De", Some("a=1&b=%2F"), &routes()).unwrap();
        assert_eq!(r.forward, "/api/v1/me?a=1&b=%2F");
        let r = route(
            "/avatar/alice",
            Some("rc_uid=a&size=3&RC_TOKEN=b&rc%5Ftoken=c"),
            &routes(),
        )
        .unwrap();
        assert_eq!(r.forward, "/avatar/alice?size=3");
        let r = route("/file-upload/x/My%20File.png", None, &routes()).unwrap();
        assert_eq!(r.forward, "/file-upload/x/My%20File.png");
    }

    #[test]
    fn public_routes_cannot_cover_gateway_paths() {
        assert!(covers_gateway_path("/api/v1/", true));
        assert!(covers_gateway_path("/api/", true));
        assert!(covers_gateway_path("/API/V1/LOGIN", false));
        assert!(covers_gateway_path("/sockjs/", true));
        assert!(!covers_gateway_path("/assets/", true));
        assert!(!covers_gateway_path("/api/info", false));
    }
}
