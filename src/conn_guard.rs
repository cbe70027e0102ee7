//! A guard around each client connection. It reads the framing as it arrives, for what hyper
//! does not report: a request carrying both `Content-Length` and `Transfer-Encoding` (hyper
//! silently drops the length, RFC 9112 section 6.1), and a request whose framing it cannot
//! follow (an upgrade that did not happen, CONNECT, a head or body it cannot read), after which
//! the connection must close. And it bounds every phase hyper leaves open: the first byte, a
//! head trickling in, pauses inside a body, the HTTP/2 preface and first SETTINGS, and an
//! HTTP/2 connection with nothing in progress, and the HTTP/1 wait for the next request. (The TLS
//! handshake is bounded where it happens, in `server`.)
//!
//! hyper's own HTTP/1 header-read timer is off: it allocated, armed and cancelled a timer for
//! every request (bench/NOTES.md), where this guard's one timer per connection is not touched
//! by a keep-alive connection whose requests arrive whole.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::conn_framing::{FramingTracker, Phase};
use crate::error::Body;
use crate::telemetry::{ConnectionClose, Metrics};

/// What the guard learned about a connection, shared with the request handler.
#[derive(Debug, Default)]
pub struct ConnFlags {
    ambiguous_framing: AtomicBool,
    lost_track: AtomicBool,
    h2: AtomicBool,
    /// Requests being handled or answered (until their answer's body is over); a connection is
    /// idle only while this is 0.
    requests_in_progress: AtomicUsize,
    /// A request was answered since the idle deadline was last looked at.
    answered: AtomicBool,
}

impl ConnFlags {
    pub fn ambiguous_framing(&self) -> bool {
        self.ambiguous_framing.load(Ordering::Acquire)
    }

    /// The guard met a request whose framing it cannot follow (an upgrade, CONNECT, a head
    /// or body it cannot read): what follows on the connection may be a smuggled request, so
    /// the connection must end after the current answer unless it was upgraded.
    pub fn lost_track(&self) -> bool {
        self.lost_track.load(Ordering::Acquire)
    }

    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Acquire)
    }

    fn requests_in_progress(&self) -> usize {
        self.requests_in_progress.load(Ordering::Acquire)
    }

    /// Counts a request as in progress until the returned guard drops (see [`InProgressBody`]).
    pub fn request_started(self: &Arc<Self>) -> RequestInProgress {
        self.requests_in_progress.fetch_add(1, Ordering::AcqRel);
        RequestInProgress(self.clone())
    }
}

pub struct RequestInProgress(Arc<ConnFlags>);

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.answered.store(true, Ordering::Release);
        self.0.requests_in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RequestInProgress {
    /// The answer, still counted in progress until hyper is done with its body: a response
    /// streaming slowly is never an idle connection.
    pub fn until_sent(self, resp: http::Response<Body>) -> http::Response<InProgressBody> {
        resp.map(|inner| InProgressBody {
            inner,
            _in_progress: self,
        })
    }
}

/// An answer's body that keeps its request counted in progress until it is dropped.
pub struct InProgressBody {
    inner: Body,
    _in_progress: RequestInProgress,
}

impl http_body::Body for InProgressBody {
    type Data = bytes::Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The bounds on each phase of a client connection, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub first_byte: Duration,
    pub header_read: Duration,
    pub body_read: Duration,
    pub h2_preface: Duration,
    pub idle: Duration,
}

/// The deadline currently running. Fixed deadlines run from the start of their phase; gap
/// deadlines only bound a pause, so progress moves them on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Nothing,
    FirstByte,
    Head,
    H2Preface,
    /// Gap: between two reads of a request body.
    Body,
    /// Gap: no request being handled and no bytes either way (HTTP/1 between requests, or
    /// HTTP/2).
    Idle,
}

impl Watch {
    fn of(phase: Phase) -> Self {
        match phase {
            Phase::FirstByte => Watch::FirstByte,
            Phase::Head => Watch::Head,
            Phase::Body => Watch::Body,
            Phase::H2Preface => Watch::H2Preface,
            Phase::H2 | Phase::BetweenRequests => Watch::Idle,
            // An upgraded connection, or one whose framing is lost and closes after its answer.
            Phase::Lost => Watch::Nothing,
        }
    }

    fn is_gap(self) -> bool {
        matches!(self, Watch::Body | Watch::Idle)
    }

    fn limit(self, limits: &ConnLimits) -> Option<Duration> {
        match self {
            Watch::Nothing => None,
            Watch::FirstByte => Some(limits.first_byte),
            Watch::Head => Some(limits.header_read),
            Watch::H2Preface => Some(limits.h2_preface),
            Watch::Body => Some(limits.body_read),
            Watch::Idle => Some(limits.idle),
        }
    }

    fn close_reason(self) -> Option<ConnectionClose> {
        match self {
            Watch::Nothing => None,
            Watch::FirstByte => Some(ConnectionClose::FirstByteTimeout),
            Watch::Head => Some(ConnectionClose::HeaderTimeout),
            Watch::H2Preface => Some(ConnectionClose::H2PrefaceTimeout),
            Watch::Body => Some(ConnectionClose::BodyTimeout),
            Watch::Idle => Some(ConnectionClose::IdleTimeout),
        }
    }
}

/// The client connection, with its framing followed and a deadline on whatever phase it is in.
///
/// One timer per connection, moved only when the phase changes: a keep-alive connection whose
/// requests arrive whole in single reads never touches it after its first request, and a body,
/// a keep-alive wait or an HTTP/2 connection only notes progress in a flag, looked at when the
/// timer fires: so a pause is cut between one and two bounds after the last byte.
pub struct GuardedIo<T> {
    inner: T,
    tracker: FramingTracker,
    flags: Arc<ConnFlags>,
    limits: ConnLimits,
    metrics: Metrics,
    deadline: Pin<Box<Sleep>>,
    watching: Watch,
    /// Bytes moved since a gap deadline was last set.
    progressed: bool,
}

impl<T> GuardedIo<T> {
    pub fn new(
        inner: T,
        max_head: usize,
        limits: ConnLimits,
        metrics: Metrics,
    ) -> (Self, Arc<ConnFlags>) {
        let flags = Arc::new(ConnFlags::default());
        let io = Self {
            inner,
            tracker: FramingTracker::new(max_head),
            flags: flags.clone(),
            limits,
            metrics,
            deadline: Box::pin(tokio::time::sleep(limits.first_byte)),
            watching: Watch::FirstByte,
            progressed: false,
        };
        (io, flags)
    }

    fn watch(&mut self, what: Watch, cx: &mut Context<'_>) {
        self.watching = what;
        self.progressed = false;
        if let Some(limit) = what.limit(&self.limits) {
            self.deadline.as_mut().reset(Instant::now() + limit);
            // Registers this task with the timer, so a connection that stalls is woken.
            let _ = self.deadline.as_mut().poll(cx);
        }
    }

    /// The phase's deadline passed: what the read answers instead of data.
    fn expire(&mut self) -> Poll<io::Result<()>> {
        let why = self.watching.close_reason();
        if let Some(why) = why {
            self.metrics.connection_closed(why);
        }
        self.watching = Watch::Nothing;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            why.map_or("connection deadline", |w| w.label()),
        )))
    }

    fn saw(&mut self, bytes: &[u8], cx: &mut Context<'_>) {
        let heads_before = self.tracker.heads();
        if self.tracker.feed(bytes) {
            self.flags.ambiguous_framing.store(true, Ordering::Release);
        }
        let phase = self.tracker.phase();
        if phase == Phase::Lost && !self.flags.lost_track.load(Ordering::Relaxed) {
            self.flags.lost_track.store(true, Ordering::Release);
        }
        if phase == Phase::H2 && !self.flags.h2.load(Ordering::Relaxed) {
            self.flags.h2.store(true, Ordering::Release);
        }
        let wanted = Watch::of(phase);
        let next_head = wanted == Watch::Head && self.tracker.heads() != heads_before;
        if wanted != self.watching || next_head {
            self.watch(wanted, cx);
        } else {
            self.progressed = true;
        }
    }

    /// A gap deadline passed: moves it on if anything happened meanwhile.
    fn gap_elapsed(&mut self, cx: &mut Context<'_>) -> bool {
        let busy = self.watching == Watch::Idle
            && (self.flags.requests_in_progress() > 0
                || self.flags.answered.swap(false, Ordering::AcqRel));
        if self.progressed || busy {
            self.watch(self.watching, cx);
            false
        } else {
            true
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Checked before reading, so bytes trickling in cannot postpone a fixed deadline.
        if !this.watching.is_gap()
            && this.watching != Watch::Nothing
            && this.deadline.as_mut().poll(cx).is_ready()
        {
            return this.expire();
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let len = buf.filled().len();
                if len > before {
                    this.saw(&buf.filled()[before..len], cx);
                }
            }
            // A pause is only a stall while nothing is there to read.
            Poll::Pending
                if this.watching.is_gap()
                    && this.deadline.as_mut().poll(cx).is_ready()
                    && this.gap_elapsed(cx) =>
            {
                return this.expire();
            }
            _ => {}
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A response streaming out keeps a connection from counting as idle.
        self.progressed = true;
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.progressed = true;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
