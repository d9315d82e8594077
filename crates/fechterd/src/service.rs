//! fechterd as a service: a log filter that a reload can change, SIGHUP reloads, systemd's
//! readiness and watchdog notifications, and the man page.
//!
//! Notifications go through `sd-notify`, which does nothing when `NOTIFY_SOCKET` is unset, so the
//! same binary runs under systemd (`Type=notify`, `WatchdogSec=`), another supervisor, or a shell.
//! The watchdog is fed from the daemon's event loop, which turns at least once a second (the
//! reconcile timer), so a loop that hangs stops feeding it and systemd restarts the daemon.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{self, OptionValues};
use crate::options::Options;

/// The argument that makes `fechterd` print its man page (roff) and exit, for packaging.
pub const MAN_PAGE_ARGUMENT: &str = "--man";

/// Whether the command line is exactly `fechterd --man`.
pub fn wants_man_page(args: &[OsString]) -> bool {
    args.len() == 2 && args[1] == MAN_PAGE_ARGUMENT
}

/// fechterd's man page, section 8, in roff.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let mut page = Vec::new();
    clap_mangen::Man::new(Options::command()).section("8").render(&mut page)?;
    Ok(page)
}

/// The log filter in force, which a reload can replace.
#[derive(Debug, Clone)]
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogFilter {
    /// Replaces the filter; the error says why `level` is not a filter.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|error| error.to_string())?;
        self.handle.reload(filter).map_err(|error| error.to_string())
    }
}

/// Sends logs to stderr through `level`; a bad filter falls back to `info` and comes back as the
/// error to report, so that it is reported through the log like everything else.
pub fn init_logging(level: &str) -> (LogFilter, Option<String>) {
    let (filter, bad_filter) = match EnvFilter::try_new(level) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error.to_string())),
    };
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    (LogFilter { handle }, bad_filter)
}

/// Tells systemd that startup is complete.
pub fn notify_ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("running")]);
}

/// Tells systemd that the daemon is releasing its addresses and leaving.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("releasing addresses and leaving the cluster")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "could not notify systemd");
    }
}

/// Feeds systemd's watchdog at half its period, when it has one.
#[derive(Debug, Clone, Default)]
pub struct Watchdog {
    period: Option<Duration>,
    last_fed: Option<Instant>,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC`), if any.
    pub fn from_env() -> Watchdog {
        let period = sd_notify::watchdog_enabled();
        if let Some(period) = period {
            info!(?period, "feeding the systemd watchdog");
        }
        Watchdog::new(period)
    }

    /// A watchdog of `period`; `None` never feeds.
    pub fn new(period: Option<Duration>) -> Watchdog {
        Watchdog { period, last_fed: None }
    }

    /// Whether it should be fed at `now`: never fed yet, or half its period has passed.
    pub fn due(&self, now: Instant) -> bool {
        match (self.period, self.last_fed) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(period), Some(last)) => now.saturating_duration_since(last) >= period / 2,
        }
    }

    /// Feeds it if it is due.
    pub fn feed(&mut self, now: Instant) {
        if self.due(now) {
            notify(&[NotifyState::Watchdog]);
            self.last_fed = Some(now);
        }
    }
}

/// What SIGHUP reloads from: the original command line, which names the file.
#[derive(Debug)]
pub struct Reloader {
    args: Vec<OsString>,
    path: Option<PathBuf>,
    in_force: OptionValues,
    log_filter: LogFilter,
}

impl Reloader {
    /// A reloader for options loaded from `args` with `values`.
    pub fn new(args: Vec<OsString>, loaded: &config::Loaded, log_filter: LogFilter) -> Reloader {
        Reloader { args, path: loaded.options.config.clone(), in_force: loaded.values.clone(), log_filter }
    }

    /// On every SIGHUP, loads the options again, applies the log filter itself and hands every
    /// other reloadable change to the daemon through `daemon`, and logs what changed and what
    /// waits for a restart. An invalid file or log filter changes nothing.
    pub async fn run(mut self, mut hangups: Signal, daemon: mpsc::Sender<Options>) {
        while hangups.recv().await.is_some() {
            info!("SIGHUP received: reloading the configuration");
            let loaded = match config::load(&self.args) {
                Ok(loaded) => loaded,
                Err(error) => {
                    error!("reload refused, keeping the running configuration: {error}");
                    continue;
                }
            };
            let diff = config::diff(&self.in_force, &loaded.values);
            if diff.applies("log-level")
                && let Err(reason) = self.log_filter.set(&loaded.options.log_level)
            {
                error!(
                    "reload refused, keeping the running configuration: invalid log-level {:?}: {reason}",
                    loaded.options.log_level
                );
                continue;
            }
            if diff.applied.iter().any(|change| change.option != "log-level")
                && daemon.send(loaded.options.clone()).await.is_err()
            {
                debug!("the daemon is stopping; the reload is moot");
                return;
            }
            info!("{}", diff.summary(self.path.as_deref()));
            self.in_force = config::in_force_after(&self.in_force, &loaded.values);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_at_half_its_period_and_never_without_one() {
        let start = Instant::now();
        let mut watchdog = Watchdog::new(Some(Duration::from_secs(10)));
        assert!(watchdog.due(start));
        // Without NOTIFY_SOCKET, feeding sends nothing but still counts.
        watchdog.last_fed = Some(start);
        assert!(!watchdog.due(start + Duration::from_secs(4)));
        assert!(watchdog.due(start + Duration::from_secs(5)));
        let never = Watchdog::new(None);
        assert!(!never.due(start + Duration::from_secs(3600)));
    }

    #[test]
    fn the_man_page_is_fechterds_and_only_an_exact_request_gets_it() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains(".TH fechterd 8"), "{}", &page[..200.min(page.len())]);
        assert!(page.contains("listen\\-address"));
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_man_page(&args(&["fechterd", "--man"])));
        assert!(!wants_man_page(&args(&["fechterd", "--man", "-a", "10.0.0.1"])));
        assert!(!wants_man_page(&args(&["fechterd"])));
    }
}
