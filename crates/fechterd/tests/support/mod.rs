//! What the in-process daemon tests share: starting a whole daemon on loopback gossip and a
//! `FakeNet`, talking to it as the control socket would, and waiting for a condition.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fechter_cli::proto::{Command, Reply};
use fechter_gossip::{Config, UdpTransport};
use fechter_netops::AnnounceConfig;
use fechter_netops::fake::FakeNet;
use fechterd::control::ControlRequest;
use fechterd::daemon::{Daemon, DaemonConfig, DaemonError};
use fechterd::pool::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

/// Short enough that the tests run in seconds, long enough for a loaded machine.
pub(crate) const GOSSIP_INTERVAL: Duration = Duration::from_millis(40);

/// A daemon running in this process.
pub(crate) struct Started {
    /// Its gossip socket's address, which is also its node id.
    pub(crate) address: SocketAddr,
    /// Its control channel.
    pub(crate) control: mpsc::Sender<ControlRequest>,
    /// Dropping or sending stops it the way SIGTERM does.
    pub(crate) shutdown: oneshot::Sender<()>,
    /// The daemon's run.
    pub(crate) task: JoinHandle<Result<(), DaemonError>>,
}

/// Starts a daemon on `net`, seeded with `seeds`, with the tests' timings. `configure` may change
/// its configuration and `wrap` may add collaborators before it runs.
pub(crate) async fn start_daemon(
    seeds: &[SocketAddr],
    net: &FakeNet,
    state_dir: PathBuf,
    pool: Pool,
    configure: impl FnOnce(&mut DaemonConfig),
    wrap: impl FnOnce(Daemon<FakeNet>) -> Daemon<FakeNet>,
) -> Started {
    let transport = UdpTransport::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = transport.local_addr().unwrap();
    let id = address.to_string();
    let mut gossip_config = Config::new("test", id.clone(), 1, address);
    gossip_config.seeds = seeds.to_vec();
    gossip_config.gossip_interval = GOSSIP_INTERVAL;
    let mut config = DaemonConfig {
        node_id: id.clone(),
        gateway: "192.0.2.1".parse().unwrap(),
        state_dir,
        admin_up: false,
        quorum: 0,
        settle_time: GOSSIP_INTERVAL * 10,
        announce: AnnounceConfig { count: 1, interval: Duration::ZERO },
        refresh_interval: None,
        ping_interval: Duration::from_millis(30),
        ping_timeout: Duration::from_millis(30),
        reconcile_interval: Duration::from_millis(300),
    };
    configure(&mut config);
    let gossip = fechter_gossip::spawn(gossip_config, transport);
    let daemon = wrap(Daemon::new(config, net.clone(), gossip, pool));
    let (control, requests) = mpsc::channel(8);
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(requests, async move {
        let _ = stop.await;
    }));
    Started { address, control, shutdown, task }
}

/// Sends `command` over `control` and returns the daemon's reply.
pub(crate) async fn send(control: &mpsc::Sender<ControlRequest>, command: Command) -> Reply {
    let (reply, answer) = oneshot::channel();
    control.send(ControlRequest { command, reply }).await.unwrap();
    answer.await.unwrap()
}

/// How long a test waits for a condition before it fails: generous, the machine is shared.
const PATIENCE: Duration = Duration::from_secs(15);

/// Waits until `condition` holds, failing the test after [`PATIENCE`].
pub(crate) async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(20)).await;
    }
}
