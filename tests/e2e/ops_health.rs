//! Health checks, hooks, metrics and link monitoring, with the real binaries.
//!
//! Link monitoring uses a second interface in each node's namespace (`dum0`, one end of a veth
//! pair whose other end stays in the same namespace) that carries pool addresses only: taking a node's eth0 down would also cut its gossip, which is the cable
//! test of `failover`, not this one.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fechter_lab::Lab;
use serde_json::Value;

use crate::common::{CONVERGE, add_pool, wait_for_membership, wait_for_spread};

/// The port node 0 serves metrics on.
const METRICS_PORT: u16 = 9464;

fn write_script(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// An HTTP/1.0 request from the client's namespace; returns the raw response.
fn http_from_client(lab: &Lab, address: IpAddr, port: u16, request_line: &str) -> Result<String> {
    let script =
        r#"exec 3<>"/dev/tcp/$0/$1" || exit 1; printf '%s\r\nHost: lab\r\n\r\n' "$2" >&3; timeout 5 cat <&3"#;
    let output = lab.exec(
        &lab.client_ns(),
        "bash",
        &["-c", script, &address.to_string(), &port.to_string(), request_line],
    )?;
    ensure!(
        output.success(),
        "the request {request_line:?} to {address}:{port} failed: {}",
        output.stderr.trim()
    );
    Ok(output.stdout)
}

fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).context("the CLI printed no JSON")
}

#[test]
fn health_checks_hooks_and_metrics_work_end_to_end() {
    crate::common::scenario("health_checks_hooks_and_metrics_work_end_to_end", "opshealth", 3, |lab| {
        let dir = lab.dir().to_owned();
        let sick = dir.join("n1-sick");
        let metrics_address = format!("{}:{METRICS_PORT}", lab.node_ip(0));
        for i in 0..3 {
            let hooks = dir.join(format!("hooks-n{i}"));
            std::fs::create_dir_all(&hooks)?;
            let log = dir.join(format!("hooks-n{i}.log"));
            write_script(
                &hooks.join("10-record"),
                &format!(
                    "echo \"$FECHTER_EVENT $FECHTER_ADDRESS/$FECHTER_PREFIX_LEN $FECHTER_INTERFACE $FECHTER_NODE_ID\" >> {}",
                    log.display()
                ),
            )?;
            // A release hook that hangs: it must delay neither the failover nor the acquire hooks
            // of other nodes.
            write_script(
                &hooks.join("00-hang-on-release"),
                "[ \"$FECHTER_EVENT\" = release ] && sleep 60\nexit 0",
            )?;
        }
        let hooks_arg = |i: usize| dir.join(format!("hooks-n{i}")).display().to_string();
        let check = format!("test ! -e {}", sick.display());
        let metrics_url = format!("http://{metrics_address}/metrics");
        lab.start_node_with(0, true, &["--metrics-address", &metrics_address, "--hooks-dir", &hooks_arg(0)])?;
        lab.start_node_with(
            1,
            true,
            &[
                "--check-exec",
                &check,
                "--check-interval",
                "200ms",
                "--check-rise",
                "1",
                "--check-fall",
                "1",
                "--hooks-dir",
                &hooks_arg(1),
                "--hook-timeout",
                "20s",
            ],
        )?;
        // Node 2 checks node 0's metrics endpoint over HTTP and TCP: both pass while node 0 runs.
        lab.start_node_with(
            2,
            true,
            &[
                "--check-http",
                &metrics_url,
                "--check-http-body",
                "fechter_leader",
                "--check-tcp",
                &metrics_address,
                "--hooks-dir",
                &hooks_arg(2),
            ],
        )?;
        wait_for_membership(lab)?;
        let pool = add_pool(lab, 0, 6)?;
        let spread = wait_for_spread(lab, &pool, &[0, 1, 2], "the pool spread over all three nodes")?;
        ensure!(spread.iter().all(|held| held.len() == 2), "not 2/2/2: {spread:?}");

        // Every node ran its acquire hooks with the documented environment.
        for (i, held) in spread.iter().enumerate() {
            let log_path = dir.join(format!("hooks-n{i}.log"));
            let id = lab.node_id(i);
            lab.wait_for(&format!("node {i}'s acquire hooks"), CONVERGE, || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                Ok(held
                    .iter()
                    .all(|address| log.lines().any(|line| line == format!("acquire {address}/32 eth0 {id}"))))
            })?;
        }

        // The metrics endpoint answers from the client's namespace.
        let scrape = http_from_client(lab, lab.node_ip(0).into(), METRICS_PORT, "GET /metrics HTTP/1.0")?;
        ensure!(scrape.starts_with("HTTP/1.1 200 OK"), "scrape: {scrape}");
        for line in [
            "fechter_addresses_held 2",
            "fechter_pool_addresses 6",
            "fechter_leader 1",
            "fechter_eligible 1",
            "fechter_nodes{liveness=\"alive\"} 3",
            "fechter_gossip_dropped_datagrams_total{reason=\"auth_failure\"} 0",
        ] {
            ensure!(scrape.lines().any(|l| l == line), "the scrape lacks {line:?}:\n{scrape}");
        }
        let acquisitions = scrape
            .lines()
            .find_map(|l| l.strip_prefix("fechter_acquisitions_total "))
            .and_then(|value| value.parse::<u64>().ok());
        ensure!(acquisitions.is_some_and(|count| count >= 2), "acquisitions: {acquisitions:?}\n{scrape}");
        let phi = format!("fechter_peer_phi{{peer=\"{}\"}} ", lab.node_id(1));
        ensure!(scrape.lines().any(|l| l.starts_with(&phi)), "no phi for node 1:\n{scrape}");
        ensure!(
            scrape.lines().any(|l| l.starts_with("fechter_gossip_bytes_total{direction=\"received\"} ")
                && !l.ends_with(" 0")),
            "no gossip bytes received:\n{scrape}"
        );
        let missing = http_from_client(lab, lab.node_ip(0).into(), METRICS_PORT, "GET /nothing HTTP/1.0")?;
        ensure!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = http_from_client(lab, lab.node_ip(0).into(), METRICS_PORT, "POST /metrics HTTP/1.0")?;
        ensure!(post.starts_with("HTTP/1.1 405 "), "{post}");

        // Node 1's check fails: it gives everything up at once, and says why.
        std::fs::write(&sick, b"sick")?;
        let failed_at = Instant::now();
        let cut = wait_for_spread(lab, &pool, &[0, 2], "node 1 to give everything up")?;
        let failover = failed_at.elapsed();
        ensure!(cut[0].len() == 3 && cut[2].len() == 3, "not 3/3: {cut:?}");
        // The hanging release hook (20 s per address) would show here if hooks delayed failover.
        ensure!(failover < Duration::from_secs(15), "failing over took {failover:?}");
        let check_name = format!("exec:{check}");
        lab.wait_for("node 0's info to show node 1's failing check", CONVERGE, || {
            let info = json(&lab.cli_ok(0, &["info", "--json"])?)?;
            let peers = info["peers"].as_array().ok_or_else(|| anyhow!("no peers: {info}"))?;
            let peer = peers
                .iter()
                .find(|peer| peer["id"] == lab.node_id(1).as_str())
                .ok_or_else(|| anyhow!("node 1 missing: {info}"))?;
            Ok(peer["eligible"] == false
                && peer["health"]["healthy"] == false
                && peer["health"]["failing_checks"][0] == check_name.as_str())
        })?;
        let local = json(&lab.cli_ok(1, &["info", "--json"])?)?;
        ensure!(local["local"]["health"]["healthy"] == false, "node 1's own info: {local}");
        let status = json(&lab.cli_ok(2, &["status", "--json"])?)?;
        let health = status["health"].as_array().ok_or_else(|| anyhow!("no health in status: {status}"))?;
        ensure!(health.len() == 3, "status --json lists every live node's health: {status}");
        ensure!(
            health.iter().any(|node| node["id"] == lab.node_id(1).as_str() && node["healthy"] == false),
            "status --json shows node 1 unhealthy: {status}"
        );
        ensure!(
            health.iter().any(|node| node["id"] == lab.node_id(2).as_str() && node["healthy"] == true),
            "node 2's HTTP and TCP checks pass: {status}"
        );
        for i in [0, 2] {
            let log_path = dir.join(format!("hooks-n{i}.log"));
            let id = lab.node_id(i);
            let taken: BTreeSet<IpAddr> = cut[i].difference(&spread[i]).copied().collect();
            lab.wait_for(&format!("node {i}'s acquire hooks for node 1's addresses"), CONVERGE, || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                Ok(taken
                    .iter()
                    .all(|address| log.lines().any(|line| line == format!("acquire {address}/32 eth0 {id}"))))
            })?;
        }
        let scrape = http_from_client(lab, lab.node_ip(0).into(), METRICS_PORT, "GET /metrics HTTP/1.0")?;
        ensure!(scrape.lines().any(|l| l == "fechter_addresses_held 3"), "{scrape}");

        // The check passes again: node 1 takes its share back.
        std::fs::remove_file(&sick)?;
        let back = wait_for_spread(lab, &pool, &[0, 1, 2], "2/2/2 after node 1 recovered")?;
        ensure!(back.iter().all(|held| held.len() == 2), "not 2/2/2: {back:?}");
        Ok(())
    });
}

/// The fechter-owned addresses on `interface` in node `i`'s namespace.
fn held_on(lab: &Lab, i: usize, interface: &str) -> Result<BTreeSet<IpAddr>> {
    let output = lab.exec(lab.node_ns(i), "ip", &["-j", "addr", "show", "dev", interface])?;
    ensure!(output.success(), "ip addr show dev {interface}: {}", output.stderr.trim());
    let links: Value = serde_json::from_str(&output.stdout).context("ip -j printed no JSON")?;
    let mut held = BTreeSet::new();
    for info in links[0]["addr_info"].as_array().into_iter().flatten() {
        if info["scope"] == "link" {
            continue;
        }
        let Some(local) = info["local"].as_str() else { continue };
        held.insert(local.parse().with_context(|| format!("bad address {local:?}"))?);
    }
    Ok(held)
}

fn ip_in(lab: &Lab, i: usize, args: &[&str]) -> Result<()> {
    let output = lab.exec(lab.node_ns(i), "ip", args)?;
    if !output.success() {
        bail!("ip {} in node {i}: {}", args.join(" "), output.stderr.trim());
    }
    Ok(())
}

#[test]
fn a_link_that_goes_down_hands_over_only_its_own_addresses() {
    crate::common::scenario("a_link_that_goes_down_hands_over_only_its_own_addresses", "opslink", 3, |lab| {
        for i in 0..3 {
            ip_in(lab, i, &["link", "add", "dum0", "type", "veth", "peer", "name", "dum0p"])?;
            ip_in(lab, i, &["link", "set", "dum0p", "up"])?;
            ip_in(lab, i, &["link", "set", "dum0", "up"])?;
        }
        crate::common::start_all(lab, true)?;
        wait_for_membership(lab)?;
        let eth0_pool = add_pool(lab, 0, 3)?;
        let dummy_pool: Vec<IpAddr> = (0..3).map(|k| lab.vip(50 + k)).collect();
        for address in &dummy_pool {
            lab.cli_ok(0, &["add-address", &format!("dum0:{address}")])?;
        }
        let on_dummies = |lab: &Lab| -> Result<Vec<BTreeSet<IpAddr>>> {
            (0..3).map(|i| held_on(lab, i, "dum0")).collect()
        };
        lab.wait_for("all six addresses held, two per node", CONVERGE, || {
            let eth0 = lab.holdings()?;
            let dummies = on_dummies(lab)?;
            let total: usize = eth0.iter().chain(&dummies).map(BTreeSet::len).sum();
            Ok(total == 6 && (0..3).all(|i| eth0[i].len() + dummies[i].len() == 2))
        })?;

        ip_in(lab, 1, &["link", "set", "dum0", "down"])?;
        lab.wait_for("node 1's dum0 addresses to move to nodes 0 and 2", CONVERGE, || {
            let dummies = on_dummies(lab)?;
            let held: BTreeSet<IpAddr> = dummies.iter().flatten().copied().collect();
            Ok(dummies[1].is_empty() && held == dummy_pool.iter().copied().collect())
        })?;
        // eth0's addresses stay held once each (one may move for the balance of the whole pool).
        let eth0_after = lab.holdings()?;
        for address in &eth0_pool {
            let holders = eth0_after.iter().filter(|held| held.contains(address)).count();
            ensure!(holders == 1, "{address} held {holders} times: {eth0_after:?}");
        }
        lab.wait_for("node 0's info to show node 1's dum0 down", CONVERGE, || {
            let info = json(&lab.cli_ok(0, &["info", "--json"])?)?;
            let peers = info["peers"].as_array().ok_or_else(|| anyhow!("no peers: {info}"))?;
            Ok(peers.iter().any(|peer| {
                peer["id"] == lab.node_id(1).as_str()
                    && peer["eligible"] == true
                    && peer["health"]["down_interfaces"][0] == "dum0"
            }))
        })?;

        ip_in(lab, 1, &["link", "set", "dum0", "up"])?;
        lab.wait_for("two addresses per node again, none twice", CONVERGE, || {
            let eth0 = lab.holdings()?;
            let dummies = on_dummies(lab)?;
            let total: usize = eth0.iter().chain(&dummies).map(BTreeSet::len).sum();
            Ok(total == 6 && (0..3).all(|i| eth0[i].len() + dummies[i].len() == 2))
        })?;
        Ok(())
    });
}
