//! The tie-break hash: a fixed, portable function of (node id, address).
//!
//! Every node of a cluster must rank candidates identically, whatever its architecture or compiler,
//! so nothing here uses `std::hash` (whose `DefaultHasher` may change between releases).
//! The hash is split into a per-node key and a per-address key so that the allocator computes each key
//! once, and into a group rank and a node rank so that it can skip whole groups of nodes.

use std::net::IpAddr;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// How many bits of the node key choose its group.
const GROUP_BITS: u32 = 6;
/// How many groups the nodes fall into.
pub(crate) const GROUP_COUNT: usize = 1 << GROUP_BITS;

/// The key of each group: the splitmix64 sequence from seed 0, i.e. `mix((group + 1) * GOLDEN_GAMMA)`.
pub(crate) const GROUP_KEYS: [u64; GROUP_COUNT] = {
    let mut keys = [0; GROUP_COUNT];
    let mut group = 0;
    while group < GROUP_COUNT {
        keys[group] = mix((group as u64 + 1).wrapping_mul(GOLDEN_GAMMA));
        group += 1;
    }
    keys
};

/// The tie-break hash of `node_id` and `address`; among equally loaded nodes the lowest value wins.
///
/// Exact definition (all arithmetic wrapping on `u64`, `>>` a logical shift):
///
/// ```text
/// fnv1a64(bytes) = fold over bytes, from h = 0xcbf29ce484222325: h = (h ^ byte) * 0x100000001b3
/// mix(z)         = the splitmix64 finalizer:
///                    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
///                    z = (z ^ (z >> 27)) * 0x94d049bb133111eb
///                    z ^ (z >> 31)
/// node_key       = mix(fnv1a64(UTF-8 bytes of node_id))
/// group          = node_key >> 58                        (one of 64 groups)
/// group_key      = mix((group + 1) * 0x9e3779b97f4a7c15) (the splitmix64 sequence from seed 0)
/// address_key    = rotate_left(mix(fnv1a64(address octets, network order: 4 or 16 bytes)), 32)
/// group_rank     = mix(group_key ^ address_key) >> 32
/// node_rank      = mix(node_key ^ address_key) >> 32
/// tie_break_hash = (group_rank << 32) | node_rank
/// ```
///
/// This is two-level rendezvous hashing: each address ranks the 64 groups pseudo-randomly, then the
/// nodes within a group, so spare addresses spread over all nodes and the ranking of two nodes never
/// depends on which other nodes exist.
/// Finding the winner among `n` equally loaded nodes takes about `64 + n / 64` evaluations of `mix`
/// instead of `n`, which is what keeps placing 10 000 addresses on 1 000 nodes fast.
/// The price is a mild bias: nodes that share a group split that group's wins.
///
/// Each key is mixed on its own first so that similar ids (`10.0.0.1:4573`, `10.0.0.2:4573`) and
/// neighbouring addresses get unrelated keys.
/// The rotation keeps a node id whose bytes equal an address's octets from cancelling out to
/// `mix(0) = 0` for that address.
/// An IPv4 address and its IPv4-mapped IPv6 form hash differently, as they are different addresses here.
pub fn tie_break_hash(node_id: &str, address: IpAddr) -> u64 {
    combine(node_key(node_id), address_key(address))
}

/// The per-node half of [`tie_break_hash`].
pub(crate) fn node_key(node_id: &str) -> u64 {
    mix(fnv1a64(node_id.as_bytes()))
}

/// The group of a [`node_key`].
pub(crate) fn group_of(node_key: u64) -> usize {
    (node_key >> (64 - GROUP_BITS)) as usize
}

/// The per-address half of [`tie_break_hash`].
pub(crate) fn address_key(address: IpAddr) -> u64 {
    let hash = match address {
        IpAddr::V4(v4) => fnv1a64(&v4.octets()),
        IpAddr::V6(v6) => fnv1a64(&v6.octets()),
    };
    mix(hash).rotate_left(32)
}

/// The high half of [`tie_break_hash`], shifted down: how `address_key` ranks the group.
#[inline]
pub(crate) fn group_rank(group: usize, address_key: u64) -> u64 {
    mix(GROUP_KEYS[group % GROUP_COUNT] ^ address_key) >> 32
}

/// The low half of [`tie_break_hash`]: how `address_key` ranks the node within its group.
#[inline]
pub(crate) fn node_rank(node_key: u64, address_key: u64) -> u64 {
    mix(node_key ^ address_key) >> 32
}

/// [`tie_break_hash`] from precomputed keys.
pub(crate) fn combine(node_key: u64, address_key: u64) -> u64 {
    (group_rank(group_of(node_key), address_key) << 32) | node_rank(node_key, address_key)
}

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME))
}

#[inline]
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
