//! When this node may lead and acquire, as a pure state machine over membership and readiness.
//!
//! A node that has not heard its peers yet must not act on a view that lacks them: it would lead
//! over a cluster it cannot see and acquire addresses that others still hold. So a node settles
//! (neither leads nor acquires, and is not eligible) for the settle time after it starts, and again
//! whenever it becomes ready (admin up, gateway reachable, quorum seen, healthy) after it was not:
//! a node whose cable was pulled regains its gateway before it hears the cluster.
//!
//! A node whose view of the cluster was empty (it saw no live peer) holds for the settle time once
//! it sees peers again: it keeps what it holds, but neither leads nor acquires until their state
//! has reached it. With a quorum, a node also holds for the shorter membership-settle time whenever
//! its view of live membership shrinks: the failure detectors on one side of a partition declare
//! the other side dead a few gossip intervals apart, and a node that has counted only some of the
//! departures still sees a quorum it is about to lose. Holding until the others are counted keeps
//! a minority from leading and acquiring in that gap. The cost is that, with a quorum, failover of
//! a dead node's addresses waits that much longer; without a quorum nothing is held on a shrink.
//!
//! Every change of live membership (a peer declared dead, one coming back, one leaving) is also
//! reported, so the daemon announces what it holds again: neighbours that a brief holder elsewhere
//! misdirected learn the right link-layer address at once. (Not at the end of an isolation: what a
//! node took while it saw nobody is mostly copies it is about to release.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How many gossip intervals a node holds, with a quorum, after its live membership shrinks.
pub const MEMBERSHIP_SETTLE_INTERVALS: u32 = 3;

/// Why a node started settling or holding again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resettle {
    /// It became ready after it was not: it settles, ineligible, for the settle time.
    BecameReady,
    /// It saw live peers again after it saw none: it holds for the settle time.
    IsolationEnded,
    /// With a quorum, live membership shrank: it holds for the membership-settle time.
    MembershipShrank,
}

/// What the node observes in one step.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The current time.
    pub now: Instant,
    /// Admin up, gateway reachable, quorum seen and healthy.
    pub ready: bool,
    /// The live peers, this node excluded.
    pub live_peers: &'a BTreeSet<String>,
    /// Whether a quorum is configured.
    pub quorum: bool,
}

/// What the node may do after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Ready and settled: it may hold addresses and publishes itself as eligible.
    pub eligible: bool,
    /// Settled and not holding: it may lead, and acquire if eligible.
    pub may_act: bool,
    /// Live membership changed since the previous observation: announce held addresses again.
    pub membership_changed: bool,
    /// Why settling or holding (re)started in this observation, if it did.
    pub resettled: Vec<Resettle>,
}

/// The settling state of one node.
#[derive(Debug, Clone)]
pub struct Settling {
    settle_time: Duration,
    membership_settle: Duration,
    /// Until then the node is not eligible and neither leads nor acquires.
    settled_at: Instant,
    /// Until then the node keeps what it holds but neither leads nor acquires.
    hold_until: Instant,
    /// The live peers at the previous observation; `None` before the first one.
    live_peers: Option<BTreeSet<String>>,
    ready: bool,
}

impl Settling {
    /// A node started at `started`: it settles for `settle_time`, and holds for
    /// `membership_settle` after a shrink of live membership when a quorum is set.
    pub fn new(started: Instant, settle_time: Duration, membership_settle: Duration) -> Settling {
        Settling {
            settle_time,
            membership_settle,
            settled_at: started + settle_time,
            hold_until: started,
            live_peers: None,
            ready: false,
        }
    }

    /// Takes one observation and says what the node may do.
    pub fn observe(&mut self, observation: Observation<'_>) -> Gate {
        let now = observation.now;
        let mut resettled = Vec::new();
        let mut membership_changed = false;
        if let Some(previous) = &self.live_peers {
            membership_changed = previous != observation.live_peers;
            if previous.is_empty() && !observation.live_peers.is_empty() {
                self.hold_until = self.hold_until.max(now + self.settle_time);
                resettled.push(Resettle::IsolationEnded);
            }
            if observation.quorum && !previous.is_subset(observation.live_peers) {
                self.hold_until = self.hold_until.max(now + self.membership_settle);
                resettled.push(Resettle::MembershipShrank);
            }
        }
        self.live_peers = Some(observation.live_peers.clone());
        if observation.ready && !self.ready {
            self.settled_at = self.settled_at.max(now + self.settle_time);
            resettled.push(Resettle::BecameReady);
        }
        self.ready = observation.ready;
        let settled = now >= self.settled_at;
        Gate {
            eligible: observation.ready && settled,
            may_act: settled && now >= self.hold_until,
            membership_changed,
            resettled,
        }
    }

    /// The next moment, after `now`, at which settling or holding ends: the daemon steps then.
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        [self.settled_at, self.hold_until].into_iter().filter(|deadline| *deadline > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(1000);
    const MEMBERSHIP: Duration = Duration::from_millis(300);

    fn peers(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    struct Node {
        start: Instant,
        settling: Settling,
        quorum: bool,
    }

    impl Node {
        fn new(quorum: bool) -> Node {
            let start = Instant::now();
            Node { start, settling: Settling::new(start, SETTLE, MEMBERSHIP), quorum }
        }

        fn at(&mut self, at_ms: u64, ready: bool, live: &[&str]) -> Gate {
            let live_peers = peers(live);
            self.settling.observe(Observation {
                now: ms(self.start, at_ms),
                ready,
                live_peers: &live_peers,
                quorum: self.quorum,
            })
        }
    }

    #[test]
    fn a_new_node_settles_before_it_leads_or_is_eligible() {
        let mut node = Node::new(false);
        let early = node.at(0, true, &[]);
        assert!(!early.eligible && !early.may_act);
        assert_eq!(node.settling.wake_at(ms(node.start, 0)), Some(ms(node.start, 1000)));
        let peers_heard = node.at(100, true, &["b", "c"]);
        assert!(!peers_heard.may_act && peers_heard.membership_changed);
        let settled = node.at(1100, true, &["b", "c"]);
        assert!(settled.eligible && settled.may_act && !settled.membership_changed);
        assert_eq!(node.settling.wake_at(ms(node.start, 1100)), None);
    }

    #[test]
    fn a_node_that_becomes_ready_again_settles_again() {
        let mut node = Node::new(false);
        node.at(0, true, &["b"]);
        assert!(node.at(1000, true, &["b"]).may_act);
        // The cable is pulled: no gateway, no peers.
        let pulled = node.at(2000, false, &[]);
        assert!(!pulled.eligible && pulled.may_act && pulled.membership_changed);
        // Plugged back: the gateway answers before any peer is heard.
        let plugged = node.at(8000, true, &[]);
        assert_eq!(plugged.resettled, vec![Resettle::BecameReady]);
        assert!(!plugged.eligible && !plugged.may_act, "it neither leads nor acquires alone");
        let heard = node.at(8050, true, &["b"]);
        assert_eq!(heard.resettled, vec![Resettle::IsolationEnded]);
        let settled = node.at(9000, true, &["b"]);
        assert!(settled.eligible && !settled.may_act, "eligible, but still hearing the cluster");
        let later = node.at(9050, true, &["b"]);
        assert!(later.eligible && later.may_act);
    }

    #[test]
    fn a_node_that_saw_no_peer_holds_when_it_sees_them_again() {
        let mut node = Node::new(false);
        node.at(0, true, &["b", "c"]);
        let alone = node.at(2000, true, &[]);
        assert!(alone.eligible && alone.may_act, "a lone survivor takes over without quorum");
        let back = node.at(5000, true, &["b"]);
        assert!(back.eligible, "it keeps what it holds");
        assert!(!back.may_act, "but it neither leads nor acquires until it has heard them");
        assert_eq!(node.settling.wake_at(ms(node.start, 5000)), Some(ms(node.start, 6000)));
        assert!(node.at(6000, true, &["b"]).may_act);
    }

    #[test]
    fn with_a_quorum_a_shrinking_membership_holds_until_the_departures_are_counted() {
        let mut node = Node::new(true);
        node.at(0, true, &["a", "c", "d", "e"]);
        assert!(node.at(1000, true, &["a", "c", "d", "e"]).may_act);
        // One side of a partition is declared dead one node at a time.
        let first = node.at(2000, true, &["c", "d", "e"]);
        assert_eq!(first.resettled, vec![Resettle::MembershipShrank]);
        assert!(first.eligible && !first.may_act && first.membership_changed);
        let second = node.at(2200, true, &["c", "e"]);
        assert!(!second.may_act);
        assert!(!node.at(2499, true, &["c", "e"]).may_act, "each departure restarts the hold");
        assert!(node.at(2500, true, &["c", "e"]).may_act);
        // A peer coming back changes membership but holds nothing.
        let grown = node.at(3000, true, &["a", "c", "e"]);
        assert!(grown.may_act && grown.membership_changed && grown.resettled.is_empty());
    }

    #[test]
    fn without_a_quorum_a_shrinking_membership_holds_nothing() {
        let mut node = Node::new(false);
        node.at(0, true, &["b", "c"]);
        let shrunk = node.at(2000, true, &["c"]);
        assert!(shrunk.may_act && shrunk.membership_changed && shrunk.resettled.is_empty());
    }
}
