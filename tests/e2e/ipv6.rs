//! IPv6 end to end, in a mixed pool: IPv6 addresses are assigned, answer the client's ping, fail
//! over when their node dies, and the client's neighbour entry follows at once (an unsolicited
//! neighbour advertisement from the new holder). Gossip and the gateway stay on IPv4.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use fechter_lab::{Lab, spread_problem};

use crate::common::{CONVERGE, client_reaches_all, holder_of, scenario, start_all, wait_for_membership};

/// How soon the client's neighbour entry must follow a moved address without traffic from it.
const ANNOUNCE_WINDOW: Duration = Duration::from_secs(4);

/// The lab's IPv6 subnet, 2001:db8:<net>::/64, with `host` as the last group.
fn v6(lab: &Lab, host: u16) -> Ipv6Addr {
    let net = u16::from(lab.gateway_ip().octets()[2]);
    Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host)
}

/// Node `i`'s own IPv6 address, 2001:db8:<net>::<11+i>.
fn node_v6(lab: &Lab, i: usize) -> Ipv6Addr {
    v6(lab, 11 + u16::try_from(i).unwrap_or(0))
}

/// Gives every node and the client an IPv6 address on eth0, usable at once (no DAD).
fn add_ipv6(lab: &Lab) -> Result<()> {
    let mut hosts: Vec<(String, Ipv6Addr)> =
        (0..lab.node_count()).map(|i| (lab.node_ns(i).to_owned(), node_v6(lab, i))).collect();
    hosts.push((lab.client_ns(), v6(lab, 250)));
    for (ns, address) in hosts {
        let cidr = format!("{address}/64");
        let output = lab.exec(&ns, "ip", &["-6", "addr", "add", &cidr, "dev", "eth0", "nodad"])?;
        ensure!(output.success(), "adding {cidr} in {ns}: {}", output.stderr.trim());
    }
    Ok(())
}

/// What each node holds, without its own IPv6 address.
fn holdings(lab: &Lab, held: &[BTreeSet<IpAddr>]) -> Vec<BTreeSet<IpAddr>> {
    held.iter()
        .enumerate()
        .map(|(i, held)| {
            held.iter().copied().filter(|address| *address != IpAddr::V6(node_v6(lab, i))).collect()
        })
        .collect()
}

/// Waits until `pool` is spread evenly over `holders`; the nodes in `ignored` do not count.
fn wait_for_spread(
    lab: &Lab,
    pool: &[IpAddr],
    holders: &[usize],
    ignored: &[usize],
    what: &str,
) -> Result<Vec<BTreeSet<IpAddr>>> {
    let visible = |held: &[BTreeSet<IpAddr>]| {
        let mut visible = holdings(lab, held);
        for &i in ignored {
            visible[i].clear();
        }
        visible
    };
    let held = lab
        .wait_for_holdings(what, CONVERGE, |held| spread_problem(&visible(held), pool, holders).is_none())?;
    Ok(visible(&held))
}

#[test]
fn ipv6_addresses_assign_answer_and_fail_over_with_a_neighbour_advertisement() {
    scenario("ipv6_addresses_assign_answer_and_fail_over_with_a_neighbour_advertisement", "ipv6", 3, |lab| {
        add_ipv6(lab)?;
        start_all(lab, true)?;
        wait_for_membership(lab)?;
        let v6_pool: Vec<IpAddr> = [20, 21, 22].into_iter().map(|host| IpAddr::V6(v6(lab, host))).collect();
        for address in &v6_pool {
            lab.cli_ok(1, &["add-address", &format!("eth0:{address}/64")])?;
        }
        let v4_pool = [lab.vip(0), lab.vip(1), lab.vip(2)];
        for &address in &v4_pool {
            lab.add_address(1, address)?;
        }
        let pool: Vec<IpAddr> = v6_pool.iter().chain(&v4_pool).copied().collect();
        let before = wait_for_spread(lab, &pool, &[0, 1, 2], &[], "the mixed pool spread over all nodes")?;
        let status = lab.status(0)?;
        let v6_entry =
            status.addresses.iter().find(|entry| entry.address == v6_pool[0]).context("not in status")?;
        ensure!(v6_entry.prefix_len == 64, "{v6_entry:?}");
        // The client talks to every address, so its neighbour table holds each one's MAC.
        client_reaches_all(lab, &pool)?;

        let victim = holder_of(&before, v6_pool[0]).context("the first IPv6 address is held nowhere")?;
        let moved: Vec<IpAddr> = before[victim].iter().copied().collect();
        let survivors: Vec<usize> = (0..lab.node_count()).filter(|&i| i != victim).collect();
        lab.pull_cable(victim)?;
        lab.kill_node(victim)?;
        let after = wait_for_spread(lab, &pool, &survivors, &[victim], "the survivors to hold 3/3")?;
        ensure!(survivors.iter().all(|&i| after[i].len() == 3), "not 3/3: {after:?}");

        let macs: Vec<String> = (0..lab.node_count()).map(|i| lab.mac(i)).collect::<Result<_>>()?;
        lab.wait_for(
            "the client's neighbour entries to follow the moved addresses",
            ANNOUNCE_WINDOW,
            || {
                for &address in &moved {
                    let holder = holder_of(&after, address).context("a moved address is held nowhere")?;
                    if lab.client_neighbour(address)?.as_ref() != Some(&macs[holder]) {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        client_reaches_all(lab, &pool)
    });
}
