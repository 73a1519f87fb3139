//! The emulator's realism knobs (docs/emulator.md): EC2's request-rate token buckets,
//! injected latency, injected server errors, and the eventual-consistency
//! window. Every clock is `tokio::time`, so tests under
//! `#[tokio::test(start_paused = true)]` are fast and deterministic; every
//! random choice comes from one seeded `StdRng` per world.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use crate::ec2::{Category, Operation};

use super::codes;

/// One token bucket: `capacity` requests in a burst, refilled continuously
/// at `refill_per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Maximum tokens (burst size).
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_second: f64,
}

/// EC2's request-rate throttling: one bucket per action category.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    /// Non-mutating (`Describe*`) actions.
    pub describe: Bucket,
    /// Mutating actions.
    pub mutating: Bucket,
}

impl Throttle {
    /// EC2's documented account defaults: describe bucket 100 refilling
    /// 20/s; mutating bucket 50 refilling 5/s.
    #[must_use]
    pub fn ec2() -> Self {
        Self {
            describe: Bucket { capacity: 100.0, refill_per_second: 20.0 },
            mutating: Bucket { capacity: 50.0, refill_per_second: 5.0 },
        }
    }

    /// The same buckets with capacity and refill multiplied by `factor`
    /// (`0.1` is a ten times stingier account).
    #[must_use]
    pub fn scaled(self, factor: f64) -> Self {
        let scale =
            |b: Bucket| Bucket { capacity: b.capacity * factor, refill_per_second: b.refill_per_second * factor };
        Self { describe: scale(self.describe), mutating: scale(self.mutating) }
    }

    fn bucket(&self, category: Category) -> Bucket {
        match category {
            Category::Describe => self.describe,
            Category::Mutating => self.mutating,
        }
    }
}

/// Injected server errors.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorInjection {
    /// Probability (0–1) that any request fails.
    pub rate: f64,
    /// Per-action overrides of `rate`.
    pub per_operation: BTreeMap<Operation, f64>,
    /// Codes to answer with, chosen at random; default `InternalError` and
    /// `Unavailable`.
    pub codes: Vec<String>,
    /// Probability (0–1) that an injected error on a write comes *after* the
    /// write took effect — the ambiguous failure a retrying client must
    /// survive (it will then see `InvalidPermission.Duplicate` and friends).
    pub after_effect: f64,
}

impl Default for ErrorInjection {
    fn default() -> Self {
        Self {
            rate: 0.0,
            per_operation: BTreeMap::new(),
            codes: vec![codes::INTERNAL_ERROR.to_owned(), codes::UNAVAILABLE.to_owned()],
            after_effect: 0.0,
        }
    }
}

/// Every fault of one world. The default injects nothing: no throttling, no
/// latency, no errors, and new resources are visible at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Token-bucket throttling; `None` never throttles.
    pub throttle: Option<Throttle>,
    /// Added to every request before it is answered.
    pub latency: Duration,
    /// Up to this much more latency, uniformly at random.
    pub latency_jitter: Duration,
    /// Injected server errors.
    pub errors: ErrorInjection,
    /// How long a new group or instance stays invisible to describes and to
    /// calls that name it by id (creation itself is strongly consistent).
    pub consistency_window: Duration,
    /// Seed of the world's random choices (latency jitter, errors).
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle: None,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            errors: ErrorInjection::default(),
            consistency_window: Duration::ZERO,
            seed: 0,
        }
    }
}

impl Faults {
    /// No faults at all (the default).
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Something like a real account: EC2's buckets, a few milliseconds of
    /// latency, and a one-second consistency window.
    #[must_use]
    pub fn realistic() -> Self {
        Self {
            throttle: Some(Throttle::ec2()),
            latency: Duration::from_millis(5),
            latency_jitter: Duration::from_millis(20),
            consistency_window: Duration::from_secs(1),
            ..Self::default()
        }
    }

    /// Sets the throttling buckets.
    #[must_use]
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Sets fixed latency and jitter.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration, jitter: Duration) -> Self {
        self.latency = latency;
        self.latency_jitter = jitter;
        self
    }

    /// Sets the error rate of every action.
    #[must_use]
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.errors.rate = rate;
        self
    }

    /// Sets the error rate of one action.
    #[must_use]
    pub fn with_operation_error_rate(mut self, operation: Operation, rate: f64) -> Self {
        self.errors.per_operation.insert(operation, rate);
        self
    }

    /// Sets the eventual-consistency window.
    #[must_use]
    pub fn with_consistency_window(mut self, window: Duration) -> Self {
        self.consistency_window = window;
        self
    }

    /// Sets the random seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

#[derive(Clone, Copy, Debug)]
struct BucketState {
    tokens: f64,
    updated: Instant,
}

/// An injected error decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Injected {
    pub code: String,
    /// The request takes effect before the error is answered.
    pub after_effect: bool,
}

/// The mutable side of [`Faults`]: bucket levels and the random generator.
#[derive(Debug)]
pub(crate) struct FaultState {
    config: Faults,
    describe: BucketState,
    mutating: BucketState,
    rng: StdRng,
}

impl FaultState {
    pub(crate) fn new(config: Faults, now: Instant) -> Self {
        let full = |b: Option<Bucket>| BucketState { tokens: b.map_or(0.0, |b| b.capacity), updated: now };
        Self {
            describe: full(config.throttle.map(|t| t.describe)),
            mutating: full(config.throttle.map(|t| t.mutating)),
            rng: StdRng::seed_from_u64(config.seed),
            config,
        }
    }

    pub(crate) fn config(&self) -> &Faults {
        &self.config
    }

    /// How long the next request takes before it is answered.
    pub(crate) fn latency(&mut self) -> Duration {
        let jitter = self.config.latency_jitter;
        if jitter.is_zero() {
            return self.config.latency;
        }
        self.config.latency + jitter.mul_f64(self.rng.random::<f64>())
    }

    /// Takes a token from the category's bucket; `false` means throttled.
    pub(crate) fn admit(&mut self, category: Category, now: Instant) -> bool {
        let Some(throttle) = self.config.throttle else {
            return true;
        };
        let bucket = throttle.bucket(category);
        let state = match category {
            Category::Describe => &mut self.describe,
            Category::Mutating => &mut self.mutating,
        };
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * bucket.refill_per_second).min(bucket.capacity);
        state.updated = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Decides whether this request gets an injected server error.
    pub(crate) fn inject(&mut self, operation: Operation) -> Option<Injected> {
        let errors = &self.config.errors;
        let rate = errors.per_operation.get(&operation).copied().unwrap_or(errors.rate).clamp(0.0, 1.0);
        if rate <= 0.0 || errors.codes.is_empty() || !self.rng.random_bool(rate) {
            return None;
        }
        let code = errors.codes[self.rng.random_range(0..errors.codes.len())].clone();
        let after = errors.after_effect.clamp(0.0, 1.0);
        let after_effect = operation.category() == Category::Mutating && after > 0.0 && self.rng.random_bool(after);
        Some(Injected { code, after_effect })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn buckets_start_full_empty_on_a_burst_and_refill_with_time() {
        let throttle = Throttle::ec2();
        let mut state = FaultState::new(Faults::none().with_throttle(throttle), Instant::now());
        let admitted = (0..60).filter(|_| state.admit(Category::Mutating, Instant::now())).count();
        assert_eq!(admitted, 50);
        // Describes draw from their own bucket.
        assert!(state.admit(Category::Describe, Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        let refilled = (0..10).filter(|_| state.admit(Category::Mutating, Instant::now())).count();
        assert_eq!(refilled, 5);
    }

    #[test]
    fn scaling_multiplies_capacity_and_refill() {
        let t = Throttle::ec2().scaled(0.1);
        assert!((t.mutating.capacity - 5.0).abs() < 1e-9);
        assert!((t.describe.refill_per_second - 2.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn error_injection_is_seeded_and_respects_per_operation_rates() {
        let faults =
            Faults::none().with_error_rate(0.5).with_operation_error_rate(Operation::DescribeVpcs, 0.0).with_seed(7);
        let run = |faults: Faults| {
            let mut state = FaultState::new(faults, Instant::now());
            (0..100).map(|_| state.inject(Operation::CreateTags).is_some()).collect::<Vec<_>>()
        };
        let first = run(faults.clone());
        assert_eq!(first, run(faults.clone()), "same seed, same faults");
        let failures = first.iter().filter(|f| **f).count();
        assert!((30..=70).contains(&failures), "about half fail, got {failures}");
        let mut state = FaultState::new(faults, Instant::now());
        assert!((0..100).all(|_| state.inject(Operation::DescribeVpcs).is_none()));
    }

    #[tokio::test]
    async fn latency_jitter_stays_within_bounds() {
        let faults = Faults::none().with_latency(Duration::from_millis(10), Duration::from_millis(5));
        let mut state = FaultState::new(faults, Instant::now());
        for _ in 0..50 {
            let l = state.latency();
            assert!(l >= Duration::from_millis(10) && l <= Duration::from_millis(15));
        }
    }
}
