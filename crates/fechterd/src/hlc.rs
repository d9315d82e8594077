//! Hybrid logical clock stamps: the total order behind the replicated pool.
//!
//! A [`Stamp`] is wall-clock milliseconds, a counter and the writing node's id. The clock never
//! goes backwards, even when the wall clock does, and it moves past every stamp it has seen, so a
//! change made after seeing another always orders after it. Equal wall times are broken by the
//! counter and finally by the node id, which makes the order total and the same on every node,
//! unlike the original's wall-clock last-writer-wins where equal timestamps never replicated.

use serde::{Deserialize, Serialize};

/// A point in the cluster's hybrid logical time. Ordered by wall time, counter, then node id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch, as the writer's clock saw them (or later).
    pub wall_ms: u64,
    /// Orders stamps that share a wall time.
    pub counter: u32,
    /// The node that wrote the stamp.
    pub node: String,
}

/// The local clock: the greatest (wall time, counter) issued or observed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HybridClock {
    wall_ms: u64,
    counter: u32,
}

impl HybridClock {
    /// A clock that has seen nothing yet.
    pub fn new() -> HybridClock {
        HybridClock::default()
    }

    /// A new stamp for `node`, greater than every stamp issued or observed before.
    /// `physical_ms` is the wall clock now; it is only a lower bound.
    pub fn stamp(&mut self, physical_ms: u64, node: &str) -> Stamp {
        if physical_ms > self.wall_ms {
            self.wall_ms = physical_ms;
            self.counter = 0;
        } else if let Some(next) = self.counter.checked_add(1) {
            self.counter = next;
        } else {
            // The counter is exhausted within one millisecond: borrow the next millisecond.
            self.wall_ms = self.wall_ms.saturating_add(1);
            self.counter = 0;
        }
        Stamp { wall_ms: self.wall_ms, counter: self.counter, node: node.to_owned() }
    }

    /// Moves the clock past `stamp`, so the next stamp issued here orders after it.
    pub fn observe(&mut self, stamp: &Stamp) {
        if (stamp.wall_ms, stamp.counter) > (self.wall_ms, self.counter) {
            self.wall_ms = stamp.wall_ms;
            self.counter = stamp.counter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_even_when_the_wall_clock_stands_still_or_goes_back() {
        let mut clock = HybridClock::new();
        let first = clock.stamp(1_000, "a");
        let second = clock.stamp(1_000, "a");
        let third = clock.stamp(900, "a");
        let fourth = clock.stamp(1_001, "a");
        assert!(first < second && second < third && third < fourth);
        assert_eq!((third.wall_ms, third.counter), (1_000, 2));
        assert_eq!((fourth.wall_ms, fourth.counter), (1_001, 0));
    }

    #[test]
    fn observing_a_later_stamp_orders_the_next_local_stamp_after_it() {
        let mut clock = HybridClock::new();
        let remote = Stamp { wall_ms: 5_000, counter: 7, node: "b".to_owned() };
        clock.observe(&remote);
        let local = clock.stamp(1_000, "a");
        assert!(local > remote);
        assert_eq!((local.wall_ms, local.counter), (5_000, 8));
    }

    #[test]
    fn observing_an_older_stamp_changes_nothing() {
        let mut clock = HybridClock::new();
        clock.stamp(2_000, "a");
        clock.observe(&Stamp { wall_ms: 1_000, counter: 99, node: "b".to_owned() });
        assert_eq!(clock.stamp(1_500, "a").wall_ms, 2_000);
    }

    #[test]
    fn equal_times_are_broken_by_node_id() {
        let a = Stamp { wall_ms: 1, counter: 0, node: "10.0.0.1:4573".to_owned() };
        let b = Stamp { wall_ms: 1, counter: 0, node: "10.0.0.2:4573".to_owned() };
        assert!(a < b);
    }

    #[test]
    fn an_exhausted_counter_borrows_the_next_millisecond() {
        let mut clock = HybridClock { wall_ms: 10, counter: u32::MAX };
        let stamp = clock.stamp(10, "a");
        assert_eq!((stamp.wall_ms, stamp.counter), (11, 0));
    }
}
