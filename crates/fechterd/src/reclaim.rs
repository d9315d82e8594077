//! When to announce the addresses this node keeps again, after the cluster was disturbed.
//!
//! A node on the other side of a partition, or one that cannot hear the cluster (a one-way
//! partition), decides alone and takes addresses that live nodes here still hold. Its
//! announcements reach the shared LAN, so neighbours (the gateway, the clients) point their ARP and
//! neighbour entries at it. Nothing here sees a conflict: its `held:*` keys do not arrive, or arrive
//! only after it has released its copies again. When it then releases them, or loses its cable,
//! the neighbours keep pointing at it and the address is unreachable until their entries expire,
//! which is minutes on many systems.
//!
//! So after every change in live membership the node announces what it keeps once at once (the
//! reconcile does that) and again at the offsets of [`FOLLOW_UPS`], which outlast the announcement
//! rounds of a node that acquired during the same disturbance. While some live peer is deaf to this
//! node, it announces every [`WHILE_DEAF`]: the deaf peer may acquire at any time. Both cost a few
//! frames per kept address, far less than a keepalive stream, and only while the cluster is
//! disturbed.

use std::time::{Duration, Instant};

/// When announcements follow a change in live membership, counted from the change. The last one
/// comes well after the last round (the third, two seconds after acquiring, with the default
/// announcement settings) of a node that took addresses when it stopped hearing the others.
pub const FOLLOW_UPS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4), Duration::from_secs(8)];

/// How often kept addresses are announced while some live peer does not hear this node.
pub const WHILE_DEAF: Duration = Duration::from_secs(2);

/// The announcement schedule; a pure function of the observations it is given.
#[derive(Debug, Clone, Default)]
pub struct Reclaim {
    /// The last change in live membership, and how many follow-ups have been sent since.
    disturbed: Option<(Instant, usize)>,
    /// When the last announcement because of a deaf peer went out, while one is deaf.
    deaf_announced: Option<Instant>,
}

impl Reclaim {
    /// Nothing disturbed yet.
    pub fn new() -> Reclaim {
        Reclaim::default()
    }

    /// Records what the step saw and says whether kept addresses are due for an announcement
    /// now, beyond the one the reconcile sends for a membership change itself.
    ///
    /// `membership_changed`: the live peers differ from the last step's (and the change counts:
    /// not the end of a lone view). `deaf_peer`: some live peer does not hear this node.
    pub fn due(&mut self, now: Instant, membership_changed: bool, deaf_peer: bool) -> bool {
        let mut due = false;
        if membership_changed {
            self.disturbed = Some((now, 0));
        } else if let Some((since, sent)) = self.disturbed {
            let passed = FOLLOW_UPS.iter().take_while(|offset| since + **offset <= now).count();
            if passed > sent {
                due = true;
                self.disturbed = (passed < FOLLOW_UPS.len()).then_some((since, passed));
            }
        }
        // The first step that sees a deaf peer announces at once: the peer may have taken
        // addresses before its deafness showed.
        due |= deaf_peer && self.deaf_announced.is_none_or(|last| now >= last + WHILE_DEAF);
        self.deaf_announced = match (deaf_peer, due) {
            (false, _) => None,
            (true, true) => Some(now),
            (true, false) => self.deaf_announced,
        };
        due
    }

    /// When the next announcement falls due, so that the daemon wakes for it.
    pub fn wake_at(&self) -> Option<Instant> {
        let follow_up =
            self.disturbed.and_then(|(since, sent)| FOLLOW_UPS.get(sent).map(|offset| since + *offset));
        let deaf = self.deaf_announced.map(|last| last + WHILE_DEAF);
        [follow_up, deaf].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_membership_change_is_followed_by_announcements_at_the_offsets_then_nothing() {
        let start = Instant::now();
        let mut reclaim = Reclaim::new();
        assert!(!reclaim.due(start, false, false));
        assert_eq!(reclaim.wake_at(), None);
        assert!(!reclaim.due(start, true, false), "the reconcile announces the change itself");
        let mut announced = Vec::new();
        for ms in (0..12_000).step_by(50) {
            if reclaim.due(at(start, ms), false, false) {
                announced.push(ms);
            }
        }
        assert_eq!(announced, vec![1_000, 2_000, 4_000, 8_000]);
        assert_eq!(reclaim.wake_at(), None);
    }

    #[test]
    fn a_new_change_restarts_the_schedule_and_a_late_step_announces_once() {
        let start = Instant::now();
        let mut reclaim = Reclaim::new();
        reclaim.due(start, true, false);
        assert!(reclaim.due(at(start, 1_000), false, false));
        reclaim.due(at(start, 1_500), true, false);
        assert_eq!(reclaim.wake_at(), Some(at(start, 2_500)));
        // A step that comes late, past two offsets, announces once and waits for the next offset.
        assert!(reclaim.due(at(start, 5_600), false, false));
        assert!(!reclaim.due(at(start, 5_700), false, false));
        assert_eq!(reclaim.wake_at(), Some(at(start, 9_500)));
    }

    #[test]
    fn a_deaf_peer_brings_announcements_at_once_and_then_periodically_until_it_hears() {
        let start = Instant::now();
        let mut reclaim = Reclaim::new();
        assert!(reclaim.due(start, false, true));
        assert_eq!(reclaim.wake_at(), Some(at(start, 2_000)));
        assert!(!reclaim.due(at(start, 1_900), false, true));
        assert!(reclaim.due(at(start, 2_000), false, true));
        assert!(reclaim.due(at(start, 4_100), false, true));
        assert!(!reclaim.due(at(start, 5_000), false, false));
        assert_eq!(reclaim.wake_at(), None);
    }
}
