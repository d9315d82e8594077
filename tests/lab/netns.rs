//! Network namespaces: naming, running commands inside them, and tearing them down.
//!
//! Every namespace of this suite is named `flab-<tag>-<pid>-<counter>-<role>`. The pid is the
//! process that created it, so [`sweep_stale_labs`] can remove what a crashed run left behind
//! without touching the labs of a run that is still going (tests run in parallel, and the demo
//! may run beside them).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::process::{CommandOutput, run_with_timeout};

/// The first part of every namespace name this suite creates.
const PREFIX: &str = "flab";

/// How long one `ip` or `kill` invocation may take before it counts as hung.
pub(crate) const IP_TIMEOUT: Duration = Duration::from_secs(20);

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, process-unique lab name `flab-<tag>-<pid>-<counter>`, and the counter value (which the
/// lab also uses to pick its subnet).
pub(crate) fn unique_lab_name(tag: &str) -> Result<(String, u32)> {
    if tag.is_empty() || tag.len() > 10 || !tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!("lab tag {tag:?} must be 1 to 10 lowercase letters or digits");
    }
    let counter = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok((format!("{PREFIX}-{tag}-{}-{counter}", std::process::id()), counter))
}

/// Runs `ip ARGS` and fails with its stderr unless it succeeds.
pub(crate) fn ip(args: &[&str]) -> Result<CommandOutput> {
    checked(run_with_timeout(Command::new("ip").args(args), None, IP_TIMEOUT)?, "ip", args)
}

/// Runs the `ip` commands of `script` (one per line, without the leading `ip`) inside namespace
/// `ns` in one process: building a lab is dozens of commands, and the machine is small.
pub(crate) fn ip_batch(ns: &str, script: &str) -> Result<()> {
    let args = ["-n", ns, "-batch", "-"];
    checked(run_with_timeout(Command::new("ip").args(args), Some(script), IP_TIMEOUT)?, "ip", &args)?;
    Ok(())
}

/// Runs `PROGRAM ARGS` inside namespace `ns` and returns whatever happened.
pub(crate) fn exec_in(ns: &str, program: &str, args: &[&str], timeout: Duration) -> Result<CommandOutput> {
    run_with_timeout(Command::new("ip").args(["netns", "exec", ns, program]).args(args), None, timeout)
}

fn checked(output: CommandOutput, program: &str, args: &[&str]) -> Result<CommandOutput> {
    if !output.success() {
        bail!("`{program} {}` failed ({:?}): {}", args.join(" "), output.code, output.stderr.trim());
    }
    Ok(output)
}

/// The names of all namespaces on the machine.
pub(crate) fn list_namespaces() -> Result<Vec<String>> {
    let output = ip(&["netns", "list"])?;
    // Lines look like `name (id: 3)` or just `name`.
    Ok(output.stdout.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_owned).collect())
}

/// Kills every process inside `ns` and deletes it. Errors are collected rather than returned
/// early, so one stubborn piece never leaves the rest behind.
pub(crate) fn destroy_namespace(ns: &str) -> Vec<String> {
    let mut problems = Vec::new();
    match ip(&["netns", "pids", ns]) {
        Ok(output) => {
            let pids: Vec<&str> = output.stdout.split_whitespace().collect();
            if !pids.is_empty() {
                let mut kill = Command::new("kill");
                kill.arg("-KILL").args(&pids);
                // A process that exited meanwhile makes kill fail for that pid only; that is fine.
                if let Err(error) = run_with_timeout(&mut kill, None, IP_TIMEOUT) {
                    problems.push(format!("killing the processes in {ns}: {error:#}"));
                }
            }
        }
        Err(error) => problems.push(format!("listing the processes in {ns}: {error:#}")),
    }
    if let Err(error) = ip(&["netns", "del", ns]) {
        problems.push(format!("deleting {ns}: {error:#}"));
    }
    problems
}

/// The pid in a name of this suite (`flab-<tag>-<pid>-<counter>-<role>`), if the name is one.
fn owner_pid(ns: &str) -> Option<u32> {
    let mut parts = ns.split('-');
    if parts.next()? != PREFIX {
        return None;
    }
    let _tag = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    let _counter: u32 = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

/// Removes the namespaces (and the processes in them) left behind by earlier runs of this suite
/// whose owning process no longer exists. Returns the names it removed.
pub fn sweep_stale_labs() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in list_namespaces()? {
        let Some(pid) = owner_pid(&ns) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let problems = destroy_namespace(&ns);
        if !problems.is_empty() {
            bail!("cannot remove the stale namespace {ns}: {}", problems.join("; "));
        }
        removed.push(ns);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_names_of_this_suite() {
        assert_eq!(owner_pid("flab-e2e-1234-7-n0"), Some(1234));
        assert_eq!(owner_pid("flab-demo-99-0-br"), Some(99));
        assert_eq!(owner_pid("flab-e2e-1234-7"), None);
        assert_eq!(owner_pid("fl-n1"), None);
        assert_eq!(owner_pid("flab-e2e-x-7-n0"), None);
        assert_eq!(owner_pid("other-e2e-1-2-n0"), None);
    }

    #[test]
    fn lab_names_are_unique_and_checked() {
        let (first, _) = unique_lab_name("abc").unwrap();
        let (second, _) = unique_lab_name("abc").unwrap();
        assert_ne!(first, second);
        assert!(owner_pid(&format!("{first}-br")).is_some());
        assert!(unique_lab_name("Bad-Tag").is_err());
        assert!(unique_lab_name("").is_err());
    }
}
