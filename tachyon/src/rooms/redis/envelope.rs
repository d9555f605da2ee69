//! What travels between nodes ([`Envelope`]), and its encoding.

use axum::body::Bytes;

use crate::connection::ConnectionId;
use crate::message::Message;
use crate::rooms::SlowMember;
use crate::rooms::history::Position;

/// What travels between nodes: who sent it, who is left out or targeted, the slow-member
/// policy, the position in the room's history of a recorded broadcast, and the message.
/// Encoded once per broadcast.
pub(super) struct Envelope {
    pub(super) origin: u64,
    pub(super) except: Option<ConnectionId>,
    pub(super) target: Option<ConnectionId>,
    pub(super) policy: SlowMember,
    pub(super) position: Option<Position>,
    pub(super) message: Message,
}

impl Envelope {
    const VERSION: u8 = 1;
    /// Recorded broadcasts carry a position, which nodes of version 1 cannot read: they skip
    /// these, and still read the rest.
    const VERSION_RECORDED: u8 = 2;
    const BINARY: u8 = 1;
    const EXCEPT: u8 = 2;
    const TARGET: u8 = 4;
    const DROP: u8 = 8;

    pub(super) fn encode(
        origin: u64,
        except: Option<ConnectionId>,
        target: Option<ConnectionId>,
        policy: SlowMember,
        position: Option<Position>,
        message: &Message,
    ) -> Vec<u8> {
        let (flags, payload): (u8, &[u8]) = match message {
            Message::Text(text) => (0, text.as_bytes()),
            Message::Binary(bytes) => (Self::BINARY, bytes),
        };
        let mut flags = flags;
        if except.is_some() {
            flags |= Self::EXCEPT;
        }
        if target.is_some() {
            flags |= Self::TARGET;
        }
        if policy == SlowMember::Drop {
            flags |= Self::DROP;
        }
        let mut out =
            Vec::with_capacity(Self::header_len(except, target, position) + payload.len());
        out.push(if position.is_some() {
            Self::VERSION_RECORDED
        } else {
            Self::VERSION
        });
        out.push(flags);
        out.extend_from_slice(&origin.to_be_bytes());
        for id in [except, target].into_iter().flatten() {
            out.extend_from_slice(&id.process().to_be_bytes());
            out.extend_from_slice(&id.as_u64().to_be_bytes());
        }
        if let Some(position) = position {
            // As text: Redis puts the real position in the place of the placeholder's.
            out.extend_from_slice(position.to_string().as_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// The bytes before the message.
    pub(super) fn header_len(
        except: Option<ConnectionId>,
        target: Option<ConnectionId>,
        position: Option<Position>,
    ) -> usize {
        let ids = usize::from(except.is_some()) + usize::from(target.is_some());
        10 + 16 * ids + position.map_or(0, |_| Position::TEXT_LEN)
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&[version, flags], rest) = bytes.split_first_chunk::<2>()?;
        if version != Self::VERSION && version != Self::VERSION_RECORDED {
            return None;
        }
        let (origin, mut rest) = rest.split_first_chunk::<8>()?;
        let mut id = |present: bool| -> Option<Option<ConnectionId>> {
            if !present {
                return Some(None);
            }
            let (process, after) = rest.split_first_chunk::<8>()?;
            let (number, after) = after.split_first_chunk::<8>()?;
            rest = after;
            Some(Some(ConnectionId::from_parts(
                u64::from_be_bytes(*process),
                u64::from_be_bytes(*number),
            )))
        };
        let except = id(flags & Self::EXCEPT != 0)?;
        let target = id(flags & Self::TARGET != 0)?;
        let position = if version == Self::VERSION_RECORDED {
            let (text, after) = rest.split_first_chunk::<{ Position::TEXT_LEN }>()?;
            rest = after;
            Some(std::str::from_utf8(text).ok()?.parse().ok()?)
        } else {
            None
        };
        let message = if flags & Self::BINARY != 0 {
            Message::Binary(Bytes::copy_from_slice(rest))
        } else {
            Message::Text(String::from_utf8(rest.to_vec()).ok()?.into())
        };
        Some(Self {
            origin: u64::from_be_bytes(*origin),
            except,
            target,
            policy: if flags & Self::DROP != 0 {
                SlowMember::Drop
            } else {
                SlowMember::Close
            },
            position,
            message,
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_what_was_written() {
        let except = ConnectionId::from_parts(7, 42);
        let target = ConnectionId::from_parts(u64::MAX, u64::MAX);
        let position = Some(Position::new(u64::MAX, 3));
        let cases = [
            (
                Some(except),
                None,
                SlowMember::Drop,
                None,
                Message::from("héllo"),
            ),
            (
                None,
                Some(target),
                SlowMember::Close,
                None,
                Message::from(vec![0, 1, 255]),
            ),
            (None, None, SlowMember::Close, None, Message::from("")),
            (
                Some(except),
                None,
                SlowMember::Close,
                position,
                Message::from("at"),
            ),
        ];
        for (except, target, policy, position, message) in cases {
            let bytes = Envelope::encode(9, except, target, policy, position, &message);
            assert_eq!(
                bytes.len(),
                Envelope::header_len(except, target, position) + message.len()
            );
            let envelope = Envelope::decode(&bytes).expect("decodes");
            assert_eq!(envelope.origin, 9);
            assert_eq!(envelope.except, except);
            assert_eq!(envelope.target, target);
            assert_eq!(envelope.policy, policy);
            assert_eq!(envelope.position, position);
            assert_eq!(envelope.message, message);
        }
    }

    #[test]
    fn a_foreign_or_cut_envelope_is_refused() {
        let bytes = Envelope::encode(
            1,
            Some(ConnectionId::from_parts(1, 1)),
            None,
            SlowMember::Close,
            Some(Position::new(1, 2)),
            &Message::from("x"),
        );
        for end in 0..bytes.len() - 1 {
            assert!(Envelope::decode(&bytes[..end]).is_none(), "cut at {end}");
        }
        assert!(Envelope::decode(b"hello").is_none());
        let mut invalid_text =
            Envelope::encode(1, None, None, SlowMember::Close, None, &Message::from("x"));
        invalid_text.push(0xff);
        assert!(Envelope::decode(&invalid_text).is_none());
    }
}
