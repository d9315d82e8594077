//! The tie-break hash: a fixed, portable function of (node id, address).
//!
//! Every node of a cluster must rank candidates identically, whatever its architecture or compiler,
//! so nothing here uses `std::hash` (whose `DefaultHasher` may change between releases).
//! The hash is split into a per-node key and a per-address key so that the allocator computes each key
//! once and pays only one [`mix`] per (node, address) pair in its inner loop.

use std::net::IpAddr;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The tie-break hash of `node_id` and `address`; among equally loaded nodes the lowest value wins.
///
/// Exact definition (all arithmetic wrapping on `u64`):
///
/// ```text
/// fnv1a64(bytes)  = fold over bytes, from h = 0xcbf29ce484222325: h = (h ^ byte) * 0x100000001b3
/// mix(z)          = the splitmix64 finalizer:
///                     z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
///                     z = (z ^ (z >> 27)) * 0x94d049bb133111eb
///                     z ^ (z >> 31)
/// node_key        = mix(fnv1a64(UTF-8 bytes of node_id))
/// address_key     = mix(fnv1a64(address octets in network order: 4 for IPv4, 16 for IPv6))
/// tie_break_hash  = mix(node_key ^ rotate_left(address_key, 32))
/// ```
///
/// Each key is mixed on its own first so that similar ids (`10.0.0.1:4573`, `10.0.0.2:4573`) and
/// neighbouring addresses get unrelated keys; the final `mix` then gives every address its own
/// pseudo-random ranking of the nodes, rendezvous style.
/// The rotation keeps a node id whose bytes happen to equal an address's octets from cancelling out
/// to `mix(0)` for that address.
/// An IPv4 address and its IPv4-mapped IPv6 form hash differently, as they are different addresses here.
pub fn tie_break_hash(node_id: &str, address: IpAddr) -> u64 {
    combine(node_key(node_id), address_key(address))
}

/// The per-node half of [`tie_break_hash`].
pub(crate) fn node_key(node_id: &str) -> u64 {
    mix(fnv1a64(node_id.as_bytes()))
}

/// The per-address half of [`tie_break_hash`], already rotated so that [`combine`] is a single `mix`.
pub(crate) fn address_key(address: IpAddr) -> u64 {
    let hash = match address {
        IpAddr::V4(v4) => fnv1a64(&v4.octets()),
        IpAddr::V6(v6) => fnv1a64(&v6.octets()),
    };
    mix(hash).rotate_left(32)
}

/// Combines a [`node_key`] and an [`address_key`] into the [`tie_break_hash`].
#[inline]
pub(crate) fn combine(node_key: u64, address_key: u64) -> u64 {
    mix(node_key ^ address_key)
}

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME))
}

#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
