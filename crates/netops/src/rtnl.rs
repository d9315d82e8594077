//! Pure readings of rtnetlink messages: which address a message names, whether it carries
//! fechter's mark, what state a link is in, and how kernel error codes map onto [`NetError`].

use std::net::IpAddr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use crate::frames::MacAddr;
use crate::{AddressSpec, FECHTER_ADDRESS_PROTOCOL, InstalledAddress, LinkState, NetError};

/// The interface's own address in an address message: `IFA_LOCAL` when present (it differs from
/// `IFA_ADDRESS` only on point-to-point links, where `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`.
pub(crate) fn local_address(message: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(local) => return Some(*local),
            AddressAttribute::Address(found) => address = Some(*found),
            _ => {}
        }
    }
    address
}

/// Whether the message describes an address fechter installed on `interface`.
///
/// The protocol attribute is the mark; the IPv4 label is accepted as well so that IPv4 addresses
/// stay recognisable on kernels older than 5.18, which drop `IFA_PROTO`.
pub(crate) fn is_owned(message: &AddressMessage, interface: &str) -> bool {
    let label = crate::ownership_label(interface);
    message.attributes.iter().any(|attribute| match attribute {
        AddressAttribute::Protocol(protocol) => u8::from(*protocol) == FECHTER_ADDRESS_PROTOCOL,
        AddressAttribute::Label(found) => {
            message.header.family == AddressFamily::Inet && Some(found) == label.as_ref()
        }
        _ => false,
    })
}

/// The [`InstalledAddress`] an address message describes, given its interface's name.
pub(crate) fn installed_address(message: &AddressMessage, interface: &str) -> Option<InstalledAddress> {
    Some(InstalledAddress {
        interface: interface.to_owned(),
        address: local_address(message)?,
        prefix_len: message.header.prefix_len,
        owned: is_owned(message, interface),
    })
}

/// Adds fechter's mark to an address request: the protocol attribute, the IPv4 label when it
/// fits, and for IPv6 the no-DAD flag so the address is usable at once instead of tentative.
pub(crate) fn mark_new_address(message: &mut AddressMessage, spec: &AddressSpec) {
    message.attributes.push(AddressAttribute::Protocol(AddressProtocol::from(FECHTER_ADDRESS_PROTOCOL)));
    match spec.address {
        IpAddr::V4(_) => {
            if let Some(label) = crate::ownership_label(&spec.interface) {
                message.attributes.push(AddressAttribute::Label(label));
            }
        }
        IpAddr::V6(_) => {
            message.header.flags |= AddressHeaderFlags::Nodad;
            message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
}

/// Whether the message describes an IPv4 primary address, whose deletion takes the secondary
/// addresses of its subnet with it (or, under `promote_secondaries`, promotes one of them and
/// rewrites the routes), so a batch deletes those last.
pub(crate) fn is_ipv4_primary(message: &AddressMessage) -> bool {
    message.header.family == AddressFamily::Inet
        && !message.header.flags.contains(AddressHeaderFlags::Secondary)
}

/// A minimal delete request for the address a dump returned: the same family, prefix, interface
/// and addresses (and the IPv4 label, which the kernel then also matches), nothing else.
pub(crate) fn delete_request(found: &AddressMessage) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = found.header.family;
    message.header.prefix_len = found.header.prefix_len;
    message.header.index = found.header.index;
    message.attributes = found
        .attributes
        .iter()
        .filter(|attribute| {
            matches!(
                attribute,
                AddressAttribute::Address(_) | AddressAttribute::Local(_) | AddressAttribute::Label(_)
            )
        })
        .cloned()
        .collect();
    message
}

/// The interface name a link message carries.
pub(crate) fn link_name(message: &LinkMessage) -> Option<&str> {
    message.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// The state a link message reports.
pub(crate) fn link_state(message: &LinkMessage) -> LinkState {
    let flags = message.header.flags;
    LinkState { exists: true, up: flags.contains(LinkFlags::Up), carrier: flags.contains(LinkFlags::LowerUp) }
}

/// The Ethernet address of a link, when it has a 6-byte one that is not all zeros (loopback
/// reports zeros, and nobody can be told to send to them).
pub(crate) fn link_mac(message: &LinkMessage) -> Option<MacAddr> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => match bytes.as_slice() {
                &[a, b, c, d, e, f] => Some(MacAddr(a, b, c, d, e, f)),
                _ => None,
            },
            _ => None,
        })
        .filter(|mac| *mac != MacAddr::zero())
}

/// The positive errno of a netlink error answer, if the error is one.
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

/// Maps a netlink failure onto [`NetError`]; `interface` names the subject of `ENODEV`.
pub(crate) fn net_error(error: rtnetlink::Error, interface: &str) -> NetError {
    match errno(&error) {
        Some(libc::EPERM | libc::EACCES) => NetError::PermissionDenied,
        Some(libc::ENODEV) => NetError::NoSuchInterface(interface.to_owned()),
        _ => NetError::Netlink(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn message(family: AddressFamily, address: IpAddr, prefix_len: u8) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.family = family;
        message.header.prefix_len = prefix_len;
        message.header.index = 7;
        message.attributes.push(AddressAttribute::Address(address));
        message
    }

    #[test]
    fn marked_ipv4_address_is_owned_and_carries_the_label() {
        let address = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let spec = AddressSpec::new("eth0", address, 24);
        let mut marked = message(AddressFamily::Inet, address, 24);
        mark_new_address(&mut marked, &spec);
        assert!(marked.attributes.contains(&AddressAttribute::Label("eth0:fch".to_owned())));
        assert!(is_owned(&marked, "eth0"));
        let installed = installed_address(&marked, "eth0").expect("an address");
        assert_eq!(installed.spec(), spec);
        assert!(installed.owned);
    }

    #[test]
    fn label_alone_marks_ipv4_but_protocol_alone_marks_both() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut labelled = message(AddressFamily::Inet, v4, 24);
        labelled.attributes.push(AddressAttribute::Label("eth0:fch".to_owned()));
        assert!(is_owned(&labelled, "eth0"));
        assert!(!is_owned(&labelled, "eth1"));

        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let mut marked = message(AddressFamily::Inet6, v6, 64);
        assert!(!is_owned(&marked, "eth0"));
        mark_new_address(&mut marked, &AddressSpec::new("eth0", v6, 64));
        assert!(is_owned(&marked, "eth0"));
        assert!(marked.header.flags.contains(AddressHeaderFlags::Nodad));
        assert!(marked.attributes.contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
    }

    #[test]
    fn other_protocols_are_not_fechters() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut kernel = message(AddressFamily::Inet, v4, 24);
        kernel.attributes.push(AddressAttribute::Protocol(AddressProtocol::Loopback));
        kernel.attributes.push(AddressAttribute::Label("eth0".to_owned()));
        assert!(!is_owned(&kernel, "eth0"));
    }

    #[test]
    fn local_address_wins_over_peer_address() {
        let mut point_to_point = message(AddressFamily::Inet, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 32);
        let local = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        point_to_point.attributes.push(AddressAttribute::Local(local));
        assert_eq!(local_address(&point_to_point), Some(local));
    }

    #[test]
    fn delete_request_keeps_only_identity() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut found = message(AddressFamily::Inet, v4, 24);
        mark_new_address(&mut found, &AddressSpec::new("eth0", v4, 24));
        found.attributes.push(AddressAttribute::Local(v4));
        let request = delete_request(&found);
        assert_eq!(request.header.index, 7);
        assert_eq!(request.header.prefix_len, 24);
        assert_eq!(request.attributes.len(), 3);
        assert!(
            !request.attributes.iter().any(|attribute| matches!(attribute, AddressAttribute::Protocol(_)))
        );
    }

    #[test]
    fn only_ipv4_addresses_without_the_secondary_flag_are_primaries() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut primary = message(AddressFamily::Inet, v4, 24);
        assert!(is_ipv4_primary(&primary));
        primary.header.flags |= AddressHeaderFlags::Secondary;
        assert!(!is_ipv4_primary(&primary));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert!(!is_ipv4_primary(&message(AddressFamily::Inet6, v6, 64)));
    }

    #[test]
    fn link_state_and_mac_come_from_flags_and_attributes() {
        let mut link = LinkMessage::default();
        link.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        link.attributes.push(LinkAttribute::IfName("eth0".to_owned()));
        link.attributes.push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]));
        assert_eq!(link_name(&link), Some("eth0"));
        assert_eq!(link_state(&link), LinkState::UP);
        assert_eq!(link_mac(&link), Some(MacAddr(2, 0, 0, 0, 0, 1)));
        let mut loopback = LinkMessage::default();
        loopback.attributes.push(LinkAttribute::Address(vec![0; 6]));
        assert_eq!(link_mac(&loopback), None);
        link.header.flags = LinkFlags::Up;
        assert_eq!(link_state(&link), LinkState { exists: true, up: true, carrier: false });
    }
}
