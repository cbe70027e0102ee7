//! A stand-in for stock Rocket.Chat, as far as authgate uses it: admin-authenticated
//! `users.info/create/update/createToken`, resume logins over REST and `method.callAnon`,
//! endpoints that accept only tokens it minted, public settings, and a DDP WebSocket (raw and
//! SockJS). It records every request, so tests can prove what reached it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

pub const ADMIN_ID: &str = "AdminUserId000001";
pub const ADMIN_TOKEN: &str = "admin-personal-access-token";

#[derive(Debug, Clone)]
pub struct RcUser {
    pub id: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub roles: Vec<String>,
    pub active: bool,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

#[derive(Default)]
pub struct State {
    pub users: HashMap<String, RcUser>,
    /// Login tokens Rocket.Chat minted, to user ids.
    pub tokens: HashMap<String, String>,
    pub seen: Vec<Seen>,
    /// DDP frames received on WebSockets.
    pub ddp_in: Vec<Value>,
    pub creates: usize,
    pub updates: usize,
    pub token_grants: usize,
    /// Plays a `trusted-headers` backend: identity headers are taken as checked, and so is a
    /// socket resume naming its user in `userId` (authgate alone can send a `login` frame).
    pub trusts_gateway: bool,
}

#[derive(Clone)]
pub struct FakeRocketChat {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

fn json_response(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn new_id() -> String {
    authgate::directory::stable_user_id("fake-rc", authgate::session::Token::generate().as_str())
}

impl FakeRocketChat {
    pub async fn start() -> FakeRocketChat {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeRocketChat {
            addr,
            state: Arc::default(),
        };
        super::upstream::serve_http1(listener, fake.clone(), |fake, req| async move {
            fake.answer(req).await
        });
        fake
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn user(&self, username: &str) -> Option<RcUser> {
        self.state
            .lock()
            .unwrap()
            .users
            .values()
            .find(|u| u.username == username)
            .cloned()
    }

    /// Forgets every token it minted, as after an expiry sweep.
    pub fn expire_all_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    /// Forgets the tokens of one user, as "log out other sessions" or a password change does.
    pub fn drop_user_tokens(&self, user_id: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .retain(|_, uid| uid != user_id);
    }

    /// Acts as a `trusted-headers` backend on its sockets from now on.
    pub fn trust_gateway(&self) {
        self.state.lock().unwrap().trusts_gateway = true;
    }

    /// The upgrade requests its WebSocket endpoints received.
    pub fn upgrades(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.target.contains("websocket"))
            .collect()
    }

    /// The `login` frames received on WebSockets.
    pub fn socket_logins(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .ddp_in
            .iter()
            .filter(|f| f["method"] == "login")
            .cloned()
            .collect()
    }

    fn token_user(&self, headers: &hyper::HeaderMap) -> Option<String> {
        let uid = headers.get("x-user-id")?.to_str().ok()?;
        let tok = headers.get("x-auth-token")?.to_str().ok()?;
        let st = self.state.lock().unwrap();
        (st.trusts_gateway || st.tokens.get(tok).map(String::as_str) == Some(uid))
            .then(|| uid.to_string())
    }

    fn cookie_user(&self, headers: &hyper::HeaderMap) -> Option<String> {
        let mut uid = None;
        let mut tok = None;
        for v in headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for pair in v.split(';') {
                match pair.trim().split_once('=') {
                    Some(("rc_uid", x)) => uid = Some(x.to_string()),
                    Some(("rc_token", x)) => tok = Some(x.to_string()),
                    _ => {}
                }
            }
        }
        let (uid, tok) = (uid?, tok?);
        let st = self.state.lock().unwrap();
        (st.tokens.get(&tok) == Some(&uid)).then_some(uid)
    }

    fn is_admin(headers: &hyper::HeaderMap) -> bool {
        headers.get("x-user-id").is_some_and(|v| v == ADMIN_ID)
            && headers
                .get("x-auth-token")
                .is_some_and(|v| v == ADMIN_TOKEN)
    }

    fn me(&self, uid: &str) -> Value {
        let st = self.state.lock().unwrap();
        let u = &st.users[uid];
        json!({"_id": u.id, "username": u.username, "name": u.name, "emails": [{"address": u.email, "verified": true}], "roles": u.roles, "active": u.active})
    }

    fn resume_result(&self, token: &str) -> Option<Value> {
        let uid = self.state.lock().unwrap().tokens.get(token).cloned()?;
        Some(Self::login_result(&uid, token))
    }

    fn login_result(uid: &str, token: &str) -> Value {
        json!({"id": uid, "token": token, "tokenExpires": {"$date": 1_900_000_000_000u64}, "type": "resume"})
    }

    /// A socket login: a resume with a token it minted, or in `trusts_gateway` mode any resume
    /// that names its user.
    fn socket_login_result(&self, params: &Value) -> Option<Value> {
        let token = params["resume"].as_str()?;
        if self.state.lock().unwrap().trusts_gateway {
            return Some(Self::login_result(params["userId"].as_str()?, token));
        }
        self.resume_result(token)
    }

    fn public_settings(&self) -> Value {
        json!([{"_id": "LDAP_Enable", "value": false}, {"_id": "Accounts_ShowFormLogin", "value": false}, {"_id": "Site_Name", "value": "Fake"}])
    }

    /// Answers one DDP message (the same for REST `method.call*` and WebSockets).
    fn ddp(&self, frame: &Value) -> Option<Value> {
        if frame["msg"] == "connect" {
            return Some(json!({"msg": "connected", "session": "fake-session"}));
        }
        if frame["msg"] != "method" {
            return None;
        }
        let id = frame["id"].clone();
        Some(match frame["method"].as_str().unwrap_or("") {
            "login" => match self.socket_login_result(&frame["params"][0]) {
                Some(result) => json!({"msg": "result", "id": id, "result": result}),
                None => {
                    json!({"msg": "result", "id": id, "error": {"error": 403, "reason": "You've been logged out by the server. Please log in again.", "errorType": "Meteor.Error"}})
                }
            },
            "public-settings/get" => {
                json!({"msg": "result", "id": id, "result": self.public_settings()})
            }
            other => json!({"msg": "result", "id": id, "result": format!("{other} ok")}),
        })
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().to_string();
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        let headers = req.headers().clone();
        let seen_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if path == "/websocket" || (path.starts_with("/sockjs/") && path.ends_with("/websocket")) {
            self.state.lock().unwrap().seen.push(Seen {
                method,
                target,
                headers: seen_headers,
                body: String::new(),
            });
            return self.websocket(
                &mut req,
                !path.starts_with("/websocket") && path != "/sockjs/websocket",
            );
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body_text = String::from_utf8_lossy(&body).into_owned();
        self.state.lock().unwrap().seen.push(Seen {
            method,
            target: target.clone(),
            headers: seen_headers,
            body: body_text,
        });
        let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match path.as_str() {
            "/api/v1/users.info"
            | "/api/v1/users.create"
            | "/api/v1/users.update"
            | "/api/v1/users.createToken"
                if !Self::is_admin(&headers) =>
            {
                json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"success": false, "error": "You must be logged in to do this."}),
                )
            }
            "/api/v1/users.info" => {
                let username = target.split("username=").nth(1).unwrap_or("").to_string();
                let found = self
                    .state
                    .lock()
                    .unwrap()
                    .users
                    .values()
                    .find(|u| u.username == username)
                    .map(|u| u.id.clone());
                match found {
                    Some(id) => json_response(
                        StatusCode::OK,
                        json!({"user": self.me(&id), "success": true}),
                    ),
                    None => json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"success": false, "error": "User not found."}),
                    ),
                }
            }
            "/api/v1/users.create" => {
                let id = new_id();
                let user = RcUser {
                    id: id.clone(),
                    username: input["username"].as_str().unwrap_or("").into(),
                    name: input["name"].as_str().unwrap_or("").into(),
                    email: input["email"].as_str().unwrap_or("").into(),
                    roles: input["roles"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    active: input["active"].as_bool().unwrap_or(true),
                    password: input["password"].as_str().unwrap_or("").into(),
                };
                let mut st = self.state.lock().unwrap();
                st.creates += 1;
                st.users.insert(id.clone(), user);
                drop(st);
                json_response(
                    StatusCode::OK,
                    json!({"user": self.me(&id), "success": true}),
                )
            }
            "/api/v1/users.update" => {
                let id = input["userId"].as_str().unwrap_or("").to_string();
                let mut st = self.state.lock().unwrap();
                st.updates += 1;
                if let Some(u) = st.users.get_mut(&id) {
                    let d = &input["data"];
                    u.name = d["name"].as_str().unwrap_or(&u.name).to_string();
                    u.email = d["email"].as_str().unwrap_or(&u.email).to_string();
                    if let Some(r) = d["roles"].as_array() {
                        u.roles = r
                            .iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect();
                    }
                    u.active = d["active"].as_bool().unwrap_or(u.active);
                }
                json_response(StatusCode::OK, json!({"success": true}))
            }
            "/api/v1/users.createToken" => {
                let uid = input["userId"].as_str().unwrap_or("").to_string();
                let token = format!("rc-{}", authgate::session::Token::generate().as_str());
                let mut st = self.state.lock().unwrap();
                st.token_grants += 1;
                st.tokens.insert(token.clone(), uid.clone());
                json_response(
                    StatusCode::OK,
                    json!({"data": {"userId": uid, "authToken": token}, "success": true}),
                )
            }
            "/api/v1/login" => match input["resume"].as_str().and_then(|t| self.resume_result(t)) {
                Some(r) => {
                    let uid = r["id"].as_str().unwrap().to_string();
                    json_response(
                        StatusCode::OK,
                        json!({"status": "success", "data": {"userId": uid, "authToken": r["token"], "me": self.me(&uid)}}),
                    )
                }
                None => json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"status": "error", "message": "Unauthorized"}),
                ),
            },
            p if p.starts_with("/api/v1/method.call") => {
                let frame: Value = input["message"]
                    .as_str()
                    .and_then(|m| serde_json::from_str(m).ok())
                    .unwrap_or(Value::Null);
                let reply = self.ddp(&frame).unwrap_or(Value::Null);
                json_response(
                    StatusCode::OK,
                    json!({"message": reply.to_string(), "success": true}),
                )
            }
            "/api/v1/settings.public" => json_response(
                StatusCode::OK,
                json!({"settings": [{"_id": "CROWD_Enable", "value": true}, {"_id": "LDAP_Enable", "value": false}], "success": true}),
            ),
            p if p.starts_with("/avatar/") || p.starts_with("/file-upload/") => match self
                .cookie_user(&headers)
                .or_else(|| self.token_user(&headers))
            {
                Some(uid) => json_response(StatusCode::OK, json!({"file": p, "user": uid})),
                None => json_response(StatusCode::FORBIDDEN, json!({"error": "forbidden"})),
            },
            "/api/info" => {
                json_response(StatusCode::OK, json!({"version": "7.0.0", "success": true}))
            }
            _ => match self.token_user(&headers) {
                Some(uid) => json_response(
                    StatusCode::OK,
                    json!({"path": target, "userId": uid, "success": true}),
                ),
                None => json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"success": false, "error": "You must be logged in to do this."}),
                ),
            },
        }
    }

    fn websocket(&self, req: &mut Request<Incoming>, sockjs: bool) -> Response<Full<Bytes>> {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let upgrade = hyper::upgrade::on(req);
        let server = self.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            let (mut tx, mut rx) = ws.split();
            if sockjs {
                let _ = tx.send(Message::text("o")).await;
            }
            while let Some(Ok(Message::Text(text))) = rx.next().await {
                let frames: Vec<Value> = if sockjs {
                    serde_json::from_str::<Vec<String>>(text.as_str())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|s| serde_json::from_str(s).ok())
                        .collect()
                } else {
                    serde_json::from_str(text.as_str())
                        .map(|v| vec![v])
                        .unwrap_or_default()
                };
                for frame in frames {
                    server.state.lock().unwrap().ddp_in.push(frame.clone());
                    if let Some(reply) = server.ddp(&frame) {
                        let out = if sockjs {
                            format!("a{}", json!([reply.to_string()]))
                        } else {
                            reply.to_string()
                        };
                        if tx.send(Message::text(out)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("sec-websocket-accept", key.parse().unwrap());
        r
    }
}
