//! The README demo: a real three-node fechter cluster in network namespaces, a pulled cable, and
//! the failover time as the client sees it.
//!
//! Run as root: `sudo ./target/release/fechter-demo`. Everything it creates lives in namespaces
//! named `flab-demo-<pid>-...` and is removed at the end, also when the demo is interrupted.
//!
//! Ctrl-C without unsafe code or a signal crate: the demo re-runs itself as a child in its own
//! process group, so the terminal's SIGINT reaches only the parent, which dies of it. The child,
//! which owns the lab, notices that its parent is gone, stops at the next step, and its lab's drop
//! kills the daemons and deletes the namespaces. Output is written with errors ignored, because
//! after Ctrl-C the terminal may already be gone, and cleaning up matters more than reporting.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::process::{CommandExt as _, parent_id};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fechter_lab::{Lab, effective_uid};

/// The hidden argument that makes the process the child that runs the demo.
const CHILD_FLAG: &str = "--run-demo-in-this-process";

/// How many nodes the demo cluster has, and how many addresses it shares.
const NODES: usize = 3;
const ADDRESSES: u8 = 6;

/// How long the demo waits for anything before calling it a failure.
const PATIENCE: Duration = Duration::from_secs(60);

/// Set when the parent went away (Ctrl-C): the demo stops at the next step and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(CHILD_FLAG) {
        return run_child();
    }
    match supervise() {
        Ok(code) => code,
        Err(error) => {
            say_error(&format!("fechter-demo: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo in a child process in its own process group and passes on its exit code.
fn supervise() -> Result<ExitCode> {
    if effective_uid() != Some(0) {
        bail!("the demo builds network namespaces and needs root: sudo {}", program_name());
    }
    let exe = std::env::current_exe().context("cannot find the demo's own executable")?;
    let status = Command::new(exe)
        .arg(CHILD_FLAG)
        .process_group(0)
        .status()
        .context("cannot start the demo process")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn program_name() -> String {
    std::env::args().next().unwrap_or_else(|| "fechter-demo".to_owned())
}

fn run_child() -> ExitCode {
    let parent = parent_id();
    thread::spawn(move || {
        while parent_id() == parent {
            thread::sleep(Duration::from_millis(50));
        }
        INTERRUPTED.store(true, Ordering::Relaxed);
    });
    let mut lab = None;
    let outcome = demo(&mut lab);
    if let Err(error) = &outcome {
        if INTERRUPTED.load(Ordering::Relaxed) {
            say("\nInterrupted: stopping the daemons and deleting the namespaces.");
        } else {
            say_error(&format!("\nfechter-demo failed: {error:#}"));
            if let Some(lab) = &lab {
                say_error(&lab.dump_logs());
            }
        }
    }
    if let Some(lab) = lab.take() {
        let name = lab.name().to_owned();
        drop(lab);
        say(&format!("Cleaned up: every process and namespace of {name} is gone."));
    }
    if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn demo(slot: &mut Option<Lab>) -> Result<()> {
    say("fechter demo: a pool of addresses spread over a cluster, moved when a machine dies.\n");
    let lab = slot.insert(Lab::new("demo", NODES)?);
    say(&format!(
        "Built a LAN of network namespaces ({}-*): a bridge, a gateway {}, a client {},\n\
         and {NODES} nodes {}, {} and {}, each cabled to the bridge.",
        lab.name(),
        lab.gateway_ip(),
        lab.client_ip(),
        lab.node_ip(0),
        lab.node_ip(1),
        lab.node_ip(2)
    ));
    for i in 0..NODES {
        step()?;
        lab.start_node(i, true)?;
    }
    say(&format!(
        "Started fechterd on every node, e.g.\n  fechterd -a {} -g {} -s {} -s {} --up\n",
        lab.node_ip(0),
        lab.gateway_ip(),
        lab.node_ip(1),
        lab.node_ip(2)
    ));
    wait("the nodes to find each other", || {
        Ok((0..NODES).all(|i| {
            lab.info(i).is_ok_and(|info| {
                info.peers.len() == NODES - 1 && info.peers.iter().all(|p| p.liveness == "alive")
            })
        }))
    })?;

    let pool: Vec<IpAddr> = (0..ADDRESSES).map(|k| lab.vip(k)).collect();
    for &address in &pool {
        step()?;
        let resource = format!("eth0:{address}");
        say(&format!("$ fechter add-address {resource}"));
        lab.cli_ok(1, &["add-address", &resource])?;
    }
    wait("the addresses to spread over the nodes", || {
        let holdings = lab.holdings()?;
        Ok(pool.iter().all(|address| holdings.iter().filter(|held| held.contains(address)).count() == 1)
            && holdings.iter().all(|held| held.len() == pool.len() / NODES))
    })?;
    wait("every node to agree on the assignment", || {
        Ok(lab.status(0)?.addresses.iter().all(|entry| entry.held_by.len() == 1))
    })?;
    say("\n$ fechter status");
    say(lab.cli_ok(0, &["status"])?.trim_end());

    say("\nThe client pings every address:");
    for &address in &pool {
        step()?;
        let answered = lab.client_ping(address)?;
        say(&format!("  {address}: {}", if answered { "reply" } else { "NO REPLY" }));
    }

    let victim = 1;
    let moved: Vec<IpAddr> = lab.held(victim)?.into_iter().collect();
    let watched = *moved.first().context("the victim holds nothing")?;
    step()?;
    say(&format!(
        "\nPulling the cable of node {} and killing its fechterd (it holds {}).",
        lab.node_ip(victim),
        list(&moved)
    ));
    let pulled = Instant::now();
    lab.pull_cable(victim)?;
    lab.kill_node(victim)?;
    let answered = lab.client_ping_until_reply(watched, Duration::from_secs(30))?;
    let failover = pulled.elapsed();
    match answered {
        Some(_) => say(&format!(
            "The client, pinging {watched} every 10 ms, got its first reply {:.0} ms after the cable was pulled.",
            failover.as_secs_f64() * 1000.0
        )),
        None => bail!("{watched} did not answer within 30 s of the failure"),
    }
    wait("the survivors to hold everything", || {
        let holdings = lab.holdings()?;
        Ok(pool
            .iter()
            .all(|address| (0..NODES).filter(|&i| i != victim && holdings[i].contains(address)).count() == 1))
    })?;
    wait("the survivors to agree", || {
        Ok(lab
            .status(0)?
            .addresses
            .iter()
            .all(|entry| entry.held_by.len() == 1 && entry.held_by.first() != Some(&lab.node_id(victim))))
    })?;
    say(&format!("\n$ fechter status   (on {})", lab.node_ip(0)));
    say(lab.cli_ok(0, &["status"])?.trim_end());
    say("$ fechter info");
    say(lab.cli_ok(0, &["info"])?.trim_end());
    say("\nThe client pings every address again:");
    for &address in &pool {
        step()?;
        let answered = lab.client_ping(address)?;
        say(&format!("  {address}: {}", if answered { "reply" } else { "NO REPLY" }));
    }
    say("");
    Ok(())
}

/// Fails when the demo was interrupted, so it stops and cleans up.
fn step() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Polls `done` every 100 ms until it holds, the demo is interrupted, or [`PATIENCE`] runs out.
fn wait(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        step()?;
        if done().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("gave up waiting for {what} after {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn list(addresses: &[IpAddr]) -> String {
    addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(" and ")
}

/// Writes a line to stdout; a terminal that went away must not stop the cleanup.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Writes a line to stderr, with errors ignored for the same reason as [`say`].
fn say_error(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
