//! Public settings as clients see them through authgate. Web and mobile clients choose how to
//! send a password from `LDAP_Enable` (plain `ldapPass`) versus a SHA-256 digest; only the plain
//! form can be checked against LDAP or an argon2 hash. So every public-settings answer that
//! passes through reports LDAP on, Crowd off and the login form shown.

use http::{header, HeaderValue, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::error::{full_body, Body, GatewayError};

/// Which public-settings answer a forwarded path returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// `method.call[Anon]/public-settings:get`: `{"message": "<DDP result frame>"}`.
    MethodOverRest,
    /// `GET /api/v1/settings.public`.
    Rest,
}

pub fn answer_kind(canonical_path: &str) -> Option<AnswerKind> {
    let c = canonical_path.to_ascii_lowercase();
    let c = c.trim_end_matches('/');
    match c {
        "/api/v1/method.callanon/public-settings:get"
        | "/api/v1/method.call/public-settings:get" => Some(AnswerKind::MethodOverRest),
        "/api/v1/settings.public" => Some(AnswerKind::Rest),
        _ => None,
    }
}

const MAX_SETTINGS_ANSWER: usize = 16 * 1024 * 1024;

/// Rewrites a successful JSON answer; anything else passes through untouched.
pub async fn rewrite_response(
    resp: Response<Body>,
    kind: AnswerKind,
) -> Result<Response<Body>, GatewayError> {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !resp.status().is_success()
        || !is_json
        || resp.headers().contains_key(header::CONTENT_ENCODING)
    {
        return Ok(resp);
    }
    let (mut parts, mut body) = resp.into_parts();
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            GatewayError::UpstreamUnreachable(format!("reading a settings answer: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_SETTINGS_ANSWER {
                return Err(GatewayError::UpstreamUnreachable(
                    "the settings answer is too large".into(),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    let bytes = buf.freeze();
    let rewritten = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|mut v| {
            match kind {
                AnswerKind::Rest => rewrite_rest(&mut v),
                AnswerKind::MethodOverRest => {
                    let mut frame: Value =
                        serde_json::from_str(v.get("message")?.as_str()?).ok()?;
                    rewrite_method_result(frame.get_mut("result")?, crate::session::now_unix_ms());
                    v["message"] = json!(frame.to_string());
                }
            }
            Some(v.to_string())
        });
    let out = rewritten.map(bytes::Bytes::from).unwrap_or(bytes);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, full_body(out)))
}

const FORCED: [(&str, bool); 3] = [
    ("LDAP_Enable", true),
    ("CROWD_Enable", false),
    ("Accounts_ShowFormLogin", true),
];

fn forced(id: &str) -> Option<bool> {
    FORCED.iter().find(|(k, _)| *k == id).map(|(_, v)| *v)
}

fn record(id: &str, value: bool, now_ms: u64) -> Value {
    json!({"_id": id, "value": value, "type": "boolean", "public": true, "_updatedAt": {"$date": now_ms}})
}

fn set_values(list: &mut [Value]) -> Vec<&'static str> {
    let mut seen = Vec::new();
    for item in list.iter_mut() {
        let Some(id) = item.get("_id").and_then(Value::as_str) else {
            continue;
        };
        if let Some((k, v)) = FORCED.iter().find(|(k, _)| *k == id) {
            item["value"] = json!(v);
            seen.push(*k);
        }
    }
    seen
}

/// The result of the `public-settings/get` method: the full list (an array), or the changes
/// since a date (`{update, remove}`). Changes always carry the forced records with a fresh
/// `_updatedAt`, so a browser that cached `LDAP_Enable: false` for weeks switches too.
pub fn rewrite_method_result(result: &mut Value, now_ms: u64) {
    match result {
        Value::Array(list) => {
            let seen = set_values(list);
            for (k, v) in FORCED {
                if !seen.contains(&k) {
                    list.push(record(k, v, now_ms));
                }
            }
        }
        Value::Object(changes) => {
            if let Some(Value::Array(removed)) = changes.get_mut("remove") {
                removed.retain(|r| {
                    r.get("_id")
                        .and_then(Value::as_str)
                        .and_then(forced)
                        .is_none()
                });
            }
            let update = changes.entry("update").or_insert_with(|| json!([]));
            if let Value::Array(list) = update {
                list.retain(|r| {
                    r.get("_id")
                        .and_then(Value::as_str)
                        .and_then(forced)
                        .is_none()
                });
                list.extend(FORCED.iter().map(|(k, v)| record(k, *v, now_ms)));
            }
        }
        _ => {}
    }
}

/// REST `GET /api/v1/settings.public` (`{settings: [{_id, value}], ...}`).
pub fn rewrite_rest(body: &mut Value) {
    if let Some(Value::Array(list)) = body.get_mut("settings") {
        set_values(list);
    }
}

/// A `stream-notify-all` `public-settings-changed` event: `args: [action, setting]`. Returns
/// whether a value changed (the frame is then re-encoded; otherwise it passes as it came).
pub fn rewrite_changed_event(frame: &mut Value) -> bool {
    if frame["collection"] != "stream-notify-all"
        || frame["fields"]["eventName"] != "public-settings-changed"
    {
        return false;
    }
    let mut changed = false;
    if let Some(Value::Array(args)) = frame.get_mut("fields").and_then(|f| f.get_mut("args")) {
        for arg in args.iter_mut() {
            if let Some(v) = arg.get("_id").and_then(Value::as_str).and_then(forced) {
                if arg["value"] != v {
                    arg["value"] = json!(v);
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lists_are_rewritten_and_completed() {
        let mut r =
            json!([{"_id": "LDAP_Enable", "value": false}, {"_id": "Site_Name", "value": "x"}]);
        rewrite_method_result(&mut r, 5);
        assert_eq!(r[0]["value"], true);
        assert_eq!(r[1]["value"], "x");
        let ids: Vec<&str> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["_id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"CROWD_Enable") && ids.contains(&"Accounts_ShowFormLogin"));
    }

    #[test]
    fn change_sets_always_carry_fresh_forced_records() {
        let mut r = json!({"update": [{"_id": "LDAP_Enable", "value": false}], "remove": [{"_id": "CROWD_Enable"}, {"_id": "Other"}]});
        rewrite_method_result(&mut r, 1234);
        let update = r["update"].as_array().unwrap();
        assert_eq!(update.len(), 3);
        assert!(update.iter().all(|u| u["_updatedAt"]["$date"] == 1234));
        assert!(update
            .iter()
            .any(|u| u["_id"] == "LDAP_Enable" && u["value"] == true));
        assert_eq!(r["remove"], json!([{"_id": "Other"}]));
        let mut empty = json!({});
        rewrite_method_result(&mut empty, 1);
        assert_eq!(empty["update"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn rest_and_events_are_rewritten() {
        let mut b = json!({"settings": [{"_id": "CROWD_Enable", "value": true}, {"_id": "Accounts_ShowFormLogin", "value": false}], "success": true});
        rewrite_rest(&mut b);
        assert_eq!(b["settings"][0]["value"], false);
        assert_eq!(b["settings"][1]["value"], true);
        let mut e = json!({"msg": "changed", "collection": "stream-notify-all", "fields": {"eventName": "public-settings-changed", "args": ["updated", {"_id": "LDAP_Enable", "value": false}]}});
        assert!(rewrite_changed_event(&mut e));
        assert_eq!(e["fields"]["args"][1]["value"], true);
        // Already what clients must see: nothing to re-encode.
        assert!(!rewrite_changed_event(&mut e));
        let mut other = json!({"msg": "changed", "collection": "stream-room-messages", "fields": {"eventName": "GENERAL", "args": [{"_id": "LDAP_Enable", "value": false}]}});
        assert!(!rewrite_changed_event(&mut other));
        assert_eq!(other["fields"]["args"][0]["value"], false);
    }
}
