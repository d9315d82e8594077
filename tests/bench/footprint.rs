//! Idle footprint: resident memory and CPU time per daemon, fechterd next to keepalived, measured
//! at the same time on the same machine.
//!
//! Four three-node labs run at once: fechterd with its defaults and with the fast profile (six
//! addresses each, logging at `info` as a production daemon would), keepalived with its defaults
//! and tuned. Once all are steady, every daemon's CPU time (`utime + stime` of every process, from
//! `/proc/PID/stat`) is read, again after the interval, and the resident memory (`VmRSS` of
//! `/proc/PID/status`) at the end. keepalived's figures add up its two processes (the parent and
//! its VRRP child).

use std::fs::{self, File};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fechter_lab::Lab;

use crate::fechter::{Profile, add_addresses, wait_steady};
use crate::keepalived::{self, DEFAULT_VRRP, KeepalivedCluster, TUNED_VRRP};
use crate::stats::say;

/// The kernel's clock ticks per second for `/proc/PID/stat` times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `utime + stime + cutime + cstime` in clock ticks from the text of `/proc/PID/stat`.
pub(crate) fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces; the fields after the
    // last ')' start with field 3.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 to 17 of the full line are indices 11 to 14 here.
    fields.get(11..15)?.iter().map(|field| field.parse::<u64>().ok()).sum()
}

/// `VmRSS` in kilobytes from the text of `/proc/PID/status`.
pub(crate) fn rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn read_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    cpu_ticks(&text).ok_or_else(|| anyhow!("cannot parse {path}"))
}

fn read_rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    rss_kb(&text).ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// One daemon instance: a name and its processes.
struct Daemon {
    label: String,
    node: usize,
    pids: Vec<u32>,
}

/// A fechter lab whose daemons this module starts itself, to choose their log level.
struct QuietFechter {
    lab: Lab,
    daemons: Vec<Child>,
}

impl QuietFechter {
    fn start(tag: &str, profile: &Profile) -> Result<QuietFechter> {
        let lab = Lab::new(tag, 3)?;
        let mut cluster = QuietFechter { lab, daemons: Vec::new() };
        for i in 0..3 {
            let child = cluster.spawn(i, profile)?;
            cluster.daemons.push(child);
        }
        for i in 0..3 {
            cluster.wait_ready(i)?;
        }
        let pool: Vec<_> = (0..6).map(|k| cluster.lab.vip(k)).collect();
        add_addresses(cluster.lab.socket_path(0), "eth0", &pool)?;
        wait_steady(&cluster.lab, &pool, &[], Duration::from_secs(60), profile.name)?;
        Ok(cluster)
    }

    fn spawn(&self, i: usize, profile: &Profile) -> Result<Child> {
        let lab = &self.lab;
        let mut args: Vec<String> =
            vec!["-a".into(), lab.node_ip(i).to_string(), "-g".into(), lab.gateway_ip().to_string()];
        for other in (0..3).filter(|&other| other != i) {
            args.extend(["-s".into(), lab.node_ip(other).to_string()]);
        }
        args.extend(["--state-dir".into(), lab.state_dir(i).display().to_string()]);
        args.extend(["--socket".into(), lab.socket_path(i).display().to_string()]);
        args.extend(["--log-level".into(), "info".into(), "--up".into()]);
        args.extend(profile.args.iter().cloned());
        fs::create_dir_all(lab.state_dir(i))?;
        let log = File::options().create(true).append(true).open(lab.log_path(i))?;
        Command::new("ip")
            .args(["netns", "exec", lab.node_ns(i)])
            .arg(&lab.binaries().daemon)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start fechterd on node {i}"))
    }

    fn wait_ready(&self, i: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.lab.cli(i, &["status", "--json"]).is_ok_and(|output| output.success()) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("fechterd on node {i} did not answer within 30 s:\n{}", self.lab.log_tail(i, 20))
    }
}

impl Drop for QuietFechter {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one kind of daemon used, per instance.
#[derive(Debug, Clone)]
pub(crate) struct Footprint {
    /// E.g. `fechterd default`.
    pub(crate) label: String,
    /// E.g. `fechterd_default`.
    pub(crate) key: String,
    /// Resident memory per instance, in MB (all its processes).
    pub(crate) rss_mb: Vec<f64>,
    /// CPU seconds per minute per instance.
    pub(crate) cpu_s_per_min: Vec<f64>,
    /// How many processes one instance has.
    pub(crate) processes: usize,
}

/// Measures every daemon kind over `seconds`.
pub(crate) fn measure(fast: &Profile, seconds: u64) -> Result<Vec<Footprint>> {
    say("  starting fechterd (default, fast) and keepalived (default, tuned), three nodes each ...");
    let default_fechter = QuietFechter::start("bfpd", &Profile::default_settings())?;
    let fast_fechter = QuietFechter::start("bfpf", fast)?;
    let mut kinds: Vec<(String, String, Vec<Daemon>)> = Vec::new();
    for (label, cluster) in [("fechterd default", &default_fechter), ("fechterd fast", &fast_fechter)] {
        let daemons = cluster
            .daemons
            .iter()
            .enumerate()
            .map(|(node, child)| Daemon { label: label.to_owned(), node, pids: vec![child.id()] })
            .collect();
        kinds.push((label.to_owned(), label.replace(' ', "_"), daemons));
    }
    let mut keepalived_clusters = Vec::new();
    if keepalived::installed() {
        for profile in [DEFAULT_VRRP, TUNED_VRRP] {
            let cluster =
                KeepalivedCluster::start(if profile.name == "default" { "bfpkd" } else { "bfpkt" }, profile)?;
            let label = format!("keepalived {}", profile.name);
            let daemons = (0..3)
                .map(|node| Ok(Daemon { label: label.clone(), node, pids: cluster.pids(node)? }))
                .collect::<Result<Vec<_>>>()?;
            kinds.push((label.clone(), label.replace(' ', "_"), daemons));
            keepalived_clusters.push(cluster);
        }
    } else {
        say(&format!(
            "  keepalived left out: {} is missing (apt-get install keepalived)",
            keepalived::KEEPALIVED
        ));
    }
    // Let the start-up work (joining, first assignments, first elections) fade first.
    thread::sleep(Duration::from_secs(5));
    let ticks_per_second = clock_ticks();
    let start = Instant::now();
    let before: Vec<Vec<u64>> = kinds
        .iter()
        .map(|(_, _, daemons)| {
            daemons
                .iter()
                .map(|daemon| daemon.pids.iter().map(|&pid| read_ticks(pid)).sum::<Result<u64>>())
                .collect()
        })
        .collect::<Result<_>>()?;
    say(&format!("  measuring CPU time for {seconds} s ..."));
    thread::sleep(Duration::from_secs(seconds));
    let elapsed = start.elapsed().as_secs_f64();
    let mut footprints = Vec::new();
    for ((label, key, daemons), before) in kinds.iter().zip(before) {
        let mut rss_mb = Vec::new();
        let mut cpu = Vec::new();
        for (daemon, ticks_before) in daemons.iter().zip(before) {
            let ticks_after: u64 =
                daemon.pids.iter().map(|&pid| read_ticks(pid)).sum::<Result<u64>>().with_context(|| {
                    format!("{} on node {} exited during the measurement", daemon.label, daemon.node)
                })?;
            let rss: u64 = daemon.pids.iter().map(|&pid| read_rss(pid)).sum::<Result<u64>>()?;
            rss_mb.push(rss as f64 / 1024.0);
            cpu.push(ticks_after.saturating_sub(ticks_before) as f64 / ticks_per_second / elapsed * 60.0);
        }
        let processes = daemons.first().map_or(0, |daemon| daemon.pids.len());
        footprints.push(Footprint {
            label: label.clone(),
            key: key.clone(),
            rss_mb,
            cpu_s_per_min: cpu,
            processes,
        });
    }
    drop(keepalived_clusters);
    drop(fast_fechter);
    drop(default_fechter);
    Ok(footprints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_give_cpu_ticks_and_rss() {
        let stat = "1234 (fechter d) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 4 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(13));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(rss_kb("Name:\tfechterd\nVmRSS:\t   5120 kB\n"), Some(5120));
        assert_eq!(rss_kb("Name:\tx\n"), None);
    }
}
