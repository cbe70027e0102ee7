//! The header rules of a forwarded request: client identity, forwarding and hop-by-hop headers
//! stripped, our own identity and forwarding headers injected once each; hop-by-hop headers
//! stripped from the answer.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::access::Origin;

/// Hop-by-hop headers (RFC 9110 section 7.6.1) plus the legacy ones proxies still meet.
fn is_hop_by_hop(norm: &str) -> bool {
    matches!(
        norm,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// [`is_hop_by_hop`] of a name as received. Only names of the listed lengths can be one (and
/// normalising keeps the length), so most are told without normalising them or comparing.
fn is_hop_by_hop_name(name: &str) -> bool {
    matches!(name.len(), 2 | 7 | 10 | 16..=19) && is_hop_by_hop(&normalised(name))
}

pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The scheme the client used: what a trusted proxy in front reports (one plain `http` or
/// `https`), else `https` when the client spoke TLS to authgate. Otherwise nothing is said.
fn forwarded_proto(headers: &HeaderMap, origin: &Origin<'_>) -> Option<HeaderValue> {
    if origin.peer_trusted {
        let mut given = headers.get_all(&X_FORWARDED_PROTO).iter();
        if let (Some(v), None) = (given.next(), given.next()) {
            for scheme in ["http", "https"] {
                if v.as_bytes().eq_ignore_ascii_case(scheme.as_bytes()) {
                    return Some(HeaderValue::from_static(scheme));
                }
            }
        }
    }
    origin.https.then(|| HeaderValue::from_static("https"))
}

/// Identity the gateway injects to the upstream.
pub struct Identity<'a> {
    pub user_id: &'a str,
    pub token: &'a str,
    /// Also as Rocket.Chat's `rc_uid` / `rc_token` cookies (file downloads and avatars read them).
    pub as_cookies: bool,
}

/// Header names compared as the backends may normalise them: lower case (as `HeaderName`
/// already is), `_` read as `-`.
fn normalised(name: &str) -> Cow<'_, str> {
    if name.as_bytes().contains(&b'_') {
        Cow::Owned(name.replace('_', "-"))
    } else {
        Cow::Borrowed(name)
    }
}

/// The header names a `Connection` header lists, normalised; `keep-alive` and `close` (the
/// usual contents, removed anyway) are left out, so the common case allocates nothing.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    let mut listed = Vec::new();
    for value in &headers.get_all(header::CONNECTION) {
        let bytes = value.as_bytes();
        if bytes.eq_ignore_ascii_case(b"keep-alive") || bytes.eq_ignore_ascii_case(b"close") {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close") {
                listed.push(token.to_ascii_lowercase().replace('_', "-"));
            }
        }
    }
    listed
}

/// Removes every header `doomed` picks (by name as sent, and normalised).
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName, &str) -> bool) {
    let doomed = |name: &HeaderName| doomed(name, &normalised(name.as_str()));
    // Most messages have nothing to remove: look before collecting.
    if !headers.keys().any(doomed) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in names {
        headers.remove(&name);
    }
}

/// Headers a client may never set, because the upstream (or a framework in front of it) could
/// read them as identity, second factor, client address, or the real request target.
fn is_client_forbidden(norm: &str) -> bool {
    matches!(
        norm,
        "x-auth-token"
            | "x-user-id"
            | "x-real-ip"
            | "forwarded"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-http-method-override"
            | "x-method-override"
            | "x-client-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "x-cluster-client-ip"
    ) || norm.starts_with("x-forwarded-")
        || norm.starts_with("x-original-")
        || norm.starts_with("x-remote-")
        || norm.starts_with("x-2fa-")
}

/// Cookies that Rocket.Chat reads as credentials on file and avatar routes.
fn strip_credential_cookies(headers: &mut HeaderMap) {
    let cookies: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(header::COOKIE);
    for value in cookies {
        let Ok(text) = value.to_str() else { continue };
        // Rebuilt from the parsed pairs: a segment that is no `name=value` pair reaches no
        // cookie parser upstream either, so it is dropped with the credentials.
        let mut kept = String::with_capacity(text.len());
        for cookie in cookie::Cookie::split_parse(text).flatten() {
            let (Some(name), Some(value)) = (cookie.name_raw(), cookie.value_raw()) else {
                continue;
            };
            if name.eq_ignore_ascii_case("rc_uid") || name.eq_ignore_ascii_case("rc_token") {
                continue;
            }
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(name);
            kept.push('=');
            kept.push_str(value);
        }
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&kept) {
                headers.append(header::COOKIE, v);
            }
        }
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(s) = v.to_str() else { return peer };
        for part in s.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip),
                // A malformed chain cannot be trusted past this point.
                Err(_) => return peer,
            }
        }
    }
    let mut found = peer;
    for ip in chain.iter().rev() {
        found = *ip;
        if !is_trusted(ip) {
            break;
        }
    }
    found
}

/// Rewrites request headers in place for the upstream.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    identity: Option<&Identity<'_>>,
    origin: &Origin<'_>,
) {
    // Most requests carry neither (HTTP/1.1 keeps the connection by default, API clients send
    // no cookies): one walk tells, where lookups by name would hash each.
    let (mut has_connection, mut has_cookie) = (false, false);
    for name in headers.keys() {
        has_connection |= name == header::CONNECTION;
        has_cookie |= name == header::COOKIE;
    }
    // Names listed in Connection go first, before anything is injected (Traefik CVE-2024-45410).
    let listed = if has_connection {
        connection_listed(headers)
    } else {
        Vec::new()
    };
    let proto = forwarded_proto(headers, origin);
    let prior_xff: Vec<HeaderValue> = if origin.peer_trusted {
        headers.get_all(&X_FORWARDED_FOR).iter().cloned().collect()
    } else {
        Vec::new()
    };
    // Usually `keep-alive`; gone here, the scan below then mostly finds nothing to collect.
    if has_connection {
        headers.remove(header::CONNECTION);
    }
    // Exactly these names are set below whatever the client sent (`insert` replaces every
    // value), so they need no removal first; their other spellings (`X_User_Id`) do.
    let replaced = |name: &HeaderName| {
        name == X_REAL_IP
            || name == X_FORWARDED_FOR
            || identity.is_some() && (name == X_USER_ID || name == X_AUTH_TOKEN)
    };
    remove_where(headers, |name, norm| {
        !replaced(name)
            && (is_hop_by_hop(norm)
                || is_client_forbidden(norm)
                || listed.iter().any(|l| l == norm))
    });
    if has_cookie {
        strip_credential_cookies(headers);
    }
    if let Some(id) = identity {
        let (user_id_kept, token_kept) = hold_only(headers, id);
        if !user_id_kept {
            set_only(headers, X_USER_ID, id.user_id);
        }
        if !token_kept {
            set_only(headers, X_AUTH_TOKEN, id.token);
        }
        if id.as_cookies {
            // One Cookie header, as user agents send it (RFC 6265 section 5.4).
            let mut cookie = headers
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("{v}; "))
                .unwrap_or_default();
            cookie.push_str(&format!("rc_uid={}; rc_token={}", id.user_id, id.token));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                headers.insert(header::COOKIE, v);
            }
        }
    }
    headers.insert(X_REAL_IP, origin.client.clone());
    let xff = if prior_xff.is_empty() {
        origin.peer.clone()
    } else {
        let mut chain = Vec::new();
        for prior in &prior_xff {
            chain.extend_from_slice(prior.as_bytes());
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(origin.peer.as_bytes());
        // Joined header values with ", " are a header value; the fallback is never taken.
        HeaderValue::from_bytes(&chain).unwrap_or_else(|_| origin.peer.clone())
    };
    headers.insert(X_FORWARDED_FOR, xff);
    if let Some(v) = proto {
        headers.insert(X_FORWARDED_PROTO, v);
    }
}

/// Whether the client's `X-User-Id` and `X-Auth-Token` each already hold exactly the identity
/// injected, alone: then they stay as they are, with no new value built. One walk over the
/// headers, instead of a hashed lookup of each name (custom names hash byte by byte).
fn hold_only(headers: &HeaderMap, id: &Identity<'_>) -> (bool, bool) {
    // Values seen of each name, and whether the first was the one injected.
    let (mut user_ids, mut user_id_equal) = (0, false);
    let (mut tokens, mut token_equal) = (0, false);
    for (name, value) in headers {
        if name == X_USER_ID {
            user_ids += 1;
            user_id_equal = value.as_bytes() == id.user_id.as_bytes();
        } else if name == X_AUTH_TOKEN {
            tokens += 1;
            token_equal = value.as_bytes() == id.token.as_bytes();
        }
    }
    (user_ids == 1 && user_id_equal, tokens == 1 && token_equal)
}

/// `name: value` as the only value of `name`.
fn set_only(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        // Never forward what the client sent in place of an identity that cannot be written.
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// Removes hop-by-hop headers from an upstream response.
pub fn rewrite_response_headers(headers: &mut HeaderMap) {
    // The usual answer holds a `Connection: keep-alive` and nothing else to remove: one walk
    // tells, and then only that header goes.
    let mut connection = false;
    let mut more_to_remove = false;
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            connection = true;
            let token = value.as_bytes();
            more_to_remove |= !(token.eq_ignore_ascii_case(b"keep-alive")
                || token.eq_ignore_ascii_case(b"close"));
        } else {
            more_to_remove |= is_hop_by_hop_name(name.as_str());
        }
    }
    if !more_to_remove {
        if connection {
            headers.remove(header::CONNECTION);
        }
        return;
    }
    let listed = connection_listed(headers);
    // Nearly every response has one; the scan below then usually finds nothing to collect.
    headers.remove(header::CONNECTION);
    remove_where(headers, |_, norm| {
        is_hop_by_hop(norm) || listed.iter().any(|l| l == norm)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::ip_header_value;

    #[test]
    fn hop_by_hop_names_are_told_by_length_first_without_missing_one() {
        for name in [
            "connection",
            "keep_alive",
            "keep-alive",
            "proxy-connection",
            "proxy_authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer_encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop_name(name), "{name}");
        }
        for name in ["content-length", "server", "date", "x-te", "upgrades", "tE"] {
            assert_eq!(
                is_hop_by_hop_name(name),
                is_hop_by_hop(&normalised(name)),
                "{name}"
            );
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rewrite(
        h: &mut HeaderMap,
        id: Option<&Identity<'_>>,
        client: &str,
        peer: &str,
        peer_trusted: bool,
    ) {
        let (client, peer) = (ip_header_value(ip(client)), ip_header_value(ip(peer)));
        let origin = Origin {
            client: &client,
            peer: &peer,
            peer_trusted,
            https: false,
        };
        rewrite_request_headers(h, id, &origin);
    }

    #[test]
    fn client_identity_and_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-auth-token", "evil"),
            ("X_Auth_Token", "evil"),
            ("x-user-id", "admin"),
            ("x_user_id", "admin"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=1.2.3.4"),
            ("x-original-url", "/admin"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "dropped"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("cookie", "a=1; rc_uid=admin; rc_token=evil; b=2"),
            ("accept", "application/json"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let id = Identity {
            user_id: "U1",
            token: "T1",
            as_cookies: false,
        };
        rewrite(&mut h, Some(&id), "10.0.0.9", "10.0.0.9", false);
        assert_eq!(
            h.get_all("x-user-id").iter().collect::<Vec<_>>(),
            vec!["U1"]
        );
        assert_eq!(
            h.get_all("x-auth-token").iter().collect::<Vec<_>>(),
            vec!["T1"]
        );
        assert_eq!(
            h.get_all("x-real-ip").iter().collect::<Vec<_>>(),
            vec!["10.0.0.9"]
        );
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            vec!["10.0.0.9"]
        );
        for gone in [
            "x_auth_token",
            "x_user_id",
            "x-forwarded-host",
            "forwarded",
            "x-original-url",
            "connection",
            "x-custom",
            "keep-alive",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert_eq!(h.get("accept").unwrap(), "application/json");
    }

    #[test]
    fn identity_headers_end_up_exactly_once_whatever_the_client_repeated() {
        let id = Identity {
            user_id: "U1",
            token: "T1",
            as_cookies: false,
        };
        let upstream_sees = |sent: &[(&str, &str)], id: Option<&Identity<'_>>| {
            let mut h = HeaderMap::new();
            for (k, v) in sent {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            rewrite(&mut h, id, "10.0.0.9", "10.0.0.9", false);
            ["x-user-id", "x-auth-token", "x-real-ip"].map(|name| {
                h.get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
        };
        let injected = [vec!["U1"], vec!["T1"], vec!["10.0.0.9"]];
        // As the client authenticated: kept as they are.
        assert_eq!(
            upstream_sees(&[("x-user-id", "U1"), ("x-auth-token", "T1")], Some(&id)),
            injected
        );
        for repeated in [
            &[
                ("x-user-id", "U1"),
                ("x-user-id", "U1"),
                ("x-auth-token", "T1"),
            ][..],
            &[
                ("x-user-id", "U1"),
                ("x-auth-token", "T1"),
                ("x-auth-token", "evil"),
            ],
            &[
                ("x-auth-token", "evil"),
                ("x-auth-token", "T1"),
                ("x-real-ip", "1.2.3.4"),
            ],
            &[
                ("x-user-id", "admin"),
                ("x-real-ip", "1.2.3.4"),
                ("x-real-ip", "10.0.0.9"),
            ],
        ] {
            assert_eq!(upstream_sees(repeated, Some(&id)), injected, "{repeated:?}");
        }
        // With no identity to inject (public routes), the client's own never pass.
        assert_eq!(
            upstream_sees(&[("x-user-id", "U1"), ("x-auth-token", "T1")], None),
            [vec![], vec![], vec!["10.0.0.9"]]
        );
    }

    #[test]
    fn the_scheme_comes_from_authgates_own_tls_or_a_trusted_proxy() {
        let proto = |given: &[&str], trusted: bool, https: bool| {
            let mut h = HeaderMap::new();
            for v in given {
                h.append("x-forwarded-proto", HeaderValue::from_str(v).unwrap());
            }
            let addr = ip_header_value(ip("10.0.0.1"));
            let origin = Origin {
                client: &addr,
                peer: &addr,
                peer_trusted: trusted,
                https,
            };
            rewrite_request_headers(&mut h, None, &origin);
            h.get_all("x-forwarded-proto")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        // A client's own claim is dropped; authgate's TLS speaks for itself.
        assert_eq!(proto(&["https"], false, false), Vec::<String>::new());
        assert_eq!(proto(&["http"], false, true), vec!["https"]);
        // A trusted proxy's single plain value is kept (normalised); anything else is not.
        assert_eq!(proto(&["HTTPS"], true, false), vec!["https"]);
        assert_eq!(proto(&["http"], true, true), vec!["http"]);
        assert_eq!(proto(&["https", "http"], true, false), Vec::<String>::new());
        assert_eq!(proto(&["gopher"], true, true), vec!["https"]);
    }

    #[test]
    fn connection_cannot_remove_injected_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("x-user-id, x-auth-token, x-real-ip, x-forwarded-for"),
        );
        rewrite(
            &mut h,
            Some(&Identity {
                user_id: "U1",
                token: "T1",
                as_cookies: false,
            }),
            "192.0.2.1",
            "192.0.2.1",
            false,
        );
        assert_eq!(h.get("x-user-id").unwrap(), "U1");
        assert_eq!(h.get("x-real-ip").unwrap(), "192.0.2.1");
    }

    #[test]
    fn client_ip_reads_forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.5, 10.0.0.2"),
        );
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.5"));
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("garbage, 10.0.0.2"),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn credential_cookies_go_in_every_spelling_and_the_others_stay() {
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_static("a=1;RC_TOKEN=evil ; Rc_Uid = admin;b=\"two\"; lone"),
        );
        h.append("cookie", HeaderValue::from_static("rc_token=evil"));
        strip_credential_cookies(&mut h);
        let left: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(left, [HeaderValue::from_static("a=1; b=\"two\"")]);
    }

    #[test]
    fn answers_lose_their_hop_by_hop_headers_whatever_connection_says() {
        let answer = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            rewrite_response_headers(&mut h);
            let mut names: Vec<String> = h.keys().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        // The usual answer: only `Connection` goes.
        assert_eq!(
            answer(&[
                ("content-type", "application/json"),
                ("connection", "keep-alive"),
                ("content-length", "2"),
            ]),
            ["content-length", "content-type"]
        );
        // Names listed in `Connection`, and hop-by-hop headers in any spelling, go too.
        assert_eq!(
            answer(&[
                ("connection", "keep-alive, X-Private"),
                ("x-private", "1"),
                ("x-kept", "1"),
            ]),
            ["x-kept"]
        );
        assert_eq!(
            answer(&[
                ("keep_alive", "timeout=5"),
                ("upgrade", "h2c"),
                ("proxy-connection", "keep-alive"),
                ("x-kept", "1"),
            ]),
            ["x-kept"]
        );
        assert_eq!(
            answer(&[("connection", "close"), ("trailer", "x"), ("x-kept", "1")]),
            ["x-kept"]
        );
    }
}
