//! The phi-accrual failure detector (Hayashibara et al., SRDS 2004).
//!
//! Each peer's heartbeat arrivals feed a sliding window of inter-arrival times. Suspicion is
//! `phi = -log10(P(the next heartbeat arrives later than now))`, with the probability taken from a
//! normal distribution fitted to the window. The standard deviation never drops below a floor
//! (`min_std_dev`), and an acceptable pause is added to the mean, so that a very regular history
//! does not turn one late datagram into a death. The normal tail uses the logistic
//! approximation of the cumulative distribution (error below 0.0002), which keeps phi finite
//! and monotonic far into the tail.

use std::time::{Duration, Instant};

/// The memory of the detector in samples: up to this many the mean and variance are exact
/// averages, beyond it older samples fade exponentially. A running form keeps the detector at a
/// few words per peer (a simulated 1000-node cluster holds a million of them) while adapting
/// to a changed arrival rate within a few hundred sightings.
const WINDOW: f64 = 200.0;

/// How many samples the prior weighs. The prior stands for a spread as large as its mean, so a
/// young history (right after joining, or after a death cleared it) is judged leniently until
/// real samples outweigh it; a long regular history is not affected.
const PRIOR_WEIGHT: f64 = 5.0;

/// Phi at exactly the (paused) mean: `-log10(0.5)`, rounded up.
const HALF_PHI: f64 = 0.302;

/// Heartbeat history of one peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct PhiDetector {
    /// How many samples (the prior's weight included) the moments stand for, capped at
    /// `WINDOW`; zero before the first arrival.
    weight: f64,
    /// Mean inter-arrival time in seconds.
    mean: f64,
    /// Mean of the squared inter-arrival times.
    mean_of_squares: f64,
    /// When the last heartbeat arrived.
    last_arrival: Option<Instant>,
}

impl PhiDetector {
    /// Records a heartbeat arrival. The first arrival of an empty history starts the moments
    /// from `prior` (the expected gap between sightings) as `PRIOR_WEIGHT` samples with a
    /// standard deviation equal to it, and counts the prior once more as the first sample, so
    /// the detector has a sensible mean from the start.
    pub(crate) fn record(&mut self, now: Instant, prior: Duration) {
        let interval = match self.last_arrival {
            Some(last) => now.saturating_duration_since(last).as_secs_f64(),
            None => {
                let prior = prior.as_secs_f64();
                self.weight = PRIOR_WEIGHT;
                self.mean = prior;
                self.mean_of_squares = 2.0 * prior * prior;
                prior
            }
        };
        self.last_arrival = Some(now);
        self.weight = (self.weight + 1.0).min(WINDOW);
        let share = 1.0 / self.weight;
        self.mean += share * (interval - self.mean);
        self.mean_of_squares += share * (interval * interval - self.mean_of_squares);
    }

    /// Forgets everything, as when a node is declared dead: its next life starts afresh.
    pub(crate) fn clear(&mut self) {
        *self = PhiDetector::default();
    }

    fn variance(&self) -> f64 {
        (self.mean_of_squares - self.mean * self.mean).max(0.0)
    }

    /// Whether phi at `now` exceeds `threshold`. Up to the mean plus the pause the normal phi
    /// stays at or below `-log10(0.5)`, about 0.3, so for any threshold above that the normal
    /// tail is only computed for the few peers that are actually late: this runs for every peer
    /// on every round.
    pub(crate) fn exceeds(&self, now: Instant, threshold: f64, tolerance: &Tolerance) -> bool {
        if let Some(last) = self.last_arrival
            && !tolerance.memoryless
            && threshold > HALF_PHI
        {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            if elapsed
                <= self.mean.max(tolerance.min_mean.as_secs_f64()) + tolerance.acceptable_pause.as_secs_f64()
            {
                return false;
            }
        }
        self.phi(now, tolerance).is_some_and(|phi| phi > threshold)
    }

    /// The suspicion level at `now`, or `None` without history.
    pub(crate) fn phi(&self, now: Instant, tolerance: &Tolerance) -> Option<f64> {
        let last = self.last_arrival?;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let pause = tolerance.acceptable_pause.as_secs_f64();
        let mean = self.mean.max(tolerance.min_mean.as_secs_f64()).max(1e-6);
        if tolerance.memoryless {
            // P(later) = exp(-t / mean), so phi = t / (mean * ln 10), after the pause.
            return Some((elapsed - pause).max(0.0) / (mean * std::f64::consts::LN_10));
        }
        let std_dev = self.variance().sqrt().max(tolerance.min_std_dev.as_secs_f64()).max(1e-6);
        Some(phi_of(elapsed, mean + pause, std_dev))
    }

    /// How long after the last arrival phi exceeds `threshold`: the silence this history
    /// tolerates before its peer is declared dead. `None` without history.
    pub(crate) fn tolerated_silence(&self, threshold: f64, tolerance: &Tolerance) -> Option<Duration> {
        self.last_arrival?;
        let pause = tolerance.acceptable_pause.as_secs_f64();
        let mean = self.mean.max(tolerance.min_mean.as_secs_f64()).max(1e-6);
        let seconds = if tolerance.memoryless {
            pause + threshold.max(0.0) * mean * std::f64::consts::LN_10
        } else {
            // Phi grows monotonically with the silence, so bisection finds the crossing; the
            // bracket reaches far beyond any threshold a configuration would use.
            let std_dev = self.variance().sqrt().max(tolerance.min_std_dev.as_secs_f64()).max(1e-6);
            let (mut low, mut high) = (-64.0_f64, 64.0_f64);
            for _ in 0..64 {
                let middle = (low + high) / 2.0;
                if phi_of(mean + pause + middle * std_dev, mean + pause, std_dev) > threshold {
                    high = middle;
                } else {
                    low = middle;
                }
            }
            mean + pause + high * std_dev
        };
        Some(Duration::from_secs_f64(seconds.max(0.0)))
    }
}

/// How lenient the detector is, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tolerance {
    /// The floor of the standard deviation (normal model).
    pub(crate) min_std_dev: Duration,
    /// Silence tolerated before suspicion grows.
    pub(crate) acceptable_pause: Duration,
    /// A floor for the mean gap, from the cluster's size: a history gathered while the
    /// cluster was smaller (a mass start) has shorter gaps than the grown cluster delivers.
    pub(crate) min_mean: Duration,
    /// Arrivals are the union of many random exchanges rather than about one per round
    /// (digests are paged), so the gaps are nearly memoryless, with a tail far heavier than a
    /// normal fit predicts. Phi then follows the exponential distribution (as in Cassandra),
    /// which puts threshold 8 at about 18 mean gaps.
    pub(crate) memoryless: bool,
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

    fn normal() -> Tolerance {
        Tolerance {
            min_std_dev: Duration::from_millis(40),
            acceptable_pause: Duration::from_millis(60),
            min_mean: Duration::ZERO,
            memoryless: false,
        }
    }

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
        let at = |ms| detector.phi(last + Duration::from_millis(ms), &normal()).unwrap_or(f64::NAN);
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
        assert_eq!(detector.phi(now, &normal()), None);
        detector.record(now, Duration::from_millis(100));
        assert!(detector.phi(now, &normal()).is_some());
        detector.clear();
        assert_eq!(detector.phi(now, &normal()), None);
    }

    #[test]
    fn the_tolerated_silence_is_where_phi_crosses_the_threshold() {
        let interval = Duration::from_millis(100);
        let (detector, last) = regular(50, interval);
        assert_eq!(PhiDetector::default().tolerated_silence(8.0, &normal()), None);
        for (tolerance, expected) in [(normal(), 0.1 + 0.06 + 5.2 * 0.04), (memoryless(), 0.06 + 18.42 * 0.1)]
        {
            let silence = detector.tolerated_silence(8.0, &tolerance).unwrap_or_default();
            assert!((silence.as_secs_f64() - expected).abs() < 0.01, "{silence:?} vs {expected}");
            let phi = |at: Duration| detector.phi(last + at, &tolerance).unwrap_or(f64::NAN);
            assert!(phi(silence.saturating_sub(Duration::from_millis(1))) <= 8.0);
            assert!(phi(silence + Duration::from_millis(1)) > 8.0);
        }
    }

    fn memoryless() -> Tolerance {
        Tolerance { memoryless: true, ..normal() }
    }

    #[test]
    fn the_memoryless_model_waits_about_eighteen_mean_gaps() {
        // Gaps of 100 and 500 ms alternate: mean 300 ms, standard deviation 200 ms.
        let mut detector = PhiDetector::default();
        let mut last = Instant::now();
        for index in 0..400 {
            last += Duration::from_millis(if index % 2 == 0 { 100 } else { 500 });
            detector.record(last, Duration::from_millis(300));
        }
        let tolerance = Tolerance { memoryless: true, ..normal() };
        let at = |ms| detector.phi(last + Duration::from_millis(ms), &tolerance).unwrap_or(f64::NAN);
        assert!(!detector.exceeds(last + Duration::from_millis(5000), 8.0, &tolerance), "{}", at(5000));
        assert!(detector.exceeds(last + Duration::from_millis(6000), 8.0, &tolerance), "{}", at(6000));
    }
}
