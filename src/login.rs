//! `POST /api/v1/login`: the request shapes Rocket.Chat accepts (username, email or `user`
//! object with a plain or SHA-256 digest password, `resume`, TOTP codes) and the success body it
//! answers. Anything unusable is `None`, which the caller answers
//! with the one generic 401.

use serde_json::{json, Map, Value};

use crate::directory::{Identity, UserProfile};
use crate::password::Password;
use crate::session::{Session, Token};

/// A session a login opened or resumed.
pub struct Opened {
    pub token: Token,
    pub session: Session,
    pub resumed: bool,
    pub totp_enabled: bool,
}

/// The longest password accepted; longer ones are refused before hashing.
const MAX_PASSWORD_CHARS: usize = 1024;
const MAX_FIELD_CHARS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRequest {
    Password {
        identity: Identity,
        password: Password,
        code: Option<String>,
    },
    Resume(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Other,
}

pub fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Other;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => BodyKind::Json,
        "application/x-www-form-urlencoded" => BodyKind::Form,
        _ => BodyKind::Other,
    }
}

/// Parses a login body; `header_code` is the `x-2fa-code` header.
pub fn parse(kind: BodyKind, body: &[u8], header_code: Option<&str>) -> Option<LoginRequest> {
    let object = match kind {
        BodyKind::Json => match serde_json::from_slice::<Value>(body).ok()? {
            Value::Object(o) => o,
            _ => return None,
        },
        BodyKind::Form => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
            let mut o = Map::new();
            for (k, v) in pairs {
                // A repeated field is ambiguous; refuse rather than pick one.
                if o.insert(k, Value::String(v)).is_some() {
                    return None;
                }
            }
            o
        }
        BodyKind::Other => return None,
    };
    interpret(&object, header_code)
}

fn short_string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_FIELD_CHARS => Some(s),
        _ => None,
    }
}

fn password_of(v: &Value) -> Option<Password> {
    match v {
        Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_PASSWORD_CHARS => {
            Some(Password::Plain(s.clone()))
        }
        Value::Object(o) if o.len() == 2 && o.get("algorithm") == Some(&json!("sha-256")) => {
            let digest = o.get("digest")?.as_str()?;
            (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| Password::Sha256Digest(digest.to_ascii_lowercase()))
        }
        _ => None,
    }
}

fn code_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Meteor's native `{user: {username} | {email}, password}` shape.
fn native(o: &Map<String, Value>, code: Option<String>) -> Option<LoginRequest> {
    if o.len() != 2 {
        return None;
    }
    let user = o.get("user")?.as_object()?;
    if user.len() != 1 {
        return None;
    }
    let identity = if let Some(u) = user.get("username") {
        Identity::Username(short_string(u)?.to_string())
    } else {
        Identity::Email(short_string(user.get("email")?)?.to_string())
    };
    Some(LoginRequest::Password {
        identity,
        password: password_of(o.get("password")?)?,
        code,
    })
}

/// Rocket.Chat's LDAP shape `{ldap: true, username, ldapPass, ldapOptions}`.
fn ldap_shape(o: &Map<String, Value>, code: Option<String>) -> Option<LoginRequest> {
    if o.get("ldap") != Some(&Value::Bool(true))
        || o.keys()
            .any(|k| !matches!(k.as_str(), "ldap" | "username" | "ldapPass" | "ldapOptions"))
    {
        return None;
    }
    let login = short_string(o.get("username")?)?;
    let identity = if login.contains('@') {
        Identity::Email(login.into())
    } else {
        Identity::Username(login.into())
    };
    let password = match o.get("ldapPass")? {
        Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_PASSWORD_CHARS => {
            Password::Plain(s.clone())
        }
        _ => return None,
    };
    Some(LoginRequest::Password {
        identity,
        password,
        code,
    })
}

/// Reads one login object (a REST body, or a DDP `login` method's first parameter).
pub fn interpret(o: &Map<String, Value>, header_code: Option<&str>) -> Option<LoginRequest> {
    let password = o.get("password").filter(|v| !v.is_null());
    let Some(password) = password else {
        // Pass-through shapes: resume, totp-wrapped, LDAP.
        if let Some(resume) = o.get("resume") {
            return short_string(resume).map(|t| LoginRequest::Resume(t.to_string()));
        }
        if let Some(totp) = o.get("totp") {
            let totp = totp.as_object()?;
            let code = code_of(totp.get("code"))?;
            let inner = totp.get("login")?.as_object()?;
            return native(inner, Some(code.clone())).or_else(|| ldap_shape(inner, Some(code)));
        }
        return ldap_shape(o, None);
    };
    if o.keys().any(|k| {
        !matches!(
            k.as_str(),
            "user" | "username" | "email" | "password" | "code"
        )
    }) {
        return native(o, None);
    }
    let code = code_of(o.get("code"))
        .or_else(|| header_code.filter(|c| !c.is_empty()).map(str::to_string));
    let identity = match (o.get("user"), o.get("username"), o.get("email")) {
        (Some(Value::String(u)), _, _) if !u.is_empty() => {
            let u = short_string(&Value::String(u.clone()))?.to_string();
            if u.contains('@') {
                Identity::Email(u)
            } else {
                Identity::Username(u)
            }
        }
        (_, Some(u), _) if truthy(u) => Identity::Username(short_string(u)?.to_string()),
        (_, _, Some(e)) if truthy(e) => Identity::Email(short_string(e)?.to_string()),
        (Some(Value::Object(_)), _, _) => {
            return native(o, None);
        }
        _ => return None,
    };
    Some(LoginRequest::Password {
        identity,
        password: password_of(password)?,
        code,
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    }
}

/// `me`: Rocket.Chat's `getUserInfo` fields that a directory entry can fill.
pub fn me(profile: &UserProfile, avatar_base: &str, totp_enabled: bool) -> Value {
    let mut me = Map::new();
    me.insert("_id".into(), json!(profile.id));
    me.insert("username".into(), json!(profile.username));
    me.insert("name".into(), json!(profile.name));
    if let Some(e) = &profile.email {
        me.insert("emails".into(), json!([{"address": e, "verified": true}]));
    }
    me.insert("status".into(), json!("online"));
    me.insert("active".into(), json!(true));
    me.insert("roles".into(), json!(profile.roles));
    me.insert("utcOffset".into(), json!(0));
    if let Some(e) = &profile.email {
        me.insert("email".into(), json!(e));
    }
    me.insert("settings".into(), json!({"profile": {}, "preferences": {}}));
    me.insert(
        "avatarUrl".into(),
        json!(format!("{avatar_base}/avatar/{}", profile.username)),
    );
    me.insert("isOAuthUser".into(), json!(false));
    let mut services = Map::new();
    services.insert("password".into(), json!({"exists": true}));
    if totp_enabled {
        services.insert("totp".into(), json!({"enabled": true}));
    }
    me.insert("services".into(), Value::Object(services));
    Value::Object(me)
}

/// The 200 body: `status`, `data`, `success`, in that order.
pub fn success_body(user_id: &str, token: &str, me: Value) -> String {
    json!({"status": "success", "data": {"userId": user_id, "authToken": token, "me": me}, "success": true}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::Plain(s.into())
    }

    fn json(body: &str) -> Option<LoginRequest> {
        parse(BodyKind::Json, body.as_bytes(), None)
    }

    fn user(name: &str, p: &str, code: Option<&str>) -> Option<LoginRequest> {
        Some(LoginRequest::Password {
            identity: Identity::Username(name.into()),
            password: pw(p),
            code: code.map(Into::into),
        })
    }

    fn email(e: &str, p: &str) -> Option<LoginRequest> {
        Some(LoginRequest::Password {
            identity: Identity::Email(e.into()),
            password: pw(p),
            code: None,
        })
    }

    #[test]
    fn contract_shapes_parse() {
        assert_eq!(
            json(r#"{"user":"alice","password":"pw"}"#),
            user("alice", "pw", None)
        );
        assert_eq!(
            json(r#"{"user":"alice@x.io","password":"pw"}"#),
            email("alice@x.io", "pw")
        );
        assert_eq!(
            json(r#"{"username":"a@b","password":"pw"}"#),
            user("a@b", "pw", None)
        );
        assert_eq!(
            json(r#"{"email":"alice@x.io","password":"pw"}"#),
            email("alice@x.io", "pw")
        );
        assert_eq!(
            json(r#"{"user":{"username":"alice"},"password":"pw"}"#),
            user("alice", "pw", None)
        );
        assert_eq!(
            json(r#"{"user":{"email":"alice@x.io"},"password":"pw"}"#),
            email("alice@x.io", "pw")
        );
        assert_eq!(
            json(r#"{"user":"alice","password":"pw","code":"123456"}"#),
            user("alice", "pw", Some("123456"))
        );
        assert_eq!(
            json(
                r#"{"totp":{"code":"123456","login":{"user":{"username":"alice"},"password":"pw"}}}"#
            ),
            user("alice", "pw", Some("123456"))
        );
        assert_eq!(
            json(r#"{"resume":"tok"}"#),
            Some(LoginRequest::Resume("tok".into()))
        );
        assert_eq!(
            parse(BodyKind::Form, b"user=alice&password=p%20w", None),
            user("alice", "p w", None)
        );
        let digest = "a".repeat(64);
        assert_eq!(
            json(&format!(
                r#"{{"user":"alice","password":{{"digest":"{digest}","algorithm":"sha-256"}}}}"#
            )),
            Some(LoginRequest::Password {
                identity: Identity::Username("alice".into()),
                password: Password::Sha256Digest(digest),
                code: None
            })
        );
    }

    #[test]
    fn header_code_applies_only_without_body_code() {
        let b = br#"{"user":"alice","password":"pw"}"#;
        assert_eq!(
            parse(BodyKind::Json, b, Some("111111")),
            user("alice", "pw", Some("111111"))
        );
        let b = br#"{"user":"alice","password":"pw","code":"222222"}"#;
        assert_eq!(
            parse(BodyKind::Json, b, Some("111111")),
            user("alice", "pw", Some("222222"))
        );
    }

    #[test]
    fn unusable_bodies_are_none() {
        for b in [
            "",
            "{}",
            "[]",
            "null",
            "not json",
            r#"{"user":"alice"}"#,
            r#"{"password":"pw"}"#,
            r#"{"user":"alice","password":""}"#,
            r#"{"user":"alice","password":123}"#,
            r#"{"user":123,"password":"pw"}"#,
            r#"{"user":{"username":"a"},"password":"p","code":"1"}"#,
            r#"{"user":"alice","password":"pw","extra":1}"#,
            r#"{"resume":""}"#,
            r#"{"resume":5}"#,
            r#"{"user":{"username":"a","email":"b"},"password":"p"}"#,
            r#"{"user":"alice","password":{"digest":"zz","algorithm":"sha-256"}}"#,
        ] {
            assert_eq!(json(b), None, "{b}");
        }
        assert_eq!(
            parse(
                BodyKind::Other,
                br#"{"user":"alice","password":"pw"}"#,
                None
            ),
            None
        );
        assert_eq!(
            parse(BodyKind::Form, b"user=a&user=b&password=p", None),
            None
        );
    }

    #[test]
    fn success_body_keeps_contract_key_order() {
        let p = UserProfile {
            id: "id1".into(),
            username: "alice".into(),
            name: "Alice".into(),
            email: Some("a@x.io".into()),
            roles: vec!["user".into()],
            directory: "local".into(),
        };
        let body = success_body("id1", "tok", me(&p, "https://chat.example", false));
        assert!(body.starts_with(r#"{"status":"success","data":{"userId":"id1","authToken":"tok","me":{"_id":"id1","username":"alice","#), "{body}");
        assert!(body.ends_with(r#""avatarUrl":"https://chat.example/avatar/alice","isOAuthUser":false,"services":{"password":{"exists":true}}}},"success":true}"#), "{body}");
    }
}
