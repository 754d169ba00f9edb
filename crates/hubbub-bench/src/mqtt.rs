//! MQTT 5 subscribers (over WebSocket, subprotocol `mqtt`) and an MQTT publisher (over TCP), with
//! packets encoded and decoded by `mqtt5-protocol`. A WebSocket message may carry one or more
//! whole packets (Hubbub sends one per message, Mosquitto may batch) or, in principle, part of
//! one, so received bytes go through a [`Framer`].

use crate::scenarios::Client;
use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::puback::PubAckPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::subscribe::SubscribePacket;
use mqtt5_protocol::packet::MqttPacket;
use mqtt5_protocol::types::ConnectOptions;
use mqtt5_protocol::{FixedHeader, Packet, QoS, ReasonCode};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The protocol version the generator speaks.
const VERSION: u8 = 5;

/// Keep alive asked for: longer than any run, so no PINGREQ is needed (Hubbub caps it at 180).
const KEEP_ALIVE: Duration = Duration::from_secs(180);

pub fn qos(level: u8) -> QoS {
    if level >= 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    }
}

fn encode(packet: &impl MqttPacket) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(64);
    packet
        .encode(&mut buf)
        .expect("the generator's packets encode");
    buf.to_vec()
}

/// CONNECT, MQTT 5, clean start.
pub fn connect(client_id: &str) -> Vec<u8> {
    encode(&ConnectPacket::new(
        ConnectOptions::new(client_id).with_keep_alive(KEEP_ALIVE),
    ))
}

pub fn subscribe(packet_id: u16, topic: &str, level: u8) -> Vec<u8> {
    encode(&SubscribePacket::new(packet_id).add_filter(topic, qos(level)))
}

pub fn puback(packet_id: u16) -> Vec<u8> {
    encode(&PubAckPacket::new(packet_id))
}

/// A QoS 0 PUBLISH.
pub fn publish(topic: &str, payload: &str) -> Vec<u8> {
    encode(&PublishPacket::new(
        topic,
        payload.as_bytes().to_vec(),
        QoS::AtMostOnce,
    ))
}

/// PINGREQ: two bytes.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// Cuts a byte stream into packets.
#[derive(Default)]
pub struct Framer {
    buf: BytesMut,
}

impl Framer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, if the bytes hold one.
    pub fn next_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        // The fixed header is 2 to 5 bytes; a remaining length still cut short is not an error.
        let mut peek = &self.buf[..];
        let header = match FixedHeader::decode(&mut peek) {
            Ok(header) => header,
            Err(_) if self.buf.len() < 5 && self.buf[1..].iter().all(|b| b & 0x80 != 0) => {
                return Ok(None);
            }
            Err(e) => bail!("a malformed packet: {e}"),
        };
        let header_len = self.buf.len() - peek.len();
        let total = header_len + header.remaining_length as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut packet = self.buf.split_to(total);
        packet.advance(header_len);
        let packet = Packet::decode_from_body_with_version(
            header.packet_type,
            &header,
            &mut packet,
            VERSION,
        )
        .map_err(|e| anyhow::anyhow!("a malformed packet: {e}"))?;
        Ok(Some(packet))
    }
}

/// The next packet from `client`, reading WebSocket messages into `framer` as needed.
pub async fn read_packet(client: &mut Client, framer: &mut Framer) -> anyhow::Result<Packet> {
    loop {
        if let Some(packet) = framer.next_packet()? {
            return Ok(packet);
        }
        match client
            .next()
            .await
            .context("the server closed the connection")??
        {
            Message::Binary(data) => framer.push(&data),
            Message::Close(_) => bail!("the server closed the connection"),
            _ => {}
        }
    }
}

/// What a subscriber does after the WebSocket handshake: CONNECT, await CONNACK, SUBSCRIBE to
/// `topic` at `level`, await SUBACK (the subscription is in place). Nothing is published before
/// every subscriber is in, so no other packet can follow the SUBACK in its message.
pub async fn handshake(
    client: &mut Client,
    client_id: &str,
    topic: &str,
    level: u8,
) -> anyhow::Result<()> {
    let mut framer = Framer::default();
    client
        .send(Message::Binary(connect(client_id).into()))
        .await?;
    match read_packet(client, &mut framer).await? {
        Packet::ConnAck(ack) if ack.reason_code == ReasonCode::Success => {}
        Packet::ConnAck(ack) => bail!("CONNACK {:?}", ack.reason_code),
        other => bail!("expected CONNACK, got {other:?}"),
    }
    client
        .send(Message::Binary(subscribe(1, topic, level).into()))
        .await?;
    match read_packet(client, &mut framer).await? {
        Packet::SubAck(ack) => {
            let granted = ack.reason_codes.first().map_or(0x80, |c| *c as u8);
            if granted >= 0x80 {
                bail!("SUBACK refused: 0x{granted:02X}");
            }
        }
        other => bail!("expected SUBACK, got {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_batched_and_split_packets() {
        let mut bytes = Vec::new();
        bytes.extend(publish("g", "first"));
        bytes.extend(publish("g", "second"));
        let mut framer = Framer::default();
        framer.push(&bytes[..3]);
        assert!(framer.next_packet().unwrap().is_none());
        framer.push(&bytes[3..]);
        let Some(Packet::Publish(first)) = framer.next_packet().unwrap() else {
            panic!("a PUBLISH")
        };
        assert_eq!(&first.payload[..], b"first");
        let Some(Packet::Publish(second)) = framer.next_packet().unwrap() else {
            panic!("a PUBLISH")
        };
        assert_eq!(&second.payload[..], b"second");
        assert!(framer.next_packet().unwrap().is_none());
    }

    #[test]
    fn a_header_cut_inside_the_length_waits() {
        let packet = publish("g", &"x".repeat(300));
        let mut framer = Framer::default();
        framer.push(&packet[..2]);
        assert!(framer.next_packet().unwrap().is_none());
        framer.push(&packet[2..]);
        assert!(matches!(
            framer.next_packet().unwrap(),
            Some(Packet::Publish(_))
        ));
    }
}
