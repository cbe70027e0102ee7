//! One socket's relay: frames both ways between the client and the upstream, the session
//! check that closes a revoked socket, and the buffers each side holds.
//!
//! Upstream frames that are already read are written to the client together and flushed once
//! (nginx writes what one read brought with one `writev`; one `sendto` per frame was about half
//! of authgate's CPU per frame). Frames that cannot need a rewrite pass unparsed, as they came.

use futures_util::{FutureExt, SinkExt, StreamExt};
use std::net::IpAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::{
    frame::coding::CloseCode, CloseFrame, WebSocketConfig,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::dependencies::Realtime;
use super::frames::{self, ClientText, Framing};
use super::rewrite::{self, SocketState, ToClient};
use crate::session::Token;

/// Upstream frames written to the client before one flush, at most: enough to cover what a
/// few reads bring in, few enough that a socket's other duties (client frames, the session
/// check) wait at most one batch.
const MAX_BATCH: usize = 64;

/// The read buffer of each side, which is also the most one read takes in (a larger frame
/// grows the buffer, in reads of this size). tungstenite's default (128 KiB, zero-filled on the
/// first read) made an idle socket cost 266 KiB with both sides. Clients send little and
/// seldom; the upstream side carries the chat traffic, where 2 KiB (about five room events a
/// read) kept the CPU per frame within noise of 4 KiB and an idle socket under 16 KiB
/// (bench/NOTES.md, realtime section).
const CLIENT_READ_BUFFER: usize = 1024;
const UPSTREAM_READ_BUFFER: usize = 2 * 1024;
/// Frames fed to a side are written to the socket once this much is waiting (and at the end
/// of each batch).
const WRITE_BUFFER: usize = 16 * 1024;

pub(super) fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

pub(super) fn upstream_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(UPSTREAM_READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

type Received = Option<Result<Message, WsError>>;

/// Both sockets and what the relay knows; `false` from a method ends the relay. The sockets are
/// not split into halves: one task reads and writes both, and a split half takes a lock on
/// every read and write.
struct Relay<'a, C, U> {
    rt: &'a Realtime,
    framing: Framing,
    ip: IpAddr,
    state: SocketState,
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
}

pub(super) async fn pump<C, U>(
    rt: &Realtime,
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    framing: Framing,
    ip: IpAddr,
    bound: Option<(Token, String)>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut relay = Relay {
        rt,
        framing,
        ip,
        state: SocketState::new(bound),
        client,
        upstream,
    };
    let mut check = tokio::time::interval(rt.revocation_check);
    loop {
        // The branches' futures are dropped before a handler runs, so handlers use both sockets.
        let go_on = tokio::select! {
            msg = relay.client.next() => relay.relay_client_frame(msg).await,
            msg = relay.upstream.next() => relay.relay_upstream_batch(msg).await,
            _ = check.tick(), if relay.state.bound.is_some() => relay.session_still_live().await,
        };
        if !go_on {
            break;
        }
    }
    let _ = relay.client.close(None).await;
    let _ = relay.upstream.close(None).await;
}

impl<C, U> Relay<'_, C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    async fn relay_client_frame(&mut self, msg: Received) -> bool {
        match msg {
            Some(Ok(Message::Text(text))) => match frames::read_client_text(self.framing, &text) {
                // Not DDP: nothing authgate can vouch for reaches the upstream.
                ClientText::Invalid => false,
                ClientText::PassAsIs => self.upstream.send(Message::Text(text)).await.is_ok(),
                // Boxed: a login's future is large, and only method calls need it.
                ClientText::Messages(messages) => Box::pin(self.route(messages)).await,
            },
            Some(Ok(Message::Ping(p))) => {
                let _ = self.upstream.send(Message::Ping(p)).await;
                true
            }
            Some(Ok(Message::Pong(p))) => {
                let _ = self.upstream.send(Message::Pong(p)).await;
                true
            }
            Some(Ok(Message::Close(frame))) => {
                let _ = self.upstream.send(Message::Close(frame)).await;
                false
            }
            // Binary frames are not DDP.
            Some(Ok(_)) | Some(Err(_)) | None => false,
        }
    }

    async fn route(&mut self, messages: Vec<serde_json::Value>) -> bool {
        let routed =
            rewrite::route_client_messages(self.rt, &mut self.state, messages, self.ip).await;
        if !routed.to_client.is_empty() {
            for out in frames::encode_to_client(self.framing, &routed.to_client) {
                if self.client.send(Message::text(out)).await.is_err() {
                    return false;
                }
            }
        }
        if routed.to_upstream.is_empty() {
            return true;
        }
        let out = frames::encode_to_upstream(self.framing, &routed.to_upstream);
        self.upstream.send(Message::text(out)).await.is_ok()
    }

    /// Relays `first` and whatever else the upstream side has already read, then flushes once.
    async fn relay_upstream_batch(&mut self, first: Received) -> bool {
        let mut next = first;
        for _ in 0..MAX_BATCH {
            if !self.relay_upstream_frame(next).await {
                return false;
            }
            match self.upstream.next().now_or_never() {
                Some(msg) => next = msg,
                None => break,
            }
        }
        self.client.flush().await.is_ok()
    }

    /// Queues one upstream frame for the client (written at the batch's flush).
    async fn relay_upstream_frame(&mut self, msg: Received) -> bool {
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let _ = self.client.send(Message::Close(frame)).await;
                return false;
            }
            Some(Ok(other)) => return self.client.feed(other).await.is_ok(),
            Some(Err(_)) | None => return false,
        };
        if !frames::upstream_may_need_rewrite(&text) {
            return self.client.feed(Message::Text(text)).await.is_ok();
        }
        let (to_client, resend) = Box::pin(rewrite::rewrite_upstream_text(
            self.rt,
            &mut self.state,
            self.framing,
            &text,
        ))
        .await;
        for frame in resend {
            let out = frames::encode_to_upstream(self.framing, &[frame]);
            if self.upstream.send(Message::text(out)).await.is_err() {
                return false;
            }
        }
        match to_client {
            ToClient::Unchanged => self.client.feed(Message::Text(text)).await.is_ok(),
            ToClient::Rewritten(out) => self.client.feed(Message::text(out)).await.is_ok(),
            ToClient::Nothing => true,
        }
    }

    /// The socket's session, checked every `realtime.revocation_check`: revoked anywhere, the
    /// socket is closed.
    async fn session_still_live(&mut self) -> bool {
        let Some((token, user_id)) = &self.state.bound else {
            return true;
        };
        if let Ok(None) = self.rt.store.get(user_id, &token.hash()).await {
            let close = CloseFrame {
                code: CloseCode::Library(4001),
                reason: "You've been logged out by the server.".into(),
            };
            let _ = self.client.send(Message::Close(Some(close))).await;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::upgrade::Upgraded;
    use hyper_util::rt::TokioIo;

    type Io = TokioIo<Upgraded>;

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            &'static Realtime,
            WebSocketStream<Io>,
            WebSocketStream<Io>,
            Framing,
            IpAddr,
            Option<(Token, String)>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// An idle socket's memory is mostly its task: a login's or a rewrite's state machine
    /// inlined into `pump` would sit in every socket's task (2 KiB in a debug build today).
    #[test]
    fn a_sockets_task_stays_small() {
        let size = future_size(pump::<Io, Io>);
        assert!(size < 4096, "the relay's future is {size} bytes");
    }
}
