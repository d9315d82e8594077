//! Benchmarks of `allocate` at fleet scale: 10 000 addresses over 1 000 nodes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use fechter_alloc::{Assignment, EntryState, PoolEntry, allocate};

const ADDRESS_COUNT: u32 = 10_000;
const NODE_COUNT: u32 = 1_000;

fn main() {
    divan::main();
}

fn pool() -> Vec<PoolEntry> {
    (0..ADDRESS_COUNT)
        .map(|n| PoolEntry {
            interface: "eth0".to_owned(),
            address: IpAddr::V4(Ipv4Addr::from(0x0a80_0000 | n)),
            prefix_len: 32,
            state: EntryState::Active,
        })
        .collect()
}

fn nodes() -> BTreeSet<String> {
    (0..NODE_COUNT).map(|n| format!("10.0.{}.{}:4573", n / 256, n % 256)).collect()
}

/// Every address placed from an empty assignment.
#[divan::bench]
fn from_empty(bencher: divan::Bencher<'_, '_>) {
    let pool = pool();
    let eligible = nodes();
    let current = Assignment::new();
    bencher.bench(|| allocate(&pool, &eligible, &current));
}

/// A balanced assignment after one node leaves: only its ten addresses move.
#[divan::bench]
fn one_node_leaves(bencher: divan::Bencher<'_, '_>) {
    let pool = pool();
    let mut eligible = nodes();
    let current = allocate(&pool, &eligible, &Assignment::new()).assignment;
    let leaver = eligible.first().cloned().unwrap_or_default();
    eligible.remove(&leaver);
    bencher.bench(|| allocate(&pool, &eligible, &current));
}
