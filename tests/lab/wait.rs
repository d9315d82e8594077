//! Polling with a deadline, for conditions that a distributed system reaches eventually.

use std::thread;
use std::time::{Duration, Instant};

/// Calls `predicate` every `poll` until it returns true or `timeout` has passed; returns whether it
/// became true. The predicate is always evaluated at least once, and once more at the deadline, so
/// a slow machine that stalls the poller itself does not turn into a false failure.
pub fn wait_until(timeout: Duration, poll: Duration, mut predicate: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if predicate() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(poll.min(deadline - now));
        if Instant::now() >= deadline {
            return predicate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_true_as_soon_as_the_predicate_holds() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn gives_up_after_the_timeout() {
        let started = Instant::now();
        assert!(!wait_until(Duration::from_millis(30), Duration::from_millis(5), || false));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
