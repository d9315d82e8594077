//! Level-triggered reconciliation: what this node must add, remove and announce, as data.
//!
//! The plan compares the followed assignment with the addresses fechter really owns on this node.
//! It removes every owned address that is not active, not assigned here, or held while this node
//! is not eligible; it adds an assigned address only when no other live node reports holding it,
//! so a move between live nodes is release-then-acquire and an address is never on two machines.
//! When a partition heals and an address is on two nodes, the node it is not assigned to releases
//! it, and the assignee announces it again when the conflict appears and as soon as it is gone:
//! neighbours that the other holder misdirected learn the right link-layer address at once.
//! While this node settles or holds (see `settle`) it keeps what it holds but acquires nothing,
//! and when live membership changed it announces everything it keeps again.
//! Addresses on an interface whose link is down are not wanted here either: they are released,
//! and re-added (IPv6 ones included, which Linux drops on link down) once the link returns.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use fechter_alloc::Assignment;

use crate::pool::Pool;

/// An address on an interface with its prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placement {
    /// The interface.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
}

/// Everything reconciliation looks at.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileInput<'a> {
    /// This node's id.
    pub me: &'a str,
    /// Admin up, gateway reachable, quorum seen and settled.
    pub eligible: bool,
    /// The followed assignment.
    pub assignment: &'a Assignment,
    /// The merged pool.
    pub pool: &'a Pool,
    /// Addresses other live nodes report holding, with who holds them.
    pub held_elsewhere: &'a BTreeMap<IpAddr, Vec<String>>,
    /// The fechter-owned addresses installed here, as netlink shows them.
    pub owned: &'a [Placement],
    /// Addresses this node kept while another node also held them, at the previous reconcile.
    pub conflicted: &'a BTreeSet<IpAddr>,
    /// The interfaces that are missing, down or without carrier here.
    pub down_interfaces: &'a BTreeSet<String>,
    /// Settled and not holding (see `settle`): addresses assigned here may be acquired.
    pub may_acquire: bool,
    /// Live membership changed: announce every kept address again.
    pub reannounce_kept: bool,
}

/// What to do, in order: remove, add, then announce the added and the re-announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Addresses to release.
    pub remove: Vec<Placement>,
    /// Addresses to acquire (and then announce).
    pub add: Vec<Placement>,
    /// Addresses kept here to announce again: their conflict appeared or cleared, or live
    /// membership changed.
    pub reannounce: Vec<Placement>,
    /// Addresses assigned here and free, not acquired yet because this node settles or holds.
    pub deferred: Vec<Placement>,
    /// Addresses assigned here but still held elsewhere, with the holders.
    pub waiting: Vec<(IpAddr, Vec<String>)>,
    /// Addresses held here that another node also holds, for the next reconcile.
    pub conflicted: BTreeSet<IpAddr>,
}

impl Plan {
    /// Whether the plan changes anything on the interfaces or on the network.
    pub fn is_idle(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty() && self.reannounce.is_empty()
    }
}

/// Computes the plan.
pub fn plan(input: ReconcileInput<'_>) -> Plan {
    let wanted: BTreeMap<IpAddr, Placement> = if input.eligible {
        input
            .assignment
            .iter()
            .filter(|(_, holder)| holder.as_str() == input.me)
            .filter_map(|(address, _)| {
                let record = input.pool.active(*address)?;
                if input.down_interfaces.contains(&record.interface) {
                    return None;
                }
                Some((
                    *address,
                    Placement {
                        interface: record.interface.clone(),
                        address: *address,
                        prefix_len: record.prefix_len,
                    },
                ))
            })
            .collect()
    } else {
        BTreeMap::new()
    };

    let mut result = Plan::default();
    let mut kept = BTreeSet::new();
    for installed in input.owned {
        let keep = wanted.get(&installed.address) == Some(installed) && !kept.contains(&installed.address);
        if keep {
            kept.insert(installed.address);
        } else {
            result.remove.push(installed.clone());
        }
    }
    for (address, placement) in &wanted {
        if kept.contains(address) {
            let conflicted = input.held_elsewhere.contains_key(address);
            if conflicted {
                result.conflicted.insert(*address);
            }
            if input.reannounce_kept || conflicted != input.conflicted.contains(address) {
                result.reannounce.push(placement.clone());
            }
        } else if let Some(holders) = input.held_elsewhere.get(address) {
            result.waiting.push((*address, holders.clone()));
        } else if input.may_acquire {
            result.add.push(placement.clone());
        } else {
            result.deferred.push(placement.clone());
        }
    }
    result
}

/// Groups addresses by interface, so each interface gets one announcement batch.
pub fn by_interface<'a>(
    placements: impl IntoIterator<Item = &'a Placement>,
) -> BTreeMap<String, Vec<IpAddr>> {
    let mut batches: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for placement in placements {
        batches.entry(placement.interface.clone()).or_default().push(placement.address);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Stamp;

    const ME: &str = "10.0.0.1:4573";
    const OTHER: &str = "10.0.0.2:4573";

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, n])
    }

    fn at(n: u8) -> Placement {
        Placement { interface: "eth0".into(), address: ip(n), prefix_len: 32 }
    }

    fn pool(count: u8) -> Pool {
        let mut pool = Pool::new();
        for n in 1..=count {
            let stamp = Stamp { wall_ms: u64::from(n), counter: 0, node: ME.into() };
            let record = pool.plan_add("eth0", ip(n), None, stamp).unwrap();
            pool.merge(ip(n), record);
        }
        pool
    }

    struct Case {
        eligible: bool,
        assignment: Assignment,
        pool: Pool,
        held_elsewhere: BTreeMap<IpAddr, Vec<String>>,
        owned: Vec<Placement>,
        conflicted: BTreeSet<IpAddr>,
        down_interfaces: BTreeSet<String>,
        may_acquire: bool,
        reannounce_kept: bool,
    }

    impl Case {
        fn new() -> Case {
            Case {
                eligible: true,
                assignment: Assignment::new(),
                pool: pool(4),
                held_elsewhere: BTreeMap::new(),
                owned: Vec::new(),
                conflicted: BTreeSet::new(),
                down_interfaces: BTreeSet::new(),
                may_acquire: true,
                reannounce_kept: false,
            }
        }

        fn plan(&self) -> Plan {
            plan(ReconcileInput {
                me: ME,
                eligible: self.eligible,
                assignment: &self.assignment,
                pool: &self.pool,
                held_elsewhere: &self.held_elsewhere,
                owned: &self.owned,
                conflicted: &self.conflicted,
                down_interfaces: &self.down_interfaces,
                may_acquire: self.may_acquire,
                reannounce_kept: self.reannounce_kept,
            })
        }
    }

    #[test]
    fn adds_what_is_assigned_here_and_free() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), ME.into()), (ip(2), OTHER.into()), (ip(3), ME.into())]);
        case.owned = vec![at(3)];
        let plan = case.plan();
        assert_eq!(plan.add, vec![at(1)]);
        assert!(plan.remove.is_empty() && plan.reannounce.is_empty() && plan.waiting.is_empty());
    }

    #[test]
    fn waits_while_another_live_node_holds_it() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), ME.into())]);
        case.held_elsewhere = BTreeMap::from([(ip(1), vec![OTHER.to_owned()])]);
        let plan = case.plan();
        assert!(plan.add.is_empty());
        assert_eq!(plan.waiting, vec![(ip(1), vec![OTHER.to_owned()])]);
    }

    #[test]
    fn removes_what_is_not_ours_not_active_or_misplaced() {
        let mut case = Case::new();
        let removal =
            case.pool.plan_remove("eth0", ip(4), Stamp { wall_ms: 9, counter: 0, node: ME.into() }).unwrap();
        case.pool.merge(ip(4), removal);
        case.assignment = BTreeMap::from([(ip(1), OTHER.into()), (ip(2), ME.into()), (ip(4), ME.into())]);
        let wrong_prefix = Placement { prefix_len: 24, ..at(2) };
        let unknown =
            Placement { interface: "eth1".into(), address: "192.0.2.9".parse().unwrap(), prefix_len: 32 };
        case.owned = vec![at(1), wrong_prefix.clone(), at(4), unknown.clone()];
        let plan = case.plan();
        assert_eq!(plan.remove, vec![at(1), wrong_prefix, at(4), unknown]);
        assert_eq!(plan.add, vec![at(2)], "the misplaced address is re-added correctly");
    }

    #[test]
    fn an_ineligible_node_releases_everything() {
        let mut case = Case::new();
        case.eligible = false;
        case.assignment = BTreeMap::from([(ip(1), ME.into()), (ip(2), ME.into())]);
        case.owned = vec![at(1), at(2)];
        let plan = case.plan();
        assert_eq!(plan.remove, vec![at(1), at(2)]);
        assert!(plan.add.is_empty());
    }

    #[test]
    fn addresses_on_a_down_link_are_released_and_come_back_with_it() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), ME.into()), (ip(2), ME.into())]);
        case.owned = vec![at(1), at(2)];
        case.down_interfaces = BTreeSet::from(["eth0".to_owned()]);
        let down = case.plan();
        assert_eq!(down.remove, vec![at(1), at(2)]);
        assert!(down.add.is_empty());
        // Linux dropped them (IPv6) or reconcile removed them; the link returns: both come back.
        case.owned.clear();
        case.down_interfaces.clear();
        assert_eq!(case.plan().add, vec![at(1), at(2)]);
        case.down_interfaces = BTreeSet::from(["eth1".to_owned()]);
        assert_eq!(case.plan().add, vec![at(1), at(2)], "another interface's link does not matter");
    }

    #[test]
    fn the_assignee_keeps_a_conflicted_address_and_reannounces_when_it_appears_and_clears() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), ME.into())]);
        case.owned = vec![at(1)];
        case.held_elsewhere = BTreeMap::from([(ip(1), vec![OTHER.to_owned()])]);
        let seen = case.plan();
        assert!(seen.remove.is_empty() && seen.add.is_empty());
        assert_eq!(seen.reannounce, vec![at(1)], "the other holder may have misdirected neighbours");
        assert_eq!(seen.conflicted, BTreeSet::from([ip(1)]));
        case.conflicted = seen.conflicted;
        let during = case.plan();
        assert!(during.is_idle(), "announced once when it appeared");
        assert_eq!(during.conflicted, BTreeSet::from([ip(1)]));
        case.held_elsewhere.clear();
        let after = case.plan();
        assert_eq!(after.reannounce, vec![at(1)]);
        assert!(after.conflicted.is_empty());
    }

    #[test]
    fn a_settling_node_keeps_what_it_holds_and_defers_acquisitions() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), ME.into()), (ip(2), ME.into()), (ip(3), OTHER.into())]);
        case.owned = vec![at(1), at(3)];
        case.may_acquire = false;
        let plan = case.plan();
        assert_eq!(plan.remove, vec![at(3)], "what is not assigned here still goes");
        assert!(plan.add.is_empty());
        assert_eq!(plan.deferred, vec![at(2)]);
        case.may_acquire = true;
        assert_eq!(case.plan().add, vec![at(2)]);
    }

    #[test]
    fn a_membership_change_reannounces_everything_kept_and_nothing_released() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), ME.into()), (ip(2), ME.into()), (ip(3), ME.into())]);
        case.owned = vec![at(1), at(2), at(4)];
        case.reannounce_kept = true;
        let plan = case.plan();
        assert_eq!(plan.reannounce, vec![at(1), at(2)]);
        assert_eq!(plan.add, vec![at(3)], "an added address is announced as added, once");
        assert_eq!(plan.remove, vec![at(4)]);
        case.reannounce_kept = false;
        case.owned = vec![at(1), at(2), at(3)];
        assert!(case.plan().is_idle());
    }

    #[test]
    fn the_node_not_assigned_a_conflicted_address_releases_it() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), OTHER.into())]);
        case.owned = vec![at(1)];
        case.held_elsewhere = BTreeMap::from([(ip(1), vec![OTHER.to_owned()])]);
        assert_eq!(case.plan().remove, vec![at(1)]);
    }

    #[test]
    fn a_duplicate_installation_is_trimmed_to_one() {
        let mut case = Case::new();
        case.assignment = BTreeMap::from([(ip(1), ME.into())]);
        case.owned = vec![at(1), at(1)];
        let plan = case.plan();
        assert_eq!(plan.remove, vec![at(1)]);
        assert!(plan.add.is_empty());
    }

    #[test]
    fn announcements_batch_per_interface() {
        let eth1 = Placement { interface: "eth1".into(), ..at(3) };
        let batches = by_interface(&[at(1), eth1, at(2)]);
        assert_eq!(
            batches,
            BTreeMap::from([("eth0".into(), vec![ip(1), ip(2)]), ("eth1".into(), vec![ip(3)])])
        );
    }
}
