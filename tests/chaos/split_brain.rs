//! The split-brain scenario: `{n0,n1} | {n2,n3,n4}` with both halves still seeing the gateway.
//!
//! Without a quorum both halves believe the other dead and each holds the whole pool: that is the
//! documented split brain, printed here. With `--quorum 3` the minority (which even holds the
//! leader, n0) releases everything and the majority holds the whole pool. Either way, after the
//! heal every address held twice is resolved within the double-holding bound, and the client's
//! neighbour table follows the survivors' announcements without the client asking.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use fechter_lab::Lab;

use crate::act::Executor;
use crate::chaos::Outcome;
use fechter_lab::spread_problem;

use crate::converge::{client_problems, describe, membership_problem, settle};
use crate::judge::Violation;
use crate::ledger::ExpectedPool;
use crate::observe::{Model, Observer, Targets, lock};
use crate::world::{Fault, World, names};
use crate::{Settings, say};

/// The pool: two addresses per node.
const POOL_SIZE: u8 = 10;

/// How long the partition is held once it has taken effect.
const HOLD: Duration = Duration::from_secs(5);

/// How long each phase may take to reach its expected state.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// How soon after the conflicts clear the client's neighbour entries must name the survivors:
/// only an announcement can do that (without one, Linux keeps the old MAC for tens of seconds).
const ANNOUNCE_WINDOW: Duration = Duration::from_secs(4);

/// Runs the scenario on a fresh five-node lab (kept in `lab_out` for its logs).
pub(crate) fn run(settings: &Settings, lab_out: &mut Option<Lab>) -> Result<Outcome> {
    let nodes = 5;
    let minority: BTreeSet<usize> = BTreeSet::from([0, 1]);
    let majority: Vec<usize> = vec![2, 3, 4];
    say(&format!(
        "split brain: {} | {{n2,n3,n4}}, both halves see the gateway, quorum {}",
        names(&minority),
        settings.quorum
    ));
    let lab = lab_out.insert(Lab::new("split", nodes)?);
    say(&format!("lab {} in {}", lab.name(), lab.dir().display()));
    let model = Arc::new(Mutex::new(Model {
        world: World::new(nodes, settings.quorum),
        pool: ExpectedPool::default(),
    }));
    let clock = Instant::now();
    let mut executor = Executor::new(lab, Arc::clone(&model), clock, settings.daemon_args());
    for node in 0..nodes {
        executor.start(node)?;
    }
    let mut outcome = Outcome::default();
    let lab = executor.lab();
    settle(PHASE_TIMEOUT, Duration::from_millis(300), || membership_problem(lab))
        .map_err(|problem| anyhow!("the nodes never all saw each other: {problem}"))?;
    let pool: Vec<IpAddr> = (0..POOL_SIZE).map(|k| lab.vip(k)).collect();
    for &address in &pool {
        lab.add_address(2, address)?;
        lock(&model).pool.added(address, clock.elapsed(), 2, true);
    }
    let all: Vec<usize> = (0..nodes).collect();
    settle(PHASE_TIMEOUT, Duration::from_millis(200), || Ok(spread_problem(&lab.holdings()?, &pool, &all)))
        .map_err(|problem| anyhow!("the pool never spread: {problem}"))?;
    say(&format!("before:    {}", describe(&lab.holdings()?)));
    let targets = Targets {
        nodes: (0..nodes).map(|node| (lab.node_ns(node).to_owned(), lab.node_ip(node))).collect(),
        client_ns: lab.client_ns(),
        addresses: pool.clone(),
    };
    let observer = Observer::start(clock, targets, Arc::clone(&model), settings.bounds)?;

    let cut = Fault::Partition(minority.clone());
    lock(&model).world.inject(&cut);
    executor.partition(&minority, false)?;
    let partitioned_at = Instant::now();
    let lab = executor.lab();
    let quorum = settings.quorum;
    let during = if quorum * 2 > nodes {
        settle(PHASE_TIMEOUT, Duration::from_millis(100), || {
            let mut holdings = lab.holdings()?;
            if let Some(node) = minority.iter().find(|&&node| !holdings[node].is_empty()) {
                return Ok(Some(format!("the minority's n{node} still holds {:?}", holdings[*node])));
            }
            for node in &minority {
                holdings[*node].clear();
            }
            Ok(spread_problem(&holdings, &pool, &majority))
        })
    } else {
        settle(PHASE_TIMEOUT, Duration::from_millis(100), || {
            let holdings = lab.holdings()?;
            for side in [minority.iter().copied().collect::<Vec<_>>(), majority.clone()] {
                let mut half = holdings.clone();
                for node in (0..nodes).filter(|node| !side.contains(node)) {
                    half[node].clear();
                }
                if let Some(problem) = spread_problem(&half, &pool, &side) {
                    return Ok(Some(format!("side {side:?}: {problem}")));
                }
            }
            Ok(None)
        })
    };
    let holdings = lab.holdings()?;
    match &during {
        Ok(took) if quorum * 2 > nodes => say(&format!(
            "with quorum {quorum}: after {:.2}s the minority holds nothing and the majority holds all {POOL_SIZE}: {}",
            took.as_secs_f64(),
            describe(&holdings)
        )),
        Ok(took) => say(&format!(
            "without a majority quorum: after {:.2}s BOTH halves hold all {POOL_SIZE} addresses (documented split \
             brain; the client reaches whichever answered its ARP): {}",
            took.as_secs_f64(),
            describe(&holdings)
        )),
        Err(problem) => outcome.violations.push(violation(clock, format!("during the partition: {problem}"))),
    }
    // The client talks to every address, so each neighbour entry names one of the holders.
    let mut wrong_before = 0;
    for &address in &pool {
        lab.client_ping(address)?;
        let neighbour = lab.client_neighbour(address)?;
        let majority_holder = majority.iter().find(|&&node| holdings[node].contains(&address));
        if let Some(&holder) = majority_holder
            && neighbour != Some(lab.mac(holder)?)
        {
            wrong_before += 1;
        }
    }
    say(&format!(
        "before the heal, the client's neighbour entry for {wrong_before} address(es) names another node than the \
         majority side's holder"
    ));
    // The split holds a while, so the daemons' timers (refresh, gateway pings) run in it too.
    thread::sleep(HOLD);
    let holdings = lab.holdings()?;
    say(&format!("after holding the partition {HOLD:?}: {}", describe(&holdings)));
    let doubled: usize = pool
        .iter()
        .filter(|address| holdings.iter().filter(|held| held.contains(address)).count() > 1)
        .count();

    say(&format!("heal after {:.1}s of partition", partitioned_at.elapsed().as_secs_f64()));
    for &node in &minority {
        executor.unpartition(node)?;
    }
    let healed = Instant::now();
    lock(&model).world.heal(&cut, clock.elapsed());
    let lab = executor.lab();
    let resolved = settle(PHASE_TIMEOUT, Duration::from_millis(50), || {
        let holdings = lab.holdings()?;
        Ok(pool
            .iter()
            .find(|address| holdings.iter().filter(|held| held.contains(address)).count() != 1)
            .map(|address| format!("{address} is not held exactly once: {}", describe(&holdings))))
    });
    match resolved {
        Ok(took) => {
            say(&format!(
                "{doubled} address(es) held twice; every address held exactly once {:.2}s after the heal",
                took.as_secs_f64()
            ));
            if took > settings.bounds.conflict {
                outcome.violations.push(violation(
                    clock,
                    format!(
                        "double holdings took {took:?} to resolve, over the bound {:?}",
                        settings.bounds.conflict
                    ),
                ));
            }
        }
        Err(problem) => outcome.violations.push(violation(clock, format!("after the heal: {problem}"))),
    }
    let macs: Vec<String> = (0..nodes).map(|node| lab.mac(node)).collect::<Result<_>>()?;
    let followed = settle(ANNOUNCE_WINDOW, Duration::from_millis(100), || {
        let holdings = lab.holdings()?;
        for &address in &pool {
            let holder = holdings
                .iter()
                .position(|held| held.contains(&address))
                .context("an address is held nowhere")?;
            let neighbour = lab.client_neighbour(address)?;
            if neighbour.as_ref() != Some(&macs[holder]) {
                return Ok(Some(format!(
                    "the client's entry for {address} is {neighbour:?}, n{holder} holds it"
                )));
            }
        }
        Ok(None)
    });
    match followed {
        Ok(_) => say(&format!(
            "the client's neighbour entries name every holder {:.2}s after the heal, without any client traffic",
            healed.elapsed().as_secs_f64()
        )),
        Err(problem) => outcome.violations.push(violation(clock, format!("announcements: {problem}"))),
    }
    match settle(PHASE_TIMEOUT, Duration::from_millis(200), || {
        Ok(spread_problem(&lab.holdings()?, &pool, &all))
    }) {
        Ok(took) => {
            say(&format!("rebalanced {:.2}s later: {}", took.as_secs_f64(), describe(&lab.holdings()?)))
        }
        Err(problem) => outcome.violations.push(violation(clock, format!("never rebalanced: {problem}"))),
    }
    for problem in client_problems(lab, &pool)? {
        outcome.violations.push(violation(clock, problem));
    }
    let (violations, figures) = observer.finish();
    outcome.violations.extend(violations);
    outcome.violations.append(&mut executor.errors);
    outcome.figures = figures;
    *outcome.faults.entry(cut.kind()).or_default() += 1;
    Ok(outcome)
}

fn violation(clock: Instant, detail: String) -> Violation {
    Violation { kind: "split-brain", started: clock.elapsed(), ended: None, detail }
}
