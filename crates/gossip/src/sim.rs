//! A deterministic in-process network for many [`Gossip`] cores on a virtual clock.
//!
//! The simulation is step-driven: [`Simulation::step`] advances virtual time by a small step
//! and, in exact time order, delivers every datagram whose time has come and runs every tick
//! that is due. Everything random (tick phases, loss, jitter) comes from one generator seeded
//! by [`SimConfig::seed`], and all collections are ordered, so a run repeats exactly for a seed.
//!
//! Faults: random loss, fixed latency plus uniform jitter per datagram, one-way and two-way
//! link cuts (partitions) and their healing, killed and restarted nodes. Every datagram is
//! checked against its sender's budget: a larger one panics, as a test-harness assertion.
//! Byte and datagram counters are kept per node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::config::Config;
use crate::core::Gossip;
use crate::types::{Event, Outgoing, SetError};

/// The network's behaviour.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds every random choice of the network (the cores have their own seeds).
    pub seed: u64,
    /// How far one [`Simulation::step`] advances virtual time.
    pub step: Duration,
    /// The fixed one-way delay of every datagram.
    pub latency: Duration,
    /// A uniformly random extra delay in `[0, jitter)` per datagram.
    pub jitter: Duration,
    /// The probability that a datagram is lost.
    pub loss: f64,
    /// Keep a log of every node's events (turn off for very large runs).
    pub record_events: bool,
}

impl SimConfig {
    /// A lossless network with 1 ms steps, 1 ms latency, no jitter, and event logs.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            step: Duration::from_millis(1),
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            record_events: true,
        }
    }
}

/// Traffic counters of one simulated node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Datagrams the node sent.
    pub datagrams_sent: u64,
    /// Bytes the node sent.
    pub bytes_sent: u64,
    /// Datagrams delivered to the node.
    pub datagrams_received: u64,
    /// Bytes delivered to the node.
    pub bytes_received: u64,
    /// Datagrams the node sent that the network dropped (loss, cuts, dead or unknown receiver).
    pub datagrams_dropped: u64,
}

/// Something scheduled on the virtual clock.
#[derive(Debug)]
enum Scheduled {
    Tick(usize),
    Deliver { to: usize, from: SocketAddr, datagram: Vec<u8> },
}

/// One simulated node.
#[derive(Debug)]
struct SimNode {
    core: Gossip,
    running: bool,
    counters: NodeCounters,
    events: Vec<(Duration, Event)>,
}

/// The simulated network and its nodes, indexed in the order they were added.
#[derive(Debug)]
pub struct Simulation {
    config: SimConfig,
    rng: StdRng,
    start: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BTreeMap<(Instant, u64), Scheduled>,
    next_order: u64,
    /// Cut links, as (from, to).
    cuts: BTreeSet<(usize, usize)>,
}

/// The simulated address of node `index`: `10.a.b.c:4573`.
pub fn address(index: usize) -> SocketAddr {
    let [_, a, b, c] = (index as u32).to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, a, b, c), 4573))
}

/// A default [`Config`] for node `index` of a simulated cluster named "sim": name
/// `node-<index>`, the address from [`address`], the given generation, and every node before it
/// (up to three) as seeds.
pub fn node_config(index: usize, generation: u64) -> Config {
    let mut config = Config::new("sim", format!("node-{index}"), generation, address(index));
    config.seeds = (index.saturating_sub(3)..index).map(address).collect();
    if index > 0 && config.seeds.is_empty() {
        config.seeds.push(address(0));
    }
    config
}

impl Simulation {
    /// An empty network.
    pub fn new(config: SimConfig) -> Simulation {
        let start = Instant::now();
        Simulation {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            start,
            now: start,
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BTreeMap::new(),
            next_order: 0,
            cuts: BTreeSet::new(),
        }
    }

    /// Adds a running node at `config.gossip_addr` and returns its index. Its first tick comes
    /// at a random phase within one interval.
    ///
    /// # Panics
    ///
    /// If another node already uses the address (a harness mistake).
    pub fn add_node(&mut self, config: Config) -> usize {
        let index = self.nodes.len();
        let previous = self.by_addr.insert(config.gossip_addr, index);
        assert!(previous.is_none(), "two simulated nodes share {}", config.gossip_addr);
        let interval = config.gossip_interval;
        self.nodes.push(SimNode {
            core: Gossip::new(config, self.now),
            running: true,
            counters: NodeCounters::default(),
            events: Vec::new(),
        });
        self.schedule_first_tick(index, interval);
        index
    }

    /// Replaces node `index` by a new core (normally a new generation at the same address) and
    /// starts it.
    ///
    /// # Panics
    ///
    /// If `config.gossip_addr` differs from the node's address (a harness mistake).
    pub fn restart(&mut self, index: usize, config: Config) {
        assert_eq!(self.by_addr.get(&config.gossip_addr), Some(&index), "restart keeps the address");
        let interval = config.gossip_interval;
        let was_running = self.nodes[index].running;
        self.nodes[index].core = Gossip::new(config, self.now);
        self.nodes[index].running = true;
        if !was_running {
            self.schedule_first_tick(index, interval);
        }
    }

    /// Stops node `index` without a word: it no longer ticks and receives nothing.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].running = false;
    }

    /// Node `index` leaves on purpose (its `Leave` datagrams go out) and then stops.
    pub fn leave(&mut self, index: usize) {
        let outgoing = self.nodes[index].core.leave(self.now);
        self.dispatch(index, outgoing);
        self.nodes[index].running = false;
    }

    /// Sets a key on node `index` and gossips it at once, as the driver does.
    ///
    /// # Errors
    ///
    /// The core's [`SetError`].
    pub fn set(&mut self, index: usize, key: &str, value: Vec<u8>) -> Result<(), SetError> {
        self.nodes[index].core.set(key, value)?;
        self.gossip_now(index);
        Ok(())
    }

    /// Deletes a key on node `index` and gossips it at once.
    pub fn delete(&mut self, index: usize, key: &str) {
        self.nodes[index].core.delete(key);
        self.gossip_now(index);
    }

    /// Makes node `index` send a round of `Syn`s now.
    pub fn gossip_now(&mut self, index: usize) {
        let outgoing = self.nodes[index].core.gossip_now(self.now);
        self.dispatch(index, outgoing);
    }

    /// Hands `datagram` to node `index` at once, as if sent from `from`; replies go out.
    pub fn inject(&mut self, index: usize, from: SocketAddr, datagram: &[u8]) {
        let outgoing = self.nodes[index].core.handle(from, datagram, self.now);
        self.record(index);
        self.dispatch(index, outgoing);
    }

    /// Drops every datagram from `from` to `to` until healed.
    pub fn cut(&mut self, from: usize, to: usize) {
        self.cuts.insert((from, to));
    }

    /// Cuts both directions between every node of `side_a` and every node of `side_b`.
    pub fn partition(&mut self, side_a: &[usize], side_b: &[usize]) {
        for &a in side_a {
            for &b in side_b {
                self.cuts.insert((a, b));
                self.cuts.insert((b, a));
            }
        }
    }

    /// Restores one direction of a link.
    pub fn heal_link(&mut self, from: usize, to: usize) {
        self.cuts.remove(&(from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Changes the loss probability.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Changes latency and jitter.
    pub fn set_delay(&mut self, latency: Duration, jitter: Duration) {
        self.config.latency = latency;
        self.config.jitter = jitter;
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// How many nodes were added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True before the first node is added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The core of node `index`.
    pub fn node(&self, index: usize) -> &Gossip {
        &self.nodes[index].core
    }

    /// The core of node `index`, to change it directly (its outgoing datagrams are the caller's).
    pub fn node_mut(&mut self, index: usize) -> &mut Gossip {
        &mut self.nodes[index].core
    }

    /// Whether node `index` runs.
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].running
    }

    /// The traffic counters of node `index`.
    pub fn counters(&self, index: usize) -> NodeCounters {
        self.nodes[index].counters
    }

    /// Zeroes every node's traffic counters (to measure a window).
    pub fn reset_counters(&mut self) {
        for node in &mut self.nodes {
            node.counters = NodeCounters::default();
        }
    }

    /// The events of node `index` with the virtual time at which they happened.
    pub fn events(&self, index: usize) -> &[(Duration, Event)] {
        &self.nodes[index].events
    }

    /// Advances virtual time by one step, delivering datagrams and running ticks in time order.
    pub fn step(&mut self) {
        let until = self.now + self.config.step;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), scheduled) = entry.remove_entry();
            self.now = at;
            match scheduled {
                Scheduled::Tick(index) => self.run_tick(index),
                Scheduled::Deliver { to, from, datagram } => self.deliver(to, from, &datagram),
            }
        }
        self.now = until;
    }

    /// Steps for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step();
        }
    }

    /// Steps until `done` holds (checked after every step) or `limit` has passed; returns the
    /// virtual time it took, or `None` on timeout.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Simulation) -> bool,
    ) -> Option<Duration> {
        let started = self.now;
        let until = self.now + limit;
        while self.now < until {
            if done(self) {
                return Some(self.now - started);
            }
            self.step();
        }
        done(self).then(|| self.now - started)
    }

    fn schedule_first_tick(&mut self, index: usize, interval: Duration) {
        let phase = interval.mul_f64(self.rng.random::<f64>());
        self.schedule(self.now + phase, Scheduled::Tick(index));
    }

    fn schedule(&mut self, at: Instant, scheduled: Scheduled) {
        self.next_order += 1;
        self.queue.insert((at, self.next_order), scheduled);
    }

    fn run_tick(&mut self, index: usize) {
        if !self.nodes[index].running {
            return;
        }
        let outgoing = self.nodes[index].core.tick(self.now);
        self.record(index);
        self.dispatch(index, outgoing);
        let interval = self.nodes[index].core.config().gossip_interval;
        self.schedule(self.now + interval, Scheduled::Tick(index));
    }

    fn deliver(&mut self, to: usize, from: SocketAddr, datagram: &[u8]) {
        let node = &mut self.nodes[to];
        if !node.running {
            if let Some(&sender) = self.by_addr.get(&from) {
                self.nodes[sender].counters.datagrams_dropped += 1;
            }
            return;
        }
        node.counters.datagrams_received += 1;
        node.counters.bytes_received += datagram.len() as u64;
        let outgoing = node.core.handle(from, datagram, self.now);
        self.record(to);
        self.dispatch(to, outgoing);
    }

    fn record(&mut self, index: usize) {
        let elapsed = self.now - self.start;
        let node = &mut self.nodes[index];
        let events = node.core.drain_events();
        if self.config.record_events {
            node.events.extend(events.into_iter().map(|event| (elapsed, event)));
        }
    }

    fn dispatch(&mut self, from: usize, outgoing: Vec<Outgoing>) {
        let budget = self.nodes[from].core.config().datagram_budget;
        let from_addr = self.nodes[from].core.id().gossip_addr;
        for Outgoing { to, datagram } in outgoing {
            assert!(
                datagram.len() <= budget,
                "node {from} sent a {} byte datagram over its {budget} byte budget",
                datagram.len()
            );
            let counters = &mut self.nodes[from].counters;
            counters.datagrams_sent += 1;
            counters.bytes_sent += datagram.len() as u64;
            let lost = self.rng.random::<f64>() < self.config.loss;
            let delay = self.config.latency + self.config.jitter.mul_f64(self.rng.random::<f64>());
            let receiver = self.by_addr.get(&to).copied();
            match receiver {
                Some(receiver) if !lost && !self.cuts.contains(&(from, receiver)) => {
                    self.schedule(
                        self.now + delay,
                        Scheduled::Deliver { to: receiver, from: from_addr, datagram },
                    );
                }
                _ => self.nodes[from].counters.datagrams_dropped += 1,
            }
        }
    }
}
