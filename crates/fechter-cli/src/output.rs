//! The text the CLI prints for the daemon's reports, with the original Fechter's exact strings.
//!
//! Every function here is pure: it turns a report into lines, and the binary writes them.

use std::net::SocketAddr;

use crate::proto::{ConnectivityReport, InfoReport, Liveness, NodeInfo, StatusReport};

/// How nodes are named in `status` and `info` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeNaming {
    /// The address part of the node id, `10.0.0.10` (the default).
    Address,
    /// The whole node id, `10.0.0.10:4573` (`-n`).
    Id,
}

/// The name of a node as `status` and `info` print it.
///
/// With [`NodeNaming::Address`], the port is dropped from `10.0.0.10:4573` and the brackets and port
/// from `[2001:db8::1]:4573`. An id that is not `ip:port` is printed whole rather than guessed at.
pub fn node_name(node_id: &str, naming: NodeNaming) -> String {
    match naming {
        NodeNaming::Id => node_id.to_owned(),
        NodeNaming::Address => match node_id.parse::<SocketAddr>() {
            Ok(socket_addr) => socket_addr.ip().to_string(),
            Err(_) => node_id.to_owned(),
        },
    }
}

/// The line `status` starts with while cluster-wide maintenance mode is on.
pub const MAINTENANCE_LINE: &str = "maintenance mode is on";

/// One line per active pool address, in pool order: `eth0:10.0.0.20 assigned to 10.0.0.10` or
/// `eth0:10.0.0.20 is not assigned`, after [`MAINTENANCE_LINE`] while maintenance mode is on
/// (the assignments shown are then frozen, even those of dead nodes).
pub fn status_lines(report: &StatusReport, naming: NodeNaming) -> Vec<String> {
    let maintenance = report.maintenance.then(|| MAINTENANCE_LINE.to_owned());
    let addresses = report.addresses.iter().map(|entry| {
        let resource = format!("{}:{}", entry.interface, entry.address);
        match &entry.assigned_to {
            Some(node_id) => format!("{resource} assigned to {}", node_name(node_id, naming)),
            None => format!("{resource} is not assigned"),
        }
    });
    maintenance.into_iter().chain(addresses).collect()
}

/// One line per other node, in the report's order (by id): `10.0.0.11 is alive (status: up)`,
/// `... is alive (status: down)`, `... is alive` before the node has published its admin state,
/// `... is dead` or `... has left`.
///
/// As in the original Fechter, the status is the node's effective one: `up` only while it may hold
/// addresses (the operator said `up` and it reaches its gateway), so an operator sees at a glance
/// that a node told `up` is still refusing addresses.
pub fn info_lines(report: &InfoReport, naming: NodeNaming) -> Vec<String> {
    report.peers.iter().map(|peer| info_line(peer, naming)).collect()
}

/// The one line `connectivity` prints.
pub fn connectivity_line(report: &ConnectivityReport) -> &'static str {
    if report.reachable { "can talk to gateway" } else { "cannot talk to gateway" }
}

fn info_line(peer: &NodeInfo, naming: NodeNaming) -> String {
    let name = node_name(&peer.id, naming);
    match (peer.liveness, peer.admin) {
        (Liveness::Alive, Some(_)) if peer.eligible => format!("{name} is alive (status: up)"),
        (Liveness::Alive, Some(_)) => format!("{name} is alive (status: down)"),
        (Liveness::Alive, None) => format!("{name} is alive"),
        (Liveness::Dead, _) => format!("{name} is dead"),
        (Liveness::Left, _) => format!("{name} has left"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AddressStatus, AdminState};

    fn address(interface: &str, address: &str, assigned_to: Option<&str>) -> AddressStatus {
        AddressStatus {
            interface: interface.to_owned(),
            address: address.parse().unwrap(),
            prefix_len: 32,
            assigned_to: assigned_to.map(str::to_owned),
            held_by: Vec::new(),
        }
    }

    fn node(id: &str, liveness: Liveness, admin: Option<AdminState>) -> NodeInfo {
        NodeInfo {
            id: id.to_owned(),
            liveness,
            admin,
            gateway_reachable: Some(true),
            eligible: admin == Some(AdminState::Up) && liveness == Liveness::Alive,
            phi: None,
            held: 0,
            health: None,
        }
    }

    #[test]
    fn node_names() {
        let cases = [
            ("10.0.0.10:4573", NodeNaming::Address, "10.0.0.10"),
            ("10.0.0.10:4573", NodeNaming::Id, "10.0.0.10:4573"),
            ("[2001:db8::1]:4573", NodeNaming::Address, "2001:db8::1"),
            ("[2001:db8::1]:4573", NodeNaming::Id, "[2001:db8::1]:4573"),
            ("not-an-id", NodeNaming::Address, "not-an-id"),
            ("10.0.0.10", NodeNaming::Address, "10.0.0.10"),
        ];
        for (node_id, naming, expected) in cases {
            assert_eq!(node_name(node_id, naming), expected, "{node_id} {naming:?}");
        }
    }

    #[test]
    fn status_keeps_pool_order_and_the_original_strings() {
        let report = StatusReport {
            leader: Some("10.0.0.10:4573".to_owned()),
            addresses: vec![
                address("eth0", "10.0.0.21", Some("10.0.0.11:4573")),
                address("eth0", "10.0.0.20", Some("10.0.0.10:4573")),
                address("eth1", "2001:db8::20", None),
                address("eth1", "2001:db8::21", Some("[2001:db8::1]:4573")),
            ],
            maintenance: false,
            health: Vec::new(),
        };
        assert_eq!(
            status_lines(&report, NodeNaming::Address),
            [
                "eth0:10.0.0.21 assigned to 10.0.0.11",
                "eth0:10.0.0.20 assigned to 10.0.0.10",
                "eth1:2001:db8::20 is not assigned",
                "eth1:2001:db8::21 assigned to 2001:db8::1",
            ]
        );
        assert_eq!(
            status_lines(&report, NodeNaming::Id),
            [
                "eth0:10.0.0.21 assigned to 10.0.0.11:4573",
                "eth0:10.0.0.20 assigned to 10.0.0.10:4573",
                "eth1:2001:db8::20 is not assigned",
                "eth1:2001:db8::21 assigned to [2001:db8::1]:4573",
            ]
        );
        assert!(
            status_lines(
                &StatusReport { leader: None, addresses: Vec::new(), maintenance: false, health: Vec::new() },
                NodeNaming::Id
            )
            .is_empty()
        );
    }

    #[test]
    fn status_says_first_that_maintenance_mode_is_on() {
        let report = StatusReport {
            leader: None,
            addresses: vec![address("eth0", "10.0.0.20", Some("10.0.0.10:4573"))],
            maintenance: true,
            health: Vec::new(),
        };
        assert_eq!(
            status_lines(&report, NodeNaming::Address),
            ["maintenance mode is on", "eth0:10.0.0.20 assigned to 10.0.0.10"]
        );
        let empty = StatusReport { addresses: Vec::new(), ..report };
        assert_eq!(status_lines(&empty, NodeNaming::Id), ["maintenance mode is on"]);
    }

    #[test]
    fn info_lists_only_peers_with_the_original_strings() {
        let report = InfoReport {
            local: node("10.0.0.10:4573", Liveness::Alive, Some(AdminState::Up)),
            peers: vec![
                node("10.0.0.11:4573", Liveness::Alive, Some(AdminState::Up)),
                node("10.0.0.12:4573", Liveness::Alive, Some(AdminState::Down)),
                node("10.0.0.13:4573", Liveness::Alive, None),
                node("10.0.0.14:4573", Liveness::Dead, Some(AdminState::Up)),
                node("10.0.0.15:4573", Liveness::Left, None),
                node("[2001:db8::1]:4573", Liveness::Dead, None),
                // Told `up` but cut off from its gateway: not eligible, so down, as in Fechter.
                NodeInfo {
                    gateway_reachable: Some(false),
                    eligible: false,
                    ..node("10.0.0.16:4573", Liveness::Alive, Some(AdminState::Up))
                },
            ],
            leader: Some("10.0.0.10:4573".to_owned()),
        };
        assert_eq!(
            info_lines(&report, NodeNaming::Address),
            [
                "10.0.0.11 is alive (status: up)",
                "10.0.0.12 is alive (status: down)",
                "10.0.0.13 is alive",
                "10.0.0.14 is dead",
                "10.0.0.15 has left",
                "2001:db8::1 is dead",
                "10.0.0.16 is alive (status: down)",
            ]
        );
        assert_eq!(
            info_lines(&report, NodeNaming::Id),
            [
                "10.0.0.11:4573 is alive (status: up)",
                "10.0.0.12:4573 is alive (status: down)",
                "10.0.0.13:4573 is alive",
                "10.0.0.14:4573 is dead",
                "10.0.0.15:4573 has left",
                "[2001:db8::1]:4573 is dead",
                "10.0.0.16:4573 is alive (status: down)",
            ]
        );
    }

    #[test]
    fn connectivity_strings() {
        let gateway = "10.0.0.1".parse().unwrap();
        assert_eq!(
            connectivity_line(&ConnectivityReport { gateway, reachable: true }),
            "can talk to gateway"
        );
        assert_eq!(
            connectivity_line(&ConnectivityReport { gateway, reachable: false }),
            "cannot talk to gateway"
        );
    }
}
