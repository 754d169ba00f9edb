//! The WebSocket upgrade (RFC 6455 over HTTP/1.1) and the socket it yields. Hubbub does the
//! upgrade itself rather than through the web framework's extractor so that the socket task can
//! reach the TCP stream under the WebSocket layer: data frames are framed by Hubbub and written
//! many at a time (see [`Socket::write_frames`]), while reading, control frames and the closing
//! handshake stay with tungstenite.

use crate::protocols::OutFrame;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

pub use tungstenite::protocol::CloseFrame as WsCloseFrame;
pub use tungstenite::{Error as WsError, Message as WsMessage};

/// A frame's payload up to this size is copied into the write's one buffer; a larger one is
/// written from where it is (shared by every connection it goes to) as its own slice of a
/// vectored write.
const COPY_AT_MOST: usize = 1024;
/// Slices handed to the kernel in one vectored write.
const SLICES_PER_WRITE: usize = 64;

/// A request to upgrade to a WebSocket, not yet answered. The handler decides (authentication,
/// the `connect` event) and then answers with [`on_upgrade`](Self::on_upgrade).
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    protocol: Option<HeaderValue>,
}

/// Not a WebSocket upgrade request (wrong method, version or headers).
#[derive(Debug)]
pub struct NotAnUpgrade;

impl axum::response::IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        super::not_an_upgrade().into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        if parts.method != Method::GET
            || parts.version != Version::HTTP_11
            || !header_has_token(headers, header::CONNECTION, "upgrade")
            || !header_has_token(headers, header::UPGRADE, "websocket")
            || !header_has_token(headers, header::SEC_WEBSOCKET_VERSION, "13")
        {
            return Err(NotAnUpgrade);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(NotAnUpgrade)?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(NotAnUpgrade)?;
        Ok(Self {
            key,
            on_upgrade,
            protocol: None,
        })
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Every client socket's buffer sizes and the largest message and frame it reads.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(super::READ_BUFFER_BYTES)
        .write_buffer_size(super::WRITE_BUFFER_BYTES)
        .max_message_size(Some(super::HARD_MESSAGE_LIMIT_BYTES))
        .max_frame_size(Some(super::HARD_MESSAGE_LIMIT_BYTES))
}

impl Upgrade {
    /// The subprotocol the `101` names.
    pub fn set_selected_protocol(&mut self, protocol: HeaderValue) {
        self.protocol = Some(protocol);
    }

    /// Answers `101 Switching Protocols`; once the client has it, `callback` gets the socket.
    pub fn on_upgrade<C, F>(self, callback: C) -> Response
    where
        C: FnOnce(Socket) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Upgrade {
            key,
            on_upgrade,
            protocol,
        } = self;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            callback(Socket::new(TokioIo::new(upgraded), socket_config())).await;
        });
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

/// A client's WebSocket, server side: the stream under it and tungstenite's state for it.
/// `S` is the upgraded connection (any stream in tests).
pub struct Socket<S = TokioIo<hyper::upgrade::Upgraded>> {
    io: S,
    ws: WebSocketContext,
    /// The stream ended or failed: reads answer `None` from now on.
    ended: bool,
    /// The WebSocket layer may hold the start of a frame of its own (a pong).
    unflushed: bool,
}

/// The socket's stream as the blocking `Read` and `Write` tungstenite works on, for the length
/// of one poll: "would block" is the stream's `Pending`, with the task's waker registered.
/// Made on each call rather than kept, so the socket holds no wakers of its own.
struct Polled<'a, 'b, S> {
    io: &'a mut S,
    cx: &'a mut Context<'b>,
}

impl<S: AsyncRead + Unpin> Read for Polled<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncWrite + Unpin> Write for Polled<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(written) => written,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(flushed) => flushed,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// A tungstenite result, with "would block" turned back into `Pending`.
fn polled<T>(result: Result<T, WsError>) -> Poll<Result<T, WsError>> {
    match result {
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// A socket on an upgraded stream (the handshake is done).
    pub fn new(io: S, config: WebSocketConfig) -> Self {
        Self {
            io,
            ws: WebSocketContext::new(Role::Server, Some(config)),
            ended: false,
            unflushed: false,
        }
    }

    /// Runs `step` on tungstenite's state with the stream as it is in this poll.
    fn poll_step<T>(
        &mut self,
        cx: &mut Context<'_>,
        step: impl FnOnce(&mut WebSocketContext, &mut Polled<'_, '_, S>) -> Result<T, WsError>,
    ) -> Poll<Result<T, WsError>> {
        let mut io = Polled {
            io: &mut self.io,
            cx,
        };
        polled(step(&mut self.ws, &mut io))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WsMessage, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        Poll::Ready(match ready!(self.poll_step(cx, |ws, io| ws.read(io))) {
            Ok(message) => Some(Ok(message)),
            Err(e) => {
                self.ended = true;
                match e {
                    WsError::AlreadyClosed | WsError::ConnectionClosed => None,
                    e => Some(Err(e)),
                }
            }
        })
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(match ready!(self.poll_step(cx, |ws, io| ws.flush(io))) {
            // The closing handshake just completed: nothing is left to write.
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }

    /// The next message from the client (pings are answered by the WebSocket layer).
    pub async fn next(&mut self) -> Option<Result<WsMessage, WsError>> {
        let message = std::future::poll_fn(|cx| self.poll_next(cx)).await;
        // The WebSocket layer answers a ping (and a close), and may write part of its answer now
        // and the rest later; after an error, assume it left something too.
        self.unflushed |= matches!(
            message,
            Some(Ok(WsMessage::Ping(_) | WsMessage::Close(_)) | Err(_))
        );
        message
    }

    /// Sends one message through the WebSocket layer (control frames, the close frame).
    pub async fn send(&mut self, message: WsMessage) -> Result<(), WsError> {
        let mut message = Some(message);
        std::future::poll_fn(|cx| {
            if let Some(message) = message.take() {
                // "Would block" here means queued in the WebSocket layer, to be flushed below.
                if let Poll::Ready(Err(e)) = self.poll_step(cx, |ws, io| ws.write(io, message)) {
                    return Poll::Ready(Err(e));
                }
            }
            self.poll_flush(cx)
        })
        .await
    }

    /// Writes whatever the WebSocket layer still holds (a pong, the answer to a close).
    pub async fn flush(&mut self) -> Result<(), WsError> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Writes the text and binary messages of `frames` as WebSocket frames framed here: the
    /// headers and small payloads go into one buffer, larger payloads are written from the
    /// message itself (shared by every connection it goes to), all with vectored writes (one
    /// system call for the common batch). Other kinds of message are not queued as data.
    pub async fn write_frames(&mut self, frames: &[OutFrame]) -> Result<(), WsError> {
        if frames.is_empty() {
            return Ok(());
        }
        // A frame the WebSocket layer began (a pong) must be complete before ours start.
        if self.unflushed {
            self.flush().await?;
            self.unflushed = false;
        }
        let mut chunks = frame_chunks(frames);
        let io = &mut self.io;
        let mut first = 0;
        while first < chunks.len() {
            // The slices are made on each poll, not kept in the future: an idle connection's
            // task is as large as its largest await, and this one would be 1 KiB.
            let mut written = std::future::poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
                let count = (chunks.len() - first).min(SLICES_PER_WRITE);
                for (slice, chunk) in slices.iter_mut().zip(&chunks[first..first + count]) {
                    *slice = IoSlice::new(chunk);
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if written == 0 {
                return Err(WsError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            while written > 0 {
                let chunk = &mut chunks[first];
                if written >= chunk.len() {
                    written -= chunk.len();
                    first += 1;
                } else {
                    chunk.advance(written);
                    written = 0;
                }
            }
        }
        Ok(())
    }
}

/// The bytes of `frames` on the wire, as few chunks as the copy limit allows.
fn frame_chunks(frames: &[OutFrame]) -> Vec<Bytes> {
    // Room for what is copied (a large payload's own end may make the buffer grow once).
    let copied: usize = frames
        .iter()
        .map(|frame| MAX_HEADER_BYTES + frame.payload_len().min(COPY_AT_MOST))
        .sum();
    let mut run = BytesMut::with_capacity(copied);
    let mut chunks = Vec::new();
    for frame in frames {
        let Some((binary, shared, tail)) = frame.parts() else {
            continue;
        };
        put_header(&mut run, binary, shared.len() + tail.as_bytes().len());
        if shared.len() <= COPY_AT_MOST {
            run.put_slice(shared);
        } else {
            chunks.push(run.split().freeze());
            chunks.push(frame.shared_bytes());
        }
        run.put_slice(tail.as_bytes());
    }
    if !run.is_empty() {
        chunks.push(run.freeze());
    }
    chunks
}

/// The longest header of an unmasked frame: 2 bytes and a 64-bit length.
const MAX_HEADER_BYTES: usize = 10;

/// An unmasked, final frame's header (RFC 6455 section 5.2).
fn put_header(out: &mut BytesMut, binary: bool, len: usize) {
    out.put_u8(if binary { 0x82 } else { 0x81 });
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Message;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::FrameHeader;

    fn frame(binary: bool, len: usize) -> OutFrame {
        OutFrame::Whole(if binary {
            Message::Binary((0..len).map(|i| i as u8).collect::<Vec<_>>().into())
        } else {
            let text: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
            Message::Text(text.into())
        })
    }

    fn sequenced(open_len: usize, sequence_id: u64) -> OutFrame {
        OutFrame::JsonSequenced {
            open: format!(r#"{{"data":"{}""#, "y".repeat(open_len - 10)).into(),
            sequence_id,
        }
    }

    /// Parses the frames in `wire` with the WebSocket library's own frame parser.
    fn parse(mut wire: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let mut cursor = std::io::Cursor::new(wire);
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            let start = cursor.position() as usize;
            let end = start + len as usize;
            assert!(header.is_final && header.mask.is_none(), "{header:?}");
            out.push((
                header.opcode == OpCode::Data(Data::Binary),
                wire[start..end].to_vec(),
            ));
            wire = &wire[end..];
        }
        out
    }

    fn whole(frame: &OutFrame) -> (bool, Vec<u8>) {
        match frame.to_message() {
            Message::Text(text) => (false, text.as_bytes().to_vec()),
            Message::Binary(data) => (true, data.to_vec()),
            other => panic!("not data: {other:?}"),
        }
    }

    #[test]
    fn frames_of_every_length_class_parse_back_in_order() {
        let frames = [
            frame(false, 0),
            frame(true, 125),
            sequenced(64, 7),
            frame(false, 126),
            frame(true, COPY_AT_MOST),
            frame(true, COPY_AT_MOST + 1),
            sequenced(COPY_AT_MOST + 100, u64::MAX),
            frame(false, 70_000),
            frame(true, 3),
            OutFrame::Whole(Message::Ping(Bytes::new())),
        ];
        let chunks = frame_chunks(&frames);
        assert_eq!(
            chunks.len(),
            7,
            "runs split around the three large payloads"
        );
        assert!(
            chunks[1].as_ptr() == frames[5].parts().unwrap().1.as_ptr(),
            "a large payload is written from the shared frame, not copied"
        );
        let wire: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let parsed = parse(&wire);
        let expected: Vec<_> = frames[..9].iter().map(whole).collect();
        assert_eq!(parsed, expected, "the ping is not a data frame");
        let sequenced = String::from_utf8(parsed[2].1.clone()).unwrap();
        let data = "y".repeat(54);
        assert_eq!(sequenced, format!(r#"{{"data":"{data}","sequenceId":7}}"#));
    }

    #[test]
    fn small_frames_make_one_chunk() {
        let frames: Vec<_> = (0..100).map(|i| frame(i % 2 == 0, 64)).collect();
        let chunks = frame_chunks(&frames);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), 100 * 66);
    }

    /// A server socket and a client (tungstenite's own, masking its frames) joined by an
    /// in-memory stream.
    fn pair() -> (
        Socket<tokio::io::DuplexStream>,
        tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None);
        let client = futures_util::FutureExt::now_or_never(client).unwrap();
        (Socket::new(server, WebSocketConfig::default()), client)
    }

    fn close(code: u16, reason: &'static str) -> WsMessage {
        WsMessage::Close(Some(WsCloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    }

    #[tokio::test]
    async fn reads_messages_and_answers_pings() {
        use futures_util::{SinkExt, StreamExt};
        let (mut server, mut client) = pair();
        client.send(WsMessage::text("hello")).await.unwrap();
        client
            .send(WsMessage::Ping(Bytes::from_static(b"p1")))
            .await
            .unwrap();
        client.send(WsMessage::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            WsMessage::text("hello")
        );
        assert!(matches!(server.next().await, Some(Ok(WsMessage::Ping(p))) if &p[..] == b"p1"));
        assert!(server.unflushed, "a pong may be owed");
        // The pong goes out before the next data frames.
        server
            .write_frames(&[OutFrame::Whole(Message::Text("after".into()))])
            .await
            .unwrap();
        assert!(matches!(client.next().await, Some(Ok(WsMessage::Pong(p))) if &p[..] == b"p1"));
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            WsMessage::text("after")
        );
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            WsMessage::binary(vec![1, 2, 3])
        );
        server.send(WsMessage::Ping(Bytes::new())).await.unwrap();
        // The client answers the server's ping as it reads on.
        let reading = tokio::spawn(async move {
            let mut heard = Vec::new();
            while let Some(Ok(message)) = client.next().await {
                heard.push(message);
            }
            heard
        });
        assert!(matches!(server.next().await, Some(Ok(WsMessage::Pong(_)))));
        drop(server);
        let heard = reading.await.unwrap();
        assert_eq!(heard, [WsMessage::Ping(Bytes::new())]);
    }

    #[tokio::test]
    async fn a_close_from_the_client_is_answered_and_ends_the_stream() {
        use futures_util::{SinkExt, StreamExt};
        let (mut server, mut client) = pair();
        client.send(close(1000, "bye")).await.unwrap();
        assert!(
            matches!(server.next().await, Some(Ok(WsMessage::Close(Some(f)))) if f.reason == "bye")
        );
        server.flush().await.unwrap();
        assert!(matches!(client.next().await, Some(Ok(WsMessage::Close(_)))));
        assert!(server.next().await.is_none());
        assert!(server.next().await.is_none(), "stays ended");
    }

    #[tokio::test]
    async fn a_close_from_the_server_is_sent_and_the_reply_ends_the_stream() {
        use futures_util::StreamExt;
        let (mut server, mut client) = pair();
        server.send(close(1008, "SlowClient")).await.unwrap();
        assert!(
            matches!(client.next().await, Some(Ok(WsMessage::Close(Some(f)))) if f.reason == "SlowClient")
        );
        // The client's reply (sent by its WebSocket layer) completes the handshake.
        futures_util::SinkExt::flush(&mut client).await.unwrap();
        assert!(matches!(server.next().await, Some(Ok(WsMessage::Close(_)))));
        assert!(server.next().await.is_none());
    }

    #[tokio::test]
    async fn a_broken_stream_is_an_error_then_the_end() {
        let (mut server, client) = pair();
        let mut raw = client.into_inner();
        // An unmasked frame from a client is a protocol error.
        tokio::io::AsyncWriteExt::write_all(&mut raw, &[0x81, 0x02, b'h', b'i'])
            .await
            .unwrap();
        assert!(matches!(server.next().await, Some(Err(_))));
        assert!(server.next().await.is_none());
    }
}
