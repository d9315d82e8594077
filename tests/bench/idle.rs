//! No false failover: five idle nodes for minutes while both cores are kept busy; every change of
//! an address's holder is a reassignment, and the goal is none.
//!
//! Two five-node clusters run at the same time, one with fechter's defaults and one with the fast
//! profile, so both face the same load (which is then heavier than one cluster alone: ten daemons
//! and two busy loops on two cores). Every node's addresses are read every 200 ms.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::fechter::{FechterCluster, Profile};
use crate::stats::say;

/// How often holdings are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Busy loops that keep every core occupied until dropped.
struct CpuHogs(Vec<Child>);

impl CpuHogs {
    fn start(count: usize) -> Result<CpuHogs> {
        let mut hogs = CpuHogs(Vec::new());
        for _ in 0..count {
            let child = Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start a CPU hog")?;
            hogs.0.push(child);
        }
        Ok(hogs)
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one cluster went through.
#[derive(Debug, Clone)]
pub(crate) struct IdleResult {
    /// `default` or `fast`.
    pub(crate) profile: &'static str,
    /// How many samples were read completely.
    pub(crate) samples: usize,
    /// How many times an address's holder changed.
    pub(crate) reassignments: usize,
    /// The first few changes, described.
    pub(crate) changes: Vec<String>,
}

/// Which node holds each address (absent: nobody).
fn holder_map(holdings: &[BTreeSet<IpAddr>]) -> BTreeMap<IpAddr, usize> {
    holdings.iter().enumerate().flat_map(|(i, held)| held.iter().map(move |&address| (address, i))).collect()
}

/// Follows the holder of every address across samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct HolderTracker {
    last_holder: BTreeMap<IpAddr, usize>,
}

impl HolderTracker {
    /// Takes one sample and returns the reassignments it shows: addresses now held by another
    /// node than the one last seen holding them (a moment with no holder in between is the same
    /// reassignment, not two), and addresses that lost their holder, once each.
    pub(crate) fn observe(
        &mut self,
        holdings: &[BTreeSet<IpAddr>],
    ) -> Vec<(IpAddr, Option<usize>, Option<usize>)> {
        let now = holder_map(holdings);
        let mut changes = Vec::new();
        for (&address, &holder) in &now {
            if let Some(&before) = self.last_holder.get(&address)
                && before != holder
            {
                changes.push((address, Some(before), Some(holder)));
            }
            self.last_holder.insert(address, holder);
        }
        let lost: Vec<IpAddr> =
            self.last_holder.keys().filter(|address| !now.contains_key(address)).copied().collect();
        for address in lost {
            // Forgetting the holder makes a later acquisition elsewhere count as this change only.
            let before = self.last_holder.remove(&address);
            changes.push((address, before, None));
        }
        changes
    }
}

/// Runs both profiles side by side for `minutes` under two CPU hogs.
pub(crate) fn run(fast: &Profile, minutes: f64) -> Result<Vec<IdleResult>> {
    say("  starting two five-node clusters (default, fast) with ten addresses each ...");
    let clusters = [
        FechterCluster::start("bidled", 5, Profile::default_settings(), |lab| {
            Ok((0..10).map(|k| lab.vip(k)).collect())
        })?,
        FechterCluster::start("bidlef", 5, fast.clone(), |lab| Ok((0..10).map(|k| lab.vip(k)).collect()))?,
    ];
    let mut results: Vec<IdleResult> = clusters
        .iter()
        .map(|cluster| IdleResult {
            profile: cluster.profile.name,
            samples: 0,
            reassignments: 0,
            changes: Vec::new(),
        })
        .collect();
    let mut trackers = vec![HolderTracker::default(), HolderTracker::default()];
    let hogs = CpuHogs::start(2)?;
    say(&format!("  idling for {minutes} minutes with 2 CPU hogs ..."));
    let started = Instant::now();
    let length = Duration::from_secs_f64(minutes * 60.0);
    let mut next_report = Duration::from_secs(60);
    while started.elapsed() < length {
        let tick = Instant::now();
        for ((cluster, result), tracker) in clusters.iter().zip(&mut results).zip(&mut trackers) {
            // A read that fails under load is skipped, not counted as a change.
            let Ok(holdings) = cluster.lab.holdings() else { continue };
            result.samples += 1;
            {
                for (address, was, is) in tracker.observe(&holdings) {
                    result.reassignments += 1;
                    if result.changes.len() < 10 {
                        result.changes.push(format!(
                            "{:.1} s: {address} n{} -> n{}",
                            started.elapsed().as_secs_f64(),
                            was.map_or_else(|| "-".to_owned(), |i| i.to_string()),
                            is.map_or_else(|| "-".to_owned(), |i| i.to_string())
                        ));
                    }
                }
            }
        }
        if started.elapsed() >= next_report {
            let counts: Vec<String> =
                results.iter().map(|r| format!("{} {}", r.profile, r.reassignments)).collect();
            say(&format!(
                "  {:.0} s: reassignments so far: {}",
                started.elapsed().as_secs_f64(),
                counts.join(", ")
            ));
            next_report += Duration::from_secs(60);
        }
        if let Some(rest) = SAMPLE_EVERY.checked_sub(tick.elapsed()) {
            thread::sleep(rest);
        }
    }
    drop(hogs);
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_counts_once_even_through_a_gap() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut tracker = HolderTracker::default();
        let steady = vec![BTreeSet::from([a]), BTreeSet::from([b])];
        assert!(tracker.observe(&steady).is_empty());
        assert!(tracker.observe(&steady).is_empty());
        let gap = vec![BTreeSet::from([a]), BTreeSet::new()];
        assert_eq!(tracker.observe(&gap), [(b, Some(1), None)]);
        let moved = vec![BTreeSet::from([a, b]), BTreeSet::new()];
        assert!(tracker.observe(&moved).is_empty());
        let direct = vec![BTreeSet::new(), BTreeSet::from([a, b])];
        assert_eq!(tracker.observe(&direct), [(a, Some(0), Some(1)), (b, Some(0), Some(1))]);
    }
}
