//! Daemon-level scale simulation: a whole cluster in one process, on the real gossip and daemon code.
//!
//! `cargo bench -p fechterd --bench scale` builds 1 000 nodes and a pool of 1 000 addresses, lets the
//! cluster agree on an assignment, measures the idle gossip traffic, then kills one node that holds
//! addresses and measures, in virtual time from the kill:
//! (a) when the leader's failure detector declares it dead, and when every live node's has;
//! (b) when the leader publishes the decision that moves its addresses;
//! (c) when every live node has that decision's `commit` key at its published version (scuttlebutt
//!     deltas are gap-free per node, so it then has every `assign:*` key written before it);
//! (d) when the new holders have published the `held:*` keys of the moved addresses;
//! (e) when those `held:*` keys have reached every live node;
//! (f) when the leader sees every live node acknowledge the decision (the cluster agrees again).
//! It also reports the wall-clock time, CPU time and peak RSS of the run, and what one full leader
//! step (decode of the whole view, then `decide`) costs at this size.
//!
//! Settings, all optional: `SCALE_NODES` (1000), `SCALE_ADDRESSES` (1000), `SCALE_SEED` (the
//! network's seed), `SCALE_SETUP_LIMIT_S` (3600: virtual seconds the cluster gets to agree after the
//! pool was added), `SCALE_ACK_TIMEOUT_S` (the leader's acknowledgement timeout; the daemon's by
//! default) and `SCALE_INTERVAL_MS` (the gossip round; by default 1 s from 500 nodes on, 100 ms
//! below, while the daemon's own default is 100 ms at any size). The default pool is 1 000
//! addresses, not 10 000, because 10 000 addresses over 1 000 nodes take about 20 minutes and
//! 9.5 GB here even with 100 ms rounds, and with the default 1 s rounds at that size the leader's
//! 20 000 keys need over 300 s of virtual time to spread (see BENCHMARKS.md). The leader waits up
//! to forty acknowledgement timeouts for a peer that is still receiving its keys; past that, it
//! finds the nodes still receiving unresponsive and moves their addresses to the few that
//! acknowledged. `SCALE_ACK_TIMEOUT_S` sets a longer timeout to see the rest of the figures at
//! such sizes.
//!
//! What is real: every node is a [`fechter_gossip::Gossip`] core on the simulated network of
//! [`fechter_gossip::sim`] (wire format, datagram budget, scuttlebutt, phi-accrual detector), with
//! 1 s rounds from 500 nodes on, 100 ms below, as in the gossip crate's convergence bench. Node ids
//! are the daemon's `ip:port` gossip names. Every value is the daemon's own encoding of its types
//! (`NodeStatus`, `HeldRecord`, `PoolRecord`, `assign:*`, `Commit`), written in the daemon's order:
//! a decision as [`fechterd::daemon::decision_changes`] batches it, then the reconciled `held:*` keys
//! in one batch, then the status carrying `applied`. Each batch is one `gossip_now` followed by the
//! gossip driver's burst of extra push rounds, 5 ms apart. The leader runs the daemon's step: the
//! whole view decoded with [`decode_node`] exactly as the daemon's `decode` does, the pool merged,
//! `adopt`, the acknowledgement tracking of [`fechterd::acks`], `decide`, the reconcile `plan` and
//! the re-publication of orphaned pool records.
//!
//! What is simplified, and why the measured path stays the real one:
//! - Followers do not decode the whole view: 10 000 `assign:*` keys on 1 000 nodes at every view
//!   change would cost hours. A follower reads the leader's `commit` key at every view change, and
//!   only when it changed reads the `assign:*` keys naming it and their `pool:*` records, decodes
//!   those with [`decode_node`] and follows with the real `adopt`. The leader is node 0 (the lowest
//!   id), is never killed and is the only node that ever writes a commit, so the greatest commit the
//!   daemon's `authoritative` would find is exactly this one; and `plan` only looks at the
//!   assignment entries naming the node. A follower's `held_elsewhere` lists, for the addresses it
//!   is assigned or owns, the live peers (by its own failure detector) that publish them, which is
//!   all `plan` looks at.
//! - The leader steps on a view change at most every 100 ms, and at least every second as the
//!   daemon's reconcile timer does; the real daemon steps on every view change, but its step costs
//!   tens of milliseconds at this size (reported), so it could not step much faster either.
//!   Followers step on every view change; while an address waits for its release, they reconcile
//!   once one of the holders they waited for is no longer live or no longer publishes it.
//! - No netlink and no announcements: the list of owned placements stands in for the interfaces,
//!   and additions and removals succeed at once. Daemon steps run at the 5 ms step boundaries of
//!   the simulation.
//! - Settling: the nodes publish an eligible status once the cluster has joined, and the leader is
//!   "settled" once it sees every node's status, which is what the daemon's settle time is for.
//!   Then the leader adds the pool in one batch, as the daemon re-publishes its pool at start (one
//!   `fechter add-address` per address would cost one push round each). No health checks, link
//!   monitoring, maintenance or quorum; the hybrid clock runs on virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use fechter_alloc::Assignment;
use fechter_cli::proto::Liveness;
use fechter_gossip::sim::{SimConfig, Simulation, address, node_config};
use fechter_gossip::{BURST_SPACING, ClusterView, KeyChange, burst_rounds};
use fechterd::acks::Acknowledgements;
use fechterd::cluster::{
    Admin, COMMIT_KEY, Cluster, Commit, CommitRef, HELD_PREFIX, HeldRecord, NODE_KEY, NodeState, NodeStatus,
    POOL_PREFIX, decode_node, encode,
};
use fechterd::daemon::{
    RECONCILE_INTERVAL, ack_timeout, decision_changes, decode_view, held_changes, held_records,
};
use fechterd::hlc::HybridClock;
use fechterd::leader::{Decision, LeaderInput, adopt, commit_value, decide};
use fechterd::options::SETTLE_INTERVALS;
use fechterd::pool::Pool;
use fechterd::reconcile::{Placement, ReconcileInput, plan};

/// The leader: node 0 has the lowest id of the cluster and is never killed.
const LEADER: usize = 0;
/// How far one simulation step advances; the gossip driver's burst spacing, so bursts keep their pace.
const STEP: Duration = Duration::from_millis(5);
/// The shortest time between two leader steps; see the module documentation.
const LEADER_STEP_GAP: Duration = Duration::from_millis(100);
/// The interface every pool address goes on.
const INTERFACE: &str = "eth0";
/// The wall clock of the hybrid clock at virtual time zero (2026-01-01).
const EPOCH_MS: u64 = 1_767_225_600_000;
/// How often the failover checks for agreement, which parses every node's status.
const AGREEMENT_CHECK: Duration = Duration::from_millis(50);
/// How long the idle traffic is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(20);

/// What the run is asked to do.
struct Settings {
    nodes: usize,
    addresses: usize,
    seed: u64,
    /// Overrides the daemon's acknowledgement timeout.
    ack_timeout: Option<Duration>,
    /// How much virtual time the cluster gets to agree after the pool was added.
    setup_limit: Duration,
    /// Overrides the gossip round chosen by size.
    interval: Option<Duration>,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        fn var(name: &str, default: u64) -> Result<u64> {
            match std::env::var(name) {
                Ok(text) => text.trim().parse().with_context(|| format!("{name}={text:?} is not a number")),
                Err(_) => Ok(default),
            }
        }
        let nodes = usize::try_from(var("SCALE_NODES", 1000)?)?;
        let addresses = usize::try_from(var("SCALE_ADDRESSES", 1000)?)?;
        if nodes < 3 {
            bail!("SCALE_NODES must be at least 3: a leader, a victim and a survivor");
        }
        if addresses == 0 || addresses > 65_000 {
            bail!("SCALE_ADDRESSES must be between 1 and 65000 (the pool is 198.18.0.0/16)");
        }
        /// A setting without a default: `None` when the variable is not set.
        fn optional_var(name: &str) -> Result<Option<u64>> {
            if std::env::var_os(name).is_none() {
                return Ok(None);
            }
            var(name, 0).map(Some)
        }
        let ack_timeout = optional_var("SCALE_ACK_TIMEOUT_S")?.map(Duration::from_secs);
        let setup_limit = Duration::from_secs(var("SCALE_SETUP_LIMIT_S", 3600)?);
        let interval = match optional_var("SCALE_INTERVAL_MS")? {
            Some(0) => bail!("SCALE_INTERVAL_MS must be at least 1"),
            millis => millis.map(Duration::from_millis),
        };
        Ok(Settings { nodes, addresses, seed: var("SCALE_SEED", 2026)?, ack_timeout, setup_limit, interval })
    }

    /// The gossip round: 1 s from 500 nodes on, as in the gossip crate's convergence bench, since
    /// at that size a peer is heard only every few rounds whatever the interval.
    fn interval(&self) -> Duration {
        let by_size = if self.nodes >= 500 { Duration::from_secs(1) } else { Duration::from_millis(100) };
        self.interval.unwrap_or(by_size)
    }

    /// The leader's acknowledgement timeout: the daemon's unless `SCALE_ACK_TIMEOUT_S` asks for
    /// another.
    fn ack_timeout(&self) -> Duration {
        self.ack_timeout.unwrap_or_else(|| self.daemon_ack_timeout())
    }

    /// The daemon's own acknowledgement timeout for this gossip interval.
    fn daemon_ack_timeout(&self) -> Duration {
        ack_timeout(self.interval() * SETTLE_INTERVALS)
    }
}

/// The names every node uses: node ids, pool addresses and their keys, computed once.
struct Schema {
    ids: Vec<String>,
    /// Each id as an `assign:*` value names it.
    encoded_ids: Vec<Vec<u8>>,
    addresses: Vec<IpAddr>,
    position: BTreeMap<IpAddr, usize>,
    assign_keys: Vec<String>,
    pool_keys: Vec<String>,
    held_keys: Vec<String>,
}

impl Schema {
    fn new(settings: &Settings) -> Schema {
        let ids: Vec<String> = (0..settings.nodes).map(|index| address(index).to_string()).collect();
        let encoded_ids = ids.iter().map(encode).collect();
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 1));
        let addresses: Vec<IpAddr> = (0..settings.addresses)
            .map(|offset| IpAddr::V4(Ipv4Addr::from(base + u32::try_from(offset).unwrap_or(0))))
            .collect();
        Schema {
            ids,
            encoded_ids,
            position: addresses.iter().enumerate().map(|(position, address)| (*address, position)).collect(),
            assign_keys: addresses.iter().map(|address| format!("assign:{address}")).collect(),
            pool_keys: addresses.iter().map(|address| format!("{POOL_PREFIX}{address}")).collect(),
            held_keys: addresses.iter().map(|address| format!("{HELD_PREFIX}{address}")).collect(),
            addresses,
        }
    }

    fn held_key(&self, address: IpAddr) -> &str {
        self.position.get(&address).map_or("", |&position| self.held_keys[position].as_str())
    }
}

/// One node's daemon state, as far as the simulation keeps it.
struct Node {
    /// The gossip view version of its last step.
    seen_view: u64,
    last_step: Option<Duration>,
    /// The leader's `commit` value at its last step (followers).
    seen_commit: Option<Vec<u8>>,
    /// The records of the pool it knows (the leader: all; a follower: those assigned to it).
    pool: Pool,
    applied: Option<Decision>,
    reconciled: Option<CommitRef>,
    /// The placements "installed" here: the simulation's netlink.
    owned: Vec<Placement>,
    conflicted: BTreeSet<IpAddr>,
    published_held: BTreeMap<IpAddr, HeldRecord>,
    published_status: Option<NodeStatus>,
    /// It must reconcile at its next step: at start, and while an assigned address is deferred.
    needs_reconcile: bool,
    /// The addresses assigned here that other live nodes still held at the last reconcile.
    waiting: Vec<(IpAddr, Vec<String>)>,
    burst_rounds: usize,
    next_burst: Duration,
}

impl Node {
    fn new() -> Node {
        Node {
            seen_view: u64::MAX,
            last_step: None,
            seen_commit: None,
            pool: Pool::new(),
            applied: None,
            reconciled: None,
            owned: Vec::new(),
            conflicted: BTreeSet::new(),
            published_held: BTreeMap::new(),
            published_status: None,
            needs_reconcile: true,
            waiting: Vec::new(),
            burst_rounds: 0,
            next_burst: Duration::ZERO,
        }
    }
}

/// A decision the leader published.
struct Published {
    at: Duration,
    decision: Decision,
    moved: usize,
}

/// What one full leader step cost in wall-clock time.
#[derive(Default)]
struct StepCosts {
    steps: u32,
    view_and_decode: Duration,
    decide: Duration,
    total: Duration,
    slowest: Duration,
}

impl StepCosts {
    fn record(&mut self, view_and_decode: Duration, decide: Duration, total: Duration) {
        self.steps += 1;
        self.view_and_decode += view_and_decode;
        self.decide += decide;
        self.total += total;
        self.slowest = self.slowest.max(total);
    }

    fn describe(&self) -> String {
        let steps = self.steps.max(1);
        format!(
            "{} steps, mean {:.1} ms (view+decode {:.1} ms, decide {:.1} ms), slowest {:.1} ms",
            self.steps,
            ms(self.total / steps),
            ms(self.view_and_decode / steps),
            ms(self.decide / steps),
            ms(self.slowest)
        )
    }
}

/// The leader's own state on top of its [`Node`].
struct Leading {
    clock: HybridClock,
    acks: Acknowledgements,
    /// Whether it may lead yet; see the module documentation.
    settled: bool,
    published: Vec<Published>,
    most_unresponsive: usize,
    /// How many peers were unresponsive at its last step.
    unresponsive_now: usize,
    costs: StepCosts,
}

/// The simulated cluster and the daemon state of every node.
struct Harness {
    sim: Simulation,
    schema: Schema,
    nodes: Vec<Node>,
    leading: Leading,
    /// Whether the daemons run (off while the cluster joins).
    daemons: bool,
    /// Keys written by the daemons so far.
    writes: u64,
    /// Per address, the node that last acquired it and when.
    acquired: BTreeMap<IpAddr, (usize, Duration)>,
}

impl Harness {
    fn new(settings: &Settings) -> Harness {
        let interval = settings.interval();
        let mut network = SimConfig::new(settings.seed);
        network.step = STEP;
        network.record_events = false;
        let mut sim = Simulation::new(network);
        let schema = Schema::new(settings);
        for (index, id) in schema.ids.iter().enumerate() {
            let mut config = node_config(index, 1);
            config.node_name.clone_from(id);
            config.gossip_interval = interval;
            sim.add_node(config);
        }
        let ack_timeout = settings.ack_timeout();
        Harness {
            sim,
            nodes: (0..settings.nodes).map(|_| Node::new()).collect(),
            leading: Leading {
                clock: HybridClock::new(),
                acks: Acknowledgements::new(ack_timeout),
                settled: false,
                published: Vec::new(),
                most_unresponsive: 0,
                unresponsive_now: 0,
                costs: StepCosts::default(),
            },
            schema,
            daemons: false,
            writes: 0,
            acquired: BTreeMap::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    fn id(&self, index: usize) -> &str {
        &self.schema.ids[index]
    }

    /// One simulation step, then the driver bursts and the daemon steps that are due.
    fn advance(&mut self) -> Result<()> {
        self.sim.step();
        let now = self.elapsed();
        for index in 0..self.nodes.len() {
            if !self.sim.is_running(index) {
                continue;
            }
            let node = &mut self.nodes[index];
            if node.burst_rounds > 0 && node.next_burst <= now {
                node.burst_rounds -= 1;
                node.next_burst = now + BURST_SPACING;
                self.sim.gossip_now(index);
            }
            if self.daemons {
                self.step_if_due(index, now)?;
            }
        }
        Ok(())
    }

    fn run_for(&mut self, duration: Duration) -> Result<()> {
        let until = self.elapsed() + duration;
        while self.elapsed() < until {
            self.advance()?;
        }
        Ok(())
    }

    /// Advances until `done` holds, checked every `every`; returns the virtual time it took.
    fn run_until(
        &mut self,
        limit: Duration,
        every: Duration,
        mut done: impl FnMut(&Harness) -> bool,
    ) -> Result<Option<Duration>> {
        let started = self.elapsed();
        let mut next_check = started;
        while self.elapsed() - started < limit {
            if self.elapsed() >= next_check {
                if done(self) {
                    return Ok(Some(self.elapsed() - started));
                }
                next_check = self.elapsed() + every;
            }
            self.advance()?;
        }
        Ok(None)
    }

    fn step_if_due(&mut self, index: usize, now: Duration) -> Result<()> {
        let version = self.sim.node(index).view_version();
        let node = &self.nodes[index];
        let changed = version != node.seen_view;
        let since = node.last_step.map_or(Duration::MAX, |last| now - last);
        let due = if index == LEADER {
            (changed && since >= LEADER_STEP_GAP) || since >= RECONCILE_INTERVAL
        } else {
            changed || (node.needs_reconcile && since >= RECONCILE_INTERVAL)
        };
        if !due {
            return Ok(());
        }
        let node = &mut self.nodes[index];
        node.seen_view = version;
        node.last_step = Some(now);
        if index == LEADER { self.leader_step() } else { self.follower_step(index) }
    }

    /// Sets and deletes keys of node `index` as the gossip driver applies one batch: in order,
    /// then one push round now and a burst of extra ones if the batch exceeds a datagram.
    fn publish(&mut self, index: usize, changes: Vec<KeyChange>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let budget = self.sim.node(index).config().datagram_budget;
        let rounds = burst_rounds(&changes, budget);
        self.writes += changes.len() as u64;
        for (key, value) in changes {
            match value {
                Some(value) => self
                    .sim
                    .node_mut(index)
                    .set(&key, value)
                    .with_context(|| format!("node {index} could not publish {key}"))?,
                None => self.sim.node_mut(index).delete(&key),
            }
        }
        self.sim.gossip_now(index);
        let next_burst = self.elapsed() + BURST_SPACING;
        let node = &mut self.nodes[index];
        if rounds > node.burst_rounds {
            node.burst_rounds = rounds;
            node.next_burst = next_burst;
        }
        Ok(())
    }

    /// The leader adds the whole pool in one batch.
    fn add_pool(&mut self) -> Result<()> {
        let wall_ms = EPOCH_MS + u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut changes = Vec::with_capacity(self.schema.addresses.len());
        for position in 0..self.schema.addresses.len() {
            let address = self.schema.addresses[position];
            let stamp = self.leading.clock.stamp(wall_ms, &self.schema.ids[LEADER]);
            let pool = &mut self.nodes[LEADER].pool;
            let record = pool.plan_add(INTERFACE, address, None, stamp).context("adding a pool address")?;
            changes.push((self.schema.pool_keys[position].clone(), Some(encode(&record))));
            pool.merge(address, record);
        }
        self.publish(LEADER, changes)
    }

    /// The daemon's step on the leader, on its whole view.
    fn leader_step(&mut self) -> Result<()> {
        let started = Instant::now();
        let now = self.sim.now();
        let me = self.schema.ids[LEADER].clone();
        let view = self.sim.node(LEADER).view(now);
        let cluster = decode(&me, &view)?;
        drop(view);
        let decoded = started.elapsed();

        let leading = &mut self.leading;
        let node = &mut self.nodes[LEADER];
        for state in cluster.nodes.values() {
            for (address, record) in &state.pool {
                leading.clock.observe(&record.changed);
                leading.clock.observe(&record.added);
                node.pool.merge(*address, record.clone());
            }
        }
        node.applied = adopt(node.applied.take(), &cluster);
        leading.acks.follow(node.applied.as_ref(), now);
        let unresponsive = leading.acks.unresponsive(&cluster, now);
        leading.unresponsive_now = unresponsive.len();
        leading.most_unresponsive = leading.most_unresponsive.max(unresponsive.len());
        let decide_started = Instant::now();
        let decision = decide(LeaderInput {
            cluster: &cluster,
            pool: &node.pool,
            applied: node.applied.as_ref(),
            locally_eligible: true,
            settled: leading.settled,
            local_down_interfaces: &BTreeSet::new(),
            unresponsive: &unresponsive,
        });
        let decided = decide_started.elapsed();
        if let Some(decision) = decision {
            let empty = Assignment::new();
            let published = cluster.nodes.get(&me).map_or(&empty, |state| &state.assign);
            let changes = decision_changes(published, &decision);
            let previous = node.applied.as_ref().map_or(&empty, |applied| &applied.assignment);
            let moved = decision
                .assignment
                .iter()
                .filter(|(address, holder)| previous.get(*address) != Some(*holder))
                .count();
            self.publish(LEADER, changes)?;
            let at = self.elapsed();
            self.leading.published.push(Published { at, decision: decision.clone(), moved });
            self.nodes[LEADER].applied = Some(decision);
            self.leading.acks.follow(self.nodes[LEADER].applied.as_ref(), now);
        }

        let mut held_elsewhere: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for state in cluster.live().filter(|state| state.id != cluster.me) {
            for address in state.held.keys() {
                held_elsewhere.entry(*address).or_default().push(state.id.clone());
            }
        }
        self.reconcile(LEADER, &held_elsewhere)?;

        if self.leading.settled {
            let orphans: Vec<KeyChange> = self.nodes[LEADER]
                .pool
                .records()
                .filter(|(address, record)| {
                    !cluster.live().any(|state| state.pool.get(address) == Some(*record))
                })
                .map(|(address, record)| (format!("{POOL_PREFIX}{address}"), Some(encode(record))))
                .collect();
            self.publish(LEADER, orphans)?;
        }
        self.leading.costs.record(decoded, decided, started.elapsed());
        Ok(())
    }

    /// A follower's step: follow the leader's commit when it changed, then reconcile if needed.
    fn follower_step(&mut self, index: usize) -> Result<()> {
        let leader_id = self.schema.ids[LEADER].as_str();
        let core = self.sim.node(index);
        let commit = core.value(leader_id, COMMIT_KEY);
        let fresh = commit != self.nodes[index].seen_commit.as_deref();
        if !fresh && !self.nodes[index].needs_reconcile && !self.release_seen(index) {
            return Ok(());
        }
        if fresh {
            let me = self.schema.ids[index].as_str();
            let mine = &self.schema.encoded_ids[index];
            let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            if let Some(commit) = commit {
                keys.insert(COMMIT_KEY.to_owned(), commit.to_vec());
            }
            for (position, assign_key) in self.schema.assign_keys.iter().enumerate() {
                if core.value(leader_id, assign_key) != Some(mine.as_slice()) {
                    continue;
                }
                keys.insert(assign_key.clone(), mine.clone());
                let pool_key = &self.schema.pool_keys[position];
                if let Some(record) = core.value(leader_id, pool_key) {
                    keys.insert(pool_key.clone(), record.to_vec());
                }
            }
            let mut problems = Vec::new();
            let leader_state = decode_node(leader_id, Liveness::Alive, None, &keys, &mut problems);
            if let Some(problem) = problems.first() {
                bail!("node {index} cannot decode the leader's {}: {}", problem.key, problem.reason);
            }
            let cluster = Cluster {
                me: me.to_owned(),
                nodes: BTreeMap::from([
                    (me.to_owned(), NodeState::empty(me, Liveness::Alive)),
                    (leader_id.to_owned(), leader_state),
                ]),
            };
            let node = &mut self.nodes[index];
            node.seen_commit = commit.map(<[u8]>::to_vec);
            let leader_state = &cluster.nodes[leader_id];
            node.pool.merge_all(leader_state.pool.iter().map(|(address, record)| (*address, record)));
            node.applied = adopt(node.applied.take(), &cluster);
        }
        let node = &self.nodes[index];
        let mut candidates: BTreeSet<IpAddr> = node.owned.iter().map(|placement| placement.address).collect();
        if let Some(decision) = &node.applied {
            candidates.extend(decision.assignment.keys().copied());
        }
        let held_elsewhere = self.held_elsewhere(index, &candidates);
        self.reconcile(index, &held_elsewhere)
    }

    /// Whether some address node `index` waits for may be free now: none of the holders it
    /// waited for is still live and publishing it. Until then a reconcile could only wait again,
    /// so this cheap check spares followers the full `held_elsewhere` at every view change.
    fn release_seen(&self, index: usize) -> bool {
        let core = self.sim.node(index);
        self.nodes[index].waiting.iter().any(|(address, holders)| {
            !holders.iter().any(|holder| {
                core.liveness(holder) == Some(fechter_gossip::Liveness::Alive)
                    && core.value(holder, self.schema.held_key(*address)).is_some()
            })
        })
    }

    /// The live peers, by node `index`'s own failure detector, that publish `held:*` keys for
    /// `candidates`.
    fn held_elsewhere(&self, index: usize, candidates: &BTreeSet<IpAddr>) -> BTreeMap<IpAddr, Vec<String>> {
        let mut held = BTreeMap::new();
        if candidates.is_empty() {
            return held;
        }
        let core = self.sim.node(index);
        for (other, id) in self.schema.ids.iter().enumerate() {
            if other == index || core.liveness(id) != Some(fechter_gossip::Liveness::Alive) {
                continue;
            }
            for address in candidates {
                if core.value(id, self.schema.held_key(*address)).is_some() {
                    held.entry(*address).or_insert_with(Vec::new).push(id.clone());
                }
            }
        }
        held
    }

    /// The daemon's reconcile, `held:*` publication and status publication, in its order.
    fn reconcile(&mut self, index: usize, held_elsewhere: &BTreeMap<IpAddr, Vec<String>>) -> Result<()> {
        let now = self.elapsed();
        let me = self.schema.ids[index].clone();
        let node = &mut self.nodes[index];
        let empty = Assignment::new();
        let plan = plan(ReconcileInput {
            me: &me,
            eligible: true,
            assignment: node.applied.as_ref().map_or(&empty, |decision| &decision.assignment),
            pool: &node.pool,
            held_elsewhere,
            owned: &node.owned,
            conflicted: &node.conflicted,
            down_interfaces: &BTreeSet::new(),
            may_acquire: true,
            reannounce_kept: false,
        });
        node.conflicted = plan.conflicted;
        node.reconciled = node.applied.as_ref().map(|decision| decision.commit.clone());
        node.needs_reconcile = !plan.deferred.is_empty();
        node.waiting = plan.waiting;
        node.owned.retain(|placement| !plan.remove.contains(placement));
        node.owned.extend(plan.add.iter().cloned());
        for placement in &plan.add {
            self.acquired.insert(placement.address, (index, now));
        }

        let desired = held_records(&node.owned);
        let held = held_changes(&node.published_held, &desired);
        node.published_held = desired;
        let status = NodeStatus {
            admin: Admin::Up,
            gateway_reachable: true,
            eligible: true,
            applied: node.reconciled.clone(),
            failing_checks: Vec::new(),
            down_interfaces: BTreeSet::new(),
        };
        let status_changed = node.published_status.as_ref() != Some(&status);
        let status_value = encode(&status);
        node.published_status = Some(status);
        self.publish(index, held)?;
        if status_changed {
            self.publish(index, vec![(NODE_KEY.to_owned(), Some(status_value))])?;
        }
        Ok(())
    }

    /// The leader's latest decision.
    fn decision(&self) -> Option<&Decision> {
        self.nodes[LEADER].applied.as_ref()
    }

    /// How many nodes follow the leader's latest decision.
    fn following(&self) -> usize {
        let latest = self.decision().map(|decision| &decision.commit);
        self.nodes
            .iter()
            .filter(|node| node.applied.as_ref().map(|decision| &decision.commit) == latest)
            .count()
    }

    /// Whether the leader sees every running node's status.
    fn statuses_known(&self) -> bool {
        let core = self.sim.node(LEADER);
        self.running().all(|index| core.value(self.id(index), NODE_KEY).is_some())
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&index| self.sim.is_running(index))
    }

    /// The cluster agrees: the leader's last step decided nothing new, every running node
    /// follows and reconciled its decision and owns exactly its share, and the leader sees every
    /// node's acknowledgement and `held:*` keys.
    fn agreed(&self) -> bool {
        let Some(decision) = self.decision() else {
            return false;
        };
        let mut shares: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
        for (address, holder) in &decision.assignment {
            shares.entry(holder.as_str()).or_default().insert(*address);
        }
        let leader_core = self.sim.node(LEADER);
        let commit = Some(&decision.commit);
        self.running().all(|index| {
            let node = &self.nodes[index];
            let id = self.id(index);
            let owned: BTreeSet<IpAddr> = node.owned.iter().map(|placement| placement.address).collect();
            let share = shares.get(id).cloned().unwrap_or_default();
            let acknowledged = leader_core
                .value(id, NODE_KEY)
                .and_then(|value| serde_json::from_slice::<NodeStatus>(value).ok())
                .is_some_and(|status| status.applied.as_ref() == commit);
            node.applied.as_ref().map(|decision| &decision.commit) == commit
                && node.reconciled.as_ref() == commit
                && owned == share
                && acknowledged
                && share.iter().all(|address| leader_core.value(id, self.schema.held_key(*address)).is_some())
        })
    }

    /// Every running node has the leader's commit and every node's `held:*` keys of the
    /// decision: nothing is left to replicate but heartbeats.
    fn replicated(&self) -> bool {
        let Some(decision) = self.decision() else {
            return false;
        };
        let commit = encode(&commit_value(decision));
        let leader_id = self.id(LEADER);
        self.running().all(|observer| {
            let core = self.sim.node(observer);
            core.value(leader_id, COMMIT_KEY) == Some(commit.as_slice())
                && decision
                    .assignment
                    .iter()
                    .all(|(address, holder)| core.value(holder, self.schema.held_key(*address)).is_some())
        })
    }

    /// Bytes and datagrams each running node sends per second over `window` with nothing to do.
    fn idle_traffic(&mut self, window: Duration) -> Result<(f64, f64, u64)> {
        self.sim.reset_counters();
        let writes = self.writes;
        self.run_for(window)?;
        let running: Vec<usize> = self.running().collect();
        let (bytes, datagrams) = running.iter().fold((0u64, 0u64), |(bytes, datagrams), &index| {
            let counters = self.sim.counters(index);
            (bytes + counters.bytes_sent, datagrams + counters.datagrams_sent)
        });
        let per_node_second = running.len() as f64 * window.as_secs_f64();
        Ok((bytes as f64 / per_node_second, datagrams as f64 / per_node_second, self.writes - writes))
    }
}

/// The daemon's `decode`: every node of the view, this one alive whatever the view says.
fn decode(me: &str, view: &ClusterView) -> Result<Cluster> {
    let mut problems = Vec::new();
    let cluster = decode_view(me, view, &mut problems);
    if let Some(problem) = problems.first() {
        bail!("{} published {} that does not decode: {}", problem.node, problem.key, problem.reason);
    }
    Ok(cluster)
}

/// Virtual times from the kill, filled in as they happen.
#[derive(Default)]
struct Failover {
    leader_detected: Option<Duration>,
    all_detected: Option<Duration>,
    decided: Option<Duration>,
    commit_everywhere: Option<Duration>,
    acquired: Option<Duration>,
    held_everywhere: Option<Duration>,
    agreed: Option<Duration>,
    moved: usize,
    decisions: usize,
}

impl Failover {
    /// Everything measured has happened except, perhaps, the last detector's verdict, which the
    /// gossip crate's convergence bench measures already and which takes minutes at 1 000 nodes.
    fn done(&self) -> bool {
        self.held_everywhere.is_some() && self.commit_everywhere.is_some() && self.agreed.is_some()
    }
}

/// Kills `victim` and measures the failover; see the module documentation.
fn failover(harness: &mut Harness, victim: usize, limit: Duration) -> Result<Failover> {
    let victim_id = harness.id(victim).to_owned();
    let moved: BTreeSet<IpAddr> = harness
        .decision()
        .map(|decision| {
            decision.assignment.iter().filter(|(_, holder)| **holder == victim_id).map(|(a, _)| *a).collect()
        })
        .unwrap_or_default();
    let decisions_before = harness.leading.published.len();
    harness.sim.kill(victim);
    let killed = harness.elapsed();
    let mut result = Failover { moved: moved.len(), ..Failover::default() };
    let mut undetected: BTreeSet<usize> = harness.running().collect();
    let mut without_commit: BTreeSet<usize> = undetected.clone();
    let mut without_held = undetected.clone();
    let mut new_commit: Option<(Commit, BTreeMap<IpAddr, String>)> = None;
    while harness.elapsed() - killed < limit && !result.done() {
        harness.advance()?;
        let since = harness.elapsed() - killed;
        let leader_id = harness.id(LEADER).to_owned();
        let sim = &harness.sim;
        undetected
            .retain(|&index| sim.node(index).liveness(&victim_id) == Some(fechter_gossip::Liveness::Alive));
        if result.leader_detected.is_none() && !undetected.contains(&LEADER) {
            result.leader_detected = Some(since);
        }
        if result.all_detected.is_none() && undetected.is_empty() {
            result.all_detected = Some(since);
        }
        if new_commit.is_none()
            && let Some(published) = harness.leading.published[decisions_before..].iter().find(|published| {
                moved.iter().all(|address| {
                    published.decision.assignment.get(address).is_some_and(|holder| *holder != victim_id)
                })
            })
        {
            result.decided = Some(published.at - killed);
            let holders = moved
                .iter()
                .filter_map(|address| Some((*address, published.decision.assignment.get(address)?.clone())))
                .collect();
            new_commit = Some((commit_value(&published.decision), holders));
        }
        let Some((commit, holders)) = &new_commit else {
            continue;
        };
        // The decision or a newer one: a later decision carries every assign key before it too.
        without_commit.retain(|&index| {
            let seen = sim.node(index).value(&leader_id, COMMIT_KEY);
            seen.and_then(|value| serde_json::from_slice::<Commit>(value).ok())
                .is_none_or(|seen| (seen.term, seen.seq) < (commit.term, commit.seq))
        });
        if result.commit_everywhere.is_none() && without_commit.is_empty() {
            result.commit_everywhere = Some(since);
        }
        if result.acquired.is_none()
            && holders.len() == moved.len()
            && holders.iter().all(|(address, holder)| {
                harness
                    .acquired
                    .get(address)
                    .is_some_and(|(index, at)| *at >= killed && harness.schema.ids[*index] == *holder)
            })
        {
            result.acquired = holders
                .keys()
                .filter_map(|address| harness.acquired.get(address).map(|(_, at)| *at - killed))
                .max();
        }
        if result.acquired.is_some() {
            without_held.retain(|&index| {
                let core = sim.node(index);
                !holders
                    .iter()
                    .all(|(address, holder)| core.value(holder, harness.schema.held_key(*address)).is_some())
            });
            if result.held_everywhere.is_none() && without_held.is_empty() {
                result.held_everywhere = Some(since);
            }
            let check_now = since.as_millis().is_multiple_of(AGREEMENT_CHECK.as_millis());
            if result.agreed.is_none() && check_now && harness.agreed() {
                result.agreed = Some(since);
            }
        }
    }
    result.decisions = harness.leading.published.len() - decisions_before;
    Ok(result)
}

/// CPU time of this (single-threaded) process so far, from the scheduler's statistics.
fn cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The peak resident set size of this process, in MiB.
fn peak_rss_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn show(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "timeout".to_owned(), |d| format!("{:.0} ms", ms(d)))
}

/// Prints the wall-clock time, CPU time and peak RSS of the run.
fn resources(out: &mut impl std::io::Write, wall: Instant) -> Result<()> {
    writeln!(out, "| wall-clock time | {:.1} s |", wall.elapsed().as_secs_f64())?;
    let cpu = cpu_time().map_or_else(|| "unknown".to_owned(), |cpu| format!("{:.1} s", cpu.as_secs_f64()));
    writeln!(out, "| CPU time | {cpu} |")?;
    let rss = peak_rss_mib().map_or_else(|| "unknown".to_owned(), |mib| format!("{mib:.0} MiB"));
    writeln!(out, "| peak RSS | {rss} |")?;
    Ok(())
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let wall = Instant::now();
    let mut out = std::io::stdout().lock();
    let interval = settings.interval();
    writeln!(
        out,
        "scale: {} nodes, {} addresses, {} ms gossip rounds, seed {}, ack timeout {:.1} s (the daemon's: {:.1} s)",
        settings.nodes,
        settings.addresses,
        interval.as_millis(),
        settings.seed,
        settings.ack_timeout().as_secs_f64(),
        settings.daemon_ack_timeout().as_secs_f64()
    )?;
    out.flush()?;
    let mut harness = Harness::new(&settings);

    let join = harness.run_until(interval * 600, interval * 5, |harness| {
        let sim = &harness.sim;
        harness.running().all(|observer| {
            harness
                .schema
                .ids
                .iter()
                .all(|id| sim.node(observer).liveness(id) == Some(fechter_gossip::Liveness::Alive))
        })
    })?;
    let join = join.context("the cluster did not join")?;
    writeln!(
        out,
        "joined in {:.1} s virtual ({:.1} s wall)",
        join.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    )?;
    out.flush()?;

    harness.daemons = true;
    let statuses = harness
        .run_until(interval * 600, interval, Harness::statuses_known)?
        .context("the leader never saw every node's status")?;
    harness.add_pool()?;
    harness.leading.settled = true;
    let pool_added = harness.elapsed();
    let mut setup = None;
    while setup.is_none() && harness.elapsed() - pool_added < settings.setup_limit {
        let slice = (interval * 60).min(settings.setup_limit.saturating_sub(harness.elapsed() - pool_added));
        if harness.run_until(slice, Duration::from_secs(1), Harness::agreed)?.is_some() {
            setup = Some(harness.elapsed() - pool_added);
            break;
        }
        writeln!(
            out,
            "  {:.0} s after the pool was added: {} decisions, {} of {} nodes follow the latest, {} peers unresponsive at the leader ({:.0} s wall)",
            (harness.elapsed() - pool_added).as_secs_f64(),
            harness.leading.published.len(),
            harness.following(),
            settings.nodes,
            harness.leading.unresponsive_now,
            wall.elapsed().as_secs_f64()
        )?;
        out.flush()?;
    }
    let decisions_at_setup = harness.leading.published.len();
    let moved_at_setup: usize = harness.leading.published.iter().map(|published| published.moved).sum();
    let Some(setup) = setup else {
        writeln!(
            out,
            "the cluster did not settle within {:.0} s of virtual time: {} decisions moved {} addresses, up to {} peers were unresponsive at once (ack timeout {:.0} s)",
            settings.setup_limit.as_secs_f64(),
            decisions_at_setup,
            moved_at_setup,
            harness.leading.most_unresponsive,
            settings.ack_timeout().as_secs_f64()
        )?;
        writeln!(out, "leader step: {}", harness.leading.costs.describe())?;
        return resources(&mut out, wall);
    };
    let setup_costs = std::mem::take(&mut harness.leading.costs);
    writeln!(
        out,
        "statuses known after {:.1} s; pool added and agreed in {:.1} s virtual ({} decisions, {} assignments written; {:.1} s wall so far)",
        statuses.as_secs_f64(),
        setup.as_secs_f64(),
        decisions_at_setup,
        moved_at_setup,
        wall.elapsed().as_secs_f64()
    )?;
    let replicated = harness
        .run_until(Duration::from_secs(3600), Duration::from_secs(5), Harness::replicated)?
        .context("the held keys never reached every node")?;
    writeln!(
        out,
        "every node has every held key {:.1} s later ({:.1} s virtual after the pool was added)",
        replicated.as_secs_f64(),
        (harness.elapsed() - pool_added).as_secs_f64()
    )?;
    out.flush()?;

    harness.run_for(interval * 5)?;
    let (idle_bytes, idle_datagrams, idle_writes) = harness.idle_traffic(IDLE_WINDOW)?;

    let victim = (1..settings.nodes)
        .map(|offset| (settings.nodes / 2 + offset) % settings.nodes)
        .find(|&index| {
            index != LEADER
                && harness.decision().is_some_and(|decision| {
                    decision.assignment.values().any(|holder| holder == harness.id(index))
                })
        })
        .context("no node but the leader holds an address")?;
    let victim_id = harness.id(victim).to_owned();
    let result = failover(&mut harness, victim, interval * 300)?;
    let failover_costs = std::mem::take(&mut harness.leading.costs);

    writeln!(out)?;
    writeln!(out, "| measure | value |")?;
    writeln!(out, "|---|---|")?;
    writeln!(
        out,
        "| nodes / addresses / round | {} / {} / {} ms |",
        settings.nodes,
        settings.addresses,
        interval.as_millis()
    )?;
    writeln!(out, "| join (every node sees every node alive) | {:.1} s |", join.as_secs_f64())?;
    writeln!(
        out,
        "| pool added to agreement (leader sees every ack and held key) | {:.1} s, {} decisions |",
        setup.as_secs_f64(),
        decisions_at_setup
    )?;
    writeln!(
        out,
        "| pool added to full replication (every node has every held key) | {:.1} s |",
        (setup + replicated).as_secs_f64()
    )?;
    writeln!(
        out,
        "| idle gossip per node | {idle_bytes:.0} B/s, {idle_datagrams:.1} datagrams/s ({idle_writes} daemon writes in the window) |"
    )?;
    writeln!(out, "| victim | {victim_id} holding {} addresses |", result.moved)?;
    writeln!(out, "| (a) leader declares it dead | {} |", show(result.leader_detected))?;
    writeln!(
        out,
        "| (a') every live node declares it dead | {} |",
        result.all_detected.map_or_else(|| "not yet at (f)".to_owned(), |at| show(Some(at)))
    )?;
    writeln!(out, "| (b) leader publishes the new decision | {} |", show(result.decided))?;
    writeln!(out, "| (c) every live node has the new commit | {} |", show(result.commit_everywhere))?;
    writeln!(out, "| (d) new holders published their held keys | {} |", show(result.acquired))?;
    writeln!(out, "| (e) those held keys reached every live node | {} |", show(result.held_everywhere))?;
    writeln!(out, "| (f) leader sees every node acknowledge it (agreement) | {} |", show(result.agreed))?;
    writeln!(out, "| decisions during the failover | {} |", result.decisions)?;
    writeln!(
        out,
        "| most peers found unresponsive by the leader at once | {} |",
        harness.leading.most_unresponsive
    )?;
    writeln!(out, "| leader step during setup | {} |", setup_costs.describe())?;
    writeln!(out, "| leader step during the failover | {} |", failover_costs.describe())?;
    resources(&mut out, wall)
}
