//! The names of this node's keys and channels in Redis, and the node's identity.

use crate::connection::random_u64;

/// Key and channel names, and this node's identity.
#[derive(Debug)]
pub(super) struct Keys {
    /// This node (one `Rooms`): random, so two nodes in one process differ.
    pub(super) node: u64,
    /// `{prefix}:room:`, followed by the room's name: a room's channel.
    pub(super) room_channel: String,
    /// `{prefix}:process:`, followed by a process id: messages for one connection.
    pub(super) process_channel: String,
    /// `{prefix}:members:`, followed by `{node}:{room}`: a node's members of a room.
    pub(super) members: String,
    /// `{prefix}:nodes`: the live nodes, scored by when their heartbeat expires.
    pub(super) nodes: String,
    /// `{prefix}:history:`, followed by the room's name: the stream of a room's history.
    history: String,
    /// `{prefix}:history-meta:`, followed by the room's name: the epoch of that history, its
    /// newest offset, and the bytes it holds.
    history_meta: String,
    /// `{prefix}:history-index:`, followed by the room's name: the length and time of each
    /// message in that history, oldest first.
    history_index: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            node: random_u64(),
            room_channel: format!("{prefix}:room:"),
            process_channel: format!("{prefix}:process:"),
            members: format!("{prefix}:members:"),
            nodes: format!("{prefix}:nodes"),
            history: format!("{prefix}:history:"),
            history_meta: format!("{prefix}:history-meta:"),
            history_index: format!("{prefix}:history-index:"),
        }
    }

    pub(super) fn node_name(&self) -> String {
        format!("{:016x}", self.node)
    }

    pub(super) fn room(&self, room: &str) -> String {
        format!("{}{room}", self.room_channel)
    }

    pub(super) fn process(&self, process: u64) -> String {
        format!("{}{process:016x}", self.process_channel)
    }

    pub(super) fn history_of(&self, room: &str) -> String {
        format!("{}{room}", self.history)
    }

    pub(super) fn history_meta_of(&self, room: &str) -> String {
        format!("{}{room}", self.history_meta)
    }

    pub(super) fn history_index_of(&self, room: &str) -> String {
        format!("{}{room}", self.history_index)
    }

    pub(super) fn members_of(&self, room: &str) -> String {
        format!("{}{:016x}:{room}", self.members, self.node)
    }
}
