//! The one path canonicaliser: it decides the route and produces the path that is forwarded, so
//! the decision is always made on exactly the bytes the upstream receives. The pure rules (what
//! a path decodes to, which paths the gateway owns) are in `rules.rs`.

pub mod rules;

pub use rules::{
    api_endpoint_name, canonical_path, covers_gateway_path, is_credential_method, PathError,
    RouteKind,
};
use rules::{comparable, gateway_kind};

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use http::uri::PathAndQuery;
use http::Uri;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config::RoutesConfig;

/// A request target after canonicalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    /// The canonical path, decoded, case preserved.
    pub path: RouteText,
    /// Path and query exactly as they will be forwarded.
    pub forward: RouteText,
}

/// The text of a route: the request's own target (shared, not copied) when canonicalisation
/// left it as it was, as it does for nearly every request; built only when it changed.
#[derive(Clone)]
pub struct RouteText(Text);

#[derive(Clone)]
enum Text {
    /// The whole request target, path and query.
    Target(PathAndQuery),
    /// The path of the request target.
    TargetPath(PathAndQuery),
    Built(String),
}

impl Deref for RouteText {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.0 {
            Text::Target(pq) => pq.as_str(),
            Text::TargetPath(pq) => pq.path(),
            Text::Built(s) => s,
        }
    }
}

impl RouteText {
    pub fn as_str(&self) -> &str {
        self
    }
}

impl From<String> for RouteText {
    fn from(s: String) -> Self {
        RouteText(Text::Built(s))
    }
}

impl fmt::Debug for RouteText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for RouteText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// Equal when the texts are, however each is held.
impl PartialEq for RouteText {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for RouteText {}

impl PartialEq<str> for RouteText {
    fn eq(&self, other: &str) -> bool {
        **self == *other
    }
}

impl PartialEq<&str> for RouteText {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

/// What stays as it is in a forwarded path: RFC 3986 `pchar`s and `/`. Everything else,
/// non-ASCII included, is percent-encoded.
const PATH_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Re-encodes a canonical path for the request line; borrowed when nothing needs encoding.
fn encode_path(path: &str) -> Cow<'_, str> {
    Cow::from(utf8_percent_encode(path, PATH_KEEPS))
}

pub fn classify(path: &str, routes: &RoutesConfig) -> RouteKind {
    if let Some(kind) = gateway_kind(&comparable(path)) {
        kind
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

/// A query parameter's name as Rocket.Chat's query parser reads it: percent escapes and `+`
/// decoded, any `[...]` suffix (the parser's array and object syntax) cut off, in lower case.
fn decoded_param_name(pair: &str) -> Cow<'_, str> {
    let raw_name = pair.split('=').next().unwrap_or("");
    // Nothing to decode in the usual name: compared as it is, without building anything.
    let name: Cow<'_, str> = if raw_name.bytes().any(|b| b == b'%' || b == b'+') {
        let decoded: Vec<(String, String)> =
            serde_urlencoded::from_str(raw_name).unwrap_or_default();
        Cow::Owned(
            decoded
                .into_iter()
                .next()
                .map(|(k, _)| k)
                .unwrap_or_default(),
        )
    } else {
        Cow::Borrowed(raw_name)
    };
    let base_len = name.split('[').next().unwrap_or("").len();
    match name {
        Cow::Borrowed(n) if !n[..base_len].bytes().any(|b| b.is_ascii_uppercase()) => {
            Cow::Borrowed(&n[..base_len])
        }
        n => Cow::Owned(n[..base_len].to_ascii_lowercase()),
    }
}

/// Query parameters Rocket.Chat reads as credentials on file and avatar routes.
const CREDENTIAL_PARAMS: [&str; 2] = ["rc_uid", "rc_token"];

/// True when the query carries Rocket.Chat's OAuth-style `access_token`, in any spelling.
pub fn has_access_token_param(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| decoded_param_name(pair) == "access_token")
    })
}

/// A route's parts, borrowed from the target wherever canonicalisation changed nothing.
struct Parts<'a> {
    kind: RouteKind,
    canonical: Cow<'a, str>,
    forward_path: Cow<'a, str>,
    /// The forwarded query (`None`: no `?` at all).
    forward_query: Option<Cow<'a, str>>,
}

fn route_parts<'a>(
    path: &'a str,
    query: Option<&'a str>,
    routes: &RoutesConfig,
) -> Result<Parts<'a>, PathError> {
    let canonical = rules::canonical_path_cow(path)?;
    let kind = classify(&canonical, routes);
    let forward_path = match &canonical {
        Cow::Borrowed(c) => encode_path(c),
        Cow::Owned(c) => Cow::Owned(encode_path(c).into_owned()),
    };
    let forward_query = match query {
        None => None,
        Some(q) => forwarded_query(q)?,
    };
    Ok(Parts {
        kind,
        canonical,
        forward_path,
        forward_query,
    })
}

/// The query as forwarded: without the credential parameters Rocket.Chat reads on file and
/// avatar routes (only authgate's own, as headers or cookies, may reach it, whatever the
/// spelling). `None` when it held nothing else.
fn forwarded_query(q: &str) -> Result<Option<Cow<'_, str>>, PathError> {
    if q.bytes()
        .any(|b| b < 0x20 || b == 0x7f || b == b'#' || b >= 0x80)
    {
        return Err(PathError::Forbidden);
    }
    let is_credential = |pair: &&str| CREDENTIAL_PARAMS.contains(&&*decoded_param_name(pair));
    if !q.split('&').any(|pair| is_credential(&pair)) {
        // An empty query stays too (`/me?` is what some SDKs send).
        return Ok(Some(Cow::Borrowed(q)));
    }
    let kept: Vec<&str> = q.split('&').filter(|pair| !is_credential(pair)).collect();
    // One that held only credentials goes.
    Ok((!kept.is_empty()).then(|| Cow::Owned(kept.join("&"))))
}

/// Canonicalises a request target (path plus optional query) and decides its route.
pub fn route(path: &str, query: Option<&str>, routes: &RoutesConfig) -> Result<Route, PathError> {
    let parts = route_parts(path, query, routes)?;
    let mut forward = parts.forward_path.into_owned();
    if let Some(q) = parts.forward_query {
        forward.push('?');
        forward.push_str(&q);
    }
    Ok(Route {
        kind: parts.kind,
        path: parts.canonical.into_owned().into(),
        forward: forward.into(),
    })
}

/// [`route`] for a request's URI: the route's texts share the request target's bytes
/// whenever it is already canonical, so the usual request copies no string.
pub fn route_uri(uri: &Uri, routes: &RoutesConfig) -> Result<Route, PathError> {
    let Some(target) = uri.path_and_query() else {
        return route(uri.path(), uri.query(), routes);
    };
    let parts = route_parts(target.path(), target.query(), routes)?;
    let path = match parts.canonical {
        Cow::Borrowed(_) => RouteText(Text::TargetPath(target.clone())),
        Cow::Owned(c) => c.into(),
    };
    let forward = match (&parts.forward_path, &parts.forward_query) {
        (Cow::Borrowed(_), None) => RouteText(Text::TargetPath(target.clone())),
        (Cow::Borrowed(_), Some(Cow::Borrowed(_))) => RouteText(Text::Target(target.clone())),
        _ => {
            let mut forward = parts.forward_path.into_owned();
            if let Some(q) = parts.forward_query {
                forward.push('?');
                forward.push_str(&q);
            }
            forward.into()
        }
    };
    Ok(Route {
        kind: parts.kind,
        path,
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
    fn login_surfaces_of_every_api_version_are_owned_or_refused() {
        for p in [
            "/api/login",
            "/API/LOGIN/",
            "/api/logout",
            "/api/v2/login",
            "/api/V7/Logout/",
            "/api/v2/method.callAnon/login",
            "/api/method.call/login",
            "/api/v1/users.createToken",
            "/api/users.createToken",
            "/api/v3/users.register",
            "/api/v1/method.callAnon/forgotPassword",
            "/api/v1/method.call/forgotpassword/",
            "/api/v2/method.call/sendForgotPasswordEmail",
            "/_cas",
        ] {
            assert_eq!(kind(p), Ok(RouteKind::Refused), "{p}");
        }
        assert_eq!(kind("/api/v1/LOGIN/"), Ok(RouteKind::Login));
        // Not a version: an ordinary endpoint name.
        assert_eq!(kind("/api/vx/login"), Ok(RouteKind::Protected));
        assert_eq!(kind("/api/v1/method.call/loginx"), Ok(RouteKind::Protected));
    }

    #[test]
    fn endpoint_names_are_found_under_every_version() {
        assert_eq!(
            api_endpoint_name("/API/V2/Method.Call/x"),
            Some("Method.Call/x")
        );
        assert_eq!(
            api_endpoint_name("/api/method.call/x"),
            Some("method.call/x")
        );
        assert_eq!(api_endpoint_name("/api/v1/me"), Some("me"));
        assert_eq!(api_endpoint_name("/assets/x"), None);
    }

    #[test]
    fn credential_parameters_are_stripped_in_every_spelling() {
        let r = route(
            "/file-upload/x/y.png",
            Some("%72c_uid=a&%72%63%5f%74oken=b&rc_uid[]=c&RC%5FTOKEN=d&rc_token%5B0%5D=e&x=1"),
            &routes(),
        )
        .unwrap();
        assert_eq!(r.forward, "/file-upload/x/y.png?x=1");
        assert!(has_access_token_param(Some("a=1&%61ccess_token=x")));
        assert!(has_access_token_param(Some("ACCESS_TOKEN")));
        assert!(!has_access_token_param(Some("access_tokens=1")));
        assert!(!has_access_token_param(None));
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
    fn a_uri_routes_as_its_path_and_query_do_sharing_what_is_canonical() {
        for target in [
            "/api/v1/me",
            "/api/v1/me/",
            "/api/v1/me?",
            "/api/v1/me?a=1&b=%2F",
            "/api/v1/%6De?a=1",
            "/file-upload/x/My%20File.png",
            "/file-upload/x/y.png?rc_uid=a&x=1",
            "/avatar/alice?rc_uid=a&RC_TOKEN=b",
            "/avatar/alice?rc%5Ftoken=b",
            "/api/v1/login?x=1",
            "/api/info",
            "/assets/a.css?v=2",
            "/api/v1/a{b}",
            "/api//v1/me",
            "/api/v1/me%zz",
        ] {
            let uri: Uri = target.parse().unwrap();
            let by_uri = route_uri(&uri, &routes());
            let by_parts = route(uri.path(), uri.query(), &routes());
            assert_eq!(by_uri, by_parts, "{target}");
        }
        let uri: Uri = "/api/v1/me?a=1".parse().unwrap();
        let r = route_uri(&uri, &routes()).unwrap();
        assert!(matches!(r.path.0, Text::TargetPath(_)));
        assert!(matches!(r.forward.0, Text::Target(_)));
        assert_eq!(r.path, "/api/v1/me");
        assert_eq!(r.forward, "/api/v1/me?a=1");
        let uri: Uri = "/avatar/alice?rc_token=b".parse().unwrap();
        let r = route_uri(&uri, &routes()).unwrap();
        assert_eq!(r.forward, "/avatar/alice");
    }

    #[test]
    fn public_routes_cannot_cover_gateway_paths() {
        assert!(covers_gateway_path("/api/v1/", true));
        assert!(covers_gateway_path("/api/", true));
        assert!(covers_gateway_path("/API/V1/LOGIN", false));
        assert!(covers_gateway_path("/sockjs/", true));
        assert!(!covers_gateway_path("/assets/", true));
        assert!(!covers_gateway_path("/api/info", false));
        assert!(covers_gateway_path("/api/login", false));
        assert!(covers_gateway_path("/api/v2/", true));
        assert!(covers_gateway_path("/api/v1/method.call/", true));
        assert!(covers_gateway_path("/_oauth/", true));
        assert!(!covers_gateway_path("/api/v1/channels.", true));
    }
}
