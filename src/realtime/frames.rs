//! How a realtime path frames DDP messages ([`Framing`]): decoding what clients send, encoding
//! what authgate writes, and the byte checks that let frames which cannot matter pass without a JSON parse.
//!
//! Chat traffic is mostly upstream events (`stream-room-messages`) that authgate never changes;
//! parsing and cloning each of them cost about a quarter of its CPU per frame. Only a few
//! shapes are ever read or rewritten: from the upstream, result frames (login answers, public
//! settings, tokens that must not leak) and public-settings events; from the client, method
//! calls. Their keywords appear in a frame's bytes literally unless the frame holds a `\u`
//! escape, the only JSON escape that can stand for a letter; so a frame with neither the
//! keyword nor a `\u` cannot be one of them. (In SockJS frames a message is a JSON string
//! inside JSON: an inner `\u` shows as `\\u`, which holds `\u` too.)

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};

/// How a realtime path frames DDP messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One DDP message per WebSocket text frame.
    Raw,
    /// SockJS: the client sends `["msg", ...]`, the server `o`, `h`, `a["msg", ...]`, `c[...]`.
    SockJs,
}

/// What a realtime path is; `None` for SockJS's HTTP transports, which are refused so that
/// every DDP frame passes through a WebSocket authgate reads.
pub fn framing(canonical: &str) -> Option<Option<Framing>> {
    let c = canonical.to_ascii_lowercase();
    let c = c.trim_end_matches('/');
    if c == "/websocket" || c == "/sockjs/websocket" {
        return Some(Some(Framing::Raw));
    }
    if c == "/sockjs/info" {
        return Some(None);
    }
    let parts: Vec<&str> = c.split('/').collect();
    // ["", "sockjs", server, session, "websocket"]
    if parts.len() == 5 && parts[1] == "sockjs" && parts[4] == "websocket" {
        return Some(Some(Framing::SockJs));
    }
    None
}

static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));
static RESULT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"result"));
static SETTINGS_EVENT: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"public-settings-changed"));
static METHOD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"method"));

/// Whether an upstream text frame could be one authgate rewrites: a `result` (a login's
/// answer, public settings, a login result it must drop) or a `public-settings-changed` event.
/// `false` means the frame is relayed byte for byte, unparsed.
pub(super) fn upstream_may_need_rewrite(text: &str) -> bool {
    let bytes = text.as_bytes();
    RESULT.find(bytes).is_some()
        || SETTINGS_EVENT.find(bytes).is_some()
        || ESCAPE.find(bytes).is_some()
}

/// What a client text frame is, as far as routing goes.
pub(super) enum ClientText {
    /// Not DDP as clients send it: the socket is closed.
    Invalid,
    /// Valid DDP that holds no method call: relayed as it came.
    PassAsIs,
    /// Messages that may hold a method call (a login, a token method, ...): routed one by one.
    Messages(Vec<Value>),
}

/// Reads a client text frame. Frames whose bytes could hold a method call (the word `method`,
/// or any `\u` escape that could spell it) are decoded into messages; the rest are only checked
/// for the shape [`decode`] demands, and relayed unchanged.
pub(super) fn read_client_text(framing: Framing, text: &str) -> ClientText {
    let bytes = text.as_bytes();
    if METHOD.find(bytes).is_some() || ESCAPE.find(bytes).is_some() {
        return match decode(framing, text) {
            Some(messages) => ClientText::Messages(messages),
            None => ClientText::Invalid,
        };
    }
    if has_ddp_shape(framing, text) {
        ClientText::PassAsIs
    } else {
        ClientText::Invalid
    }
}

/// A JSON object, read without building it. Its values are read the way `Value` reads them
/// (`deserialize_any`, so a number out of `f64`'s range is refused the same way), which keeps
/// [`has_ddp_shape`] and [`decode`] in agreement.
struct AnyObject;

/// Any JSON value, read without building it.
struct AnyValue;

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<AnyValue>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, AnyValue>()?.is_some() {}
        Ok(())
    }
}

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor).map(|()| AnyValue)
    }
}

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(AnyVisitor).map(|()| AnyObject)
    }
}

/// What [`decode`] accepts, checked without building the messages.
fn has_ddp_shape(framing: Framing, text: &str) -> bool {
    match framing {
        Framing::Raw => serde_json::from_str::<AnyObject>(text).is_ok(),
        Framing::SockJs => serde_json::from_str::<Vec<String>>(text).is_ok_and(|strings| {
            strings
                .iter()
                .all(|s| serde_json::from_str::<AnyObject>(s).is_ok())
        }),
    }
}

/// Decodes the DDP messages in one text frame; `None` for anything but the shapes clients send.
/// Every message must be a single JSON object: a server may take an array (or a string holding
/// a frame) as a batch of messages, and those would pass unread.
pub(super) fn decode(framing: Framing, text: &str) -> Option<Vec<Value>> {
    let object = |v: Value| v.is_object().then_some(v);
    match framing {
        Framing::Raw => serde_json::from_str(text)
            .ok()
            .and_then(object)
            .map(|v| vec![v]),
        // SockJS: a JSON array of strings, each holding one message. (A SockJS server also takes
        // a lone string; no client sends one, so it is refused with the rest.)
        Framing::SockJs => {
            let strings: Vec<String> = serde_json::from_str(text).ok()?;
            strings
                .iter()
                .map(|s| serde_json::from_str(s).ok().and_then(object))
                .collect()
        }
    }
}

pub(super) fn encode_to_upstream(framing: Framing, messages: &[Value]) -> String {
    match framing {
        Framing::Raw => messages[0].to_string(),
        Framing::SockJs => {
            Value::Array(messages.iter().map(|m| json!(m.to_string())).collect()).to_string()
        }
    }
}

pub(super) fn encode_to_client(framing: Framing, messages: &[Value]) -> Vec<String> {
    match framing {
        Framing::Raw => messages.iter().map(Value::to_string).collect(),
        Framing::SockJs => vec![format!(
            "a{}",
            Value::Array(messages.iter().map(|m| json!(m.to_string())).collect())
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM_EVENT: &str = r#"{"msg":"changed","collection":"stream-room-messages","id":"id","fields":{"eventName":"GENERAL","args":[{"_id":"x","rid":"GENERAL","msg":"hello \"there\" \\ /","u":{"_id":"u","username":"bob"}}]}}"#;

    #[test]
    fn room_events_pass_unparsed_and_results_and_settings_do_not() {
        assert!(!upstream_may_need_rewrite(ROOM_EVENT));
        assert!(!upstream_may_need_rewrite(&format!(
            "a{}",
            json!([ROOM_EVENT])
        )));
        assert!(upstream_may_need_rewrite(
            r#"{"msg":"result","id":"1","result":{"token":"t","tokenExpires":1}}"#
        ));
        assert!(upstream_may_need_rewrite(
            r#"{"msg":"changed","collection":"stream-notify-all","fields":{"eventName":"public-settings-changed","args":[]}}"#
        ));
    }

    #[test]
    fn escapes_that_could_spell_a_keyword_are_parsed() {
        // `\u0072esult` is `result` to a JSON parser.
        assert!(upstream_may_need_rewrite(
            r#"{"msg":"\u0072esult","id":"1","\u0072esult":{"token":"t","tokenExpires":1}}"#
        ));
        // In SockJS the message is a string inside JSON: an inner escape is `\\u`.
        let inner = r#"{"msg":"\u0072esult","id":"1"}"#;
        assert!(upstream_may_need_rewrite(&format!("a{}", json!([inner]))));
        assert!(upstream_may_need_rewrite(
            r#"a["{\"msg\":\"\u0072esult\"}"]"#
        ));
    }

    #[test]
    fn client_method_calls_are_decoded_even_when_escaped() {
        let plain = r#"{"msg":"method","id":"1","method":"login","params":[]}"#;
        let escaped = r#"{"msg":"\u006dethod","id":"1","\u006dethod":"\u006cogin","params":[]}"#;
        for text in [plain, escaped] {
            let ClientText::Messages(m) = read_client_text(Framing::Raw, text) else {
                panic!("{text} was not decoded");
            };
            assert_eq!(m[0]["method"], "login");
        }
        let sockjs = json!([escaped]).to_string();
        assert!(matches!(
            read_client_text(Framing::SockJs, &sockjs),
            ClientText::Messages(_)
        ));
    }

    #[test]
    fn other_client_frames_pass_as_is_when_they_are_ddp() {
        let sub =
            r#"{"msg":"sub","id":"1","name":"stream-room-messages","params":["GENERAL",false]}"#;
        assert!(matches!(
            read_client_text(Framing::Raw, sub),
            ClientText::PassAsIs
        ));
        assert!(matches!(
            read_client_text(
                Framing::SockJs,
                &json!([sub, r#"{"msg":"ping"}"#]).to_string()
            ),
            ClientText::PassAsIs
        ));
        // Batches and anything but a JSON object close the socket, as before.
        for bad in [
            r#"[{"msg":"ping"}]"#,
            r#""{}""#,
            "not json",
            r#"{"msg":"ping"} x"#,
            r#"{"msg":"ping","n":1e400}"#,
        ] {
            assert!(matches!(
                read_client_text(Framing::Raw, bad),
                ClientText::Invalid
            ));
        }
        for bad in [r#"{"msg":"ping"}"#, r#"["[{\"msg\":\"ping\"}]"]"#, r#"[1]"#] {
            assert!(matches!(
                read_client_text(Framing::SockJs, bad),
                ClientText::Invalid
            ));
        }
    }
}
