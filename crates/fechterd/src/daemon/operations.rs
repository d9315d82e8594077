//! What the daemon does for operators beside moving addresses: health checks, link monitoring,
//! hooks and metrics. The state lives in [`Operations`], one field of the [`Daemon`]; the event
//! loop calls the methods here at the points named in their docs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fechter_cli::proto::{Health, NodeHealth};
use fechter_netops::{LinkState, Net, NetEvent};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Daemon;
use crate::checks::{Check, CheckResult, CheckTasks, ChecksConfig, HealthBoard, spawn_checks};
use crate::cluster::{Cluster, NODE_KEY, NodeStatus, compare_ids};
use crate::hooks::{HookEvent, HookJob, Hooks, HooksConfig};
use crate::links::Links;
use crate::metrics::{Metrics, NodeGauges};
use crate::pool::Pool;
use crate::reconcile::Placement;

/// How long, beyond one hook's timeout, the daemon waits at exit for queued hooks.
const HOOK_GRACE: Duration = Duration::from_secs(1);

/// The daemon's state for health checks, links, hooks and metrics.
#[derive(Debug)]
pub(super) struct Operations {
    checks: ChecksConfig,
    health: HealthBoard,
    links: Links,
    /// The pool interfaces unusable here, as of the last step.
    pub(super) down_interfaces: BTreeSet<String>,
    hooks_config: Option<HooksConfig>,
    hooks: Option<Hooks>,
    metrics: Option<Arc<Metrics>>,
}

impl Default for Operations {
    fn default() -> Self {
        let checks = ChecksConfig::default();
        Operations {
            health: HealthBoard::new(&checks),
            checks,
            links: Links::new(),
            down_interfaces: BTreeSet::new(),
            hooks_config: None,
            hooks: None,
            metrics: None,
        }
    }
}

impl Operations {
    /// Whether every health check passes.
    pub(super) fn healthy(&self) -> bool {
        self.health.healthy()
    }
}

impl<N: Net> Daemon<N> {
    /// Runs `config`'s health checks: the node is eligible only while they all pass.
    pub fn with_checks(mut self, config: ChecksConfig) -> Daemon<N> {
        self.ops.health = HealthBoard::new(&config);
        self.ops.checks = config;
        self
    }

    /// Runs the hooks of `config` on each acquisition and release.
    pub fn with_hooks(mut self, config: HooksConfig) -> Daemon<N> {
        self.ops.hooks_config = Some(config);
        self
    }

    /// Records the daemon's metrics in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Daemon<N> {
        self.ops.metrics = Some(metrics);
        self
    }

    /// At the start of `run`: starts the check tasks and the hook runner. The check results
    /// arrive on the returned receiver; dropping the tasks stops the checks.
    pub(super) fn start_operations(&mut self) -> (CheckTasks, mpsc::Receiver<CheckResult>) {
        let (sender, results) = mpsc::channel(16);
        let tasks = spawn_checks(&self.ops.checks, sender);
        if !self.ops.checks.checks.is_empty() {
            let names: Vec<String> = self.ops.checks.checks.iter().map(Check::name).collect();
            info!(?names, "health checks configured: this node holds nothing until they pass");
        }
        self.ops.hooks =
            self.ops.hooks_config.clone().map(|config| Hooks::start(config, self.config.node_id.clone()));
        (tasks, results)
    }

    /// On a check result: the node's health may change, which the next step acts on.
    pub(super) fn record_check(&mut self, result: &CheckResult) {
        match self.ops.health.record(result) {
            Some(transition) if transition.passing => info!(check = %transition.name, "health check passes"),
            Some(transition) => warn!(
                check = %transition.name,
                reason = transition.reason.as_deref().unwrap_or("unknown"),
                "health check fails: this node gives up every address"
            ),
            None => {
                if let Err(reason) = &result.outcome {
                    debug!(index = result.index, %reason, "health check run failed");
                }
            }
        }
    }

    /// On a network event: link changes update the usable interfaces.
    pub(super) fn on_net_event(&mut self, event: NetEvent) {
        if let NetEvent::LinkChanged { interface, state } = &event {
            self.record_link(interface, *state);
        }
        debug!(?event, "network event");
    }

    fn record_link(&mut self, interface: &str, state: LinkState) {
        let in_pool = pool_interfaces(&self.pool).contains(interface);
        match self.ops.links.record(interface, state) {
            Some(true) if in_pool => info!(%interface, "link usable again: its addresses may come back"),
            Some(false) if in_pool => {
                warn!(%interface, ?state, "link missing, down or without carrier: giving up its addresses")
            }
            _ => {}
        }
    }

    /// In every step, before eligibility: learns the state of pool interfaces not seen yet, or
    /// of all of them when `reread` (on the reconcile timer, in case an event was lost), and
    /// works out which pool interfaces are unusable.
    pub(super) async fn update_links(&mut self, reread: bool) {
        let interfaces = pool_interfaces(&self.pool);
        for interface in &interfaces {
            if reread || !self.ops.links.knows(interface) {
                match self.net.link_state(interface).await {
                    Ok(state) => self.record_link(interface, state),
                    Err(error) => debug!(%interface, %error, "could not read the link state"),
                }
            }
        }
        self.ops.down_interfaces = self.ops.links.down(interfaces.iter().map(String::as_str));
    }

    /// After addresses were installed and announced.
    pub(super) fn acquired(&self, placements: &[&Placement]) {
        for placement in placements {
            if let Some(metrics) = &self.ops.metrics {
                metrics.acquired();
            }
            self.submit_hooks(HookEvent::Acquire, placement);
        }
    }

    /// After an address was removed.
    pub(super) fn released(&self, placement: &Placement) {
        if let Some(metrics) = &self.ops.metrics {
            metrics.released();
        }
        self.submit_hooks(HookEvent::Release, placement);
    }

    fn submit_hooks(&self, event: HookEvent, placement: &Placement) {
        if let Some(hooks) = &self.ops.hooks {
            hooks.submit(HookJob {
                event,
                interface: placement.interface.clone(),
                address: placement.address,
                prefix_len: placement.prefix_len,
            });
        }
    }

    /// After a batch of addresses was announced.
    pub(super) fn announced(&self, addresses: usize) {
        if let Some(metrics) = &self.ops.metrics {
            metrics.announced(addresses);
        }
    }

    /// After this node published a decision as leader.
    pub(super) fn decided(&self, moved: usize) {
        if let Some(metrics) = &self.ops.metrics {
            metrics.decided(moved);
        }
    }

    /// At the end of every step.
    pub(super) fn record_metrics(&self) {
        let Some(metrics) = &self.ops.metrics else {
            return;
        };
        metrics.record_node(NodeGauges {
            held: self.owned.len(),
            pool_active: self.pool.records().filter(|(_, record)| record.active).count(),
            leader: self.leader.as_deref() == Some(self.config.node_id.as_str()),
            eligible: self.eligible,
            healthy: self.ops.health.healthy(),
        });
        metrics.record_checks(self.ops.health.states());
        let interfaces = pool_interfaces(&self.pool);
        metrics.record_interfaces(
            interfaces
                .iter()
                .map(|interface| (interface.as_str(), !self.ops.down_interfaces.contains(interface))),
        );
    }

    /// What goes into this node's published status besides the original fields.
    pub(super) fn published_health(&self) -> (Vec<String>, BTreeSet<String>) {
        (self.ops.health.failing_for_gossip(), self.ops.down_interfaces.clone())
    }

    /// This node's health, with every failing check's full name.
    pub(super) fn local_health(&self) -> Health {
        Health {
            healthy: self.ops.health.healthy(),
            failing_checks: self
                .ops
                .health
                .states()
                .filter(|(_, passing)| !passing)
                .map(|(name, _)| name.to_owned())
                .collect(),
            down_interfaces: self.ops.down_interfaces.iter().cloned().collect(),
        }
    }

    /// The health of every live node that publishes it, this one included, ordered by id.
    pub(super) fn health_report(&self) -> Vec<NodeHealth> {
        let view = self.view.borrow().clone();
        let me = self.config.node_id.as_str();
        let mut report: Vec<NodeHealth> = view
            .nodes
            .iter()
            .filter(|(name, node)| name.as_str() != me && node.liveness == fechter_gossip::Liveness::Alive)
            .filter_map(|(name, node)| {
                let status: NodeStatus = serde_json::from_slice(node.keys.get(NODE_KEY)?).ok()?;
                Some(NodeHealth { id: name.clone(), health: health_of(&status) })
            })
            .collect();
        report.push(NodeHealth { id: me.to_owned(), health: self.local_health() });
        report.sort_by(|a, b| compare_ids(&a.id, &b.id));
        report
    }

    /// A peer's health as `info` shows it, when it has published a status.
    pub(super) fn peer_health(cluster: &Cluster, id: &str) -> Option<Health> {
        cluster.nodes.get(id)?.status.as_ref().map(health_of)
    }

    /// At exit, after the last releases: lets their hooks run, within the hook timeout.
    pub(super) async fn finish_hooks(&mut self) {
        if let (Some(hooks), Some(config)) = (self.ops.hooks.take(), &self.ops.hooks_config) {
            hooks.finish(config.timeout + HOOK_GRACE).await;
        }
    }
}

fn health_of(status: &NodeStatus) -> Health {
    Health {
        healthy: status.failing_checks.is_empty(),
        failing_checks: status.failing_checks.clone(),
        down_interfaces: status.down_interfaces.iter().cloned().collect(),
    }
}

/// The interfaces of the active pool addresses.
fn pool_interfaces(pool: &Pool) -> BTreeSet<String> {
    pool.records().filter(|(_, record)| record.active).map(|(_, record)| record.interface.clone()).collect()
}
