//! The task that hands what other nodes publish to this node's members.

use std::sync::{Arc, Weak};

use redis::{PushInfo, Value};
use tokio::sync::mpsc;

use crate::rooms::cluster::Local;

use super::envelope::Envelope;
use super::keys::Keys;

/// Hands what other nodes publish to this node's members, until the link and its connections
/// are gone. A task of its own, so a slow round trip of the link never holds it up.
pub(super) async fn hand_out(
    mut received: mpsc::Receiver<PushInfo>,
    rooms: Weak<dyn Local>,
    keys: Arc<Keys>,
) {
    let mut warned = false;
    while let Some(info) = received.recv().await {
        let [Value::BulkString(channel), Value::BulkString(payload)] = &info.data[..] else {
            continue;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            // A foreign publisher, or a node of another version: say it once, not per message.
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(
                    channel = %String::from_utf8_lossy(channel),
                    "ignored a message on a rooms channel that this version of Tachyon did not write (said once)"
                );
            }
            continue;
        };
        if envelope.origin == keys.node && envelope.position.is_none() {
            // This node delivered its own broadcast when it was made. A recorded one it did
            // not: every node delivers those as they come back, in Redis's order.
            continue;
        }
        let Some(rooms) = rooms.upgrade() else {
            return;
        };
        let room = channel
            .strip_prefix(keys.room_channel.as_bytes())
            .and_then(|room| std::str::from_utf8(room).ok());
        match (room, envelope.target, envelope.position) {
            (Some(room), _, Some(position)) => {
                let message = &envelope.message;
                rooms.deliver_recorded(room, envelope.except, envelope.policy, position, message);
            }
            (Some(room), _, None) => {
                rooms.deliver(room, envelope.except, envelope.policy, &envelope.message);
            }
            (None, Some(target), _) => {
                rooms.deliver_to(target, envelope.policy, &envelope.message);
            }
            (None, None, _) => {}
        }
    }
}
