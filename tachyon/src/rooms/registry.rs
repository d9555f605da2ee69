//! Who is in which room, in this process: the registry behind [`Rooms`](super::Rooms). It only
//! stores; it never sends, and nothing here awaits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::connection::ConnectionId;
use crate::sender::Sender;

/// Rooms by name, and the rooms of each connection.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    rooms: HashMap<Arc<str>, HashMap<ConnectionId, Sender>>,
    members: HashMap<ConnectionId, Member>,
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

impl Registry {
    pub(crate) fn join(&mut self, room: &str, sender: &Sender) -> Joined {
        let id = sender.id();
        let name: Arc<str> = match self.rooms.get_key_value(room) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(room),
        };
        let new_in_room = self
            .rooms
            .entry(Arc::clone(&name))
            .or_default()
            .insert(id, sender.clone())
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

    /// Takes `id` out of `room`; an empty room is freed. Returns whether it was there.
    pub(crate) fn leave(&mut self, room: &str, id: ConnectionId) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        if members.remove(&id).is_none() {
            return false;
        }
        if members.is_empty() {
            self.rooms.remove(room);
            shrink(&mut self.rooms);
        } else {
            shrink(members);
        }
        if let Some(member) = self.members.get_mut(&id) {
            member.rooms.retain(|name| &**name != room);
        }
        true
    }

    /// Takes `id` out of every room and forgets it. Returns the rooms it left.
    pub(crate) fn forget(&mut self, id: ConnectionId) -> Vec<Arc<str>> {
        let Some(member) = self.members.remove(&id) else {
            return Vec::new();
        };
        shrink(&mut self.members);
        for room in &member.rooms {
            if let Some(members) = self.rooms.get_mut(room) {
                members.remove(&id);
                if members.is_empty() {
                    self.rooms.remove(room);
                } else {
                    shrink(members);
                }
            }
        }
        shrink(&mut self.rooms);
        member.rooms
    }

    pub(crate) fn room(&self, room: &str) -> Option<&HashMap<ConnectionId, Sender>> {
        self.rooms.get(room)
    }

    pub(crate) fn rooms(
        &self,
    ) -> impl Iterator<Item = (&Arc<str>, &HashMap<ConnectionId, Sender>)> {
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
