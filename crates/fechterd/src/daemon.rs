//! The runtime: one event loop that owns the node's state and turns decisions into side effects.
//!
//! [`Daemon`] waits on a closed set of inputs (a new gossip view, a network event, a control
//! command, a gateway ping result, the reconcile and refresh timers, shutdown). After each one it
//! runs one level-triggered step: decode the view, merge the pool, lead if it is this node's turn,
//! reconcile the interfaces with the followed assignment, and publish what this node really holds.
//! The daemon is generic over [`Net`], so tests run whole clusters in one process on a fake.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fechter_alloc::Assignment;
use fechter_cli::proto::{
    AddressStatus, AdminState, Body, Command, ConnectivityReport, ErrorKind, InfoReport, Liveness, NodeInfo,
    Reply, StatusReport,
};
use fechter_gossip::{ClusterView, GossipHandle, KeyChange};
use fechter_netops::{AddressSpec, AnnounceConfig, Net, NetError, NetEvent, PingError};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use self::operations::Operations;
use crate::acks::{Acknowledgements, MayHold};
use crate::checks::CheckResult;
use crate::cluster::{
    ASSIGN_PREFIX, Admin, COMMIT_KEY, Cluster, CommitRef, DecodeProblem, HELD_PREFIX, HeldRecord, NODE_KEY,
    NodeState, NodeStatus, POOL_PREFIX, compare_ids, decode_node, encode,
};
use crate::control::ControlRequest;
use crate::gateway::GatewayState;
use crate::hlc::HybridClock;
use crate::leader::{Decision, LeaderInput, adopt, commit_value, decide, leader};
use crate::maintenance::{MAINTENANCE_KEY, Maintenance, MaintenanceRecord};
use crate::options::{Options, SETTLE_INTERVALS};
use crate::persist::save_pool;
use crate::pool::{Pool, PoolError, PoolRecord};
use crate::reclaim::Reclaim;
use crate::reconcile::{Placement, ReconcileInput, by_interface, plan};
use crate::service::Watchdog;
use crate::settle::{MEMBERSHIP_SETTLE_INTERVALS, Observation, Resettle, Settling};

mod operations;

/// How often the daemon reconciles even when nothing reported a change.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the daemon needs besides its collaborators.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// This node's id, `ip:port`; also its gossip node name.
    pub node_id: String,
    /// The gateway to ping.
    pub gateway: IpAddr,
    /// Where the pool is saved.
    pub state_dir: PathBuf,
    /// Start admin-up.
    pub admin_up: bool,
    /// Hold addresses only while this many live nodes are seen (0: off).
    pub quorum: usize,
    /// How long after start the node neither leads nor acquires, so it hears its peers first; the
    /// same again after it becomes ready or hears peers after seeing none (see [`crate::settle`]).
    pub settle_time: Duration,
    /// How acquisitions are announced.
    pub announce: AnnounceConfig,
    /// How often held addresses are announced again, if at all.
    pub refresh_interval: Option<Duration>,
    /// How often the gateway is pinged.
    pub ping_interval: Duration,
    /// How long a ping waits for its reply.
    pub ping_timeout: Duration,
    /// How often the daemon reconciles without a trigger.
    pub reconcile_interval: Duration,
}

impl DaemonConfig {
    /// The configuration the command line asks for.
    pub fn from_options(options: &Options) -> DaemonConfig {
        DaemonConfig {
            node_id: options.node_id(),
            gateway: options.gateway,
            state_dir: options.state_dir.clone(),
            admin_up: options.up,
            quorum: options.quorum,
            settle_time: options.gossip_interval() * SETTLE_INTERVALS,
            announce: AnnounceConfig {
                count: options.announce_count,
                interval: Duration::from_millis(options.announce_interval_ms),
            },
            refresh_interval: options.refresh_interval(),
            ping_interval: Duration::from_millis(options.ping_interval_ms),
            ping_timeout: Duration::from_millis(options.ping_timeout_ms),
            reconcile_interval: RECONCILE_INTERVAL,
        }
    }
}

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// Network events could not be subscribed to.
    #[error("subscribing to network events: {0}")]
    Subscribe(#[source] NetError),
    /// The gossip driver stopped while the daemon was running.
    #[error("the gossip driver stopped unexpectedly")]
    GossipStopped,
}

/// Removes every fechter-owned address on every interface: leftovers of an earlier run that
/// crashed. Call it before joining the cluster. Returns how many were removed.
/// Every removal is attempted; the first failure, if any, is returned after the others.
pub async fn remove_stale_addresses<N: Net>(net: &N) -> Result<usize, NetError> {
    let stale: Vec<AddressSpec> = net
        .list_addresses()
        .await?
        .iter()
        .filter(|installed| installed.owned)
        .map(|installed| installed.spec())
        .collect();
    let mut removed = 0;
    let mut first_error = None;
    for (spec, outcome) in net.remove_addresses(&stale).await {
        match outcome {
            Ok(()) => {
                info!(address = %spec, "removed a stale address left by an earlier run");
                removed += 1;
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(removed), Err)
}

/// One input of the event loop.
enum Input {
    View,
    Net(NetEvent),
    NetClosed,
    Control(ControlRequest),
    ControlClosed,
    Gateway(Result<Duration, PingError>),
    Timer,
    Refresh,
    Settled,
    Check(CheckResult),
    Reload(Box<Options>),
    Shutdown,
}

/// A running node's state.
pub struct Daemon<N: Net> {
    config: DaemonConfig,
    net: Arc<N>,
    gossip: GossipHandle,
    view: watch::Receiver<Arc<ClusterView>>,
    clock: HybridClock,
    pool: Pool,
    applied: Option<Decision>,
    /// Which peers stopped acknowledging the decisions followed here.
    acks: Acknowledgements,
    /// The peers found unresponsive at the last step, to log changes once.
    unresponsive: BTreeSet<String>,
    /// The commit of the decision the last successful reconcile worked from.
    reconciled: Option<CommitRef>,
    admin: Admin,
    gateway: GatewayState,
    /// When this node may lead and acquire: start-up settling, re-settling and holds.
    settling: Settling,
    /// When kept addresses are announced again after a disturbance.
    reclaim: Reclaim,
    eligible: bool,
    owned: Vec<Placement>,
    conflicted: BTreeSet<IpAddr>,
    leader: Option<String>,
    reported_problems: BTreeSet<DecodeProblem>,
    /// The cluster-wide maintenance flag; while it is on, assignments and interfaces are frozen.
    maintenance: Maintenance,
    /// Reloaded options (SIGHUP), while someone sends them.
    reloads: Option<mpsc::Receiver<Options>>,
    watchdog: Watchdog,
    /// Health checks, link monitoring, hooks and metrics.
    ops: Operations,
}

impl<N: Net> Daemon<N> {
    /// A daemon for an already spawned gossip driver, starting from the pool loaded from disk.
    pub fn new(config: DaemonConfig, net: N, gossip: GossipHandle, pool: Pool) -> Daemon<N> {
        let mut clock = HybridClock::new();
        for stamp in pool.stamps() {
            clock.observe(stamp);
        }
        let admin = if config.admin_up { Admin::Up } else { Admin::Down };
        let view = gossip.watch();
        let acks = Acknowledgements::new(ack_timeout(config.settle_time));
        Daemon {
            settling: Settling::new(
                Instant::now(),
                config.settle_time,
                membership_settle(config.settle_time),
            ),
            reclaim: Reclaim::new(),
            config,
            net: Arc::new(net),
            gossip,
            view,
            clock,
            pool,
            applied: None,
            acks,
            unresponsive: BTreeSet::new(),
            reconciled: None,
            admin,
            gateway: GatewayState::new(),
            eligible: false,
            owned: Vec::new(),
            conflicted: BTreeSet::new(),
            leader: None,
            reported_problems: BTreeSet::new(),
            maintenance: Maintenance::default(),
            reloads: None,
            watchdog: Watchdog::default(),
            ops: Operations::default(),
        }
    }

    /// Applies the reloadable options of every [`Options`] received on `reloads`.
    pub fn with_reloads(mut self, reloads: mpsc::Receiver<Options>) -> Daemon<N> {
        self.reloads = Some(reloads);
        self
    }

    /// Feeds `watchdog` from the event loop.
    pub fn with_watchdog(mut self, watchdog: Watchdog) -> Daemon<N> {
        self.watchdog = watchdog;
        self
    }

    /// Starts from the maintenance flag saved in the state directory.
    pub fn with_maintenance(mut self, record: Option<MaintenanceRecord>) -> Daemon<N> {
        if let Some(record) = &record {
            self.clock.observe(&record.changed);
        }
        self.maintenance = Maintenance::new(record);
        self
    }

    /// Runs until `shutdown` completes, then releases every address, leaves the cluster and returns.
    pub async fn run(
        mut self,
        mut control: mpsc::Receiver<ControlRequest>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let mut net_events = self.net.subscribe().map_err(DaemonError::Subscribe)?;
        let (ping_results, mut gateway_results) = mpsc::channel(4);
        let mut pinger = tokio::spawn(ping_gateway(
            Arc::clone(&self.net),
            self.config.gateway,
            self.config.ping_interval,
            self.config.ping_timeout,
            ping_results.clone(),
        ));
        let mut reloads = self.reloads.take();
        let (check_tasks, mut check_results) = self.start_operations();
        self.settling = Settling::new(
            Instant::now(),
            self.config.settle_time,
            membership_settle(self.config.settle_time),
        );
        info!(node = %self.config.node_id, admin = ?self.admin, pool = self.pool.records().count(), "fechterd started");
        self.republish_pool().await;
        self.republish_maintenance().await;

        let mut timer = interval(self.config.reconcile_interval);
        let mut refresh = self.config.refresh_interval.map(|period| {
            let mut refresh = interval(period);
            refresh.reset();
            refresh
        });
        let (mut net_open, mut control_open) = (true, true);
        let mut shutdown = std::pin::pin!(shutdown);
        let result = loop {
            // Settling, holds and follow-up announcements fall due at deadlines that a later step
            // may move: step when they pass.
            let settle_wake =
                [self.settling.wake_at(Instant::now()), self.reclaim.wake_at()].into_iter().flatten().min();
            let input = tokio::select! {
                () = &mut shutdown => Input::Shutdown,
                changed = self.view.changed() => match changed {
                    Ok(()) => Input::View,
                    Err(_) => break Err(DaemonError::GossipStopped),
                },
                event = net_events.recv(), if net_open => event.map_or(Input::NetClosed, Input::Net),
                request = control.recv(), if control_open => request.map_or(Input::ControlClosed, Input::Control),
                Some(result) = gateway_results.recv() => Input::Gateway(result),
                Some(result) = check_results.recv() => Input::Check(result),
                _ = timer.tick() => Input::Timer,
                () = tick_optional(&mut refresh) => Input::Refresh,
                () = sleep_until_optional(settle_wake) => Input::Settled,
                Some(options) = recv_optional(&mut reloads) => Input::Reload(Box::new(options)),
            };
            let wall_ms = wall_clock_ms();
            match input {
                Input::Shutdown => break Ok(()),
                Input::View => {}
                Input::Timer => self.update_links(true).await,
                Input::Net(event) => {
                    self.on_net_event(event);
                    // Installing or removing many addresses makes a burst of events: take all
                    // that already wait, so the burst costs one step instead of one per address.
                    while let Ok(event) = net_events.try_recv() {
                        self.on_net_event(event);
                    }
                }
                Input::Check(result) => self.record_check(&result),
                Input::NetClosed => {
                    warn!("network events stopped; relying on the periodic reconcile");
                    net_open = false;
                }
                Input::Control(request) => {
                    let reply = self.handle_command(request.command, wall_ms).await;
                    // A dropped receiver only means the client went away.
                    let _ = request.reply.send(reply);
                }
                Input::ControlClosed => control_open = false,
                Input::Gateway(result) => self.record_ping(result),
                Input::Refresh => self.refresh().await,
                Input::Settled => debug!("a settling, holding or announcement deadline passed"),
                Input::Reload(options) => {
                    let before = self.config.clone();
                    self.apply_reload(&options);
                    if (before.ping_interval, before.ping_timeout)
                        != (self.config.ping_interval, self.config.ping_timeout)
                    {
                        pinger.abort();
                        pinger = tokio::spawn(ping_gateway(
                            Arc::clone(&self.net),
                            self.config.gateway,
                            self.config.ping_interval,
                            self.config.ping_timeout,
                            ping_results.clone(),
                        ));
                    }
                    if before.refresh_interval != self.config.refresh_interval {
                        refresh = self.config.refresh_interval.map(|period| {
                            let mut refresh = interval(period);
                            refresh.reset();
                            refresh
                        });
                    }
                }
            }
            self.step(Instant::now()).await;
            self.watchdog.feed(Instant::now());
        };
        pinger.abort();
        drop(check_tasks);
        self.shut_down().await;
        result
    }

    /// Takes the options a reload may change without a restart (see [`crate::config::RELOADABLE`];
    /// the log filter is the caller's).
    fn apply_reload(&mut self, options: &Options) {
        let reloaded = DaemonConfig::from_options(options);
        self.config.quorum = reloaded.quorum;
        self.config.announce = reloaded.announce;
        self.config.refresh_interval = reloaded.refresh_interval;
        self.config.ping_interval = reloaded.ping_interval;
        self.config.ping_timeout = reloaded.ping_timeout;
        debug!(config = ?self.config, "applied reloaded options");
    }

    /// One level-triggered pass over everything.
    async fn step(&mut self, now: Instant) {
        let view = Arc::clone(&self.view.borrow_and_update());
        let cluster = self.decode(&view);
        self.merge_pool(&cluster);
        self.merge_maintenance(&view);

        self.update_links(false).await;
        let live = cluster.live().count();
        let quorum_seen = self.config.quorum == 0 || live >= self.config.quorum;
        let ready = self.admin == Admin::Up && self.gateway.reachable() && quorum_seen && self.ops.healthy();
        let live_peers: BTreeSet<String> =
            cluster.live().filter(|node| node.id != cluster.me).map(|node| node.id.clone()).collect();
        let gate = self.settling.observe(Observation {
            now,
            ready,
            live_peers: &live_peers,
            quorum: self.config.quorum > 0,
        });
        for reason in &gate.resettled {
            let (what, wait) = match reason {
                Resettle::BecameReady => {
                    ("became ready: settling before it leads or acquires", self.config.settle_time)
                }
                Resettle::IsolationEnded => (
                    "hears peers again after seeing none: holding leadership and acquisitions",
                    self.config.settle_time,
                ),
                Resettle::MembershipShrank => (
                    "live membership shrank under a quorum: holding leadership and acquisitions",
                    membership_settle(self.config.settle_time),
                ),
            };
            info!(live_nodes = live, ?wait, "{what}");
        }
        let (eligible, settled) = (gate.eligible, gate.may_act);
        if eligible != self.eligible {
            info!(
                eligible,
                admin = ?self.admin,
                gateway_reachable = self.gateway.reachable(),
                healthy = self.ops.healthy(),
                live_nodes = live,
                quorum = self.config.quorum,
                "eligibility changed"
            );
            self.eligible = eligible;
        }

        let current_leader = leader(&cluster).map(str::to_owned);
        if current_leader != self.leader {
            info!(leader = current_leader.as_deref().unwrap_or("none"), "leader changed");
            self.leader = current_leader;
        }
        let before = self.applied.as_ref().map(|decision| decision.commit.clone());
        self.applied = adopt(self.applied.take(), &cluster);
        let after = self.applied.as_ref().map(|decision| &decision.commit);
        if before.as_ref() != after
            && let Some(commit) = after
        {
            debug!(term = commit.term, seq = commit.seq, author = %commit.author, "following a new assignment");
        }
        self.acks.follow(self.applied.as_ref(), now);
        let unresponsive = self.acks.unresponsive(&cluster, now);
        self.log_responsiveness(&unresponsive);
        // In maintenance mode the leader decides nothing: the last decision stands.
        let decision = if self.maintenance.is_on() {
            None
        } else {
            decide(LeaderInput {
                cluster: &cluster,
                pool: &self.pool,
                applied: self.applied.as_ref(),
                locally_eligible: eligible,
                settled,
                local_down_interfaces: &self.ops.down_interfaces,
                unresponsive: &unresponsive,
            })
        };
        if let Some(decision) = decision {
            self.publish_decision(&cluster, decision).await;
            self.acks.follow(self.applied.as_ref(), now);
        }

        // A node that saw no peer and hears them again holds what its lone view gave it, most of
        // it copies it is about to release: announcing those would pull neighbours away from the
        // real holders just before the release, and nothing would pull them back. The same holds
        // while it still follows a decision made alone.
        let lone_view = gate.resettled.contains(&Resettle::IsolationEnded)
            || self.applied.as_ref().is_some_and(|decision| decision.alone && !live_peers.is_empty());
        let membership_changed = gate.membership_changed && !lone_view;
        let deaf_peer = cluster.live().any(|node| node.deaf);
        let follow_up = self.reclaim.due(now, membership_changed, deaf_peer) && !lone_view;
        if follow_up {
            debug!(deaf_peer, "announcing kept addresses again after a disturbance");
        }
        self.reconcile(&cluster, eligible, settled, membership_changed || follow_up).await;
        self.publish_held(&cluster).await;
        self.publish_status(&cluster).await;
        // Housekeeping comes last, so that a failover's decision and acquisitions never wait
        // behind it.
        if settled && self.leader.as_deref() == Some(self.config.node_id.as_str()) {
            self.adopt_orphaned_pool_records(&cluster).await;
            self.adopt_orphaned_maintenance(&cluster, &view).await;
        }
        self.record_metrics();
    }

    /// Logs the peers that became unresponsive or acknowledge again since the last step.
    fn log_responsiveness(&mut self, unresponsive: &BTreeMap<String, MayHold>) {
        let now: BTreeSet<String> = unresponsive.keys().cloned().collect();
        for id in now.difference(&self.unresponsive) {
            warn!(node = %id, timeout = ?ack_timeout(self.config.settle_time), "peer acknowledges no decision: it gets no new addresses and keeps what it may hold");
        }
        for id in self.unresponsive.difference(&now) {
            info!(node = %id, "peer acknowledges decisions again");
        }
        self.unresponsive = now;
    }

    /// Decodes a gossip view, logging each newly seen bad key once.
    fn decode(&mut self, view: &ClusterView) -> Cluster {
        let mut problems = Vec::new();
        let cluster = decode_view(&self.config.node_id, view, &mut problems);
        let problems: BTreeSet<DecodeProblem> = problems.into_iter().collect();
        for problem in problems.difference(&self.reported_problems) {
            warn!(node = %problem.node, key = %problem.key, reason = %problem.reason, "ignoring a gossip key that does not decode");
        }
        self.reported_problems = problems;
        cluster
    }

    /// Merges every node's pool records into the local pool and saves it when it changed.
    fn merge_pool(&mut self, cluster: &Cluster) {
        let mut changed = false;
        for node in cluster.nodes.values() {
            for (address, record) in &node.pool {
                self.clock.observe(&record.changed);
                self.clock.observe(&record.added);
                changed |= self.pool.merge(*address, record.clone());
            }
        }
        if changed {
            let active = self.pool.records().filter(|(_, record)| record.active).count();
            info!(active, "the pool changed");
            self.save_pool();
        }
    }

    fn save_pool(&self) {
        if let Err(error) = save_pool(&self.config.state_dir, &self.pool) {
            error!(%error, "could not save the pool; peers still hold it");
        }
    }

    /// Publishes every pool record held locally, so that a restart of the whole cluster keeps it.
    async fn republish_pool(&mut self) {
        if let Err(error) = self.gossip.apply(pool_changes(self.pool.records())).await {
            warn!(%error, "could not publish the pool");
        }
    }

    /// Publishes the pool records that no live node publishes any more, so the pool outlives
    /// the nodes that wrote it once gossip forgets them.
    async fn adopt_orphaned_pool_records(&mut self, cluster: &Cluster) {
        let orphans =
            pool_changes(self.pool.records().filter(|(address, record)| {
                !cluster.live().any(|node| node.pool.get(address) == Some(*record))
            }));
        if orphans.is_empty() {
            return;
        }
        // One batch: after the node that added a large pool dies, every record is an orphan.
        debug!(records = orphans.len(), "re-publishing the pool records no live node publishes");
        if let Err(error) = self.gossip.apply(orphans).await {
            warn!(%error, "could not re-publish the orphaned pool records");
        }
    }

    /// Merges every node's maintenance record, alive or dead; saves and logs a change of the flag.
    fn merge_maintenance(&mut self, view: &ClusterView) {
        let was_on = self.maintenance.is_on();
        let mut changed = false;
        for (name, node) in &view.nodes {
            match crate::maintenance::decode(&node.keys) {
                Some(Ok(record)) => {
                    self.clock.observe(&record.changed);
                    changed |= self.maintenance.merge(record);
                }
                Some(Err(reason)) => {
                    debug!(node = %name, %reason, "ignoring a maintenance key that does not decode")
                }
                None => {}
            }
        }
        if changed {
            self.maintenance_changed(was_on);
        }
    }

    /// Saves the flag after it changed, and says so when it turned.
    fn maintenance_changed(&self, was_on: bool) {
        let Some(record) = self.maintenance.record() else { return };
        if let Err(error) = crate::maintenance::save(&self.config.state_dir, record) {
            error!(%error, "could not save the maintenance flag; peers still hold it");
        }
        match (was_on, record.on) {
            (false, true) => warn!(
                by = %record.changed.node,
                "maintenance mode is on: every assignment is frozen, no address is acquired or released"
            ),
            (true, false) => info!(by = %record.changed.node, "maintenance mode is off: failover resumes"),
            _ => {}
        }
    }

    /// Publishes the saved maintenance flag, so that a restart of the whole cluster keeps it.
    async fn republish_maintenance(&mut self) {
        if let Some(record) = self.maintenance.record().cloned() {
            self.set(MAINTENANCE_KEY, encode(&record)).await;
        }
    }

    /// Publishes the winning maintenance flag when no live node publishes it any more.
    async fn adopt_orphaned_maintenance(&mut self, cluster: &Cluster, view: &ClusterView) {
        let Some(record) = self.maintenance.record().cloned() else { return };
        let published = cluster.live().any(|node| {
            view.nodes
                .get(&node.id)
                .and_then(|node| crate::maintenance::decode(&node.keys))
                .is_some_and(|decoded| decoded.as_ref() == Ok(&record))
        });
        if !published {
            debug!("re-publishing the maintenance flag no live node publishes");
            self.set(MAINTENANCE_KEY, encode(&record)).await;
        }
    }

    /// Writes a leader decision: changed `assign:*` keys first, then the commit.
    async fn publish_decision(&mut self, cluster: &Cluster, decision: Decision) {
        let empty = Assignment::new();
        let published = cluster.nodes.get(&self.config.node_id).map_or(&empty, |node| &node.assign);
        // One batch, one push round: a takeover rewrites every `assign:*` key, and a write per
        // key used to cost a gossip round each, seconds for hundreds of addresses. The batch is
        // applied in order and stops at a refused write, so the commit never goes out without
        // every key it covers.
        if let Err(error) = self.gossip.apply(decision_changes(published, &decision)).await {
            warn!(%error, "could not publish an assignment");
            return;
        }
        let previous = self.applied.as_ref().map_or(&empty, |applied| &applied.assignment);
        let moved = decision
            .assignment
            .iter()
            .filter(|(address, holder)| previous.get(*address) != Some(*holder))
            .count();
        info!(
            term = decision.commit.term,
            seq = decision.commit.seq,
            addresses = decision.assignment.len(),
            moved,
            "published an assignment as leader"
        );
        self.decided(moved);
        self.applied = Some(decision);
    }

    /// Removes `placements` from the interfaces in one batch: releasing a node's every address
    /// costs one netlink dump, not one per address.
    async fn release(&mut self, placements: &[Placement]) {
        if placements.is_empty() {
            return;
        }
        let specs: Vec<AddressSpec> = placements.iter().map(spec_of).collect();
        let outcomes = self.net.remove_addresses(&specs).await;
        for (placement, (_, outcome)) in placements.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    info!(address = %placement.address, interface = %placement.interface, "released");
                    self.released(placement);
                }
                Err(error) => warn!(address = %placement.address, %error, "could not release"),
            }
        }
    }

    /// Brings the interfaces in line with the followed assignment.
    ///
    /// `may_acquire`: settled and not holding. `reannounce_kept`: live membership changed, so
    /// every address kept here is announced again, repairing neighbour entries that a brief
    /// holder elsewhere misdirected.
    async fn reconcile(
        &mut self,
        cluster: &Cluster,
        eligible: bool,
        may_acquire: bool,
        reannounce_kept: bool,
    ) {
        let owned = match self.list_owned().await {
            Ok(owned) => owned,
            Err(error) => {
                warn!(%error, "could not list addresses; reconciling later");
                return;
            }
        };
        let mut held_elsewhere: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for node in cluster.live().filter(|node| node.id != cluster.me) {
            for address in node.held.keys() {
                held_elsewhere.entry(*address).or_default().push(node.id.clone());
            }
        }
        let empty = Assignment::new();
        let assignment = self.applied.as_ref().map_or(&empty, |decision| &decision.assignment);
        if self.maintenance.is_on() {
            // Frozen: whatever is on the interfaces stays there, and nothing is added.
            self.owned = owned;
            return;
        }
        let plan = plan(ReconcileInput {
            me: &self.config.node_id,
            eligible,
            assignment,
            pool: &self.pool,
            held_elsewhere: &held_elsewhere,
            owned: &owned,
            conflicted: &self.conflicted,
            down_interfaces: &self.ops.down_interfaces,
            may_acquire,
            reannounce_kept,
        });
        if !plan.deferred.is_empty() {
            debug!(addresses = ?plan.deferred, "assigned here; acquiring once settled");
        }
        for (address, holders) in &plan.waiting {
            debug!(%address, ?holders, "assigned here but still held elsewhere; waiting for its release");
        }
        for address in plan.conflicted.difference(&self.conflicted) {
            warn!(%address, holders = ?held_elsewhere.get(address), "address also held by another node");
        }
        self.conflicted = plan.conflicted.clone();
        self.reconciled = self.applied.as_ref().map(|decision| decision.commit.clone());
        if plan.is_idle() {
            self.owned = owned;
            return;
        }
        self.release(&plan.remove).await;
        let mut added = Vec::new();
        for placement in &plan.add {
            match self.net.add_address(&spec_of(placement)).await {
                Ok(()) => {
                    info!(address = %placement.address, interface = %placement.interface, "acquired");
                    added.push(placement);
                }
                Err(error) => {
                    warn!(address = %placement.address, %error, "could not acquire; retrying later")
                }
            }
        }
        if !plan.reannounce.is_empty() {
            let addresses: Vec<IpAddr> = plan.reannounce.iter().map(|placement| placement.address).collect();
            info!(?addresses, "announcing held addresses again");
        }
        self.announce(by_interface(added.iter().copied().chain(&plan.reannounce))).await;
        self.acquired(&added);
        self.owned = match self.list_owned().await {
            Ok(owned) => owned,
            Err(error) => {
                warn!(%error, "could not list addresses after reconciling");
                owned
            }
        };
    }

    async fn announce(&self, batches: BTreeMap<String, Vec<IpAddr>>) {
        for (interface, addresses) in batches {
            match self.net.announce(&interface, &addresses, &self.config.announce).await {
                Ok(()) => self.announced(addresses.len()),
                Err(error) => warn!(%interface, ?addresses, %error, "could not announce"),
            }
        }
    }

    /// Announces every held address again, one batch per interface.
    async fn refresh(&self) {
        debug!(addresses = self.owned.len(), "refreshing announcements");
        self.announce(by_interface(&self.owned)).await;
    }

    async fn list_owned(&self) -> Result<Vec<Placement>, NetError> {
        Ok(self
            .net
            .list_addresses()
            .await?
            .into_iter()
            .filter(|installed| installed.owned)
            .map(|installed| Placement {
                interface: installed.interface,
                address: installed.address,
                prefix_len: installed.prefix_len,
            })
            .collect())
    }

    /// Makes the `held:*` keys match what netlink showed.
    async fn publish_held(&mut self, cluster: &Cluster) {
        let empty = BTreeMap::new();
        let published = cluster.nodes.get(&self.config.node_id).map_or(&empty, |node| &node.held);
        let desired = held_records(&self.owned);
        // One batch for however many addresses reconcile just acquired or released.
        if let Err(error) = self.gossip.apply(held_changes(published, &desired)).await {
            warn!(%error, "could not publish the held addresses");
        }
    }

    async fn publish_status(&mut self, cluster: &Cluster) {
        let (failing_checks, down_interfaces) = self.published_health();
        let status = NodeStatus {
            admin: self.admin,
            gateway_reachable: self.gateway.reachable(),
            eligible: self.eligible,
            applied: self.reconciled.clone(),
            failing_checks,
            down_interfaces,
        };
        let published = cluster.nodes.get(&self.config.node_id).and_then(|node| node.status.as_ref());
        if published != Some(&status) {
            self.set(NODE_KEY, encode(&status)).await;
        }
    }

    /// Sets a gossip key; returns whether it worked.
    async fn set(&self, key: &str, value: Vec<u8>) -> bool {
        match self.gossip.set(key, value).await {
            Ok(()) => true,
            Err(error) => {
                warn!(key, %error, "could not publish a gossip key");
                false
            }
        }
    }

    fn record_ping(&mut self, result: Result<Duration, PingError>) {
        let replied = match &result {
            Ok(round_trip) => {
                debug!(?round_trip, "gateway replied");
                true
            }
            Err(error) => {
                debug!(%error, "gateway ping failed");
                false
            }
        };
        match self.gateway.record(replied) {
            Some(true) => info!(gateway = %self.config.gateway, "gateway reachable"),
            Some(false) => {
                warn!(gateway = %self.config.gateway, "gateway unreachable: releasing every address")
            }
            None => {}
        }
    }

    async fn handle_command(&mut self, command: Command, wall_ms: u64) -> Reply {
        match command {
            Command::AddAddress { interface, address, prefix_len } => {
                let stamp = self.clock.stamp(wall_ms, &self.config.node_id);
                match self.pool.plan_add(&interface, address, prefix_len, stamp) {
                    Ok(record) => self.commit_pool_change(address, record, "added to the pool").await,
                    Err(error) => pool_error_reply(error),
                }
            }
            Command::RemoveAddress { interface, address } => {
                let stamp = self.clock.stamp(wall_ms, &self.config.node_id);
                match self.pool.plan_remove(&interface, address, stamp) {
                    Ok(record) => self.commit_pool_change(address, record, "removed from the pool").await,
                    Err(error) => pool_error_reply(error),
                }
            }
            Command::Up => {
                if self.admin != Admin::Up {
                    info!("admin state up");
                }
                self.admin = Admin::Up;
                Reply::ok(Body::Done)
            }
            Command::Down => {
                if self.admin != Admin::Down {
                    info!("admin state down: handing over every address");
                }
                self.admin = Admin::Down;
                Reply::ok(Body::Done)
            }
            Command::Maintenance { on } => {
                let was_on = self.maintenance.is_on();
                let record =
                    MaintenanceRecord { on, changed: self.clock.stamp(wall_ms, &self.config.node_id) };
                if let Err(error) = self.gossip.set(MAINTENANCE_KEY, encode(&record)).await {
                    return Reply::error(
                        ErrorKind::Internal,
                        format!("could not publish the change: {error}"),
                    );
                }
                self.maintenance.merge(record);
                self.maintenance_changed(was_on);
                Reply::ok(Body::Done)
            }
            Command::Status => Reply::ok(Body::Status(self.status_report())),
            Command::Info => {
                let view = self.gossip.view().await;
                let cluster = self.decode(&view);
                Reply::ok(Body::Info(self.info_report(&cluster)))
            }
            Command::Connectivity => Reply::ok(Body::Connectivity(ConnectivityReport {
                gateway: self.config.gateway,
                reachable: self.gateway.reachable(),
            })),
        }
    }

    /// Publishes a pool record written here, then merges and saves it.
    async fn commit_pool_change(&mut self, address: IpAddr, record: PoolRecord, what: &str) -> Reply {
        if let Err(error) = self.gossip.set(&format!("{POOL_PREFIX}{address}"), encode(&record)).await {
            return Reply::error(ErrorKind::Internal, format!("could not publish the change: {error}"));
        }
        info!(%address, interface = %record.interface, prefix_len = record.prefix_len, "{what}");
        self.pool.merge(address, record);
        self.save_pool();
        Reply::ok(Body::Done)
    }

    fn status_report(&self) -> StatusReport {
        let view = self.view.borrow().clone();
        let me = self.config.node_id.as_str();
        let empty = Assignment::new();
        let assignment = self.applied.as_ref().map_or(&empty, |decision| &decision.assignment);
        let addresses = self
            .pool
            .ordered()
            .into_iter()
            .filter(|(_, record)| record.active)
            .map(|(address, record)| {
                let held_key = format!("{HELD_PREFIX}{address}");
                let mut held_by: Vec<String> = view
                    .nodes
                    .iter()
                    .filter(|(name, node)| {
                        name.as_str() != me
                            && node.liveness == fechter_gossip::Liveness::Alive
                            && node.keys.contains_key(&held_key)
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                if self.owned.iter().any(|placement| placement.address == address) {
                    held_by.push(me.to_owned());
                }
                held_by.sort_by(|a, b| compare_ids(a, b));
                AddressStatus {
                    interface: record.interface.clone(),
                    address,
                    prefix_len: record.prefix_len,
                    assigned_to: assignment.get(&address).cloned(),
                    held_by,
                }
            })
            .collect();
        StatusReport {
            leader: self.leader.clone(),
            addresses,
            maintenance: self.maintenance.is_on(),
            health: self.health_report(),
        }
    }

    fn info_report(&self, cluster: &Cluster) -> InfoReport {
        let local = NodeInfo {
            id: self.config.node_id.clone(),
            liveness: Liveness::Alive,
            admin: Some(admin_state(self.admin)),
            gateway_reachable: Some(self.gateway.reachable()),
            eligible: self.eligible,
            phi: None,
            held: self.owned.len(),
            health: Some(self.local_health()),
        };
        let mut peers: Vec<NodeInfo> = cluster
            .nodes
            .values()
            .filter(|node| node.id != cluster.me)
            .map(|node| NodeInfo {
                id: node.id.clone(),
                liveness: node.liveness,
                admin: node.status.as_ref().map(|status| admin_state(status.admin)),
                gateway_reachable: node.status.as_ref().map(|status| status.gateway_reachable),
                eligible: node.is_live() && node.status.as_ref().is_some_and(|status| status.eligible),
                phi: node.phi,
                held: node.held.len(),
                health: Self::peer_health(cluster, &node.id),
            })
            .collect();
        peers.sort_by(|a, b| compare_ids(&a.id, &b.id));
        InfoReport { local, peers, leader: leader(cluster).map(str::to_owned) }
    }

    /// Releases everything, withdraws the `held:*` keys and leaves the cluster.
    async fn shut_down(&mut self) {
        if self.maintenance.is_on() {
            // Frozen: the addresses stay on the interfaces for the next start to keep, so that
            // fechterd can be upgraded without moving traffic.
            warn!(
                addresses = self.owned.len(),
                "maintenance mode is on: leaving every address on the interfaces and leaving the cluster"
            );
            self.gossip.leave().await;
            info!("left the cluster");
            return;
        }
        info!("shutting down: releasing every address and leaving the cluster");
        self.admin = Admin::Down;
        self.eligible = false;
        let owned = self.list_owned().await.unwrap_or_else(|error| {
            warn!(%error, "could not list addresses; releasing the ones last seen");
            self.owned.clone()
        });
        self.release(&owned).await;
        self.owned.clear();
        let view = Arc::clone(&self.view.borrow());
        let cluster = self.decode(&view);
        self.publish_held(&cluster).await;
        self.publish_status(&cluster).await;
        self.gossip.leave().await;
        info!("left the cluster");
        self.finish_hooks().await;
    }
}

/// The writes that publish `decision` over the `assign:*` keys already `published`: the changed
/// assignments, the removed ones, then the commit, which must come after every key it covers.
pub fn decision_changes(published: &Assignment, decision: &Decision) -> Vec<KeyChange> {
    let changed = decision
        .assignment
        .iter()
        .filter(|(address, holder)| published.get(*address) != Some(*holder))
        .map(|(address, holder)| (format!("{ASSIGN_PREFIX}{address}"), Some(encode(holder))));
    let removed = published
        .keys()
        .filter(|address| !decision.assignment.contains_key(address))
        .map(|address| (format!("{ASSIGN_PREFIX}{address}"), None));
    let commit = (COMMIT_KEY.to_owned(), Some(encode(&commit_value(decision))));
    changed.chain(removed).chain(std::iter::once(commit)).collect()
}

/// Decodes every node of a gossip view, `me` alive whatever the view says; keys that do not
/// decode go to `problems`.
pub fn decode_view(me: &str, view: &ClusterView, problems: &mut Vec<DecodeProblem>) -> Cluster {
    let mut nodes: BTreeMap<String, NodeState> = view
        .nodes
        .iter()
        .map(|(name, node)| {
            let liveness = if name == me { Liveness::Alive } else { liveness_of(node.liveness) };
            let mut state = decode_node(name, liveness, node.phi, &node.keys, problems);
            // Gossip judges hearing only for peers; this node never counts as deaf to itself.
            state.deaf = name != me && node.hears_me == Some(false);
            state.holds_all_mine = if name == me { None } else { node.holds_all_mine };
            (name.clone(), state)
        })
        .collect();
    nodes.entry(me.to_owned()).or_insert_with(|| NodeState::empty(me, Liveness::Alive));
    Cluster { me: me.to_owned(), nodes }
}

/// The `held:*` records that describe `owned`.
pub fn held_records(owned: &[Placement]) -> BTreeMap<IpAddr, HeldRecord> {
    owned
        .iter()
        .map(|placement| {
            (
                placement.address,
                HeldRecord { interface: placement.interface.clone(), prefix_len: placement.prefix_len },
            )
        })
        .collect()
}

/// The writes that turn the `held:*` keys `published` into `desired`.
pub fn held_changes(
    published: &BTreeMap<IpAddr, HeldRecord>,
    desired: &BTreeMap<IpAddr, HeldRecord>,
) -> Vec<KeyChange> {
    let changed = desired
        .iter()
        .filter(|(address, record)| published.get(*address) != Some(*record))
        .map(|(address, record)| (format!("{HELD_PREFIX}{address}"), Some(encode(record))));
    let removed = published
        .keys()
        .filter(|address| !desired.contains_key(address))
        .map(|address| (format!("{HELD_PREFIX}{address}"), None));
    changed.chain(removed).collect()
}

/// The writes that publish pool records.
fn pool_changes<'a>(records: impl Iterator<Item = (IpAddr, &'a PoolRecord)>) -> Vec<KeyChange> {
    records.map(|(address, record)| (format!("{POOL_PREFIX}{address}"), Some(encode(record)))).collect()
}

fn pool_error_reply(error: PoolError) -> Reply {
    let kind = match &error {
        PoolError::InvalidArgument(_) => ErrorKind::InvalidArgument,
        PoolError::Duplicate(_) => ErrorKind::DuplicateAddress,
        PoolError::Unknown(_) => ErrorKind::UnknownAddress,
    };
    Reply::error(kind, error.to_string())
}

fn admin_state(admin: Admin) -> AdminState {
    match admin {
        Admin::Up => AdminState::Up,
        Admin::Down => AdminState::Down,
    }
}

/// The control protocol's name for a gossip liveness.
fn liveness_of(liveness: fechter_gossip::Liveness) -> Liveness {
    match liveness {
        fechter_gossip::Liveness::Alive => Liveness::Alive,
        fechter_gossip::Liveness::Dead => Liveness::Dead,
        fechter_gossip::Liveness::Left => Liveness::Left,
    }
}

fn spec_of(placement: &Placement) -> AddressSpec {
    AddressSpec::new(placement.interface.clone(), placement.address, placement.prefix_len)
}

fn interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

async fn sleep_until_optional(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

/// How long a live peer may go without acknowledging a decision before the leader stops waiting
/// for it (see [`crate::acks`]): one and a half settle times, 15 gossip intervals. Acknowledging
/// takes a gossip exchange each way and one reconcile, so a working node answers within a few
/// intervals even while it installs hundreds of addresses on a loaded machine; an address given
/// to a node that went deaf is given to another node this long after.
pub fn ack_timeout(settle_time: Duration) -> Duration {
    settle_time * 3 / 2
}

/// The membership-settle time: [`MEMBERSHIP_SETTLE_INTERVALS`] gossip intervals, the settle time
/// being [`SETTLE_INTERVALS`] of them.
fn membership_settle(settle_time: Duration) -> Duration {
    settle_time / SETTLE_INTERVALS * MEMBERSHIP_SETTLE_INTERVALS
}

async fn recv_optional<T>(receiver: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick_optional(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Milliseconds since the Unix epoch; a clock before 1970 reads as 0 and the hybrid clock copes.
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Pings the gateway every `period` and reports each outcome until the daemon stops listening.
async fn ping_gateway<N: Net>(
    net: Arc<N>,
    gateway: IpAddr,
    period: Duration,
    timeout: Duration,
    results: mpsc::Sender<Result<Duration, PingError>>,
) {
    let mut ticker = interval(period);
    loop {
        ticker.tick().await;
        let result = net.ping(gateway, timeout).await;
        if results.send(result).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, n])
    }

    fn keys(changes: &[KeyChange]) -> Vec<(&str, bool)> {
        changes.iter().map(|(key, value)| (key.as_str(), value.is_some())).collect()
    }

    #[test]
    fn a_peer_that_gossip_judges_deaf_decodes_as_deaf_and_this_node_never_does() {
        let node = |name: &str, hears_me: Option<bool>| {
            let gossip_addr = name.parse().unwrap_or_else(|error| panic!("{error}"));
            let id = fechter_gossip::NodeId { name: name.to_owned(), generation: 1, gossip_addr };
            let view = fechter_gossip::NodeView {
                id,
                liveness: fechter_gossip::Liveness::Alive,
                phi: None,
                hears_me,
                holds_all_mine: None,
                keys: BTreeMap::new(),
            };
            (name.to_owned(), view)
        };
        let (a, b, c) = ("198.18.0.1:4573", "198.18.0.2:4573", "198.18.0.3:4573");
        let me = node(a, Some(false)).1.id;
        let view = ClusterView {
            self_id: me,
            nodes: [node(a, Some(false)), node(b, Some(false)), node(c, None)].into_iter().collect(),
        };
        let cluster = decode_view(a, &view, &mut Vec::new());
        let deaf = |name: &str| cluster.nodes.get(name).map(|node| node.deaf);
        assert_eq!((deaf(a), deaf(b), deaf(c)), (Some(false), Some(true), Some(false)));
    }

    #[test]
    fn a_decision_is_one_batch_of_changed_assignments_then_removals_then_the_commit() {
        let published: Assignment =
            [(ip(1), "a".to_owned()), (ip(2), "b".to_owned()), (ip(3), "c".to_owned())].into();
        let decision = Decision {
            commit: CommitRef { term: 2, seq: 5, author: "a".to_owned() },
            assignment: [(ip(1), "a".to_owned()), (ip(2), "a".to_owned()), (ip(4), "b".to_owned())].into(),
            alone: false,
        };
        let changes = decision_changes(&published, &decision);
        assert_eq!(
            keys(&changes),
            vec![
                ("assign:198.18.0.2", true),
                ("assign:198.18.0.4", true),
                ("assign:198.18.0.3", false),
                ("commit", true),
            ]
        );
        assert_eq!(changes[0].1.as_deref(), Some(encode(&"a").as_slice()));
        assert_eq!(changes[3].1.as_deref(), Some(encode(&commit_value(&decision)).as_slice()));
    }

    #[test]
    fn a_takeover_writes_every_assignment_before_its_commit() {
        let decision = Decision {
            commit: CommitRef { term: 3, seq: 0, author: "b".to_owned() },
            assignment: (1..=200).map(|n| (ip(n), "b".to_owned())).collect(),
            alone: false,
        };
        let changes = decision_changes(&Assignment::new(), &decision);
        assert_eq!(changes.len(), 201);
        assert_eq!(changes.last().map(|(key, _)| key.as_str()), Some(COMMIT_KEY));
        assert!(changes[..200].iter().all(|(key, value)| key.starts_with(ASSIGN_PREFIX) && value.is_some()));
    }

    #[test]
    fn held_changes_write_only_the_difference() {
        let record = |interface: &str| HeldRecord { interface: interface.to_owned(), prefix_len: 24 };
        let published: BTreeMap<IpAddr, HeldRecord> =
            [(ip(1), record("eth0")), (ip(2), record("eth0")), (ip(3), record("eth0"))].into();
        let desired: BTreeMap<IpAddr, HeldRecord> =
            [(ip(1), record("eth0")), (ip(2), record("eth1")), (ip(4), record("eth0"))].into();
        assert_eq!(
            keys(&held_changes(&published, &desired)),
            vec![("held:198.18.0.2", true), ("held:198.18.0.4", true), ("held:198.18.0.3", false)]
        );
        assert!(held_changes(&desired, &desired).is_empty());
    }
}
