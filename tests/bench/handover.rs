//! Planned handover: the holder is told to go (`fechter down`, or SIGTERM to its daemon) while the
//! client pings one of its addresses; the measurement runs from the command to the first echo
//! reply that comes from another node's MAC, and the address must then be on that node's eth0.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::failover::{Series, measure};
use crate::fechter::{FechterCluster, Profile};
use crate::probe::now_us;
use crate::stats::say;

/// How long a run waits for the address on its new node.
const LIMIT: Duration = Duration::from_secs(10);

/// How the holder is told to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `fechter down` through the node's control socket.
    Down,
    /// SIGTERM to the daemon: it leaves gossip, releases everything and exits.
    Sigterm,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Down => "fechter down",
            Method::Sigterm => "SIGTERM",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Method::Down => "down",
            Method::Sigterm => "sigterm",
        }
    }
}

/// Runs `runs` handovers of each method on one three-node cluster with `profile`.
pub(crate) fn series(profile: &Profile, runs: usize) -> Result<Vec<Series>> {
    let mut cluster =
        FechterCluster::start("bhand", 3, profile.clone(), |lab| Ok((0..6).map(|k| lab.vip(k)).collect()))?;
    let mut all = Vec::new();
    for method in [Method::Down, Method::Sigterm] {
        let mut series = Series::new(
            format!("fechter {} {}", profile.name, method.name()),
            format!("handover_{}_{}", method.key(), profile.name),
        );
        for run in 0..runs {
            let holdings = cluster.lab.holdings()?;
            let holder =
                (0..3).map(|offset| (run + offset) % 3).find(|&i| !holdings[i].is_empty()).unwrap_or(0);
            let address =
                *holdings[holder].iter().next().ok_or_else(|| anyhow!("node {holder} holds nothing"))?;
            let others: Vec<(usize, String)> =
                (0..3).filter(|&i| i != holder).map(|i| (i, cluster.macs[i].clone())).collect();
            let holder_mac = cluster.macs[holder].clone();
            let client = cluster.lab.client_ns();
            let measured = measure(&client, address, &holder_mac, &others, LIMIT, || {
                let started = now_us();
                match method {
                    Method::Down => {
                        cluster.lab.cli_ok(holder, &["down"])?;
                    }
                    Method::Sigterm => {
                        let status = cluster.lab.terminate_node(holder)?;
                        if !status.success() {
                            bail!("node {holder}'s daemon exited with {status} after SIGTERM");
                        }
                    }
                }
                Ok(started)
            })?;
            match measured {
                Some(measured) => {
                    let now_on: Vec<usize> = cluster
                        .lab
                        .holdings()?
                        .iter()
                        .enumerate()
                        .filter(|(_, held)| held.contains(&address))
                        .map(|(i, _)| i)
                        .collect();
                    if now_on.contains(&holder) || now_on.is_empty() {
                        bail!(
                            "after the handover {address} is on nodes {now_on:?}, not on another node than n{holder}"
                        );
                    }
                    say(&format!(
                        "  {} run {}: n{holder} let go of {address}; it answers from n{} after {:.0} ms",
                        series.label,
                        run + 1,
                        measured.new_holder.map_or_else(|| "?".to_owned(), |i| i.to_string()),
                        measured.ms()
                    ));
                    series.values.push(measured.ms());
                }
                None => {
                    series.failed += 1;
                    say(&format!(
                        "  {} run {}: {address} did not answer from another node within {LIMIT:?}",
                        series.label,
                        run + 1
                    ));
                }
            }
            match method {
                Method::Down => {
                    cluster.lab.cli_ok(holder, &["up"])?;
                }
                Method::Sigterm => {
                    if !cluster.lab.daemon_running(holder) {
                        let args = cluster.profile.arg_refs();
                        cluster.lab.start_node_with(holder, true, &args)?;
                    }
                }
            }
            cluster.wait_steady(&[], Duration::from_secs(60))?;
        }
        all.push(series);
    }
    Ok(all)
}
