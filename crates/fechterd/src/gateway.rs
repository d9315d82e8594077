//! Gateway reachability with hysteresis: one reply makes it reachable, three misses in a row
//! make it unreachable. A node that cannot reach its gateway holds nothing, the split-brain guard
//! inherited from Fechter.

/// How many consecutive missed pings make the gateway unreachable.
pub const MISSES_TO_UNREACHABLE: u32 = 3;

/// The hysteresis state. It starts unreachable: nothing is held before the first reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayState {
    reachable: bool,
    misses: u32,
}

impl GatewayState {
    /// Unreachable, with no misses counted yet.
    pub fn new() -> GatewayState {
        GatewayState::default()
    }

    /// Whether the gateway counts as reachable.
    pub fn reachable(&self) -> bool {
        self.reachable
    }

    /// Records one ping outcome; returns the new reachability if it changed.
    pub fn record(&mut self, replied: bool) -> Option<bool> {
        let before = self.reachable;
        if replied {
            self.misses = 0;
            self.reachable = true;
        } else {
            self.misses = self.misses.saturating_add(1);
            if self.misses >= MISSES_TO_UNREACHABLE {
                self.reachable = false;
            }
        }
        (self.reachable != before).then_some(self.reachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reply_makes_it_reachable_and_three_misses_unreachable() {
        let mut gateway = GatewayState::new();
        assert!(!gateway.reachable());
        assert_eq!(gateway.record(false), None);
        assert_eq!(gateway.record(true), Some(true));
        assert_eq!(gateway.record(true), None);
        assert_eq!(gateway.record(false), None);
        assert_eq!(gateway.record(false), None);
        assert_eq!(gateway.record(true), None, "a reply resets the miss count");
        assert_eq!(gateway.record(false), None);
        assert_eq!(gateway.record(false), None);
        assert_eq!(gateway.record(false), Some(false));
        assert_eq!(gateway.record(false), None);
        assert_eq!(gateway.record(true), Some(true));
    }

    #[test]
    fn many_misses_do_not_overflow() {
        let mut gateway = GatewayState { reachable: false, misses: u32::MAX - 1 };
        gateway.record(false);
        gateway.record(false);
        assert!(!gateway.reachable());
    }
}
