//! `fechter-chaos`: a seeded, reproducible chaos run over a namespace LAN of real fechterd nodes,
//! with its invariants checked from outside, and the split-brain and deaf-node scenarios.
//!
//! ```text
//! fechter-chaos [--seed S] [--minutes M] [--nodes N] [--quorum Q]
//!               [--conflict-bound-ms MS] [--outage-bound-ms MS] [--keep-logs DIR]
//! fechter-chaos --scenario split-brain [--quorum 3]
//! fechter-chaos --scenario deaf-node [--conflict-bound-ms MS] [--outage-bound-ms MS]
//! ```
//!
//! The chaos run injects a fault or changes the pool every 2 to 6 s (kill -9, restart, cable
//! pulled, two-way and one-way gossip partitions, gateway blackholed, `down`, `add-address`,
//! `remove-address`), heals each fault 1 to 10 s later, and keeps at least one node healthy and
//! eligible. Every 100 ms it reads every node's eth0 and the client's pings, and checks:
//!
//! - (a) no address on two nodes that hear each other for longer than the double-holding bound
//!   (default 3 s). A partition that leaves both halves seeing the gateway makes both hold
//!   addresses: that is the documented split brain, excused while the partition lasts unless a
//!   majority quorum is set; a killed daemon's interface keeps its addresses (nothing can release
//!   them) and a pulled cable takes a node off the LAN, so neither counts. After a heal the
//!   double holding must be gone within the bound: peers are heard again within a gossip round or
//!   two, and the next reconcile (on the change, or the 1 s timer) releases the copy not
//!   assigned; 3 s leaves a second of margin for this noisy machine.
//! - (b) no active address unanswered by the client for longer than the outage bound (default
//!   3 s) while some node is eligible (running, up, cable in, gateway reachable, quorum seen, and
//!   healed for 2 s so it had time to notice): detection takes about 0.5 s, the leader's move and
//!   the new holder's reconcile and announcement well under a second, and the pings arrive every
//!   100 ms.
//! - (c) no acknowledged pool change lost: after the run everything is healed, the cluster must
//!   settle, and every node's `status --json` must keep every add and remove that exited 0, in
//!   order, with every address held exactly once, loads within one, and the client reaching each
//!   address at its holder's MAC.
//!
//! It prints every step with its time, `faults injected: N` with per-kind counts, and
//! `violations: N` with their details, and exits 1 if there were any. The schedule depends only on
//! the seed and the options; the outcome's timings vary from run to run.
//!
//! The split-brain scenario (see `split_brain.rs`) cuts `{n0,n1} | {n2,n3,n4}` both ways with or
//! without a majority quorum. The deaf-node scenario (see `deaf_node.rs`, five nodes, no quorum)
//! makes n4 hear nobody while everyone still hears it: nothing may move for it, an address added
//! meanwhile and the addresses of a node killed meanwhile must be served by the nodes that hear
//! the leader within the outage bound, and after the heal the deaf node's extra copies must go
//! within the double-holding bound before the cluster settles. Both watch the invariants (a) and
//! (b) above throughout and report like the chaos run.

mod act;
mod chaos;
mod converge;
mod deaf_node;
mod judge;
mod ledger;
mod observe;
mod prng;
mod schedule;
mod split_brain;
mod world;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fechter_lab::Lab;

use crate::chaos::Outcome;
use crate::judge::Bounds;

/// Writes a line to stdout; a terminal that went away must not stop the run or its cleanup.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Which run to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Chaos,
    SplitBrain,
    DeafNode,
}

/// The options of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    scenario: Scenario,
    /// The seed of the schedule.
    pub(crate) seed: u64,
    /// How long the chaos phase lasts.
    pub(crate) length: Duration,
    /// How many nodes.
    pub(crate) nodes: usize,
    /// The daemons' `--quorum` (0 = off).
    pub(crate) quorum: usize,
    /// The bounds of the invariants.
    pub(crate) bounds: Bounds,
    keep_logs: Option<PathBuf>,
}

impl Settings {
    /// Extra daemon arguments for the run.
    pub(crate) fn daemon_args(&self) -> Vec<String> {
        if self.quorum == 0 { Vec::new() } else { vec!["--quorum".to_owned(), self.quorum.to_string()] }
    }
}

const USAGE: &str = "usage: fechter-chaos [--seed S] [--minutes M] [--nodes N] [--quorum Q] \
[--conflict-bound-ms MS] [--outage-bound-ms MS] [--keep-logs DIR] [--scenario chaos|split-brain|deaf-node]";

/// Reads the command line (without the program name); `Ok(None)` means help was asked for.
fn parse(args: &[String]) -> Result<Option<Settings>> {
    let mut settings = Settings {
        scenario: Scenario::Chaos,
        seed: 1,
        length: Duration::from_secs(60),
        nodes: 5,
        quorum: 0,
        bounds: Bounds {
            conflict: Duration::from_secs(3),
            outage: Duration::from_secs(3),
            recovery: Duration::from_secs(2),
        },
        keep_logs: None,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = rest.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number =
            || value.parse::<u64>().with_context(|| format!("{flag} takes a whole number, not {value:?}"));
        match flag.as_str() {
            "--seed" => settings.seed = number()?,
            "--minutes" => {
                let minutes: f64 =
                    value.parse().with_context(|| format!("--minutes takes a number, not {value:?}"))?;
                if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
                    bail!("--minutes must be above 0 and at most a day, not {value}");
                }
                settings.length = Duration::from_secs_f64(minutes * 60.0);
            }
            "--nodes" => settings.nodes = usize::try_from(number()?).unwrap_or(usize::MAX),
            "--quorum" => settings.quorum = usize::try_from(number()?).unwrap_or(usize::MAX),
            "--conflict-bound-ms" => settings.bounds.conflict = Duration::from_millis(number()?),
            "--outage-bound-ms" => settings.bounds.outage = Duration::from_millis(number()?),
            "--keep-logs" => settings.keep_logs = Some(PathBuf::from(value)),
            "--scenario" => {
                settings.scenario = match value.as_str() {
                    "chaos" => Scenario::Chaos,
                    "split-brain" => Scenario::SplitBrain,
                    "deaf-node" => Scenario::DeafNode,
                    other => bail!("unknown scenario {other:?}: chaos, split-brain or deaf-node"),
                }
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    if !(3..=20).contains(&settings.nodes) {
        bail!("--nodes must be 3 to 20, not {}", settings.nodes);
    }
    if settings.quorum > settings.nodes {
        bail!("--quorum {} can never be met by {} nodes", settings.quorum, settings.nodes);
    }
    if settings.scenario == Scenario::SplitBrain && settings.nodes != 5 {
        bail!("the split-brain scenario runs on exactly 5 nodes");
    }
    if settings.scenario == Scenario::DeafNode && (settings.nodes != deaf_node::NODES || settings.quorum != 0)
    {
        bail!("the deaf-node scenario runs on exactly {} nodes without a quorum", deaf_node::NODES);
    }
    Ok(Some(settings))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match parse(&args) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            say(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            say(&format!("fechter-chaos: {error:#}"));
            return ExitCode::from(2);
        }
    };
    let mut lab = None;
    let result = match settings.scenario {
        Scenario::Chaos => chaos::run(&settings, &mut lab),
        Scenario::SplitBrain => split_brain::run(&settings, &mut lab),
        Scenario::DeafNode => deaf_node::run(&settings, &mut lab),
    };
    let failed = match &result {
        Ok(outcome) => {
            report(outcome);
            !outcome.violations.is_empty()
        }
        Err(error) => {
            say(&format!("fechter-chaos could not complete the run: {error:#}"));
            true
        }
    };
    if let Some(lab) = &lab
        && (failed || settings.keep_logs.is_some())
    {
        let keep = settings.keep_logs.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("fechter-chaos-seed{}-{}", settings.seed, std::process::id()))
        });
        match keep_logs(lab, &keep) {
            Ok(()) => say(&format!("node logs kept in {}", keep.display())),
            Err(error) => say(&format!("cannot keep the node logs: {error:#}")),
        }
    }
    // Dropping the lab kills every daemon and deletes every namespace it made.
    drop(lab);
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// How many notable episodes the report lists.
const MAX_NOTES: usize = 60;

fn report(outcome: &Outcome) {
    let injected: u32 = outcome.faults.values().sum();
    say(&format!("faults injected: {injected}"));
    for (kind, count) in &outcome.faults {
        say(&format!("  {kind}: {count}"));
    }
    for (command, tally) in &outcome.pool_changes {
        say(&format!("  {command}: {} ({} acknowledged)", tally.attempted, tally.acknowledged));
    }
    let figures = &outcome.figures;
    let longest = |lengths: &[Duration]| lengths.last().map_or(0.0, Duration::as_secs_f64);
    say(&format!(
        "samples: {}; double-holding episodes on nodes that hear each other: {} (longest {:.2}s); samples with \
         partition-excused split brain: {}; outages over 0.3s: {} (longest {:.2}s)",
        figures.samples,
        figures.conflicts.len(),
        longest(&figures.conflicts),
        figures.excused_conflict_samples,
        figures.outages.len(),
        longest(&figures.outages)
    ));
    let noted = figures.notes.len();
    for (_, note) in figures.notes.iter().take(MAX_NOTES) {
        say(&format!("  note: {note}"));
    }
    if noted > MAX_NOTES {
        say(&format!("  ... and {} more notes", noted - MAX_NOTES));
    }
    if let Some(settled) = outcome.settled_after {
        say(&format!("settled {:.1}s after the final heal", settled.as_secs_f64()));
    }
    say(&format!("violations: {}", outcome.violations.len()));
    for violation in &outcome.violations {
        say(&format!("  {violation}"));
    }
}

/// Copies the lab's node logs to `dir`, since the lab deletes its own directory when dropped.
fn keep_logs(lab: &Lab, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for node in 0..lab.node_count() {
        let from = lab.log_path(node);
        let to = dir.join(format!("n{node}.log"));
        std::fs::copy(from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_are_read_and_checked() {
        let settings =
            parse(&args("--seed 9 --minutes 0.5 --quorum 3 --outage-bound-ms 4000")).unwrap().unwrap();
        assert_eq!(settings.seed, 9);
        assert_eq!(settings.length, Duration::from_secs(30));
        assert_eq!(settings.nodes, 5);
        assert_eq!(settings.bounds.outage, Duration::from_secs(4));
        assert_eq!(settings.daemon_args(), vec!["--quorum", "3"]);
        assert_eq!(parse(&args("--help")).unwrap(), None);
        assert!(parse(&args("--scenario split-brain --nodes 4")).is_err());
        assert!(parse(&args("--scenario deaf-node --nodes 4")).is_err());
        assert!(parse(&args("--scenario deaf-node --quorum 3")).is_err());
        assert_eq!(parse(&args("--scenario deaf-node")).unwrap().unwrap().scenario, Scenario::DeafNode);
        for bad in
            ["--seed", "--seed x", "--minutes 0", "--nodes 2", "--quorum 6", "--bogus 1", "--scenario x"]
        {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse(&args("")).unwrap().unwrap().length, Duration::from_secs(60));
    }
}
