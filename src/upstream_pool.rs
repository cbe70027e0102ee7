//! Keep-alive connections to the upstream, on hyper's own HTTP/1 client connections.
//!
//! hyper-util's legacy `Client` spawns an extra task per streamed response to hand the
//! connection back, and shares one mutex-guarded pool across threads (measured in
//! bench/NOTES.md, "What made the difference", item 1).
//! Here each worker runtime keeps its own idle list, a connection's driver task lives on the
//! worker that opened it, and a connection goes back to its list the moment the response body
//! has been read to the end, from inside the body itself.
//!
//! The wait for an answer is bounded by one timer per connection rather than one per request:
//! arming and cancelling a timer for every request cost about a thousand instructions
//! (bench/NOTES.md). The connection's timer only ever runs early, and when it fires before the
//! current request's limit it is moved on to that limit; so on a busy connection it is moved
//! about once per timeout, not once per request.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What goes up: the client's streamed body, or one authgate holds whole.
pub type UpstreamBody = http_body_util::Either<Incoming, http_body_util::Full<Bytes>>;

thread_local! {
    /// Which worker runtime this thread drives (0 for the main one, and for every thread of a
    /// multi-threaded runtime).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as worker `index`, so it uses its own idle connections.
pub fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(index));
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no connection to {0} within {1:?}")]
    ConnectTimeout(String, Duration),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within the upstream timeout")]
    Timeout,
}

/// A connection to the upstream, with the timer that bounds the wait for its answers.
struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// Never later than the limit of the request in progress (see the module doc).
    deadline: Pin<Box<Sleep>>,
}

impl Conn {
    /// Polls `work` until it is ready or `limit` passes.
    fn poll_within<T>(
        &mut self,
        cx: &mut Context<'_>,
        limit: Instant,
        work: impl FnOnce(&mut SendRequest<UpstreamBody>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<Result<T, PoolError>> {
        if let Poll::Ready(done) = work(&mut self.sender, cx) {
            return Poll::Ready(Ok(done));
        }
        if self.deadline.deadline() > limit {
            self.deadline.as_mut().reset(limit);
        }
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= limit {
                return Poll::Ready(Err(PoolError::Timeout));
            }
            // Set by an earlier request: moved on, and polled again so it wakes this one.
            self.deadline.as_mut().reset(limit);
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

pub struct Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// One idle list per worker runtime; a worker only ever touches its own, so the locks are
    /// uncontended.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
}

impl Pool {
    pub fn new(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        workers: usize,
    ) -> Self {
        Self {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: (0..workers.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
        }
    }

    fn slot(&self) -> usize {
        WORKER.with(Cell::get) % self.idle.len()
    }

    /// Sends `req` on an idle connection of this worker, or a new one, and waits at most
    /// `timeout` for the answer's head. A request the connection turned down before writing
    /// anything (the upstream closed it while idle) goes out again once on a fresh connection.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<PooledBody>, PoolError> {
        let now = Instant::now();
        let limit = now + timeout;
        let slot = self.slot();
        let mut req = req;
        loop {
            let (mut conn, fresh) = match self.checkout(slot, now, limit).await? {
                Some(conn) => (conn, false),
                // Boxed: opening a connection is rare, and its future would weigh on every send.
                None => match tokio::time::timeout_at(limit, Box::pin(self.connect(false))).await {
                    Ok(sender) => (Conn::new(sender?, limit), true),
                    Err(_) => return Err(PoolError::Timeout),
                },
            };
            let mut sent = std::pin::pin!(conn.sender.try_send_request(req));
            let answer = std::future::poll_fn(|cx| {
                conn.poll_within(cx, limit, |_, cx| sent.as_mut().poll(cx))
            })
            .await?;
            match answer {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let body = PooledBody::new(body, conn, self.clone(), slot);
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// Sends a WebSocket upgrade on a connection of its own: it never comes back to the pool.
    pub async fn send_upgrade(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, PoolError> {
        let mut sender = self.connect(true).await?;
        Ok(sender.send_request(req).await?)
    }

    /// Whether a TCP connection to the upstream opens within the connect timeout.
    pub async fn probe(&self) -> Result<(), PoolError> {
        self.tcp().await.map(drop)
    }

    /// The most recently used idle connection that is still open and ready (by `limit`), as of
    /// `now` (the send's start, so the clock is read once).
    async fn checkout(
        &self,
        slot: usize,
        now: Instant,
        limit: Instant,
    ) -> Result<Option<Conn>, PoolError> {
        loop {
            let Some(idle) = self.idle[slot].lock().expect("pool lock").pop_back() else {
                return Ok(None);
            };
            if now.saturating_duration_since(idle.since) >= self.idle_timeout
                || idle.conn.sender.is_closed()
            {
                continue;
            }
            let mut conn = idle.conn;
            // Ready at once, unless the connection task has not yet noticed the last exchange
            // ended (or is still sending its request body); an error means the upstream closed
            // it meanwhile.
            let ready = std::future::poll_fn(|cx| {
                conn.poll_within(cx, limit, |sender, cx| sender.poll_ready(cx))
            })
            .await?;
            if ready.is_ok() {
                return Ok(Some(conn));
            }
        }
    }

    fn check_in(&self, slot: usize, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle[slot].lock().expect("pool lock");
        // The oldest sit at the front; those past the idle timeout are closed here.
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back(Idle { conn, since: now });
        }
    }

    async fn tcp(&self) -> Result<TcpStream, PoolError> {
        let authority = || format!("{}:{}", self.host, self.port);
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(PoolError::Connect(authority(), e)),
            Err(_) => Err(PoolError::ConnectTimeout(authority(), self.connect_timeout)),
        }
    }

    async fn connect(&self, upgrades: bool) -> Result<SendRequest<UpstreamBody>, PoolError> {
        let stream = self.tcp().await?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, UpstreamBody>(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let ended = if upgrades {
                conn.with_upgrades().await
            } else {
                conn.await
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl Conn {
    fn new(sender: SendRequest<UpstreamBody>, limit: Instant) -> Self {
        Self {
            sender,
            deadline: Box::pin(tokio::time::sleep_until(limit)),
        }
    }
}

/// An upstream response body that hands its connection back to the pool once read to the end.
/// Dropped earlier, it takes the connection with it: a half-read response cannot be reused.
pub struct PooledBody {
    inner: Incoming,
    owner: Option<(Conn, Arc<Pool>, usize)>,
}

impl PooledBody {
    fn new(inner: Incoming, conn: Conn, pool: Arc<Pool>, slot: usize) -> Self {
        let mut body = Self {
            inner,
            owner: Some((conn, pool, slot)),
        };
        // An empty body is never polled: the connection is free already.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((conn, pool, slot)) = self.owner.take() {
            pool.check_in(slot, conn);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // A body of known length is over with its last byte: hyper stops polling then.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.owner = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that counts the connections it accepted. `/empty` answers 204, `/big` 256 KiB,
    /// anything else a short body.
    async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        let body = match req.uri().path() {
                            "/empty" => Bytes::new(),
                            "/big" => Bytes::from(vec![b'x'; 256 * 1024]),
                            _ => Bytes::from_static(b"{\"ok\":true}"),
                        };
                        let mut resp = Response::new(Full::new(body));
                        if req.uri().path() == "/empty" {
                            *resp.status_mut() = http::StatusCode::NO_CONTENT;
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn pool(addr: std::net::SocketAddr, idle_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool::new(
            "127.0.0.1",
            addr.port(),
            Duration::from_secs(2),
            idle_timeout,
            8,
            1,
        ))
    }

    fn get(path: &str) -> Request<UpstreamBody> {
        let mut req = Request::new(http_body_util::Either::Right(Full::default()));
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, "upstream".parse().unwrap());
        req
    }

    async fn read_all(pool: &Arc<Pool>, path: &str) -> Bytes {
        let resp = pool.send(get(path), Duration::from_secs(5)).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn requests_read_to_the_end_reuse_one_connection() {
        let (addr, accepted) = counting_upstream().await;
        let pool = pool(addr, Duration::from_secs(30));
        for path in ["/", "/big", "/empty", "/", "/big"] {
            read_all(&pool, path).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_wait_for_an_answer_is_bounded_on_fresh_and_reused_connections() {
        let (addr, accepted) = counting_upstream().await;
        let pool = pool(addr, Duration::from_secs(30));
        let timeout = Duration::from_millis(300);
        let timed = |path: &'static str| {
            let pool = pool.clone();
            async move {
                let started = std::time::Instant::now();
                let answer = match pool.send(get(path), timeout).await {
                    // Read to the end, so the connection goes back to the pool.
                    Ok(resp) => {
                        resp.into_body().collect().await.unwrap();
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                (answer, started.elapsed())
            }
        };
        // A fresh connection: its timer starts at this request's limit.
        let (answer, took) = timed("/slow").await;
        assert!(matches!(answer, Err(PoolError::Timeout)), "{answer:?}");
        assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
        // A reused connection whose timer an earlier request set, and let pass meanwhile.
        read_all(&pool, "/").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        read_all(&pool, "/").await;
        let (answer, took) = timed("/slow").await;
        assert!(matches!(answer, Err(PoolError::Timeout)), "{answer:?}");
        assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
        // Many quick requests in a row on one connection do not cut the next one short.
        for _ in 0..20 {
            let (answer, took) = timed("/").await;
            assert!(answer.is_ok() && took < timeout, "{took:?}");
        }
        // One connection for the first slow request (cut, so closed), one for the rest.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_response_dropped_half_read_takes_its_connection_along() {
        let (addr, accepted) = counting_upstream().await;
        let pool = pool(addr, Duration::from_secs(30));
        let mut body = pool
            .send(get("/big"), Duration::from_secs(5))
            .await
            .unwrap()
            .into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(read_all(&pool, "/").await.as_ref(), b"{\"ok\":true}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_not_reused() {
        let (addr, accepted) = counting_upstream().await;
        let pool = pool(addr, Duration::from_millis(100));
        read_all(&pool, "/").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        read_all(&pool, "/").await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // The stale one was closed when the fresh one came back.
        assert_eq!(pool.idle[0].lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_upstream_that_closed_an_idle_connection_costs_the_client_nothing() {
        // Answers one request per connection, then closes without saying so.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                });
            }
        });
        let pool = pool(addr, Duration::from_secs(30));
        for _ in 0..5 {
            assert_eq!(read_all(&pool, "/").await.as_ref(), b"ok");
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pool = Arc::new(Pool::new(
            "127.0.0.1",
            port,
            Duration::from_secs(1),
            Duration::from_secs(1),
            8,
            1,
        ));
        assert!(matches!(
            pool.send(get("/"), Duration::from_secs(5)).await,
            Err(PoolError::Connect(..))
        ));
    }
}
