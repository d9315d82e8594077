//! Running an operator's program with a time limit, for health checks and hooks.
//!
//! The program runs in a process group of its own, so that on timeout the whole group (a shell
//! and whatever it started) is killed, not only the process fechterd started. Its output is
//! captured and its tail kept for the log.

use std::ffi::OsStr;
use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How much of a program's output is kept for the log.
pub const OUTPUT_TAIL_BYTES: usize = 512;

/// How long the `kill` of a timed-out process group may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// How a program run ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// It exited (or was killed by a signal: `code` is then `None`).
    Exited {
        /// The exit code.
        code: Option<i32>,
        /// The last [`OUTPUT_TAIL_BYTES`] of its stdout and stderr.
        output: String,
    },
    /// It ran past the time limit and was killed with its process group.
    TimedOut,
    /// It could not be started.
    NotStarted(std::io::Error),
}

impl RunOutcome {
    /// Whether the program exited with status 0.
    pub fn succeeded(&self) -> bool {
        matches!(self, RunOutcome::Exited { code: Some(0), .. })
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunOutcome::Exited { code: Some(code), output } if output.is_empty() => {
                write!(f, "exit status {code}")
            }
            RunOutcome::Exited { code: Some(code), output } => write!(f, "exit status {code}: {output}"),
            RunOutcome::Exited { code: None, .. } => write!(f, "killed by a signal"),
            RunOutcome::TimedOut => write!(f, "timed out"),
            RunOutcome::NotStarted(error) => write!(f, "could not start: {error}"),
        }
    }
}

/// Runs `program args` with `env` added to fechterd's environment, for at most `timeout`.
pub async fn run(
    program: impl AsRef<OsStr>,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> RunOutcome {
    let spawned = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(error) => return RunOutcome::NotStarted(error),
    };
    let group = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            RunOutcome::Exited { code: output.status.code(), output: tail(text.trim()) }
        }
        Ok(Err(error)) => RunOutcome::NotStarted(error),
        Err(_) => {
            // Dropping the wait killed the leader; its children are killed through the group.
            if let Some(group) = group {
                kill_group(group).await;
            }
            RunOutcome::TimedOut
        }
    }
}

/// Sends SIGKILL to process group `group` with the `kill` program, which needs no unsafe code.
async fn kill_group(group: u32) {
    let target = format!("-{group}");
    let kill = Command::new("kill")
        .args(["-KILL", "--", &target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    // The group may already be gone, which `kill` reports as an error; either way it is dead.
    let _ = tokio::time::timeout(KILL_TIMEOUT, kill).await;
}

/// The last [`OUTPUT_TAIL_BYTES`] of `text`, cut at a character boundary.
fn tail(text: &str) -> String {
    let mut start = text.len().saturating_sub(OUTPUT_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_cut_at_character_boundaries() {
        assert_eq!(tail("short"), "short");
        let long = "é".repeat(OUTPUT_TAIL_BYTES);
        let cut = tail(&long);
        assert!(cut.len() <= OUTPUT_TAIL_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn exit_codes_output_and_timeouts() {
        let env = [("FECHTER_TEST".to_owned(), "value".to_owned())];
        let ok = run("sh", &["-c", "echo \"$FECHTER_TEST\""], &env, Duration::from_secs(5)).await;
        assert!(ok.succeeded());
        assert!(matches!(&ok, RunOutcome::Exited { output, .. } if output == "value"), "{ok}");
        let failed = run("sh", &["-c", "echo oops >&2; exit 3"], &[], Duration::from_secs(5)).await;
        assert_eq!(failed.to_string(), "exit status 3: oops");
        let started = std::time::Instant::now();
        let hung = run("sh", &["-c", "sleep 30; sleep 30"], &[], Duration::from_millis(100)).await;
        assert!(matches!(hung, RunOutcome::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        let missing = run("/nonexistent/program", &[], &[], Duration::from_secs(1)).await;
        assert!(matches!(missing, RunOutcome::NotStarted(_)));
    }
}
