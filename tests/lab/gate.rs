//! Whether this machine can run the namespace tests at all.

use std::sync::OnceLock;

use crate::netns::{destroy_namespace, ip, unique_lab_name};

/// Decides whether the end-to-end test `test_name` runs here: it needs root and a working
/// `ip netns add`. Without them it prints `skipped <name>: <reason>` and returns false, unless the
/// environment says `FECHTER_E2E=require`, in which case a skip is a failure and this panics.
pub fn e2e_gate(test_name: &str) -> bool {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    let Some(reason) = REASON.get_or_init(why_not_runnable) else { return true };
    if std::env::var("FECHTER_E2E").is_ok_and(|value| value == "require") {
        panic!("{test_name} cannot run and FECHTER_E2E=require: {reason}");
    }
    #[allow(clippy::print_stderr, reason = "a skipped test must say so where the test runner shows it")]
    {
        eprintln!("skipped {test_name}: {reason}");
    }
    false
}

fn why_not_runnable() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("needs root (running as uid {uid})")),
        None => return Some("cannot read the effective uid from /proc/self/status".to_owned()),
    }
    let probe = match unique_lab_name("probe") {
        Ok((name, _)) => format!("{name}-x"),
        Err(error) => return Some(format!("{error:#}")),
    };
    if let Err(error) = ip(&["netns", "add", &probe]) {
        return Some(format!("`ip netns add` does not work here: {error:#}"));
    }
    let problems = destroy_namespace(&probe);
    if !problems.is_empty() {
        return Some(format!("cannot delete a probe namespace: {}", problems.join("; ")));
    }
    None
}

/// The effective uid of this process, read from `/proc/self/status` (the `Uid:` line lists real,
/// effective, saved and filesystem uids), because asking libc would need unsafe code.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}
