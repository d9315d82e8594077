//! The tokio driver: runs a [`Gossip`] core over a [`Transport`].
//!
//! One task owns the core. It ticks every `gossip_interval` on tokio's clock (so tests can pause
//! time), feeds received datagrams to the core, sends what the core returns, and publishes a
//! fresh [`ClusterView`] on a watch channel whenever the core reports a change (an event or a
//! forgotten node), never on heartbeats alone. A [`GossipHandle`] talks to the task through a
//! command channel; the task stops after [`GossipHandle::leave`] or when every handle is gone.
//!
//! Writes can be batched with [`GossipHandle::apply`]: one command, one push round and one new
//! view for any number of keys. A caller that writes hundreds of keys at once (a leader's whole
//! assignment) would otherwise pay a channel round trip, a push round to every peer and a fresh
//! view of the whole cluster per key. A batch larger than a datagram is followed by a short burst
//! of extra push rounds, one per datagram it needs, instead of trickling out over many gossip
//! intervals. (That count errs on the generous side: an exchange carries up to
//! `Config::max_delta_datagrams` datagrams of deltas to a peer that is far behind.)

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{self, MissedTickBehavior};

use crate::config::Config;
use crate::core::Gossip;
use crate::types::{ClusterView, NodeId, Outgoing, SetError, Stats};

/// The largest UDP payload; the receive buffer holds any datagram so oversized ones can be
/// counted instead of silently truncated.
const RECEIVE_BUFFER: usize = 65_536;

/// How many commands may wait for the driver task.
const COMMAND_QUEUE: usize = 64;

/// The pause between the extra push rounds that follow a batch larger than one datagram; see
/// [`burst_rounds`]. Longer than a LAN round trip, so that each round finds the peers' knowledge
/// updated by the previous one and ships the next datagram's worth rather than the same one.
pub const BURST_SPACING: Duration = Duration::from_millis(5);

/// The most extra push rounds one batch asks for, bounding the traffic of a huge batch; what
/// does not fit goes out in the regular rounds.
const MAX_BURST_ROUNDS: usize = 256;

/// Bytes counted per change on top of its key and value: version, length prefixes and the
/// node delta's share, rounded up so the estimate errs towards one round too many.
const CHANGE_OVERHEAD: usize = 16;

/// A datagram transport. `recv_from` must be cancel-safe: the driver polls it in a `select!`
/// and drops it when a tick or command comes first.
pub trait Transport: Send + Sync + 'static {
    /// Sends one datagram, without waiting for buffer space: a datagram that cannot go out at
    /// once is an error (and lost, which gossip repairs). Waiting would stall the whole driver,
    /// ticks and failure detection included, behind one vanished peer: Linux charges the
    /// datagrams queued for an unresolved neighbour to the socket's send buffer for seconds.
    fn send_to(&self, to: SocketAddr, datagram: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one datagram into `buf`, returning its length and sender.
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

/// A [`Transport`] over a tokio UDP socket.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
}

impl UdpTransport {
    /// Binds a UDP socket.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(UdpTransport { socket: UdpSocket::bind(addr).await? })
    }

    /// The bound address (useful after binding port 0).
    ///
    /// # Errors
    ///
    /// When the operating system cannot report it.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Transport for UdpTransport {
    async fn send_to(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.socket.try_send_to(datagram, to).map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

/// A request from a handle to the driver task.
#[derive(Debug)]
enum Command {
    Apply { changes: Vec<KeyChange>, reply: oneshot::Sender<Result<(), SetError>> },
    View { reply: oneshot::Sender<Arc<ClusterView>> },
    Stats { reply: oneshot::Sender<Stats> },
    Leave { reply: oneshot::Sender<()> },
}

/// One write of this node's keys: the key, and its new value or `None` to delete it.
pub type KeyChange = (String, Option<Vec<u8>>);

/// A cloneable handle to a running gossip driver.
#[derive(Debug, Clone)]
pub struct GossipHandle {
    id: Arc<NodeId>,
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<ClusterView>>,
    final_stats: watch::Receiver<Stats>,
}

/// Starts a driver task for a new core. Must be called inside a tokio runtime.
pub fn spawn<T: Transport>(config: Config, transport: T) -> GossipHandle {
    let core = Gossip::new(config, now());
    let id = Arc::new(core.id().clone());
    let (view_sender, view) = watch::channel(Arc::new(core.view(now())));
    let (stats_sender, final_stats) = watch::channel(Stats::default());
    let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
    tokio::spawn(run(core, transport, command_receiver, view_sender, stats_sender));
    GossipHandle { id, commands, view, final_stats }
}

impl GossipHandle {
    /// This node's identity.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Sets one of this node's keys and gossips the change at once.
    ///
    /// # Errors
    ///
    /// The core's [`SetError`], or [`SetError::Stopped`] after the driver stopped.
    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), SetError> {
        self.apply(vec![(key.to_owned(), Some(value))]).await
    }

    /// Deletes one of this node's keys and gossips the change at once; nothing happens after
    /// the driver stopped.
    pub async fn delete(&self, key: &str) {
        // An error only means the driver stopped, which `delete` tolerates.
        let _ = self.apply(vec![(key.to_owned(), None)]).await;
    }

    /// Sets and deletes several of this node's keys in order, as one command, and gossips them
    /// in one push round. Later changes get higher versions, so a peer never sees a change
    /// without the ones before it: a key written after others can mark them complete. The
    /// first refused set stops the batch: the changes before it stay applied (and are gossiped),
    /// the ones after it are not applied. An empty batch does nothing.
    ///
    /// # Errors
    ///
    /// The core's [`SetError`] for the first refused set, or [`SetError::Stopped`] after the
    /// driver stopped.
    pub async fn apply(&self, changes: Vec<KeyChange>) -> Result<(), SetError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Apply { changes, reply }).await.is_err() {
            return Err(SetError::Stopped);
        }
        answer.await.unwrap_or(Err(SetError::Stopped))
    }

    /// A receiver of views, updated on key and liveness changes, never on heartbeats alone.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// A fresh view with current phi values (the last published view after the driver stopped).
    pub async fn view(&self) -> Arc<ClusterView> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::View { reply }).await.is_ok()
            && let Ok(view) = answer.await
        {
            return view;
        }
        self.view.borrow().clone()
    }

    /// The traffic counters (the final ones after the driver stopped).
    pub async fn stats(&self) -> Stats {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Stats { reply }).await.is_ok()
            && let Ok(stats) = answer.await
        {
            return stats;
        }
        self.final_stats.borrow().clone()
    }

    /// Announces leaving to every known live peer, then stops the driver.
    pub async fn leave(&self) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Leave { reply }).await.is_ok() {
            // An error only means the driver already stopped.
            let _ = answer.await;
        }
    }
}

/// The current time on tokio's clock, which tests may pause and advance.
fn now() -> std::time::Instant {
    time::Instant::now().into_std()
}

/// What woke the driver.
enum Wake {
    Tick,
    Burst,
    Received(io::Result<(usize, SocketAddr)>),
    Command(Option<Command>),
}

/// The driver loop.
async fn run<T: Transport>(
    mut core: Gossip,
    transport: T,
    mut commands: mpsc::Receiver<Command>,
    view: watch::Sender<Arc<ClusterView>>,
    final_stats: watch::Sender<Stats>,
) {
    let mut ticker = time::interval(core.config().gossip_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    let mut published = core.view_version();
    let mut burst = Burst::default();
    loop {
        let wake = tokio::select! {
            _ = ticker.tick() => Wake::Tick,
            () = time::sleep_until(burst.next), if burst.rounds > 0 => Wake::Burst,
            received = transport.recv_from(&mut buffer) => Wake::Received(received),
            command = commands.recv() => Wake::Command(command),
        };
        let mut stop = false;
        let outgoing = match wake {
            Wake::Tick => core.tick(now()),
            Wake::Burst => {
                burst.rounds -= 1;
                burst.next = time::Instant::now() + BURST_SPACING;
                core.gossip_now(now())
            }
            Wake::Received(Ok((len, from))) => core.handle(from, &buffer[..len], now()),
            Wake::Received(Err(error)) => {
                tracing::debug!(%error, "gossip receive failed");
                Vec::new()
            }
            Wake::Command(None) => break,
            Wake::Command(Some(command)) => match command {
                Command::Apply { changes, reply } => {
                    let rounds = burst_rounds(&changes, core.config().datagram_budget);
                    let (applied, result) = apply_changes(&mut core, changes);
                    let outgoing = if applied > 0 { core.gossip_now(now()) } else { Vec::new() };
                    if applied > 0 && rounds > burst.rounds {
                        burst = Burst { rounds, next: time::Instant::now() + BURST_SPACING };
                    }
                    // A dropped reply only means the caller stopped waiting.
                    let _ = reply.send(result);
                    outgoing
                }
                Command::View { reply } => {
                    let _ = reply.send(Arc::new(core.view(now())));
                    Vec::new()
                }
                Command::Stats { reply } => {
                    let _ = reply.send(core.stats().clone());
                    Vec::new()
                }
                Command::Leave { reply } => {
                    let outgoing = core.leave(now());
                    send_all(&transport, outgoing).await;
                    let _ = reply.send(());
                    stop = true;
                    Vec::new()
                }
            },
        };
        send_all(&transport, outgoing).await;
        for event in core.drain_events() {
            tracing::debug!(?event, "gossip event");
        }
        if core.view_version() != published {
            published = core.view_version();
            view.send_replace(Arc::new(core.view(now())));
        }
        if stop {
            break;
        }
    }
    final_stats.send_replace(core.stats().clone());
}

/// Extra push rounds still to run after a large batch, and when the next one is due.
struct Burst {
    rounds: usize,
    next: time::Instant,
}

impl Default for Burst {
    fn default() -> Burst {
        Burst { rounds: 0, next: time::Instant::now() }
    }
}

/// How many push rounds besides the immediate one it takes to ship `changes`, each round
/// delivering at most one datagram of `budget` bytes to a peer.
pub fn burst_rounds(changes: &[KeyChange], budget: usize) -> usize {
    let bytes: usize = changes
        .iter()
        .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len) + CHANGE_OVERHEAD)
        .sum();
    bytes.div_ceil(budget.max(1)).saturating_sub(1).min(MAX_BURST_ROUNDS)
}

/// Applies `changes` in order until a set is refused; returns how many were applied and the
/// refusal, if any.
fn apply_changes(core: &mut Gossip, changes: Vec<KeyChange>) -> (usize, Result<(), SetError>) {
    let mut applied = 0;
    for (key, value) in changes {
        match value {
            Some(value) => {
                if let Err(error) = core.set(&key, value) {
                    return (applied, Err(error));
                }
            }
            None => core.delete(&key),
        }
        applied += 1;
    }
    (applied, Ok(()))
}

/// Sends datagrams; a failed send is like a lost datagram, which gossip tolerates.
async fn send_all<T: Transport>(transport: &T, outgoing: Vec<Outgoing>) {
    for Outgoing { to, datagram } in outgoing {
        if let Err(error) = transport.send_to(to, &datagram).await {
            tracing::debug!(%error, %to, "gossip send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::types::Event;

    /// Counts sent datagrams and never receives one.
    #[derive(Clone, Default)]
    struct CountingTransport {
        sent: Arc<AtomicUsize>,
    }

    impl Transport for CountingTransport {
        async fn send_to(&self, _to: SocketAddr, _datagram: &[u8]) -> io::Result<()> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        async fn recv_from(&self, _buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            std::future::pending().await
        }
    }

    fn config() -> Config {
        let mut config = Config::new("driver-test", "a", 1, SocketAddr::from(([127, 0, 0, 1], 4000)));
        // One seed and no live peer: every push round is exactly one Syn, to the seed.
        config.seeds = vec![SocketAddr::from(([127, 0, 0, 1], 4001))];
        // No tick but the first, immediate one during a test.
        config.gossip_interval = Duration::from_secs(3600);
        config
    }

    /// A driver whose first tick has been handled, and its datagram counter.
    async fn started() -> (GossipHandle, Arc<AtomicUsize>) {
        let transport = CountingTransport::default();
        let sent = Arc::clone(&transport.sent);
        let handle = spawn(config(), transport);
        let ticked = time::timeout(Duration::from_secs(5), async {
            while sent.load(Ordering::SeqCst) == 0 {
                handle.stats().await;
            }
        })
        .await;
        assert!(ticked.is_ok(), "the first tick never sent its Syn");
        (handle, sent)
    }

    fn own_keys(handle: &GossipHandle) -> BTreeMap<String, Vec<u8>> {
        handle.watch().borrow().nodes.get("a").map(|node| node.keys.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_batch_is_one_push_round_and_one_view() {
        let (handle, sent) = started().await;
        let before = sent.load(Ordering::SeqCst);
        let mut watch = handle.watch();
        watch.borrow_and_update();
        let mut changes: Vec<KeyChange> =
            (0..20).map(|index| (format!("assign:{index}"), Some(vec![1]))).collect();
        changes.push(("assign:7".to_owned(), None));
        changes.push(("commit".to_owned(), Some(vec![2])));
        assert_eq!(burst_rounds(&changes, config().datagram_budget), 0, "it fits in one datagram");
        assert_eq!(handle.apply(changes).await, Ok(()));
        assert_eq!(sent.load(Ordering::SeqCst), before + 1, "one Syn for the whole batch");
        assert!(watch.has_changed().unwrap_or(false));
        let keys = own_keys(&handle);
        assert_eq!(keys.len(), 20, "19 assignments and the commit");
        assert!(!keys.contains_key("assign:7"));
        assert_eq!(keys.get("commit"), Some(&vec![2]));

        // The single-key calls still push once each.
        handle.set("x", vec![3]).await.unwrap_or_else(|error| panic!("{error}"));
        handle.delete("x").await;
        assert_eq!(sent.load(Ordering::SeqCst), before + 3);
        assert_eq!(handle.apply(Vec::new()).await, Ok(()));
        assert_eq!(sent.load(Ordering::SeqCst), before + 3, "an empty batch sends nothing");
    }

    #[tokio::test]
    async fn a_batch_larger_than_a_datagram_is_followed_by_one_extra_round_per_datagram() {
        let (handle, sent) = started().await;
        let before = sent.load(Ordering::SeqCst);
        let changes: Vec<KeyChange> =
            (0..200).map(|index| (format!("pool:{index}"), Some(vec![7; 100]))).collect();
        let rounds = burst_rounds(&changes, config().datagram_budget);
        assert!((15..=20).contains(&rounds), "about 24 kB in 1400-byte datagrams, not {rounds}");
        let started_at = time::Instant::now();
        assert_eq!(handle.apply(changes).await, Ok(()));
        let burst = time::timeout(Duration::from_secs(5), async {
            while sent.load(Ordering::SeqCst) < before + 1 + rounds {
                time::sleep(BURST_SPACING).await;
            }
        })
        .await;
        assert!(burst.is_ok(), "the extra rounds never went out");
        assert!(started_at.elapsed() < Duration::from_secs(1), "the burst is not paced by the ticker");
        time::sleep(BURST_SPACING * 4).await;
        assert_eq!(sent.load(Ordering::SeqCst), before + 1 + rounds, "the burst stops");
    }

    #[test]
    fn small_batches_ask_for_no_burst_and_huge_ones_are_capped() {
        assert_eq!(burst_rounds(&[("node".to_owned(), Some(vec![0; 200]))], 1400), 0);
        assert_eq!(burst_rounds(&[], 1400), 0);
        let huge: Vec<KeyChange> = (0..100_000).map(|index| (format!("k{index}"), None)).collect();
        assert_eq!(burst_rounds(&huge, 1400), MAX_BURST_ROUNDS);
    }

    #[tokio::test]
    async fn a_refused_set_stops_the_batch_after_the_changes_before_it() {
        let (handle, _) = started().await;
        let changes = vec![
            ("first".to_owned(), Some(vec![1])),
            ("huge".to_owned(), Some(vec![0; RECEIVE_BUFFER])),
            ("after".to_owned(), Some(vec![1])),
        ];
        assert!(matches!(handle.apply(changes).await, Err(SetError::ValueTooLarge { .. })));
        let keys = own_keys(&handle);
        assert!(keys.contains_key("first"));
        assert!(!keys.contains_key("huge") && !keys.contains_key("after"));
        handle.leave().await;
        assert_eq!(handle.apply(vec![("late".to_owned(), None)]).await, Err(SetError::Stopped));
    }

    #[test]
    fn changes_are_applied_in_order() {
        let mut core = Gossip::new(config(), std::time::Instant::now());
        core.drain_events();
        let changes = vec![
            ("b".to_owned(), Some(vec![1])),
            ("a".to_owned(), Some(vec![2])),
            ("b".to_owned(), None),
            ("commit".to_owned(), Some(vec![3])),
        ];
        assert_eq!(apply_changes(&mut core, changes), (4, Ok(())));
        let order: Vec<(String, Option<Vec<u8>>)> = core
            .drain_events()
            .into_iter()
            .filter_map(|event| match event {
                Event::KeyChanged { key, value, .. } => Some((key, value)),
                _ => None,
            })
            .collect();
        let expected: Vec<(String, Option<Vec<u8>>)> = vec![
            ("b".to_owned(), Some(vec![1])),
            ("a".to_owned(), Some(vec![2])),
            ("b".to_owned(), None),
            ("commit".to_owned(), Some(vec![3])),
        ];
        assert_eq!(order, expected);
    }
}
