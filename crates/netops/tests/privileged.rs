//! Privileged tests of [`LinuxNet`] against the real kernel, each in network namespaces of its own.
//!
//! Every test first checks that it can build its namespaces (root and a working `ip netns`); if not
//! it prints `skipped: <why>` and passes, unless `FECHTER_E2E=require`, where a skip fails.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use fechter_netops::frames::{self, MacAddr};
use fechter_netops::{
    AddressSpec, AnnounceConfig, FECHTER_ADDRESS_PROTOCOL, InstalledAddress, LinkState, LinuxNet, Net,
    NetError, NetEvent, PingError,
};
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use support::{eventually, lab_or_skip};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a literal address")
}

/// Every address message of the namespace, straight from a netlink dump, keyed by address.
async fn raw_dump() -> BTreeMap<IpAddr, AddressMessage> {
    let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
    tokio::spawn(connection);
    let messages: Vec<AddressMessage> =
        handle.address().get().execute().try_collect().await.expect("address dump");
    messages
        .into_iter()
        .filter_map(|message| {
            let address = message.attributes.iter().find_map(|attribute| match attribute {
                AddressAttribute::Local(address) => Some(*address),
                AddressAttribute::Address(address) => Some(*address),
                _ => None,
            })?;
            Some((address, message))
        })
        .collect()
}

fn protocol(message: &AddressMessage) -> Option<u8> {
    message.attributes.iter().find_map(|attribute| match attribute {
        AddressAttribute::Protocol(protocol) => Some(u8::from(*protocol)),
        _ => None,
    })
}

fn label(message: &AddressMessage) -> Option<&str> {
    message.attributes.iter().find_map(|attribute| match attribute {
        AddressAttribute::Label(label) => Some(label.as_str()),
        _ => None,
    })
}

fn flags(message: &AddressMessage) -> AddressFlags {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or(AddressFlags::empty())
}

fn find(listed: &[InstalledAddress], address: IpAddr) -> Option<&InstalledAddress> {
    listed.iter().find(|installed| installed.address == address)
}

/// A veth pair inside namespace `a`, both ends up, so `d0` has a carrier. (The kernel here may lack
/// the dummy driver; veth is always there.)
fn one_link(lab: &support::Lab) {
    lab.must("a", &["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    lab.must("a", &["link", "set", "d0", "up"]);
    lab.must("a", &["link", "set", "d1", "up"]);
}

#[test]
fn install_list_and_remove_ipv4_and_ipv6() {
    let Some(lab) = lab_or_skip("install_list_and_remove_ipv4_and_ipv6", &["a"]) else {
        return;
    };
    one_link(&lab);

    lab.run_in("a", || async {
        let net = LinuxNet::new().await.expect("netlink");
        let v4 = AddressSpec::new("d0", ip("198.18.1.10"), 24);
        let v6 = AddressSpec::new("d0", ip("2001:db8:1::10"), 64);
        for spec in [&v4, &v6] {
            net.add_address(spec).await.expect("add");
            net.add_address(spec).await.expect("adding twice is success");
        }

        let listed = net.list_addresses().await.expect("list");
        for spec in [&v4, &v6] {
            let found = find(&listed, spec.address).expect("installed address is listed");
            assert!(found.owned, "{spec} is fechter's");
            assert_eq!(found.spec(), *spec);
        }

        // The mark, as the kernel stores it.
        let dump = raw_dump().await;
        let v4_message = &dump[&v4.address];
        assert_eq!(protocol(v4_message), Some(FECHTER_ADDRESS_PROTOCOL));
        assert_eq!(label(v4_message), Some("d0:fch"));
        let v6_message = &dump[&v6.address];
        assert_eq!(protocol(v6_message), Some(FECHTER_ADDRESS_PROTOCOL));
        assert!(flags(v6_message).contains(AddressFlags::Nodad));
        assert!(!flags(v6_message).contains(AddressFlags::Tentative), "a no-DAD address is usable at once");

        for spec in [&v4, &v6] {
            net.remove_address(spec).await.expect("remove");
            net.remove_address(spec).await.expect("removing twice is success");
        }
        let listed = net.list_addresses().await.expect("list");
        assert!(find(&listed, v4.address).is_none());
        assert!(find(&listed, v6.address).is_none());

        assert_eq!(net.link_state("d0").await.expect("state"), LinkState::UP);
        assert_eq!(net.link_state("nope0").await.expect("state"), LinkState::ABSENT);
        let elsewhere = AddressSpec::new("nope0", ip("198.18.1.10"), 24);
        assert!(matches!(
            net.add_address(&elsewhere).await,
            Err(NetError::NoSuchInterface(name)) if name == "nope0"
        ));
        net.remove_address(&elsewhere).await.expect("removing from a missing interface is success");
        let config = AnnounceConfig::default();
        assert!(matches!(
            net.announce("nope0", &[v4.address], &config).await,
            Err(NetError::NoSuchInterface(_))
        ));
        assert!(matches!(
            net.announce("lo", &[v4.address], &config).await,
            Err(NetError::NoLinkLayerAddress(_))
        ));
    });
}

#[test]
fn operator_addresses_are_listed_as_foreign_and_never_removed() {
    let Some(lab) = lab_or_skip("operator_addresses_are_listed_as_foreign_and_never_removed", &["a"]) else {
        return;
    };
    one_link(&lab);
    lab.must("a", &["address", "add", "198.18.1.20/24", "dev", "d0"]);
    lab.must("a", &["address", "add", "2001:db8:1::20/64", "dev", "d0", "nodad"]);

    lab.run_in("a", || async {
        let net = LinuxNet::new().await.expect("netlink");
        let v4 = AddressSpec::new("d0", ip("198.18.1.20"), 24);
        let v6 = AddressSpec::new("d0", ip("2001:db8:1::20"), 64);
        for spec in [&v4, &v6] {
            let listed = net.list_addresses().await.expect("list");
            let found = find(&listed, spec.address).expect("operator address is listed");
            assert!(!found.owned, "{spec} is the operator's");

            assert!(matches!(
                net.remove_address(spec).await,
                Err(NetError::NotOwned(refused)) if refused == *spec
            ));
            // Adding it is success, but does not make it fechter's.
            net.add_address(spec).await.expect("add over foreign");
            let listed = net.list_addresses().await.expect("list");
            let found = find(&listed, spec.address).expect("still there");
            assert!(!found.owned);
        }
    });
    let shown = lab.must("a", &["address", "show", "dev", "d0"]);
    assert!(shown.contains("198.18.1.20/24"), "{shown}");
    assert!(shown.contains("2001:db8:1::20/64"), "{shown}");
}

#[test]
fn batch_removal_releases_a_thousand_addresses_and_spares_the_operators() {
    let Some(lab) =
        lab_or_skip("batch_removal_releases_a_thousand_addresses_and_spares_the_operators", &["a"])
    else {
        return;
    };
    one_link(&lab);
    // The operator's addresses come first, so 198.18.16.1 is the primary of the /22 that fechter's
    // addresses then join as secondaries; two more sit among fechter's, and one is IPv6.
    let operator_v4 = ["198.18.16.1", "198.18.17.77", "198.18.19.200"];
    for address in operator_v4 {
        lab.must("a", &["address", "add", &format!("{address}/22"), "dev", "d0"]);
    }
    lab.must("a", &["address", "add", "2001:db8:7::5/64", "dev", "d0", "nodad"]);

    lab.run_in("a", move || async move {
        let net = LinuxNet::new().await.expect("netlink");
        // 1 000 IPv4 addresses in 198.18.16.0/22, the operator's three among them.
        let mut batch: Vec<AddressSpec> = (1..=1_000u16)
            .map(|n| {
                let [high, low] = n.to_be_bytes();
                AddressSpec::new("d0", IpAddr::V4(Ipv4Addr::new(198, 18, 16 + high, low)), 22)
            })
            .collect();
        batch.extend(
            (1..=50).map(|n| {
                AddressSpec::new("d0", IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 1, n)), 64)
            }),
        );
        // On the other interface fechter's address is the primary of its subnet, given before its
        // secondaries: the batch must still release every one of them.
        batch.extend((1..=10).map(|n| AddressSpec::new("d1", IpAddr::V4(Ipv4Addr::new(198, 18, 30, n)), 24)));
        for spec in &batch {
            net.add_address(spec).await.expect("add");
        }
        let operator_v6 = AddressSpec::new("d0", ip("2001:db8:7::5"), 64);
        let missing_interface = AddressSpec::new("nope0", ip("198.18.16.2"), 22);
        let invalid = AddressSpec::new("d0", ip("198.18.16.3"), 0);
        let never_installed = AddressSpec::new("d0", ip("198.18.31.1"), 24);
        batch.extend([operator_v6.clone(), missing_interface, invalid.clone(), never_installed]);

        let outcomes = net.remove_addresses(&batch).await;
        let answered: Vec<AddressSpec> = outcomes.iter().map(|(spec, _)| spec.clone()).collect();
        assert_eq!(answered, batch, "one outcome per spec, in the order given");
        let is_operators = |spec: &AddressSpec| {
            *spec == operator_v6 || operator_v4.iter().any(|address| spec.address == ip(address))
        };
        for (spec, outcome) in &outcomes {
            if is_operators(spec) {
                assert!(
                    matches!(outcome, Err(NetError::NotOwned(refused)) if refused == spec),
                    "{spec}: {outcome:?}"
                );
            } else if *spec == invalid {
                assert!(matches!(outcome, Err(NetError::InvalidAddress(_))), "{spec}: {outcome:?}");
            } else {
                assert!(outcome.is_ok(), "{spec}: {outcome:?}");
            }
        }

        let left: Vec<InstalledAddress> = net
            .list_addresses()
            .await
            .expect("list")
            .into_iter()
            .filter(|installed| installed.interface != "lo" && !is_link_local(installed.address))
            .collect();
        let left_specs: Vec<AddressSpec> = left.iter().map(InstalledAddress::spec).collect();
        let mut expected: Vec<AddressSpec> = operator_v4
            .iter()
            .map(|address| AddressSpec::new("d0", ip(address), 22))
            .chain([operator_v6.clone()])
            .collect();
        expected.sort();
        assert_eq!(left_specs, expected, "only the operator's addresses are left");
        assert!(left.iter().all(|installed| !installed.owned));
    });
    let shown = lab.must("a", &["address", "show", "dev", "d0"]);
    for address in ["198.18.16.1/22", "198.18.17.77/22", "198.18.19.200/22", "2001:db8:7::5/64"] {
        assert!(shown.contains(address), "{address} is gone: {shown}");
    }
}

fn is_link_local(address: IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

const ANNOUNCER_MAC: &str = "02:fc:00:00:00:0a";
const PEER_MAC: &str = "02:fc:00:00:00:0b";
const STALE_MAC: &str = "02:00:00:00:00:99";

#[test]
fn announcements_are_byte_correct_and_update_the_peer() {
    let Some(lab) = lab_or_skip("announcements_are_byte_correct_and_update_the_peer", &["a", "b"]) else {
        return;
    };
    lab.veth(("a", "va", ANNOUNCER_MAC), ("b", "vb", PEER_MAC));
    lab.must("b", &["address", "add", "198.18.2.2/24", "dev", "vb"]);
    lab.must("b", &["address", "add", "2001:db8:2::2/64", "dev", "vb", "nodad"]);
    let vips = [ip("198.18.2.10"), ip("198.18.2.11"), ip("2001:db8:2::10")];
    // Linux updates only neighbour entries that exist (arp_accept and accept_untracked_na are off
    // by default), so the peer starts with stale entries pointing elsewhere.
    for vip in vips {
        let vip = vip.to_string();
        lab.must("b", &["neigh", "add", &vip, "lladdr", STALE_MAC, "nud", "stale", "dev", "vb"]);
    }

    let capture = lab.capture("b", "vb", Duration::from_millis(1500));
    let interval = Duration::from_millis(400);
    let first_round_took = lab.run_in("a", move || async move {
        let net = LinuxNet::new().await.expect("netlink");
        for vip in vips {
            let prefix_len = if vip.is_ipv4() { 24 } else { 64 };
            net.add_address(&AddressSpec::new("va", vip, prefix_len)).await.expect("add");
        }
        let config = AnnounceConfig { count: 2, interval };
        let started = Instant::now();
        net.announce("va", &vips, &config).await.expect("announce");
        let took = started.elapsed();
        // Keep the runtime alive for the background round.
        tokio::time::sleep(interval + Duration::from_millis(300)).await;
        took
    });
    assert!(
        first_round_took < interval / 2,
        "announce returned after {first_round_took:?}, so it waited for the repeats"
    );

    let mac: MacAddr = ANNOUNCER_MAC.parse().expect("a MAC");
    let frames = capture.frames();
    let mut requests: BTreeMap<Ipv4Addr, Vec<Duration>> = BTreeMap::new();
    let mut replies: BTreeMap<Ipv4Addr, Vec<Duration>> = BTreeMap::new();
    let mut adverts: BTreeMap<Ipv6Addr, Vec<Duration>> = BTreeMap::new();
    for (at, frame) in &frames {
        if let Some(arp) = frames::parse_arp(frame) {
            if arp.ethernet_source != mac || !vips.contains(&IpAddr::V4(arp.sender_ip)) {
                continue;
            }
            assert_eq!(arp.ethernet_destination, MacAddr::broadcast());
            assert_eq!(arp.hardware_type, 1);
            assert_eq!(arp.protocol_type, 0x0800);
            assert_eq!((arp.hw_addr_len, arp.proto_addr_len), (6, 4));
            assert_eq!(arp.sender_mac, mac);
            assert_eq!(arp.target_ip, arp.sender_ip);
            match arp.operation {
                1 => {
                    assert_eq!(arp.target_mac, MacAddr::zero());
                    requests.entry(arp.sender_ip).or_default().push(*at);
                }
                2 => {
                    assert_eq!(arp.target_mac, mac);
                    replies.entry(arp.sender_ip).or_default().push(*at);
                }
                other => panic!("unexpected ARP operation {other}"),
            }
        } else if let Some(na) = frames::parse_neighbor_advert(frame) {
            if na.ethernet_source != mac || na.target != ip_v6("2001:db8:2::10") {
                continue;
            }
            assert_eq!(na.ethernet_destination, frames::ALL_NODES_MAC);
            assert_eq!(na.source, na.target, "sent from the VIP");
            assert_eq!(na.destination, frames::ALL_NODES);
            assert_eq!(na.hop_limit, 255);
            assert_eq!((na.icmp_type, na.icmp_code), (136, 0));
            assert!(na.checksum_valid);
            assert!(na.override_flag && !na.solicited && !na.router);
            assert_eq!(na.target_mac, Some(mac));
            adverts.entry(na.target).or_default().push(*at);
        }
    }
    for vip in [Ipv4Addr::new(198, 18, 2, 10), Ipv4Addr::new(198, 18, 2, 11)] {
        assert_eq!(requests.get(&vip).map(Vec::len), Some(2), "requests for {vip}");
        assert_eq!(replies.get(&vip).map(Vec::len), Some(2), "replies for {vip}");
        let times = &requests[&vip];
        assert!(
            times[1] - times[0] >= interval - Duration::from_millis(50),
            "rounds {:?} apart, asked for {interval:?}",
            times[1] - times[0]
        );
    }
    let na_count = adverts.get(&ip_v6("2001:db8:2::10")).map(Vec::len);
    assert_eq!(na_count, Some(2), "neighbour advertisements");

    // The peer's neighbour table now points at the announcer.
    for vip in vips {
        let vip = vip.to_string();
        let updated = eventually(Duration::from_secs(2), || {
            lab.must("b", &["neigh", "show", &vip, "dev", "vb"]).contains(ANNOUNCER_MAC)
        });
        let shown = lab.must("b", &["neigh", "show", &vip, "dev", "vb"]);
        assert!(updated, "neighbour entry for {vip}: {shown}");
    }
}

#[test]
fn a_released_address_is_not_announced_again() {
    let Some(lab) = lab_or_skip("a_released_address_is_not_announced_again", &["c", "d"]) else {
        return;
    };
    lab.veth(("c", "vc", ANNOUNCER_MAC), ("d", "vd", PEER_MAC));
    let kept = ip("198.18.3.10");
    let released = ip("198.18.3.11");
    let capture = lab.capture("d", "vd", Duration::from_millis(1500));
    let interval = Duration::from_millis(300);
    lab.run_in("c", move || async move {
        let net = LinuxNet::new().await.expect("netlink");
        for vip in [kept, released] {
            net.add_address(&AddressSpec::new("vc", vip, 32)).await.expect("add");
        }
        net.announce("vc", &[kept, released], &AnnounceConfig { count: 3, interval })
            .await
            .expect("announce");
        // Released (the address moved on) between the first and the second round.
        tokio::time::sleep(interval / 2).await;
        net.remove_address(&AddressSpec::new("vc", released, 32)).await.expect("remove");
        tokio::time::sleep(interval * 2 + Duration::from_millis(300)).await;
    });
    let mac: MacAddr = ANNOUNCER_MAC.parse().expect("a MAC");
    let mut requests: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (_, frame) in &capture.frames() {
        if let Some(arp) = frames::parse_arp(frame)
            && arp.ethernet_source == mac
            && arp.operation == 1
        {
            *requests.entry(IpAddr::V4(arp.sender_ip)).or_default() += 1;
        }
    }
    assert_eq!(requests.get(&kept), Some(&3), "rounds for the kept address: {requests:?}");
    assert_eq!(requests.get(&released), Some(&1), "rounds for the released address: {requests:?}");
}

fn ip_v6(text: &str) -> Ipv6Addr {
    text.parse().expect("a literal IPv6 address")
}

async fn next_matching(
    events: &mut tokio::sync::mpsc::Receiver<NetEvent>,
    wanted: impl Fn(&NetEvent) -> bool,
) -> Option<NetEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv()).await.ok()??;
        if wanted(&event) {
            return Some(event);
        }
    }
}

async fn collect_until(
    events: &mut tokio::sync::mpsc::Receiver<NetEvent>,
    done: impl Fn(&[NetEvent]) -> bool,
) -> Vec<NetEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

#[test]
fn events_report_a_pulled_cable_a_downed_link_and_a_removed_address() {
    let Some(lab) =
        lab_or_skip("events_report_a_pulled_cable_a_downed_link_and_a_removed_address", &["a", "b"])
    else {
        return;
    };
    lab.veth(("a", "va", ANNOUNCER_MAC), ("b", "vb", PEER_MAC));
    let ns_b = lab.ns("b");
    let ns_a = lab.ns("a");

    lab.run_in("a", move || async move {
        let net = LinuxNet::new().await.expect("netlink");
        let spec = AddressSpec::new("va", ip("198.18.5.10"), 24);
        net.add_address(&spec).await.expect("add");
        let spec6 = AddressSpec::new("va", ip("2001:db8:5::10"), 64);
        net.add_address(&spec6).await.expect("add");
        let mut events = net.subscribe().expect("subscribe");
        let ip_in = |ns: &str, args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(["-n", ns])
                .args(args)
                .status()
                .expect("ip runs");
            assert!(status.success(), "ip -n {ns} {args:?}");
        };

        // Pull the cable: the far end goes down, so this end loses its carrier but stays up.
        ip_in(&ns_b, &["link", "set", "vb", "down"]);
        let pulled = next_matching(&mut events, |event| {
            matches!(event, NetEvent::LinkChanged { interface, state }
                if interface == "va" && state.up && !state.carrier)
        })
        .await;
        assert!(pulled.is_some(), "no carrier-loss event");

        ip_in(&ns_a, &["link", "set", "va", "down"]);
        // Linux drops IPv6 addresses with the link (keep_addr_on_down is off by default), in
        // either order with the link event; the fake models this, and the daemon must put them
        // back when the link returns.
        let is_down = |event: &NetEvent| {
            matches!(event, NetEvent::LinkChanged { interface, state }
                if interface == "va" && state.exists && !state.up)
        };
        let is_flushed = |event: &NetEvent| {
            matches!(event, NetEvent::AddressRemoved(installed) if installed.spec() == spec6)
        };
        let seen = collect_until(&mut events, |seen| {
            seen.iter().any(is_down) && seen.iter().any(is_flushed)
        })
        .await;
        assert!(seen.iter().any(is_down), "no link-down event: {seen:?}");
        assert!(seen.iter().any(is_flushed), "IPv6 address not removed: {seen:?}");

        ip_in(&ns_a, &["address", "del", "198.18.5.10/24", "dev", "va"]);
        let removed = next_matching(&mut events, |event| {
            matches!(event, NetEvent::AddressRemoved(installed) if installed.spec() == spec)
        })
        .await;
        match removed {
            Some(NetEvent::AddressRemoved(installed)) => {
                assert!(installed.owned, "the event keeps fechter's mark");
            }
            other => panic!("no address-removed event: {other:?}"),
        }

        ip_in(&ns_a, &["address", "add", "198.18.5.20/24", "dev", "va"]);
        let added = next_matching(&mut events, |event| {
            matches!(event, NetEvent::AddressAdded(installed)
                if installed.address == ip("198.18.5.20") && !installed.owned)
        })
        .await;
        assert!(added.is_some(), "no address-added event");
    });
}

#[test]
fn gateway_ping_answers_and_times_out_when_blackholed() {
    let Some(lab) = lab_or_skip("gateway_ping_answers_and_times_out_when_blackholed", &["a", "gw"]) else {
        return;
    };
    lab.veth(("a", "va", ANNOUNCER_MAC), ("gw", "vg", PEER_MAC));
    lab.must("a", &["address", "add", "198.18.3.2/24", "dev", "va"]);
    lab.must("a", &["address", "add", "2001:db8:3::2/64", "dev", "va", "nodad"]);
    lab.must("gw", &["address", "add", "198.18.3.1/24", "dev", "vg"]);
    lab.must("gw", &["address", "add", "2001:db8:3::1/64", "dev", "vg", "nodad"]);
    let gateways = [ip("198.18.3.1"), ip("2001:db8:3::1")];

    let answered = lab.run_in("a", move || async move {
        let net = LinuxNet::new().await.expect("netlink");
        let mut results = Vec::new();
        for gateway in gateways {
            for _ in 0..3 {
                results.push(net.ping(gateway, Duration::from_secs(2)).await);
            }
        }
        results
    });
    for result in &answered {
        assert!(result.is_ok(), "ping failed: {result:?}");
    }

    // The gateway stops answering echo requests: a dead gateway, as seen from the node.
    lab.exec("gw", &["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1", "net.ipv6.icmp.echo_ignore_all=1"])
        .expect("sysctl in the gateway namespace");
    let silent = lab.run_in("a", move || async move {
        let net = LinuxNet::new().await.expect("netlink");
        let mut results = Vec::new();
        for gateway in gateways {
            let started = Instant::now();
            let result = net.ping(gateway, Duration::from_millis(300)).await;
            results.push((result, started.elapsed()));
        }
        results
    });
    for (result, took) in silent {
        assert!(matches!(result, Err(PingError::Timeout)), "{result:?}");
        assert!(took >= Duration::from_millis(250), "timed out after {took:?}");
        assert!(took < Duration::from_secs(2), "timed out after {took:?}");
    }
}
