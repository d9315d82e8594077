//! Byte-exact announcement frames, built and decoded with pnet's packet types.
//!
//! The builders are pure so they are tested without privileges; [`crate::LinuxNet`] only hands
//! their output to an `AF_PACKET` socket.
//!
//! - [`garp_request`]: Ethernet broadcast, ARP op 1, SHA = own MAC, SPA = TPA = VIP, THA = zero
//!   (RFC 5227 "ARP announcement").
//! - [`garp_reply`]: Ethernet broadcast, ARP op 2, SHA = THA = own MAC, SPA = TPA = VIP. THA is the
//!   own MAC, as RFC 2002 section 4.6 prescribes and `arping -A` sends, because Linux only treats an
//!   ARP reply as gratuitous (and overrides an existing neighbour entry at once) when SHA == THA.
//! - [`unsolicited_na`]: ICMPv6 neighbour advertisement from the VIP to ff02::1 (Ethernet
//!   33:33:00:00:00:01), hop limit 255, override set, solicited and router clear, with a target
//!   link-layer address option (RFC 4861 section 7.2.6).
//!
//! Switches differ in which kind of gratuitous ARP they honour, so fechter sends both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet::packet::arp::{ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket};
use pnet::packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet::packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags, NeighborAdvertPacket,
};
use pnet::packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet::packet::ip::IpNextHeaderProtocols;
use pnet::packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet::packet::{MutablePacket, Packet};

pub use pnet::util::MacAddr;

const ETHERNET_HEADER_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER_LEN: usize = 40;
/// Neighbour advertisement header (24 bytes) plus one 8-byte target link-layer address option.
const NA_LEN: usize = 24 + 8;
/// Hop limit every neighbour discovery message must carry (RFC 4861 section 7.1.2).
const ND_HOP_LIMIT: u8 = 255;

/// The length of an ARP frame built here (no padding: the NIC pads to the 60-byte minimum).
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;
/// The length of a neighbour advertisement frame built here.
pub const NA_FRAME_LEN: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + NA_LEN;

/// The all-nodes multicast group, destination of unsolicited neighbour advertisements.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address of [`ALL_NODES`] (33:33 followed by the group's last four bytes).
pub const ALL_NODES_MAC: MacAddr = MacAddr(0x33, 0x33, 0, 0, 0, 1);

/// A gratuitous ARP request announcing that `ip` is at `mac`.
pub fn garp_request(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(mac, ip, ArpOperations::Request, MacAddr::zero())
}

/// A gratuitous ARP reply announcing that `ip` is at `mac`.
pub fn garp_reply(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(mac, ip, ArpOperations::Reply, mac)
}

fn arp_frame(mac: MacAddr, ip: Ipv4Addr, operation: ArpOperation, target_mac: MacAddr) -> Vec<u8> {
    let mut frame = vec![0u8; ARP_FRAME_LEN];
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(MacAddr::broadcast());
        ethernet.set_source(mac);
        ethernet.set_ethertype(EtherTypes::Arp);
        if let Some(mut arp) = MutableArpPacket::new(ethernet.payload_mut()) {
            arp.set_hardware_type(ArpHardwareTypes::Ethernet);
            arp.set_protocol_type(EtherTypes::Ipv4);
            arp.set_hw_addr_len(6);
            arp.set_proto_addr_len(4);
            arp.set_operation(operation);
            arp.set_sender_hw_addr(mac);
            arp.set_sender_proto_addr(ip);
            arp.set_target_hw_addr(target_mac);
            arp.set_target_proto_addr(ip);
        }
    }
    frame
}

/// An unsolicited neighbour advertisement announcing that `ip` is at `mac`, sent from `ip`.
pub fn unsolicited_na(mac: MacAddr, ip: Ipv6Addr) -> Vec<u8> {
    let mut frame = vec![0u8; NA_FRAME_LEN];
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(ALL_NODES_MAC);
        ethernet.set_source(mac);
        ethernet.set_ethertype(EtherTypes::Ipv6);
        if let Some(mut ipv6) = MutableIpv6Packet::new(ethernet.payload_mut()) {
            ipv6.set_version(6);
            ipv6.set_traffic_class(0);
            ipv6.set_flow_label(0);
            // NA_LEN is a small constant, so the conversion cannot truncate.
            ipv6.set_payload_length(NA_LEN as u16);
            ipv6.set_next_header(IpNextHeaderProtocols::Icmpv6);
            ipv6.set_hop_limit(ND_HOP_LIMIT);
            ipv6.set_source(ip);
            ipv6.set_destination(ALL_NODES);
            if let Some(mut advert) = MutableNeighborAdvertPacket::new(ipv6.payload_mut()) {
                advert.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
                advert.set_icmpv6_code(Icmpv6Code(0));
                advert.set_flags(NeighborAdvertFlags::Override);
                advert.set_reserved(0);
                advert.set_target_addr(ip);
                advert.set_options(&[NdpOption {
                    option_type: NdpOptionTypes::TargetLLAddr,
                    length: 1,
                    data: mac.octets().to_vec(),
                }]);
                let checksum = Icmpv6Packet::new(advert.packet())
                    .map(|packet| icmpv6::checksum(&packet, &ip, &ALL_NODES));
                if let Some(checksum) = checksum {
                    advert.set_checksum(checksum);
                }
            }
        }
    }
    frame
}

/// Every frame of one announcement round for `addresses`: a request and a reply per IPv4 address,
/// a neighbour advertisement per IPv6 address, in the order given.
pub fn announcement_frames(mac: MacAddr, addresses: &[IpAddr]) -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(addresses.len() * 2);
    for address in addresses {
        match address {
            IpAddr::V4(ip) => {
                frames.push(garp_request(mac, *ip));
                frames.push(garp_reply(mac, *ip));
            }
            IpAddr::V6(ip) => frames.push(unsolicited_na(mac, *ip)),
        }
    }
    frames
}

/// Every field of an Ethernet ARP frame, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    /// Ethernet destination.
    pub ethernet_destination: MacAddr,
    /// Ethernet source.
    pub ethernet_source: MacAddr,
    /// ARP hardware type (1 for Ethernet).
    pub hardware_type: u16,
    /// ARP protocol type (0x0800 for IPv4).
    pub protocol_type: u16,
    /// Hardware address length.
    pub hw_addr_len: u8,
    /// Protocol address length.
    pub proto_addr_len: u8,
    /// 1 for a request, 2 for a reply.
    pub operation: u16,
    /// Sender hardware address (SHA).
    pub sender_mac: MacAddr,
    /// Sender protocol address (SPA).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (THA).
    pub target_mac: MacAddr,
    /// Target protocol address (TPA).
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// Whether this is a gratuitous ARP: sender and target protocol addresses are equal.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// Decodes an Ethernet frame carrying ARP; `None` for anything else or a truncated frame.
pub fn parse_arp(frame: &[u8]) -> Option<ArpFrame> {
    let ethernet = EthernetPacket::new(frame)?;
    if ethernet.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(ethernet.payload())?;
    Some(ArpFrame {
        ethernet_destination: ethernet.get_destination(),
        ethernet_source: ethernet.get_source(),
        hardware_type: arp.get_hardware_type().0,
        protocol_type: arp.get_protocol_type().0,
        hw_addr_len: arp.get_hw_addr_len(),
        proto_addr_len: arp.get_proto_addr_len(),
        operation: arp.get_operation().0,
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip: arp.get_sender_proto_addr(),
        target_mac: arp.get_target_hw_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

/// Every field of an Ethernet frame carrying an ICMPv6 neighbour advertisement, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborAdvertFrame {
    /// Ethernet destination.
    pub ethernet_destination: MacAddr,
    /// Ethernet source.
    pub ethernet_source: MacAddr,
    /// IPv6 version field (6).
    pub ip_version: u8,
    /// IPv6 traffic class.
    pub traffic_class: u8,
    /// IPv6 flow label.
    pub flow_label: u32,
    /// IPv6 payload length.
    pub payload_length: u16,
    /// IPv6 next header (58 for ICMPv6).
    pub next_header: u8,
    /// IPv6 hop limit (must be 255 for neighbour discovery).
    pub hop_limit: u8,
    /// IPv6 source address.
    pub source: Ipv6Addr,
    /// IPv6 destination address.
    pub destination: Ipv6Addr,
    /// ICMPv6 type (136).
    pub icmp_type: u8,
    /// ICMPv6 code (0).
    pub icmp_code: u8,
    /// The checksum carried in the packet.
    pub checksum: u16,
    /// Whether the carried checksum matches the one computed over the pseudo-header and message.
    pub checksum_valid: bool,
    /// The R flag.
    pub router: bool,
    /// The S flag.
    pub solicited: bool,
    /// The O flag.
    pub override_flag: bool,
    /// The target address.
    pub target: Ipv6Addr,
    /// The target link-layer address option, when present and 6 bytes long.
    pub target_mac: Option<MacAddr>,
}

/// Decodes an Ethernet frame carrying an ICMPv6 neighbour advertisement; `None` for anything else
/// or a truncated frame.
pub fn parse_neighbor_advert(frame: &[u8]) -> Option<NeighborAdvertFrame> {
    let ethernet = EthernetPacket::new(frame)?;
    if ethernet.get_ethertype() != EtherTypes::Ipv6 {
        return None;
    }
    let ipv6 = Ipv6Packet::new(ethernet.payload())?;
    if ipv6.get_next_header() != IpNextHeaderProtocols::Icmpv6 {
        return None;
    }
    // The IPv6 payload length bounds the message; anything after it is Ethernet padding.
    let message = ipv6.payload().get(..usize::from(ipv6.get_payload_length()))?;
    let icmp = Icmpv6Packet::new(message)?;
    if icmp.get_icmpv6_type() != Icmpv6Types::NeighborAdvert {
        return None;
    }
    let source = ipv6.get_source();
    let destination = ipv6.get_destination();
    let checksum_valid = icmpv6::checksum(&icmp, &source, &destination) == icmp.get_checksum();
    let advert = NeighborAdvertPacket::new(message)?;
    let flags = advert.get_flags();
    let target_mac = advert
        .get_options()
        .into_iter()
        .find(|option| option.option_type == NdpOptionTypes::TargetLLAddr)
        .and_then(|option| match option.data.get(..6) {
            Some(&[a, b, c, d, e, f]) => Some(MacAddr(a, b, c, d, e, f)),
            _ => None,
        });
    Some(NeighborAdvertFrame {
        ethernet_destination: ethernet.get_destination(),
        ethernet_source: ethernet.get_source(),
        ip_version: ipv6.get_version(),
        traffic_class: ipv6.get_traffic_class(),
        flow_label: ipv6.get_flow_label(),
        payload_length: ipv6.get_payload_length(),
        next_header: ipv6.get_next_header().0,
        hop_limit: ipv6.get_hop_limit(),
        source,
        destination,
        icmp_type: advert.get_icmpv6_type().0,
        icmp_code: advert.get_icmpv6_code().0,
        checksum: advert.get_checksum(),
        checksum_valid,
        router: flags & NeighborAdvertFlags::Router != 0,
        solicited: flags & NeighborAdvertFlags::Solicited != 0,
        override_flag: flags & NeighborAdvertFlags::Override != 0,
        target: advert.get_target_addr(),
        target_mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr(0x02, 0x00, 0x5e, 0x10, 0x20, 0x30);

    fn vip4() -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10)
    }

    fn vip6() -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)
    }

    #[test]
    fn garp_request_fields() {
        let frame = garp_request(MAC, vip4());
        assert_eq!(frame.len(), 42);
        let arp = parse_arp(&frame).expect("an ARP frame");
        assert_eq!(arp.ethernet_destination, MacAddr::broadcast());
        assert_eq!(arp.ethernet_source, MAC);
        assert_eq!(arp.hardware_type, 1);
        assert_eq!(arp.protocol_type, 0x0800);
        assert_eq!(arp.hw_addr_len, 6);
        assert_eq!(arp.proto_addr_len, 4);
        assert_eq!(arp.operation, 1);
        assert_eq!(arp.sender_mac, MAC);
        assert_eq!(arp.sender_ip, vip4());
        assert_eq!(arp.target_mac, MacAddr::zero());
        assert_eq!(arp.target_ip, vip4());
        assert!(arp.is_gratuitous());
    }

    #[test]
    fn garp_request_bytes() {
        let frame = garp_request(MAC, vip4());
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // Ethernet source
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet, IPv4, lengths
            0x00, 0x01, // request
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 198, 18, 0, 10, // SHA, SPA
            0, 0, 0, 0, 0, 0, 198, 18, 0, 10, // THA, TPA
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn garp_reply_fields() {
        let arp = parse_arp(&garp_reply(MAC, vip4())).expect("an ARP frame");
        assert_eq!(arp.ethernet_destination, MacAddr::broadcast());
        assert_eq!(arp.ethernet_source, MAC);
        assert_eq!(arp.operation, 2);
        assert_eq!(arp.sender_mac, MAC);
        assert_eq!(arp.sender_ip, vip4());
        assert_eq!(arp.target_mac, MAC);
        assert_eq!(arp.target_ip, vip4());
    }

    #[test]
    fn unsolicited_na_fields() {
        let frame = unsolicited_na(MAC, vip6());
        assert_eq!(frame.len(), 86);
        let na = parse_neighbor_advert(&frame).expect("a neighbour advertisement");
        assert_eq!(na.ethernet_destination, ALL_NODES_MAC);
        assert_eq!(na.ethernet_source, MAC);
        assert_eq!(na.ip_version, 6);
        assert_eq!(na.traffic_class, 0);
        assert_eq!(na.flow_label, 0);
        assert_eq!(na.payload_length, 32);
        assert_eq!(na.next_header, 58);
        assert_eq!(na.hop_limit, 255);
        assert_eq!(na.source, vip6());
        assert_eq!(na.destination, ALL_NODES);
        assert_eq!(na.icmp_type, 136);
        assert_eq!(na.icmp_code, 0);
        assert!(na.checksum_valid);
        assert_ne!(na.checksum, 0);
        assert!(!na.router);
        assert!(!na.solicited);
        assert!(na.override_flag);
        assert_eq!(na.target, vip6());
        assert_eq!(na.target_mac, Some(MAC));
    }

    #[test]
    fn na_checksum_matches_an_independent_computation() {
        let frame = unsolicited_na(MAC, vip6());
        let icmp = &frame[14 + 40..];
        // RFC 4443 checksum: one's complement sum over the pseudo-header and the message.
        let mut sum: u32 = 0;
        let mut add = |bytes: &[u8]| {
            for pair in bytes.chunks(2) {
                let high = u32::from(pair[0]) << 8;
                let low = pair.get(1).copied().map(u32::from).unwrap_or(0);
                sum += high | low;
            }
        };
        add(&vip6().octets());
        add(&ALL_NODES.octets());
        add(&(icmp.len() as u32).to_be_bytes());
        add(&[0, 0, 0, 58]);
        add(icmp);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // Summing a message that already holds its checksum gives all ones.
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn corrupted_na_fails_the_checksum() {
        let mut frame = unsolicited_na(MAC, vip6());
        let last = frame.len() - 1;
        frame[last] ^= 0x01;
        let na = parse_neighbor_advert(&frame).expect("still a neighbour advertisement");
        assert!(!na.checksum_valid);
    }

    #[test]
    fn round_holds_two_frames_per_ipv4_and_one_per_ipv6() {
        let addresses = [IpAddr::V4(vip4()), IpAddr::V6(vip6())];
        let frames = announcement_frames(MAC, &addresses);
        assert_eq!(frames.len(), 3);
        assert_eq!(parse_arp(&frames[0]).map(|arp| arp.operation), Some(1));
        assert_eq!(parse_arp(&frames[1]).map(|arp| arp.operation), Some(2));
        assert!(parse_neighbor_advert(&frames[2]).is_some());
    }

    #[test]
    fn parsers_reject_other_and_truncated_frames() {
        let arp = garp_request(MAC, vip4());
        let na = unsolicited_na(MAC, vip6());
        assert_eq!(parse_arp(&na), None);
        assert_eq!(parse_neighbor_advert(&arp), None);
        assert_eq!(parse_arp(&arp[..20]), None);
        assert_eq!(parse_neighbor_advert(&na[..60]), None);
        assert_eq!(parse_arp(&[]), None);
    }
}
