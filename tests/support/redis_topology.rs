//! Real Redis deployments beyond one server, on free loopback ports in temp dirs, killed on
//! drop: Sentinel (a master, a replica, three sentinels) and Cluster (three masters made with
//! `redis-cli --cluster create`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{redis_server_args, which};

/// Runs one command through `redis-cli` and returns its trimmed output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(which("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// One redis-server (or redis-sentinel) process that can be killed and started again.
pub struct Node {
    pub port: u16,
    args: Vec<String>,
    binary: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(binary: &str, port: u16, args: Vec<String>) -> Node {
        let mut n = Node {
            port,
            args,
            binary: which(binary),
            child: None,
        };
        n.restart();
        n
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again with the same arguments (and the same dir and port).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let port = self.port;
        let binary = self.binary.display().to_string();
        let child = self.child.as_mut().expect("just started");
        wait_for(
            &format!("port {port} to answer PING"),
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{binary} on port {port} exited at start ({status}); is the port taken?"
                    );
                }
                cli(port, &["PING"]) == "PONG"
            },
        );
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const MASTER_NAME: &str = "authgate-test";

/// A master, one replica and three sentinels with quick failure detection.
pub struct SentinelSet {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let ports = free_ports(5);
        let master = Node::start(
            "redis-server",
            ports[0],
            redis_server_args(ports[0], &mk("master")),
        );
        let mut replica_args = redis_server_args(ports[1], &mk("replica"));
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ]);
        let replica = Node::start("redis-server", ports[1], replica_args);
        wait_for("the replica to sync", Duration::from_secs(30), || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let mut sentinels = Vec::new();
        for (i, &port) in ports[2..].iter().enumerate() {
            let sdir = mk(&format!("sentinel{i}"));
            let conf = sdir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel resolve-hostnames no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 400\n\
                     sentinel failover-timeout {MASTER_NAME} 2000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    sdir.display(),
                    master.port
                ),
            )
            .unwrap();
            sentinels.push(Node::start(
                "redis-sentinel",
                port,
                vec![conf.to_str().unwrap().to_string()],
            ));
        }
        let set = SentinelSet {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        // A failover needs a quorum of sentinels that know each other and the replica.
        for s in &set.sentinels {
            wait_for(
                "the sentinels to find each other",
                Duration::from_secs(20),
                || {
                    s.cli(&["SENTINEL", "ckquorum", MASTER_NAME])
                        .starts_with("OK 3")
                        && s.cli(&["SENTINEL", "replicas", MASTER_NAME])
                            .contains(&set.replica.port.to_string())
                },
            );
        }
        set
    }

    /// `redis+sentinel://` URL naming all three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}/0", hosts.join(","))
    }

    /// The port every sentinel currently reports for the master.
    pub fn master_port(&self) -> Option<u16> {
        let answers: Vec<String> = self
            .sentinels
            .iter()
            .filter(|s| s.child.is_some())
            .map(|s| s.cli(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]))
            .collect();
        let port: u16 = answers.first()?.lines().nth(1)?.trim().parse().ok()?;
        answers
            .iter()
            .all(|a| a.lines().nth(1).map(str::trim) == Some(&port.to_string()[..]))
            .then_some(port)
    }

    /// Kills the master and waits until the sentinels have promoted the replica.
    pub fn kill_master_and_fail_over(&mut self) {
        let old = self.master.port;
        self.master.kill();
        let replica = self.replica.port;
        wait_for(
            "the sentinels to promote the replica",
            Duration::from_secs(30),
            || self.master_port() == Some(replica),
        );
        wait_for(
            "the replica to act as master",
            Duration::from_secs(30),
            || self.replica.cli(&["ROLE"]).starts_with("master"),
        );
        assert_ne!(old, replica);
    }
}

/// `n` distinct free ports (each listener is held until all are picked).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Three cluster masters, all slots assigned, no replicas.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        let ports = free_ports(6);
        for i in 0..3 {
            let ndir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&ndir).unwrap();
            let port = ports[i];
            let mut args = redis_server_args(port, &ndir);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &ports[i + 3].to_string(),
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            nodes.push(Node::start("redis-server", port, args));
        }
        let mut create = Command::new(which("redis-cli"));
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes, _dir: dir };
        cluster.wait_ok();
        cluster
    }

    pub fn wait_ok(&self) {
        for n in &self.nodes {
            wait_for("cluster_state:ok", Duration::from_secs(20), || {
                n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
    }

    /// The `[session.redis] cluster = [...]` value.
    pub fn toml_list(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"127.0.0.1:{}\"", n.port))
            .collect();
        format!("[{}]", nodes.join(", "))
    }

    pub fn addrs(&self) -> Vec<(String, u16)> {
        self.nodes
            .iter()
            .map(|n| ("127.0.0.1".to_string(), n.port))
            .collect()
    }

    /// Every key on every node, one per line.
    pub fn keys(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.cli(&["KEYS", "*"]))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
