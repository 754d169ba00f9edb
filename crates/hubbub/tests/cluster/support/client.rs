//! A WebSocket client of one node, with the waits the scenarios need: the next JSON frame, the
//! next message's data (and sequence id), the close frame, the socket's end.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

pub struct Client {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Client {
    /// The next JSON frame within 5 s (None when the socket ended or nothing came).
    pub async fn next_json(&mut self) -> Option<Value> {
        self.next_json_within(Duration::from_secs(5)).await
    }

    pub async fn next_json_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match frame {
                Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// True when the service closes the socket within 5 s (after any system message).
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The close frame the service sends, skipping other frames; panics when the socket ends
    /// without one or no frame comes within 5 s.
    pub async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// The data and sequence id of the next `message` (reliable protocol), skipping the rest.
    pub async fn next_sequenced(&mut self) -> Option<(String, u64)> {
        loop {
            let frame = self.next_json().await?;
            if frame["type"] == "message" {
                return Some((
                    frame["data"].as_str().unwrap_or_default().to_string(),
                    frame["sequenceId"].as_u64().expect("a sequence id"),
                ));
            }
        }
    }

    /// The data of the next `message`, skipping acks.
    pub async fn next_data(&mut self) -> Option<String> {
        loop {
            let frame = self.next_json().await?;
            if frame["type"] == "message" {
                return Some(frame["data"].as_str().unwrap_or_default().to_string());
            }
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("client sends");
    }
}
