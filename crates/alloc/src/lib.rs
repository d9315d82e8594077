//! Least-loaded, sticky, deterministic allocation of an address pool over eligible nodes.
//!
//! [`allocate`] is a pure function: the same pool, eligible set and current assignment give the same
//! [`Allocation`] on every node of a cluster, so any node can compute it and all agree.
//! It does no IO, reads no clock, draws no random numbers and cannot fail.
//!
//! # Rules
//!
//! 1. Every active address is held by exactly one eligible node (by none if no node is eligible).
//!    Tombstoned addresses, and addresses of `current` that are not in the pool, are dropped.
//! 2. Loads are balanced: any two eligible nodes hold counts that differ by at most one.
//! 3. Assignments are sticky and the number of moves is the least that rule 2 allows.
//!    A node that leaves moves only its own addresses; a node that joins takes only what balance
//!    requires, and only from nodes that hold more than their share.
//! 4. Addresses that must be placed go, in pool order, to the least-loaded node.
//!    Ties go to the node with the lowest [`tie_break_hash`] of (node id, address), so spare
//!    addresses spread over the nodes instead of always landing on the same one.
//! 5. From an empty assignment this is the original Fechter's rule: least-loaded, in pool order.
//! 6. The result depends only on the inputs' values, never on iteration order of hash tables.
//!
//! # Algorithm
//!
//! With `T` active addresses and `n` eligible nodes, a balanced result has `T % n` nodes holding
//! `T / n + 1` addresses (the ceiling slots) and the others `T / n`.
//! A node keeps `min(its current load, its target)` of its addresses, so the fewest moves come from
//! handing the ceiling slots to the nodes that already hold more than `T / n`, the most loaded first.
//!
//! 1. Each active address already on an eligible node stays there for now; everything else
//!    (unassigned, or on a node that is gone or ineligible) is waiting to be placed.
//! 2. Nodes holding more than `T / n` are ranked by load, most first (ties: lowest `node_key` in the
//!    definition of [`tie_break_hash`], then node id) and the first `T % n` of them keep `T / n + 1`;
//!    the rest keep `T / n`.
//!    An overloaded node gives up the addresses it ranks worst: those with the highest
//!    [`tie_break_hash`] for that node (a 64-bit tie goes by pool order, the later one leaves).
//!    Its best-ranked addresses therefore stay put across repeated rebalancing.
//! 3. The waiting addresses are placed in pool order, each on a least-loaded node, ties by the
//!    lowest [`tie_break_hash`].
//!    Nodes sit in tiers by load; only the tier at the lowest load is searched, and a node that
//!    receives an address moves up to the next one.
//!    Every node ends at `T / n` or `T / n + 1`, and no placed address returns to a node that gave
//!    it up, so every move is needed and their number is the minimum.
//!
//! Within a tier the nodes are kept in the 64 groups of the hash, so finding the winner for an
//! address costs one hash per occupied group plus one per node of the winning group, about
//! `64 + n / 64`, instead of one per node.
//! Placing 10 000 addresses on 1 000 nodes from empty thus takes under a million hashes instead of
//! five million, and building the output (one `String` per assignment and per move) costs as much.
//!
//! # Pool order and duplicates
//!
//! The pool lists entries in the order they were added; a removed entry stays in place as a tombstone.
//! An address is active when at least one of its entries is active, and it takes the place of its
//! first active entry (or of its first entry, when all are tombstones).
//! [`Allocation::moves`] follows that order; drops of addresses unknown to the pool come last, in
//! address order.
//!
//! # Hash
//!
//! [`tie_break_hash`] is two-level rendezvous hashing built from FNV-1a 64 and the splitmix64
//! finalizer: its high half ranks the node's group (one of 64, from the node id) for the address, its
//! low half ranks the node itself.
//! It is fixed by its definition in the function's docs, identical on every machine, and pinned by
//! tests against values from an independent implementation.
#![deny(missing_docs)]

mod hash;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

pub use crate::hash::tie_break_hash;

/// Whether a pool entry still asks for its address to be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryState {
    /// The address must be held by one eligible node.
    Active,
    /// The entry was removed: it keeps its place in the pool but is never assigned.
    Tombstone,
}

/// One address of the pool, as configured by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolEntry {
    /// The interface the address is added to, e.g. `eth0`.
    pub interface: String,
    /// The address itself.
    pub address: IpAddr,
    /// The prefix length the address is added with.
    pub prefix_len: u8,
    /// Whether the entry is active or removed.
    pub state: EntryState,
}

/// Current or new assignment: address -> node id. Node ids are opaque strings (fechter uses "ip:port").
pub type Assignment = BTreeMap<IpAddr, String>;

/// One address whose holder changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Move {
    /// The address that changes hands.
    pub address: IpAddr,
    /// The node that held it, `None` if it was unassigned.
    pub from: Option<String>,
    /// The node that holds it now, `None` if it is unassigned now.
    pub to: Option<String>,
}

/// The result of [`allocate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Allocation {
    /// The new assignment: every active address on one eligible node, nothing else.
    pub assignment: Assignment,
    /// One entry per address whose holder changes, in pool order (see the crate docs).
    pub moves: Vec<Move>,
}

/// Assigns the active addresses of `pool` to the `eligible` nodes, starting from `current`.
///
/// `pool` is ordered as addresses were added (tombstones included, never assigned).
/// `eligible` holds the node ids that may hold addresses.
/// `current` may name nodes that are gone or ineligible, and addresses that are tombstoned or not
/// in the pool at all: all of those are moved or dropped.
/// See the crate documentation for the rules and the algorithm.
pub fn allocate(pool: &[PoolEntry], eligible: &BTreeSet<String>, current: &Assignment) -> Allocation {
    let nodes = Nodes::new(eligible);
    let mut addresses = distinct_addresses(pool);
    let unknown = attach_current_holders(&mut addresses, current, &nodes);
    let by_position = order_by_position(&addresses, pool.len());

    if !nodes.ids.is_empty() {
        let mut loads = vec![0_usize; nodes.ids.len()];
        for address in addresses.iter_mut().filter(|address| address.active) {
            address.next_node = address.previous_node;
            if let Some(node) = address.next_node {
                loads[node] += 1;
            }
        }
        let active_count = addresses.iter().filter(|address| address.active).count();
        shed_excess(&mut addresses, &by_position, &nodes, &mut loads, active_count);
        place_waiting(&mut addresses, &by_position, &nodes, &loads);
    }

    // Both outputs are built into vectors of their exact size: growing them while collecting cost
    // reallocations and copies that showed up in profiles at fleet scale.
    let mut held: Vec<(IpAddr, String)> =
        Vec::with_capacity(addresses.iter().filter(|address| address.next_node.is_some()).count());
    held.extend(addresses.iter().filter_map(|address| {
        let node = address.next_node?;
        Some((address.address, nodes.ids[node].to_owned()))
    }));
    // `held` is already in address order, so the map's sort finds one run and builds in bulk.
    let assignment = held.into_iter().collect();
    let changed_count = addresses.iter().filter(|address| address.holder_changes()).count();
    let mut moves = Vec::with_capacity(changed_count + unknown.len());
    moves.extend(
        by_position.iter().map(|&index| &addresses[index]).filter(|address| address.holder_changes()).map(
            |address| Move {
                address: address.address,
                from: address.previous.map(str::to_owned),
                to: address.next_node.map(|node| nodes.ids[node].to_owned()),
            },
        ),
    );
    moves.extend(unknown.into_iter().map(|(address, holder)| Move {
        address,
        from: Some(holder.to_owned()),
        to: None,
    }));
    Allocation { assignment, moves }
}

/// The eligible nodes, indexed in id order, with their precomputed hash keys.
struct Nodes<'a> {
    ids: Vec<&'a str>,
    keys: Vec<u64>,
    /// Looks up node indices by id; only ever queried, never iterated, so its order cannot leak.
    index_by_id: HashMap<&'a str, usize, BuildHasherDefault<IdHasher>>,
}

impl<'a> Nodes<'a> {
    fn new(eligible: &'a BTreeSet<String>) -> Self {
        let ids: Vec<&str> = eligible.iter().map(String::as_str).collect();
        let keys = ids.iter().map(|id| hash::node_key(id)).collect();
        let index_by_id = ids.iter().enumerate().map(|(index, &id)| (id, index)).collect();
        Nodes { ids, keys, index_by_id }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.index_by_id.get(id).copied()
    }
}

/// A fast, fixed hasher for node ids in [`Nodes::index_by_id`].
///
/// A binary search over the sorted ids cost a string comparison per step and dominated rebalancing;
/// this reads eight bytes per multiply. It is not [`tie_break_hash`] and never affects results.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        hash::mix(self.0)
    }
}

/// One distinct address of the pool and what happens to it.
struct PoolAddress<'a> {
    address: IpAddr,
    /// Index of the pool entry that gives the address its place in pool order.
    position: usize,
    active: bool,
    /// The holder named by `current`, eligible or not.
    previous: Option<&'a str>,
    /// The holder named by `current`, when it is eligible and the address is active.
    previous_node: Option<usize>,
    /// The holder in the result.
    next_node: Option<usize>,
}

impl PoolAddress<'_> {
    fn holder_changes(&self) -> bool {
        match (self.previous, self.next_node) {
            (None, None) => false,
            (Some(_), Some(next)) => self.previous_node != Some(next),
            (Some(_), None) | (None, Some(_)) => true,
        }
    }
}

/// The distinct addresses of `pool`, sorted by address (the order of [`Assignment`]).
fn distinct_addresses(pool: &[PoolEntry]) -> Vec<PoolAddress<'_>> {
    let pool_address = |address, state, position| PoolAddress {
        address,
        position,
        active: state == EntryState::Active,
        previous: None,
        previous_node: None,
        next_node: None,
    };
    // A pool in strictly increasing address order, the common case, has no duplicates and is its own
    // sorted order; checking that costs one comparison per entry and saves the sort.
    if pool.windows(2).all(|pair| pair[0].address < pair[1].address) {
        return pool
            .iter()
            .enumerate()
            .map(|(position, entry)| pool_address(entry.address, entry.state, position))
            .collect();
    }
    let mut entries: Vec<(IpAddr, EntryState, usize)> =
        pool.iter().enumerate().map(|(position, entry)| (entry.address, entry.state, position)).collect();
    // Active sorts before Tombstone, so the first entry of each address is its first active one
    // if it has any, and its first entry otherwise.
    entries.sort_unstable();
    entries.dedup_by_key(|entry| entry.0);
    entries.into_iter().map(|(address, state, position)| pool_address(address, state, position)).collect()
}

/// Records the current holder of each pool address; returns the held addresses that are not in the pool.
fn attach_current_holders<'a>(
    addresses: &mut [PoolAddress<'a>],
    current: &'a Assignment,
    nodes: &Nodes<'_>,
) -> Vec<(IpAddr, &'a str)> {
    let mut unknown = Vec::new();
    let mut cursor = 0;
    // Both sides are sorted by address, so one merge pass pairs them up.
    for (&address, holder) in current {
        while addresses.get(cursor).is_some_and(|slot| slot.address < address) {
            cursor += 1;
        }
        match addresses.get_mut(cursor) {
            Some(slot) if slot.address == address => {
                slot.previous = Some(holder);
                if slot.active {
                    slot.previous_node = nodes.index_of(holder);
                }
            }
            _ => unknown.push((address, holder.as_str())),
        }
    }
    unknown
}

/// Indices into `addresses`, in pool order.
fn order_by_position(addresses: &[PoolAddress<'_>], pool_len: usize) -> Vec<usize> {
    // A pool already in address order needs no reordering.
    if addresses.windows(2).all(|pair| pair[0].position < pair[1].position) {
        return (0..addresses.len()).collect();
    }
    let mut at_position = vec![None; pool_len];
    for (index, address) in addresses.iter().enumerate() {
        at_position[address.position] = Some(index);
    }
    let mut ordered = Vec::with_capacity(addresses.len());
    ordered.extend(at_position.into_iter().flatten());
    ordered
}

/// Takes from overloaded nodes the addresses that balance requires them to give up.
fn shed_excess(
    addresses: &mut [PoolAddress<'_>],
    by_position: &[usize],
    nodes: &Nodes<'_>,
    loads: &mut [usize],
    active_count: usize,
) {
    let node_count = loads.len();
    let base = active_count / node_count;
    let ceiling_slots = active_count % node_count;

    let mut above_base: Vec<usize> = (0..node_count).filter(|&node| loads[node] > base).collect();
    if above_base.len() > ceiling_slots {
        // Which of the tied nodes keep a ceiling slot does not change the number of moves; ranking
        // them by node key rather than by id avoids always taking from the same end of the id space.
        above_base.sort_unstable_by_key(|&node| (Reverse(loads[node]), nodes.keys[node], node));
    }
    let mut excess = vec![0_usize; node_count];
    for (rank, &node) in above_base.iter().enumerate() {
        let target = if rank < ceiling_slots { base + 1 } else { base };
        excess[node] = loads[node] - target;
    }

    // Every address of a node with excess, ranked so that each node's worst-ranked addresses come first.
    let mut candidates: Vec<(usize, Reverse<u64>, Reverse<usize>, usize)> = by_position
        .iter()
        .filter_map(|&index| {
            let address = &addresses[index];
            let node = address.next_node?;
            (excess[node] > 0).then(|| {
                let hash = hash::combine(nodes.keys[node], hash::address_key(address.address));
                (node, Reverse(hash), Reverse(address.position), index)
            })
        })
        .collect();
    candidates.sort_unstable();
    for (node, _, _, index) in candidates {
        if excess[node] > 0 {
            excess[node] -= 1;
            loads[node] -= 1;
            addresses[index].next_node = None;
        }
    }
}

/// Places every active address without a holder, in pool order, on a least-loaded node.
fn place_waiting(
    addresses: &mut [PoolAddress<'_>],
    by_position: &[usize],
    nodes: &Nodes<'_>,
    loads: &[usize],
) {
    let mut by_load: Vec<usize> = (0..loads.len()).collect();
    by_load.sort_by_key(|&node| loads[node]);
    let mut not_yet_lowest = by_load.into_iter().peekable();
    let mut level = 0;
    // The nodes at the lowest load `level`, and those that already received an address at this level.
    let mut lowest = Tier::default();
    let mut raised = Tier::default();

    for &index in by_position {
        let address = &mut addresses[index];
        if !address.active || address.next_node.is_some() {
            continue;
        }
        if lowest.is_empty() {
            // Everyone at the old level has received one, so they form the next level together
            // with the nodes that started there.
            std::mem::swap(&mut lowest, &mut raised);
            level = match (lowest.is_empty(), not_yet_lowest.peek()) {
                (false, _) => level + 1,
                (true, Some(&node)) => loads[node],
                (true, None) => return,
            };
            while let Some(node) = not_yet_lowest.next_if(|&node| loads[node] == level) {
                lowest.insert(node, nodes.keys[node]);
            }
        }
        // The tier was refilled above, so it has a member to give.
        let Some(node) = lowest.take_best(hash::address_key(address.address)) else {
            return;
        };
        address.next_node = Some(node);
        raised.insert(node, nodes.keys[node]);
    }
}

/// Nodes at one load, in the groups of [`tie_break_hash`], so that whole groups are ranked at once.
struct Tier {
    /// Per group: (node key, node index) of its members.
    groups: Vec<Vec<(u64, usize)>>,
    /// Bit `g` is set when group `g` has members; a mask rather than a list so that leaving costs
    /// nothing and the ranking loop walks the groups without indirection.
    occupied: u64,
}

// `Tier::occupied` has one bit per group.
const _: () = assert!(hash::GROUP_COUNT <= u64::BITS as usize);

impl Default for Tier {
    fn default() -> Self {
        Tier { groups: vec![Vec::new(); hash::GROUP_COUNT], occupied: 0 }
    }
}

impl Tier {
    fn is_empty(&self) -> bool {
        self.occupied == 0
    }

    fn insert(&mut self, node: usize, node_key: u64) {
        let group = hash::group_of(node_key);
        self.occupied |= 1 << group;
        self.groups[group].push((node_key, node));
    }

    /// Removes and returns the member with the lowest [`tie_break_hash`] for the address, then node id.
    fn take_best(&mut self, address_key: u64) -> Option<usize> {
        // Group ranks fit in 32 bits, so the first occupied group always beats the start value.
        let mut best_rank = u64::MAX;
        // The occupied groups that share the best rank so far.
        let mut best_groups = 0_u64;
        let mut remaining = self.occupied;
        while remaining != 0 {
            let group = remaining.trailing_zeros() as usize;
            remaining &= remaining - 1;
            let rank = hash::group_rank(group, address_key);
            if rank < best_rank {
                best_rank = rank;
                best_groups = 1 << group;
            } else if rank == best_rank {
                best_groups |= 1 << group;
            }
        }

        // Groups tie on their rank only by a 32-bit collision; then the node ranks decide across them.
        // Rank and node index are packed into one number so that a plain `min` picks the winner without
        // a branch per member, which mispredicted whenever a new best turned up.
        let mut best = u128::MAX;
        let mut groups = best_groups;
        while groups != 0 {
            let group = groups.trailing_zeros() as usize;
            groups &= groups - 1;
            for &(node_key, node) in &self.groups[group] {
                best = best.min((u128::from(hash::node_rank(node_key, address_key)) << 64) | node as u128);
            }
        }
        if best == u128::MAX {
            return None;
        }
        // The low half holds the node index, which always fits.
        let node = best as usize;

        let mut groups = best_groups;
        while groups != 0 {
            let group = groups.trailing_zeros() as usize;
            groups &= groups - 1;
            if let Some(slot) = self.groups[group].iter().position(|&(_, member)| member == node) {
                self.groups[group].swap_remove(slot);
                if self.groups[group].is_empty() {
                    self.occupied &= !(1 << group);
                }
                break;
            }
        }
        Some(node)
    }
}
