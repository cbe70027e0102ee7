//! A guard around each client connection. It reads the framing as it arrives, for what hyper
//! does not report: a request carrying both `Content-Length` and `Transfer-Encoding` (hyper
//! silently drops the length, RFC 9112 section 6.1), and a request whose framing it cannot
//! follow (an upgrade that did not happen, CONNECT, a head or body it cannot read), after which
//! the connection must close. And it bounds every phase hyper leaves open: the first byte, a
//! head trickling in, pauses inside a body, the HTTP/2 preface and first SETTINGS, and an
//! HTTP/2 connection with nothing in progress. (hyper's own timer bounds the idle wait for the
//! next HTTP/1 request; the TLS handshake is bounded where it happens, in `server`.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::telemetry::{ConnectionClose, Metrics};

/// What the guard learned about a connection, shared with the request handler.
#[derive(Debug, Default)]
pub struct ConnFlags {
    ambiguous_framing: AtomicBool,
    lost_track: AtomicBool,
    h2: AtomicBool,
    /// HTTP/2 requests being handled; an HTTP/2 connection is idle only while this is 0.
    requests_in_progress: AtomicUsize,
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

    /// Counts an HTTP/2 request as in progress until the returned guard drops.
    pub fn request_started(self: &Arc<Self>) -> RequestInProgress {
        self.requests_in_progress.fetch_add(1, Ordering::AcqRel);
        RequestInProgress(self.clone())
    }
}

pub struct RequestInProgress(Arc<ConnFlags>);

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.requests_in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
enum State {
    /// The connection's first bytes while they may still be the HTTP/2 preface.
    Start(Vec<u8>),
    /// After the preface: the first frame's header, which must announce SETTINGS.
    H2FrameHeader(Vec<u8>),
    /// The payload of the client's first SETTINGS frame.
    H2Settings(u32),
    /// HTTP/2 past its preface; its frames are hyper's to read.
    H2,
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    /// HTTP/1 framing this tracker cannot follow (an upgrade, CONNECT, or a head or body it
    /// cannot read): nothing after it on the connection may be trusted.
    Lost,
}

/// Where a connection stands, for the deadline that applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing received yet.
    FirstByte,
    /// Waiting for the next HTTP/1 request (hyper's keep-alive timer applies).
    BetweenRequests,
    /// Part of a request head received.
    Head,
    /// Inside a request body.
    Body,
    /// Part of the HTTP/2 preface or of the first SETTINGS frame received.
    H2Preface,
    /// An HTTP/2 connection past its preface.
    H2,
    /// Framing not followed any more (see `State::Lost`).
    Lost,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_FRAME_HEADER: usize = 9;
const H2_SETTINGS: u8 = 0x4;

/// Follows request framing across a keep-alive connection, one byte slice at a time.
#[derive(Debug)]
pub struct FramingTracker {
    state: State,
    max_head: usize,
    /// Request heads read so far, so a head that starts in the read that ended the previous
    /// one gets a deadline of its own.
    heads: u64,
}

/// What one complete request head says about framing.
struct HeadFacts {
    ambiguous: bool,
    next: State,
}

const MAX_LINE: usize = 4096;

/// The end of the first head in `buf`: its first empty line, ended by CRLF or by a bare LF as
/// httparse (and so hyper) accept.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|nl| match buf.get(nl + 1..) {
        Some([b'\n', ..]) => Some(nl + 2),
        Some([b'\r', b'\n', ..]) => Some(nl + 3),
        _ => None,
    })
}

/// Empty lines before a request line are skipped by httparse; skipping them here too keeps
/// them from reading as an empty head.
fn skip_leading_newlines(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn read_head(head: &[u8]) -> HeadFacts {
    // Uninitialised: zeroing 128 slots per request showed in profiles.
    let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); 128];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        // httparse must end the head where the blank line was found, or the two disagree.
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => {
            return HeadFacts {
                ambiguous: false,
                next: State::Lost,
            }
        }
    }
    let mut te = 0usize;
    let mut cl: Vec<&[u8]> = Vec::new();
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te += 1;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl.push(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let ambiguous = (te > 0 && !cl.is_empty()) || te > 1 || cl.windows(2).any(|w| w[0] != w[1]);
    let next = if ambiguous || upgrade || req.method == Some("CONNECT") {
        State::Lost
    } else if te == 1 {
        State::ChunkSize(Vec::new())
    } else if let Some(len) = cl
        .first()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len == 0 {
            State::Head(Vec::new())
        } else {
            State::Fixed(len)
        }
    } else if cl.is_empty() {
        State::Head(Vec::new())
    } else {
        State::Lost
    };
    HeadFacts { ambiguous, next }
}

impl FramingTracker {
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Start(Vec::new()),
            max_head,
            heads: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Start(seen) if seen.is_empty() => Phase::FirstByte,
            State::Start(_) | State::H2FrameHeader(_) | State::H2Settings(_) => Phase::H2Preface,
            State::H2 => Phase::H2,
            State::Head(buf) if buf.is_empty() => Phase::BetweenRequests,
            State::Head(_) => Phase::Head,
            State::Fixed(_)
            | State::ChunkSize(_)
            | State::ChunkData(_)
            | State::ChunkDataEnd(_)
            | State::Trailers(_) => Phase::Body,
            State::Lost => Phase::Lost,
        }
    }

    /// True while part, but not all, of a request head has arrived.
    pub fn head_in_progress(&self) -> bool {
        self.phase() == Phase::Head
    }

    /// Feeds bytes read from the client; returns true when a request head is ambiguous.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut ambiguous = false;
        while !bytes.is_empty() {
            match &mut self.state {
                State::Lost | State::H2 => return ambiguous,
                State::Start(seen) => {
                    // hyper's auto builder picks HTTP/2 exactly when the first 24 bytes are
                    // the preface; anything else is HTTP/1 from the first byte on.
                    let take = bytes.len().min(H2_PREFACE.len() - seen.len());
                    let so_far = seen.len() + take;
                    if bytes[..take] != H2_PREFACE[seen.len()..so_far] {
                        let earlier = std::mem::take(seen);
                        self.state = State::Head(Vec::new());
                        ambiguous |= self.feed(&earlier);
                        continue;
                    }
                    seen.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if so_far == H2_PREFACE.len() {
                        self.state = State::H2FrameHeader(Vec::with_capacity(H2_FRAME_HEADER));
                    }
                }
                State::H2FrameHeader(header) => {
                    let take = bytes.len().min(H2_FRAME_HEADER - header.len());
                    header.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if header.len() == H2_FRAME_HEADER {
                        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
                        self.state = match (header[3], length) {
                            (H2_SETTINGS, 0) => State::H2,
                            (H2_SETTINGS, n) => State::H2Settings(n),
                            // hyper's h2 refuses any other first frame itself.
                            _ => State::H2,
                        };
                    }
                }
                State::H2Settings(left) => {
                    let take = (*left).min(bytes.len() as u32);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.state = State::H2;
                    }
                }
                State::Head(buf) => {
                    if buf.is_empty() {
                        bytes = skip_leading_newlines(bytes);
                        if bytes.is_empty() {
                            break;
                        }
                        // The usual case: a whole head in one read, parsed where it lies.
                        let whole = find_head_end(bytes).filter(|&e| e <= self.max_head + 4);
                        if let Some(end) = whole {
                            let facts = read_head(&bytes[..end]);
                            self.heads += 1;
                            ambiguous |= facts.ambiguous;
                            self.state = facts.next;
                            bytes = &bytes[end..];
                            continue;
                        }
                    }
                    let searched_from = buf.len().saturating_sub(2);
                    let room = (self.max_head + 4).saturating_sub(buf.len());
                    let take = bytes.len().min(room);
                    buf.extend_from_slice(&bytes[..take]);
                    match find_head_end(&buf[searched_from..]).map(|e| e + searched_from) {
                        Some(end) => {
                            let consumed_from_input = end - (buf.len() - take);
                            let facts = read_head(&buf[..end]);
                            self.heads += 1;
                            ambiguous |= facts.ambiguous;
                            self.state = facts.next;
                            bytes = &bytes[consumed_from_input..];
                        }
                        None if take < bytes.len() || buf.len() > self.max_head => {
                            self.state = State::Lost;
                            return ambiguous;
                        }
                        None => bytes = &[],
                    }
                }
                State::Fixed(n) => {
                    let take = (*n).min(bytes.len() as u64);
                    *n -= take;
                    bytes = &bytes[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => match bytes.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        line.extend_from_slice(&bytes[..nl]);
                        bytes = &bytes[nl + 1..];
                        let text = String::from_utf8_lossy(line);
                        let size = text.split(';').next().unwrap_or("").trim();
                        self.state = match u64::from_str_radix(size, 16) {
                            Ok(0) => State::Trailers(Vec::new()),
                            Ok(n) => State::ChunkData(n),
                            Err(_) => State::Lost,
                        };
                    }
                    None => {
                        line.extend_from_slice(bytes);
                        bytes = &[];
                        if line.len() > MAX_LINE {
                            self.state = State::Lost;
                        }
                    }
                },
                State::ChunkData(n) => {
                    let take = (*n).min(bytes.len() as u64);
                    *n -= take;
                    bytes = &bytes[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkDataEnd(2);
                    }
                }
                State::ChunkDataEnd(left) => {
                    let take = (*left as usize).min(bytes.len());
                    *left -= take as u8;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => match bytes.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        line.extend_from_slice(&bytes[..nl]);
                        bytes = &bytes[nl + 1..];
                        let blank = line.iter().all(|&b| b == b'\r');
                        self.state = if blank {
                            State::Head(Vec::new())
                        } else {
                            State::Trailers(Vec::new())
                        };
                    }
                    None => {
                        line.extend_from_slice(bytes);
                        bytes = &[];
                        if line.len() > MAX_LINE {
                            self.state = State::Lost;
                        }
                    }
                },
            }
        }
        ambiguous
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
    /// Gap: an HTTP/2 connection with no request being handled and no bytes either way.
    H2Idle,
}

impl Watch {
    fn of(phase: Phase) -> Self {
        match phase {
            Phase::FirstByte => Watch::FirstByte,
            Phase::Head => Watch::Head,
            Phase::Body => Watch::Body,
            Phase::H2Preface => Watch::H2Preface,
            Phase::H2 => Watch::H2Idle,
            // hyper's own keep-alive timer bounds the wait for the next HTTP/1 request.
            Phase::BetweenRequests | Phase::Lost => Watch::Nothing,
        }
    }

    fn is_gap(self) -> bool {
        matches!(self, Watch::Body | Watch::H2Idle)
    }

    fn limit(self, limits: &ConnLimits) -> Option<Duration> {
        match self {
            Watch::Nothing => None,
            Watch::FirstByte => Some(limits.first_byte),
            Watch::Head => Some(limits.header_read),
            Watch::H2Preface => Some(limits.h2_preface),
            Watch::Body => Some(limits.body_read),
            Watch::H2Idle => Some(limits.idle),
        }
    }

    fn close_reason(self) -> Option<ConnectionClose> {
        match self {
            Watch::Nothing => None,
            Watch::FirstByte => Some(ConnectionClose::FirstByteTimeout),
            Watch::Head => Some(ConnectionClose::HeaderTimeout),
            Watch::H2Preface => Some(ConnectionClose::H2PrefaceTimeout),
            Watch::Body => Some(ConnectionClose::BodyTimeout),
            Watch::H2Idle => Some(ConnectionClose::IdleTimeout),
        }
    }
}

/// The client connection, with its framing followed and a deadline on whatever phase it is in.
///
/// One timer per connection, moved only when the phase changes: a keep-alive connection whose
/// requests arrive whole in single reads never touches it after its first request, and a body
/// or an HTTP/2 connection only notes progress in a flag, looked at when the timer fires.
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
        let heads_before = self.tracker.heads;
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
        let next_head = wanted == Watch::Head && self.tracker.heads != heads_before;
        if wanted != self.watching || next_head {
            self.watch(wanted, cx);
        } else {
            self.progressed = true;
        }
    }

    /// A gap deadline passed: moves it on if anything happened meanwhile.
    fn gap_elapsed(&mut self, cx: &mut Context<'_>) -> bool {
        let busy = self.watching == Watch::H2Idle && self.flags.requests_in_progress() > 0;
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
        // A response streaming out keeps an HTTP/2 connection from counting as idle.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ambiguous_anywhere(input: &[u8], split_every: usize) -> bool {
        let mut t = FramingTracker::new(16 * 1024);
        input
            .chunks(split_every.max(1))
            .fold(false, |acc, c| t.feed(c) | acc)
    }

    #[test]
    fn cl_plus_te_is_ambiguous_in_any_order_and_any_split() {
        let a = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let b = b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n";
        for split in [1, 3, 7, 1000] {
            assert!(ambiguous_anywhere(a, split));
            assert!(ambiguous_anywhere(b, split));
        }
        assert!(ambiguous_anywhere(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 5));
    }

    #[test]
    fn bodies_are_skipped_so_their_text_never_counts_as_a_head() {
        let body =
            b"x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut fixed = format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        fixed.extend_from_slice(body);
        fixed.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut chunked =
            b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked
            .extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        for split in [1, 2, 5, 64, 4096] {
            assert!(!ambiguous_anywhere(&fixed, split), "split {split}");
            assert!(!ambiguous_anywhere(&chunked, split), "split {split}");
        }
        // And the tracker is back at a head afterwards: a later smuggling attempt is seen.
        let mut then = chunked.clone();
        then.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(ambiguous_anywhere(&then, 3));
    }

    #[test]
    fn head_progress_is_reported() {
        let mut t = FramingTracker::new(1024);
        assert!(!t.head_in_progress());
        t.feed(b"GET / HT");
        assert!(t.head_in_progress());
        t.feed(b"TP/1.1\r\n\r\n");
        assert!(!t.head_in_progress());
    }

    #[test]
    fn heads_ending_in_bare_line_feeds_are_followed() {
        // hyper (httparse) ends a head at `\n\n` or `\r\n\n` too; the next head must be read
        // as one, or a smuggled request behind it goes unseen.
        let smuggled =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for first in [
            &b"GET / HTTP/1.1\nHost: a\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let mut both = first.to_vec();
            both.extend_from_slice(smuggled);
            for split in [1, 2, 3, 7, 4096] {
                assert!(ambiguous_anywhere(&both, split), "split {split}");
            }
            let mut t = FramingTracker::new(1024);
            assert!(!t.feed(first));
            assert_eq!(t.phase(), Phase::BetweenRequests);
        }
    }

    #[test]
    fn an_upgrade_or_connect_loses_track_and_says_so() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n",
        ] {
            let mut t = FramingTracker::new(1024);
            t.feed(head);
            assert_eq!(t.phase(), Phase::Lost, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn the_h2_preface_and_first_settings_are_followed_in_any_split() {
        let mut conn = H2_PREFACE.to_vec();
        // SETTINGS, 6 bytes of payload (one setting), stream 0.
        conn.extend_from_slice(&[0, 0, 6, H2_SETTINGS, 0, 0, 0, 0, 0]);
        conn.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        for split in [1, 5, 24, 30, 4096] {
            let mut t = FramingTracker::new(1024);
            assert_eq!(t.phase(), Phase::FirstByte);
            let chunks: Vec<&[u8]> = conn.chunks(split).collect();
            for (i, c) in chunks.iter().enumerate() {
                t.feed(c);
                let expected = if i + 1 == chunks.len() {
                    Phase::H2
                } else {
                    Phase::H2Preface
                };
                assert_eq!(t.phase(), expected, "split {split}, chunk {i}");
            }
        }
        // HTTP/1 methods sharing the preface's first letter are HTTP/1 from the start.
        let mut t = FramingTracker::new(1024);
        t.feed(b"PR");
        assert_eq!(t.phase(), Phase::H2Preface);
        t.feed(b"OPFIND / HTTP/1.1\r\nHost: a\r\n");
        assert_eq!(t.phase(), Phase::Head);
        t.feed(b"\r\n");
        assert_eq!(t.phase(), Phase::BetweenRequests);
        let mut t = FramingTracker::new(1024);
        t.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab");
        assert_eq!(t.phase(), Phase::Body);
    }
}
