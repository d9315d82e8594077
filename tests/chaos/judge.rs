//! The invariants, judged sample by sample from what the harness saw from outside.
//!
//! A [`Judge`] is pure: each call gets one sample (every node's addresses, read in palindrome
//! order, and when the client last got a reply from each address), the harness's [`World`] and
//! [`ExpectedPool`] at that moment, and the time. It keeps the episodes still open and turns the
//! ones that outlast their bound into [`Violation`]s.
//!
//! Reading the nodes one after the other is not atomic: an address that correctly moves from A to
//! B between the two reads would look held twice. So the nodes are read in palindrome order
//! (`a b c b a`), and an address counts as doubly held only when a node held it at both of its
//! reads while another node, read in between, held it too; a release-then-acquire can never
//! produce that pattern.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use fechter_lab::double_holdings;

use crate::ledger::{Expectation, ExpectedPool};
use crate::world::World;

/// How long each kind of episode may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// An address on two nodes that hear each other (or, under a majority quorum, on two nodes
    /// at all), counted from the first sample that shows it.
    pub(crate) conflict: Duration,
    /// An active address unanswered by the client while some node could hold it.
    pub(crate) outage: Duration,
    /// How long after its heal a node counts as able to hold addresses.
    pub(crate) recovery: Duration,
}

/// Gaps between replies shorter than this are ping jitter, not outages.
const OUTAGE_FLOOR: Duration = Duration::from_millis(300);

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// Which invariant.
    pub(crate) kind: &'static str,
    /// When it started.
    pub(crate) started: Duration,
    /// When it ended, if it did while watched.
    pub(crate) ended: Option<Duration>,
    /// What exactly.
    pub(crate) detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ended {
            Some(ended) => write!(
                f,
                "[{}] {:.2}s..{:.2}s ({:.2}s): {}",
                self.kind,
                self.started.as_secs_f64(),
                ended.as_secs_f64(),
                (ended.saturating_sub(self.started)).as_secs_f64(),
                self.detail
            ),
            None => write!(
                f,
                "[{}] from {:.2}s, still open: {}",
                self.kind,
                self.started.as_secs_f64(),
                self.detail
            ),
        }
    }
}

/// One sample as the observer took it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// When the sample was complete.
    pub(crate) at: Duration,
    /// Each node's addresses, in the palindrome order they were read.
    pub(crate) reads: Vec<(usize, BTreeSet<IpAddr>)>,
    /// When the client last got a ping reply from each address.
    pub(crate) last_reply: BTreeMap<IpAddr, Duration>,
}

/// Figures about the run, violations or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    /// How many samples were judged.
    pub(crate) samples: u64,
    /// How many samples showed a double holding a partition excused (documented split brain).
    pub(crate) excused_conflict_samples: u64,
    /// The episodes of unexcused double holding (address on two nodes), by length.
    pub(crate) conflicts: Vec<Duration>,
    /// The outages longer than the ping jitter, by length.
    pub(crate) outages: Vec<Duration>,
    /// Every double-holding episode and every outage over a second, with its start, for the log.
    pub(crate) notes: Vec<(Duration, String)>,
}

/// Outages at least this long are listed in the notes.
const NOTED_OUTAGE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Episode {
    start: Duration,
    last_seen: Duration,
    violation: Option<usize>,
}

/// The judge; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Judge {
    bounds: Bounds,
    conflicts: BTreeMap<(IpAddr, usize, usize), Episode>,
    outages: BTreeMap<IpAddr, Episode>,
    eligible_since: Option<Duration>,
    violations: Vec<Violation>,
    figures: Figures,
}

impl Judge {
    /// A judge with nothing seen yet.
    pub(crate) fn new(bounds: Bounds) -> Judge {
        Judge {
            bounds,
            conflicts: BTreeMap::new(),
            outages: BTreeMap::new(),
            eligible_since: None,
            violations: Vec::new(),
            figures: Figures::default(),
        }
    }

    /// Judges one sample against the harness's world and expected pool at that time.
    pub(crate) fn observe(&mut self, sample: &Sample, world: &World, pool: &ExpectedPool) {
        self.figures.samples += 1;
        self.judge_conflicts(sample, world);
        self.judge_outages(sample, world, pool);
    }

    fn judge_conflicts(&mut self, sample: &Sample, world: &World) {
        // A dead daemon's interface keeps what it held (nobody can release it), and a pulled cable
        // takes the interface off the LAN: neither node's addresses compete, so neither counts.
        let counted: Vec<(usize, BTreeSet<IpAddr>)> =
            sample.reads.iter().filter(|(node, _)| world.on_lan_and_running(*node)).cloned().collect();
        let mut open = BTreeSet::new();
        for (address, a, b) in double_holdings(&counted) {
            if world.partitioned(a, b) && !world.majority_quorum() {
                self.figures.excused_conflict_samples += 1;
                continue;
            }
            open.insert((address, a, b));
            let episode = self.conflicts.entry((address, a, b)).or_insert(Episode {
                start: sample.at,
                last_seen: sample.at,
                violation: None,
            });
            episode.last_seen = sample.at;
            if episode.violation.is_none() && sample.at - episode.start > self.bounds.conflict {
                episode.violation = Some(self.violations.len());
                self.violations.push(Violation {
                    kind: "double-holding",
                    started: episode.start,
                    ended: None,
                    detail: format!("{address} on n{a} and n{b}, which hear each other"),
                });
            }
        }
        let closed: Vec<_> = self.conflicts.keys().filter(|key| !open.contains(key)).copied().collect();
        for key in closed {
            if let Some(episode) = self.conflicts.remove(&key) {
                let (address, a, b) = key;
                self.close(&episode, sample.at, true, &format!("{address} on n{a} and n{b}"));
            }
        }
    }

    fn judge_outages(&mut self, sample: &Sample, world: &World, pool: &ExpectedPool) {
        let now = sample.at;
        let eligible: Vec<usize> =
            (0..world.len()).filter(|&node| world.eligible_at(node, now, self.bounds.recovery)).collect();
        self.eligible_since =
            if eligible.is_empty() { None } else { Some(self.eligible_since.unwrap_or(now)) };
        let mut watched = BTreeSet::new();
        if let Some(eligible_since) = self.eligible_since {
            for (address, expectation) in pool.entries() {
                let Expectation::Present { since, pending: false, .. } = expectation else { continue };
                watched.insert(address);
                let replied = sample.last_reply.get(&address).copied().unwrap_or_default();
                let start = replied.max(since).max(eligible_since);
                if self.outages.get(&address).is_some_and(|episode| episode.start != start)
                    && let Some(episode) = self.outages.remove(&address)
                {
                    self.close(&episode, now, false, &format!("{address} unanswered"));
                }
                let episode =
                    self.outages.entry(address).or_insert(Episode { start, last_seen: now, violation: None });
                episode.last_seen = now;
                if episode.violation.is_none() && now.saturating_sub(start) > self.bounds.outage {
                    episode.violation = Some(self.violations.len());
                    let names: Vec<String> = eligible.iter().map(|node| format!("n{node}")).collect();
                    self.violations.push(Violation {
                        kind: "unreachable",
                        started: start,
                        ended: None,
                        detail: format!(
                            "{address} unanswered by the client while {} could hold it",
                            names.join(",")
                        ),
                    });
                }
            }
        }
        let closed: Vec<IpAddr> =
            self.outages.keys().filter(|address| !watched.contains(address)).copied().collect();
        for address in closed {
            if let Some(episode) = self.outages.remove(&address) {
                self.close(&episode, now, false, &format!("{address} unanswered"));
            }
        }
    }

    /// Ends an episode: its length goes into the figures, and its violation gets an end.
    fn close(&mut self, episode: &Episode, now: Duration, conflict: bool, what: &str) {
        let length =
            if conflict { episode.last_seen - episode.start } else { now.saturating_sub(episode.start) };
        if conflict {
            self.figures.conflicts.push(length);
        } else if length > OUTAGE_FLOOR {
            self.figures.outages.push(length);
        }
        if conflict || length >= NOTED_OUTAGE {
            let note =
                format!("{what} for {:.2}s from {:.2}s", length.as_secs_f64(), episode.start.as_secs_f64());
            self.figures.notes.push((episode.start, note));
        }
        if let Some(violation) = episode.violation.and_then(|index| self.violations.get_mut(index)) {
            violation.ended = Some(if conflict { episode.last_seen } else { now });
        }
    }

    /// The violations and figures so far; open episodes stay open in the violations.
    pub(crate) fn finish(mut self) -> (Vec<Violation>, Figures) {
        self.figures.conflicts.sort_unstable();
        self.figures.outages.sort_unstable();
        self.figures.notes.sort();
        (self.violations, self.figures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Fault;

    const BOUNDS: Bounds = Bounds {
        conflict: Duration::from_secs(3),
        outage: Duration::from_secs(3),
        recovery: Duration::from_secs(2),
    };

    fn address(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, last])
    }

    fn set(addresses: &[u8]) -> BTreeSet<IpAddr> {
        addresses.iter().map(|&last| address(last)).collect()
    }

    /// A palindrome read of three nodes that each held the same thing at both reads.
    fn steady(at_ms: u64, held: [&[u8]; 3], replies: &[(u8, u64)]) -> Sample {
        let order = [0, 1, 2, 1, 0];
        Sample {
            at: Duration::from_millis(at_ms),
            reads: order.iter().map(|&node| (node, set(held[node]))).collect(),
            last_reply: replies
                .iter()
                .map(|&(last, ms)| (address(last), Duration::from_millis(ms)))
                .collect(),
        }
    }

    #[test]
    fn a_clean_move_between_reads_is_not_a_double_holding() {
        let reads = vec![(0, set(&[100])), (1, set(&[])), (2, set(&[100])), (1, set(&[])), (0, set(&[]))];
        assert!(double_holdings(&reads).is_empty());
        let held = vec![(0, set(&[100])), (1, set(&[])), (2, set(&[100])), (1, set(&[])), (0, set(&[100]))];
        assert_eq!(double_holdings(&held), BTreeSet::from([(address(100), 0, 2)]));
    }

    #[test]
    fn a_double_holding_longer_than_the_bound_is_one_violation_with_its_end() {
        let world = World::new(3, 0);
        let pool = ExpectedPool::default();
        let mut judge = Judge::new(BOUNDS);
        for ms in (0..=4000).step_by(100) {
            judge.observe(&steady(ms, [&[100], &[100], &[]], &[]), &world, &pool);
        }
        judge.observe(&steady(4100, [&[100], &[], &[]], &[]), &world, &pool);
        let (violations, figures) = judge.finish();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].kind, "double-holding");
        assert_eq!(violations[0].ended, Some(Duration::from_millis(4000)));
        assert_eq!(figures.conflicts, vec![Duration::from_millis(4000)]);
    }

    #[test]
    fn a_partition_excuses_split_brain_unless_a_majority_quorum_is_set_and_dead_nodes_never_count() {
        let pool = ExpectedPool::default();
        for (quorum, expected) in [(0, 0), (3, 1)] {
            let mut world = World::new(3, quorum);
            world.inject(&Fault::Partition(BTreeSet::from([0])));
            let mut judge = Judge::new(BOUNDS);
            for ms in (0..=5000).step_by(100) {
                judge.observe(&steady(ms, [&[100], &[100], &[]], &[]), &world, &pool);
            }
            assert_eq!(judge.finish().0.len(), expected, "quorum {quorum}");
        }
        let mut world = World::new(3, 0);
        world.inject(&Fault::Kill(0));
        let mut judge = Judge::new(BOUNDS);
        for ms in (0..=5000).step_by(100) {
            judge.observe(&steady(ms, [&[100], &[100], &[]], &[]), &world, &pool);
        }
        assert!(judge.finish().0.is_empty());
    }

    #[test]
    fn an_outage_counts_only_while_some_node_could_serve() {
        let mut pool = ExpectedPool::default();
        pool.added(address(100), Duration::ZERO, 0, true);
        let mut world = World::new(3, 0);
        let mut judge = Judge::new(BOUNDS);
        // Replies until 1 s, then silence.
        for ms in (2000..=6000).step_by(100) {
            judge.observe(&steady(ms, [&[100], &[], &[]], &[(100, 1000)]), &world, &pool);
        }
        // Every node loses its gateway: nobody could serve, so the silence no longer counts.
        for node in 0..3 {
            world.inject(&Fault::GatewayLost(node));
        }
        judge.observe(&steady(6100, [&[], &[], &[]], &[(100, 1000)]), &world, &pool);
        let (violations, figures) = judge.finish();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].kind, "unreachable");
        assert_eq!(violations[0].started, Duration::from_millis(2000));
        assert_eq!(violations[0].ended, Some(Duration::from_millis(6100)));
        assert_eq!(figures.outages, vec![Duration::from_millis(4100)]);
    }

    #[test]
    fn short_gaps_and_pending_adds_are_not_outages() {
        let mut pool = ExpectedPool::default();
        pool.added(address(100), Duration::ZERO, 0, true);
        pool.added(address(101), Duration::ZERO, 1, false);
        let world = World::new(3, 0);
        let mut judge = Judge::new(BOUNDS);
        for ms in (0..=8000u64).step_by(100) {
            let reply = ms.saturating_sub(ms % 2000);
            judge.observe(&steady(ms, [&[100], &[], &[]], &[(100, reply)]), &world, &pool);
        }
        let (violations, figures) = judge.finish();
        assert!(violations.is_empty(), "{violations:?}");
        assert!(figures.outages.iter().all(|gap| *gap <= Duration::from_secs(2)));
    }
}
