//! A node holding 200 addresses fails (cable pulled, daemon killed): how long until the client
//! reaches all 200 again.
//!
//! Three nodes share a pool of 600 addresses, so each holds 200. The lab's /24 has no room for
//! 600, so they come from `10.<net>.{0,1,2}.{1..200}`, and the client gets an on-link route to
//! them: it ARPs for them on the LAN like for any neighbour, and the holder answers because the
//! address is on its eth0. The client probes the victim's 200 addresses in parallel by TCP connect
//! (see [`crate::probe::ConnectProber`]), each at most every 20 ms.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fechter_lab::Lab;

use crate::failover::Series;
use crate::fechter::{FechterCluster, Profile};
use crate::probe::ConnectProber;
use crate::stats::{Summary, say};
use crate::timeline::timeline;

/// The pause before each fault; see its use.
const SETTLE: Duration = Duration::from_secs(5);

/// Addresses per node.
pub(crate) const PER_NODE: usize = 200;

/// The pool: 200 addresses per node in `10.<net>.<node>.0/24`, and the client's route to them.
fn pool(lab: &Lab) -> Result<Vec<IpAddr>> {
    let net = lab.gateway_ip().octets()[2];
    let route = format!("10.{net}.0.0/16");
    let output = lab.exec(&lab.client_ns(), "ip", &["route", "add", &route, "dev", "eth0"])?;
    if !output.success() {
        bail!("cannot route {route} on the client: {}", output.stderr.trim());
    }
    let mut addresses = Vec::new();
    for block in 0..3u8 {
        for host in 1..=u8::try_from(PER_NODE).context("too many addresses per node")? {
            addresses.push(IpAddr::V4(Ipv4Addr::new(10, net, block, host)));
        }
    }
    Ok(addresses)
}

/// Prints the survivors' log lines of one run; of the lines repeated per address (the same text
/// up to the address), only each node's first and last are shown, with their count.
fn print_condensed_timeline(cluster: &FechterCluster, victim: usize, from_us: u64, to_us: u64) {
    let logs: Vec<(String, &std::path::Path)> =
        (0..3).filter(|&i| i != victim).map(|i| (format!("n{i}"), cluster.lab.log_path(i))).collect();
    let lines = timeline(&logs, from_us, from_us, to_us + 20_000, usize::MAX);
    // A line reads `+<ms> ms <node> <level> <target>: <message>`; the group is all but the time.
    let group = |line: &str| -> String {
        let text = line.split_once(" ms ").map_or(line, |(_, rest)| rest);
        // Log fields read `address=...`; network events print `address: ...`.
        let cut = ["address=", "address: "].iter().filter_map(|marker| text.find(marker)).min();
        cut.map_or(text, |at| &text[..at]).to_owned()
    };
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (index, line) in lines.iter().enumerate() {
        let entry = counts.entry(group(line)).or_insert((0, index));
        entry.0 += 1;
        entry.1 = index;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, line) in lines.iter().enumerate() {
        let key = group(line);
        let (total, last) = counts.get(&key).copied().unwrap_or((1, index));
        let nth = seen.entry(key).or_insert(0);
        *nth += 1;
        if *nth == 1 || index == last {
            let note = if total > 1 { format!("  [{} of {total}]", *nth) } else { String::new() };
            say(&format!("    {line}{note}"));
        }
    }
}

/// Per run: the time until the last (and the median) of the victim's addresses answered.
pub(crate) struct ManyResult {
    /// Until all of them answered.
    pub(crate) all: Series,
    /// Until half of them answered.
    pub(crate) half: Series,
    /// Until the first one answered.
    pub(crate) first: Series,
}

/// Runs `runs` failures of a node holding 200 addresses.
pub(crate) fn series(profile: &Profile, runs: usize) -> Result<ManyResult> {
    let key = format!("many_{}", profile.name);
    let mut result = ManyResult {
        all: Series::new(format!("fechter {} all {PER_NODE}", profile.name), format!("{key}_all")),
        half: Series::new(format!("fechter {} half", profile.name), format!("{key}_half")),
        first: Series::new(format!("fechter {} first", profile.name), format!("{key}_first")),
    };
    say(&format!("  setting up 3 nodes with {} addresses ...", 3 * PER_NODE));
    let mut cluster = FechterCluster::start("bmany", 3, profile.clone(), pool)?;
    for run in 0..runs {
        // Steady holdings do not mean idle daemons: with 600 addresses the loops are still
        // working through the netlink events of the last rebalance for a few seconds, and a fault
        // in the middle of that would measure the backlog rather than the failover.
        thread::sleep(SETTLE);
        let victim = run % 3;
        let holdings = cluster.lab.holdings()?;
        let addresses: Vec<IpAddr> = holdings[victim].iter().copied().collect();
        let mut prober = ConnectProber::start(&cluster.lab.client_ns(), &addresses)?;
        let fault_us = cluster.fail(victim)?;
        prober.go()?;
        match prober.finish() {
            Ok(answered) => {
                let times: Vec<f64> =
                    answered.values().map(|&at| at.saturating_sub(fault_us) as f64 / 1000.0).collect();
                let summary = Summary::of(&times).context("no address answered")?;
                say(&format!(
                    "  many run {}: n{victim} held {}; first answered after {:.0} ms, half after {:.0} ms, all after {:.0} ms",
                    run + 1,
                    addresses.len(),
                    summary.min,
                    summary.median,
                    summary.max
                ));
                print_condensed_timeline(
                    &cluster,
                    victim,
                    fault_us,
                    fault_us + (summary.max * 1000.0) as u64,
                );
                result.all.values.push(summary.max);
                result.half.values.push(summary.median);
                result.first.values.push(summary.min);
            }
            Err(error) => {
                result.all.failed += 1;
                say(&format!("  many run {}: {error:#}", run + 1));
            }
        }
        cluster.repair(victim)?;
    }
    Ok(result)
}
