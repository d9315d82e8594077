//! A background watcher that proves no address is ever on two interfaces at once.
//!
//! Reading the nodes one after the other is not atomic: an address that correctly moves from node
//! A to node B between the two reads would look held twice. So each sample reads the connected
//! nodes in palindrome order (`a b c b a`) and reports a conflict only when a node held the address
//! at both of its reads while another node, read in between, held it too. Every pair of nodes is
//! bracketed that way, and a correct release-then-acquire can never produce such a pattern unless
//! an address flaps back and forth within one sample, which is a bug of its own.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::cluster::read_held;

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleLog {
    /// How many complete samples were taken.
    pub samples: usize,
    /// One line per address seen on two interfaces at once (the first few).
    pub conflicts: Vec<String>,
    /// How many conflicts there were in all.
    pub conflict_count: usize,
}

/// Dumps every connected node's addresses about every sampling period on its own thread until
/// [`Sampler::finish`] (or drop) stops it.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<SampleLog>>,
}

/// The conflicts kept word for word; the rest are only counted.
const KEPT_CONFLICTS: usize = 20;

impl Sampler {
    /// Starts sampling `nodes` (namespace and primary address), skipping the indices in
    /// `disconnected` (a node whose cable is pulled is not on the LAN, whatever it holds).
    pub(crate) fn start(
        nodes: Vec<(String, Ipv4Addr)>,
        disconnected: Arc<Mutex<BTreeSet<usize>>>,
        period: Duration,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let worker = thread::spawn(move || {
            let mut log = SampleLog::default();
            while !stop_flag.load(Ordering::Relaxed) {
                let skipped = disconnected.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let connected: Vec<usize> = (0..nodes.len()).filter(|i| !skipped.contains(i)).collect();
                let order = connected.iter().chain(connected.iter().rev().skip(1)).copied();
                // A failed read (say, the lab being torn down) drops the whole sample.
                let reads: Option<Vec<(usize, BTreeSet<IpAddr>)>> =
                    order.map(|i| read_held(&nodes[i].0, nodes[i].1).ok().map(|held| (i, held))).collect();
                if let Some(reads) = reads {
                    log.samples += 1;
                    for conflict in conflicts(&reads) {
                        log.conflict_count += 1;
                        if log.conflicts.len() < KEPT_CONFLICTS {
                            log.conflicts.push(format!("sample {}: {conflict}", log.samples));
                        }
                    }
                }
                thread::sleep(period);
            }
            log
        });
        Sampler { stop, worker: Some(worker) }
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> SampleLog {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> SampleLog {
        self.stop.store(true, Ordering::Relaxed);
        self.worker.take().and_then(|worker| worker.join().ok()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The addresses of one palindrome-ordered sample that were provably on two nodes at once.
fn conflicts(reads: &[(usize, BTreeSet<IpAddr>)]) -> Vec<String> {
    double_holdings(reads)
        .into_iter()
        .map(|(address, a, b)| format!("{address} on node {a} and node {b}"))
        .collect()
}

/// The (address, lower node, higher node) triples that one palindrome-ordered read proves were on
/// two nodes at once: a node had the address at both of its reads while another node had it in
/// between, so a correct move between two reads never counts. The chaos run judges with it too.
pub fn double_holdings(reads: &[(usize, BTreeSet<IpAddr>)]) -> BTreeSet<(IpAddr, usize, usize)> {
    let mut found = BTreeSet::new();
    for (first, (node, held_first)) in reads.iter().enumerate() {
        let Some(offset) = reads[first + 1..].iter().position(|(other, _)| other == node) else { continue };
        let second = first + 1 + offset;
        for address in held_first.intersection(&reads[second].1) {
            for (other, held_between) in &reads[first + 1..second] {
                if other != node && held_between.contains(address) {
                    found.insert((*address, (*node).min(*other), (*node).max(*other)));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
        addresses.iter().map(|address| address.parse().unwrap()).collect()
    }

    #[test]
    fn a_clean_move_between_reads_is_not_a_conflict() {
        // The address leaves node 0 after its first read and reaches node 2 before node 2's read.
        let reads = vec![
            (0, set(&["198.18.0.100"])),
            (1, set(&[])),
            (2, set(&["198.18.0.100"])),
            (1, set(&[])),
            (0, set(&[])),
        ];
        assert!(conflicts(&reads).is_empty());
    }

    #[test]
    fn an_address_held_across_another_nodes_read_is_a_conflict() {
        let reads = vec![
            (0, set(&["198.18.0.100"])),
            (1, set(&[])),
            (2, set(&["198.18.0.100"])),
            (1, set(&[])),
            (0, set(&["198.18.0.100"])),
        ];
        assert_eq!(conflicts(&reads), vec!["198.18.0.100 on node 0 and node 2"]);
    }

    #[test]
    fn the_middle_node_is_bracketed_by_both_neighbours() {
        let reads = vec![
            (0, set(&[])),
            (1, set(&["198.18.0.101"])),
            (2, set(&["198.18.0.101"])),
            (1, set(&["198.18.0.101"])),
            (0, set(&[])),
        ];
        assert_eq!(conflicts(&reads), vec!["198.18.0.101 on node 1 and node 2"]);
    }
}
