//! The keepalived baseline: three VRRP routers for one virtual address in a lab of the same
//! shape as fechter's, configured as the issue's baseline measurement was (priorities 130, 120,
//! 110; every router starts `BACKUP`; keepalived's default preemption brings the address back to
//! the highest priority once it returns).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fechter_lab::{Lab, run_with_timeout};

use crate::fechter::remove_extra_addresses;
use crate::probe::now_us;

/// Where keepalived 2.2.7 is installed by `apt-get install keepalived`.
pub(crate) const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// How long the address must stay on the highest-priority router before a run may start.
const QUIET: Duration = Duration::from_millis(1000);

/// One VRRP configuration under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct VrrpProfile {
    /// `default` or `tuned`.
    pub(crate) name: &'static str,
    /// `vrrp_version` (2 or 3).
    pub(crate) version: u8,
    /// `advert_int` in seconds.
    pub(crate) advert_int: f64,
}

/// keepalived as installed: VRRPv2, one advertisement a second.
pub(crate) const DEFAULT_VRRP: VrrpProfile = VrrpProfile { name: "default", version: 2, advert_int: 1.0 };

/// The fastest common tuning: VRRPv3, which allows advertisements every 100 ms.
pub(crate) const TUNED_VRRP: VrrpProfile = VrrpProfile { name: "tuned", version: 3, advert_int: 0.1 };

/// Node `i`'s priority: 130 for node 0, then 10 less per node.
fn priority(i: usize) -> usize {
    130usize.saturating_sub(10 * i)
}

/// The configuration file of node `i`.
pub(crate) fn config_text(profile: VrrpProfile, i: usize, vip: IpAddr) -> String {
    format!(
        "global_defs {{\n  router_id n{i}\n  vrrp_version {version}\n  enable_script_security\n}}\n\
         vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  \
         advert_int {advert}\n  virtual_ipaddress {{\n    {vip}/24\n  }}\n}}\n",
        version = profile.version,
        priority = priority(i),
        advert = profile.advert_int,
    )
}

/// Whether keepalived is installed where the benchmark expects it.
pub(crate) fn installed() -> bool {
    Path::new(KEEPALIVED).is_file()
}

/// Three keepalived routers in a lab.
#[derive(Debug)]
pub(crate) struct KeepalivedCluster {
    /// The namespaces (no fechterd runs in them).
    pub(crate) lab: Lab,
    /// The configuration.
    pub(crate) profile: VrrpProfile,
    /// The virtual address.
    pub(crate) vip: IpAddr,
    /// Each node's eth0 MAC, by node index.
    pub(crate) macs: Vec<String>,
    routers: Vec<Option<Child>>,
}

impl KeepalivedCluster {
    /// Builds a three-node lab, starts keepalived on every node and waits until node 0 is master.
    pub(crate) fn start(tag: &str, profile: VrrpProfile) -> Result<KeepalivedCluster> {
        let lab = Lab::new(tag, 3)?;
        let vip = lab.vip(0);
        let macs = (0..3).map(|i| lab.mac(i)).collect::<Result<Vec<_>>>()?;
        let mut cluster = KeepalivedCluster { lab, profile, vip, macs, routers: vec![None, None, None] };
        for i in 0..3 {
            cluster.start_router(i)?;
        }
        cluster.wait_master(0, Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn files(&self, i: usize) -> [PathBuf; 4] {
        let dir = self.lab.dir();
        ["conf", "pid", "vrrp.pid", "log"].map(|ext| dir.join(format!("keepalived-n{i}.{ext}")))
    }

    /// Starts keepalived in node `i`'s namespace, in the foreground, logging to the lab's directory.
    pub(crate) fn start_router(&mut self, i: usize) -> Result<()> {
        let [conf, pid, vrrp_pid, log] = self.files(i);
        fs::write(&conf, config_text(self.profile, i, self.vip))
            .with_context(|| format!("cannot write {}", conf.display()))?;
        for stale in [&pid, &vrrp_pid] {
            // A pid file of a killed router would make the new one think it is already running.
            let _ = fs::remove_file(stale);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.lab.node_ns(i),
                KEEPALIVED,
                "--dont-fork",
                "--log-console",
                "--vrrp",
                "-f",
            ])
            .arg(&conf)
            .arg("-p")
            .arg(&pid)
            .arg("-r")
            .arg(&vrrp_pid)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start keepalived on node {i}"))?;
        self.routers[i] = Some(child);
        Ok(())
    }

    /// Kills every process in node `i`'s namespace with SIGKILL (keepalived's parent and its VRRP
    /// child alike), so nothing gets to send a last advertisement.
    pub(crate) fn kill_router(&mut self, i: usize) -> Result<()> {
        kill_namespace(self.lab.node_ns(i))?;
        if let Some(mut child) = self.routers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Which nodes hold the virtual address.
    pub(crate) fn holders(&self) -> Result<BTreeSet<usize>> {
        let holdings = self.lab.holdings()?;
        Ok(holdings.iter().enumerate().filter(|(_, held)| held.contains(&self.vip)).map(|(i, _)| i).collect())
    }

    /// Waits until node `master` alone has held the address for a while.
    pub(crate) fn wait_master(&self, master: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut alone_since: Option<Instant> = None;
        loop {
            let holders = self.holders()?;
            if holders.len() == 1 && holders.contains(&master) {
                let since = *alone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= QUIET {
                    return Ok(());
                }
            } else {
                alone_since = None;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = (0..3)
                    .map(|i| fs::read_to_string(&self.files(i)[3]).unwrap_or_default())
                    .map(|log| {
                        log.lines()
                            .rev()
                            .take(8)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .collect();
                bail!(
                    "keepalived ({}) did not make node {master} the only master within {timeout:?}; holders {holders:?}\n{}",
                    self.profile.name,
                    logs.join("\n----\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pulls the master's cable and kills its keepalived; returns when the fault began.
    pub(crate) fn fail(&mut self, victim: usize) -> Result<u64> {
        let fault = now_us();
        self.lab.pull_cable(victim)?;
        self.kill_router(victim)?;
        Ok(fault)
    }

    /// Brings node `victim` back and waits until it is master again (preemption).
    pub(crate) fn repair(&mut self, victim: usize) -> Result<()> {
        remove_extra_addresses(&self.lab, victim)?;
        self.lab.plug_cable(victim)?;
        self.start_router(victim)?;
        self.wait_master(0, Duration::from_secs(30))
    }

    /// The pids of every keepalived process of node `i` (the parent and its VRRP child).
    pub(crate) fn pids(&self, i: usize) -> Result<Vec<u32>> {
        namespace_pids(self.lab.node_ns(i))
    }
}

impl Drop for KeepalivedCluster {
    fn drop(&mut self) {
        for i in 0..self.routers.len() {
            // The lab's own drop kills whatever is left in its namespaces after this.
            let _ = self.kill_router(i);
        }
    }
}

/// The pids of every process in namespace `ns`.
pub(crate) fn namespace_pids(ns: &str) -> Result<Vec<u32>> {
    let output =
        run_with_timeout(Command::new("ip").args(["netns", "pids", ns]), None, Duration::from_secs(20))?;
    if !output.success() {
        bail!("`ip netns pids {ns}` failed: {}", output.stderr.trim());
    }
    Ok(output.stdout.split_whitespace().filter_map(|pid| pid.parse().ok()).collect())
}

/// Sends SIGKILL to every process in namespace `ns`.
fn kill_namespace(ns: &str) -> Result<()> {
    let pids: Vec<String> = namespace_pids(ns)?.iter().map(u32::to_string).collect();
    if pids.is_empty() {
        return Ok(());
    }
    // A process that exited meanwhile makes kill fail for that pid only; that is fine.
    run_with_timeout(Command::new("kill").arg("-KILL").args(&pids), None, Duration::from_secs(20))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_follow_the_baseline() {
        let vip: IpAddr = "198.18.1.100".parse().unwrap();
        let default = config_text(DEFAULT_VRRP, 0, vip);
        assert!(default.contains("vrrp_version 2\n"), "{default}");
        assert!(default.contains("priority 130\n"), "{default}");
        assert!(default.contains("advert_int 1\n"), "{default}");
        assert!(default.contains("state BACKUP\n"), "{default}");
        assert!(default.contains("198.18.1.100/24\n"), "{default}");
        let tuned = config_text(TUNED_VRRP, 2, vip);
        assert!(tuned.contains("vrrp_version 3\n"), "{tuned}");
        assert!(tuned.contains("priority 110\n"), "{tuned}");
        assert!(tuned.contains("advert_int 0.1\n"), "{tuned}");
    }
}
