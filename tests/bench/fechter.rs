//! A fechter cluster in a lab, driven for measurements: profiles, bulk pool setup through the
//! control socket, waiting for a steady spread, and the fault and the repair of one node.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write as _};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fechter_lab::Lab;
use serde_json::Value;

use crate::probe::now_us;

/// How long holdings must stay unchanged before the cluster counts as steady.
const QUIET: Duration = Duration::from_millis(1500);

/// A named set of extra daemon arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    /// `default` or `fast`, used in tables and `key=value` lines.
    pub(crate) name: &'static str,
    /// Arguments appended to the lab's daemon command line.
    pub(crate) args: Vec<String>,
}

impl Profile {
    /// The daemon's own defaults.
    pub(crate) fn default_settings() -> Profile {
        Profile { name: "default", args: Vec::new() }
    }

    /// The fast profile with these arguments.
    pub(crate) fn fast(args: &[String]) -> Profile {
        Profile { name: "fast", args: args.to_vec() }
    }

    /// The arguments as the lab wants them.
    pub(crate) fn arg_refs(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

/// A lab running fechterd on every node with one profile, and the pool it was given.
#[derive(Debug)]
pub(crate) struct FechterCluster {
    /// The namespaces and daemons.
    pub(crate) lab: Lab,
    /// The settings every daemon runs with.
    pub(crate) profile: Profile,
    /// Every address in the pool.
    pub(crate) pool: Vec<IpAddr>,
    /// Each node's eth0 MAC, by node index.
    pub(crate) macs: Vec<String>,
}

impl FechterCluster {
    /// Builds a lab of `nodes` nodes, starts every daemon admin-up with `profile`, adds `pool`
    /// through node 0 and waits until it is spread evenly.
    pub(crate) fn start(
        tag: &str,
        nodes: usize,
        profile: Profile,
        pool: impl FnOnce(&Lab) -> Result<Vec<IpAddr>>,
    ) -> Result<FechterCluster> {
        let mut lab = Lab::new(tag, nodes)?;
        for i in 0..nodes {
            lab.start_node_with(i, true, &profile.arg_refs())?;
        }
        let pool = pool(&lab)?;
        let macs = (0..nodes).map(|i| lab.mac(i)).collect::<Result<Vec<_>>>()?;
        let cluster = FechterCluster { lab, profile, pool, macs };
        add_addresses(cluster.lab.socket_path(0), "eth0", &cluster.pool)?;
        // A large pool takes a while to reach every node the first time.
        let timeout = Duration::from_secs(60 + cluster.pool.len() as u64 / 5);
        cluster.wait_steady(&[], timeout)?;
        Ok(cluster)
    }

    /// Waits until the pool is spread evenly over the nodes outside `excluded`; see [`wait_steady`].
    pub(crate) fn wait_steady(&self, excluded: &[usize], timeout: Duration) -> Result<Vec<BTreeSet<IpAddr>>> {
        wait_steady(&self.lab, &self.pool, excluded, timeout, self.profile.name)
    }

    /// Pulls node `victim`'s cable and kills its daemon; returns when the fault began.
    pub(crate) fn fail(&mut self, victim: usize) -> Result<u64> {
        let fault = now_us();
        self.lab.pull_cable(victim)?;
        self.lab.kill_node(victim)?;
        Ok(fault)
    }

    /// Brings a failed node back: clears what its dead daemon left on eth0 while the cable is
    /// still out (so it never answers for an address it no longer holds), plugs it in, restarts
    /// the daemon and waits for the even spread.
    pub(crate) fn repair(&mut self, victim: usize) -> Result<()> {
        remove_extra_addresses(&self.lab, victim)?;
        self.lab.plug_cable(victim)?;
        if !self.lab.daemon_running(victim) {
            self.lab.start_node_with(victim, true, &self.profile.arg_refs())?;
        }
        let timeout = Duration::from_secs(60 + self.pool.len() as u64 / 5);
        self.wait_steady(&[], timeout).map(drop)
    }
}

/// Waits until every address of `pool` is held by exactly one node of `lab` outside `excluded`,
/// the loads of those nodes differ by at most one, and nothing changed for a while; returns the
/// holdings. `what` names the cluster in the error.
pub(crate) fn wait_steady(
    lab: &Lab,
    pool: &[IpAddr],
    excluded: &[usize],
    timeout: Duration,
    what: &str,
) -> Result<Vec<BTreeSet<IpAddr>>> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<Vec<BTreeSet<IpAddr>>> = None;
    let mut unchanged_since = Instant::now();
    loop {
        let holdings = lab.holdings()?;
        let counted: Vec<&BTreeSet<IpAddr>> = holdings
            .iter()
            .enumerate()
            .filter(|(i, _)| !excluded.contains(i))
            .map(|(_, held)| held)
            .collect();
        let balanced = is_balanced(pool, &counted);
        if last.as_ref() != Some(&holdings) {
            unchanged_since = Instant::now();
        }
        if balanced && unchanged_since.elapsed() >= QUIET {
            return Ok(holdings);
        }
        last = Some(holdings);
        if Instant::now() >= deadline {
            let loads: Vec<usize> = last.iter().flatten().map(BTreeSet::len).collect();
            bail!(
                "the {what} cluster did not settle within {timeout:?} (loads per node {loads:?}, pool {}):\n{}",
                pool.len(),
                lab.dump_logs()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether every pool address is held exactly once among `holdings` and the loads differ by at
/// most one.
pub(crate) fn is_balanced(pool: &[IpAddr], holdings: &[&BTreeSet<IpAddr>]) -> bool {
    let exactly_once =
        pool.iter().all(|address| holdings.iter().filter(|held| held.contains(address)).count() == 1);
    let nothing_else = holdings.iter().all(|held| held.iter().all(|address| pool.contains(address)));
    let loads: Vec<usize> = holdings.iter().map(|held| held.len()).collect();
    let even = match (loads.iter().min(), loads.iter().max()) {
        (Some(least), Some(most)) => most - least <= 1,
        _ => true,
    };
    exactly_once && nothing_else && even
}

/// Adds `addresses` to the pool through the control socket at `socket`, all over one connection
/// (one CLI process per address would take seconds for hundreds of them).
pub(crate) fn add_addresses(socket: &Path, interface: &str, addresses: &[IpAddr]) -> Result<()> {
    let stream =
        UnixStream::connect(socket).with_context(|| format!("cannot connect to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    for address in addresses {
        let request = serde_json::json!({
            "version": 1,
            "command": "add-address",
            "interface": interface,
            "address": address.to_string(),
        });
        writeln!(writer, "{request}").context("writing to the control socket")?;
        let mut line = String::new();
        reader.read_line(&mut line).context("reading the daemon's reply")?;
        let reply: Value =
            serde_json::from_str(&line).with_context(|| format!("the daemon replied {line:?}"))?;
        if reply.get("result").and_then(Value::as_str) != Some("ok") {
            bail!("adding {address} failed: {}", line.trim());
        }
    }
    Ok(())
}

/// Deletes every address on node `i`'s eth0 but its own (with its real prefix length).
pub(crate) fn remove_extra_addresses(lab: &Lab, i: usize) -> Result<()> {
    let ns = lab.node_ns(i).to_owned();
    let output = lab.exec(&ns, "ip", &["-j", "addr", "show", "dev", "eth0"])?;
    let links: Value = serde_json::from_str(&output.stdout).context("ip -j addr printed no JSON")?;
    let own = lab.node_ip(i).to_string();
    let mut script = String::new();
    for info in
        links.get(0).and_then(|link| link.get("addr_info")).and_then(Value::as_array).into_iter().flatten()
    {
        let (Some(local), Some(prefix)) =
            (info.get("local").and_then(Value::as_str), info.get("prefixlen").and_then(Value::as_u64))
        else {
            continue;
        };
        if local == own || info.get("scope").and_then(Value::as_str) == Some("link") {
            continue;
        }
        script.push_str(&format!("addr del {local}/{prefix} dev eth0\n"));
    }
    if script.is_empty() {
        return Ok(());
    }
    let mut batch = std::process::Command::new("ip");
    batch.args(["-n", &ns, "-batch", "-"]);
    let result = fechter_lab::run_with_timeout(&mut batch, Some(&script), Duration::from_secs(20))?;
    if !result.success() {
        bail!("cannot clear node {i}'s leftover addresses: {}", result.stderr.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addresses: &[IpAddr]) -> BTreeSet<IpAddr> {
        addresses.iter().copied().collect()
    }

    #[test]
    fn balance_needs_every_address_once_and_even_loads() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let pool = [a, b, c];
        assert!(is_balanced(&pool, &[&set(&[a]), &set(&[b, c])]));
        assert!(!is_balanced(&pool, &[&set(&[]), &set(&[a, b, c])]));
        assert!(!is_balanced(&pool, &[&set(&[a, b]), &set(&[b, c])]));
        assert!(!is_balanced(&pool, &[&set(&[a]), &set(&[b])]));
    }
}
