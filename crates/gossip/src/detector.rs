//! The phi-accrual failure detector (Hayashibara et al., SRDS 2004).
//!
//! Each peer's heartbeat arrivals feed a sliding window of inter-arrival times. Suspicion is
//! `phi = -log10(P(the next heartbeat arrives later than now))`, with the probability taken from a
//! normal distribution fitted to the window. The standard deviation never drops below a floor
//! (`min_std_dev`), and an acceptable pause is added to the mean, so that a very regular history
//! does not turn one late datagram into a death. The normal tail uses the logistic
//! approximation of the cumulative distribution (error below 0.0002), which keeps phi finite
//! and monotonic far into the tail.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many inter-arrival samples are kept.
const WINDOW: usize = 1000;

/// Heartbeat history of one peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct PhiDetector {
    /// Inter-arrival times in seconds, oldest first.
    intervals: VecDeque<f64>,
    /// Sum of `intervals`.
    sum: f64,
    /// Sum of the squares of `intervals`.
    sum_of_squares: f64,
    /// When the last heartbeat arrived.
    last_arrival: Option<Instant>,
}

impl PhiDetector {
    /// Records a heartbeat arrival. The first arrival of an empty history seeds the window with
    /// `prior` (the gossip interval), so the detector has a sensible mean from the start.
    pub(crate) fn record(&mut self, now: Instant, prior: Duration) {
        let interval = match self.last_arrival {
            Some(last) => now.saturating_duration_since(last).as_secs_f64(),
            None => prior.as_secs_f64(),
        };
        self.last_arrival = Some(now);
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_of_squares += interval * interval;
        if self.intervals.len() > WINDOW
            && let Some(oldest) = self.intervals.pop_front()
        {
            self.sum -= oldest;
            self.sum_of_squares -= oldest * oldest;
        }
    }

    /// Forgets everything, as when a node is declared dead: its next life starts afresh.
    pub(crate) fn clear(&mut self) {
        *self = PhiDetector::default();
    }

    /// The suspicion level at `now`, or `None` without history.
    pub(crate) fn phi(&self, now: Instant, min_std_dev: Duration, acceptable_pause: Duration) -> Option<f64> {
        let last = self.last_arrival?;
        if self.intervals.is_empty() {
            return None;
        }
        let count = self.intervals.len() as f64;
        let mean = self.sum / count;
        let variance = (self.sum_of_squares / count - mean * mean).max(0.0);
        let std_dev = variance.sqrt().max(min_std_dev.as_secs_f64()).max(1e-6);
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        Some(phi_of(elapsed, mean + acceptable_pause.as_secs_f64(), std_dev))
    }
}

/// `-log10` of the normal upper tail at `elapsed`, via the logistic approximation.
fn phi_of(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let exponent = -y * (1.5976 + 0.070_566 * y * y);
    if elapsed > mean {
        // P_later = e / (1 + e) with e = exp(exponent); computed in log space so that a far
        // tail gives a large finite phi instead of infinity.
        let log_e = exponent;
        -(log_e - ln_1p_exp(log_e)) / std::f64::consts::LN_10
    } else {
        let e = exponent.exp();
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

/// `ln(1 + exp(x))` without overflow.
fn ln_1p_exp(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regular(count: u32, interval: Duration) -> (PhiDetector, Instant) {
        let mut detector = PhiDetector::default();
        let start = Instant::now();
        for index in 0..count {
            detector.record(start + interval * index, interval);
        }
        (detector, start + interval * (count - 1))
    }

    #[test]
    fn phi_grows_with_silence_and_crosses_eight_near_mean_plus_five_std() {
        let interval = Duration::from_millis(100);
        let (detector, last) = regular(50, interval);
        let floor = Duration::from_millis(40);
        let pause = Duration::from_millis(60);
        let at = |ms| detector.phi(last + Duration::from_millis(ms), floor, pause).unwrap_or(f64::NAN);
        assert!(at(100) < 0.5);
        assert!(at(200) < at(300));
        assert!(at(300) < 8.0, "{}", at(300));
        assert!(at(400) > 8.0, "{}", at(400));
        assert!(at(10_000).is_finite());
    }

    #[test]
    fn no_history_means_no_phi_and_clear_forgets() {
        let mut detector = PhiDetector::default();
        let now = Instant::now();
        assert_eq!(detector.phi(now, Duration::ZERO, Duration::ZERO), None);
        detector.record(now, Duration::from_millis(100));
        assert!(detector.phi(now, Duration::ZERO, Duration::ZERO).is_some());
        detector.clear();
        assert_eq!(detector.phi(now, Duration::ZERO, Duration::ZERO), None);
    }
}
