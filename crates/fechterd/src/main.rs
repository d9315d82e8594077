//! `fechterd`: parses the command line, sets up logging, the kernel side, gossip and the control
//! socket, then runs the daemon until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use fechter_gossip::crypto::KeyRing;
use fechter_gossip::{Config, UdpTransport};
use fechter_netops::LinuxNet;
use fechterd::control;
use fechterd::daemon::{Daemon, DaemonConfig, remove_stale_addresses};
use fechterd::options::Options;
use fechterd::persist::{Loaded, load_pool};
use fechterd::pool::Pool;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    // Errors go through the log, so that they reach stderr exactly once, formatted like every
    // other line; a bad filter falls back to `info` to be able to say so.
    let (filter, bad_filter) = match EnvFilter::try_new(&options.log_level) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Some(error) = bad_filter {
        error!("invalid --log-level {:?}: {error}", options.log_level);
        return ExitCode::from(2);
    }
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<()> {
    let node_id = options.node_id();
    let keys = match &options.cluster_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the cluster key file {}", path.display()))?;
            let ring = KeyRing::from_base64_lines(&text)
                .with_context(|| format!("the cluster key file {}", path.display()))?;
            Some(ring)
        }
        None => None,
    };
    let mut seeds = Vec::new();
    for target in &options.attach {
        let resolved = target.resolve().await.with_context(|| format!("resolving --attach {target}"))?;
        if resolved.is_empty() {
            anyhow::bail!("--attach {target} resolves to no address");
        }
        seeds.extend(resolved.into_iter().filter(|seed| *seed != options.gossip_address()));
    }
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    // The socket comes first: it refuses to start a second daemon before anything is touched.
    let listener = control::bind(&options.socket).await.context("setting up the control socket")?;
    let transport = UdpTransport::bind(options.gossip_address())
        .await
        .with_context(|| format!("binding the gossip port {}", options.gossip_address()))?;
    let net = LinuxNet::new().await.context("opening netlink")?;
    let stale = remove_stale_addresses(&net).await.context("removing stale addresses of an earlier run")?;
    if stale > 0 {
        info!(stale, "removed stale addresses before joining");
    }

    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).context("the system clock is before 1970")?;
    let pool = match load_pool(&options.state_dir, u64::try_from(now_ms.as_millis()).unwrap_or(u64::MAX))
        .with_context(|| format!("loading the pool from {}", options.state_dir.display()))?
    {
        Loaded::Missing => Pool::new(),
        Loaded::Pool(pool) => pool,
        Loaded::Corrupt { moved_to, reason } => {
            error!(
                moved_to = %moved_to.display(),
                %reason,
                "the saved pool is corrupt; starting empty and relearning it from peers"
            );
            Pool::new()
        }
    };

    let generation = u64::try_from(now_ms.as_nanos()).unwrap_or(u64::MAX);
    let mut config =
        Config::new(options.cluster_id.clone(), node_id.clone(), generation, options.gossip_address());
    config.seeds = seeds;
    config.gossip_interval = options.gossip_interval();
    config.phi_threshold = options.dead_at;
    config.keys = keys;
    if config.keys.is_none() {
        warn!("gossip is neither authenticated nor encrypted; use --cluster-key-file on untrusted networks");
    }
    let gossip = fechter_gossip::spawn(config, transport);

    let (requests, control_requests) = mpsc::channel(16);
    let server = tokio::spawn(control::serve(listener, requests));
    let daemon = Daemon::new(DaemonConfig::from_options(&options), net, gossip, pool);
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received"),
            _ = interrupt.recv() => info!("SIGINT received"),
        }
    };
    let outcome = daemon.run(control_requests, shutdown).await;
    server.abort();
    if let Err(error) = std::fs::remove_file(&options.socket) {
        warn!(socket = %options.socket.display(), %error, "could not remove the control socket");
    }
    outcome.context("the daemon stopped")
}
