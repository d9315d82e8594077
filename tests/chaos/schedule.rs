//! The seeded schedule: which fault or pool change happens when, decided before the run starts.
//!
//! Everything random comes from one [`SplitMix64`] seeded by `--seed`, and the generator replays
//! its own faults through a [`World`] so that it never takes the last eligible node out, never
//! puts two faults on one node, and heals every fault before the run ends. The outcome of each
//! step (how long a start takes, whether a CLI call is accepted) never feeds back into the plan,
//! so a seed always gives the same schedule.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::prng::SplitMix64;
use crate::world::{Fault, World};

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Inject fault number `id`.
    Inject { id: u32, fault: Fault },
    /// Heal fault number `id`.
    Heal { id: u32, fault: Fault },
    /// `fechter add-address eth0:<vip k>` through node `via`.
    Add { via: usize, vip: u8 },
    /// `fechter remove-address eth0:<vip k>` through node `via`.
    Remove { via: usize, vip: u8 },
}

/// An action and when it is due, counted from the start of the chaos phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// When it is due.
    pub(crate) at: Duration,
    /// What to do.
    pub(crate) action: Action,
}

/// What shapes a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The seed of the whole schedule.
    pub(crate) seed: u64,
    /// How many nodes the LAN has.
    pub(crate) nodes: usize,
    /// The daemons' `--quorum` (0 = off).
    pub(crate) quorum: usize,
    /// How long the chaos phase lasts; every fault is healed by then.
    pub(crate) length: Duration,
    /// How many pool addresses exist before the first step (vips 0, 1, ...).
    pub(crate) initial_pool: u8,
}

/// The pause between two steps, in milliseconds.
const STEP_PAUSE_MS: (u64, u64) = (2000, 6000);
/// How long a fault lasts before its heal, in milliseconds: some shorter and some longer than the
/// three seconds a daemon needs to declare its gateway lost.
const FAULT_LENGTH_MS: (u64, u64) = (1000, 10_000);
/// The pool never shrinks below this or grows beyond `POOL_MAX`.
const POOL_MIN: usize = 3;
/// The largest pool; also the number of distinct addresses used.
pub(crate) const POOL_MAX: u8 = 10;

/// The kinds of fault and their weights (how often each is picked relative to the others).
const FAULT_WEIGHTS: [(&str, u64); 7] = [
    ("kill", 2),
    ("restart", 1),
    ("cable", 2),
    ("partition", 2),
    ("one-way-partition", 1),
    ("gateway", 2),
    ("down", 1),
];

/// The schedule for `shape`, in time order.
pub(crate) fn plan(shape: Shape) -> Vec<Event> {
    let mut rng = SplitMix64::new(shape.seed);
    let mut world = World::new(shape.nodes, shape.quorum);
    let mut pool: BTreeSet<u8> = (0..shape.initial_pool.min(POOL_MAX)).collect();
    let mut pending: Vec<(Duration, u32, Fault)> = Vec::new();
    let mut events = Vec::new();
    let mut next_id = 1;
    let mut at = rng.millis_between(STEP_PAUSE_MS.0, STEP_PAUSE_MS.1);

    while at < shape.length {
        heal_due(&mut pending, &mut world, &mut events, at);
        // A quarter of the steps change the pool; the rest inject faults.
        let action = if rng.chance(1, 4) {
            pool_change(&mut rng, &world, &mut pool)
        } else {
            fault(&mut rng, &world).map(|fault| {
                let id = next_id;
                next_id += 1;
                Action::Inject { id, fault }
            })
        };
        if let Some(action) = action {
            if let Action::Inject { id, fault } = &action {
                world.inject(fault);
                if fault.lasts() {
                    let length = rng.millis_between(FAULT_LENGTH_MS.0, FAULT_LENGTH_MS.1);
                    pending.push(((at + length).min(shape.length), *id, fault.clone()));
                } else {
                    world.heal(fault, at);
                }
            }
            events.push(Event { at, action });
        }
        at += rng.millis_between(STEP_PAUSE_MS.0, STEP_PAUSE_MS.1);
    }
    heal_due(&mut pending, &mut world, &mut events, shape.length);
    events
}

/// Moves every pending heal due by `now` into `events`, earliest first.
fn heal_due(
    pending: &mut Vec<(Duration, u32, Fault)>,
    world: &mut World,
    events: &mut Vec<Event>,
    now: Duration,
) {
    pending.sort_by_key(|(due, id, _)| (*due, *id));
    let due_count = pending.iter().take_while(|(due, _, _)| *due <= now).count();
    for (due, id, fault) in pending.drain(..due_count) {
        world.heal(&fault, due);
        events.push(Event { at: due, action: Action::Heal { id, fault } });
    }
}

/// A random fault on free nodes that leaves some node healthy and eligible, if one exists.
fn fault(rng: &mut SplitMix64, world: &World) -> Option<Fault> {
    let free: Vec<usize> = (0..world.len()).filter(|&node| !world.faulted(node)).collect();
    let total: u64 = FAULT_WEIGHTS.iter().map(|(_, weight)| weight).sum();
    // A few tries: the first pick may be impossible (say, a partition with one free node).
    for _ in 0..8 {
        let mut roll = rng.below(total);
        let kind = FAULT_WEIGHTS
            .iter()
            .find(|(_, weight)| {
                let hit = roll < *weight;
                roll = roll.saturating_sub(*weight);
                hit
            })
            .map_or("kill", |(kind, _)| *kind);
        let candidate = match kind {
            "partition" | "one-way-partition" => {
                // A minority: one node, or two when the LAN has five or more.
                let largest = ((world.len() - 1) / 2).max(1);
                let size = usize::try_from(rng.below(largest as u64)).unwrap_or(0) + 1;
                if free.len() <= size {
                    continue;
                }
                let members: BTreeSet<usize> = rng.choose(&free, size).into_iter().collect();
                if kind == "partition" { Fault::Partition(members) } else { Fault::OneWayPartition(members) }
            }
            _ => {
                let node = rng.pick(&free)?;
                match kind {
                    "kill" => Fault::Kill(node),
                    "restart" => Fault::Restart(node),
                    "cable" => Fault::PullCable(node),
                    "gateway" => Fault::GatewayLost(node),
                    _ => Fault::Down(node),
                }
            }
        };
        let mut after = world.clone();
        after.inject(&candidate);
        if after.some_healthy_eligible() {
            return Some(candidate);
        }
    }
    None
}

/// A random add or remove through a node whose daemon runs, keeping the pool between its bounds.
fn pool_change(rng: &mut SplitMix64, world: &World, pool: &mut BTreeSet<u8>) -> Option<Action> {
    let running: Vec<usize> = (0..world.len()).filter(|&node| world.running(node)).collect();
    let via = rng.pick(&running)?;
    let grow = pool.len() <= POOL_MIN || (pool.len() < usize::from(POOL_MAX) && rng.chance(1, 2));
    if grow {
        let absent: Vec<u8> = (0..POOL_MAX).filter(|vip| !pool.contains(vip)).collect();
        let vip = rng.pick(&absent)?;
        pool.insert(vip);
        Some(Action::Add { via, vip })
    } else {
        let present: Vec<u8> = pool.iter().copied().collect();
        let vip = rng.pick(&present)?;
        pool.remove(&vip);
        Some(Action::Remove { via, vip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(seed: u64, quorum: usize) -> Shape {
        Shape { seed, nodes: 5, quorum, length: Duration::from_secs(600), initial_pool: 6 }
    }

    #[test]
    fn a_seed_always_gives_the_same_schedule_and_seeds_differ() {
        assert_eq!(plan(shape(42, 0)), plan(shape(42, 0)));
        assert_ne!(plan(shape(42, 0)), plan(shape(43, 0)));
    }

    #[test]
    fn faults_never_overlap_on_a_node_and_always_leave_an_eligible_node() {
        for seed in 0..20 {
            for quorum in [0, 3] {
                let events = plan(shape(seed, quorum));
                let mut world = World::new(5, quorum);
                let mut open = BTreeSet::new();
                let mut last = Duration::ZERO;
                let mut kinds = BTreeSet::new();
                for event in &events {
                    assert!(event.at >= last, "seed {seed}: events out of order");
                    last = event.at;
                    match &event.action {
                        Action::Inject { id, fault } => {
                            assert!(
                                fault.nodes().iter().all(|&node| !world.faulted(node)),
                                "seed {seed}: overlap"
                            );
                            world.inject(fault);
                            assert!(world.some_healthy_eligible(), "seed {seed}: no eligible node left");
                            kinds.insert(fault.kind());
                            if fault.lasts() {
                                open.insert(*id);
                            } else {
                                world.heal(fault, event.at);
                            }
                        }
                        Action::Heal { id, fault } => {
                            assert!(open.remove(id), "seed {seed}: heal of fault {id} that is not open");
                            world.heal(fault, event.at);
                        }
                        Action::Add { via, .. } | Action::Remove { via, .. } => {
                            assert!(world.running(*via), "seed {seed}: pool change through a dead node");
                        }
                    }
                }
                assert!(open.is_empty(), "seed {seed}: faults left open: {open:?}");
                assert!(last <= Duration::from_secs(600));
                assert_eq!(kinds.len(), FAULT_WEIGHTS.len(), "seed {seed}: kinds {kinds:?}");
            }
        }
    }

    #[test]
    fn the_pool_stays_within_its_bounds() {
        let events = plan(shape(5, 0));
        let mut pool: BTreeSet<u8> = (0..6).collect();
        for event in &events {
            match event.action {
                Action::Add { vip, .. } => assert!(pool.insert(vip)),
                Action::Remove { vip, .. } => assert!(pool.remove(&vip)),
                _ => {}
            }
            assert!((POOL_MIN..=usize::from(POOL_MAX)).contains(&pool.len()));
        }
        assert!(events.iter().any(|event| matches!(event.action, Action::Remove { .. })));
    }
}
