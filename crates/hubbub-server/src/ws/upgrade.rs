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
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::io::IoSlice;
use std::pin::Pin;
use tokio::io::AsyncWrite;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

pub use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
pub use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

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
    config: WebSocketConfig,
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
            config: WebSocketConfig::default(),
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

impl Upgrade {
    /// The socket's buffer sizes and the largest message and frame it reads.
    pub fn configure(
        mut self,
        read_buffer: usize,
        write_buffer: usize,
        max_message: usize,
    ) -> Self {
        self.config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(write_buffer)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        self
    }

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
            config,
        } = self;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let stream = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            callback(Socket {
                stream,
                unflushed: false,
            })
            .await;
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
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

/// A client's WebSocket, server side.
pub struct Socket {
    stream: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    /// The WebSocket layer may hold the start of a frame of its own (a pong).
    unflushed: bool,
}

impl Socket {
    /// The next message from the client (pings are answered by the WebSocket layer).
    pub async fn next(&mut self) -> Option<Result<WsMessage, WsError>> {
        let message = self.stream.next().await;
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
        self.stream.send(message).await
    }

    /// Writes whatever the WebSocket layer still holds (a pong, the answer to a close).
    pub async fn flush(&mut self) -> Result<(), WsError> {
        self.stream.flush().await
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
            self.stream.flush().await?;
            self.unflushed = false;
        }
        let mut chunks = frame_chunks(frames);
        let io = self.stream.get_mut();
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
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

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
}
