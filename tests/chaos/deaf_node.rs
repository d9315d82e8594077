//! The deaf-node scenario: n4 stops hearing anyone (a one-way partition: its inbound gossip is
//! dropped, everyone still hears it), and the rest of the cluster carries on around it.
//!
//! A deaf node still looks alive to the others, but it acknowledges none of the leader's decisions.
//! The daemons call such a node unresponsive once it has left a decision unacknowledged for the
//! acknowledgement timeout (1.5 s): the leader gives it nothing new, leaves where they are the addresses it may hold, and stops waiting for it
//! before moving other addresses. The deaf node meanwhile sees no live peer and decides alone that
//! it holds the whole pool; the others ignore such lone decisions, so it only adds copies of its
//! own (the documented split brain of a deaf node, excused while it lasts). Checked from outside,
//! on five nodes without a quorum:
//!
//! 1. a pool of ten addresses spreads;
//! 2. n4 is deafened; for four seconds (detection and the acknowledgement timeout) every address
//!    stays on the node that held it, and the client reaches every address;
//! 3. an address added through n0 is held by one of n0..n3 and answers within the outage bound;
//! 4. n1 dies (kill -9, cable pulled) right after that add, whose decision n4 never acknowledges:
//!    within the outage bound each of n1's addresses is held by one of n0, n2, n3 and answers,
//!    although the move has to stop waiting for n4 (it does after the acknowledgement timeout);
//! 5. n4 hears again and n1 comes back: within the double-holding bound no address is on two
//!    nodes, then the cluster settles on the acknowledged pool, evenly spread, each address
//!    reached by the client at its holder's MAC.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use fechter_lab::{Lab, spread_problem};

use crate::act::Executor;
use crate::chaos::Outcome;
use crate::converge::{client_problems, describe, final_problem, membership_problem, settle};
use crate::judge::{Bounds, Violation};
use crate::ledger::ExpectedPool;
use crate::observe::{Model, Observer, SharedModel, Targets, lock};
use crate::schedule::Action;
use crate::world::{Fault, World, names};
use crate::{Settings, say};

/// How many nodes the scenario runs on.
pub(crate) const NODES: usize = 5;

/// The node that goes deaf.
const DEAF: usize = 4;

/// The node that dies while the deaf node is deaf.
const VICTIM: usize = 1;

/// The node the new address is added through: the leader, with the lowest id.
const ENTRY: usize = 0;

/// The pool: two addresses per node.
const POOL_SIZE: u8 = 10;

/// The index of the address added while n4 is deaf.
const ADDED: u8 = POOL_SIZE;

/// How long n4 stays deaf before anything else happens: gossip detection (about 0.5 s), then the
/// acknowledgement timeout (1.5 s) and two reconcile periods of margin, so that n4's lone decision
/// and anything the others might do about it show before the next phase.
const DEAFENED_FOR: Duration = Duration::from_secs(4);

/// How long the setup and the final settling may take on this noisy two-core machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the holdings are read while a phase waits for its expected state.
const POLL: Duration = Duration::from_millis(50);

/// The survivors after n1's death, who must take its addresses.
const SURVIVORS: [usize; 3] = [0, 2, 3];

/// Runs the scenario on a fresh five-node lab (kept in `lab_out` for its logs).
pub(crate) fn run(settings: &Settings, lab_out: &mut Option<Lab>) -> Result<Outcome> {
    say(&format!(
        "deaf node: n{DEAF} stops hearing anyone (everyone still hears it), then n{VICTIM} dies; {NODES} nodes, no \
         quorum; bounds: outage {:?}, double holding {:?}",
        settings.bounds.outage, settings.bounds.conflict
    ));
    let lab = lab_out.insert(Lab::new("deaf", NODES)?);
    say(&format!("lab {} in {}", lab.name(), lab.dir().display()));
    let model = Arc::new(Mutex::new(Model { world: World::new(NODES, 0), pool: ExpectedPool::default() }));
    let clock = Instant::now();
    let mut executor = Executor::new(lab, Arc::clone(&model), clock, settings.daemon_args());
    for node in 0..NODES {
        executor.start(node)?;
    }
    let lab = executor.lab();
    settle(PHASE_TIMEOUT, Duration::from_millis(300), || membership_problem(lab))
        .map_err(|problem| anyhow!("the nodes never all saw each other: {problem}"))?;
    let pool: Vec<IpAddr> = (0..POOL_SIZE).map(|k| lab.vip(k)).collect();
    for &address in &pool {
        lab.add_address(ENTRY, address)?;
        lock(&model).pool.added(address, clock.elapsed(), ENTRY, true);
    }
    let all: Vec<usize> = (0..NODES).collect();
    settle(PHASE_TIMEOUT, Duration::from_millis(200), || Ok(spread_problem(&lab.holdings()?, &pool, &all)))
        .map_err(|problem| anyhow!("the pool never spread: {problem}"))?;
    let targets = Targets {
        nodes: (0..NODES).map(|node| (lab.node_ns(node).to_owned(), lab.node_ip(node))).collect(),
        client_ns: lab.client_ns(),
        addresses: (0..=ADDED).map(|k| lab.vip(k)).collect(),
    };
    let observer = Observer::start(clock, targets, Arc::clone(&model), settings.bounds)?;
    let macs = (0..NODES).map(|node| lab.mac(node)).collect::<Result<_>>()?;
    let mut scenario = Scenario { executor, model, bounds: settings.bounds, macs, violations: Vec::new() };
    // Let the pingers see every address once before the first fault.
    thread::sleep(Duration::from_millis(500));
    scenario.log(&format!("1. spread: {}", describe(&scenario.executor.lab().holdings()?)));

    scenario.deafen()?;
    scenario.add_while_deaf()?;
    scenario.kill_victim()?;
    let settled_after = scenario.heal()?;

    let (violations, figures) = observer.finish();
    let Scenario { mut executor, violations: mut own, .. } = scenario;
    own.extend(violations);
    own.append(&mut executor.errors);
    own.sort_by_key(|violation| violation.started);
    Ok(Outcome {
        faults: std::mem::take(&mut executor.faults),
        pool_changes: std::mem::take(&mut executor.pool_changes),
        violations: own,
        figures,
        settled_after,
    })
}

/// The scenario's state between phases.
struct Scenario<'lab> {
    executor: Executor<'lab>,
    model: SharedModel,
    bounds: Bounds,
    /// Every node's MAC, by node index, to name the node the client's neighbour entry points at.
    macs: Vec<String>,
    violations: Vec<Violation>,
}

impl Scenario<'_> {
    fn log(&self, line: &str) {
        say(&format!("[{:>8.2}s] {line}", self.executor.now().as_secs_f64()));
    }

    /// The node whose MAC the client's neighbour entry for `address` names, as `n<i>` or `none`.
    fn client_entry(&self, address: IpAddr) -> Result<String> {
        let entry = self.executor.lab().client_neighbour(address)?;
        Ok(entry
            .and_then(|mac| self.macs.iter().position(|known| *known == mac))
            .map_or_else(|| "none".to_owned(), |node| format!("n{node}")))
    }

    fn violation(&mut self, detail: String) {
        self.log(&format!("VIOLATION {detail}"));
        self.violations.push(Violation {
            kind: "deaf-node",
            started: self.executor.now(),
            ended: None,
            detail,
        });
    }

    /// Phase 2: n4 goes deaf; nothing moves, and every address answers.
    fn deafen(&mut self) -> Result<()> {
        let before = self.executor.lab().holdings()?;
        let deafness = Fault::OneWayPartition(BTreeSet::from([DEAF]));
        self.executor.perform(&Action::Inject { id: 1, fault: deafness });
        let deafened = Instant::now();
        let mut moved: BTreeSet<(IpAddr, usize)> = BTreeSet::new();
        while deafened.elapsed() < DEAFENED_FOR {
            let holdings = self.executor.lab().holdings()?;
            for (node, held) in before.iter().enumerate() {
                for &address in held.difference(&holdings[node]) {
                    if moved.insert((address, node)) {
                        let at = deafened.elapsed().as_secs_f64();
                        self.violation(format!(
                            "{address} left n{node} {at:.2}s after n{DEAF} went deaf: {}",
                            describe(&holdings)
                        ));
                    }
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        let lab = self.executor.lab();
        let holdings = lab.holdings()?;
        let extra: Vec<String> = holdings[DEAF].difference(&before[DEAF]).map(ToString::to_string).collect();
        self.log(&format!(
            "2. after {:.1}s of deafness every address is where it was: {}",
            deafened.elapsed().as_secs_f64(),
            if moved.is_empty() { "yes" } else { "NO" }
        ));
        self.log(&format!("   holdings: {}", describe(&holdings)));
        self.log(&format!(
            "   n{DEAF} also holds {} copies of its own lone view ({}): the documented split brain of a deaf node, \
             excused while it lasts",
            extra.len(),
            extra.join(", ")
        ));
        let pool: Vec<IpAddr> = (0..POOL_SIZE).map(|k| lab.vip(k)).collect();
        let mut unreached = Vec::new();
        let mut answered_by_deaf = 0;
        for &address in &pool {
            if !ping_with_retries(lab, address)? {
                unreached.push(address);
            } else if self.client_entry(address)? == format!("n{DEAF}") {
                answered_by_deaf += 1;
            }
        }
        self.log(&format!(
            "   the client reaches {} of {POOL_SIZE} addresses ({answered_by_deaf} at n{DEAF}'s MAC: its announcements \
             won the client's neighbour table)",
            pool.len() - unreached.len()
        ));
        for address in unreached {
            self.violation(format!("the client cannot reach {address} while n{DEAF} is deaf"));
        }
        Ok(())
    }

    /// Phase 3: an address added through n0 goes to a node that hears the leader, and answers.
    fn add_while_deaf(&mut self) -> Result<()> {
        let address = self.executor.lab().vip(ADDED);
        self.executor.perform(&Action::Add { via: ENTRY, vip: ADDED });
        let acknowledged_at = Instant::now();
        let acknowledged =
            self.executor.pool_changes.get("add-address").is_some_and(|tally| tally.acknowledged == 1);
        if !acknowledged {
            self.violation(format!("`add-address {address}` through n{ENTRY} was not acknowledged"));
            return Ok(());
        }
        let hearing: Vec<usize> = (0..NODES).filter(|&node| node != DEAF).collect();
        self.expect_served("3. added", &[address], &hearing, acknowledged_at)
    }

    /// Phase 4: n1 dies; its addresses go to the survivors that hear the leader, and answer.
    fn kill_victim(&mut self) -> Result<()> {
        let orphans: Vec<IpAddr> = self.executor.lab().held(VICTIM)?.into_iter().collect();
        let killed_at = Instant::now();
        self.executor.perform(&Action::Inject { id: 2, fault: Fault::Kill(VICTIM) });
        self.executor.perform(&Action::Inject { id: 3, fault: Fault::PullCable(VICTIM) });
        self.expect_served(&format!("4. n{VICTIM}'s"), &orphans, &SURVIVORS, killed_at)
    }

    /// Waits until each of `addresses` is held by exactly one of `holders` and the client reaches
    /// it, and flags whatever took longer than the outage bound, counted from `since`.
    fn expect_served(
        &mut self,
        what: &str,
        addresses: &[IpAddr],
        holders: &[usize],
        since: Instant,
    ) -> Result<()> {
        let bound = self.bounds.outage;
        let lab = self.executor.lab();
        let placed = settle(PHASE_TIMEOUT, POLL, || {
            let holdings = lab.holdings()?;
            for &address in addresses {
                let on: Vec<usize> =
                    holders.iter().copied().filter(|&node| holdings[node].contains(&address)).collect();
                if on.len() != 1 {
                    return Ok(Some(format!(
                        "{address} is on {on:?} of {holders:?}: {}",
                        describe(&holdings)
                    )));
                }
            }
            Ok(None)
        });
        let holdings = lab.holdings()?;
        if let Err(problem) = placed {
            self.violation(format!("{what} addresses never found a holder: {problem}"));
            return Ok(());
        }
        let placed_after = since.elapsed();
        let mut lines = Vec::new();
        let mut late = Vec::new();
        for &address in addresses {
            let holder = holders.iter().find(|&&node| holdings[node].contains(&address)).copied();
            let limit = bound.saturating_sub(since.elapsed()).max(Duration::from_secs(1));
            let reached = lab.client_ping_until_reply(address, limit)?.map(|_| since.elapsed());
            let holder = holder.map_or_else(|| "?".to_owned(), |node| format!("n{node}"));
            match reached {
                Some(after) => {
                    lines.push(format!(
                        "{address} on {holder}, answered after {:.2}s at {}'s MAC",
                        after.as_secs_f64(),
                        self.client_entry(address)?
                    ));
                    if after > bound {
                        late.push(format!("{address} answered only {:.2}s after", after.as_secs_f64()));
                    }
                }
                None => late.push(format!("{address} (on {holder}) never answered the client")),
            }
        }
        self.log(&format!(
            "{what} {} held by {} {:.2}s after; {}",
            if addresses.len() == 1 { "address is" } else { "addresses are" },
            names(&holders.iter().copied().collect()),
            placed_after.as_secs_f64(),
            lines.join("; ")
        ));
        if placed_after > bound {
            self.violation(format!(
                "{what} addresses took {:.2}s to be held, over the outage bound {bound:?}",
                placed_after.as_secs_f64()
            ));
        }
        for problem in late {
            self.violation(format!("{what} {problem} (outage bound {bound:?})"));
        }
        self.log(&format!("   holdings: {}", describe(&holdings)));
        Ok(())
    }

    /// Phase 5: n4 hears again and n1 comes back; the copies go, then the cluster settles.
    /// Returns how long after the heal it settled, if it did.
    fn heal(&mut self) -> Result<Option<Duration>> {
        self.executor.perform(&Action::Heal { id: 1, fault: Fault::OneWayPartition(BTreeSet::from([DEAF])) });
        let healed_at = Instant::now();
        self.executor.perform(&Action::Heal { id: 2, fault: Fault::Kill(VICTIM) });
        self.executor.perform(&Action::Heal { id: 3, fault: Fault::PullCable(VICTIM) });
        let lab = self.executor.lab();
        let up = lab.cli_ok(VICTIM, &["up"]);
        self.log(&format!("`fechter up` on n{VICTIM}: {}", if up.is_ok() { "ok" } else { "FAILED" }));
        if let Err(error) = up {
            self.violation(format!("`fechter up` on n{VICTIM}: {error:#}"));
        }
        let lab = self.executor.lab();
        let single = settle(PHASE_TIMEOUT, POLL, || {
            let holdings = lab.holdings()?;
            Ok(holdings
                .iter()
                .flatten()
                .find(|address| holdings.iter().filter(|held| held.contains(address)).count() > 1)
                .map(|address| format!("{address} is on two nodes: {}", describe(&holdings))))
        });
        let bound = self.bounds.conflict;
        match single {
            Ok(_) => {
                let after = healed_at.elapsed();
                self.log(&format!(
                    "5. no address on two nodes {:.2}s after n{DEAF} hears again: {}",
                    after.as_secs_f64(),
                    describe(&self.executor.lab().holdings()?)
                ));
                if after > bound {
                    self.violation(format!(
                        "double holdings took {:.2}s to go after the heal, over the bound {bound:?}",
                        after.as_secs_f64()
                    ));
                }
            }
            Err(problem) => self.violation(format!("after the heal: {problem}")),
        }
        let expected = lock(&self.model).pool.clone();
        let lab = self.executor.lab();
        match settle(PHASE_TIMEOUT, Duration::from_millis(200), || final_problem(lab, &expected)) {
            Ok(_) => {
                let settled_after = healed_at.elapsed();
                let holdings = lab.holdings()?;
                self.log(&format!(
                    "   settled {:.2}s after the heal: every address once, loads within one: {}",
                    settled_after.as_secs_f64(),
                    describe(&holdings)
                ));
                let pool = lab.status(ENTRY)?.pool();
                let problems = client_problems(lab, &pool)?;
                self.log(&format!(
                    "   the client reaches {} of {} addresses at their holder's MAC",
                    pool.len().saturating_sub(problems.len()),
                    pool.len()
                ));
                for problem in problems {
                    self.violation(problem);
                }
                Ok(Some(settled_after))
            }
            Err(problem) => {
                self.violation(format!("never settled after the heal: {problem}"));
                Ok(None)
            }
        }
    }
}

/// Whether the client reaches `address` within a few one-second pings (a neighbour entry may need
/// to settle first on a busy machine).
fn ping_with_retries(lab: &Lab, address: IpAddr) -> Result<bool> {
    for _ in 0..3 {
        if lab.client_ping(address)? {
            return Ok(true);
        }
    }
    Ok(false)
}
