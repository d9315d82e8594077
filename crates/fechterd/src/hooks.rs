//! Hooks: the executables of `--hooks-dir`, run on each acquisition and release of an address.
//!
//! A hook runs with `FECHTER_EVENT` (`acquire` or `release`), `FECHTER_ADDRESS`,
//! `FECHTER_PREFIX_LEN`, `FECHTER_INTERFACE` and `FECHTER_NODE_ID` in its environment. Hooks run in
//! one background task, after the address was installed and announced (acquire) or removed
//! (release), so a hook never delays a failover. They run one at a time, in event order and, for
//! one event, by file name, so a release hook never overtakes the acquire hook of the same
//! address. A hook that fails or outlives `--hook-timeout` (then it is killed with its process
//! group) is logged at warn, and nothing else happens. The directory is read for every event, so
//! hooks can be added or removed without a restart.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::checks::parse_duration;
use crate::shell;

/// How many events may wait for their hooks before new ones are dropped (and logged).
pub const HOOK_QUEUE_LEN: usize = 1024;

/// The hook options of `fechterd`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Hooks")]
pub struct HookOptions {
    /// Run every executable file in DIR, by name, on each acquisition and release of an address.
    #[arg(long, value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,

    /// How long one hook may run before it is killed, e.g. `10s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub hook_timeout: Duration,
}

impl HookOptions {
    /// The hooks configuration, if a directory was given.
    pub fn config(&self) -> Option<HooksConfig> {
        self.hooks_dir.clone().map(|dir| HooksConfig { dir, timeout: self.hook_timeout })
    }
}

/// Where the hooks are and how long each may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    /// The directory of hooks.
    pub dir: PathBuf,
    /// The time limit of one hook.
    pub timeout: Duration,
}

/// What happened to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// It was installed and announced here.
    Acquire,
    /// It was removed from here.
    Release,
}

impl HookEvent {
    /// The value of `FECHTER_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Acquire => "acquire",
            HookEvent::Release => "release",
        }
    }
}

/// One event the hooks run for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookJob {
    /// Acquire or release.
    pub event: HookEvent,
    /// The interface.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// The environment a hook runs with.
pub fn hook_environment(job: &HookJob, node_id: &str) -> Vec<(String, String)> {
    [
        ("FECHTER_EVENT", job.event.as_str().to_owned()),
        ("FECHTER_ADDRESS", job.address.to_string()),
        ("FECHTER_PREFIX_LEN", job.prefix_len.to_string()),
        ("FECHTER_INTERFACE", job.interface.clone()),
        ("FECHTER_NODE_ID", node_id.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// The hooks in `dir`: regular files (or links to them) with an execute bit, whose names do not
/// start with a dot, sorted by name.
pub fn list_hooks(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut hooks = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path.file_name().and_then(|name| name.to_str()).is_none_or(|name| name.starts_with('.'));
        // Following links, so a hook may be a link to a script kept elsewhere.
        let executable = std::fs::metadata(&path)
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0);
        if !hidden && executable {
            hooks.push(path);
        }
    }
    hooks.sort();
    Ok(hooks)
}

/// The background runner of hooks.
#[derive(Debug)]
pub struct Hooks {
    jobs: mpsc::Sender<HookJob>,
    worker: JoinHandle<()>,
}

impl Hooks {
    /// Starts the runner task.
    pub fn start(config: HooksConfig, node_id: String) -> Hooks {
        let (jobs, mut queue) = mpsc::channel::<HookJob>(HOOK_QUEUE_LEN);
        let worker = tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                run_hooks(&config, &node_id, &job).await;
            }
        });
        Hooks { jobs, worker }
    }

    /// Queues the hooks of one event; never waits.
    pub fn submit(&self, job: HookJob) {
        if let Err(error) = self.jobs.try_send(job) {
            let job = match error {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => job,
            };
            warn!(event = job.event.as_str(), address = %job.address, "too many hooks waiting; skipped the hooks of this event");
        }
    }

    /// Lets the queued hooks finish, waiting at most `limit`; the rest are abandoned (killed).
    pub async fn finish(self, limit: Duration) {
        let Hooks { jobs, mut worker } = self;
        drop(jobs);
        if tokio::time::timeout(limit, &mut worker).await.is_err() {
            warn!(?limit, "hooks still running at exit were abandoned");
            worker.abort();
        }
    }
}

async fn run_hooks(config: &HooksConfig, node_id: &str, job: &HookJob) {
    let hooks = match list_hooks(&config.dir) {
        Ok(hooks) => hooks,
        Err(error) => {
            warn!(dir = %config.dir.display(), %error, "cannot read the hooks directory");
            return;
        }
    };
    let env = hook_environment(job, node_id);
    for hook in hooks {
        let outcome = shell::run(&hook, &[], &env, config.timeout).await;
        if outcome.succeeded() {
            debug!(hook = %hook.display(), event = job.event.as_str(), address = %job.address, "hook ran");
        } else {
            warn!(hook = %hook.display(), event = job.event.as_str(), address = %job.address, %outcome, "hook failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(event: HookEvent) -> HookJob {
        HookJob { event, interface: "eth0".into(), address: "198.18.0.20".parse().unwrap(), prefix_len: 32 }
    }

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_environment_names_everything() {
        let env = hook_environment(&job(HookEvent::Release), "10.0.0.1:4573");
        let keys: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("FECHTER_EVENT", "release"),
                ("FECHTER_ADDRESS", "198.18.0.20"),
                ("FECHTER_PREFIX_LEN", "32"),
                ("FECHTER_INTERFACE", "eth0"),
                ("FECHTER_NODE_ID", "10.0.0.1:4573"),
            ]
        );
    }

    #[tokio::test]
    async fn hooks_run_in_order_and_a_hanging_one_is_killed() {
        let dir = std::env::temp_dir().join(format!("fechterd-hooks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log.txt");
        let log_text = log.display().to_string();
        script(
            &dir,
            "10-record",
            &format!(
                "echo \"10 $FECHTER_EVENT $FECHTER_ADDRESS/$FECHTER_PREFIX_LEN $FECHTER_INTERFACE $FECHTER_NODE_ID\" >> {log_text}"
            ),
            0o755,
        );
        script(&dir, "20-hang", "sleep 30", 0o755);
        script(&dir, "30-fail", &format!("echo 30 $FECHTER_EVENT >> {log_text}; exit 1"), 0o700);
        script(&dir, "40-not-executable", &format!("echo 40 >> {log_text}"), 0o644);
        script(&dir, ".hidden", &format!("echo hidden >> {log_text}"), 0o755);
        std::fs::create_dir(dir.join("50-directory")).unwrap();
        let names: Vec<String> = list_hooks(&dir)
            .unwrap()
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-record", "20-hang", "30-fail"]);

        let config = HooksConfig { dir: dir.clone(), timeout: Duration::from_millis(200) };
        let hooks = Hooks::start(config, "n1".into());
        let started = std::time::Instant::now();
        hooks.submit(job(HookEvent::Acquire));
        hooks.submit(job(HookEvent::Release));
        assert!(started.elapsed() < Duration::from_millis(100), "submitting never waits");
        hooks.finish(Duration::from_secs(10)).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text,
            "10 acquire 198.18.0.20/32 eth0 n1\n30 acquire\n10 release 198.18.0.20/32 eth0 n1\n30 release\n"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
