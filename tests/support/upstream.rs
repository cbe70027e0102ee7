//! A chat backend stand-in that records exactly what it received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

/// Serves HTTP/1.1 (upgrades included) on `listener` for as long as the test runs; every request
/// is answered by `answer` with its own clone of `state`.
pub fn serve_http1<S, F, Fut, B>(listener: tokio::net::TcpListener, state: S, answer: F)
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answered = answer(state.clone(), req);
                    async move { Ok::<_, Infallible>(answered.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of a header (names compared case-insensitively).
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "{name} reached the upstream {} times: {all:?}",
            all.len()
        );
        all.into_iter().next()
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Clone)]
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Notified when a request body's first chunk arrives (streaming tests).
    pub first_chunk: Arc<Notify>,
}

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = RecordingUpstream {
            addr,
            requests: Arc::default(),
            first_chunk: Arc::new(Notify::new()),
        };
        serve_http1(listener, up.clone(), |up, req| async move {
            up.answer(req).await
        });
        up
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received no request")
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().to_string();
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path = req.uri().path().to_string();
        let mut body = req.into_body();
        let mut data = Vec::new();
        let mut first = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(chunk) = frame.into_data() {
                if first && !chunk.is_empty() {
                    first = false;
                    self.first_chunk.notify_one();
                }
                data.extend_from_slice(&chunk);
            }
        }
        let body_len = data.len();
        self.requests.lock().unwrap().push(Recorded {
            method,
            target: target.clone(),
            headers,
            body_len,
            body: data,
        });
        if path == "/slow" {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        if let Some(code) = path.strip_prefix("/status/") {
            let mut r =
                Response::new(Full::new(Bytes::from(format!("{{\"status\":{code}}}"))).boxed());
            *r.status_mut() = hyper::StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
            return r;
        }
        if path == "/big" {
            // 8 MiB in 64 KiB chunks.
            let chunks = (0..128)
                .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))));
            return Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed());
        }
        if path == "/stream" {
            // A first chunk now, the rest only after a pause: a buffering proxy would hold both.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                    .await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                    .await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            return Response::new(StreamBody::new(stream).boxed());
        }
        let mut r = Response::new(
            Full::new(Bytes::from(
                serde_json::json!({"success": true, "path": target, "received": body_len})
                    .to_string(),
            ))
            .boxed(),
        );
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r.headers_mut()
            .insert("connection", "x-upstream-private".parse().unwrap());
        r.headers_mut().insert(
            "x-upstream-private",
            "should-not-reach-client".parse().unwrap(),
        );
        r
    }
}
