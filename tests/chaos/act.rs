//! Carrying out the schedule on a [`Lab`]: faults in, faults healed, pool changes through the
//! CLI, each logged with its time and recorded in the shared model.
//!
//! The model changes before a fault is injected and after it is healed, so that a sample taken
//! during the change always sees the more lenient state: a node is out of the counts before its
//! fault bites, and back in only once the heal is done.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fechter_lab::{GOSSIP_PORT, Lab, run_with_timeout};

use crate::judge::Violation;
use crate::observe::{SharedModel, lock};
use crate::say;
use crate::schedule::Action;
use crate::world::Fault;

/// The nft table every partition rule of the harness lives in, one per node namespace.
const NFT_TABLE: &str = "fechter_chaos";

/// How long one nft invocation may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts and acknowledgements of one kind of pool change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Commands run.
    pub(crate) attempted: u32,
    /// Commands that exited 0.
    pub(crate) acknowledged: u32,
}

/// Runs actions against a lab and keeps the shared model in step.
#[derive(Debug)]
pub(crate) struct Executor<'lab> {
    lab: &'lab mut Lab,
    model: SharedModel,
    clock: Instant,
    daemon_args: Vec<String>,
    /// Failures of the harness or of a daemon command that must not fail.
    pub(crate) errors: Vec<Violation>,
    /// Faults injected, by kind.
    pub(crate) faults: BTreeMap<&'static str, u32>,
    /// Pool changes, by command.
    pub(crate) pool_changes: BTreeMap<&'static str, Tally>,
}

impl<'lab> Executor<'lab> {
    /// An executor over `lab` whose times count from `clock`; daemons it starts get
    /// `daemon_args` on top of the lab's own.
    pub(crate) fn new(
        lab: &'lab mut Lab,
        model: SharedModel,
        clock: Instant,
        daemon_args: Vec<String>,
    ) -> Executor<'lab> {
        Executor {
            lab,
            model,
            clock,
            daemon_args,
            errors: Vec::new(),
            faults: BTreeMap::new(),
            pool_changes: BTreeMap::new(),
        }
    }

    /// The time on the run's clock.
    pub(crate) fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// The lab.
    pub(crate) fn lab(&self) -> &Lab {
        self.lab
    }

    fn log(&self, line: &str) {
        say(&format!("[{:>8.2}s] {line}", self.now().as_secs_f64()));
    }

    fn error(&mut self, what: String) {
        self.log(&format!("ERROR {what}"));
        self.errors.push(Violation { kind: "harness", started: self.now(), ended: None, detail: what });
    }

    /// Performs one scheduled action.
    pub(crate) fn perform(&mut self, action: &Action) {
        self.check_daemons();
        match action {
            Action::Inject { id, fault } => {
                self.log(&format!("fault #{id} inject: {fault}"));
                *self.faults.entry(fault.kind()).or_default() += 1;
                lock(&self.model).world.inject(fault);
                if let Err(error) = self.inject(fault) {
                    self.error(format!("injecting fault #{id} ({fault}): {error:#}"));
                }
                if !fault.lasts() {
                    self.healed(fault);
                }
            }
            Action::Heal { id, fault } => {
                self.log(&format!("fault #{id} heal:   {fault}"));
                if let Err(error) = self.heal(fault) {
                    self.error(format!("healing fault #{id} ({fault}): {error:#}"));
                }
                self.healed(fault);
            }
            Action::Add { via, vip } => self.change_pool(*via, self.lab.vip(*vip), true),
            Action::Remove { via, vip } => self.change_pool(*via, self.lab.vip(*vip), false),
        }
    }

    fn healed(&mut self, fault: &Fault) {
        let now = self.now();
        let mut model = lock(&self.model);
        model.world.heal(fault, now);
        for node in fault.nodes() {
            model.pool.release_pending(node, now);
        }
    }

    fn inject(&mut self, fault: &Fault) -> Result<()> {
        match fault {
            Fault::Kill(node) => self.lab.kill_node(*node),
            Fault::Restart(node) => {
                if self.lab.daemon_running(*node) {
                    self.lab.kill_node(*node)?;
                }
                self.start(*node)
            }
            Fault::PullCable(node) => self.lab.pull_cable(*node),
            Fault::Partition(members) => self.partition(members, false),
            Fault::OneWayPartition(members) => self.partition(members, true),
            Fault::GatewayLost(node) => self.lab.blackhole_gateway(*node),
            Fault::Down(node) => self.lab.cli_ok(*node, &["down"]).map(drop),
        }
    }

    fn heal(&mut self, fault: &Fault) -> Result<()> {
        match fault {
            Fault::Kill(node) => self.start(*node),
            Fault::Restart(_) => Ok(()),
            Fault::PullCable(node) => self.lab.plug_cable(*node),
            Fault::Partition(members) | Fault::OneWayPartition(members) => {
                members.iter().try_for_each(|&member| self.unpartition(member))
            }
            Fault::GatewayLost(node) => self.lab.restore_gateway(*node),
            Fault::Down(node) => self.lab.cli_ok(*node, &["up"]).map(drop),
        }
    }

    /// Starts node `node`'s daemon admin-up with the run's extra arguments.
    pub(crate) fn start(&mut self, node: usize) -> Result<()> {
        let args: Vec<&str> = self.daemon_args.iter().map(String::as_str).collect();
        self.lab.start_node_with(node, true, &args)
    }

    /// Drops gossip between `members` and every other node: inbound only when `one_way`, both
    /// directions otherwise. ARP, ICMP and the gateway are untouched.
    pub(crate) fn partition(&self, members: &BTreeSet<usize>, one_way: bool) -> Result<()> {
        let others: Vec<String> = (0..self.lab.node_count())
            .filter(|node| !members.contains(node))
            .map(|node| self.lab.node_ip(node).to_string())
            .collect();
        let others = others.join(", ");
        let mut script = format!(
            "table inet {NFT_TABLE} {{\n\
             \tchain input {{ type filter hook input priority 0; policy accept; \
             ip saddr {{ {others} }} udp dport {GOSSIP_PORT} drop; }}\n"
        );
        if !one_way {
            let _ = writeln!(
                script,
                "\tchain output {{ type filter hook output priority 0; policy accept; \
                 ip daddr {{ {others} }} udp dport {GOSSIP_PORT} drop; }}"
            );
        }
        script.push_str("}\n");
        for &member in members {
            let ns = self.lab.node_ns(member);
            let output = run_with_timeout(
                Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
                Some(&script),
                NFT_TIMEOUT,
            )?;
            if !output.success() {
                bail!("nft in {ns} failed: {}", output.stderr.trim());
            }
        }
        Ok(())
    }

    /// Removes node `node`'s partition rules.
    pub(crate) fn unpartition(&self, node: usize) -> Result<()> {
        let ns = self.lab.node_ns(node);
        let output = run_with_timeout(
            Command::new("ip").args(["netns", "exec", ns, "nft", "delete", "table", "inet", NFT_TABLE]),
            None,
            NFT_TIMEOUT,
        )?;
        if !output.success() {
            bail!("nft delete in {ns} failed: {}", output.stderr.trim());
        }
        Ok(())
    }

    fn change_pool(&mut self, via: usize, address: IpAddr, add: bool) {
        let command = if add { "add-address" } else { "remove-address" };
        let argument = format!("eth0:{address}");
        let outcome = self.lab.cli(via, &[command, &argument]);
        let now = self.now();
        let tally = self.pool_changes.entry(command).or_default();
        tally.attempted += 1;
        let verdict = match outcome {
            Ok(output) if output.success() => {
                tally.acknowledged += 1;
                let mut model = lock(&self.model);
                if add {
                    let reachable = model.world.reaches_eligible(via);
                    model.pool.added(address, now, via, reachable);
                    if reachable {
                        "acknowledged".to_owned()
                    } else {
                        "acknowledged (node cut off)".to_owned()
                    }
                } else {
                    model.pool.removed(address);
                    "acknowledged".to_owned()
                }
            }
            Ok(output) => format!("refused: {}", output.stderr.trim()),
            Err(error) => {
                lock(&self.model).pool.uncertain(address);
                format!("outcome unknown: {error:#}")
            }
        };
        self.log(&format!("pool: `fechter {command} {argument}` through n{via}: {verdict}"));
    }

    /// Flags and restarts every daemon the model says runs but that exited by itself.
    pub(crate) fn check_daemons(&mut self) {
        for node in 0..self.lab.node_count() {
            let expected = lock(&self.model).world.running(node);
            if expected && !self.lab.daemon_running(node) {
                let tail = self.lab.log_tail(node, 15);
                self.errors.push(Violation {
                    kind: "crash",
                    started: self.now(),
                    ended: None,
                    detail: format!("n{node}'s daemon exited by itself; log tail:\n{tail}"),
                });
                self.log(&format!("ERROR n{node}'s daemon exited by itself; starting it again"));
                if let Err(error) = self.start(node) {
                    self.error(format!("restarting n{node}: {error:#}"));
                }
            }
        }
    }

    /// Heals every fault still applied and makes sure every daemon runs.
    pub(crate) fn heal_everything(&mut self) {
        self.check_daemons();
        let faults = lock(&self.model).world.applied_faults();
        for fault in faults {
            self.log(&format!("final heal: {fault}"));
            if let Err(error) = self.heal(&fault) {
                self.error(format!("final heal of {fault}: {error:#}"));
            }
            self.healed(&fault);
        }
    }
}
