//! Link monitoring: which pool interfaces this node can use right now.
//!
//! An interface that is missing, administratively down or without carrier makes the node
//! ineligible for the addresses on that interface (and only those) until it returns: the node
//! releases them, publishes the interface in its `node` status, and the leader gives them to
//! nodes whose link on it is usable. States come from netlink's link events and are re-read from
//! the kernel on the reconcile timer, in case an event was lost.

use std::collections::{BTreeMap, BTreeSet};

use fechter_netops::LinkState;

/// The last known state of each interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    states: BTreeMap<String, LinkState>,
}

impl Links {
    /// No interface known yet.
    pub fn new() -> Links {
        Links::default()
    }

    /// Records `interface`'s state; returns whether it is usable when that changed (a first
    /// state counts as a change only if the interface is unusable).
    pub fn record(&mut self, interface: &str, state: LinkState) -> Option<bool> {
        let previous = self.states.insert(interface.to_owned(), state);
        let usable = state.is_usable();
        let was_usable = previous.is_none_or(|previous| previous.is_usable());
        (usable != was_usable).then_some(usable)
    }

    /// Whether `interface`'s state is known.
    pub fn knows(&self, interface: &str) -> bool {
        self.states.contains_key(interface)
    }

    /// Of `interfaces`, the ones known to be unusable. An interface whose state is unknown
    /// counts as usable: a netlink hiccup must not move addresses.
    pub fn down<'a>(&self, interfaces: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        interfaces
            .into_iter()
            .filter(|interface| self.states.get(*interface).is_some_and(|state| !state.is_usable()))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_loss_admin_down_and_absence_make_an_interface_unusable() {
        let mut links = Links::new();
        assert_eq!(links.record("eth0", LinkState::UP), None);
        assert_eq!(links.record("eth1", LinkState::DOWN), Some(false));
        let no_carrier = LinkState { exists: true, up: true, carrier: false };
        assert_eq!(links.record("eth0", no_carrier), Some(false));
        assert_eq!(links.record("eth0", no_carrier), None);
        assert_eq!(links.record("eth2", LinkState::ABSENT), Some(false));
        assert_eq!(
            links.down(["eth0", "eth1", "eth2", "eth3"]),
            BTreeSet::from(["eth0".to_owned(), "eth1".to_owned(), "eth2".to_owned()]),
            "an unknown interface counts as usable"
        );
        assert!(links.knows("eth1") && !links.knows("eth3"));
        assert_eq!(links.record("eth0", LinkState::UP), Some(true));
        assert!(!links.down(["eth0"]).contains("eth0"));
    }
}
