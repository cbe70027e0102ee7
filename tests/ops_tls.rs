//! TLS on the public listener: handshakes against a test CA made here with rcgen, HTTP/2 and
//! HTTP/1.1 chosen by ALPN, and certificate reload without dropping open connections.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::AsyncReadExt;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "authgate test CA");
        let key = KeyPair::generate().unwrap();
        TestCa {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

fn install(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    (cert, key)
}

fn tls_config(upstream: SocketAddr, cert: &Path, key: &Path) -> String {
    config_text(
        upstream,
        None,
        &format!(
            "[routes]\npublic = [\"/api/info\"]\n\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .replace("[server]\n", "[server]\nheader_read_timeout = \"1s\"\n")
}

fn https_client(ca: &TestCa, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10));
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn handshake(
    ca: &TestCa,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn presented(stream: &TlsStream<tokio::net::TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// An HTTP/1.1 connection over an established TLS stream, kept open by the caller.
async fn h1_over(
    stream: TlsStream<tokio::net::TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn info_over(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> u16 {
    let req = http::Request::get("/api/info")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_http1_by_alpn_with_the_configured_certificate() {
    let up = RecordingUpstream::start().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf("first");
    let (cert, key) = install(dir.path(), &first);
    let users = users_toml(&standard_users());
    let gw = Gateway::start(&tls_config(up.addr, &cert, &key), &users).await;
    let url = format!("https://localhost:{}/api/info", gw.addr.port());

    let r = https_client(&ca, gw.addr, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    let r = https_client(&ca, gw.addr, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_11);
    // The upstream is spoken to over HTTP/1.1 whatever the client used, and told the client
    // used TLS.
    assert_eq!(up.count(), 2);
    for seen in up.requests() {
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    }

    let h2 = handshake(&ca, gw.addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(presented(&h2), first.der);
    let h1 = handshake(&ca, gw.addr, &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let none = handshake(&ca, gw.addr, &[]).await;
    assert_eq!(none.get_ref().1.alpn_protocol(), None);
    assert_eq!(info_over(&mut h1_over(none).await).await, 200);

    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(client().get(gw.url("/api/info")).send().await.is_err());
    // A client that opens a connection and never says hello is cut off at header_read_timeout.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_reaches_new_handshakes_and_keeps_open_connections() {
    let up = RecordingUpstream::start().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf("first");
    let (cert, key) = install(dir.path(), &first);
    let users = users_toml(&standard_users());
    let gw = Gateway::start(&tls_config(up.addr, &cert, &key), &users).await;

    let before = handshake(&ca, gw.addr, &[b"http/1.1"]).await;
    assert_eq!(presented(&before), first.der);
    let mut open = h1_over(before).await;
    assert_eq!(info_over(&mut open).await, 200);

    let second = ca.leaf("second");
    install(dir.path(), &second);
    assert_eq!(gw.reload().await, Ok(vec![]));
    let after = handshake(&ca, gw.addr, &[b"http/1.1"]).await;
    assert_eq!(presented(&after), second.der);
    // The connection made under the first certificate carries on.
    assert_eq!(info_over(&mut open).await, 200);

    // A broken or mismatched pair is refused whole: the second certificate stays in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    let e = gw.reload().await.unwrap_err();
    assert!(e.contains("server.tls.cert"), "{e}");
    std::fs::write(&cert, &ca.leaf("third").cert_pem).unwrap();
    let e = gw.reload().await.unwrap_err();
    assert!(
        e.contains("server.tls.key") && e.contains("does not belong"),
        "{e}"
    );
    let still = handshake(&ca, gw.addr, &[b"http/1.1"]).await;
    assert_eq!(presented(&still), second.der);
    assert_eq!(info_over(&mut open).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_certificate_follows_its_files_without_a_signal() {
    let up = RecordingUpstream::start().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf("first");
    let (cert, key) = install(dir.path(), &first);
    let users = users_toml(&standard_users());
    let config = tls_config(up.addr, &cert, &key) + "watch = \"200ms\"\n";
    let gw = Gateway::start(&config, &users).await;
    let mut open = h1_over(handshake(&ca, gw.addr, &[b"http/1.1"]).await).await;
    assert_eq!(info_over(&mut open).await, 200);

    // Written one file at a time, as renewal tools do: the half-written pair is not used.
    let second = ca.leaf("second");
    std::fs::write(&cert, &second.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(presented(&handshake(&ca, gw.addr, &[]).await), first.der);
    std::fs::write(&key, &second.key_pem).unwrap();
    let mut now = first.der.clone();
    for _ in 0..50 {
        now = presented(&handshake(&ca, gw.addr, &[]).await);
        if now == second.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, second.der, "the new files were not picked up");
    assert_eq!(info_over(&mut open).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_stops_midway_is_cut_at_header_read_timeout_and_counted() {
    let up = RecordingUpstream::start().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &ca.leaf("first"));
    let cfg = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        tls_config(up.addr, &cert, &key)
    );
    let gw = Gateway::start(&cfg, &users_toml(&standard_users())).await;
    let mut stalled = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // The start of a TLS record carrying a ClientHello, and nothing more.
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "cut after {took:?}"
    );
    let metrics = scrape_metrics(&gw.admin_url("/metrics")).await;
    assert!(
        metrics.contains("authgate_connections_closed_total{reason=\"tls_handshake_timeout\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(up.count(), 0);
    gw.stop().await;
}
