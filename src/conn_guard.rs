//! A guard around each client connection that reads the HTTP/1 framing as it arrives, for what
//! hyper does not report: a request carrying both `Content-Length` and `Transfer-Encoding`
//! (hyper silently drops the length, RFC 9112 section 6.1), and a head that trickles in
//! (cut off `header_read_timeout` after its first byte, while hyper's own timer only bounds the
//! idle wait for the next request).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What the guard learned about a connection, shared with the request handler.
#[derive(Debug, Default)]
pub struct ConnFlags {
    ambiguous_framing: AtomicBool,
}

impl ConnFlags {
    pub fn ambiguous_framing(&self) -> bool {
        self.ambiguous_framing.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    /// Not HTTP/1 framing we follow (h2, an upgrade, or a head hyper will reject itself).
    Off,
}

/// Follows request framing across a keep-alive connection, one byte slice at a time.
#[derive(Debug)]
pub struct FramingTracker {
    state: State,
    max_head: usize,
}

/// What one complete request head says about framing.
struct HeadFacts {
    ambiguous: bool,
    next: State,
}

const MAX_LINE: usize = 4096;

fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|p| p + 4)
}

fn read_head(head: &[u8]) -> HeadFacts {
    // Uninitialised: zeroing 128 slots per request showed in profiles.
    let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); 128];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return HeadFacts {
                ambiguous: false,
                next: State::Off,
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
        State::Off
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
        State::Off
    };
    HeadFacts { ambiguous, next }
}

impl FramingTracker {
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head(Vec::new()),
            max_head,
        }
    }

    /// True while part, but not all, of a request head has arrived.
    pub fn head_in_progress(&self) -> bool {
        matches!(&self.state, State::Head(buf) if !buf.is_empty())
    }

    /// Feeds bytes read from the client; returns true when a request head is ambiguous.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut ambiguous = false;
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return ambiguous,
                State::Head(buf) => {
                    // The usual case: a whole head in one read, parsed where it lies.
                    if buf.is_empty() {
                        let whole = find_head_end(bytes).filter(|&e| e <= self.max_head + 4);
                        if let Some(end) = whole {
                            let facts = read_head(&bytes[..end]);
                            ambiguous |= facts.ambiguous;
                            self.state = facts.next;
                            bytes = &bytes[end..];
                            continue;
                        }
                    }
                    let searched_from = buf.len().saturating_sub(3);
                    let room = (self.max_head + 4).saturating_sub(buf.len());
                    let take = bytes.len().min(room);
                    buf.extend_from_slice(&bytes[..take]);
                    match find_head_end(&buf[searched_from..]).map(|e| e + searched_from) {
                        Some(end) => {
                            let consumed_from_input = end - (buf.len() - take);
                            let facts = read_head(&buf[..end]);
                            ambiguous |= facts.ambiguous;
                            self.state = facts.next;
                            bytes = &bytes[consumed_from_input..];
                        }
                        None if take < bytes.len() || buf.len() > self.max_head => {
                            self.state = State::Off;
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
                            Err(_) => State::Off,
                        };
                    }
                    None => {
                        line.extend_from_slice(bytes);
                        bytes = &[];
                        if line.len() > MAX_LINE {
                            self.state = State::Off;
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
                            self.state = State::Off;
                        }
                    }
                },
            }
        }
        ambiguous
    }
}

/// The client connection, with its framing followed and its head-read deadline enforced.
pub struct GuardedIo<T> {
    inner: T,
    tracker: FramingTracker,
    flags: Arc<ConnFlags>,
    header_read_timeout: Duration,
    head_deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> GuardedIo<T> {
    pub fn new(inner: T, max_head: usize, header_read_timeout: Duration) -> (Self, Arc<ConnFlags>) {
        let flags = Arc::new(ConnFlags::default());
        let io = Self {
            inner,
            tracker: FramingTracker::new(max_head),
            flags: flags.clone(),
            header_read_timeout,
            head_deadline: None,
        };
        (io, flags)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.head_deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received in time",
                )));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                if this.tracker.feed(new) {
                    this.flags.ambiguous_framing.store(true, Ordering::Release);
                }
                if this.tracker.head_in_progress() {
                    if this.head_deadline.is_none() {
                        let mut sleep = Box::pin(tokio::time::sleep(this.header_read_timeout));
                        // Register the timer with this task so a stalled head wakes us.
                        let _ = sleep.as_mut().poll(cx);
                        this.head_deadline = Some(sleep);
                    }
                } else {
                    this.head_deadline = None;
                }
            }
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
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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
}
