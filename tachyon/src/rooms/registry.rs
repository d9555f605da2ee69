//! Who is in which room, in this process: the registry behind [`Rooms`](super::Rooms). It only
//! stores; it never sends, and nothing here awaits.
//!
//! The gauges `tachyon_rooms` and `tachyon_room_members` are kept here, where a seat is taken
//! or given up (and when the registry itself goes, with its rooms), so that every way in or out
//! of a room counts, and they return to 0 when everyone has left.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use crate::connection::ConnectionId;
use crate::message::Message;
use crate::metrics;
use crate::rooms::history::Position;
use crate::sender::Sender;

/// Rooms by name (each member with its sender and the data it joined with), and the rooms of
/// each connection.
#[derive(Debug)]
pub(crate) struct Registry<M> {
    rooms: HashMap<Arc<str>, HashMap<ConnectionId, Seat<M>>>,
    members: HashMap<ConnectionId, Member>,
}

impl<M> Default for Registry<M> {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            members: HashMap::new(),
        }
    }
}

/// A member's place in one room: how to reach it, and the data it joined with.
#[derive(Debug)]
pub(crate) struct Seat<M> {
    pub(crate) sender: Sender,
    pub(crate) data: M,
    /// How far a member that resumed through a backend has got in the room's history: set
    /// only for those (an in-process room orders its deliveries under its log's lock instead).
    pub(crate) cursor: Option<Arc<Mutex<Cursor>>>,
}

/// Where a member that resumed through a backend stands in the room's history. While its
/// missed messages are read, live ones wait in `waiting`; once the replay is queued, live ones
/// go out only if they are past `last`, so that none comes twice.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    /// The newest position this member has been given.
    pub(crate) last: Option<Position>,
    /// Live messages held back while the replay is read: `Some` until it is queued.
    pub(crate) waiting: Option<Vec<(Position, Message)>>,
}

/// The most live messages a member catching up holds back; past that, it is closed as too
/// slow (it can resume again).
const MOST_WAITING: usize = 4096;

/// What [`Cursor::hold`] did.
pub(crate) enum Hold {
    /// Held back until the replay is queued.
    Held,
    /// Too much is held back already: the member must be closed (it did not get this one).
    Full,
    /// The member is live: offer the message if [`Cursor::admits`] it.
    Live,
}

impl Cursor {
    /// A cursor that holds live messages back.
    pub(crate) fn holding() -> Self {
        Self {
            last: None,
            waiting: Some(Vec::new()),
        }
    }

    /// Stops holding back, having given nothing: every live message goes through.
    pub(crate) fn release(&mut self) {
        self.waiting = None;
    }

    /// Holds `message` back if the member is catching up.
    pub(crate) fn hold(&mut self, position: Position, message: &Message) -> Hold {
        let Some(waiting) = &mut self.waiting else {
            return Hold::Live;
        };
        if waiting.len() >= MOST_WAITING {
            return Hold::Full;
        }
        waiting.push((position, message.clone()));
        Hold::Held
    }

    /// Whether the message at `position` is new to this member; if so, it is now the last.
    /// A position of another epoch is new: the history was lost and began again.
    pub(crate) fn admits(&mut self, position: Position) -> bool {
        let seen = self.last.is_some_and(|last| {
            last.epoch() == position.epoch() && position.offset() <= last.offset()
        });
        if !seen {
            self.last = Some(position);
        }
        !seen
    }
}

#[derive(Debug)]
struct Member {
    sender: Sender,
    rooms: Vec<Arc<str>>,
}

/// What a join changed.
pub(crate) struct Joined {
    /// The room's name, shared with the registry.
    pub(crate) room: Arc<str>,
    /// The connection was not in the room before.
    pub(crate) new_in_room: bool,
    /// The connection was in no room of this registry before: it needs its end hook.
    pub(crate) new_member: bool,
}

impl<M> Registry<M> {
    /// Puts `sender` in `room` with `data` and `cursor` (replacing only the data if it was in
    /// already).
    pub(crate) fn join(
        &mut self,
        room: &str,
        sender: &Sender,
        data: M,
        cursor: Option<Arc<Mutex<Cursor>>>,
    ) -> Joined {
        let id = sender.id();
        let name: Arc<str> = match self.rooms.get_key_value(room) {
            Some((name, _)) => Arc::clone(name),
            None => {
                metrics::room_opened();
                Arc::from(room)
            }
        };
        let new_in_room = match self.rooms.entry(Arc::clone(&name)).or_default().entry(id) {
            Entry::Occupied(mut seat) => {
                seat.get_mut().data = data;
                false
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Seat {
                    sender: sender.clone(),
                    data,
                    cursor,
                });
                metrics::member_joined(1);
                true
            }
        };
        let new_member = match self.members.entry(id) {
            Entry::Occupied(mut member) => {
                if new_in_room {
                    member.get_mut().rooms.push(Arc::clone(&name));
                }
                false
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Member {
                    sender: sender.clone(),
                    rooms: vec![Arc::clone(&name)],
                });
                true
            }
        };
        Joined {
            room: name,
            new_in_room,
            new_member,
        }
    }

    /// Takes `id` out of `room`; an empty room is freed. Returns its data if it was there.
    pub(crate) fn leave(&mut self, room: &str, id: ConnectionId) -> Option<M> {
        let members = self.rooms.get_mut(room)?;
        let seat = members.remove(&id)?;
        metrics::member_left(1);
        if members.is_empty() {
            self.rooms.remove(room);
            metrics::room_closed();
            shrink(&mut self.rooms);
        } else {
            shrink(members);
        }
        if let Some(member) = self.members.get_mut(&id) {
            member.rooms.retain(|name| &**name != room);
        }
        Some(seat.data)
    }

    /// Takes `id` out of every room and forgets it. Returns the rooms it left, each with the
    /// data it had joined with.
    pub(crate) fn forget(&mut self, id: ConnectionId) -> Vec<(Arc<str>, M)> {
        let Some(member) = self.members.remove(&id) else {
            return Vec::new();
        };
        shrink(&mut self.members);
        let mut left = Vec::with_capacity(member.rooms.len());
        for room in member.rooms {
            if let Some(members) = self.rooms.get_mut(&room) {
                let seat = members.remove(&id);
                if members.is_empty() {
                    self.rooms.remove(&room);
                    metrics::room_closed();
                } else {
                    shrink(members);
                }
                if let Some(seat) = seat {
                    left.push((room, seat.data));
                }
            }
        }
        shrink(&mut self.rooms);
        if !left.is_empty() {
            metrics::member_left(left.len());
        }
        left
    }

    pub(crate) fn room(&self, room: &str) -> Option<&HashMap<ConnectionId, Seat<M>>> {
        self.rooms.get(room)
    }

    pub(crate) fn rooms(
        &self,
    ) -> impl Iterator<Item = (&Arc<str>, &HashMap<ConnectionId, Seat<M>>)> {
        self.rooms.iter()
    }

    pub(crate) fn sender(&self, id: ConnectionId) -> Option<&Sender> {
        self.members.get(&id).map(|member| &member.sender)
    }

    pub(crate) fn rooms_of(&self, id: ConnectionId) -> &[Arc<str>] {
        self.members
            .get(&id)
            .map_or(&[][..], |member| &member.rooms[..])
    }
}

/// Rooms dropped with members still in them (every `Rooms` handle is gone; the end hooks of
/// their connections then find nothing): they leave the gauges too.
#[cfg(feature = "metrics")]
impl<M> Drop for Registry<M> {
    fn drop(&mut self) {
        let seats = self.rooms.values().map(HashMap::len).sum();
        if seats > 0 {
            metrics::member_left(seats);
        }
        for _ in 0..self.rooms.len() {
            metrics::room_closed();
        }
    }
}

/// Gives memory back once a map has emptied out, so a room that held thousands returns to
/// nothing when they leave.
fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 32 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}
