//! Benchmark: install and announce 1 000 IPv4 addresses on one interface, in a namespace pair of
//! its own, the way a node takes over a large pool at once (target: under 1 s); then release them
//! one by one and in one batch, and release 200 in one batch, the way a node hands its addresses
//! over at shutdown (the planned handover has 200 ms from command to client in all).
//!
//! Run with `cargo bench -p fechter-netops --bench install_announce`. Like the privileged tests it
//! skips (or fails under `FECHTER_E2E=require`) when it cannot build namespaces.
#![allow(clippy::print_stdout, reason = "a benchmark's whole output is its printed figures")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use fechter_netops::frames;
use fechter_netops::{AddressSpec, AnnounceConfig, LinuxNet, Net};

const ADDRESSES: u16 = 1_000;
/// The size of the smaller batch release: a node's share of a large pool.
const HANDOVER_ADDRESSES: usize = 200;

/// Measured durations of one run.
struct Figures {
    install: Duration,
    announce: Duration,
    remove: Duration,
    batch_remove: Duration,
    handover_remove: Duration,
}

fn main() {
    let Some(lab) = support::lab_or_skip("install_announce", &["a", "b"]) else {
        return;
    };
    lab.veth(("a", "va", "02:fc:00:00:01:0a"), ("b", "vb", "02:fc:00:00:01:0b"));
    // 198.18.16.0/22 holds 1 024 addresses; the pool takes the first 1 000 after .0.
    let pool: Vec<IpAddr> = (1..=ADDRESSES)
        .map(|n| {
            let [high, low] = n.to_be_bytes();
            IpAddr::V4(Ipv4Addr::new(198, 18, 16 + high, low))
        })
        .collect();

    let capture = lab.capture("b", "vb", Duration::from_millis(1500));
    let announced = pool.clone();
    let figures = lab.run_in("a", move || async move {
        let net = LinuxNet::new().await.expect("netlink");
        let specs: Vec<AddressSpec> =
            announced.iter().map(|address| AddressSpec::new("va", *address, 22)).collect();

        let started = Instant::now();
        for spec in &specs {
            net.add_address(spec).await.expect("add");
        }
        let install = started.elapsed();
        let config = AnnounceConfig { count: 1, interval: Duration::from_secs(1) };
        net.announce("va", &announced, &config).await.expect("announce");
        let announce = started.elapsed() - install;

        let removing = Instant::now();
        for spec in specs.iter().rev() {
            net.remove_address(spec).await.expect("remove");
        }
        let remove = removing.elapsed();

        let batch_remove = install_then_batch_remove(&net, &specs).await;
        let handover_remove = install_then_batch_remove(&net, &specs[..HANDOVER_ADDRESSES]).await;
        Figures { install, announce, remove, batch_remove, handover_remove }
    });

    let received = capture
        .frames()
        .iter()
        .filter_map(|(_, frame)| frames::parse_arp(frame))
        .filter(|arp| pool.contains(&IpAddr::V4(arp.sender_ip)))
        .count();
    let total = figures.install + figures.announce;
    println!(
        "install_announce: {ADDRESSES} addresses: install {:.1} ms + announce first round {:.1} ms \
         = {:.1} ms (target < 1000 ms); peer received {received} of {} frames",
        millis(figures.install),
        millis(figures.announce),
        millis(total),
        2 * usize::from(ADDRESSES),
    );
    println!(
        "remove: {ADDRESSES} addresses one by one {:.1} ms, in one batch {:.1} ms; \
         {HANDOVER_ADDRESSES} addresses in one batch {:.1} ms",
        millis(figures.remove),
        millis(figures.batch_remove),
        millis(figures.handover_remove),
    );
}

/// Installs `specs`, then times their removal in one batch, which must succeed for every spec.
async fn install_then_batch_remove(net: &LinuxNet, specs: &[AddressSpec]) -> Duration {
    for spec in specs {
        net.add_address(spec).await.expect("add");
    }
    let started = Instant::now();
    let outcomes = net.remove_addresses(specs).await;
    let took = started.elapsed();
    for (spec, outcome) in outcomes {
        outcome.unwrap_or_else(|error| panic!("removing {spec}: {error}"));
    }
    let listed = net.list_addresses().await.expect("list");
    assert!(
        !listed.iter().any(|installed| specs.contains(&installed.spec())),
        "the batch left addresses behind"
    );
    took
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
