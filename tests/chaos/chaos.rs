//! The chaos run: a five-node LAN, a seeded schedule of faults and pool changes, the invariants
//! watched from outside throughout, then everything healed and the settled cluster checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fechter_lab::Lab;

use crate::act::{Executor, Tally};
use fechter_lab::spread_problem;

use crate::converge::{client_problems, describe, final_problem, membership_problem, settle};
use crate::judge::{Figures, Violation};
use crate::ledger::ExpectedPool;
use crate::observe::{Model, Observer, Targets, lock};
use crate::schedule::{POOL_MAX, Shape, plan};
use crate::world::World;
use crate::{Settings, say};

/// How many addresses the pool starts with.
const INITIAL_POOL: u8 = 6;

/// How long the cluster gets to settle (at the start and after the final heal): seconds are
/// expected, but the machine is a noisy two-core box.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What a chaos run found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Faults injected, by kind.
    pub(crate) faults: BTreeMap<&'static str, u32>,
    /// Pool changes, by command.
    pub(crate) pool_changes: BTreeMap<&'static str, Tally>,
    /// Everything that broke an invariant or the harness.
    pub(crate) violations: Vec<Violation>,
    /// The figures of the observer.
    pub(crate) figures: Figures,
    /// How long the cluster took to settle after the final heal.
    pub(crate) settled_after: Option<Duration>,
}

/// Runs the chaos schedule on a fresh lab; `lab_out` receives the lab so the caller can keep its
/// logs before it is dropped.
pub(crate) fn run(settings: &Settings, lab_out: &mut Option<Lab>) -> Result<Outcome> {
    let shape = Shape {
        seed: settings.seed,
        nodes: settings.nodes,
        quorum: settings.quorum,
        length: settings.length,
        initial_pool: INITIAL_POOL,
    };
    let schedule = plan(shape);
    say(&format!(
        "chaos: seed {}, {} nodes, quorum {}, {:.1} minutes; {} scheduled steps; bounds: double holding {:?}, \
         outage {:?}",
        settings.seed,
        settings.nodes,
        settings.quorum,
        settings.length.as_secs_f64() / 60.0,
        schedule.len(),
        settings.bounds.conflict,
        settings.bounds.outage
    ));
    let lab = lab_out.insert(Lab::new("chaos", settings.nodes)?);
    say(&format!("lab {} in {}", lab.name(), lab.dir().display()));
    let model = Arc::new(Mutex::new(Model {
        world: World::new(settings.nodes, settings.quorum),
        pool: ExpectedPool::default(),
    }));
    let mut setup = Executor::new(lab, Arc::clone(&model), Instant::now(), settings.daemon_args());
    for node in 0..settings.nodes {
        setup.start(node)?;
    }
    let lab = setup.lab();
    settle(SETTLE_TIMEOUT, Duration::from_millis(300), || membership_problem(lab))
        .map_err(|problem| anyhow::anyhow!("the nodes never all saw each other: {problem}"))?;
    let initial: Vec<_> = (0..INITIAL_POOL).map(|k| lab.vip(k)).collect();
    for &address in &initial {
        lab.add_address(0, address)?;
        lock(&model).pool.added(address, Duration::ZERO, 0, true);
    }
    let all: Vec<usize> = (0..settings.nodes).collect();
    settle(SETTLE_TIMEOUT, Duration::from_millis(200), || {
        Ok(spread_problem(&lab.holdings()?, &initial, &all))
    })
    .map_err(|problem| anyhow::anyhow!("the initial pool never spread: {problem}"))?;
    say(&format!("initial pool spread: {}", describe(&lab.holdings()?)));

    let clock = Instant::now();
    let targets = Targets {
        nodes: (0..settings.nodes).map(|node| (lab.node_ns(node).to_owned(), lab.node_ip(node))).collect(),
        client_ns: lab.client_ns(),
        addresses: (0..POOL_MAX).map(|k| lab.vip(k)).collect(),
    };
    let observer = Observer::start(clock, targets, Arc::clone(&model), settings.bounds)?;
    let lab = lab_out.as_mut().context("the lab vanished")?;
    let mut executor = Executor::new(lab, Arc::clone(&model), clock, settings.daemon_args());
    // Let the pingers see every address once before the first fault.
    thread::sleep(Duration::from_millis(500));
    for event in &schedule {
        let now = executor.now();
        if event.at > now {
            thread::sleep(event.at - now);
        }
        executor.perform(&event.action);
    }
    executor.heal_everything();
    let healed_at = executor.now();
    say(&format!("[{:>8.2}s] everything healed; waiting for the cluster to settle", healed_at.as_secs_f64()));

    let expected = lock(&model).pool.clone();
    let lab = executor.lab();
    let settled = settle(SETTLE_TIMEOUT, Duration::from_millis(500), || final_problem(lab, &expected));
    let mut outcome = Outcome::default();
    let (violations, figures) = observer.finish();
    outcome.violations.extend(violations);
    outcome.figures = figures;
    match settled {
        Ok(took) => {
            say(&format!(
                "settled {:.1}s after the final heal: {}",
                took.as_secs_f64(),
                describe(&lab.holdings()?)
            ));
            outcome.settled_after = Some(took);
            let pool = lab.status(0)?.pool();
            for problem in client_problems(lab, &pool)? {
                outcome.violations.push(final_violation(executor.now(), problem));
            }
        }
        Err(problem) => {
            let holdings = lab.holdings().map(|holdings| describe(&holdings)).unwrap_or_default();
            outcome.violations.push(final_violation(
                executor.now(),
                format!(
                    "not settled {SETTLE_TIMEOUT:?} after the final heal: {problem}; holdings: {holdings}"
                ),
            ));
        }
    }
    outcome.violations.append(&mut executor.errors);
    outcome.violations.sort_by_key(|violation| violation.started);
    outcome.faults = std::mem::take(&mut executor.faults);
    outcome.pool_changes = std::mem::take(&mut executor.pool_changes);
    Ok(outcome)
}

fn final_violation(at: Duration, detail: String) -> Violation {
    Violation { kind: "final", started: at, ended: None, detail }
}
