//! The tokio driver: runs a [`Gossip`] core over a [`Transport`].
//!
//! One task owns the core. It ticks every `gossip_interval` on tokio's clock (so tests can pause
//! time), feeds received datagrams to the core, sends what the core returns, and publishes a
//! fresh [`ClusterView`] on a watch channel whenever the core reports a change (an event or a
//! forgotten node), never on heartbeats alone. A [`GossipHandle`] talks to the task through a
//! command channel; the task stops after [`GossipHandle::leave`] or when every handle is gone.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

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

/// A datagram transport. `recv_from` must be cancel-safe: the driver polls it in a `select!`
/// and drops it when a tick or command comes first.
pub trait Transport: Send + Sync + 'static {
    /// Sends one datagram.
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
        self.socket.send_to(datagram, to).await.map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

/// A request from a handle to the driver task.
#[derive(Debug)]
enum Command {
    Set { key: String, value: Vec<u8>, reply: oneshot::Sender<Result<(), SetError>> },
    Delete { key: String, reply: oneshot::Sender<()> },
    View { reply: oneshot::Sender<Arc<ClusterView>> },
    Stats { reply: oneshot::Sender<Stats> },
    Leave { reply: oneshot::Sender<()> },
}

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
        let (reply, answer) = oneshot::channel();
        let command = Command::Set { key: key.to_owned(), value, reply };
        if self.commands.send(command).await.is_err() {
            return Err(SetError::Stopped);
        }
        answer.await.unwrap_or(Err(SetError::Stopped))
    }

    /// Deletes one of this node's keys and gossips the change at once; nothing happens after
    /// the driver stopped.
    pub async fn delete(&self, key: &str) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Delete { key: key.to_owned(), reply }).await.is_ok() {
            // An error only means the driver stopped meanwhile, which `delete` tolerates.
            let _ = answer.await;
        }
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
    loop {
        let wake = tokio::select! {
            _ = ticker.tick() => Wake::Tick,
            received = transport.recv_from(&mut buffer) => Wake::Received(received),
            command = commands.recv() => Wake::Command(command),
        };
        let mut stop = false;
        let outgoing = match wake {
            Wake::Tick => core.tick(now()),
            Wake::Received(Ok((len, from))) => core.handle(from, &buffer[..len], now()),
            Wake::Received(Err(error)) => {
                tracing::debug!(%error, "gossip receive failed");
                Vec::new()
            }
            Wake::Command(None) => break,
            Wake::Command(Some(command)) => match command {
                Command::Set { key, value, reply } => {
                    let result = core.set(&key, value);
                    let outgoing = if result.is_ok() { core.gossip_now(now()) } else { Vec::new() };
                    // A dropped reply only means the caller stopped waiting.
                    let _ = reply.send(result);
                    outgoing
                }
                Command::Delete { key, reply } => {
                    core.delete(&key);
                    let _ = reply.send(());
                    core.gossip_now(now())
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

/// Sends datagrams; a failed send is like a lost datagram, which gossip tolerates.
async fn send_all<T: Transport>(transport: &T, outgoing: Vec<Outgoing>) {
    for Outgoing { to, datagram } in outgoing {
        if let Err(error) = transport.send_to(to, &datagram).await {
            tracing::debug!(%error, %to, "gossip send failed");
        }
    }
}
