//! Prometheus metrics: a registry the daemon updates, and a small HTTP server for `GET /metrics`.
//!
//! The endpoint is off unless `--metrics-address ADDR:PORT` is given. It speaks just enough
//! HTTP/1: one request per connection, `GET /metrics` answers the registry in the OpenMetrics text
//! format (which Prometheus reads), any other path 404 and any other method 405. Membership, phi
//! and the gossip traffic counters are read from the gossip driver at each scrape, so they are
//! always fresh; the rest is recorded by the daemon as it happens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use fechter_gossip::{ClusterView, GossipHandle, Liveness, Stats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// The longest request head the server reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics options of `fechterd`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsOptions {
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_address: Option<SocketAddr>,
}

type Label = [(&'static str, String); 1];

fn label(key: &'static str, value: impl Into<String>) -> Label {
    [(key, value.into())]
}

/// Every metric fechterd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    nodes: Family<Label, Gauge>,
    phi: Family<Label, Gauge<f64, AtomicU64>>,
    held: Gauge,
    pool_active: Gauge,
    leader: Gauge,
    eligible: Gauge,
    healthy: Gauge,
    check_passing: Family<Label, Gauge>,
    interface_usable: Family<Label, Gauge>,
    acquisitions: Counter,
    releases: Counter,
    announcements: Counter,
    decisions: Counter,
    moves: Counter,
    gossip_bytes: Family<Label, Counter>,
    gossip_datagrams: Family<Label, Counter>,
    gossip_dropped: Family<Label, Counter>,
}

/// What the daemon reports about this node after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeGauges {
    /// Addresses held here.
    pub held: usize,
    /// Active addresses in the pool.
    pub pool_active: usize,
    /// Whether this node is the leader.
    pub leader: bool,
    /// Whether this node may hold addresses.
    pub eligible: bool,
    /// Whether every health check passes.
    pub healthy: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fechter");
        let metrics = Metrics {
            nodes: Family::default(),
            phi: Family::default(),
            held: Gauge::default(),
            pool_active: Gauge::default(),
            leader: Gauge::default(),
            eligible: Gauge::default(),
            healthy: Gauge::default(),
            check_passing: Family::default(),
            interface_usable: Family::default(),
            acquisitions: Counter::default(),
            releases: Counter::default(),
            announcements: Counter::default(),
            decisions: Counter::default(),
            moves: Counter::default(),
            gossip_bytes: Family::default(),
            gossip_datagrams: Family::default(),
            gossip_dropped: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "nodes",
            "Nodes known to this node, by liveness (alive, dead, left), itself included",
            metrics.nodes.clone(),
        );
        registry.register("peer_phi", "The failure detector's suspicion of each peer", metrics.phi.clone());
        registry.register("addresses_held", "Pool addresses held by this node", metrics.held.clone());
        registry.register("pool_addresses", "Active addresses in the pool", metrics.pool_active.clone());
        registry.register("leader", "1 while this node is the leader", metrics.leader.clone());
        registry.register("eligible", "1 while this node may hold addresses", metrics.eligible.clone());
        registry.register("healthy", "1 while every health check passes", metrics.healthy.clone());
        registry.register(
            "check_passing",
            "1 while the health check passes, by check",
            metrics.check_passing.clone(),
        );
        registry.register(
            "interface_usable",
            "1 while the pool interface is up with a carrier",
            metrics.interface_usable.clone(),
        );
        registry.register(
            "acquisitions",
            "Addresses this node installed (failovers and moves to it)",
            metrics.acquisitions.clone(),
        );
        registry.register("releases", "Addresses this node removed", metrics.releases.clone());
        registry.register(
            "announcements",
            "Addresses announced (gratuitous ARP or unsolicited NA bursts)",
            metrics.announcements.clone(),
        );
        registry.register(
            "leader_decisions",
            "Assignments this node published as leader",
            metrics.decisions.clone(),
        );
        registry.register(
            "assignment_moves",
            "Addresses whose assignee changed in this node's decisions",
            metrics.moves.clone(),
        );
        registry.register("gossip_bytes", "Gossip bytes, by direction", metrics.gossip_bytes.clone());
        registry.register(
            "gossip_datagrams",
            "Gossip datagrams, by direction",
            metrics.gossip_datagrams.clone(),
        );
        registry.register(
            "gossip_dropped_datagrams",
            "Gossip datagrams dropped, by reason",
            metrics.gossip_dropped.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Records this node's state.
    pub fn record_node(&self, gauges: NodeGauges) {
        self.held.set(count(gauges.held));
        self.pool_active.set(count(gauges.pool_active));
        self.leader.set(i64::from(gauges.leader));
        self.eligible.set(i64::from(gauges.eligible));
        self.healthy.set(i64::from(gauges.healthy));
    }

    /// Records every check's state by name.
    pub fn record_checks<'a>(&self, checks: impl IntoIterator<Item = (&'a str, bool)>) {
        for (name, passing) in checks {
            self.check_passing.get_or_create(&label("check", name)).set(i64::from(passing));
        }
    }

    /// Records which pool interfaces are usable; forgets interfaces no longer in the pool.
    pub fn record_interfaces<'a>(&self, interfaces: impl IntoIterator<Item = (&'a str, bool)>) {
        self.interface_usable.clear();
        for (interface, usable) in interfaces {
            self.interface_usable.get_or_create(&label("interface", interface)).set(i64::from(usable));
        }
    }

    /// Counts an address installed here.
    pub fn acquired(&self) {
        self.acquisitions.inc();
    }

    /// Counts an address removed from here.
    pub fn released(&self) {
        self.releases.inc();
    }

    /// Counts addresses announced.
    pub fn announced(&self, addresses: usize) {
        self.announcements.inc_by(addresses as u64);
    }

    /// Counts a published leader decision and the addresses it moved.
    pub fn decided(&self, moved: usize) {
        self.decisions.inc();
        self.moves.inc_by(moved as u64);
    }

    /// Records membership and phi from a gossip view, and the gossip counters.
    pub fn record_gossip(&self, view: &ClusterView, stats: &Stats) {
        let mut by_liveness = [("alive", 0), ("dead", 0), ("left", 0)];
        self.phi.clear();
        for (name, node) in &view.nodes {
            let slot = match node.liveness {
                Liveness::Alive => 0,
                Liveness::Dead => 1,
                Liveness::Left => 2,
            };
            by_liveness[slot].1 += 1;
            if let Some(phi) = node.phi.filter(|_| *name != view.self_id.name) {
                self.phi.get_or_create(&label("peer", name.clone())).set(phi);
            }
        }
        for (liveness, nodes) in by_liveness {
            self.nodes.get_or_create(&label("liveness", liveness)).set(nodes);
        }
        let totals = [
            (&self.gossip_bytes, "direction", "sent", stats.bytes_sent),
            (&self.gossip_bytes, "direction", "received", stats.bytes_received),
            (&self.gossip_datagrams, "direction", "sent", stats.datagrams_sent),
            (&self.gossip_datagrams, "direction", "received", stats.datagrams_received),
            (&self.gossip_dropped, "reason", "bad_magic", stats.dropped_bad_magic),
            (&self.gossip_dropped, "reason", "wrong_version", stats.dropped_wrong_version),
            (&self.gossip_dropped, "reason", "other_cluster", stats.dropped_other_cluster),
            (&self.gossip_dropped, "reason", "auth_failure", stats.dropped_auth_failure),
            (&self.gossip_dropped, "reason", "replay", stats.dropped_replay),
            (&self.gossip_dropped, "reason", "malformed", stats.dropped_malformed),
            (&self.gossip_dropped, "reason", "oversized", stats.dropped_oversized),
            (&self.gossip_dropped, "reason", "stale_sender", stats.dropped_stale_sender),
        ];
        for (family, key, value, total) in totals {
            // The driver's counters only grow, and only this scrape path advances these: adding
            // the difference keeps them equal to the driver's totals.
            let counter = family.get_or_create(&label(key, value));
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`.
    Metrics,
    /// Another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP request.
    BadRequest,
    /// The head is not complete yet.
    Incomplete,
}

/// Routes a request head (everything received so far).
pub fn route(head: &[u8]) -> Route {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Route::Incomplete,
        Err(_) => return Route::BadRequest,
    }
    let path = request.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    match (request.method, path) {
        (Some("GET"), "/metrics") => Route::Metrics,
        (Some("GET"), _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

/// Binds the metrics listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Answers scrapes forever.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, gossip: GossipHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (metrics, gossip) = (Arc::clone(&metrics), gossip.clone());
                tokio::spawn(async move {
                    if let Err(error) = answer(stream, &metrics, &gossip).await {
                        debug!(%peer, %error, "metrics connection ended with an error");
                    }
                });
            }
            Err(error) => {
                // Running out of file descriptors is transient; back off instead of spinning.
                warn!(%error, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, gossip: &GossipHandle) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0_u8; 1024];
    let route = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            let read = stream.read(&mut chunk).await?;
            head.extend_from_slice(&chunk[..read]);
            match route(&head) {
                Route::Incomplete if read == 0 || head.len() > MAX_REQUEST_HEAD => {
                    return Ok::<Route, std::io::Error>(Route::BadRequest);
                }
                Route::Incomplete => {}
                route => return Ok(route),
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete request in time"))??;
    let (status, content_type, body) = match route {
        Route::Metrics => {
            let (view, stats) = (gossip.view().await, gossip.stats().await);
            metrics.record_gossip(&view, &stats);
            ("200 OK", CONTENT_TYPE, metrics.encode())
        }
        Route::NotFound => ("404 Not Found", "text/plain", "not found; try /metrics\n".to_owned()),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned()),
        Route::BadRequest | Route::Incomplete => {
            ("400 Bad Request", "text/plain", "bad request\n".to_owned())
        }
    };
    let allow = if route == Route::MethodNotAllowed { "Allow: GET\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use fechter_gossip::{Config, UdpTransport};

    #[test]
    fn requests_are_routed() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHo"), Route::Incomplete);
        assert_eq!(route(b"\x01\x02 nonsense\r\n\r\n"), Route::BadRequest);
    }

    #[test]
    fn the_registry_encodes_every_metric() {
        let metrics = Metrics::new();
        metrics.record_node(NodeGauges {
            held: 2,
            pool_active: 6,
            leader: true,
            eligible: true,
            healthy: true,
        });
        metrics.acquired();
        metrics.acquired();
        metrics.released();
        metrics.announced(3);
        metrics.decided(4);
        metrics.record_checks([("exec:true", true), ("tcp:db:5432", false)]);
        metrics.record_interfaces([("eth0", true), ("eth1", false)]);
        metrics.record_interfaces([("eth0", true)]);
        let stats = Stats { bytes_sent: 100, datagrams_received: 7, dropped_replay: 2, ..Stats::default() };
        let self_id = fechter_gossip::NodeId {
            name: "me".into(),
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
        };
        let view = ClusterView { self_id, nodes: Default::default() };
        metrics.record_gossip(&view, &stats);
        let stats = Stats { bytes_sent: 150, ..stats };
        metrics.record_gossip(&view, &stats);
        let text = metrics.encode();
        for line in [
            "fechter_addresses_held 2",
            "fechter_pool_addresses 6",
            "fechter_leader 1",
            "fechter_acquisitions_total 2",
            "fechter_releases_total 1",
            "fechter_announcements_total 3",
            "fechter_leader_decisions_total 1",
            "fechter_assignment_moves_total 4",
            "fechter_check_passing{check=\"tcp:db:5432\"} 0",
            "fechter_interface_usable{interface=\"eth0\"} 1",
            "fechter_gossip_bytes_total{direction=\"sent\"} 150",
            "fechter_gossip_datagrams_total{direction=\"received\"} 7",
            "fechter_gossip_dropped_datagrams_total{reason=\"replay\"} 2",
            "fechter_nodes{liveness=\"alive\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("eth1"), "a forgotten interface is dropped");
        assert!(text.ends_with("# EOF\n"));
    }

    async fn get(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_server_answers_scrapes_and_refuses_the_rest() {
        let transport = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let gossip_address = transport.local_addr().unwrap();
        let gossip = fechter_gossip::spawn(
            Config::new("test", gossip_address.to_string(), 1, gossip_address),
            transport,
        );
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), gossip));
        let scrape = get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
        assert!(scrape.contains("fechter_nodes{liveness=\"alive\"} 1"), "{scrape}");
        assert!(get(address, "GET /other HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404 "));
        let post = get(address, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET"), "{post}");
        server.abort();
    }
}
