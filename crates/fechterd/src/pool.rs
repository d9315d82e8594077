//! The replicated address pool: a last-writer-wins map ordered by hybrid logical stamps.
//!
//! Every node publishes the records it writes under its own `pool:<addr>` gossip keys; the pool is
//! the merge of every node's records, alive or dead. Per address the record with the greatest
//! `changed` stamp wins, so the merge is commutative, associative and idempotent and every node
//! converges on the same pool whatever order it hears the records in. Pool order is ascending
//! `added`: the stamp of the add that created the current incarnation, so a re-added address goes
//! to the end. A removed address stays behind as a tombstone, keeps its place and is never assigned.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fechter_alloc::{EntryState, PoolEntry};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hlc::Stamp;

/// The longest interface name Linux accepts (IFNAMSIZ minus the terminating NUL).
const MAX_INTERFACE_NAME: usize = 15;

/// One address of the pool as written by some node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// The interface the address goes on.
    pub interface: String,
    /// The prefix length it is installed with.
    pub prefix_len: u8,
    /// False once removed: the record is then a tombstone.
    pub active: bool,
    /// When the current incarnation was added; orders the pool.
    pub added: Stamp,
    /// When this record was last written; the greatest wins.
    pub changed: Stamp,
}

impl PoolRecord {
    /// The total order the merge uses. `changed` decides; the rest only breaks ties between
    /// records that a misbehaving writer gave the same stamp, so that every node still agrees.
    fn precedence(&self) -> (&Stamp, &Stamp, bool, &str, u8) {
        (&self.changed, &self.added, self.active, &self.interface, self.prefix_len)
    }

    /// Checks a record that came from a peer or a file before it can reach the kernel.
    pub fn validate(&self, address: IpAddr) -> Result<(), PoolError> {
        validate_interface(&self.interface)?;
        validate_address(address)?;
        validate_prefix(address, self.prefix_len)
    }
}

/// Why a pool change was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolError {
    /// An interface name, address or prefix length is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// The address is already active in the pool.
    #[error("{0}")]
    Duplicate(String),
    /// The address is not active in the pool on that interface.
    #[error("{0}")]
    Unknown(String),
}

/// The merged pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    records: BTreeMap<IpAddr, PoolRecord>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Merges one record; returns whether the pool changed.
    pub fn merge(&mut self, address: IpAddr, record: PoolRecord) -> bool {
        match self.records.get(&address) {
            Some(existing) if existing.precedence() >= record.precedence() => false,
            _ => {
                self.records.insert(address, record);
                true
            }
        }
    }

    /// Merges every record of `other`; returns whether the pool changed.
    pub fn merge_all<'a>(&mut self, other: impl IntoIterator<Item = (IpAddr, &'a PoolRecord)>) -> bool {
        let mut changed = false;
        for (address, record) in other {
            changed |= self.merge(address, record.clone());
        }
        changed
    }

    /// The record of `address`, active or tombstone.
    pub fn get(&self, address: IpAddr) -> Option<&PoolRecord> {
        self.records.get(&address)
    }

    /// The record of `address` if it is active.
    pub fn active(&self, address: IpAddr) -> Option<&PoolRecord> {
        self.records.get(&address).filter(|record| record.active)
    }

    /// Every record, in address order.
    pub fn records(&self) -> impl Iterator<Item = (IpAddr, &PoolRecord)> {
        self.records.iter().map(|(address, record)| (*address, record))
    }

    /// Every record in pool order: ascending `added`, then address.
    pub fn ordered(&self) -> Vec<(IpAddr, &PoolRecord)> {
        let mut ordered: Vec<_> = self.records().collect();
        ordered
            .sort_by(|(a_address, a), (b_address, b)| a.added.cmp(&b.added).then(a_address.cmp(b_address)));
        ordered
    }

    /// The pool as the allocator takes it: pool order, tombstones included.
    pub fn entries(&self) -> Vec<PoolEntry> {
        self.ordered()
            .into_iter()
            .map(|(address, record)| PoolEntry {
                interface: record.interface.clone(),
                address,
                prefix_len: record.prefix_len,
                state: if record.active { EntryState::Active } else { EntryState::Tombstone },
            })
            .collect()
    }

    /// The record that adds `interface:address/prefix_len` at `stamp`, or why it may not be added.
    pub fn plan_add(
        &self,
        interface: &str,
        address: IpAddr,
        prefix_len: Option<u8>,
        stamp: Stamp,
    ) -> Result<PoolRecord, PoolError> {
        validate_interface(interface)?;
        validate_address(address)?;
        let prefix_len = prefix_len.unwrap_or(if address.is_ipv4() { 32 } else { 128 });
        validate_prefix(address, prefix_len)?;
        if let Some(existing) = self.active(address) {
            return Err(PoolError::Duplicate(format!(
                "{address} is already in the pool (on {})",
                existing.interface
            )));
        }
        Ok(PoolRecord {
            interface: interface.to_owned(),
            prefix_len,
            active: true,
            added: stamp.clone(),
            changed: stamp,
        })
    }

    /// The tombstone that removes `interface:address` at `stamp`, or why it may not be removed.
    pub fn plan_remove(
        &self,
        interface: &str,
        address: IpAddr,
        stamp: Stamp,
    ) -> Result<PoolRecord, PoolError> {
        validate_interface(interface)?;
        match self.active(address) {
            Some(existing) if existing.interface == interface => {
                Ok(PoolRecord { active: false, changed: stamp, ..existing.clone() })
            }
            Some(existing) => Err(PoolError::Unknown(format!(
                "{interface}:{address} is not in the pool ({address} is on {})",
                existing.interface
            ))),
            None => Err(PoolError::Unknown(format!("{interface}:{address} is not in the pool"))),
        }
    }

    /// Every stamp in the pool, for moving the local clock past them.
    pub fn stamps(&self) -> impl Iterator<Item = &Stamp> {
        self.records.values().flat_map(|record| [&record.added, &record.changed])
    }
}

/// Checks a Linux interface name: 1 to 15 bytes, not `.` or `..`, no '/', ':', whitespace or NUL.
pub fn validate_interface(name: &str) -> Result<(), PoolError> {
    if name == "." || name == ".." {
        return Err(PoolError::InvalidArgument(format!("{name:?} is not an interface name")));
    }
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        return Err(PoolError::InvalidArgument(format!(
            "interface name {name:?} must be 1 to {MAX_INTERFACE_NAME} bytes long"
        )));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
        return Err(PoolError::InvalidArgument(format!(
            "interface name {name:?} may not contain '/', ':', whitespace or NUL"
        )));
    }
    Ok(())
}

/// Checks that an address can be a floating unicast address.
pub fn validate_address(address: IpAddr) -> Result<(), PoolError> {
    if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
        return Err(PoolError::InvalidArgument(format!(
            "{address} cannot be a pool address (unspecified, multicast or loopback)"
        )));
    }
    if let IpAddr::V4(v4) = address
        && v4.is_broadcast()
    {
        return Err(PoolError::InvalidArgument(format!("{address} is the broadcast address")));
    }
    Ok(())
}

/// Checks a prefix length against the address family: 1 to 32 for IPv4, 1 to 128 for IPv6.
pub fn validate_prefix(address: IpAddr, prefix_len: u8) -> Result<(), PoolError> {
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix_len == 0 || prefix_len > max {
        return Err(PoolError::InvalidArgument(format!(
            "prefix length /{prefix_len} is not valid for {address} (from /1 to /{max})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(wall_ms: u64, node: &str) -> Stamp {
        Stamp { wall_ms, counter: 0, node: node.to_owned() }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn add(pool: &mut Pool, address: &str, at: u64) {
        let record = pool.plan_add("eth0", ip(address), None, stamp(at, "n")).unwrap();
        assert!(pool.merge(ip(address), record));
    }

    #[test]
    fn newest_change_wins_whatever_the_merge_order() {
        let a = PoolRecord {
            interface: "eth0".into(),
            prefix_len: 32,
            active: true,
            added: stamp(1, "a"),
            changed: stamp(1, "a"),
        };
        let b = PoolRecord { active: false, changed: stamp(2, "b"), ..a.clone() };
        let mut forward = Pool::new();
        forward.merge(ip("10.0.0.1"), a.clone());
        forward.merge(ip("10.0.0.1"), b.clone());
        let mut backward = Pool::new();
        backward.merge(ip("10.0.0.1"), b.clone());
        assert!(!backward.merge(ip("10.0.0.1"), a));
        assert_eq!(forward, backward);
        assert!(forward.active(ip("10.0.0.1")).is_none());
        assert!(!forward.merge(ip("10.0.0.1"), b), "merging the same record twice changes nothing");
    }

    #[test]
    fn equal_stamps_with_different_contents_still_converge() {
        let a = PoolRecord {
            interface: "eth0".into(),
            prefix_len: 32,
            active: true,
            added: stamp(1, "a"),
            changed: stamp(1, "a"),
        };
        let b = PoolRecord { interface: "eth1".into(), ..a.clone() };
        let mut one = Pool::new();
        one.merge(ip("10.0.0.1"), a.clone());
        one.merge(ip("10.0.0.1"), b.clone());
        let mut two = Pool::new();
        two.merge(ip("10.0.0.1"), b);
        two.merge(ip("10.0.0.1"), a);
        assert_eq!(one, two);
    }

    #[test]
    fn pool_order_follows_added_and_a_readd_goes_to_the_end() {
        let mut pool = Pool::new();
        add(&mut pool, "10.0.0.3", 1);
        add(&mut pool, "10.0.0.1", 2);
        add(&mut pool, "10.0.0.2", 3);
        let removal = pool.plan_remove("eth0", ip("10.0.0.3"), stamp(4, "n")).unwrap();
        pool.merge(ip("10.0.0.3"), removal);
        let order: Vec<_> = pool.entries().into_iter().map(|e| (e.address, e.state)).collect();
        assert_eq!(
            order,
            vec![
                (ip("10.0.0.3"), EntryState::Tombstone),
                (ip("10.0.0.1"), EntryState::Active),
                (ip("10.0.0.2"), EntryState::Active)
            ]
        );
        add(&mut pool, "10.0.0.3", 5);
        let last = pool.entries().pop().unwrap();
        assert_eq!((last.address, last.state), (ip("10.0.0.3"), EntryState::Active));
    }

    #[test]
    fn add_defaults_the_prefix_and_refuses_duplicates() {
        let mut pool = Pool::new();
        let v6 = pool.plan_add("eth0", ip("2001:db8::5"), None, stamp(1, "n")).unwrap();
        assert_eq!(v6.prefix_len, 128);
        add(&mut pool, "10.0.0.1", 1);
        assert_eq!(pool.active(ip("10.0.0.1")).unwrap().prefix_len, 32);
        let duplicate = pool.plan_add("eth1", ip("10.0.0.1"), Some(24), stamp(2, "n"));
        assert!(matches!(duplicate, Err(PoolError::Duplicate(_))));
    }

    #[test]
    fn add_refuses_bad_input() {
        let pool = Pool::new();
        for (interface, address, prefix) in [
            ("", "10.0.0.1", None),
            ("sixteen-bytes-xx", "10.0.0.1", None),
            ("eth0:1", "10.0.0.1", None),
            ("eth 0", "10.0.0.1", None),
            ("a/b", "10.0.0.1", None),
            ("eth0", "0.0.0.0", None),
            ("eth0", "127.0.0.1", None),
            ("eth0", "224.0.0.1", None),
            ("eth0", "255.255.255.255", None),
            ("eth0", "::1", None),
            ("eth0", "ff02::1", None),
            ("eth0", "10.0.0.1", Some(33)),
            ("eth0", "2001:db8::1", Some(129)),
            ("eth0", "10.0.0.1", Some(0)),
            ("..", "10.0.0.1", None),
        ] {
            let result = pool.plan_add(interface, ip(address), prefix, stamp(1, "n"));
            assert!(matches!(result, Err(PoolError::InvalidArgument(_))), "{interface} {address} {prefix:?}");
        }
        assert!(pool.plan_add("fifteen-bytes-x", ip("10.0.0.1"), Some(1), stamp(1, "n")).is_ok());
    }

    #[test]
    fn remove_needs_an_active_address_on_the_same_interface() {
        let mut pool = Pool::new();
        add(&mut pool, "10.0.0.1", 1);
        let wrong = pool.plan_remove("eth1", ip("10.0.0.1"), stamp(2, "n")).unwrap_err();
        assert!(matches!(&wrong, PoolError::Unknown(message) if message.contains("eth1:10.0.0.1")));
        let missing = pool.plan_remove("eth0", ip("10.0.0.9"), stamp(2, "n"));
        assert!(matches!(missing, Err(PoolError::Unknown(_))));
        let removal = pool.plan_remove("eth0", ip("10.0.0.1"), stamp(2, "n")).unwrap();
        assert_eq!(removal.added, stamp(1, "n"));
        pool.merge(ip("10.0.0.1"), removal);
        assert!(matches!(
            pool.plan_remove("eth0", ip("10.0.0.1"), stamp(3, "n")),
            Err(PoolError::Unknown(_))
        ));
    }
}
