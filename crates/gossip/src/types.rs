//! The public value types of the crate: node identities, views of the cluster, events, statistics
//! and errors. They carry no behaviour beyond small helpers, so the daemon and the simulation can
//! share them freely.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use bincode::{Decode, Encode};

/// Who a node is: its stable name plus the generation of the running process.
///
/// The generation is new on every start (fechter passes the wall-clock nanoseconds), so a
/// restarted node is a *different* identity with the same name, and its state replaces its
/// previous life's state everywhere. `name` is opaque to gossip (fechter uses "ip:port").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct NodeId {
    /// The stable name of the node; one entry per name exists in a [`ClusterView`].
    pub name: String,
    /// Distinguishes successive runs of the node; a larger generation always wins.
    pub generation: u64,
    /// Where peers send datagrams to reach this node.
    pub gossip_addr: SocketAddr,
}

/// What the failure detector (or the node itself) says about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Liveness {
    /// Heartbeats arrive as expected (or the node is this node).
    Alive,
    /// Heartbeats stopped arriving, or the node was learned about but has not yet shown the two
    /// heartbeats that prove it is running.
    Dead,
    /// The node announced that it leaves the cluster on purpose.
    Left,
}

/// One node as this node currently sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The newest generation of this name known here.
    pub id: NodeId,
    /// Alive, dead or left.
    pub liveness: Liveness,
    /// The current suspicion level; `None` for this node itself and for nodes without heartbeat
    /// history (never seen alive, or cleared when declared dead).
    pub phi: Option<f64>,
    /// Whether the node hears this node, as [`crate::Gossip::hears_me`] judged it at the last
    /// round: `Some(false)` for a peer whose datagrams arrive while this node's do not reach it
    /// (a one-way partition); `None` for this node itself and without a fresh reading.
    pub hears_me: Option<bool>,
    /// Whether the node held every key this node has written, as
    /// [`crate::Gossip::holds_all_mine`] judged it at the last round; `None` for this node
    /// itself and without a fresh reading.
    pub holds_all_mine: Option<bool>,
    /// The node's live (non-deleted) keys.
    pub keys: BTreeMap<String, Vec<u8>>,
}

/// A snapshot of the whole cluster as this node sees it, this node included.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// This node.
    pub self_id: NodeId,
    /// One entry per node name; the newest generation wins.
    pub nodes: BTreeMap<String, NodeView>,
}

/// What a peer reported about this node in the last digest it sent this node directly (its
/// `Syn`, or its `SynAck` answering this node's `Syn`): how current its copy of this node's
/// heartbeat was, and how much of this node's keys it held. A peer that keeps sending such
/// readings with a growing lag hears nothing of this node, even though its own heartbeats
/// still arrive (a one-way partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// This node's heartbeat when the digest arrived minus the heartbeat of this node that the
    /// peer listed, zero when the peer was current. Each round bumps the heartbeat once, so the
    /// lag counts rounds.
    pub heartbeat_lag: u64,
    /// The newest version of this node's keys that the peer held (every version up to it).
    pub max_version: u64,
    /// When the digest arrived.
    pub at: Instant,
}

/// A change that the application may want to react to. Heartbeats alone never produce one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node became alive: it was learned and showed two heartbeats, or it came back after
    /// being declared dead.
    NodeAlive(NodeId),
    /// The failure detector declared a node dead, or a newer generation replaced it.
    NodeDead(NodeId),
    /// A node announced that it leaves.
    NodeLeft(NodeId),
    /// A key of a node (this node included) was set or deleted (`value: None`).
    KeyChanged {
        /// The node that owns the key.
        node: NodeId,
        /// The key.
        key: String,
        /// The new value, or `None` when the key was deleted or its owner's old generation was
        /// dropped.
        value: Option<Vec<u8>>,
    },
}

/// A datagram the caller must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The destination.
    pub to: SocketAddr,
    /// The complete datagram, never longer than the configured budget.
    pub datagram: Vec<u8>,
}

/// Why a local write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The value cannot travel in one datagram next to its key, so it could never be gossiped.
    #[error("value of {len} bytes exceeds the maximum of {max} bytes for this key")]
    ValueTooLarge {
        /// The length of the refused value.
        len: usize,
        /// The largest value this key can carry.
        max: usize,
    },
    /// The key alone leaves no room for any value in one datagram.
    #[error("key of {len} bytes is too long to fit in a datagram")]
    KeyTooLarge {
        /// The length of the refused key.
        len: usize,
    },
    /// The gossip driver has stopped (after `leave`), so the write went nowhere.
    #[error("the gossip driver has stopped")]
    Stopped,
}

/// Traffic counters of one node. Every received datagram is either handled or counted in
/// exactly one `dropped_*` field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the transport.
    pub datagrams_sent: u64,
    /// Bytes handed to the transport.
    pub bytes_sent: u64,
    /// Of the datagrams sent, the continuation `Ack`s that carried deltas on beyond an
    /// exchange's first datagram to a peer that lacked more (see `Config::max_delta_datagrams`).
    pub extra_delta_datagrams: u64,
    /// Datagrams received (handled or dropped).
    pub datagrams_received: u64,
    /// Bytes received (handled or dropped).
    pub bytes_received: u64,
    /// Dropped: the datagram does not start with the gossip magic.
    pub dropped_bad_magic: u64,
    /// Dropped: another protocol version.
    pub dropped_wrong_version: u64,
    /// Dropped: another cluster id.
    pub dropped_other_cluster: u64,
    /// Dropped: not sealed with a key of the ring, or plaintext received by a keyed node, or
    /// sealed and received by a node without keys.
    pub dropped_auth_failure: u64,
    /// Dropped: a sequence number seen before (or too old), or a sender generation older than
    /// the newest one seen for that name.
    pub dropped_replay: u64,
    /// Dropped: the body does not decode, or has trailing bytes.
    pub dropped_malformed: u64,
    /// Dropped: longer than the datagram budget.
    pub dropped_oversized: u64,
    /// Dropped: sent by a node using this node's own name, or by a forgotten or superseded
    /// generation of a peer.
    pub dropped_stale_sender: u64,
    /// Node deltas about this node's own name that peers offered and that were ignored (the
    /// guard against a restarted node receiving its previous life's keys).
    pub ignored_updates_about_self: u64,
}
