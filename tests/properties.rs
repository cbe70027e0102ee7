//! Property tests: the login-body parser, the path canonicaliser and the header rewrite never
//! panic, and no input yields a forwarded request carrying a client-chosen identity.

use authgate::config::RoutesConfig;
use authgate::forward::{ip_header_value, rewrite_request_headers, Identity, Origin};
use authgate::login::{parse, BodyKind, LoginRequest};
use authgate::route::{route, RouteKind};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

fn routes() -> RoutesConfig {
    RoutesConfig {
        public_exact: vec!["/api/info".into()],
        public_prefixes: vec!["/assets/".into()],
        anonymous_forward: false,
    }
}

fn path_strategy() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "/",
        "/",
        "/",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        ";",
        "%00",
        "%",
        "%6c",
        "%6C",
        "api",
        "API",
        "v1",
        "login",
        "logout",
        "me",
        "info",
        "assets",
        "websocket",
        "sockjs",
        "method.callAnon",
        "users.createToken",
        "a",
        "%20",
        "~",
        "@",
        ":",
    ]);
    prop::collection::vec(atoms, 0..12).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn canonical_routes_are_stable_and_unambiguous(p in path_strategy(), q in prop::option::of("[a-z=&%0-9/]{0,12}")) {
        if let Ok(r) = route(&p, q.as_deref(), &routes()) {
            let c = &r.path;
            prop_assert!(!c.contains("//") && !c.contains('\\') && !c.contains('\0'));
            prop_assert!(!c.split('/').any(|s| s == "." || s == ".."));
            // The forwarded target, read again, is the same route: what the upstream sees is
            // what was decided on.
            let (fp, fq) = match r.forward.split_once('?') { Some((a, b)) => (a, Some(b)), None => (r.forward.as_str(), None) };
            let again = route(fp, fq, &routes()).expect("forwarded target must be canonical");
            prop_assert_eq!(again.kind, r.kind);
            prop_assert_eq!(&again.path, &r.path);
            let lower = c.to_ascii_lowercase();
            if lower.trim_end_matches('/') == "/api/v1/login" {
                prop_assert_eq!(r.kind, RouteKind::Login);
            }
            if r.kind == RouteKind::Public {
                prop_assert!(c == "/api/info" || c.starts_with("/assets/"));
            }
        }
    }

    #[test]
    fn arbitrary_paths_never_panic(p in ".{0,64}") {
        let _ = route(&p, None, &routes());
    }

    #[test]
    fn login_parser_never_panics_and_never_yields_empty_secrets(body in prop::collection::vec(any::<u8>(), 0..256), code in prop::option::of(".{0,8}")) {
        for kind in [BodyKind::Json, BodyKind::Form, BodyKind::Other] {
            match parse(kind, &body, code.as_deref()) {
                Some(LoginRequest::Password { identity, password, .. }) => {
                    prop_assert!(!password.is_empty());
                    prop_assert!(!identity.as_str().is_empty());
                }
                Some(LoginRequest::Resume(t)) => prop_assert!(!t.is_empty()),
                None => {}
            }
        }
    }

    #[test]
    fn structured_login_bodies_never_panic(v in json_value()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let _ = parse(BodyKind::Json, &bytes, Some("123456"));
    }

    #[test]
    fn rewritten_headers_carry_only_the_gateways_identity(
        headers in prop::collection::vec((header_name(), "[ -~]{0,20}"), 0..16),
        with_identity in any::<bool>(),
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                map.append(n, v);
            }
        }
        let id = Identity { user_id: "GatewayUser", token: "GatewayToken", as_cookies: false };
        let ip = ip_header_value("192.0.2.1".parse().unwrap());
        let origin = Origin { client: &ip, peer: &ip, peer_trusted: false, https: false };
        rewrite_request_headers(&mut map, with_identity.then_some(&id), &origin);
        let users: Vec<_> = map.get_all("x-user-id").iter().collect();
        let tokens: Vec<_> = map.get_all("x-auth-token").iter().collect();
        if with_identity {
            prop_assert_eq!(users, vec!["GatewayUser"]);
            prop_assert_eq!(tokens, vec!["GatewayToken"]);
        } else {
            prop_assert!(users.is_empty() && tokens.is_empty());
        }
        prop_assert_eq!(map.get_all("x-real-ip").iter().collect::<Vec<_>>(), vec!["192.0.2.1"]);
        prop_assert_eq!(map.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), vec!["192.0.2.1"]);
        for name in map.keys() {
            let n = name.as_str().replace('_', "-");
            let ours = ["x-user-id", "x-auth-token", "x-real-ip", "x-forwarded-for"].contains(&n.as_str());
            prop_assert!(ours || !(n == "x-user-id" || n == "x-auth-token" || n == "forwarded" || n.starts_with("x-forwarded-") || n == "x-real-ip"), "{} survived", name);
            if !ours {
                prop_assert!(!["connection", "keep-alive", "upgrade", "te", "transfer-encoding", "proxy-authorization"].contains(&n.as_str()));
            }
        }
    }
}

fn header_name() -> impl Strategy<Value = String> {
    let base = prop::sample::select(vec![
        "x-user-id",
        "x-auth-token",
        "x_user_id",
        "x_auth_token",
        "x-user_id",
        "x-real-ip",
        "x_real_ip",
        "x-forwarded-for",
        "x-forwarded-host",
        "x_forwarded_for",
        "forwarded",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "proxy-authorization",
        "accept",
        "cookie",
        "x-custom",
    ]);
    (base, any::<u32>()).prop_map(|(name, mask)| {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask & (1 << (i % 32)) != 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let keys = prop::sample::select(vec![
        "user",
        "username",
        "email",
        "password",
        "code",
        "resume",
        "totp",
        "login",
        "ldap",
        "ldapPass",
        "digest",
        "algorithm",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z@0-9 ]{0,10}".prop_map(Value::String),
        Just(Value::String("sha-256".into())),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..5).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}
