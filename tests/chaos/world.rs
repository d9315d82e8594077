//! The harness's model of the faults it has applied, and what the daemons should make of them.
//!
//! The schedule generator replays faults through this model to keep at least one node able to
//! hold addresses, and the judge reads it to decide which nodes' holdings count, which double
//! holdings a partition excuses, and whether some node could serve an address. It knows only what
//! the harness did, never what the daemons did: that is what the checks compare against.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// A kind of fault and the nodes it hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// SIGKILL of the daemon, which leaves its addresses on the interface; healed by a new start.
    Kill(usize),
    /// SIGKILL and an immediate new start (which clears the stale addresses); nothing to heal.
    Restart(usize),
    /// The node's bridge port goes down; healed by bringing it up.
    PullCable(usize),
    /// Gossip between these nodes and all others is dropped in both directions (nft in the
    /// members' namespaces); the members still talk among themselves and see the gateway.
    Partition(BTreeSet<usize>),
    /// The members drop gossip coming from all others, but the others still hear them.
    OneWayPartition(BTreeSet<usize>),
    /// A blackhole route to the gateway inside the node.
    GatewayLost(usize),
    /// `fechter down`; healed by `fechter up`.
    Down(usize),
}

impl Fault {
    /// The name used in the log and in the per-kind counts.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Restart(_) => "restart",
            Fault::PullCable(_) => "cable",
            Fault::Partition(_) => "partition",
            Fault::OneWayPartition(_) => "one-way-partition",
            Fault::GatewayLost(_) => "gateway",
            Fault::Down(_) => "down",
        }
    }

    /// The nodes the fault occupies until it is healed.
    pub(crate) fn nodes(&self) -> Vec<usize> {
        match self {
            Fault::Kill(node)
            | Fault::Restart(node)
            | Fault::PullCable(node)
            | Fault::GatewayLost(node)
            | Fault::Down(node) => vec![*node],
            Fault::Partition(members) | Fault::OneWayPartition(members) => members.iter().copied().collect(),
        }
    }

    /// Whether the fault stays until a heal (a restart is over once done).
    pub(crate) fn lasts(&self) -> bool {
        !matches!(self, Fault::Restart(_))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(node) => write!(f, "kill -9 n{node}"),
            Fault::Restart(node) => write!(f, "restart n{node} (kill -9, start)"),
            Fault::PullCable(node) => write!(f, "pull n{node}'s cable"),
            Fault::Partition(members) => write!(f, "partition {} | rest (two-way)", names(members)),
            Fault::OneWayPartition(members) => {
                write!(
                    f,
                    "partition {} | rest (one-way: they hear nobody, everyone hears them)",
                    names(members)
                )
            }
            Fault::GatewayLost(node) => write!(f, "blackhole n{node}'s gateway"),
            Fault::Down(node) => write!(f, "`fechter down` on n{node}"),
        }
    }
}

/// `{n0,n1}`.
pub(crate) fn names(nodes: &BTreeSet<usize>) -> String {
    let list: Vec<String> = nodes.iter().map(|node| format!("n{node}")).collect();
    format!("{{{}}}", list.join(","))
}

/// A partition a node is a member of.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cut {
    members: BTreeSet<usize>,
    one_way: bool,
}

/// What the harness has done to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeState {
    running: bool,
    cable_in: bool,
    admin_up: bool,
    gateway_ok: bool,
    cut: Option<Cut>,
    /// When the node's last fault was healed (or it was last started).
    recovered_at: Duration,
}

/// The state of every node as the harness left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct World {
    nodes: Vec<NodeState>,
    quorum: usize,
}

impl World {
    /// `count` healthy nodes, each holding addresses only while it sees `quorum` live nodes
    /// (0 = no quorum).
    pub(crate) fn new(count: usize, quorum: usize) -> World {
        let healthy = NodeState {
            running: true,
            cable_in: true,
            admin_up: true,
            gateway_ok: true,
            cut: None,
            recovered_at: Duration::ZERO,
        };
        World { nodes: vec![healthy; count], quorum }
    }

    /// How many nodes there are.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Records that `fault` was injected.
    pub(crate) fn inject(&mut self, fault: &Fault) {
        match fault {
            Fault::Kill(node) => self.nodes[*node].running = false,
            Fault::Restart(_) => {}
            Fault::PullCable(node) => self.nodes[*node].cable_in = false,
            Fault::Partition(members) | Fault::OneWayPartition(members) => {
                let cut =
                    Cut { members: members.clone(), one_way: matches!(fault, Fault::OneWayPartition(_)) };
                for &member in members {
                    self.nodes[member].cut = Some(cut.clone());
                }
            }
            Fault::GatewayLost(node) => self.nodes[*node].gateway_ok = false,
            Fault::Down(node) => self.nodes[*node].admin_up = false,
        }
    }

    /// Records that `fault` was healed (or, for a restart, completed) at `now`.
    pub(crate) fn heal(&mut self, fault: &Fault, now: Duration) {
        match fault {
            Fault::Kill(node) => self.nodes[*node].running = true,
            Fault::Restart(_) => {}
            Fault::PullCable(node) => self.nodes[*node].cable_in = true,
            Fault::Partition(members) | Fault::OneWayPartition(members) => {
                for &member in members {
                    self.nodes[member].cut = None;
                }
            }
            Fault::GatewayLost(node) => self.nodes[*node].gateway_ok = true,
            Fault::Down(node) => self.nodes[*node].admin_up = true,
        }
        for node in fault.nodes() {
            self.nodes[node].recovered_at = now;
        }
    }

    /// Whether any fault occupies `node`.
    pub(crate) fn faulted(&self, node: usize) -> bool {
        let state = &self.nodes[node];
        !(state.running && state.cable_in && state.admin_up && state.gateway_ok && state.cut.is_none())
    }

    /// Whether `node`'s daemon runs.
    pub(crate) fn running(&self, node: usize) -> bool {
        self.nodes[node].running
    }

    /// Whether `node`'s interface is on the LAN with a live daemon behind it, so what it holds
    /// competes for the client's traffic and is under the daemons' control.
    pub(crate) fn on_lan_and_running(&self, node: usize) -> bool {
        self.nodes[node].running && self.nodes[node].cable_in
    }

    /// Whether `receiver` gets the gossip `sender` sends, by the nft rules alone.
    fn rules_pass(&self, receiver: usize, sender: usize) -> bool {
        let outside = |node: usize, cut: &Cut| !cut.members.contains(&node);
        let inbound_dropped = self.nodes[receiver].cut.as_ref().is_some_and(|cut| outside(sender, cut));
        let outbound_dropped =
            self.nodes[sender].cut.as_ref().is_some_and(|cut| !cut.one_way && outside(receiver, cut));
        !inbound_dropped && !outbound_dropped
    }

    /// Whether `receiver` hears `sender` as a live node.
    fn hears(&self, receiver: usize, sender: usize) -> bool {
        receiver == sender
            || (self.on_lan_and_running(sender)
                && self.nodes[receiver].cable_in
                && self.rules_pass(receiver, sender))
    }

    /// Whether a partition (not a cable) keeps `a` and `b` from hearing each other both ways.
    pub(crate) fn partitioned(&self, a: usize, b: usize) -> bool {
        !(self.rules_pass(a, b) && self.rules_pass(b, a))
    }

    /// Whether a quorum is configured that only a strict majority can reach, so that a partition
    /// may not make both sides hold an address.
    pub(crate) fn majority_quorum(&self) -> bool {
        self.quorum * 2 > self.nodes.len()
    }

    /// Whether the daemon on `node` should consider itself eligible once it has noticed the
    /// current state: running, admin up, cable in, gateway reachable, and the quorum seen.
    pub(crate) fn eligible(&self, node: usize) -> bool {
        let state = &self.nodes[node];
        if !(state.running && state.cable_in && state.admin_up && state.gateway_ok) {
            return false;
        }
        let seen = (0..self.nodes.len()).filter(|&other| self.hears(node, other)).count();
        self.quorum == 0 || seen >= self.quorum
    }

    /// Whether `node` is eligible and has been recovered for at least `recovery`, the time a
    /// daemon needs to notice a heal (a new start settles for about a second; a restored gateway
    /// answers the next ping, sent every second).
    pub(crate) fn eligible_at(&self, node: usize, now: Duration, recovery: Duration) -> bool {
        self.eligible(node) && now >= self.nodes[node].recovered_at + recovery
    }

    /// Whether some node has no fault and is eligible.
    pub(crate) fn some_healthy_eligible(&self) -> bool {
        (0..self.nodes.len()).any(|node| !self.faulted(node) && self.eligible(node))
    }

    /// Whether `node` can get a pool change to a node that could hold the address: it is eligible
    /// itself, or it hears and is heard by an eligible node.
    pub(crate) fn reaches_eligible(&self, node: usize) -> bool {
        self.eligible(node)
            || (0..self.nodes.len())
                .any(|other| self.eligible(other) && self.hears(node, other) && self.hears(other, node))
    }

    /// Every fault still applied, one per occupied node group, for the final heal.
    pub(crate) fn applied_faults(&self) -> Vec<Fault> {
        let mut faults = Vec::new();
        for (node, state) in self.nodes.iter().enumerate() {
            if !state.running {
                faults.push(Fault::Kill(node));
            }
            if !state.cable_in {
                faults.push(Fault::PullCable(node));
            }
            if !state.gateway_ok {
                faults.push(Fault::GatewayLost(node));
            }
            if !state.admin_up {
                faults.push(Fault::Down(node));
            }
            if let Some(cut) = &state.cut
                && cut.members.first() == Some(&node)
            {
                faults.push(if cut.one_way {
                    Fault::OneWayPartition(cut.members.clone())
                } else {
                    Fault::Partition(cut.members.clone())
                });
            }
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[usize]) -> BTreeSet<usize> {
        nodes.iter().copied().collect()
    }

    #[test]
    fn a_two_way_partition_cuts_both_directions_and_costs_the_minority_its_quorum() {
        let mut world = World::new(5, 3);
        let fault = Fault::Partition(set(&[0, 1]));
        world.inject(&fault);
        assert!(world.partitioned(0, 2) && world.partitioned(2, 1));
        assert!(!world.partitioned(0, 1) && !world.partitioned(2, 4));
        assert!(!world.eligible(0) && !world.eligible(1));
        assert!(world.eligible(2) && world.eligible(4));
        assert!(world.some_healthy_eligible());
        assert!(!world.reaches_eligible(0));
        assert_eq!(world.applied_faults(), vec![fault.clone()]);
        world.heal(&fault, Duration::from_secs(9));
        assert!(world.eligible(0));
        assert!(!world.eligible_at(0, Duration::from_secs(10), Duration::from_secs(2)));
        assert!(world.eligible_at(0, Duration::from_secs(11), Duration::from_secs(2)));
        assert!(world.applied_faults().is_empty());
    }

    #[test]
    fn a_one_way_partition_deafens_only_its_members() {
        let mut world = World::new(5, 3);
        world.inject(&Fault::OneWayPartition(set(&[4])));
        assert!(world.partitioned(4, 0));
        assert!(world.hears(0, 4) && !world.hears(4, 0));
        assert!(!world.eligible(4) && world.eligible(0));
        assert!(!world.majority_quorum() || World::new(5, 3).majority_quorum());
    }

    #[test]
    fn node_faults_take_nodes_out_and_heal_back() {
        let mut world = World::new(3, 0);
        for fault in [Fault::Kill(0), Fault::PullCable(1), Fault::GatewayLost(2)] {
            world.inject(&fault);
        }
        assert!(!world.some_healthy_eligible());
        assert!(!world.on_lan_and_running(0) && !world.on_lan_and_running(1));
        assert_eq!(world.applied_faults().len(), 3);
        world.heal(&Fault::GatewayLost(2), Duration::ZERO);
        assert!(world.some_healthy_eligible());
        world.inject(&Fault::Down(2));
        assert!(world.faulted(2) && !world.eligible(2));
        assert!(!World::new(4, 2).majority_quorum());
    }
}
