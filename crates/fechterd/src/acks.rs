//! Which live nodes stopped acknowledging decisions, as a pure function of what they publish.
//!
//! Every node publishes the commit it last reconciled with (`applied`). A live node that has not
//! acknowledged a decision this node has followed for the acknowledgement timeout is
//! *unresponsive*: it sends gossip (so it looks alive) but does not hear the leader, as under a
//! one-way partition, or its daemon is stalled. A node that gossip already shows to be deaf to
//! this node (see [`crate::cluster::NodeState::deaf`]) is unresponsive at once. The leader
//! treats an unresponsive node specially (see [`crate::leader`]): it gives it nothing new, keeps what it may hold where it is, and stops
//! waiting for it before moving addresses it cannot hold. Without this, a node that acknowledged
//! one decision and then went deaf would be given new addresses it never hears of, and would hold
//! up every later move of every address while the fence waited for it to catch up.
//!
//! A node that is not deaf but has not yet received everything this node wrote (its last direct
//! report says so, or no report is recent) is still receiving: a decision of thousands of
//! addresses takes many gossip rounds to reach every node of a large cluster, far longer than
//! the timeout. Such a node is waited for up to [`RECEIVING_TIMEOUTS`] timeouts. Once it reports
//! holding everything, the plain timeout applies again, which catches a node whose gossip runs
//! but whose daemon is stalled.
//!
//! What a deaf node may still hold or acquire is known exactly: the addresses it reports holding
//! (its own gossip still arrives) and the ones its last acknowledged decision assigns to it. So
//! [`Acknowledgements`] remembers, for every node, the addresses assigned to it in the decision it
//! last acknowledged, for as long as it acknowledges nothing newer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, CommitRef};
use crate::leader::Decision;

/// How many followed decisions are remembered to resolve acknowledgements. Older ones are only
/// needed for a node that acknowledged them and nothing since, and that node's share is kept in
/// [`Acknowledgements`] on its own once its acknowledgement has been seen.
const REMEMBERED_DECISIONS: usize = 16;

/// How many acknowledgement timeouts a node that hears this node but has not yet received all
/// of its keys is waited for: 60 s with the default 100 ms rounds. The largest case measured,
/// 10 000 addresses over 1 000 nodes in the scale bench, took 41 s from adding the pool to every
/// node acknowledging its decision (see BENCHMARKS.md); ten timeouts (15 s) made the leader give
/// the addresses of the nodes still receiving to itself. The bound stays because a node that
/// hears this node's heartbeats but never receives its keys (larger datagrams lost on the way: a
/// path MTU problem) would otherwise be given addresses it never hears of, forever.
pub const RECEIVING_TIMEOUTS: u32 = 40;

/// What an unresponsive node may hold or acquire without hearing the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MayHold {
    /// Exactly these addresses besides the ones it reports holding: those its last
    /// acknowledged decision assigns to it.
    Known(BTreeSet<IpAddr>),
    /// The decision it last acknowledged is not known here: it may acquire anything assigned to it.
    Unknown,
}

impl MayHold {
    /// Whether the node might hold or acquire `address` (besides what it reports holding).
    pub fn may_hold(&self, address: IpAddr) -> bool {
        match self {
            MayHold::Known(addresses) => addresses.contains(&address),
            MayHold::Unknown => true,
        }
    }
}

/// One followed decision, with each node's share, from when this node first followed it.
#[derive(Debug, Clone)]
struct Followed {
    commit: CommitRef,
    since: Instant,
    shares: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// The decisions this node followed recently and what every node last acknowledged.
#[derive(Debug, Clone)]
pub struct Acknowledgements {
    timeout: Duration,
    followed: VecDeque<Followed>,
    /// Per node: the last commit it acknowledged that could be resolved, and its share there.
    acknowledged: BTreeMap<String, (CommitRef, BTreeSet<IpAddr>)>,
}

impl Acknowledgements {
    /// Nothing followed yet; nodes become unresponsive after `timeout` without acknowledging.
    pub fn new(timeout: Duration) -> Acknowledgements {
        Acknowledgements { timeout, followed: VecDeque::new(), acknowledged: BTreeMap::new() }
    }

    /// Records that this node follows `decision` as of `now`; a decision already followed keeps
    /// the time it was first followed.
    pub fn follow(&mut self, decision: Option<&Decision>, now: Instant) {
        let Some(decision) = decision else {
            return;
        };
        if self.followed.back().is_some_and(|last| last.commit >= decision.commit) {
            return;
        }
        let mut shares: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for (address, holder) in &decision.assignment {
            shares.entry(holder.clone()).or_default().insert(*address);
        }
        self.followed.push_back(Followed { commit: decision.commit.clone(), since: now, shares });
        while self.followed.len() > REMEMBERED_DECISIONS {
            self.followed.pop_front();
        }
    }

    /// The live peers that have not acknowledged a decision followed here for at least the
    /// timeout, with what each may hold. Also records every peer's latest acknowledgement.
    pub fn unresponsive(&mut self, cluster: &Cluster, now: Instant) -> BTreeMap<String, MayHold> {
        self.acknowledged.retain(|id, _| cluster.nodes.contains_key(id));
        let due_after = |timeout: Duration| {
            self.followed
                .iter()
                .rev()
                .find(|followed| now.saturating_duration_since(followed.since) >= timeout)
                .map(|followed| followed.commit.clone())
        };
        let due = due_after(self.timeout);
        let due_while_receiving = due_after(self.timeout * RECEIVING_TIMEOUTS);
        let mut unresponsive = BTreeMap::new();
        for node in cluster.live().filter(|node| node.id != cluster.me) {
            let Some(status) = &node.status else {
                // Nothing of its state has arrived yet, not even what it holds.
                if due.is_some() || node.deaf {
                    unresponsive.insert(node.id.clone(), MayHold::Unknown);
                }
                continue;
            };
            if let Some(applied) = &status.applied {
                self.record(&node.id, applied, cluster);
            }
            // A deaf node will not hear the next decision either, whatever it acknowledged:
            // there is no point waiting out the timeout for it.
            if !node.deaf {
                let receiving = node.holds_all_mine != Some(true);
                let due = if receiving { &due_while_receiving } else { &due };
                let Some(due) = due else {
                    continue;
                };
                if status.applied.as_ref().is_some_and(|applied| applied >= due) {
                    continue;
                }
            }
            let may_hold = match &status.applied {
                // It never reconciled with any decision, so it acquired nothing under one.
                None => MayHold::Known(BTreeSet::new()),
                Some(applied) => match self.acknowledged.get(&node.id) {
                    Some((commit, share)) if commit == applied => MayHold::Known(share.clone()),
                    _ => MayHold::Unknown,
                },
            };
            unresponsive.insert(node.id.clone(), may_hold);
        }
        unresponsive
    }

    /// Remembers `id`'s share in `applied`, if that decision can be resolved: one followed
    /// here, or the one its author still publishes.
    fn record(&mut self, id: &str, applied: &CommitRef, cluster: &Cluster) {
        if self.acknowledged.get(id).is_some_and(|(commit, _)| commit == applied) {
            return;
        }
        let share = if let Some(followed) = self.followed.iter().find(|followed| followed.commit == *applied)
        {
            followed.shares.get(id).cloned().unwrap_or_default()
        } else if let Some(author) = cluster.nodes.get(&applied.author)
            && author.commit.is_some_and(|commit| commit.term == applied.term && commit.seq == applied.seq)
        {
            author.assign.iter().filter(|(_, holder)| *holder == id).map(|(address, _)| *address).collect()
        } else {
            return;
        };
        self.acknowledged.insert(id.to_owned(), (applied.clone(), share));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Admin, Commit, NodeState, NodeStatus};
    use fechter_alloc::Assignment;
    use fechter_cli::proto::Liveness;

    const A: &str = "10.0.0.1:4573";
    const B: &str = "10.0.0.2:4573";
    const C: &str = "10.0.0.3:4573";
    const TIMEOUT: Duration = Duration::from_secs(2);

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, n])
    }

    fn decision(seq: u64, assignment: &[(u8, &str)]) -> Decision {
        Decision {
            commit: CommitRef { term: 1, seq, author: A.into() },
            assignment: assignment.iter().map(|(n, id)| (ip(*n), (*id).to_owned())).collect(),
            alone: false,
        }
    }

    fn peer(id: &str, applied: Option<&Decision>) -> NodeState {
        let mut node = NodeState::empty(id, Liveness::Alive);
        node.status = Some(NodeStatus {
            admin: Admin::Up,
            gateway_reachable: true,
            eligible: true,
            applied: applied.map(|decision| decision.commit.clone()),
            failing_checks: Vec::new(),
            down_interfaces: BTreeSet::new(),
        });
        // As in a small cluster, where every peer reports often that it holds every key here.
        node.holds_all_mine = Some(true);
        node
    }

    fn cluster(nodes: Vec<NodeState>) -> Cluster {
        Cluster { me: A.into(), nodes: nodes.into_iter().map(|node| (node.id.clone(), node)).collect() }
    }

    #[test]
    fn a_node_lagging_past_the_timeout_is_unresponsive_with_its_acknowledged_share() {
        let start = Instant::now();
        let mut acks = Acknowledgements::new(TIMEOUT);
        let first = decision(0, &[(1, A), (2, B), (3, C)]);
        let second = decision(1, &[(1, A), (2, B), (3, C), (4, B)]);
        acks.follow(Some(&first), start);
        let view = cluster(vec![peer(A, Some(&first)), peer(B, Some(&first)), peer(C, Some(&first))]);
        assert!(acks.unresponsive(&view, start).is_empty());

        acks.follow(Some(&second), start + Duration::from_millis(100));
        let view = cluster(vec![peer(A, Some(&second)), peer(B, Some(&first)), peer(C, Some(&second))]);
        // Lagging, but not for long: nobody is unresponsive yet.
        assert!(acks.unresponsive(&view, start + Duration::from_secs(1)).is_empty());
        let late = acks.unresponsive(&view, start + Duration::from_millis(2_100));
        assert_eq!(late, BTreeMap::from([(B.to_owned(), MayHold::Known(BTreeSet::from([ip(2)])))]));
    }

    #[test]
    fn a_node_still_receiving_a_large_decision_is_waited_for_up_to_the_longer_bound() {
        let start = Instant::now();
        let mut acks = Acknowledgements::new(TIMEOUT);
        let first = decision(0, &[(1, B)]);
        let second = decision(1, &[(1, B), (2, C)]);
        acks.follow(Some(&second), start);
        let mut receiving = peer(B, Some(&first));
        receiving.holds_all_mine = Some(false);
        let mut unheard = peer(C, Some(&first));
        unheard.holds_all_mine = None;
        let view = cluster(vec![peer(A, Some(&second)), receiving.clone(), unheard.clone()]);
        assert!(acks.unresponsive(&view, start + TIMEOUT * 3).is_empty());
        // Once it reports holding everything, the plain timeout applies: its daemon is stalled.
        let mut stalled = receiving.clone();
        stalled.holds_all_mine = Some(true);
        let view_stalled = cluster(vec![peer(A, Some(&second)), stalled, unheard.clone()]);
        let unresponsive = acks.unresponsive(&view_stalled, start + TIMEOUT * 3);
        assert_eq!(unresponsive.keys().collect::<Vec<_>>(), vec![B]);
        // Nobody is waited for beyond the longer bound.
        let late = start + TIMEOUT * RECEIVING_TIMEOUTS;
        let unresponsive = acks.unresponsive(&view, late);
        assert_eq!(unresponsive.keys().collect::<Vec<_>>(), vec![B, C]);
    }

    #[test]
    fn a_steady_stream_of_decisions_does_not_make_a_prompt_node_unresponsive() {
        let start = Instant::now();
        let mut acks = Acknowledgements::new(TIMEOUT);
        let mut previous = decision(0, &[(1, B)]);
        acks.follow(Some(&previous), start);
        for step in 1..50u64 {
            // A new decision every 100 ms; B always acknowledges the previous one.
            let now = start + Duration::from_millis(step * 100);
            let next = decision(step, &[(1, B)]);
            acks.follow(Some(&next), now);
            let view = cluster(vec![peer(A, Some(&next)), peer(B, Some(&previous))]);
            assert!(acks.unresponsive(&view, now).is_empty(), "step {step}");
            previous = next;
        }
    }

    #[test]
    fn an_acknowledgement_older_than_every_remembered_decision_keeps_its_share() {
        let start = Instant::now();
        let mut acks = Acknowledgements::new(TIMEOUT);
        let first = decision(0, &[(1, B), (2, C)]);
        acks.follow(Some(&first), start);
        let deaf_b = peer(B, Some(&first));
        acks.unresponsive(&cluster(vec![peer(A, Some(&first)), deaf_b.clone()]), start);
        let mut now = start;
        for seq in 1..=40 {
            now += Duration::from_millis(500);
            acks.follow(Some(&decision(seq, &[(1, B), (2, C), (3, C)])), now);
        }
        let unresponsive = acks.unresponsive(&cluster(vec![peer(A, None), deaf_b]), now);
        assert_eq!(unresponsive[B], MayHold::Known(BTreeSet::from([ip(1)])));
    }

    #[test]
    fn an_unresolvable_acknowledgement_or_a_missing_status_is_unknown() {
        let start = Instant::now();
        let mut acks = Acknowledgements::new(TIMEOUT);
        let ours = decision(5, &[(1, A)]);
        acks.follow(Some(&ours), start);
        let unseen = decision(2, &[(1, B)]);
        let view =
            cluster(vec![peer(A, Some(&ours)), peer(B, Some(&unseen)), NodeState::empty(C, Liveness::Alive)]);
        let unresponsive = acks.unresponsive(&view, start + TIMEOUT);
        assert_eq!(unresponsive[B], MayHold::Unknown);
        assert_eq!(unresponsive[C], MayHold::Unknown);
    }

    #[test]
    fn an_acknowledgement_is_resolved_from_its_authors_published_decision() {
        let start = Instant::now();
        let mut acks = Acknowledgements::new(TIMEOUT);
        let ours = decision(5, &[(1, A)]);
        acks.follow(Some(&ours), start);
        // C led before and still publishes the decision B acknowledged.
        let mut author = peer(C, None);
        author.commit = Some(Commit { term: 0, seq: 7, alone: false });
        author.assign = Assignment::from([(ip(2), B.to_owned()), (ip(3), C.to_owned())]);
        let mut deaf = peer(B, None);
        if let Some(status) = deaf.status.as_mut() {
            status.applied = Some(CommitRef { term: 0, seq: 7, author: C.into() });
        }
        let unresponsive =
            acks.unresponsive(&cluster(vec![peer(A, Some(&ours)), deaf, author]), start + TIMEOUT);
        assert_eq!(unresponsive[B], MayHold::Known(BTreeSet::from([ip(2)])));
    }

    #[test]
    fn a_deaf_node_is_unresponsive_at_once_even_if_it_acknowledged_the_latest_decision() {
        let start = Instant::now();
        let mut acks = Acknowledgements::new(TIMEOUT);
        let ours = decision(0, &[(1, A), (2, B)]);
        acks.follow(Some(&ours), start);
        let mut deaf = peer(B, Some(&ours));
        deaf.deaf = true;
        let unresponsive = acks.unresponsive(&cluster(vec![peer(A, Some(&ours)), deaf]), start);
        assert_eq!(unresponsive[B], MayHold::Known(BTreeSet::from([ip(2)])));
        // Deaf before anything of its state arrived: it may hold anything assigned to it.
        let mut unknown = NodeState::empty(C, Liveness::Alive);
        unknown.deaf = true;
        let unresponsive = acks.unresponsive(&cluster(vec![peer(A, Some(&ours)), unknown]), start);
        assert_eq!(unresponsive[C], MayHold::Unknown);
    }
}
