//! The WebSocket framing both ends of the load tool write by hand (RFC 6455): frame headers,
//! client masking, and reading an HTTP head.

use std::io;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The size of a pushed frame's payload, like a Rocket.Chat chat message event.
pub const FRAME_LEN: usize = 412;
/// Frames the flooding upstream writes per `write` call.
pub const FLOOD_BATCH: usize = 16;
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;
/// Marks the send time (µs since the epoch, 16 digits) inside a pushed frame.
pub const STAMP_KEY: &[u8] = b"\"bench_us\":\"";

/// One WebSocket frame's header: server frames unmasked, client frames masked (RFC 6455).
pub fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = Vec::with_capacity(payload.len() + 14);
    frame_header(&mut out, opcode, payload.len(), Some(mask));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    frame_header(&mut out, opcode, payload.len(), None);
    out.extend_from_slice(payload);
    out
}

/// A complete frame at the start of `buf`: (opcode, payload range, total length). Unmasks a
/// masked payload in place.
pub fn parse_frame(buf: &mut [u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < at + len {
        return None;
    }
    if let Some(m) = mask {
        for (i, b) in buf[at..at + len].iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Some((opcode, at..at + len, at + len))
}

/// Reads until the end of an HTTP head; returns the head and whatever followed it.
pub async fn read_head(stream: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in the head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
    }
}
