//! Turns rtnetlink multicast messages into [`NetEvent`]s.
//!
//! The kernel sends `RTM_NEWLINK` for every change of a link (statistics, MTU, flags alike), so the
//! watcher remembers the last [`LinkState`] it reported for each interface and reports only real
//! changes. The first message about an interface is always reported: comparing it with a state
//! dumped at subscription time could swallow a change that raced with the dump. The watcher also
//! remembers interface names by index, because address messages carry only the index.

use std::collections::BTreeMap;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkMessage;

use crate::rtnl;
use crate::{LinkState, NetEvent};

/// The memory the translation needs: names and last known states by interface index.
#[derive(Debug, Default)]
pub(crate) struct Watcher {
    names: BTreeMap<u32, String>,
    states: BTreeMap<u32, LinkState>,
}

impl Watcher {
    /// Learns the name of a link from a dump, without reporting anything.
    pub(crate) fn learn_name(&mut self, link: &LinkMessage) {
        if let Some(name) = rtnl::link_name(link) {
            self.names.insert(link.header.index, name.to_owned());
        }
    }

    /// Whether the name of interface `index` is known.
    pub(crate) fn knows(&self, index: u32) -> bool {
        self.names.contains_key(&index)
    }

    /// The event a multicast message means, if any.
    pub(crate) fn on_message(&mut self, message: &RouteNetlinkMessage) -> Option<NetEvent> {
        match message {
            RouteNetlinkMessage::NewLink(link) => {
                let index = link.header.index;
                if let Some(name) = rtnl::link_name(link) {
                    self.names.insert(index, name.to_owned());
                }
                let state = rtnl::link_state(link);
                if self.states.insert(index, state) == Some(state) {
                    return None;
                }
                Some(NetEvent::LinkChanged { interface: self.names.get(&index)?.clone(), state })
            }
            RouteNetlinkMessage::DelLink(link) => {
                let index = link.header.index;
                self.states.remove(&index);
                // The name is kept: address removals for this index may still be on their way,
                // and the kernel does not reuse an index soon.
                let interface =
                    rtnl::link_name(link).map(str::to_owned).or_else(|| self.names.get(&index).cloned())?;
                Some(NetEvent::LinkChanged { interface, state: LinkState::ABSENT })
            }
            RouteNetlinkMessage::NewAddress(address) => {
                let name = self.names.get(&address.header.index)?;
                rtnl::installed_address(address, name).map(NetEvent::AddressAdded)
            }
            RouteNetlinkMessage::DelAddress(address) => {
                let name = self.names.get(&address.header.index)?;
                rtnl::installed_address(address, name).map(NetEvent::AddressRemoved)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstalledAddress;
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags};
    use std::net::{IpAddr, Ipv4Addr};

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        link
    }

    fn address(index: u32) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.index = index;
        message.header.prefix_len = 24;
        message.attributes.push(AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9))));
        message
    }

    #[test]
    fn only_real_link_changes_are_reported() {
        let mut watcher = Watcher::default();
        let up = RouteNetlinkMessage::NewLink(link(3, "eth0", LinkFlags::Up | LinkFlags::LowerUp));
        assert_eq!(
            watcher.on_message(&up),
            Some(NetEvent::LinkChanged { interface: "eth0".to_owned(), state: LinkState::UP }),
            "the first message about a link is reported"
        );
        assert_eq!(watcher.on_message(&up), None);
        let pulled = RouteNetlinkMessage::NewLink(link(3, "eth0", LinkFlags::Up));
        assert_eq!(
            watcher.on_message(&pulled),
            Some(NetEvent::LinkChanged {
                interface: "eth0".to_owned(),
                state: LinkState { exists: true, up: true, carrier: false }
            })
        );
        let gone = RouteNetlinkMessage::DelLink(link(3, "eth0", LinkFlags::empty()));
        assert_eq!(
            watcher.on_message(&gone),
            Some(NetEvent::LinkChanged { interface: "eth0".to_owned(), state: LinkState::ABSENT })
        );
    }

    #[test]
    fn new_links_are_reported_and_named() {
        let mut watcher = Watcher::default();
        assert!(!watcher.knows(5));
        let new = RouteNetlinkMessage::NewLink(link(5, "eth1", LinkFlags::empty()));
        assert_eq!(
            watcher.on_message(&new),
            Some(NetEvent::LinkChanged { interface: "eth1".to_owned(), state: LinkState::DOWN })
        );
        assert!(watcher.knows(5));
    }

    #[test]
    fn address_messages_become_events_with_the_interface_name() {
        let mut watcher = Watcher::default();
        assert_eq!(
            watcher.on_message(&RouteNetlinkMessage::NewAddress(address(3))),
            None,
            "an address on an unknown interface cannot be named"
        );
        watcher.learn_name(&link(3, "eth0", LinkFlags::Up));
        let expected = InstalledAddress {
            interface: "eth0".to_owned(),
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)),
            prefix_len: 24,
            owned: false,
        };
        assert_eq!(
            watcher.on_message(&RouteNetlinkMessage::NewAddress(address(3))),
            Some(NetEvent::AddressAdded(expected.clone()))
        );
        assert_eq!(
            watcher.on_message(&RouteNetlinkMessage::DelAddress(address(3))),
            Some(NetEvent::AddressRemoved(expected))
        );
    }
}
