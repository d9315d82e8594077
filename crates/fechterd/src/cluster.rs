//! The gossip key schema and its decoding into typed node states.
//!
//! Each node writes only its own keyspace; values are small JSON documents:
//! - `node`: [`NodeStatus`], the node's admin state, gateway reachability and eligibility;
//! - `held:<addr>`: [`HeldRecord`], one per address the node really holds (as netlink shows);
//! - `pool:<addr>`: [`PoolRecord`], the pool records it wrote or re-published;
//! - `assign:<addr>`: the node id the node, as leader, assigned the address to;
//! - `commit`: [`Commit`], written after the `assign:*` keys it covers.
//!
//! Everything here comes from peers, so decoding never fails as a whole: a key that does not decode
//! is skipped and reported as a [`DecodeProblem`], and the rest of the node's state is still used.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use fechter_alloc::Assignment;
use fechter_cli::proto::Liveness;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pool::{PoolRecord, validate_interface, validate_prefix};

/// The key of a node's [`NodeStatus`].
pub const NODE_KEY: &str = "node";
/// The prefix of the keys naming the addresses a node holds.
pub const HELD_PREFIX: &str = "held:";
/// The prefix of the pool record keys.
pub const POOL_PREFIX: &str = "pool:";
/// The prefix of a leader's assignment keys.
pub const ASSIGN_PREFIX: &str = "assign:";
/// The key of a leader's [`Commit`].
pub const COMMIT_KEY: &str = "commit";

/// The longest node id accepted from a peer; real ids (`[v6]:port`) are far shorter.
const MAX_NODE_ID: usize = 64;

/// The operator's say on a node, as published in gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admin {
    /// `fechter up`.
    Up,
    /// `fechter down`, and the state after every start.
    Down,
}

/// What a node publishes about itself under [`NODE_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The admin state.
    pub admin: Admin,
    /// Whether its gateway answers.
    pub gateway_reachable: bool,
    /// Whether it may hold addresses: admin up, gateway reachable, quorum seen, settled.
    pub eligible: bool,
    /// The decision the node has reconciled its interfaces with. Published after the `held:*`
    /// keys that reconcile changed, so a leader that sees it also sees what the node released.
    /// A new leader also starts its term above every one of these, including the terms of
    /// commits whose authors have since restarted and lost them.
    pub applied: Option<CommitRef>,
    /// The health checks that fail there (see `checks`); any makes the node ineligible.
    /// Absent from older nodes, which have no checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_checks: Vec<String>,
    /// The pool interfaces that are missing, down or without carrier there: the leader gives it
    /// none of their addresses. Absent from older nodes, which do not watch their links.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub down_interfaces: BTreeSet<String>,
}

/// A commit and the node that wrote it, totally ordered: by term, then the lower author id
/// (the one the rest of the cluster follows), then sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRef {
    /// The leader term.
    pub term: u64,
    /// The decision within the term.
    pub seq: u64,
    /// The node that wrote it.
    pub author: String,
}

impl Ord for CommitRef {
    fn cmp(&self, other: &Self) -> Ordering {
        self.term
            .cmp(&other.term)
            .then_with(|| compare_ids(&other.author, &self.author))
            .then(self.seq.cmp(&other.seq))
            .then_with(|| other.author.cmp(&self.author))
    }
}

impl PartialOrd for CommitRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An address a node holds, under `held:<addr>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRecord {
    /// The interface it is installed on.
    pub interface: String,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// A leader's decision marker: the `assign:*` keys written before it form the assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Grows whenever a node takes over as leader.
    pub term: u64,
    /// Grows with every decision within a term.
    pub seq: u64,
    /// The author saw no live peer when it decided: the decision counts only for nodes that
    /// follow nothing yet (see `leader::adopt`). Absent from older nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alone: bool,
}

/// One node's state as decoded from gossip.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// The node id, `ip:port`.
    pub id: String,
    /// What the failure detector says.
    pub liveness: Liveness,
    /// The failure detector's suspicion, when known.
    pub phi: Option<f64>,
    /// It sends gossip but, by what it reports of this node, hears nothing from it: a one-way
    /// partition, a broken receive path. Never true of this node itself.
    pub deaf: bool,
    /// By what it last reported directly, it held every key this node had written; `None`
    /// without a recent report (rare in a large cluster, where two nodes talk directly only
    /// every few minutes) and for this node itself.
    pub holds_all_mine: Option<bool>,
    /// Its published status, if any.
    pub status: Option<NodeStatus>,
    /// The addresses it reports holding.
    pub held: BTreeMap<IpAddr, HeldRecord>,
    /// The pool records it published.
    pub pool: BTreeMap<IpAddr, PoolRecord>,
    /// Its assignment keys, meaningful together with `commit`.
    pub assign: Assignment,
    /// Its latest commit, if it ever led.
    pub commit: Option<Commit>,
}

impl NodeState {
    /// A node known by id only, with nothing published.
    pub fn empty(id: &str, liveness: Liveness) -> NodeState {
        NodeState {
            id: id.to_owned(),
            liveness,
            phi: None,
            deaf: false,
            holds_all_mine: None,
            status: None,
            held: BTreeMap::new(),
            pool: BTreeMap::new(),
            assign: Assignment::new(),
            commit: None,
        }
    }

    /// Whether the failure detector considers the node alive.
    pub fn is_live(&self) -> bool {
        self.liveness == Liveness::Alive
    }
}

/// A key of a peer that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DecodeProblem {
    /// The node that published it.
    pub node: String,
    /// The key.
    pub key: String,
    /// What was wrong.
    pub reason: String,
}

/// Every node as decoded from one gossip view.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// This node's id.
    pub me: String,
    /// Every known node, this one included, by id.
    pub nodes: BTreeMap<String, NodeState>,
}

impl Cluster {
    /// The nodes the failure detector considers alive; this node always counts as alive.
    pub fn live(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.values().filter(|node| node.is_live() || node.id == self.me)
    }

    /// Whether `id` is this node or a live peer.
    pub fn is_live(&self, id: &str) -> bool {
        id == self.me || self.nodes.get(id).is_some_and(NodeState::is_live)
    }
}

/// Encodes a gossip value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail: no maps with non-string keys, no
    // custom serializers. An empty value would only be skipped by readers.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes one node's keys. Keys that do not decode are reported in `problems` and skipped.
pub fn decode_node(
    id: &str,
    liveness: Liveness,
    phi: Option<f64>,
    keys: &BTreeMap<String, Vec<u8>>,
    problems: &mut Vec<DecodeProblem>,
) -> NodeState {
    let mut node = NodeState::empty(id, liveness);
    node.phi = phi;
    for (key, value) in keys {
        let outcome = decode_key(&mut node, key, value);
        if let Err(reason) = outcome {
            problems.push(DecodeProblem { node: id.to_owned(), key: key.clone(), reason });
        }
    }
    node
}

fn decode_key(node: &mut NodeState, key: &str, value: &[u8]) -> Result<(), String> {
    if key == NODE_KEY {
        node.status = Some(parse(value)?);
    } else if key == COMMIT_KEY {
        node.commit = Some(parse(value)?);
    } else if let Some(address) = key.strip_prefix(HELD_PREFIX) {
        let address = parse_address(address)?;
        let held: HeldRecord = parse(value)?;
        validate_interface(&held.interface).map_err(|error| error.to_string())?;
        validate_prefix(address, held.prefix_len).map_err(|error| error.to_string())?;
        node.held.insert(address, held);
    } else if let Some(address) = key.strip_prefix(POOL_PREFIX) {
        let address = parse_address(address)?;
        let record: PoolRecord = parse(value)?;
        record.validate(address).map_err(|error| error.to_string())?;
        node.pool.insert(address, record);
    } else if let Some(address) = key.strip_prefix(ASSIGN_PREFIX) {
        let address = parse_address(address)?;
        let holder: String = parse(value)?;
        if holder.is_empty() || holder.len() > MAX_NODE_ID {
            return Err(format!("node id of {} bytes", holder.len()));
        }
        node.assign.insert(address, holder);
    }
    // Other keys belong to newer releases; ignoring them keeps mixed clusters working.
    Ok(())
}

fn parse<T: DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|error| error.to_string())
}

fn parse_address(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not an IP address"))
}

/// Orders node ids as the cluster does for leadership: parsed as socket addresses, IPv4 before
/// IPv6, addresses numerically, then the port. Ids that do not parse sort after all that do, by text.
pub fn compare_ids(a: &str, b: &str) -> Ordering {
    fn key(id: &str) -> (u8, Vec<u8>, u16, &str) {
        match id.parse::<SocketAddr>() {
            Ok(SocketAddr::V4(v4)) => (0, v4.ip().octets().to_vec(), v4.port(), ""),
            Ok(SocketAddr::V6(v6)) => (1, v6.ip().octets().to_vec(), v6.port(), ""),
            Err(_) => (2, Vec::new(), 0, id),
        }
    }
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Stamp;

    fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn ids_order_numerically_v4_before_v6_then_by_port() {
        let mut ids = vec![
            "[::1]:1",
            "10.0.0.10:4573",
            "10.0.0.9:4573",
            "10.0.0.9:80",
            "garbage",
            "2.0.0.0:1",
            "[2001:db8::1]:1",
        ];
        ids.sort_by(|a, b| compare_ids(a, b));
        assert_eq!(
            ids,
            vec![
                "2.0.0.0:1",
                "10.0.0.9:80",
                "10.0.0.9:4573",
                "10.0.0.10:4573",
                "[::1]:1",
                "[2001:db8::1]:1",
                "garbage"
            ]
        );
    }

    #[test]
    fn a_well_formed_node_decodes_fully() {
        let record = PoolRecord {
            interface: "eth0".into(),
            prefix_len: 32,
            active: true,
            added: Stamp { wall_ms: 1, counter: 0, node: "n".into() },
            changed: Stamp { wall_ms: 1, counter: 0, node: "n".into() },
        };
        let status = NodeStatus {
            admin: Admin::Up,
            gateway_reachable: true,
            eligible: true,
            applied: Some(CommitRef { term: 3, seq: 1, author: "10.0.0.1:4573".into() }),
            failing_checks: vec!["exec:true".into()],
            down_interfaces: BTreeSet::from(["eth1".to_owned()]),
        };
        let mut map = BTreeMap::new();
        map.insert(NODE_KEY.to_owned(), encode(&status));
        map.insert("pool:198.18.0.20".to_owned(), encode(&record));
        map.insert(
            "held:198.18.0.20".to_owned(),
            encode(&HeldRecord { interface: "eth0".into(), prefix_len: 32 }),
        );
        map.insert("assign:198.18.0.20".to_owned(), encode(&"10.0.0.1:4573"));
        map.insert(COMMIT_KEY.to_owned(), encode(&Commit { term: 3, seq: 1, alone: false }));
        let mut problems = Vec::new();
        let node = decode_node("10.0.0.1:4573", Liveness::Alive, Some(0.5), &map, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let address: IpAddr = "198.18.0.20".parse().unwrap();
        assert_eq!(node.status, Some(status));
        assert_eq!(node.pool[&address], record);
        assert_eq!(node.held[&address].interface, "eth0");
        assert_eq!(node.assign[&address], "10.0.0.1:4573");
        assert_eq!(node.commit, Some(Commit { term: 3, seq: 1, alone: false }));
    }

    #[test]
    fn bad_keys_are_reported_and_skipped_without_losing_the_rest() {
        let map = keys(&[
            ("node", "{\"admin\":\"sideways\"}"),
            ("held:not-an-ip", "{\"interface\":\"eth0\",\"prefix_len\":32}"),
            ("held:10.0.0.5", "{\"interface\":\"eth0\",\"prefix_len\":99}"),
            ("held:10.0.0.6", "{\"interface\":\"a/b\",\"prefix_len\":32}"),
            ("held:10.0.0.7", "{\"interface\":\"eth0\",\"prefix_len\":32}"),
            ("assign:10.0.0.7", "\"\""),
            ("commit", "\u{0}\u{1}"),
            ("pool:10.0.0.7", "[]"),
            ("future-key", "whatever"),
        ]);
        let mut problems = Vec::new();
        let node = decode_node("n", Liveness::Dead, None, &map, &mut problems);
        let bad: Vec<_> = problems.iter().map(|problem| problem.key.as_str()).collect();
        assert_eq!(
            bad,
            vec![
                "assign:10.0.0.7",
                "commit",
                "held:10.0.0.5",
                "held:10.0.0.6",
                "held:not-an-ip",
                "node",
                "pool:10.0.0.7"
            ]
        );
        assert_eq!(node.held.len(), 1);
        assert!(node.status.is_none() && node.commit.is_none() && node.assign.is_empty());
    }

    #[test]
    fn an_older_node_status_decodes_as_healthy_with_usable_links() {
        let map = keys(&[(
            "node",
            "{\"admin\":\"up\",\"gateway_reachable\":true,\"eligible\":true,\"applied\":null}",
        )]);
        let mut problems = Vec::new();
        let node = decode_node("n", Liveness::Alive, None, &map, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let status = node.status.unwrap();
        assert!(status.failing_checks.is_empty() && status.down_interfaces.is_empty());
        assert!(!String::from_utf8(encode(&status)).unwrap().contains("down_interfaces"));
    }

    #[test]
    fn commits_order_by_term_then_lower_author_then_seq() {
        let r = |term, seq, author: &str| CommitRef { term, seq, author: author.to_owned() };
        assert!(r(2, 0, "10.0.0.10:1") > r(1, 9, "10.0.0.1:1"));
        assert!(r(1, 0, "10.0.0.1:1") > r(1, 5, "10.0.0.10:1"));
        assert!(r(1, 5, "10.0.0.1:1") > r(1, 4, "10.0.0.1:1"));
    }

    #[test]
    fn this_node_is_always_live() {
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_owned(), NodeState::empty("a", Liveness::Dead));
        nodes.insert("b".to_owned(), NodeState::empty("b", Liveness::Left));
        nodes.insert("c".to_owned(), NodeState::empty("c", Liveness::Alive));
        let cluster = Cluster { me: "a".into(), nodes };
        let live: Vec<_> = cluster.live().map(|node| node.id.as_str()).collect();
        assert_eq!(live, vec!["a", "c"]);
        assert!(cluster.is_live("a") && !cluster.is_live("b") && !cluster.is_live("zz"));
    }
}
