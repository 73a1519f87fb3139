//! The allowed values of every numeric and duration key, both ends
//! included. Each range is written once, beside its key, in
//! `config/sections.rs` (`duration(min, max)`, `integer(min, max)`,
//! `rate(min, max)`); this module collects them. Validation refuses a value
//! outside them with an error naming the key and the range, so nothing built
//! from a validated [`super::Config`] meets a value it cannot represent (the
//! limiter's buckets, the daemon's timers, the planner's clock arithmetic).
//! [`all`] lists them for the documentation's tests.

use std::fmt;
use std::time::Duration;

use super::sections::{
    RawAccount, RawAws, RawDaemon, RawDiscovery, RawEvents, RawLimits, RawMirror, RawMirroring, RawRateLimit, RawSafety,
};

/// `min..=max` of the key at `key`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds<T> {
    /// The key's path, e.g. `daemon.interval`.
    pub key: &'static str,
    /// The smallest value allowed.
    pub min: T,
    /// The largest value allowed.
    pub max: T,
}

impl<T: PartialOrd> Bounds<T> {
    /// Whether `value` is allowed (NaN never is).
    pub fn contains(&self, value: &T) -> bool {
        self.min <= *value && *value <= self.max
    }
}

impl fmt::Display for Bounds<u64> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

impl fmt::Display for Bounds<f64> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

impl fmt::Display for Bounds<Duration> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", humantime::format_duration(self.min), humantime::format_duration(self.max))
    }
}

/// Units the declarations write their ranges in.
pub(super) mod units {
    use std::time::Duration;

    /// A second.
    pub const SECOND: Duration = Duration::from_secs(1);
    /// A millisecond.
    pub const MILLISECOND: Duration = Duration::from_millis(1);
    /// A minute.
    pub const MINUTE: Duration = Duration::from_secs(60);
    /// A day: the longest interval worth running a reconciler at.
    pub const DAY: Duration = Duration::from_secs(86_400);
    /// A year as humantime counts it (365.25 days), so it prints as `1year`.
    pub const YEAR: Duration = Duration::from_secs(31_557_600);
    /// More than any account holds (security groups × rules, instances).
    pub const A_MILLION: u64 = 1_000_000;
}

/// A key's range as its declaration wrote it, or `None` for a key that is
/// not a number or a duration.
#[derive(Clone, Copy, Debug)]
pub(super) enum Bounded {
    /// Not a bounded key.
    None,
    /// A duration key.
    Duration(Bounds<Duration>),
    /// An integer key.
    Integer(Bounds<u64>),
    /// A rate key.
    Rate(Bounds<f64>),
}

/// The ranges of every section's keys, sections in the file's order.
const SECTIONS: [&[Bounded]; 10] = [
    RawAws::BOUNDS,
    RawDaemon::BOUNDS,
    RawSafety::BOUNDS,
    RawRateLimit::BOUNDS,
    RawLimits::BOUNDS,
    RawMirroring::BOUNDS,
    RawDiscovery::BOUNDS,
    RawEvents::BOUNDS,
    RawAccount::BOUNDS,
    RawMirror::BOUNDS,
];

/// `count` and `collect` for one kind of [`Bounded`], run at compile time.
macro_rules! collect {
    ($count:ident, $collect:ident, $variant:ident, $t:ty, $zero:expr) => {
        const fn $count() -> usize {
            let (mut s, mut n) = (0, 0);
            while s < SECTIONS.len() {
                let mut k = 0;
                while k < SECTIONS[s].len() {
                    if let Bounded::$variant(_) = SECTIONS[s][k] {
                        n += 1;
                    }
                    k += 1;
                }
                s += 1;
            }
            n
        }

        const fn $collect<const N: usize>() -> [Bounds<$t>; N] {
            let mut out = [Bounds { key: "", min: $zero, max: $zero }; N];
            let (mut s, mut n) = (0, 0);
            while s < SECTIONS.len() {
                let mut k = 0;
                while k < SECTIONS[s].len() {
                    if let Bounded::$variant(b) = SECTIONS[s][k] {
                        out[n] = b;
                        n += 1;
                    }
                    k += 1;
                }
                s += 1;
            }
            out
        }
    };
}

collect!(count_durations, collect_durations, Duration, Duration, Duration::ZERO);
collect!(count_rates, collect_rates, Rate, f64, 0.0);
collect!(count_integers, collect_integers, Integer, u64, 0);

/// Every duration key, in the file's order.
pub const DURATIONS: [Bounds<Duration>; count_durations()] = collect_durations();
/// Every rate key, in the file's order.
pub const RATES: [Bounds<f64>; count_rates()] = collect_rates();
/// Every integer key, in the file's order.
pub const INTEGERS: [Bounds<u64>; count_integers()] = collect_integers();

/// `safety.max_source_shrink` is a fraction in (0, 1]: its lower end is
/// excluded, so it is not a [`Bounds`].
pub const MAX_SOURCE_SHRINK: (&str, &str) = ("safety.max_source_shrink", "(0, 1]");
/// `daemon.owner` is a name; these bound its length in characters (EC2
/// allows 256 in a tag value; a deployment's name is short).
pub const OWNER_LENGTH: Bounds<u64> = Bounds { key: "daemon.owner", min: 1, max: 64 };

/// Every bounded key with its range as the errors and the documentation
/// write it (`1s..=1day`).
#[must_use]
pub fn all() -> Vec<(&'static str, String)> {
    let durations = DURATIONS.iter().map(|b| (b.key, b.to_string()));
    let rates = RATES.iter().map(|b| (b.key, b.to_string()));
    let integers = INTEGERS.iter().map(|b| (b.key, b.to_string()));
    let mut all: Vec<(&'static str, String)> = durations.chain(rates).chain(integers).collect();
    all.push((MAX_SOURCE_SHRINK.0, MAX_SOURCE_SHRINK.1.to_owned()));
    all.push((OWNER_LENGTH.key, OWNER_LENGTH.to_string()));
    all
}
