//! nginx as a round-robin load balancer in front of several gateways, as operators run authgate:
//! a real `nginx` process (one process: no master to leave workers behind) with a temp prefix on a
//! free loopback port, killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, which};

pub struct NginxBalancer {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl NginxBalancer {
    pub fn start(backends: &[SocketAddr]) -> NginxBalancer {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display().to_string();
        let port = free_port();
        let servers: String = backends
            .iter()
            .map(|b| format!("    server {b} max_fails=0;\n"))
            .collect();
        let conf = format!(
            "user root;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
               upstream gateways {{\n{servers}    keepalive 16;\n  }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 proxy_pass http://gateways;\n      proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n      proxy_next_upstream off;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(which("nginx"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx (installed by ./scripts/test)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut n = NginxBalancer { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited with {status}: {}", n.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxBalancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
