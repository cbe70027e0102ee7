//! Follows HTTP/1 request framing across a keep-alive connection as the bytes arrive, the way
//! hyper reads it (heads ended by CRLF or bare LF, leading empty lines skipped, fixed-length and
//! chunked bodies), and tells HTTP/2's preface and first SETTINGS apart: what `conn_guard` needs
//! to spot a request framed two ways, one it cannot follow, and the phase a connection is in.

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

    /// Request heads read so far.
    pub fn heads(&self) -> u64 {
        self.heads
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
