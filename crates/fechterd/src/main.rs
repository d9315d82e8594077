//! `fechterd`: parses the command line, sets up logging, the kernel side, gossip and the control
//! socket, then runs the daemon until SIGTERM or SIGINT.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fechter_gossip::crypto::KeyRing;
use fechter_gossip::{Config, GossipHandle, Stats, UdpTransport};
use fechter_netops::LinuxNet;
use fechterd::config::{self, ConfigError};
use fechterd::daemon::{Daemon, DaemonConfig, remove_stale_addresses};
use fechterd::options::Options;
use fechterd::persist::{Loaded, load_pool};
use fechterd::pool::Pool;
use fechterd::service::{self, Reloader, Watchdog};
use fechterd::{control, maintenance};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if service::wants_man_page(&args) {
        return print_man_page();
    }
    let loaded = match config::load(&args) {
        Ok(loaded) => loaded,
        Err(ConfigError::Usage(error)) => error.exit(),
        Err(error) => {
            // Logging is not set up yet: its level may be what the file failed to give.
            let _ = writeln!(std::io::stderr(), "error: {error}");
            return ExitCode::from(2);
        }
    };
    let options = loaded.options.clone();
    // Errors go through the log, so that they reach stderr exactly once, formatted like every
    // other line; a bad filter falls back to `info` to be able to say so.
    let (log_filter, bad_filter) = service::init_logging(&options.log_level);
    if let Some(error) = bad_filter {
        error!("invalid --log-level {:?}: {error}", options.log_level);
        return ExitCode::from(2);
    }
    // Installed before anything slow, since SIGHUP's default action would end the daemon.
    let hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            error!("installing the SIGHUP handler: {error}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = Reloader::new(args, &loaded, log_filter);
    match run(options, reloader, hangups).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `fechterd --man`.
fn print_man_page() -> ExitCode {
    let written = service::man_page().and_then(|page| std::io::stdout().lock().write_all(&page));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write the man page: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options, reloader: Reloader, hangups: Signal) -> Result<()> {
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
    let metrics_listener = match options.metrics.metrics_address {
        Some(address) => Some(
            fechterd::metrics::bind(address)
                .await
                .with_context(|| format!("binding --metrics-address {address}"))?,
        ),
        None => None,
    };
    let net = LinuxNet::new().await.context("opening netlink")?;
    let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
    let maintenance = maintenance::load_at_start(&options.state_dir, u64::try_from(started_ms).unwrap_or(0))
        .context("loading the maintenance flag")?;
    if maintenance.as_ref().is_some_and(|record| record.on) {
        // The addresses found are the frozen assignment of a daemon stopped during maintenance.
        warn!("maintenance mode is on: keeping the addresses found on the interfaces");
    } else {
        let stale =
            remove_stale_addresses(&net).await.context("removing stale addresses of an earlier run")?;
        if stale > 0 {
            info!(stale, "removed stale addresses before joining");
        }
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
    // A node's id is its gossip address written out, so gossip can refuse any other identity.
    config.names_are_addresses = true;
    config.keys = keys;
    if config.keys.is_none() {
        warn!("gossip is neither authenticated nor encrypted; use --cluster-key-file on untrusted networks");
    }
    let gossip = fechter_gossip::spawn(config, transport);

    let drop_reporter = tokio::spawn(report_dropped_datagrams(gossip.clone()));
    let metrics = metrics_listener.map(|listener| {
        let registry = std::sync::Arc::new(fechterd::metrics::Metrics::new());
        let server = tokio::spawn(fechterd::metrics::serve(listener, registry.clone(), gossip.clone()));
        (registry, server)
    });

    let (requests, control_requests) = mpsc::channel(16);
    let server = tokio::spawn(control::serve(listener, requests, options.admin_group.clone()));
    let (reload_sender, reloads) = mpsc::channel(4);
    let reload_task = tokio::spawn(reloader.run(hangups, reload_sender));
    let mut daemon = Daemon::new(DaemonConfig::from_options(&options), net, gossip, pool)
        .with_maintenance(maintenance)
        .with_reloads(reloads)
        .with_watchdog(Watchdog::from_env())
        .with_checks(options.checks.config());
    if let Some(hooks) = options.hooks.config() {
        daemon = daemon.with_hooks(hooks);
    }
    if let Some((registry, _)) = &metrics {
        daemon = daemon.with_metrics(registry.clone());
    }
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received"),
            _ = interrupt.recv() => info!("SIGINT received"),
        }
        service::notify_stopping();
    };
    service::notify_ready();
    let outcome = daemon.run(control_requests, shutdown).await;
    reload_task.abort();
    server.abort();
    if let Some((_, metrics_server)) = &metrics {
        metrics_server.abort();
    }
    drop_reporter.abort();
    if let Err(error) = std::fs::remove_file(&options.socket) {
        warn!(socket = %options.socket.display(), %error, "could not remove the control socket");
    }
    outcome.context("the daemon stopped")
}

/// How often the gossip drop counters are checked, and at most how often they are logged.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Logs gossip's drop counters whenever one of them grew: datagrams of another cluster, with a
/// wrong key, replayed, malformed or oversized are dropped silently by gossip, and this line is
/// how an operator learns that something on the network speaks to the port and is refused.
async fn report_dropped_datagrams(gossip: GossipHandle) {
    let mut ticker = tokio::time::interval(DROP_REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reported = dropped_counters(&Stats::default());
    loop {
        ticker.tick().await;
        let stats = gossip.stats().await;
        let counters = dropped_counters(&stats);
        if counters != reported {
            warn!(
                other_cluster = stats.dropped_other_cluster,
                auth_failure = stats.dropped_auth_failure,
                replay = stats.dropped_replay,
                malformed = stats.dropped_malformed,
                oversized = stats.dropped_oversized,
                bad_magic = stats.dropped_bad_magic,
                wrong_version = stats.dropped_wrong_version,
                stale_sender = stats.dropped_stale_sender,
                received = stats.datagrams_received,
                "dropped gossip datagrams (totals since start)"
            );
            reported = counters;
        }
    }
}

/// Every drop counter of `stats`, to tell whether any grew.
fn dropped_counters(stats: &Stats) -> [u64; 8] {
    [
        stats.dropped_other_cluster,
        stats.dropped_auth_failure,
        stats.dropped_replay,
        stats.dropped_malformed,
        stats.dropped_oversized,
        stats.dropped_bad_magic,
        stats.dropped_wrong_version,
        stats.dropped_stale_sender,
    ]
}
