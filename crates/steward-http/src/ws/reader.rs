//! The inbound side of a WebSocket connection: frames decoded from the request payload with
//! actix-http's codec (RFC 6455 §5), fragmented messages aggregated up to `max_message`.
//!
//! It holds no buffer while the connection is idle: what a read brought is released once every
//! frame in it is decoded.

use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::StreamExt;
use steward_socket::socket::Inbound;
use tokio_util::codec::Decoder;

/// Reads one connection's frames as the socket's [`Inbound`] messages.
pub(super) struct Reader {
    payload: Payload,
    /// Bytes read and not decoded yet.
    buf: BytesMut,
    codec: Codec,
    /// The fragmented message being aggregated: whether it is text, and its bytes so far.
    partial: Option<(bool, BytesMut)>,
    max_message: usize,
    /// The payload ended or failed: what is left in `buf` is decoded, then nothing follows.
    ended: bool,
}

impl Reader {
    /// Frames over `max_frame` bytes are [`Inbound::TooBig`], and so are fragmented messages
    /// over `max_message` bytes.
    pub(super) fn new(payload: Payload, max_frame: usize, max_message: usize) -> Self {
        Self {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_frame),
            partial: None,
            max_message,
            ended: false,
        }
    }

    /// The next message, or `None` once the connection has ended or failed (without a Close
    /// frame, when none came before). A terminal message ([`Inbound::is_terminal`]) is the last
    /// one worth reading.
    pub(super) async fn next(&mut self) -> Option<Inbound> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    if self.buf.is_empty() {
                        // an idle connection keeps no read buffer
                        self.buf = BytesMut::new();
                    }
                    if let Some(inbound) = self.frame(frame) {
                        return Some(inbound);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(ProtocolError::Overflow) => return Some(Inbound::TooBig),
                Err(e) => return Some(Inbound::Protocol(e.to_string())),
            }
            if self.ended {
                return None;
            }
            match self.payload.next().await {
                Some(Ok(bytes)) => self.append(bytes),
                // the connection ended or failed (reset, broken pipe): it vanished
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    fn append(&mut self, bytes: Bytes) {
        if self.buf.is_empty() {
            self.buf = BytesMut::from(bytes);
        } else {
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// A decoded frame as a message; `None` while a fragmented message is incomplete.
    fn frame(&mut self, frame: Frame) -> Option<Inbound> {
        Some(match frame {
            Frame::Text(bytes) => text(bytes),
            Frame::Binary(bytes) => Inbound::Binary(bytes.len()),
            Frame::Ping(bytes) => Inbound::Ping(bytes.to_vec()),
            Frame::Pong(_) => Inbound::Pong,
            Frame::Close(reason) => Inbound::Close(reason.map(|r| u16::from(r.code))),
            // the codec checks the order of fragments (a first, continues, a last)
            Frame::Continuation(Item::FirstText(bytes)) => return self.start(true, &bytes),
            Frame::Continuation(Item::FirstBinary(bytes)) => return self.start(false, &bytes),
            Frame::Continuation(Item::Continue(bytes)) => return self.extend(&bytes),
            Frame::Continuation(Item::Last(bytes)) => {
                if let Some(too_big) = self.extend(&bytes) {
                    return Some(too_big);
                }
                let (is_text, all) = self.partial.take()?;
                if is_text { text(all.freeze()) } else { Inbound::Binary(all.len()) }
            }
        })
    }

    fn start(&mut self, is_text: bool, bytes: &[u8]) -> Option<Inbound> {
        self.partial = Some((is_text, BytesMut::new()));
        self.extend(bytes)
    }

    /// Adds a fragment; [`Inbound::TooBig`] once the message passes `max_message`.
    fn extend(&mut self, bytes: &[u8]) -> Option<Inbound> {
        let (_, all) = self.partial.as_mut()?;
        if all.len() + bytes.len() > self.max_message {
            self.partial = None;
            return Some(Inbound::TooBig);
        }
        all.extend_from_slice(bytes);
        None
    }
}

/// A text message; invalid UTF-8 is a protocol error (RFC 6455 §8.1).
fn text(bytes: Bytes) -> Inbound {
    match ByteString::try_from(bytes) {
        Ok(text) => Inbound::Text(text),
        Err(_) => Inbound::Protocol("a text message is not valid UTF-8".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use actix_http::ws::{CloseCode, CloseReason, Message};
    use tokio_util::codec::Encoder;

    use super::*;

    /// What a client sends: masked frames, as RFC 6455 §5.3 requires of it.
    fn client(messages: Vec<Message>) -> Payload {
        let mut codec = Codec::new().client_mode();
        let mut buf = BytesMut::new();
        for m in messages {
            codec.encode(m, &mut buf).unwrap();
        }
        Payload::from(buf.freeze())
    }

    async fn read_all(payload: Payload, max_frame: usize, max_message: usize) -> Vec<Inbound> {
        let mut reader = Reader::new(payload, max_frame, max_message);
        let mut seen = Vec::new();
        while let Some(inbound) = reader.next().await {
            let terminal = inbound.is_terminal();
            seen.push(inbound);
            if terminal {
                break;
            }
        }
        seen
    }

    #[actix_web::test]
    async fn frames_become_messages_and_fragments_are_aggregated() {
        let payload = client(vec![
            Message::Text("hello".into()),
            Message::Continuation(Item::FirstText(Bytes::from_static(b"he"))),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Continuation(Item::Continue(Bytes::from_static(b"ll"))),
            Message::Continuation(Item::Last(Bytes::from_static(b"o!"))),
            Message::Binary(Bytes::from_static(b"abc")),
            Message::Pong(Bytes::new()),
            Message::Close(Some(CloseReason { code: CloseCode::Normal, description: None })),
            Message::Text("after the close".into()),
        ]);
        let seen = read_all(payload, 1024, 1024).await;
        assert_eq!(
            seen,
            vec![
                Inbound::Text("hello".into()),
                Inbound::Ping(b"p".to_vec()),
                Inbound::Text("hello!".into()),
                Inbound::Binary(3),
                Inbound::Pong,
                Inbound::Close(Some(1000)),
            ]
        );
    }

    #[actix_web::test]
    async fn the_end_of_the_connection_is_none_after_what_was_read() {
        let seen = read_all(client(vec![Message::Text("last words".into())]), 64, 64).await;
        assert_eq!(seen, vec![Inbound::Text("last words".into())]);
    }

    #[actix_web::test]
    async fn a_frame_over_max_frame_or_a_message_over_max_message_is_too_big() {
        let frame = client(vec![Message::Text("x".repeat(65).into())]);
        assert_eq!(read_all(frame, 64, 1024).await, vec![Inbound::TooBig]);
        let fragments = (0..3)
            .map(|i| {
                let part = Bytes::from(vec![b'y'; 40]);
                Message::Continuation(match i {
                    0 => Item::FirstText(part),
                    1 => Item::Continue(part),
                    _ => Item::Last(part),
                })
            })
            .collect();
        assert_eq!(read_all(client(fragments), 64, 100).await, vec![Inbound::TooBig]);
    }

    #[actix_web::test]
    async fn malformed_input_is_a_protocol_error() {
        // invalid UTF-8 in a text frame (RFC 6455 §8.1)
        let mut codec = Codec::new().client_mode();
        let mut buf = BytesMut::new();
        codec.encode(Message::Binary(Bytes::from_static(&[0xff, 0xfe])), &mut buf).unwrap();
        buf[0] = (buf[0] & 0xf0) | 0x1; // the opcode of a text frame
        let seen = read_all(Payload::from(buf.freeze()), 64, 64).await;
        assert!(matches!(&seen[..], [Inbound::Protocol(_)]), "{seen:?}");
        // an unmasked frame from a client (RFC 6455 §5.1)
        let mut buf = BytesMut::new();
        Codec::new().encode(Message::Text("bare".into()), &mut buf).unwrap();
        let seen = read_all(Payload::from(buf.freeze()), 64, 64).await;
        assert!(matches!(&seen[..], [Inbound::Protocol(_)]), "{seen:?}");
        // a last fragment of a message that was never started
        let mut buf = BytesMut::new();
        codec.encode(Message::Text("z".into()), &mut buf).unwrap();
        buf[0] = 0x80; // FIN, the opcode of a continuation
        let seen = read_all(Payload::from(buf.freeze()), 64, 64).await;
        assert!(matches!(&seen[..], [Inbound::Protocol(_)]), "{seen:?}");
    }
}
