//! Configuration of one gossip node and its defaults.
//!
//! The defaults target fechter: a LAN of up to about 20 nodes whose failover must happen well
//! under one second. With a 100 ms round, a silent node's last heartbeat reaches every peer
//! within about two rounds, and the detector (threshold 8, `min_std_dev` 40 ms,
//! `acceptable_pause` 60 ms) fires about `mean + pause + 5.2 * std` after that last arrival:
//! 100 + 60 + 5.2 * 40 = 370 ms while the observed inter-arrival spread stays below the floor.
//! The bound is therefore about 300 to 600 ms after the node fell silent, measured in the seeded
//! lossless simulation of 10 nodes as 300 to 400 ms for the first peer and 400 to 600 ms for the
//! last one; a ten-minute run with 5 % loss and up to 30 ms of jitter declares no live node dead
//! (see the crate's tests and `benches/convergence.rs`). Larger clusters page their digests, so
//! heartbeats arrive less regularly and the detector adapts to a wider spread: detection slows
//! (under a second at 100 nodes, seconds at 1000) instead of producing false deaths.

use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::KeyRing;

/// Everything a [`crate::Gossip`] core needs to know. Build it with [`Config::new`] and adjust
/// fields as needed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Datagrams carrying another cluster id are dropped and counted.
    pub cluster_id: String,
    /// This node's stable name.
    pub node_name: String,
    /// New on every start; a larger generation replaces a smaller one everywhere.
    pub generation: u64,
    /// Where peers reach this node.
    pub gossip_addr: SocketAddr,
    /// Addresses to join through; retried every round while no live peer is known.
    pub seeds: Vec<SocketAddr>,
    /// The length of one round; every round sends exactly one heartbeat.
    pub gossip_interval: Duration,
    /// How many live peers each round talks to.
    pub fanout: usize,
    /// The phi value above which a node is declared dead.
    pub phi_threshold: f64,
    /// The floor of the standard deviation of heartbeat inter-arrival times, so that a very
    /// regular history does not make the detector fire on the first small delay.
    pub min_std_dev: Duration,
    /// Extra silence tolerated on top of the mean inter-arrival time before suspicion grows,
    /// covering one lost or late datagram.
    pub acceptable_pause: Duration,
    /// The largest datagram ever sent, sealing included; larger received datagrams are dropped.
    /// Every node of a cluster must use the same budget.
    pub datagram_budget: usize,
    /// The most datagrams of deltas one exchange sends a peer that is far behind: the `SynAck`
    /// or `Ack` itself plus continuation `Ack`s, each within the budget. Values below one count
    /// as one (a single datagram per exchange).
    ///
    /// The default, 8, ships about 11 KB per exchange: at gigabit speed that burst leaves the
    /// host in about 90 microseconds, so the heartbeats queued behind it are hardly delayed. A node
    /// takes part in about `2 * fanout` exchanges per round, so even if every one of them
    /// bursts, some 50 datagrams are queued at once, well within Linux's default socket buffers
    /// (about 208 KiB, some 90 datagrams of this size once the kernel's per-packet overhead is
    /// counted), on the sending and on the receiving side; a larger bound would let a few bulk
    /// transfers crowd those buffers, and the driver drops what does not fit at once. Eight per
    /// exchange already brings a 10 000-key batch (about 400 KB) to all of 1000 simulated nodes
    /// with 1 s rounds in 55 s instead of 430 s, and 3000 keys to 20 nodes in under 10 rounds
    /// instead of about 65 (`benches/bulk.rs`, `tests/sim.rs`).
    pub max_delta_datagrams: usize,
    /// Every node is named by its gossip address written out (`ip:port`, `[ip6]:port`), so an
    /// identity whose name and address differ is refused: without a cluster key, a datagram
    /// corrupted on purpose or by a broken device would otherwise add a phantom node.
    pub names_are_addresses: bool,
    /// How long a deleted key's tombstone is kept before it is collected.
    pub tombstone_grace: Duration,
    /// How long a dead or departed node is kept before it is forgotten.
    pub dead_node_grace: Duration,
    /// `Some`: every datagram is sealed and plaintext is refused.
    pub keys: Option<KeyRing>,
    /// Seeds the core's random choices, so that simulations repeat exactly.
    pub rng_seed: u64,
}

impl Config {
    /// A configuration with the defaults described in the module documentation: 100 ms rounds,
    /// fanout 3, phi threshold 8, a 1400-byte budget, up to 8 datagrams of deltas per exchange,
    /// 15 minutes of grace for tombstones and dead nodes, no seeds, no keys, and a random seed
    /// derived from the name and generation.
    pub fn new(
        cluster_id: impl Into<String>,
        node_name: impl Into<String>,
        generation: u64,
        gossip_addr: SocketAddr,
    ) -> Config {
        let node_name = node_name.into();
        Config {
            cluster_id: cluster_id.into(),
            rng_seed: fnv1a(node_name.as_bytes()) ^ generation.rotate_left(17),
            node_name,
            generation,
            gossip_addr,
            seeds: Vec::new(),
            gossip_interval: Duration::from_millis(100),
            fanout: 3,
            phi_threshold: 8.0,
            min_std_dev: Duration::from_millis(40),
            acceptable_pause: Duration::from_millis(60),
            datagram_budget: 1400,
            max_delta_datagrams: 8,
            names_are_addresses: false,
            tombstone_grace: Duration::from_secs(15 * 60),
            dead_node_grace: Duration::from_secs(15 * 60),
            keys: None,
        }
    }
}

/// A small, stable hash (FNV-1a) so that the default seed does not depend on the process.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
