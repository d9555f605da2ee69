//! Who is in which room, in this process: the registry behind [`Rooms`](super::Rooms). It only
//! stores; it never sends, and nothing here awaits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::connection::ConnectionId;
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
    /// Puts `sender` in `room` with `data` (replacing the data if it was in already).
    pub(crate) fn join(&mut self, room: &str, sender: &Sender, data: M) -> Joined {
        let id = sender.id();
        let name: Arc<str> = match self.rooms.get_key_value(room) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(room),
        };
        let seat = Seat {
            sender: sender.clone(),
            data,
        };
        let new_in_room = self
            .rooms
            .entry(Arc::clone(&name))
            .or_default()
            .insert(id, seat)
            .is_none();
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
        if members.is_empty() {
            self.rooms.remove(room);
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
                } else {
                    shrink(members);
                }
                if let Some(seat) = seat {
                    left.push((room, seat.data));
                }
            }
        }
        shrink(&mut self.rooms);
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

/// Gives memory back once a map has emptied out, so a room that held thousands returns to
/// nothing when they leave.
fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 32 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}
