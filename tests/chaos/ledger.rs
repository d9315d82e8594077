//! The pool the CLI acknowledged: what the cluster must end with, built from the commands that
//! exited 0.
//!
//! An acknowledged add makes an address expected present, an acknowledged remove expected absent.
//! A refused command (exit 1 with an error from the daemon or no daemon) changed nothing. A command
//! whose fate is unknown (it hung and was killed) makes the address uncertain until the next
//! acknowledged command on it: the final check then accepts either outcome.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// What the cluster must do with one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expectation {
    /// In the pool since an acknowledged add.
    Present {
        /// When the add was acknowledged, or when the node it went through could first pass it
        /// on to a node able to hold it (see [`ExpectedPool::release_pending`]).
        since: Duration,
        /// The node the add went through.
        via: usize,
        /// The add went through a node cut off from every eligible node: nobody can hold the
        /// address before that node's fault is healed.
        pending: bool,
        /// The rank of the add among all acknowledged adds: the pool's expected order.
        rank: u64,
    },
    /// Removed by an acknowledged remove.
    Absent,
    /// The last command on it may or may not have taken effect.
    Uncertain,
}

/// The expected pool, address by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExpectedPool {
    entries: BTreeMap<IpAddr, Expectation>,
    next_rank: u64,
}

impl ExpectedPool {
    /// Records an acknowledged add through `via` at `now`; `reachable` says whether `via` could
    /// pass it on to a node able to hold it.
    pub(crate) fn added(&mut self, address: IpAddr, now: Duration, via: usize, reachable: bool) {
        let rank = self.next_rank;
        self.next_rank += 1;
        self.entries.insert(address, Expectation::Present { since: now, via, pending: !reachable, rank });
    }

    /// Records an acknowledged remove.
    pub(crate) fn removed(&mut self, address: IpAddr) {
        self.entries.insert(address, Expectation::Absent);
    }

    /// Records a command on `address` whose outcome is unknown.
    pub(crate) fn uncertain(&mut self, address: IpAddr) {
        self.entries.insert(address, Expectation::Uncertain);
    }

    /// Node `node`'s fault was healed at `now`: the adds that went through it can now spread.
    pub(crate) fn release_pending(&mut self, node: usize, now: Duration) {
        for expectation in self.entries.values_mut() {
            if let Expectation::Present { since, via, pending, .. } = expectation
                && *pending
                && *via == node
            {
                *since = now;
                *pending = false;
            }
        }
    }

    /// Every address with its expectation.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (IpAddr, Expectation)> + '_ {
        self.entries.iter().map(|(address, expectation)| (*address, *expectation))
    }

    /// The addresses expected present, in expected pool order.
    pub(crate) fn present_in_order(&self) -> Vec<IpAddr> {
        let mut present: Vec<(u64, IpAddr)> = self
            .entries
            .iter()
            .filter_map(|(address, expectation)| match expectation {
                Expectation::Present { rank, .. } => Some((*rank, *address)),
                _ => None,
            })
            .collect();
        present.sort_unstable();
        present.into_iter().map(|(_, address)| address).collect()
    }

    /// Why `pool` (a node's active pool, in its order) breaks an acknowledged command, one line
    /// per problem: a present address missing, an absent one back, or the order of the present
    /// ones changed. Uncertain addresses may be there or not.
    pub(crate) fn problems(&self, pool: &[IpAddr]) -> Vec<String> {
        let mut problems = Vec::new();
        for (address, expectation) in &self.entries {
            match expectation {
                Expectation::Present { .. } if !pool.contains(address) => {
                    problems.push(format!("acknowledged add of {address} lost"));
                }
                Expectation::Absent if pool.contains(address) => {
                    problems.push(format!("acknowledged remove of {address} undone"));
                }
                _ => {}
            }
        }
        let expected = self.present_in_order();
        let seen: Vec<IpAddr> = pool.iter().copied().filter(|address| expected.contains(address)).collect();
        if problems.is_empty() && seen != expected {
            problems.push(format!(
                "pool order {seen:?} differs from the order of the acknowledged adds {expected:?}"
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, last])
    }

    #[test]
    fn the_latest_acknowledged_command_decides() {
        let mut pool = ExpectedPool::default();
        pool.added(address(100), Duration::ZERO, 0, true);
        pool.added(address(101), Duration::ZERO, 1, false);
        pool.added(address(102), Duration::ZERO, 0, true);
        pool.removed(address(100));
        pool.uncertain(address(102));
        pool.added(address(100), Duration::from_secs(1), 0, true);
        assert_eq!(pool.present_in_order(), vec![address(101), address(100)]);
        assert!(pool.problems(&[address(101), address(100)]).is_empty());
        assert!(pool.problems(&[address(101), address(102), address(100)]).is_empty());
        assert_eq!(
            pool.problems(&[address(100)]),
            vec![format!("acknowledged add of {} lost", address(101))]
        );
        assert!(pool.problems(&[address(100), address(101)])[0].contains("order"));
        pool.removed(address(101));
        assert_eq!(
            pool.problems(&[address(101), address(100)]),
            vec![format!("acknowledged remove of {} undone", address(101))]
        );
    }

    #[test]
    fn a_pending_add_starts_counting_when_its_node_heals() {
        let mut pool = ExpectedPool::default();
        pool.added(address(100), Duration::from_secs(1), 3, false);
        pool.release_pending(2, Duration::from_secs(5));
        assert!(matches!(pool.entries().next(), Some((_, Expectation::Present { pending: true, .. }))));
        pool.release_pending(3, Duration::from_secs(6));
        assert_eq!(
            pool.entries().next(),
            Some((
                address(100),
                Expectation::Present { since: Duration::from_secs(6), via: 3, pending: false, rank: 0 }
            ))
        );
    }
}
