//! Test harness: real redis-server, a recording upstream, and the real gateway (in-process or as
//! the built binary), all on loopback with ephemeral ports and temp dirs, killed on drop.
#![allow(dead_code)]

pub mod bridge;
pub mod nginx;
pub mod redis_topology;
pub mod rocketchat;
pub mod slapd;
pub mod totp;
pub mod upstream;
pub mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use authgate::config::{Config, ConfigSource};
use authgate::server::RunningGateway;

#[allow(unused_imports)]
pub use upstream::{Recorded, RecordingUpstream};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn which(bin: &str) -> PathBuf {
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` is not installed: run ./scripts/test, which installs what the suite needs");
}

/// A throwaway redis-server on loopback: no persistence, its files in `dir`.
pub fn redis_server_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A real redis-server on a free loopback port, in its own temp dir.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Redis {
            child: None,
            port: 0,
            dir,
        };
        r.spawn_on(free_port());
        r
    }

    fn spawn_on(&mut self, port: u16) {
        for attempt in 0..5 {
            let port = if attempt == 0 { port } else { free_port() };
            let child = self.spawn_process(port);
            self.child = Some(child);
            self.port = port;
            if self.wait_ready(Duration::from_secs(10)) {
                return;
            }
            self.kill();
        }
        panic!("redis-server did not start");
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if self
                .command("PING")
                .map(|r| r.starts_with("+PONG"))
                .unwrap_or(false)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends one inline command and returns the raw reply.
    pub fn command(&self, cmd: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Calls of one command Redis has served so far (`INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.command("INFO commandstats").unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map(|n| n.parse().unwrap())
            .unwrap_or(0)
    }

    /// Every key in the database, raw reply of `KEYS *`.
    pub fn keys(&self) -> String {
        self.command("KEYS *").unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, nothing answers.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    fn spawn_process(&self, port: u16) -> Child {
        Command::new(which("redis-server"))
            .args(redis_server_args(port, self.dir.path()))
            .args(["--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server")
    }

    /// Starts again on the same port (after `kill`).
    pub fn restart(&mut self) {
        let port = self.port;
        let child = self.spawn_process(port);
        self.child = Some(child);
        assert!(
            self.wait_ready(Duration::from_secs(30)),
            "redis-server did not come back on port {port}"
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A user for a generated users file.
pub struct TestUser {
    pub username: &'static str,
    pub password: &'static str,
    pub email: Option<&'static str>,
    pub extra: &'static str,
}

pub fn user(
    username: &'static str,
    password: &'static str,
    email: Option<&'static str>,
) -> TestUser {
    TestUser {
        username,
        password,
        email,
        extra: "",
    }
}

/// A cheap argon2id hash (tests need speed, not strength).
pub fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(256, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string()
}

pub fn users_toml(users: &[TestUser]) -> String {
    let mut s = String::new();
    for u in users {
        s.push_str("[[users]]\n");
        s.push_str(&format!(
            "username = \"{}\"\nname = \"{} Name\"\n",
            u.username, u.username
        ));
        if let Some(e) = u.email {
            s.push_str(&format!("email = \"{e}\"\n"));
        }
        s.push_str(&format!(
            "password_hash = \"{}\"\n{}\n\n",
            cheap_hash(u.password),
            u.extra
        ));
    }
    s
}

/// The standard test users.
pub fn standard_users() -> Vec<TestUser> {
    vec![
        user("alice", "alice-password-1", Some("Alice@Example.org")),
        user("bob", "bob-password-2", Some("bob@example.org")),
        TestUser {
            username: "carol",
            password: "carol-password-3",
            email: None,
            extra: "active = false",
        },
        TestUser {
            username: "dave",
            password: "dave-password-4",
            email: None,
            extra: "roles = [\"user\", \"admin\"]\nid = \"DaveId12345678901\"",
        },
    ]
}

/// A config + users file in a temp dir.
pub struct GatewayFiles {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

pub fn write_files(config_body: &str, users: &str) -> GatewayFiles {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), users).unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config_body).unwrap();
    GatewayFiles { dir, config_path }
}

/// The usual test config: an ephemeral port, the given upstream and session store.
pub fn config_text(upstream: SocketAddr, redis_url: Option<&str>, extra: &str) -> String {
    let session = match redis_url {
        Some(url) => {
            format!("[session]\nstore = \"redis\"\nredis_url = \"{url}\"\nredis_timeout = \"1s\"\n")
        }
        None => "[session]\nstore = \"memory\"\n".to_string(),
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\npassword_hash_concurrency = 2\n\n[upstream]\nurl = \"http://{upstream}\"\ntimeout = \"2s\"\n\n{session}\n[directory.local]\nusers_file = \"users.toml\"\n\n{extra}\n"
    )
}

/// The gateway running in this test process.
pub struct Gateway {
    pub addr: SocketAddr,
    /// The management listener, when the config has `[metrics] listen`.
    pub metrics_addr: Option<SocketAddr>,
    pub files: GatewayFiles,
    running: Option<RunningGateway>,
}

impl Gateway {
    pub async fn start(config_body: &str, users: &str) -> Gateway {
        let files = write_files(config_body, users);
        let config = Config::load(&ConfigSource::from_file(&files.config_path).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        let running = authgate::server::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Gateway {
            addr: running.addrs[0],
            metrics_addr: running.metrics_addr,
            files,
            running: Some(running),
        }
    }

    pub fn running(&self) -> &RunningGateway {
        self.running.as_ref().unwrap()
    }

    /// Reloads the config and users file from disk, as SIGHUP does.
    pub async fn reload(&self) -> Result<Vec<&'static str>, String> {
        let config = Config::load(&ConfigSource::from_file(&self.files.config_path).unwrap())
            .map_err(|e| e.to_string())?;
        self.running()
            .reload(config)
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes a new users file and reloads it.
    pub async fn reload_users(&self, users: &str) {
        std::fs::write(self.files.dir.path().join("users.toml"), users).unwrap();
        self.reload().await.unwrap();
    }

    /// Takes the running gateway, e.g. to stop it from another task.
    pub fn take_running(&mut self) -> RunningGateway {
        self.running.take().unwrap()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.metrics_addr.expect("[metrics] listen"),
            path
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.trigger_shutdown();
        }
    }
}

/// The built `authgate` binary running as a child process.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
    metrics: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    /// Every `authgate listening on` address, in the order printed.
    listening: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

/// Runs the authgate binary with `args`, nothing configured from the test runner's environment:
/// its exit code, standard output and standard error.
pub fn run_authgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(authgate_bin())
        .args(args)
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_SESSION_REDIS_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn authgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_authgate")
}

impl GatewayProcess {
    pub fn spawn(config_path: &Path) -> GatewayProcess {
        GatewayProcess::spawn_with(config_path, &[], &[])
    }

    /// `authgate serve --config config_path extra_args...` with `env` set; the overrides
    /// (AUTHGATE_LISTEN, AUTHGATE_UPSTREAM, AUTHGATE_LOG) and NO_COLOR only come from `env`.
    pub fn spawn_with(
        config_path: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        let stderr_path = config_path.with_extension("stderr.log");
        let mut child = Command::new(authgate_bin())
            .args(["serve", "--config"])
            .arg(config_path)
            .args(extra_args)
            .env_remove("AUTHGATE_CONFIG")
            .env_remove("AUTHGATE_LISTEN")
            .env_remove("AUTHGATE_UPSTREAM")
            .env_remove("AUTHGATE_LOG")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn authgate");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let metrics = std::sync::Arc::new(std::sync::Mutex::new(None));
        let metrics_seen = metrics.clone();
        let listening = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let listening_seen = listening.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("authgate listening on ") {
                    let addr = a.parse::<SocketAddr>().unwrap();
                    listening_seen.lock().unwrap().push(addr);
                    let _ = tx.send(addr);
                } else if let Some(a) = line.strip_prefix("authgate metrics listening on ") {
                    *metrics_seen.lock().unwrap() = Some(a.parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "authgate did not start: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        GatewayProcess {
            child,
            addr,
            stderr_path,
            metrics,
            listening,
        }
    }

    /// The first `count` public listener addresses it printed (waits for them, bounded).
    pub fn listen_addrs(&self, count: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.listening.lock().unwrap().clone();
            if seen.len() >= count {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "only {seen:?} of {count} listeners printed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The management listener's address (the config must have `[metrics] listen`).
    pub fn metrics_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = *self.metrics.lock().unwrap() {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no `authgate metrics listening on` line"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits (bounded) until stderr holds `needle` at least `times` times.
    pub fn wait_for_stderr(&self, needle: &str, times: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr().matches(needle).count() >= times {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a signal and waits (bounded) for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request carrying a session's credential headers, for the caller to finish (a body, more
/// headers) and send.
pub fn request_as(
    method: reqwest::Method,
    url: &str,
    id: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    client()
        .request(method, url)
        .header("x-user-id", id)
        .header("x-auth-token", token)
}

/// Status of a request carrying a session's credential headers.
pub async fn status_as(method: reqwest::Method, url: &str, id: &str, token: &str) -> u16 {
    request_as(method, url, id, token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Status of a protected request made with a session.
pub async fn protected_status(gw: &Gateway, id: &str, token: &str) -> u16 {
    status_as(reqwest::Method::GET, &gw.url("/api/v1/me"), id, token).await
}

/// Status and JSON body of a protected request made with a session, for answers whose body
/// matters (a 503 must still be the JSON error shape).
pub async fn protected_json(gw: &Gateway, id: &str, token: &str) -> (u16, serde_json::Value) {
    let r = request_as(reqwest::Method::GET, &gw.url("/api/v1/me"), id, token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Status of a logout made with a session.
pub async fn logout_status(gw: &Gateway, id: &str, token: &str) -> u16 {
    status_as(reqwest::Method::POST, &gw.url("/api/v1/logout"), id, token).await
}

/// Polls `url` (a protected path) until the session is refused: a revocation anywhere reaches
/// every instance's session cache through Redis within 100 ms of the revoking call's return.
pub async fn refused_within_100ms(url: &str, id: &str, token: &str) {
    let revoked = std::time::Instant::now();
    loop {
        match status_as(reqwest::Method::GET, url, id, token).await {
            401 => return,
            200 => assert!(
                revoked.elapsed() < Duration::from_millis(100),
                "still accepted {:?} after the revocation",
                revoked.elapsed()
            ),
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The Prometheus text a management listener serves at `url` (its `/metrics`).
pub async fn scrape_metrics(url: &str) -> String {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.text().await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// Logs in with a JSON body and returns (status, body).
pub async fn login_json(gw_url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = client()
        .post(format!("{gw_url}/api/v1/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Status of a password login, for tests where only the outcome matters (a dependency down).
pub async fn login_status(gw_url: &str, user: &str, password: &str) -> u16 {
    login_json(
        gw_url,
        serde_json::json!({"user": user, "password": password}),
    )
    .await
    .0
}

/// Logs in and returns (user id, token).
pub async fn login(gw_url: &str, user: &str, password: &str) -> (String, String) {
    let (status, body) = login_json(
        gw_url,
        serde_json::json!({"user": user, "password": password}),
    )
    .await;
    assert_eq!(status, 200, "login failed: {body}");
    (
        body["data"]["userId"].as_str().unwrap().to_string(),
        body["data"]["authToken"].as_str().unwrap().to_string(),
    )
}

/// Sends raw bytes on a fresh connection and returns everything read until close or timeout.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
