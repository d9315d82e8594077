//! The sans-IO gossip core: scuttlebutt anti-entropy plus phi-accrual failure detection.
//!
//! [`Gossip`] owns the replicated state and decides what to send; it never touches a socket or
//! a clock. Every entry point takes `now`, and every random choice comes from a generator
//! seeded by [`Config::rng_seed`], so a simulation repeats exactly.
//!
//! # Protocol
//!
//! Each round (`tick`) bumps this node's heartbeat once and sends a `Syn` with a digest to
//! `fanout` random live peers and to one dead or unconfirmed peer with probability
//! `dead / (live + 1)` (so partitions heal); while no peer is alive, to `fanout` dead or
//! unconfirmed peers and every seed. The receiver answers with a `SynAck`: the deltas the
//! initiator lacks plus a digest of what it wants (entries where the initiator is ahead) and what
//! it has news about. The initiator closes with an `Ack` carrying the requested deltas. Digests
//! carry heartbeats, so liveness spreads even when deltas do not fit.
//!
//! A peer far behind gets more than one datagram of deltas per exchange: when the `SynAck` or
//! the `Ack` is full and the peer lacks more, continuation `Ack`s follow, each taking up where
//! the previous one ended, up to `max_delta_datagrams` in all.
//!
//! # What peers hear of this node
//!
//! A `Syn` lists its target right after the sender, and a `SynAck` lists the initiator, so every
//! digest a peer sends this node directly says which heartbeat and version of this node the
//! peer holds. The latest such [`Reading`] per peer tells a peer that is merely behind from one
//! that hears nothing of this node while its own datagrams still arrive ([`Gossip::hears_me`]).
//!
//! # Identity and resurrection
//!
//! A node is `(name, generation)`. A newer generation of a name replaces the older one and its
//! keys everywhere, and nothing about an older generation is accepted afterwards. A node never
//! accepts digest entries or deltas about its own name from peers, so a restarted node cannot
//! be handed its previous life's keys. Forgotten nodes are remembered as "name up to
//! generation", so stale gossip cannot bring them back.
//!
//! # Liveness
//!
//! A node counts as alive once it has shown two heartbeats (the first sighting and one
//! increase) since it was learned or declared dead; a single (possibly stale) heartbeat is not
//! enough. It is declared dead when phi exceeds `phi_threshold`, which clears its heartbeat
//! history. A `Leave` marks it left at once; the mark also travels in digests.
//!
//! # Deletion
//!
//! A delete writes a versioned tombstone. Each holder collects tombstones `tombstone_grace`
//! after it first saw them and raises its collection floor (`last_gc_version`). A peer whose
//! copy ends below that floor, and whose own floor is lower, may have missed collected
//! tombstones: it gets a reset delta, drops its copy and rebuilds it from version 0.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::config::Config;
use crate::crypto::{ReplayWindow, SEAL_OVERHEAD};
use crate::detector::{PhiDetector, Tolerance};
use crate::types::{ClusterView, Event, Liveness, NodeId, NodeView, Outgoing, Reading, SetError, Stats};
use crate::wire::{self, Digest, DigestEntry, Envelope, KeyUpdate, Message, NodeDelta, WireError};

/// Bytes reserved for the envelope's sequence number (a varint of at most 9 bytes) and the
/// message tag.
const ENVELOPE_FIXED_OVERHEAD: usize = 10;

/// Below this many free bytes no further node delta is attempted.
const MIN_USEFUL_DELTA_ROOM: usize = 24;

/// How many rounds a node stays in the priority list after news about it. Push-pull with
/// fanout 3 reaches 1000 nodes in about five rounds, so ten rounds leave room for loss.
const PRIORITY_ROUNDS: u32 = 10;

/// The longest the priority list may grow; older mentions fall off first.
const MAX_PRIORITY: usize = 64;

/// How much later than the typical node the last ones hold a heartbeat, as a factor of the
/// push-pull spread's rounds (see `Gossip::tolerated_lag`). Measured in the simulation with 5 %
/// loss and 30 ms of jitter: readings lag by at most 2 rounds at 5 nodes, 3 at 20, 5 at 100
/// nodes with 100 ms rounds and 4 with 1 s rounds, where the detector's silence alone is only
/// about 2 rounds; one and a half times the spread keeps those a round or more below the limit.
const SPREAD_TAIL: f64 = 1.5;

/// The state of a node as the detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Learned about, but not yet shown two heartbeats.
    Pending,
    /// Heartbeats arrive.
    Alive,
    /// Declared dead by the detector (or superseded).
    Dead,
    /// Announced its departure.
    Left,
}

/// One versioned key of a node.
#[derive(Debug, Clone)]
struct Entry {
    /// `None` is a tombstone.
    value: Option<Vec<u8>>,
    /// The owner's version of the write.
    version: u64,
}

/// Everything known about one node (this node included).
#[derive(Debug)]
struct NodeRecord {
    id: NodeId,
    heartbeat: u64,
    /// Every version up to this one is held (gap-free).
    max_version: u64,
    /// Tombstones up to this version were collected here.
    last_gc_version: u64,
    keys: BTreeMap<String, Entry>,
    /// Index from version to key, for deltas in version order.
    by_version: BTreeMap<u64, String>,
    /// Tombstone versions and when they were first seen here (`None` until the next tick for
    /// local deletes, which have no clock).
    tombstones: BTreeMap<u64, Option<Instant>>,
    status: Status,
    /// When `status` last changed; dead, left and pending nodes are forgotten relative to it.
    status_since: Instant,
    detector: PhiDetector,
    /// Heartbeat sightings since the node was learned or declared dead.
    sightings: u32,
    /// What this peer last reported, in a digest it sent this node directly, about this node.
    /// It belongs to this generation of the peer, so a new generation starts without one.
    reading: Option<Reading>,
    /// The last judgment of [`Gossip::hears_me`] published in the view; a change bumps the
    /// view version, so subscribers learn of it without polling.
    hears_me: Option<bool>,
    /// The last judgment of [`Gossip::holds_all_mine`] published in the view, likewise.
    holds_all_mine: Option<bool>,
}

impl NodeRecord {
    fn new(id: NodeId, status: Status, now: Instant) -> NodeRecord {
        NodeRecord {
            id,
            heartbeat: 0,
            max_version: 0,
            last_gc_version: 0,
            keys: BTreeMap::new(),
            by_version: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            status,
            status_since: now,
            detector: PhiDetector::default(),
            sightings: 0,
            reading: None,
            hears_me: None,
            holds_all_mine: None,
        }
    }

    fn digest_entry(&self) -> DigestEntry {
        DigestEntry {
            node: self.id.clone(),
            heartbeat: self.heartbeat,
            max_version: self.max_version,
            last_gc_version: self.last_gc_version,
            left: self.status == Status::Left,
        }
    }

    fn live_keys(&self) -> BTreeMap<String, Vec<u8>> {
        self.keys.iter().filter_map(|(key, entry)| Some((key.clone(), entry.value.clone()?))).collect()
    }

    /// Stores one write and returns the new live value if the visible value changed.
    fn write(
        &mut self,
        key: String,
        value: Option<Vec<u8>>,
        version: u64,
        seen_at: Option<Instant>,
    ) -> Option<Option<Vec<u8>>> {
        let old_value = match self.keys.get(&key) {
            Some(old) => {
                self.by_version.remove(&old.version);
                self.tombstones.remove(&old.version);
                old.value.as_ref()
            }
            None => None,
        };
        let changed = old_value != value.as_ref();
        if value.is_none() {
            self.tombstones.insert(version, seen_at);
        }
        self.by_version.insert(version, key.clone());
        self.max_version = self.max_version.max(version);
        let event = changed.then(|| value.clone());
        self.keys.insert(key, Entry { value, version });
        event
    }

    /// Drops all keys (a reset) and returns the keys that were live.
    fn wipe(&mut self) -> Vec<String> {
        let live =
            self.keys.iter().filter(|(_, entry)| entry.value.is_some()).map(|(key, _)| key.clone()).collect();
        self.keys.clear();
        self.by_version.clear();
        self.tombstones.clear();
        self.max_version = 0;
        live
    }

    fn set_status(&mut self, status: Status, now: Instant) {
        self.status = status;
        self.status_since = now;
        if status == Status::Left {
            // A departed peer reads nothing of this node any more.
            self.reading = None;
        }
    }
}

/// What a peer said it knows about one node, taken from its digest.
#[derive(Debug, Clone, Copy)]
struct PeerKnows {
    generation: u64,
    max_version: u64,
    last_gc_version: u64,
}

/// One node's part of an outgoing delta, before it is cut to size.
struct Candidate<'a> {
    record: &'a NodeRecord,
    /// The peer has nothing of this node (or an older generation).
    unknown: bool,
    reset: bool,
    from_version: u64,
}

/// The sans-IO gossip core. See the module documentation for the protocol.
#[derive(Debug)]
pub struct Gossip {
    config: Config,
    id: NodeId,
    /// Every known node by name, this node included.
    nodes: BTreeMap<String, NodeRecord>,
    /// Forgotten names and the newest generation forgotten for each.
    forgotten: BTreeMap<String, u64>,
    /// Anti-replay state per sender name: the newest generation seen and its window.
    replay: BTreeMap<String, (u64, ReplayWindow)>,
    rng: StdRng,
    /// The last sequence number used.
    sequence: u64,
    /// The name after which the next rotating digest page starts.
    digest_cursor: String,
    /// Names worth mentioning first in digests, oldest first, with when they were added: nodes
    /// whose state changed here recently (so the change spreads like a rumour) and nodes a
    /// peer holds newer versions of (so the next exchange pulls them).
    priority: VecDeque<(Instant, String)>,
    /// How many digest entries fit into one `Syn`, estimated from this node's own entry.
    entries_per_digest: usize,
    events: Vec<Event>,
    stats: Stats,
    view_version: u64,
    left: bool,
    /// When the core was created.
    started_at: Instant,
    /// The datagram header, also the associated data when sealing.
    header: Vec<u8>,
    /// Bytes available for the message fields inside one datagram.
    message_room: usize,
}

impl Gossip {
    /// A node with no peers yet; it joins through `config.seeds` on its first tick.
    pub fn new(config: Config, now: Instant) -> Gossip {
        let id = NodeId {
            name: config.node_name.clone(),
            generation: config.generation,
            gossip_addr: config.gossip_addr,
        };
        let header = wire::header(&config.cluster_id, config.keys.is_some());
        let seal = if config.keys.is_some() { SEAL_OVERHEAD } else { 0 };
        let message_room = config
            .datagram_budget
            .saturating_sub(header.len() + seal + wire::encoded_len(&id) + ENVELOPE_FIXED_OVERHEAD);
        let own = NodeRecord::new(id.clone(), Status::Alive, now);
        let entries_per_digest = (message_room / (wire::encoded_len(&own.digest_entry()) + 8)).max(1);
        let mut nodes = BTreeMap::new();
        nodes.insert(id.name.clone(), own);
        Gossip {
            rng: StdRng::seed_from_u64(config.rng_seed),
            config,
            id,
            nodes,
            forgotten: BTreeMap::new(),
            replay: BTreeMap::new(),
            sequence: 0,
            digest_cursor: String::new(),
            priority: VecDeque::new(),
            entries_per_digest,
            events: Vec::new(),
            stats: Stats::default(),
            view_version: 0,
            left: false,
            started_at: now,
            header,
            message_room,
        }
    }

    /// This node's identity.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The configuration this core runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The largest value `key` can hold so that one write still fits into one datagram.
    ///
    /// # Errors
    ///
    /// [`SetError::KeyTooLarge`] if the key alone leaves no room.
    pub fn max_value_len(&self, key: &str) -> Result<usize, SetError> {
        let delta = NodeDelta {
            node: self.id.clone(),
            reset: true,
            last_gc_version: u64::MAX,
            from_version: u64::MAX,
            up_to: u64::MAX,
            updates: Vec::new(),
        };
        // The Ack is the smallest message that carries a delta: its vector prefix, the node
        // delta with a count prefix that may grow, and the update with the widest version and
        // value-length prefixes.
        let fixed = 3 + wire::encoded_len(&delta) + 2 + update_len(key, Some(0), u64::MAX) + 8;
        self.message_room
            .checked_sub(fixed)
            .filter(|&max| max > 0)
            .ok_or(SetError::KeyTooLarge { len: key.len() })
    }

    /// Sets one of this node's keys; a write of the current value is a no-op.
    ///
    /// # Errors
    ///
    /// [`SetError::ValueTooLarge`] or [`SetError::KeyTooLarge`] if the write could not travel
    /// in one datagram.
    pub fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), SetError> {
        let max = self.max_value_len(key)?;
        if value.len() > max {
            return Err(SetError::ValueTooLarge { len: value.len(), max });
        }
        let own = self.own_record_mut();
        if own.keys.get(key).and_then(|entry| entry.value.as_ref()) == Some(&value) {
            return Ok(());
        }
        let version = own.max_version + 1;
        let change = own.write(key.to_owned(), Some(value), version, None);
        if let Some(value) = change {
            self.push_event(Event::KeyChanged { node: self.id.clone(), key: key.to_owned(), value });
        }
        Ok(())
    }

    /// Deletes one of this node's keys (a versioned tombstone); deleting a missing key is a
    /// no-op.
    pub fn delete(&mut self, key: &str) {
        let own = self.own_record_mut();
        if own.keys.get(key).is_none_or(|entry| entry.value.is_none()) {
            return;
        }
        let version = own.max_version + 1;
        // The tombstone's collection clock starts at the next tick, which knows the time.
        if own.write(key.to_owned(), None, version, None).is_some() {
            self.push_event(Event::KeyChanged { node: self.id.clone(), key: key.to_owned(), value: None });
        }
    }

    /// One round: a heartbeat, failure detection, garbage collection, and `Syn`s to the chosen
    /// peers.
    pub fn tick(&mut self, now: Instant) -> Vec<Outgoing> {
        if self.left {
            return Vec::new();
        }
        self.own_record_mut().heartbeat += 1;
        self.expire_priority(now);
        self.detect_failures(now);
        self.judge_hearing(now);
        self.collect_tombstones(now);
        self.forget_departed(now);
        self.send_syns()
    }

    /// Refreshes each peer's published [`Gossip::hears_me`] and [`Gossip::holds_all_mine`]
    /// judgments once a round. A judgment changes with time alone (a reading grows stale, a lag
    /// outgrows the tolerance) or with this node's own writes, so it is re-judged here rather
    /// than only when a reading arrives.
    fn judge_hearing(&mut self, now: Instant) {
        let judgments: Vec<(String, Option<bool>, Option<bool>)> = self
            .others()
            .filter(|record| {
                record.reading.is_some() || record.hears_me.is_some() || record.holds_all_mine.is_some()
            })
            .map(|record| {
                let name = &record.id.name;
                (name.clone(), self.hears_me(name, now), self.holds_all_mine(name, now))
            })
            .collect();
        for (name, hears_me, holds_all_mine) in judgments {
            if let Some(record) = self.nodes.get_mut(&name)
                && (record.hears_me, record.holds_all_mine) != (hears_me, holds_all_mine)
            {
                record.hears_me = hears_me;
                record.holds_all_mine = holds_all_mine;
                self.view_version += 1;
            }
        }
    }

    /// Sends a round of `Syn`s at once, without a heartbeat, so a fresh change spreads without
    /// waiting for the next tick. It also starts the collection clock of fresh local deletes.
    pub fn gossip_now(&mut self, now: Instant) -> Vec<Outgoing> {
        if self.left {
            return Vec::new();
        }
        for seen_at in self.own_record_mut().tombstones.values_mut() {
            seen_at.get_or_insert(now);
        }
        self.send_syns()
    }

    /// Announces that this node leaves: a `Leave` to every known live or joining peer. The core
    /// sends and accepts nothing afterwards.
    pub fn leave(&mut self, now: Instant) -> Vec<Outgoing> {
        if self.left {
            return Vec::new();
        }
        self.left = true;
        self.own_record_mut().set_status(Status::Left, now);
        let targets: Vec<SocketAddr> = self
            .others()
            .filter(|record| matches!(record.status, Status::Alive | Status::Pending))
            .map(|record| record.id.gossip_addr)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        targets.into_iter().filter_map(|to| self.send(to, Message::Leave)).collect()
    }

    /// Handles one received datagram and returns the replies.
    pub fn handle(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) -> Vec<Outgoing> {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        if datagram.len() > self.config.datagram_budget {
            self.stats.dropped_oversized += 1;
            return Vec::new();
        }
        let envelope =
            match wire::decode_datagram(datagram, &self.config.cluster_id, self.config.keys.as_ref()) {
                Ok(envelope) => envelope,
                Err(error) => {
                    self.count_wire_error(error);
                    return Vec::new();
                }
            };
        if self.left || !self.accept_sender(&envelope) {
            return Vec::new();
        }
        match envelope.message {
            Message::Syn { digest } => {
                self.merge_digest(&digest.entries, now);
                self.take_reading(&envelope.sender, &digest, now);
                let (reply, mut peer) = self.syn_ack(&envelope.sender, &digest);
                let Some(first) = self.send(from, reply) else {
                    return Vec::new();
                };
                let mut outgoing = vec![first];
                outgoing.extend(self.continue_deltas(from, &mut peer, digest.complete));
                outgoing
            }
            Message::SynAck { digest, delta } => {
                self.merge_digest(&digest.entries, now);
                self.take_reading(&envelope.sender, &digest, now);
                self.apply_deltas(delta, now);
                let mut peer = peer_knowledge(&digest);
                let delta = self.build_delta(&peer, false, self.message_room.saturating_sub(3));
                if delta.is_empty() {
                    return Vec::new();
                }
                advance_knowledge(&mut peer, &delta);
                let Some(first) = self.send(from, Message::Ack { delta }) else {
                    return Vec::new();
                };
                let mut outgoing = vec![first];
                outgoing.extend(self.continue_deltas(from, &mut peer, false));
                outgoing
            }
            Message::Ack { delta } => {
                self.apply_deltas(delta, now);
                Vec::new()
            }
            Message::Leave => {
                self.mark_left(&envelope.sender, now);
                Vec::new()
            }
        }
    }

    /// Takes the events produced since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Grows whenever the view changes in a way worth publishing: an event, or a node
    /// forgotten after its grace. Heartbeats alone never change it.
    pub fn view_version(&self) -> u64 {
        self.view_version
    }

    /// The cluster as seen now, with fresh phi values.
    pub fn view(&self, now: Instant) -> ClusterView {
        let tolerance = self.tolerance();
        let nodes = self
            .nodes
            .values()
            .map(|record| {
                let own = record.id.name == self.id.name;
                let liveness = match record.status {
                    Status::Alive => Liveness::Alive,
                    Status::Pending | Status::Dead => Liveness::Dead,
                    Status::Left => Liveness::Left,
                };
                let phi = if own { None } else { record.detector.phi(now, &tolerance) };
                let view = NodeView {
                    id: record.id.clone(),
                    liveness,
                    phi,
                    hears_me: record.hears_me,
                    holds_all_mine: record.holds_all_mine,
                    keys: record.live_keys(),
                };
                (record.id.name.clone(), view)
            })
            .collect();
        ClusterView { self_id: self.id.clone(), nodes }
    }

    /// The liveness of one node by name, without building a whole view.
    pub fn liveness(&self, name: &str) -> Option<Liveness> {
        self.nodes.get(name).map(|record| match record.status {
            Status::Alive => Liveness::Alive,
            Status::Pending | Status::Dead => Liveness::Dead,
            Status::Left => Liveness::Left,
        })
    }

    /// The live value of one key of one node, without building a whole view.
    pub fn value(&self, name: &str, key: &str) -> Option<&[u8]> {
        self.nodes.get(name)?.keys.get(key)?.value.as_deref()
    }

    /// The generation known for a name, if any.
    pub fn known_generation(&self, name: &str) -> Option<u64> {
        self.nodes.get(name).map(|record| record.id.generation)
    }

    /// How many nodes are known, this node included.
    pub fn known_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Traffic counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What `peer` reported, in the last digest it sent this node directly, about this node;
    /// `None` before such a digest of the peer's current generation, and after it left.
    pub fn reading(&self, peer: &str) -> Option<Reading> {
        self.nodes.get(peer).filter(|record| record.id.name != self.id.name)?.reading
    }

    /// This node's own newest version: the version of its latest `set` or `delete`. A peer whose
    /// [`Reading::max_version`] reached it holds every key this node has written.
    pub fn own_max_version(&self) -> u64 {
        self.nodes.get(&self.id.name).map_or(0, |own| own.max_version)
    }

    /// Whether `peer` hears this node (directly or through others), judged from its last
    /// [`Reading`]: `Some(false)` when that reading shows this node's heartbeat lagging by more
    /// rounds than a heartbeat takes to reach the peer plus the silence after which this node's
    /// detector would declare the peer dead, were the peer silent; `Some(true)` otherwise; `None`
    /// without a fresh reading (and for an unknown or departed peer).
    ///
    /// The tolerated lag is the age a heartbeat has when it reaches the peer (one round in a
    /// small cluster, a few hops of push-pull exchanges, stretched by paged digests, in a large
    /// one) plus the silence this node's detector tolerates from the peer before declaring it
    /// dead: about 5 rounds with 100 ms rounds at 5 nodes, 6 to 7 rounds at 100 nodes, tens of
    /// rounds at 1000 nodes with paged digests. A reading counts as fresh for about 18 mean gaps
    /// between direct exchanges with the peer (the memoryless reading of phi 8): 1.8 s with
    /// 100 ms rounds up to 7 nodes, about 50 minutes at 1000 nodes and 1 s rounds, where two
    /// given nodes talk directly only every few minutes.
    ///
    /// A peer whose datagrams arrive here while nothing of this node reaches it (a one-way
    /// partition) looks alive, but its readings show a lag that grows by one every round: with
    /// 100 ms rounds at 5 nodes this turns `Some(false)` 0.6 to 0.9 s after the cut.
    pub fn hears_me(&self, peer: &str, now: Instant) -> Option<bool> {
        let (record, reading) = self.fresh_reading(peer, now)?;
        Some(reading.heartbeat_lag as f64 <= self.tolerated_lag(record, now))
    }

    /// Whether `peer`, by its last fresh [`Reading`], held every key this node has written so
    /// far: `Some(false)` while it still lacks some (or the reading predates the latest write),
    /// `None` without a fresh reading, as for [`Gossip::hears_me`]. A peer that hears this node
    /// but does not yet hold everything is still receiving, which in a large cluster after a
    /// large write takes many rounds.
    pub fn holds_all_mine(&self, peer: &str, now: Instant) -> Option<bool> {
        let (_, reading) = self.fresh_reading(peer, now)?;
        Some(reading.max_version >= self.own_max_version())
    }

    /// A peer's record and its last reading, if that reading is still fresh (see
    /// `reading_freshness`); `None` for this node itself and an unknown or departed peer.
    fn fresh_reading(&self, peer: &str, now: Instant) -> Option<(&NodeRecord, Reading)> {
        let record = self.nodes.get(peer).filter(|record| record.id.name != self.id.name)?;
        let reading = record.reading?;
        (now.saturating_duration_since(reading.at) <= self.reading_freshness()).then_some((record, reading))
    }

    fn own_record_mut(&mut self) -> &mut NodeRecord {
        // The own record is created in `new` and never removed (forgetting skips it); the
        // entry API merely avoids an unwrap.
        let (id, since) = (self.id.clone(), self.started_at);
        self.nodes.entry(id.name.clone()).or_insert_with(|| NodeRecord::new(id, Status::Alive, since))
    }

    fn others(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(move |record| record.id.name != self.id.name)
    }

    fn push_event(&mut self, event: Event) {
        self.events.push(event);
        self.view_version += 1;
    }

    fn count_wire_error(&mut self, error: WireError) {
        let counter = match error {
            WireError::BadMagic => &mut self.stats.dropped_bad_magic,
            WireError::WrongVersion(_) => &mut self.stats.dropped_wrong_version,
            WireError::OtherCluster => &mut self.stats.dropped_other_cluster,
            WireError::AuthFailure => &mut self.stats.dropped_auth_failure,
            WireError::Malformed => &mut self.stats.dropped_malformed,
        };
        *counter += 1;
    }

    /// Refuses datagrams claiming this node's name, from superseded or forgotten generations,
    /// and (with keys) replayed ones.
    fn accept_sender(&mut self, envelope: &Envelope) -> bool {
        let sender = &envelope.sender;
        let superseded =
            self.nodes.get(&sender.name).is_some_and(|record| record.id.generation > sender.generation);
        let forgotten =
            self.forgotten.get(&sender.name).is_some_and(|&generation| generation >= sender.generation);
        if sender.name == self.id.name || superseded || forgotten {
            self.stats.dropped_stale_sender += 1;
            return false;
        }
        if !self.well_named(sender) {
            self.stats.dropped_malformed += 1;
            return false;
        }
        if self.config.keys.is_none() {
            return true;
        }
        let (generation, window) = self
            .replay
            .entry(sender.name.clone())
            .or_insert_with(|| (sender.generation, ReplayWindow::new()));
        if *generation > sender.generation {
            self.stats.dropped_replay += 1;
            return false;
        }
        if *generation < sender.generation {
            *generation = sender.generation;
            *window = ReplayWindow::new();
        }
        if !window.accept(envelope.sequence) {
            self.stats.dropped_replay += 1;
            return false;
        }
        true
    }

    /// Encodes, seals and counts one datagram.
    fn send(&mut self, to: SocketAddr, message: Message) -> Option<Outgoing> {
        self.sequence += 1;
        let envelope = Envelope { sender: self.id.clone(), sequence: self.sequence, message };
        let datagram = wire::encode_with_header(&self.header, self.config.keys.as_ref(), &envelope);
        if datagram.len() > self.config.datagram_budget {
            // The size accounting is conservative, so this only happens with a budget too
            // small for even an empty message.
            tracing::error!(
                len = datagram.len(),
                budget = self.config.datagram_budget,
                "gossip datagram over budget not sent"
            );
            return None;
        }
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += datagram.len() as u64;
        Some(Outgoing { to, datagram })
    }

    /// Remembers what the sender of a digest, sent directly to this node, knows of this node.
    /// Only the sender's current generation counts (the digest is merged already, so a newer
    /// generation has replaced the older one), and only an entry about this node's own
    /// generation: what the peer knew of a previous life says nothing about this one.
    fn take_reading(&mut self, sender: &NodeId, digest: &Digest, now: Instant) {
        let Some(about_me) = digest
            .entries
            .iter()
            .find(|entry| entry.node.name == self.id.name && entry.node.generation == self.id.generation)
        else {
            return;
        };
        let own_heartbeat = self.nodes.get(&self.id.name).map_or(0, |own| own.heartbeat);
        let Some(record) = self.nodes.get_mut(&sender.name) else {
            return;
        };
        if record.id.generation != sender.generation || record.status == Status::Left {
            return;
        }
        record.reading = Some(Reading {
            heartbeat_lag: own_heartbeat.saturating_sub(about_me.heartbeat),
            max_version: about_me.max_version,
            at: now,
        });
    }

    /// The heartbeat lag (in rounds) that a reading of `peer` may show while the peer still
    /// hears this node: the rounds a heartbeat needs to reach the peer, plus the silence after
    /// which this node's detector would declare the peer dead, in rounds.
    ///
    /// A peer that hears this node holds a heartbeat as old as the path it travelled: one hop
    /// in a small cluster, about `log(nodes) / log(1 + 2 * fanout)` rounds of push-pull
    /// exchanges in a large one (2.4 at 100 nodes, 3.5 at 1000), half again for the spread's
    /// tail (`SPREAD_TAIL`), each stretched by paged digests to the expected gap between
    /// sightings. On top of that age, heartbeats arrive
    /// only as regularly as the detector's history says: the peer's own heartbeat history here
    /// stands for this node's history there (heartbeats travel the same paths both ways), so a
    /// peer whose copy is older than both would itself be about to declare this node dead. That
    /// silence is about 3.7 rounds (100 + 60 + 5.2 * 40 ms) with 100 ms rounds in a small
    /// cluster, and about 18 mean gaps once digests are paged. A peer without history here (not
    /// yet confirmed, or declared dead) is judged as the detector judges a peer just seen for
    /// the first time, from the expected gap alone, which is more lenient.
    fn tolerated_lag(&self, peer: &NodeRecord, now: Instant) -> f64 {
        let tolerance = self.tolerance();
        let threshold = self.config.phi_threshold;
        let silence = peer.detector.tolerated_silence(threshold, &tolerance).unwrap_or_else(|| {
            let mut first_sight = PhiDetector::default();
            first_sight.record(now, self.expected_heartbeat_gap());
            first_sight.tolerated_silence(threshold, &tolerance).unwrap_or_default()
        });
        let round = self.config.gossip_interval.as_secs_f64().max(1e-6);
        let hop_rounds = self.expected_heartbeat_gap().as_secs_f64() / round;
        let spread = (1.0 + 2.0 * self.config.fanout.max(1) as f64).ln();
        let hops = SPREAD_TAIL * (self.nodes.len().max(2) as f64).ln() / spread;
        hops.max(1.0) * hop_rounds + silence.as_secs_f64() / round
    }

    /// How long a reading counts as current. A peer sends this node a digest directly when
    /// either picks the other for a `Syn`, about `2 * fanout / others` times per round, at
    /// least once; such picks are independent random draws, so the gaps between readings are
    /// memoryless, and the detector's threshold read on the memoryless model (phi 8: about 18
    /// mean gaps) says when the lack of a reading is no longer chance: about 1.8 s at 100 ms
    /// rounds up to 7 nodes, about 50 minutes at 1000 nodes and 1 s rounds, where any two
    /// nodes talk directly only every few minutes.
    fn reading_freshness(&self) -> Duration {
        let others = self.nodes.len().saturating_sub(1) as f64;
        let picks_per_round = 2.0 * self.config.fanout.max(1) as f64;
        let mean_gap = self.config.gossip_interval.mul_f64((others / picks_per_round).max(1.0));
        mean_gap.mul_f64(self.config.phi_threshold.max(1.0) * std::f64::consts::LN_10)
    }

    /// Continuation `Ack`s for a peer that lacks more than the exchange's first datagram of
    /// deltas carried: each one continues, gap-free, where the previous one ended (`peer` is
    /// what the peer holds once the earlier datagrams arrived), until nothing more is lacking
    /// or the exchange has sent `max_delta_datagrams` datagrams of deltas. In-order arrival
    /// applies them all; a lost or reordered one only wastes the ones after it, which the next
    /// exchange sends again.
    fn continue_deltas(
        &mut self,
        to: SocketAddr,
        peer: &mut BTreeMap<String, PeerKnows>,
        peer_complete: bool,
    ) -> Vec<Outgoing> {
        let mut outgoing = Vec::new();
        for _ in 1..self.config.max_delta_datagrams {
            let delta = self.build_delta(peer, peer_complete, self.message_room.saturating_sub(3));
            if delta.is_empty() {
                break;
            }
            advance_knowledge(peer, &delta);
            let Some(datagram) = self.send(to, Message::Ack { delta }) else {
                break;
            };
            self.stats.extra_delta_datagrams += 1;
            outgoing.push(datagram);
        }
        outgoing
    }

    fn send_syns(&mut self) -> Vec<Outgoing> {
        let targets = self.choose_targets();
        let mut outgoing = Vec::with_capacity(targets.len());
        for (to, name) in targets {
            let digest = self.syn_digest(name.as_deref());
            outgoing.extend(self.send(to, Message::Syn { digest }));
        }
        outgoing
    }

    /// `fanout` random live peers and one dead or unconfirmed peer with probability
    /// `dead / (live + 1)`; while no peer is alive, `fanout` dead or unconfirmed peers and every
    /// seed. Each target comes with the name of the node known at its address, if any.
    fn choose_targets(&mut self) -> Vec<(SocketAddr, Option<String>)> {
        let mut live: Vec<&NodeId> = Vec::new();
        let mut dead: Vec<&NodeId> = Vec::new();
        for record in self.nodes.values() {
            if record.id.name == self.id.name {
                continue;
            }
            match record.status {
                Status::Alive => live.push(&record.id),
                Status::Pending | Status::Dead => dead.push(&record.id),
                Status::Left => {}
            }
        }
        let mut targets: Vec<(SocketAddr, Option<String>)> = Vec::new();
        let picks = self.config.fanout.min(live.len());
        for index in 0..picks {
            let chosen = self.rng.random_range(index..live.len());
            live.swap(index, chosen);
            targets.push((live[index].gossip_addr, Some(live[index].name.clone())));
        }
        if live.is_empty() {
            // A node that sees no live peer may merely be deaf (a one-way partition): its
            // `Syn`s are all its peers get from it, telling them what it misses (see
            // `hears_me`) and bringing it back once it hears again, so it sends `fanout` of
            // them rather than one.
            let picks = self.config.fanout.min(dead.len());
            for index in 0..picks {
                let chosen = self.rng.random_range(index..dead.len());
                dead.swap(index, chosen);
                targets.push((dead[index].gossip_addr, Some(dead[index].name.clone())));
            }
        } else if !dead.is_empty() {
            let probability = dead.len() as f64 / (live.len() + 1) as f64;
            if self.rng.random::<f64>() < probability {
                let id = dead[self.rng.random_range(0..dead.len())];
                targets.push((id.gossip_addr, Some(id.name.clone())));
            }
        }
        if live.is_empty() {
            for &seed in self.config.seeds.iter().filter(|&&seed| seed != self.id.gossip_addr) {
                let known = self.nodes.values().find(|record| record.id.gossip_addr == seed);
                targets.push((seed, known.map(|record| record.id.name.clone())));
            }
        }
        let mut seen = BTreeSet::new();
        targets.retain(|(target, _)| seen.insert(*target));
        targets
    }

    /// A `Syn` digest: this node first, then the target (so the target learns what this node
    /// knows of it, see [`Gossip::hears_me`]), then the priority names, then a rotating page of
    /// the others that fits. The page continues where the previous one ended, so every known
    /// node is offered to some peer within `others / entries_per_digest` digests.
    fn syn_digest(&mut self, target: Option<&str>) -> Digest {
        let mut page = Page::new(self.message_room.saturating_sub(4));
        if let Some(own) = self.nodes.get(&self.id.name) {
            page.offer(own.digest_entry());
        }
        if let Some(record) = target.and_then(|name| self.nodes.get(name)) {
            page.offer(record.digest_entry());
        }
        self.offer_priority(&mut page);
        let cursor = self.offer_rotation(&mut page);
        let complete = page.entries.len() >= self.nodes.len();
        let entries = page.entries;
        if let Some(cursor) = cursor {
            self.digest_cursor = cursor;
        }
        Digest { entries, complete }
    }

    /// Offers the priority names, newest first, into at most half of the page so the rotation
    /// always keeps room.
    fn offer_priority(&self, page: &mut Page) {
        let limit = page.room / 2;
        for (_, name) in self.priority.iter().rev() {
            if page.used >= limit {
                break;
            }
            if let Some(record) = self.nodes.get(name)
                && record.id.name != self.id.name
                && !page.lists(name)
            {
                page.offer(record.digest_entry());
            }
        }
    }

    /// Fills the page with the nodes after the cursor in name order, wrapping around; returns
    /// the name of the last node offered (the next cursor). The work is proportional to the
    /// page, not to the cluster.
    fn offer_rotation(&self, page: &mut Page) -> Option<String> {
        let cursor = self.digest_cursor.as_str();
        let after = self.nodes.range::<str, _>((Bound::Excluded(cursor), Bound::Unbounded));
        let up_to = self.nodes.range::<str, _>((Bound::Unbounded, Bound::Included(cursor)));
        let mut last = None;
        for (name, record) in after.chain(up_to) {
            if *name == self.id.name || page.lists(name) {
                continue;
            }
            if !page.offer(record.digest_entry()) {
                break;
            }
            last = Some(name.clone());
        }
        last
    }

    /// The answer to a `Syn`: deltas first, then a digest of this node, the initiator (what
    /// this node knows of it, see [`Gossip::hears_me`]), requests (where the initiator is
    /// ahead), news (where this node knows more) and, for a partial digest, the priority names
    /// and a rotating page. Only a complete digest (a small cluster, or a newcomer) makes the
    /// answer look at every known node. Also returns what the initiator holds once the answer's
    /// deltas arrived, for the continuation.
    fn syn_ack(
        &mut self,
        initiator: &NodeId,
        their_digest: &Digest,
    ) -> (Message, BTreeMap<String, PeerKnows>) {
        let mut peer = peer_knowledge(their_digest);
        let room = self.message_room.saturating_sub(4 + 3);
        let own_entry = self.nodes.get(&self.id.name).map(NodeRecord::digest_entry);
        let initiator_entry = self
            .nodes
            .get(&initiator.name)
            .filter(|record| record.id.name != self.id.name)
            .map(NodeRecord::digest_entry);
        let leading_len = own_entry.as_ref().map_or(0, wire::encoded_len)
            + initiator_entry.as_ref().map_or(0, wire::encoded_len);
        let mut requests = Vec::new();
        for entry in &their_digest.entries {
            if let Some(record) = self.nodes.get(&entry.node.name)
                && record.id.name != self.id.name
                && record.id.generation == entry.node.generation
                && entry.max_version > record.max_version
            {
                requests.push(record.digest_entry());
            }
        }
        let requests_len: usize = requests.iter().map(wire::encoded_len).sum();
        let reserved = leading_len + requests_len.min(room / 3);
        let delta = self.build_delta(&peer, their_digest.complete, room.saturating_sub(reserved));
        let delta_len: usize = delta.iter().map(wire::encoded_len).sum::<usize>();

        let mut page = Page::new(room.saturating_sub(delta_len));
        for entry in own_entry.into_iter().chain(initiator_entry) {
            page.offer(entry);
        }
        for entry in requests {
            page.offer(entry);
        }
        for theirs in &their_digest.entries {
            let Some(record) = self.nodes.get(&theirs.node.name) else {
                continue;
            };
            let news = if theirs.node.generation == record.id.generation {
                record.heartbeat > theirs.heartbeat
                    || record.max_version > theirs.max_version
                    || (record.status == Status::Left && !theirs.left)
            } else {
                record.id.generation > theirs.node.generation
            };
            if news && record.id.name != self.id.name && !page.lists(&record.id.name) {
                page.offer(record.digest_entry());
            }
        }
        if their_digest.complete {
            // Everything the initiator did not list is unknown to it.
            for record in self.others() {
                if !peer.contains_key(&record.id.name)
                    && !page.lists(&record.id.name)
                    && !page.offer(record.digest_entry())
                {
                    break;
                }
            }
        } else {
            self.offer_priority(&mut page);
            if let Some(cursor) = self.offer_rotation(&mut page) {
                self.digest_cursor = cursor;
            }
        }
        advance_knowledge(&mut peer, &delta);
        (Message::SynAck { digest: Digest { entries: page.entries, complete: false }, delta }, peer)
    }

    /// Deltas a peer lacks, cut to `room` bytes: nodes the peer does not know first (smallest
    /// state first), then the nodes with the most missing versions (scuttle-depth); each node's
    /// updates in ascending version order without gaps.
    fn build_delta(
        &self,
        peer: &BTreeMap<String, PeerKnows>,
        peer_complete: bool,
        room: usize,
    ) -> Vec<NodeDelta> {
        // A partial digest only speaks about the nodes it lists, so only those are looked at;
        // a complete one makes every node a candidate.
        let records: Vec<&NodeRecord> = if peer_complete {
            self.nodes.values().collect()
        } else {
            peer.keys().filter_map(|name| self.nodes.get(name)).collect()
        };
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for record in records {
            let (their_max, their_gc) = match peer.get(&record.id.name) {
                Some(knows) if knows.generation == record.id.generation => {
                    (knows.max_version, knows.last_gc_version)
                }
                Some(knows) if knows.generation > record.id.generation => continue,
                Some(_) => (0, 0),
                None if peer_complete => (0, 0),
                None => continue,
            };
            let reset = their_max < record.last_gc_version && their_gc < record.last_gc_version;
            if !reset && record.max_version <= their_max {
                continue;
            }
            candidates.push(Candidate {
                record,
                unknown: their_max == 0 && their_gc == 0,
                reset,
                from_version: if reset { 0 } else { their_max },
            });
        }
        candidates.sort_by(|a, b| {
            b.unknown.cmp(&a.unknown).then_with(|| {
                if a.unknown {
                    a.record.max_version.cmp(&b.record.max_version)
                } else {
                    let missing = |c: &Candidate<'_>| c.record.max_version - c.from_version;
                    missing(b).cmp(&missing(a))
                }
                .then_with(|| a.record.id.name.cmp(&b.record.id.name))
            })
        });

        let room = room.saturating_sub(3);
        let mut used = 0;
        let mut deltas = Vec::new();
        for candidate in candidates {
            if room.saturating_sub(used) < MIN_USEFUL_DELTA_ROOM {
                break;
            }
            let record = candidate.record;
            let mut delta = NodeDelta {
                node: record.id.clone(),
                reset: candidate.reset,
                last_gc_version: record.last_gc_version,
                from_version: candidate.from_version,
                up_to: record.max_version,
                updates: Vec::new(),
            };
            // Two spare bytes for the update count's prefix growing past one byte.
            let mut size = wire::encoded_len(&delta) + 2;
            if used + size > room {
                continue;
            }
            let mut cut = false;
            for (&version, key) in record.by_version.range(candidate.from_version + 1..) {
                let Some(entry) = record.keys.get(key) else {
                    continue;
                };
                let len = update_len(key, entry.value.as_ref().map(Vec::len), version);
                if used + size + len > room {
                    cut = true;
                    break;
                }
                size += len;
                delta.updates.push(KeyUpdate { key: key.clone(), value: entry.value.clone(), version });
            }
            if cut {
                match delta.updates.last() {
                    Some(last) => delta.up_to = last.version,
                    None => continue,
                }
            }
            used += size;
            deltas.push(delta);
        }
        deltas
    }

    /// Merges digest entries: learns nodes, replaces older generations, records heartbeats and
    /// departures.
    fn merge_digest(&mut self, entries: &[DigestEntry], now: Instant) {
        for entry in entries {
            let Some(record) = self.record_for(&entry.node, now) else {
                continue;
            };
            if entry.left {
                if record.status != Status::Left {
                    record.set_status(Status::Left, now);
                    record.detector.clear();
                    let id = record.id.clone();
                    self.push_event(Event::NodeLeft(id));
                    self.prioritize(&entry.node.name, now);
                }
                continue;
            }
            let behind = entry.max_version > record.max_version;
            let heartbeat_rose = entry.heartbeat > record.heartbeat;
            if behind {
                // The sender holds versions this node lacks: mention the node first in the
                // next digests, so that whichever peer has them sends them.
                self.prioritize(&entry.node.name, now);
            }
            if heartbeat_rose {
                let Some(record) = self.nodes.get_mut(&entry.node.name) else {
                    continue;
                };
                record.heartbeat = entry.heartbeat;
                self.heartbeat_seen(&entry.node.name, now);
            }
        }
    }

    /// Records one heartbeat sighting; the second sighting since the node was learned or
    /// declared dead makes it alive.
    ///
    /// Only the gaps of the current life feed the detector. The first sighting of a learned or
    /// dead node may be a stale heartbeat relayed by a peer, and the next one may come seconds
    /// later, when the node is really back; that gap says nothing about how often heartbeats
    /// arrive, and in the history it would keep phi low for seconds after the node's next
    /// failure. So the history starts afresh, from the prior, at the sighting that makes the
    /// node alive.
    fn heartbeat_seen(&mut self, name: &str, now: Instant) {
        let interval = self.expected_heartbeat_gap();
        let Some(record) = self.nodes.get_mut(name) else {
            return;
        };
        match record.status {
            Status::Left => {}
            Status::Alive => record.detector.record(now, interval),
            Status::Pending | Status::Dead => {
                record.sightings = record.sightings.saturating_add(1);
                if record.sightings >= 2 {
                    record.detector.clear();
                    record.detector.record(now, interval);
                    record.set_status(Status::Alive, now);
                    let id = record.id.clone();
                    self.push_event(Event::NodeAlive(id));
                }
            }
        }
    }

    /// The record for a peer identity, created or replaced as needed; `None` when the identity
    /// is this node's name, forgotten, or older than what is known.
    fn record_for(&mut self, id: &NodeId, now: Instant) -> Option<&mut NodeRecord> {
        if id.name == self.id.name || !self.well_named(id) {
            return None;
        }
        if self.forgotten.get(&id.name).is_some_and(|&generation| generation >= id.generation) {
            return None;
        }
        let known = self.nodes.get(&id.name).map(|record| record.id.generation);
        match known {
            Some(generation) if generation > id.generation => return None,
            Some(generation) if generation < id.generation => self.replace_generation(id, now),
            Some(_) => {}
            None => {
                self.nodes.insert(id.name.clone(), NodeRecord::new(id.clone(), Status::Pending, now));
                self.view_version += 1;
                self.prioritize(&id.name, now);
            }
        }
        self.nodes.get_mut(&id.name)
    }

    /// Whether an identity passes the naming rule of [`Config::names_are_addresses`].
    fn well_named(&self, id: &NodeId) -> bool {
        !self.config.names_are_addresses || id.name == id.gossip_addr.to_string()
    }

    /// Drops an older generation's state in favour of a newer one.
    fn replace_generation(&mut self, id: &NodeId, now: Instant) {
        let fresh = NodeRecord::new(id.clone(), Status::Pending, now);
        let Some(old) = self.nodes.insert(id.name.clone(), fresh) else {
            return;
        };
        if old.status == Status::Alive {
            self.push_event(Event::NodeDead(old.id.clone()));
        }
        for (key, entry) in old.keys {
            if entry.value.is_some() {
                self.push_event(Event::KeyChanged { node: old.id.clone(), key, value: None });
            }
        }
        self.view_version += 1;
        self.prioritize(&id.name, now);
    }

    /// Applies received node deltas, refusing anything about this node's own name, superseded
    /// generations, gaps and out-of-order updates.
    fn apply_deltas(&mut self, deltas: Vec<NodeDelta>, now: Instant) {
        for delta in deltas {
            if delta.node.name == self.id.name {
                self.stats.ignored_updates_about_self += 1;
                continue;
            }
            let mut events = Vec::new();
            let Some(record) = self.record_for(&delta.node, now) else {
                continue;
            };
            let max_before = record.max_version;
            let reset_needed =
                record.max_version < delta.last_gc_version && record.last_gc_version < delta.last_gc_version;
            let from_version = if delta.reset { 0 } else { delta.from_version };
            if from_version > record.max_version {
                continue;
            }
            if delta.reset && reset_needed {
                let removed = record.wipe();
                record.last_gc_version = delta.last_gc_version;
                let kept: BTreeSet<&str> = delta.updates.iter().map(|u| u.key.as_str()).collect();
                for key in removed {
                    if !kept.contains(key.as_str()) {
                        events.push((key, None));
                    }
                }
            }
            let mut previous = from_version;
            let mut well_formed = true;
            for update in delta.updates {
                if update.version <= previous {
                    well_formed = false;
                    break;
                }
                previous = update.version;
                if update.version <= record.max_version {
                    continue;
                }
                let seen_at = update.value.is_none().then_some(now);
                if let Some(value) = record.write(update.key.clone(), update.value, update.version, seen_at) {
                    events.push((update.key, value));
                }
            }
            if well_formed && delta.up_to >= previous && delta.up_to > record.max_version {
                record.max_version = delta.up_to;
            }
            let changed = record.max_version != max_before || !events.is_empty();
            let node = record.id.clone();
            for (key, value) in events {
                self.push_event(Event::KeyChanged { node: node.clone(), key, value });
            }
            if changed {
                // Fresh news spreads like a rumour: mentioned first for a few rounds.
                self.prioritize(&node.name, now);
            }
        }
    }

    /// Puts a node at the head of the next digests for `PRIORITY_ROUNDS` rounds.
    fn prioritize(&mut self, name: &str, now: Instant) {
        if self.priority.back().is_some_and(|(_, last)| last == name) {
            return;
        }
        self.priority.push_back((now, name.to_owned()));
        if self.priority.len() > MAX_PRIORITY {
            self.priority.pop_front();
        }
    }

    /// Drops priority mentions older than `PRIORITY_ROUNDS` rounds.
    fn expire_priority(&mut self, now: Instant) {
        let window = self.config.gossip_interval * PRIORITY_ROUNDS;
        while self.priority.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > window) {
            self.priority.pop_front();
        }
    }

    /// The detector's leniency: the configuration, the memoryless model once digests are
    /// paged (see [`Tolerance`]), and a floor for the mean gap of a quarter
    /// of the expected gap, so that heartbeat histories gathered while the cluster was still
    /// growing do not judge the grown cluster's longer gaps. While the membership fits into
    /// the digests of one round the floor stays below one round and changes nothing.
    fn tolerance(&self) -> Tolerance {
        Tolerance {
            min_std_dev: self.config.min_std_dev,
            acceptable_pause: self.config.acceptable_pause,
            min_mean: self.expected_heartbeat_gap() / 4,
            memoryless: self.expected_heartbeat_gap() > self.config.gossip_interval,
        }
    }

    /// The gap expected between two heartbeat sightings of one peer, the detector's prior.
    /// While the whole membership fits into one digest that is one round; beyond, the rotating
    /// pages of this node's own `Syn`s need `others / (fanout * entries_per_digest)` rounds to
    /// come back to a peer (sightings through other nodes' exchanges only shorten it).
    fn expected_heartbeat_gap(&self) -> Duration {
        let others = self.nodes.len().saturating_sub(1);
        let per_round = (self.config.fanout.max(1) * self.entries_per_digest).max(1);
        let rounds = others.div_ceil(per_round).max(1);
        self.config.gossip_interval * u32::try_from(rounds).unwrap_or(u32::MAX)
    }

    fn mark_left(&mut self, sender: &NodeId, now: Instant) {
        let Some(record) = self.nodes.get_mut(&sender.name) else {
            return;
        };
        if record.id.generation != sender.generation || record.status == Status::Left {
            return;
        }
        record.set_status(Status::Left, now);
        record.detector.clear();
        let id = record.id.clone();
        self.push_event(Event::NodeLeft(id));
        self.prioritize(&sender.name, now);
    }

    /// Declares dead every alive peer whose phi exceeds the threshold, clearing its history.
    fn detect_failures(&mut self, now: Instant) {
        let tolerance = self.tolerance();
        let mut died = Vec::new();
        for record in self.nodes.values_mut() {
            if record.status != Status::Alive || record.id.name == self.id.name {
                continue;
            }
            if record.detector.exceeds(now, self.config.phi_threshold, &tolerance) {
                record.set_status(Status::Dead, now);
                record.detector.clear();
                record.sightings = 0;
                died.push(record.id.clone());
            }
        }
        for id in died {
            self.push_event(Event::NodeDead(id));
        }
    }

    /// Collects tombstones older than the grace and raises each node's collection floor.
    fn collect_tombstones(&mut self, now: Instant) {
        let grace = self.config.tombstone_grace;
        for record in self.nodes.values_mut() {
            let mut expired = Vec::new();
            for (&version, seen_at) in &mut record.tombstones {
                match seen_at {
                    None => *seen_at = Some(now),
                    Some(at) if now.saturating_duration_since(*at) >= grace => {
                        expired.push(version);
                    }
                    Some(_) => {}
                }
            }
            for version in expired {
                record.tombstones.remove(&version);
                if let Some(key) = record.by_version.remove(&version) {
                    record.keys.remove(&key);
                }
                record.last_gc_version = record.last_gc_version.max(version);
            }
        }
    }

    /// Forgets peers that stayed dead, left or unconfirmed for `dead_node_grace`, remembering
    /// their generation so stale gossip cannot bring them back.
    fn forget_departed(&mut self, now: Instant) {
        let grace = self.config.dead_node_grace;
        let expired: Vec<NodeId> = self
            .others()
            .filter(|record| record.status != Status::Alive)
            .filter(|record| now.saturating_duration_since(record.status_since) >= grace)
            .map(|record| record.id.clone())
            .collect();
        for id in expired {
            self.nodes.remove(&id.name);
            let generation = self.forgotten.entry(id.name).or_insert(id.generation);
            *generation = (*generation).max(id.generation);
            self.view_version += 1;
        }
    }
}

/// A digest under construction: the entries so far, their size and their names.
struct Page {
    room: usize,
    used: usize,
    entries: Vec<DigestEntry>,
    listed: BTreeSet<String>,
}

impl Page {
    fn new(room: usize) -> Page {
        Page { room, used: 0, entries: Vec::new(), listed: BTreeSet::new() }
    }

    fn lists(&self, name: &str) -> bool {
        self.listed.contains(name)
    }

    /// Adds the entry if it fits and its node is not listed yet; false when it did not fit.
    fn offer(&mut self, entry: DigestEntry) -> bool {
        let len = wire::encoded_len(&entry);
        if self.used + len > self.room {
            return false;
        }
        if self.listed.insert(entry.node.name.clone()) {
            self.used += len;
            self.entries.push(entry);
        }
        true
    }
}

/// What a digest says the peer knows, by node name.
fn peer_knowledge(digest: &Digest) -> BTreeMap<String, PeerKnows> {
    digest
        .entries
        .iter()
        .map(|entry| {
            (
                entry.node.name.clone(),
                PeerKnows {
                    generation: entry.node.generation,
                    max_version: entry.max_version,
                    last_gc_version: entry.last_gc_version,
                },
            )
        })
        .collect()
}

/// What a peer holds once `deltas` arrived: each node up to the delta's end, and after a reset
/// with the sender's collection floor (a plain delta leaves the peer's floor as it was).
fn advance_knowledge(peer: &mut BTreeMap<String, PeerKnows>, deltas: &[NodeDelta]) {
    for delta in deltas {
        let floor_before = peer
            .get(&delta.node.name)
            .filter(|knows| knows.generation == delta.node.generation)
            .map_or(0, |knows| knows.last_gc_version);
        let last_gc_version = if delta.reset { delta.last_gc_version } else { floor_before };
        peer.insert(
            delta.node.name.clone(),
            PeerKnows { generation: delta.node.generation, max_version: delta.up_to, last_gc_version },
        );
    }
}

/// The encoded length of a [`KeyUpdate`] without building it.
fn update_len(key: &str, value_len: Option<usize>, version: u64) -> usize {
    let value = match value_len {
        Some(len) => 1 + wire::length_prefix_len(len) + len,
        None => 1,
    };
    wire::length_prefix_len(key.len()) + key.len() + value + varint_len(version)
}

/// The encoded length of a variable-length integer in bincode's standard configuration.
fn varint_len(value: u64) -> usize {
    match value {
        0..=250 => 1,
        251..=0xFFFF => 3,
        0x1_0000..=0xFFFF_FFFF => 5,
        _ => 9,
    }
}
