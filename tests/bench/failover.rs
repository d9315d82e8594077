//! Unplanned failover, fechter and keepalived side by side.
//!
//! Each run: the client pings an address of the victim every 10 ms (and has had replies from the
//! victim), the victim's cable is pulled and its daemon killed with SIGKILL, and the time from the
//! fault to the first echo reply from another node is one measurement. The victim then comes back
//! and the cluster settles before the next run. fechter's victim rotates over the nodes (so the
//! leader dies in a third of the runs); keepalived's victim is always the master.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::fechter::{FechterCluster, Profile};
use crate::keepalived::{self, KeepalivedCluster, VrrpProfile};
use crate::probe::{EchoProber, now_us};
use crate::stats::{Summary, say};
use crate::timeline::timeline;

/// How often the client pings.
pub(crate) const PING_INTERVAL: Duration = Duration::from_millis(10);

/// How long a run waits for the address to answer again before it counts as failed.
const FECHTER_LIMIT: Duration = Duration::from_secs(15);
const KEEPALIVED_LIMIT: Duration = Duration::from_secs(30);

/// The lines of the slowest run's timeline that are printed.
const TIMELINE_LINES: usize = 40;

/// The outcome of one configuration's runs.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// E.g. `fechter default`.
    pub(crate) label: String,
    /// The `key=value` prefix, e.g. `fechter_default`.
    pub(crate) key: String,
    /// Milliseconds of every successful run, in run order.
    pub(crate) values: Vec<f64>,
    /// Runs in which the address never answered again.
    pub(crate) failed: usize,
}

impl Series {
    pub(crate) fn new(label: String, key: String) -> Series {
        Series { label, key, values: Vec::new(), failed: 0 }
    }

    /// The summary of the successful runs.
    pub(crate) fn summary(&self) -> Option<Summary> {
        Summary::of(&self.values)
    }
}

/// One measured failover: when the fault began and when the first reply from elsewhere came.
pub(crate) struct Measured {
    /// When the fault (or command) began, in microseconds since the epoch.
    pub(crate) fault_us: u64,
    /// When the first reply from another node arrived.
    pub(crate) reply_us: u64,
    /// The node that sent it.
    pub(crate) new_holder: Option<usize>,
}

impl Measured {
    /// Milliseconds from the fault to the reply.
    pub(crate) fn ms(&self) -> f64 {
        self.reply_us.saturating_sub(self.fault_us) as f64 / 1000.0
    }
}

/// Pings `address` from the client, makes sure `holder_mac` answers, runs `fault` (which returns
/// the fault's start) and waits for the first reply from a MAC of `others`.
pub(crate) fn measure(
    client_ns: &str,
    address: IpAddr,
    holder_mac: &str,
    others: &[(usize, String)],
    limit: Duration,
    fault: impl FnOnce() -> Result<u64>,
) -> Result<Option<Measured>> {
    let prober = EchoProber::start(client_ns, address, PING_INTERVAL)?;
    prober.wait_for_reply(now_us(), |mac| mac == holder_mac, Duration::from_secs(10)).ok_or_else(|| {
        anyhow!("{address} does not answer the client from its holder {holder_mac} before the fault")
    })?;
    let fault_us = fault()?;
    let reply = prober.wait_for_reply(fault_us, |mac| others.iter().any(|(_, other)| other == mac), limit);
    Ok(reply.map(|reply| Measured {
        fault_us,
        reply_us: reply.at_us,
        new_holder: others.iter().find(|(_, mac)| *mac == reply.mac).map(|(i, _)| *i),
    }))
}

/// Runs `runs` failovers of a three-node fechter cluster with `profile`.
pub(crate) fn fechter_series(profile: &Profile, runs: usize) -> Result<Series> {
    let mut series = Series::new(format!("fechter {}", profile.name), format!("fechter_{}", profile.name));
    let mut cluster =
        FechterCluster::start("bfail", 3, profile.clone(), |lab| Ok((0..6).map(|k| lab.vip(k)).collect()))?;
    let mut slowest: Option<(f64, u64, u64, usize)> = None;
    for run in 0..runs {
        let holdings = cluster.lab.holdings()?;
        let victim = (0..3).map(|offset| (run + offset) % 3).find(|&i| !holdings[i].is_empty()).unwrap_or(0);
        let address =
            *holdings[victim].iter().next().ok_or_else(|| anyhow!("node {victim} holds nothing"))?;
        let others: Vec<(usize, String)> =
            (0..3).filter(|&i| i != victim).map(|i| (i, cluster.macs[i].clone())).collect();
        let victim_mac = cluster.macs[victim].clone();
        let leader = if victim == 0 { " (leader)" } else { "" };
        let client = cluster.lab.client_ns();
        let outcome =
            measure(&client, address, &victim_mac, &others, FECHTER_LIMIT, || cluster.fail(victim))?;
        match outcome {
            Some(measured) => {
                let ms = measured.ms();
                say(&format!(
                    "  {} run {}: victim n{victim}{leader}, {address} answers from n{} after {ms:.0} ms",
                    series.label,
                    run + 1,
                    measured.new_holder.map_or_else(|| "?".to_owned(), |i| i.to_string()),
                ));
                if slowest.is_none_or(|(worst, ..)| ms > worst) {
                    slowest = Some((ms, measured.fault_us, measured.reply_us, victim));
                }
                series.values.push(ms);
            }
            None => {
                series.failed += 1;
                say(&format!(
                    "  {} run {}: victim n{victim}{leader}, {address} did not answer within {FECHTER_LIMIT:?}",
                    series.label,
                    run + 1
                ));
            }
        }
        cluster.repair(victim)?;
    }
    if let Some((ms, fault_us, reply_us, victim)) = slowest {
        say(&format!(
            "  timeline of the slowest {} run ({ms:.0} ms; victim n{victim}), survivors' logs:",
            series.label
        ));
        let logs: Vec<(String, &Path)> =
            (0..3).filter(|&i| i != victim).map(|i| (format!("n{i}"), cluster.lab.log_path(i))).collect();
        for line in
            timeline(&logs, fault_us, fault_us.saturating_sub(20_000), reply_us + 20_000, TIMELINE_LINES)
        {
            say(&format!("    {line}"));
        }
    }
    Ok(series)
}

/// Runs `runs` failovers of three keepalived routers with `profile`; the master is the victim.
pub(crate) fn keepalived_series(profile: VrrpProfile, runs: usize) -> Result<Series> {
    let label =
        format!("keepalived {} (VRRPv{}, advert_int {})", profile.name, profile.version, profile.advert_int);
    let mut series = Series::new(label, format!("keepalived_{}", profile.name));
    if !keepalived::installed() {
        say(&format!(
            "  {} skipped: {} is missing (apt-get install keepalived)",
            series.label,
            keepalived::KEEPALIVED
        ));
        return Ok(series);
    }
    let mut cluster = KeepalivedCluster::start("bka", profile)?;
    for run in 0..runs {
        let victim = 0;
        let others: Vec<(usize, String)> = (1..3).map(|i| (i, cluster.macs[i].clone())).collect();
        let victim_mac = cluster.macs[victim].clone();
        let vip = cluster.vip;
        let client = cluster.lab.client_ns();
        let reply = measure(&client, vip, &victim_mac, &others, KEEPALIVED_LIMIT, || cluster.fail(victim))?;
        match reply {
            Some(measured) => {
                let ms = measured.ms();
                let new_holder = measured.new_holder.map_or_else(|| "?".to_owned(), |i| i.to_string());
                say(&format!(
                    "  keepalived {} run {}: master n0 failed, VIP answers from n{new_holder} after {ms:.0} ms",
                    profile.name,
                    run + 1
                ));
                series.values.push(ms);
            }
            None => {
                series.failed += 1;
                say(&format!(
                    "  keepalived {} run {}: VIP did not answer within {KEEPALIVED_LIMIT:?}",
                    profile.name,
                    run + 1
                ));
            }
        }
        cluster.repair(victim)?;
    }
    Ok(series)
}
