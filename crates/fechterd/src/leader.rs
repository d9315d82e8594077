//! Leadership and the leader's assignment decisions, as pure functions of the decoded cluster.
//!
//! The leader is the live node with the lowest id ([`compare_ids`]) among those that hear this node
//! (see [`leader`]). Only the leader computes; it publishes its assignment as `assign:*` keys
//! followed by a `commit` carrying a term and a sequence number. Every node follows the greatest
//! commit it knows of, alive or dead, by term, then lower author id, then sequence, and never goes
//! back to an older one, so no node applies an older leader's decision after a newer one.
//!
//! Moves between live nodes are fenced: an address goes to a new node only once every other live
//! node has reconciled with the decision the leader builds on (its published `applied`), is not
//! assigned the address in it, and no longer reports holding it. Otherwise the address is first
//! published unassigned, and given to its new node in a later decision, after the old holder has
//! acknowledged and released it; while some third node still has to catch up, the address stays
//! with its old holder instead, since unassigning it then would only take it off the air. Without
//! the fence, a node that just acquired an address under an older decision, before its `held:*`
//! key reached anyone, could hold it together with the node a newer decision moved it to. A dead
//! node's addresses move in one decision. A leader that sees no eligible node decides nothing: the
//! last decision stands until someone can hold addresses.
//!
//! Unresponsive nodes (see [`crate::acks`]): a live node that is deaf to this node, or that has not
//! acknowledged a decision for the acknowledgement timeout, gets no new addresses, keeps the ones
//! the decision gives it that it holds or may still acquire, and no longer holds up any move: it
//! does not hear the decisions that would coordinate it, so whatever else it holds is a split
//! brain's copy, released once it hears again. Once it acknowledges again it is an ordinary node.
//!
//! Link monitoring: a node publishes the pool interfaces it cannot use (missing, down or without
//! carrier). The allocation is first computed over all eligible nodes, as if every link were up,
//! so balance stays cluster-wide; then each interface group on which some eligible node's link is
//! down is allocated again over the nodes that can use it, starting from that result. Only those
//! groups' addresses move, and while a link is down their balance holds within the group (any two
//! nodes that can use the interface hold counts of it that differ by at most one), not across the
//! whole pool.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use fechter_alloc::{Assignment, PoolEntry, allocate};

use crate::acks::MayHold;
use crate::cluster::{Cluster, Commit, CommitRef, compare_ids};
use crate::pool::Pool;

/// A decision: a commit and the assignment it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Which commit.
    pub commit: CommitRef,
    /// Address to node id.
    pub assignment: Assignment,
    /// Its author saw no live peer when it decided.
    pub alone: bool,
}

/// The node that should lead: the live node with the lowest id among those that hear this node.
///
/// A deaf peer (see [`crate::cluster::NodeState::deaf`]) still looks alive, since its gossip
/// arrives, but it sees this node as dead and never hears the pool changes made here. Following
/// it would leave this side without a leader for as long as the one-way partition lasts: an
/// address added here would never be assigned. So each node elects among the peers that hear it;
/// the deaf side decides for itself, and the two sides meet again through the usual terms once
/// it hears.
pub fn leader(cluster: &Cluster) -> Option<&str> {
    cluster
        .live()
        .filter(|node| !node.deaf || node.id == cluster.me)
        .map(|node| node.id.as_str())
        .min_by(|a, b| compare_ids(a, b))
}

/// Every decision published by a known node, alive or dead.
fn published(cluster: &Cluster) -> impl Iterator<Item = Decision> {
    cluster.nodes.values().filter_map(|node| {
        let commit = node.commit?;
        Some(Decision {
            commit: CommitRef { term: commit.term, seq: commit.seq, author: node.id.clone() },
            assignment: node.assign.clone(),
            alone: commit.alone,
        })
    })
}

/// The greatest decision published by any known node, alive or dead.
pub fn authoritative(cluster: &Cluster) -> Option<Decision> {
    published(cluster).max_by(|a, b| a.commit.cmp(&b.commit))
}

/// The decision to follow now: the authoritative one, unless it is older than what was applied.
///
/// A node that already follows a decision ignores the decisions other nodes made alone, while
/// they saw no live peer: such a node may only be deaf (a one-way partition, a broken receive
/// path), and its decision gives it every address. Following it would move the whole pool to the
/// one node that cannot hear the cluster. The leader republishes under a term above it instead
/// (see [`decide`]), which the lone node follows once it hears again.
pub fn adopt(applied: Option<Decision>, cluster: &Cluster) -> Option<Decision> {
    let seen = if applied.is_some() {
        published(cluster)
            .filter(|decision| !decision.alone || decision.commit.author == cluster.me)
            .max_by(|a, b| a.commit.cmp(&b.commit))
    } else {
        authoritative(cluster)
    };
    match (applied, seen) {
        (Some(applied), Some(seen)) if seen.commit < applied.commit => Some(applied),
        (applied, None) => applied,
        (_, Some(seen)) => Some(seen),
    }
}

/// What the leader looks at.
#[derive(Debug, Clone, Copy)]
pub struct LeaderInput<'a> {
    /// Every node, decoded.
    pub cluster: &'a Cluster,
    /// The merged pool.
    pub pool: &'a Pool,
    /// The decision this node follows.
    pub applied: Option<&'a Decision>,
    /// This node's own eligibility right now (its published status may lag).
    pub locally_eligible: bool,
    /// Whether this node has been up long enough to have heard its peers.
    pub settled: bool,
    /// The pool interfaces this node cannot use right now (its published status may lag).
    pub local_down_interfaces: &'a BTreeSet<String>,
    /// The live peers that stopped acknowledging decisions, and what each may hold.
    pub unresponsive: &'a BTreeMap<String, MayHold>,
}

/// The decision this node must publish, if it is the leader and the assignment must change.
pub fn decide(input: LeaderInput<'_>) -> Option<Decision> {
    let cluster = input.cluster;
    if !input.settled || leader(cluster) != Some(cluster.me.as_str()) {
        return None;
    }
    let empty = Assignment::new();
    let base = input.applied.map_or(&empty, |decision| &decision.assignment);
    let current = current_assignment(cluster, input.pool, base);
    let eligible: BTreeSet<String> = cluster
        .live()
        .filter(|node| {
            if node.id == cluster.me {
                input.locally_eligible
            } else {
                node.status.as_ref().is_some_and(|status| status.eligible)
            }
        })
        .filter(|node| !input.unresponsive.contains_key(&node.id))
        .map(|node| node.id.clone())
        .collect();
    if eligible.is_empty() {
        // Nobody could hold an address, and every ineligible node releases its own anyway. An
        // empty decision under a new term would only outrank the real one: a minority leader
        // that hears the majority's commit before it sees the majority alive would make the
        // majority release everything.
        return None;
    }
    let down: BTreeMap<&str, &BTreeSet<String>> = eligible
        .iter()
        .filter_map(|id| {
            let down = if *id == cluster.me {
                input.local_down_interfaces
            } else {
                &cluster.nodes.get(id)?.status.as_ref()?.down_interfaces
            };
            Some((id.as_str(), down))
        })
        .collect();
    let pinned = pinned_to_unresponsive(cluster, input.pool, base, input.unresponsive);
    let entries: Vec<PoolEntry> =
        input.pool.entries().into_iter().filter(|entry| !pinned.contains_key(&entry.address)).collect();
    let mut allocation = allocate_with_links(&entries, &eligible, &down, &current);
    allocation.extend(pinned);
    let assignment: Assignment = allocation
        .into_iter()
        .filter_map(|(address, target)| fenced(cluster, input.applied, input.unresponsive, address, target))
        .collect();

    let alone = cluster.live().count() == 1;
    let commit = match input.applied {
        // A term above this leader's own, from a node that decided alone and that this node
        // did not follow, is outranked before anything else, so that node follows again once
        // it hears the cluster.
        Some(decision)
            if decision.commit.author == cluster.me
                && decision.commit.term >= max_known_term(cluster, input.applied) =>
        {
            if assignment == decision.assignment && alone == decision.alone {
                return None;
            }
            CommitRef { term: decision.commit.term, seq: decision.commit.seq + 1, author: cluster.me.clone() }
        }
        // Taking over: even an unchanged assignment is republished under this node's own term,
        // since the previous leader's keys vanish once gossip forgets it.
        _ => {
            CommitRef { term: max_known_term(cluster, input.applied) + 1, seq: 0, author: cluster.me.clone() }
        }
    };
    Some(Decision { commit, assignment, alone })
}

/// How many rounds [`allocate_with_links`] runs at most to reach a result it would not change.
const LINK_ROUNDS: usize = 8;

/// Allocates `pool` over `eligible`, keeping every address off the nodes whose link on its
/// interface is down (`down`: node id to its unusable interfaces). See the module docs.
///
/// The global pass may undo some of the group passes' work (it does not know about links), so
/// the two run in rounds until the result no longer changes: the leader then publishes a result
/// that its next computation confirms, instead of one that keeps moving.
pub fn allocate_with_links(
    pool: &[PoolEntry],
    eligible: &BTreeSet<String>,
    down: &BTreeMap<&str, &BTreeSet<String>>,
    current: &Assignment,
) -> Assignment {
    let mut assignment = link_round(pool, eligible, down, current);
    for _ in 1..LINK_ROUNDS {
        let next = link_round(pool, eligible, down, &assignment);
        if next == assignment {
            break;
        }
        assignment = next;
    }
    assignment
}

/// One global pass, then one pass per interface group that some eligible node cannot use.
fn link_round(
    pool: &[PoolEntry],
    eligible: &BTreeSet<String>,
    down: &BTreeMap<&str, &BTreeSet<String>>,
    current: &Assignment,
) -> Assignment {
    let mut assignment = allocate(pool, eligible, current).assignment;
    let mut groups: BTreeMap<&str, Vec<PoolEntry>> = BTreeMap::new();
    for entry in pool {
        groups.entry(entry.interface.as_str()).or_default().push(entry.clone());
    }
    for (interface, entries) in groups {
        let usable: BTreeSet<String> = eligible
            .iter()
            .filter(|id| down.get(id.as_str()).is_none_or(|down| !down.contains(interface)))
            .cloned()
            .collect();
        if usable.len() == eligible.len() {
            continue;
        }
        let in_group: BTreeSet<IpAddr> = entries.iter().map(|entry| entry.address).collect();
        let group_current: Assignment = assignment
            .iter()
            .filter(|(address, _)| in_group.contains(address))
            .map(|(address, holder)| (*address, holder.clone()))
            .collect();
        assignment.retain(|address, _| !in_group.contains(address));
        assignment.extend(allocate(&entries, &usable, &group_current).assignment);
    }
    assignment
}

/// The addresses that stay with unresponsive nodes: those `base` gives such a node that it
/// reports holding or may still acquire without hearing the leader.
fn pinned_to_unresponsive(
    cluster: &Cluster,
    pool: &Pool,
    base: &Assignment,
    unresponsive: &BTreeMap<String, MayHold>,
) -> Assignment {
    base.iter()
        .filter(|(address, holder)| {
            let Some(may_hold) = unresponsive.get(*holder) else {
                return false;
            };
            let held = cluster.nodes.get(*holder).is_some_and(|node| node.held.contains_key(*address));
            pool.active(**address).is_some() && (held || may_hold.may_hold(**address))
        })
        .map(|(address, holder)| (*address, holder.clone()))
        .collect()
}

/// Where the next decision puts `address`, which the allocation gives to `target`: there if it
/// already is or the fence allows the move; unassigned if only the old holder is in the way (it
/// releases, and the move completes once it has); otherwise still with its live old holder.
fn fenced(
    cluster: &Cluster,
    base: Option<&Decision>,
    unresponsive: &BTreeMap<String, MayHold>,
    address: IpAddr,
    target: String,
) -> Option<(IpAddr, String)> {
    let assigned = base.and_then(|decision| decision.assignment.get(&address));
    if assigned == Some(&target)
        || released_everywhere_but(cluster, base, unresponsive, address, &target, None)
    {
        return Some((address, target));
    }
    let old = assigned.filter(|old| cluster.is_live(old))?;
    if released_everywhere_but(cluster, base, unresponsive, address, &target, Some(old)) {
        return None;
    }
    Some((address, old.clone()))
}

/// Whether `address` may go to `target`: every other live node (but `except`) does not report
/// holding the address, has reconciled with `base` and is not assigned the address in it (unless
/// `target` already holds it: the assignee then cannot acquire it, which keeps actual holders
/// sticky after a partition heals). Unresponsive nodes are not waited for.
fn released_everywhere_but(
    cluster: &Cluster,
    base: Option<&Decision>,
    unresponsive: &BTreeMap<String, MayHold>,
    address: IpAddr,
    target: &str,
    except: Option<&str>,
) -> bool {
    let target_holds =
        cluster.nodes.get(target).is_some_and(|node| node.is_live() && node.held.contains_key(&address));
    cluster
        .live()
        .filter(|node| node.id != target && Some(node.id.as_str()) != except)
        .filter(|node| !unresponsive.contains_key(&node.id))
        .all(|node| {
            let assigned_there =
                base.is_some_and(|decision| decision.assignment.get(&address) == Some(&node.id));
            let caught_up = base.is_none_or(|decision| {
                node.status
                    .as_ref()
                    .and_then(|status| status.applied.as_ref())
                    .is_some_and(|applied| *applied >= decision.commit)
            });
            caught_up && !node.held.contains_key(&address) && (!assigned_there || target_holds)
        })
}

/// The assignment the allocator starts from: the followed decision, corrected by what live nodes
/// really hold where its assignee does not hold it, so that after a partition heals the actual
/// holders keep their addresses. An address the decision leaves unassigned stays unassigned: it is
/// being moved, and its old holder is about to release it.
fn current_assignment(cluster: &Cluster, pool: &Pool, base: &Assignment) -> Assignment {
    let mut holders: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for node in cluster.live() {
        for address in node.held.keys() {
            if pool.active(*address).is_some() {
                holders.entry(*address).or_default().push(node.id.as_str());
            }
        }
    }
    let mut current = base.clone();
    for (address, ids) in holders {
        let Some(assigned) = base.get(&address) else {
            continue;
        };
        if ids.contains(&assigned.as_str()) {
            continue;
        }
        if let Some(holder) = ids.into_iter().min_by(|a, b| compare_ids(a, b)) {
            current.insert(address, holder.to_owned());
        }
    }
    current
}

/// The greatest term any node has written or applied.
fn max_known_term(cluster: &Cluster, applied: Option<&Decision>) -> u64 {
    let commits = cluster.nodes.values().filter_map(|node| node.commit.map(|commit| commit.term));
    let applied_terms = cluster
        .nodes
        .values()
        .filter_map(|node| node.status.as_ref()?.applied.as_ref().map(|applied| applied.term));
    commits.chain(applied_terms).chain(applied.map(|decision| decision.commit.term)).max().unwrap_or(0)
}

/// The commit value to publish for a decision.
pub fn commit_value(decision: &Decision) -> Commit {
    Commit { term: decision.commit.term, seq: decision.commit.seq, alone: decision.alone }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Admin, HeldRecord, NodeState, NodeStatus};
    use crate::hlc::Stamp;
    use fechter_cli::proto::Liveness;

    const A: &str = "10.0.0.1:4573";
    const B: &str = "10.0.0.2:4573";
    const C: &str = "10.0.0.10:4573";

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, n])
    }

    fn node(id: &str, liveness: Liveness, eligible: bool) -> NodeState {
        let mut node = NodeState::empty(id, liveness);
        node.status = Some(NodeStatus {
            admin: if eligible { Admin::Up } else { Admin::Down },
            gateway_reachable: true,
            eligible,
            applied: None,
            failing_checks: Vec::new(),
            down_interfaces: BTreeSet::new(),
        });
        node
    }

    /// Every node reports having reconciled with `decision`.
    fn acknowledge(view: &mut Cluster, decision: &Decision) {
        for node in view.nodes.values_mut() {
            if let Some(status) = node.status.as_mut() {
                status.applied = Some(decision.commit.clone());
            }
        }
    }

    fn cluster(me: &str, nodes: Vec<NodeState>) -> Cluster {
        Cluster { me: me.to_owned(), nodes: nodes.into_iter().map(|node| (node.id.clone(), node)).collect() }
    }

    fn pool(count: u8) -> Pool {
        let mut pool = Pool::new();
        for n in 1..=count {
            let stamp = Stamp { wall_ms: u64::from(n), counter: 0, node: A.into() };
            let record = pool.plan_add("eth0", ip(n), None, stamp).unwrap();
            pool.merge(ip(n), record);
        }
        pool
    }

    const NO_DOWN_INTERFACES: &BTreeSet<String> = &BTreeSet::new();
    const NOBODY_UNRESPONSIVE: &BTreeMap<String, MayHold> = &BTreeMap::new();

    fn input<'a>(cluster: &'a Cluster, pool: &'a Pool, applied: Option<&'a Decision>) -> LeaderInput<'a> {
        LeaderInput {
            cluster,
            pool,
            applied,
            locally_eligible: true,
            settled: true,
            local_down_interfaces: NO_DOWN_INTERFACES,
            unresponsive: NOBODY_UNRESPONSIVE,
        }
    }

    fn counts(assignment: &Assignment) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for holder in assignment.values() {
            *counts.entry(holder.as_str()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn the_lowest_live_id_leads() {
        let view = cluster(
            C,
            vec![
                node(A, Liveness::Dead, true),
                node(B, Liveness::Alive, true),
                node(C, Liveness::Alive, true),
            ],
        );
        assert_eq!(leader(&view), Some(B));
        let alone = cluster(C, vec![node(A, Liveness::Left, true), node(C, Liveness::Dead, true)]);
        assert_eq!(leader(&alone), Some(C), "this node counts as live whatever the view says");
    }

    #[test]
    fn a_peer_deaf_to_this_node_does_not_lead_it() {
        let mut deaf_a = node(A, Liveness::Alive, true);
        deaf_a.deaf = true;
        let view = cluster(C, vec![deaf_a, node(B, Liveness::Alive, true), node(C, Liveness::Alive, true)]);
        assert_eq!(leader(&view), Some(B));
        let mut deaf_b = node(B, Liveness::Alive, true);
        deaf_b.deaf = true;
        let view = cluster(C, vec![node(A, Liveness::Dead, true), deaf_b, node(C, Liveness::Alive, true)]);
        assert_eq!(leader(&view), Some(C), "with every lower peer dead or deaf, this node leads");
    }

    #[test]
    fn only_a_settled_leader_decides() {
        let pool = pool(3);
        let view = cluster(B, vec![node(A, Liveness::Alive, true), node(B, Liveness::Alive, true)]);
        assert!(decide(input(&view, &pool, None)).is_none());
        let view = cluster(A, vec![node(A, Liveness::Alive, true), node(B, Liveness::Alive, true)]);
        assert!(decide(LeaderInput { settled: false, ..input(&view, &pool, None) }).is_none());
        assert!(decide(input(&view, &pool, None)).is_some());
    }

    #[test]
    fn first_decision_spreads_evenly_and_unchanged_results_publish_nothing() {
        let pool = pool(6);
        let view = cluster(
            A,
            vec![
                node(A, Liveness::Alive, true),
                node(B, Liveness::Alive, true),
                node(C, Liveness::Alive, true),
            ],
        );
        let first = decide(input(&view, &pool, None)).unwrap();
        assert_eq!(first.commit, CommitRef { term: 1, seq: 0, author: A.into() });
        assert_eq!(counts(&first.assignment).into_values().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert!(decide(input(&view, &pool, Some(&first))).is_none());
    }

    #[test]
    fn ineligible_nodes_get_nothing_and_a_change_bumps_seq() {
        let pool = pool(6);
        let mut view = cluster(
            A,
            vec![
                node(A, Liveness::Alive, true),
                node(B, Liveness::Alive, true),
                node(C, Liveness::Alive, true),
            ],
        );
        let first = decide(input(&view, &pool, None)).unwrap();
        acknowledge(&mut view, &first);
        view.nodes.get_mut(C).unwrap().status.as_mut().unwrap().eligible = false;
        // C is alive: its addresses are first withdrawn, and move once C acknowledged that.
        let withdrawn = decide(input(&view, &pool, Some(&first))).unwrap();
        assert_eq!((withdrawn.commit.term, withdrawn.commit.seq), (1, 1));
        assert_eq!(counts(&withdrawn.assignment), BTreeMap::from([(A, 2), (B, 2)]));
        assert!(
            decide(input(&view, &pool, Some(&withdrawn))).is_none(),
            "nothing moves before C acknowledges"
        );
        acknowledge(&mut view, &withdrawn);
        let second = decide(input(&view, &pool, Some(&withdrawn))).unwrap();
        assert_eq!((second.commit.term, second.commit.seq), (1, 2));
        assert_eq!(counts(&second.assignment), BTreeMap::from([(A, 3), (B, 3)]));
        // Sticky: nothing moved between A and B.
        for (address, holder) in &first.assignment {
            if holder != C {
                assert_eq!(&second.assignment[address], holder);
            }
        }
        acknowledge(&mut view, &second);
        let not_me =
            decide(LeaderInput { locally_eligible: false, ..input(&view, &pool, Some(&second)) }).unwrap();
        acknowledge(&mut view, &not_me);
        let not_me =
            decide(LeaderInput { locally_eligible: false, ..input(&view, &pool, Some(&not_me)) }).unwrap();
        assert_eq!(counts(&not_me.assignment), BTreeMap::from([(B, 6)]));
    }

    #[test]
    fn a_takeover_uses_a_term_above_every_known_one_even_if_nothing_changes() {
        let pool = pool(2);
        let mut old_leader = node(A, Liveness::Dead, true);
        old_leader.commit = Some(Commit { term: 4, seq: 2, alone: false });
        old_leader.assign = BTreeMap::from([(ip(1), B.to_owned()), (ip(2), C.to_owned())]);
        let mut c = node(C, Liveness::Alive, true);
        c.status.as_mut().unwrap().applied = Some(CommitRef { term: 7, seq: 0, author: C.into() });
        let view = cluster(B, vec![old_leader, node(B, Liveness::Alive, true), c]);
        let applied = adopt(None, &view).unwrap();
        assert_eq!(applied.commit, CommitRef { term: 4, seq: 2, author: A.into() });
        let takeover = decide(input(&view, &pool, Some(&applied))).unwrap();
        assert_eq!(takeover.commit, CommitRef { term: 8, seq: 0, author: B.into() });
        assert_eq!(takeover.assignment, applied.assignment);
    }

    #[test]
    fn an_older_commit_is_never_adopted_after_a_newer_one() {
        let mut b = node(B, Liveness::Alive, true);
        b.commit = Some(Commit { term: 2, seq: 0, alone: false });
        b.assign = BTreeMap::from([(ip(1), B.to_owned())]);
        let view = cluster(C, vec![b, node(C, Liveness::Alive, true)]);
        let newer = Decision {
            commit: CommitRef { term: 3, seq: 0, author: A.into() },
            assignment: BTreeMap::from([(ip(1), C.to_owned())]),
            alone: false,
        };
        assert_eq!(adopt(Some(newer.clone()), &view), Some(newer));
        let older = Decision {
            commit: CommitRef { term: 1, seq: 9, author: A.into() },
            assignment: Assignment::new(),
            alone: false,
        };
        assert_eq!(adopt(Some(older), &view).unwrap().commit.author, B);
    }

    #[test]
    fn a_decision_made_alone_binds_only_nodes_that_follow_nothing() {
        let ours = Decision {
            commit: CommitRef { term: 3, seq: 4, author: A.into() },
            assignment: BTreeMap::from([(ip(1), A.to_owned()), (ip(2), B.to_owned())]),
            alone: false,
        };
        // C went deaf, saw everyone die and gave itself everything under a higher term.
        let mut deaf = node(C, Liveness::Alive, true);
        deaf.commit = Some(Commit { term: 4, seq: 0, alone: true });
        deaf.assign = BTreeMap::from([(ip(1), C.to_owned()), (ip(2), C.to_owned())]);
        let view = cluster(B, vec![node(A, Liveness::Alive, true), node(B, Liveness::Alive, true), deaf]);
        assert_eq!(adopt(Some(ours.clone()), &view), Some(ours.clone()));
        assert_eq!(adopt(None, &view).unwrap().commit.author, C, "a new node starts from it");

        // The leader outranks it at once, with nothing changed, so C follows once it hears.
        let mut view = view;
        view.me = A.into();
        let pool = pool(2);
        let outranked = decide(input(&view, &pool, Some(&ours))).unwrap();
        assert_eq!(outranked.commit, CommitRef { term: 5, seq: 0, author: A.into() });
        assert_eq!(outranked.assignment, ours.assignment);
        assert!(!outranked.alone);
    }

    #[test]
    fn a_lone_leader_marks_its_decision_and_clears_the_mark_when_peers_return() {
        let pool = pool(2);
        let mut view = cluster(A, vec![node(A, Liveness::Alive, true), node(B, Liveness::Dead, true)]);
        let lone = decide(input(&view, &pool, None)).unwrap();
        assert!(lone.alone);
        view.nodes.get_mut(B).unwrap().liveness = Liveness::Alive;
        view.nodes.get_mut(B).unwrap().status.as_mut().unwrap().eligible = false;
        acknowledge(&mut view, &lone);
        let again = decide(input(&view, &pool, Some(&lone))).expect("republished without the mark");
        assert_eq!((again.commit.seq, again.assignment == lone.assignment, again.alone), (1, true, false));
    }

    #[test]
    fn actual_holders_keep_their_addresses_after_a_partition_heals() {
        let pool = pool(4);
        // The followed decision gives everything to A, but B really holds .3 and .4.
        let applied = Decision {
            commit: CommitRef { term: 5, seq: 0, author: A.into() },
            assignment: (1..=4).map(|n| (ip(n), A.to_owned())).collect(),
            alone: false,
        };
        let mut b = node(B, Liveness::Alive, true);
        for n in [3, 4] {
            b.held.insert(ip(n), HeldRecord { interface: "eth0".into(), prefix_len: 32 });
        }
        let mut view = cluster(A, vec![node(A, Liveness::Alive, true), b]);
        acknowledge(&mut view, &applied);
        let decision = decide(input(&view, &pool, Some(&applied))).unwrap();
        assert_eq!(decision.assignment[&ip(3)], B);
        assert_eq!(decision.assignment[&ip(4)], B);
        assert_eq!(decision.assignment[&ip(1)], A);
    }

    #[test]
    fn a_move_waiting_for_a_lagging_third_node_leaves_the_address_with_its_holder() {
        let pool = pool(2);
        // C holds nothing and may get nothing, but must catch up before an address moves.
        let mut view = cluster(
            A,
            vec![
                node(A, Liveness::Alive, true),
                node(B, Liveness::Alive, true),
                node(C, Liveness::Alive, false),
            ],
        );
        let base = Decision {
            commit: CommitRef { term: 1, seq: 1, author: A.into() },
            assignment: BTreeMap::from([(ip(1), B.to_owned()), (ip(2), B.to_owned())]),
            alone: false,
        };
        acknowledge(&mut view, &base);
        for n in [1, 2] {
            view.nodes
                .get_mut(B)
                .unwrap()
                .held
                .insert(ip(n), HeldRecord { interface: "eth0".into(), prefix_len: 32 });
        }
        // C still works from an older decision: nothing is taken off B for a rebalance yet.
        view.nodes.get_mut(C).unwrap().status.as_mut().unwrap().applied =
            Some(CommitRef { term: 1, seq: 0, author: A.into() });
        assert_eq!(decide(input(&view, &pool, Some(&base))), None);
        // Once C has caught up, one address is published unassigned so that B releases it.
        acknowledge(&mut view, &base);
        let releasing = decide(input(&view, &pool, Some(&base))).unwrap();
        assert_eq!(releasing.assignment.len(), 1);
        assert!(releasing.assignment.values().all(|holder| holder == B));
        // After B released it, A gets it.
        acknowledge(&mut view, &releasing);
        let released = (1..=2).map(ip).find(|address| !releasing.assignment.contains_key(address)).unwrap();
        view.nodes.get_mut(B).unwrap().held.remove(&released);
        let moved = decide(input(&view, &pool, Some(&releasing))).unwrap();
        assert_eq!(moved.assignment[&released], A);
    }

    #[test]
    fn a_dead_nodes_addresses_move_at_once() {
        let pool = pool(4);
        let mut view = cluster(A, vec![node(A, Liveness::Alive, true), node(B, Liveness::Alive, true)]);
        let first = decide(input(&view, &pool, None)).unwrap();
        acknowledge(&mut view, &first);
        view.nodes.get_mut(B).unwrap().liveness = Liveness::Dead;
        let second = decide(input(&view, &pool, Some(&first))).unwrap();
        assert_eq!(counts(&second.assignment), BTreeMap::from([(A, 4)]));
    }

    #[test]
    fn an_address_a_live_node_still_holds_is_not_given_to_another() {
        let pool = pool(2);
        // The decision already moved .1 away from B, and B acknowledged it, but B's netlink
        // still shows the address (its removal failed): nobody else gets it yet.
        let mut view = cluster(A, vec![node(A, Liveness::Alive, true), node(B, Liveness::Alive, false)]);
        let base = Decision {
            commit: CommitRef { term: 1, seq: 3, author: A.into() },
            assignment: BTreeMap::from([(ip(2), A.to_owned())]),
            alone: false,
        };
        acknowledge(&mut view, &base);
        view.nodes
            .get_mut(B)
            .unwrap()
            .held
            .insert(ip(1), HeldRecord { interface: "eth0".into(), prefix_len: 32 });
        assert!(decide(input(&view, &pool, Some(&base))).is_none());
        view.nodes.get_mut(B).unwrap().held.clear();
        let moved = decide(input(&view, &pool, Some(&base))).unwrap();
        assert_eq!(moved.assignment[&ip(1)], A);
    }

    /// B acknowledged `first` (holding .2) and then went deaf; a third address was added since.
    fn deaf_b_after_an_add() -> (Cluster, Pool, Decision) {
        let pool = pool(3);
        let mut view = cluster(
            A,
            vec![
                node(A, Liveness::Alive, true),
                node(B, Liveness::Alive, true),
                node(C, Liveness::Alive, true),
            ],
        );
        let first = Decision {
            commit: CommitRef { term: 1, seq: 0, author: A.into() },
            assignment: BTreeMap::from([(ip(1), A.to_owned()), (ip(2), B.to_owned())]),
            alone: false,
        };
        acknowledge(&mut view, &first);
        view.nodes
            .get_mut(B)
            .unwrap()
            .held
            .insert(ip(2), HeldRecord { interface: "eth0".into(), prefix_len: 32 });
        // The decision for .3 went to B, which never heard it.
        let unheard = Decision {
            commit: CommitRef { term: 1, seq: 1, author: A.into() },
            assignment: BTreeMap::from([(ip(1), A.to_owned()), (ip(2), B.to_owned()), (ip(3), B.to_owned())]),
            alone: false,
        };
        for id in [A, C] {
            view.nodes.get_mut(id).unwrap().status.as_mut().unwrap().applied = Some(unheard.commit.clone());
        }
        (view, pool, unheard)
    }

    #[test]
    fn a_deaf_node_keeps_what_it_holds_and_loses_what_it_never_heard_of() {
        let (view, pool, unheard) = deaf_b_after_an_add();
        // While B only lags, none of its addresses goes to anybody else: it may be about to
        // acquire .3, and it holds .2.
        let lagging = decide(input(&view, &pool, Some(&unheard))).expect("balance asks for a move");
        assert!(lagging.assignment.iter().all(|(address, holder)| unheard.assignment[address] == *holder));

        let unresponsive = BTreeMap::from([(B.to_owned(), MayHold::Known(BTreeSet::from([ip(2)])))]);
        let next = decide(LeaderInput { unresponsive: &unresponsive, ..input(&view, &pool, Some(&unheard)) })
            .expect("the unheard address moves");
        assert_eq!(next.assignment[&ip(2)], B, "B keeps what it holds");
        assert_eq!(next.assignment[&ip(3)], C, "the least-loaded responsive node gets .3");
    }

    #[test]
    fn a_deaf_node_whose_last_decision_is_unknown_holds_its_assignments() {
        let (view, pool, unheard) = deaf_b_after_an_add();
        let unresponsive = BTreeMap::from([(B.to_owned(), MayHold::Unknown)]);
        assert!(
            decide(LeaderInput { unresponsive: &unresponsive, ..input(&view, &pool, Some(&unheard)) })
                .is_none()
        );
    }

    #[test]
    fn copies_an_unresponsive_node_holds_beside_responsive_holders_stay_put() {
        let (mut view, pool, unheard) = deaf_b_after_an_add();
        // B, deaf, also holds a copy of A's .1.
        for id in [A, B] {
            view.nodes
                .get_mut(id)
                .unwrap()
                .held
                .insert(ip(1), HeldRecord { interface: "eth0".into(), prefix_len: 32 });
        }
        let unresponsive = BTreeMap::from([(B.to_owned(), MayHold::Known(BTreeSet::from([ip(2)])))]);
        let next = decide(LeaderInput { unresponsive: &unresponsive, ..input(&view, &pool, Some(&unheard)) })
            .unwrap();
        assert_eq!(next.assignment[&ip(1)], A);
    }

    #[test]
    fn a_deaf_node_does_not_hold_up_a_dead_nodes_failover() {
        let (mut view, pool, unheard) = deaf_b_after_an_add();
        let unresponsive = BTreeMap::from([(B.to_owned(), MayHold::Known(BTreeSet::from([ip(2)])))]);
        let moved =
            decide(LeaderInput { unresponsive: &unresponsive, ..input(&view, &pool, Some(&unheard)) })
                .unwrap();
        acknowledge(&mut view, &moved);
        let still_deaf = CommitRef { term: 1, seq: 0, author: A.into() };
        view.nodes.get_mut(B).unwrap().status.as_mut().unwrap().applied = Some(still_deaf);
        // C dies holding .3; A takes it at once although B never acknowledged anything since.
        view.nodes.get_mut(C).unwrap().liveness = Liveness::Dead;
        let after =
            decide(LeaderInput { unresponsive: &unresponsive, ..input(&view, &pool, Some(&moved)) }).unwrap();
        assert_eq!(after.assignment[&ip(3)], A);
        assert_eq!(after.assignment[&ip(2)], B);
    }

    fn two_interface_pool() -> Pool {
        let mut pool = Pool::new();
        for n in 1..=6_u8 {
            let interface = if n <= 3 { "eth0" } else { "eth1" };
            let stamp = Stamp { wall_ms: u64::from(n), counter: 0, node: A.into() };
            let record = pool.plan_add(interface, ip(n), None, stamp).unwrap();
            pool.merge(ip(n), record);
        }
        pool
    }

    #[test]
    fn a_node_gets_nothing_on_an_interface_whose_link_is_down() {
        let pool = two_interface_pool();
        let eligible: BTreeSet<String> = [A, B, C].into_iter().map(str::to_owned).collect();
        let all_up = allocate_with_links(&pool.entries(), &eligible, &BTreeMap::new(), &Assignment::new());
        assert_eq!(all_up, allocate(&pool.entries(), &eligible, &Assignment::new()).assignment);
        let eth1 = BTreeSet::from(["eth1".to_owned()]);
        let down = BTreeMap::from([(C, &eth1)]);
        let linked = allocate_with_links(&pool.entries(), &eligible, &down, &all_up);
        assert_eq!(linked.len(), 6, "{linked:?}");
        let eth1_holders: Vec<&str> = (4..=6).map(|n| linked[&ip(n)].as_str()).collect();
        assert!(!eth1_holders.contains(&C), "{eth1_holders:?}");
        let on_a = eth1_holders.iter().filter(|holder| **holder == A).count();
        assert!(on_a == 1 || on_a == 2, "eth1 balanced over A and B: {eth1_holders:?}");
        let c_on_eth1 = (4..=6).filter(|n| all_up[&ip(*n)] == C).count();
        let moves = (1..=6).filter(|n| linked[&ip(*n)] != all_up[&ip(*n)]).count();
        assert!(moves <= c_on_eth1 + 1, "C's eth1 addresses and at most one rebalancing move: {moves}");
        assert_eq!(
            allocate_with_links(&pool.entries(), &eligible, &down, &linked),
            linked,
            "the result is stable"
        );
        let everyone_down = BTreeMap::from([(A, &eth1), (B, &eth1), (C, &eth1)]);
        let none = allocate_with_links(&pool.entries(), &eligible, &everyone_down, &linked);
        assert!((4..=6).all(|n| !none.contains_key(&ip(n))) && (1..=3).all(|n| none.contains_key(&ip(n))));
    }

    /// Decides and acknowledges until the leader has nothing more to change.
    fn settle(
        view: &mut Cluster,
        pool: &Pool,
        mut applied: Decision,
        local_down: &BTreeSet<String>,
    ) -> Decision {
        for _ in 0..10 {
            let next = decide(LeaderInput {
                local_down_interfaces: local_down,
                ..input(view, pool, Some(&applied))
            });
            match next {
                Some(next) => {
                    acknowledge(view, &next);
                    applied = next;
                }
                None => return applied,
            }
        }
        panic!("the leader never settled");
    }

    #[test]
    fn the_leader_moves_addresses_off_a_down_link_its_own_included() {
        let pool = two_interface_pool();
        let mut view = cluster(A, vec![node(A, Liveness::Alive, true), node(B, Liveness::Alive, true)]);
        let first = decide(input(&view, &pool, None)).unwrap();
        acknowledge(&mut view, &first);
        view.nodes.get_mut(B).unwrap().status.as_mut().unwrap().down_interfaces =
            BTreeSet::from(["eth1".into()]);
        let moved = settle(&mut view, &pool, first, NO_DOWN_INTERFACES);
        assert!((4..=6).all(|n| moved.assignment[&ip(n)] == A), "{:?}", moved.assignment);
        // Now the leader's own eth0 goes down as well: its eth0 addresses go to B.
        let eth0 = BTreeSet::from(["eth0".to_owned()]);
        let both = settle(&mut view, &pool, moved, &eth0);
        assert!((1..=3).all(|n| both.assignment[&ip(n)] == B), "{:?}", both.assignment);
        assert!((4..=6).all(|n| both.assignment[&ip(n)] == A), "{:?}", both.assignment);
    }

    #[test]
    fn a_leader_that_sees_no_eligible_node_publishes_nothing() {
        let pool = pool(2);
        let mut majority_leader = node(B, Liveness::Dead, true);
        majority_leader.commit = Some(Commit { term: 2, seq: 0, alone: false });
        majority_leader.assign = BTreeMap::from([(ip(1), B.to_owned()), (ip(2), C.to_owned())]);
        let view =
            cluster(A, vec![node(A, Liveness::Alive, false), majority_leader, node(C, Liveness::Dead, true)]);
        let followed = authoritative(&view);
        let decision =
            decide(LeaderInput { locally_eligible: false, ..input(&view, &pool, followed.as_ref()) });
        assert!(decision.is_none(), "an empty term 3 would make the majority release everything");
    }

    #[test]
    fn tombstones_are_never_assigned() {
        let mut pool = pool(2);
        let removal =
            pool.plan_remove("eth0", ip(1), Stamp { wall_ms: 9, counter: 0, node: A.into() }).unwrap();
        pool.merge(ip(1), removal);
        let view = cluster(A, vec![node(A, Liveness::Alive, true)]);
        let decision = decide(input(&view, &pool, None)).unwrap();
        assert_eq!(decision.assignment, BTreeMap::from([(ip(2), A.to_owned())]));
    }
}
