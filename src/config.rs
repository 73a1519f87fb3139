//! The mapping file: TOML → validated [`Config`] (docs/configuration.md).
//!
//! Sits before the loop: the daemon, `plan`, `apply` and `validate` all read
//! the file through [`Config::from_toml_str`] (or [`Config::load`]), which
//! reads raw values first and validates after, so one run reports every error,
//! each with its key path (`mirror[1].vpc: "vpc-xyz" is not a VPC id`).
//!
//! Three steps, each unable to hide the errors of the next:
//!
//! 1. the text is parsed into a spanned TOML tree (a syntax error stops here:
//!    it is the one error reported, with its line and column);
//! 2. the tree is walked against the `SCHEMA` of known keys: unknown keys and sections of the
//!    wrong shape are reported and pruned;
//! 3. what is left is deserialized into `RawConfig` — every leaf a raw, spanned
//!    TOML value, so deserialization cannot fail on a bad value — and each leaf
//!    and each cross-entry rule is checked, collecting every error.
//!
//! Errors carry the position of the offending key or value, so they are
//! reported in file order. Indices in paths are 0-based (`mirror[0]` is the
//! first `[[mirror]]`).
//!
//! Every number and duration has a range, written once in [`bounds`]; a value
//! outside it is an error naming the key and the range, never clamped. So
//! nothing built from a validated [`Config`] (the rate limiter, the daemon's
//! timers, the planner's clock arithmetic) meets a value it cannot handle,
//! and a reload cannot take the daemon down.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use self::bounds::Bounds;
use crate::model::{DEFAULT_DISCOVERY_TAG, DEFAULT_RULES_PER_GROUP, GroupId, VpcId};

/// Default of `daemon.state_dir`: systemd's `StateDirectory=classiclink-mirror`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/classiclink-mirror";

/// Default of `daemon.owner`: the identity an estate made before owner tags
/// existed is handed to (`docs/operations.md`, upgrading to owner tags).
pub const DEFAULT_OWNER: &str = "default";

/// The allowed values of every numeric and duration key, both ends
/// included: the one place they are written. Validation refuses a value
/// outside them with an error naming the key and the range, so nothing built
/// from a validated [`Config`] meets a value it cannot represent (the
/// limiter's buckets, the daemon's timers, the planner's clock arithmetic).
/// [`bounds::all`] lists them for the documentation's tests.
pub mod bounds {
    use std::fmt;
    use std::time::Duration;

    use crate::ec2::limited::{MAX_BURST, MAX_RATE_PER_SECOND, MIN_RATE_PER_SECOND};

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

    const fn of<T>(key: &'static str, min: T, max: T) -> Bounds<T> {
        Bounds { key, min, max }
    }

    const SECOND: Duration = Duration::from_secs(1);
    const MILLISECOND: Duration = Duration::from_millis(1);
    /// A day: the longest interval worth running a reconciler at.
    const DAY: Duration = Duration::from_secs(86_400);
    /// A year as humantime counts it (365.25 days), so it prints as `1year`.
    const YEAR: Duration = Duration::from_secs(31_557_600);
    /// More than any account holds (security groups × rules, instances).
    const A_MILLION: u64 = 1_000_000;

    /// `daemon.interval`: a second to a day.
    pub const INTERVAL: Bounds<Duration> = of("daemon.interval", SECOND, DAY);
    /// `safety.max_revokes_per_cycle`.
    pub const MAX_REVOKES_PER_CYCLE: Bounds<u64> = of("safety.max_revokes_per_cycle", 0, A_MILLION);
    /// `safety.max_deletes_per_cycle`.
    pub const MAX_DELETES_PER_CYCLE: Bounds<u64> = of("safety.max_deletes_per_cycle", 0, A_MILLION);
    /// `safety.max_unlinks_per_cycle`.
    pub const MAX_UNLINKS_PER_CYCLE: Bounds<u64> = of("safety.max_unlinks_per_cycle", 0, A_MILLION);
    /// `safety.orphan_grace`: up to a year.
    pub const ORPHAN_GRACE: Bounds<Duration> = of("safety.orphan_grace", Duration::ZERO, YEAR);
    /// `safety.fight_repairs`: repairs of one subject within `fight_window`
    /// that make a fight (1 would call every repair a fight).
    pub const FIGHT_REPAIRS: Bounds<u64> = of("safety.fight_repairs", 2, 1000);
    /// `safety.fight_window`.
    pub const FIGHT_WINDOW: Bounds<Duration> = of("safety.fight_window", SECOND, DAY);
    /// `safety.fight_backoff`: the first backoff of a fight's repairs.
    pub const FIGHT_BACKOFF: Bounds<Duration> = of("safety.fight_backoff", SECOND, DAY);
    /// `safety.fight_backoff_max`: the longest (at least `fight_backoff`).
    pub const FIGHT_BACKOFF_MAX: Bounds<Duration> = of("safety.fight_backoff_max", SECOND, DAY);
    /// `rate_limit.mutating_per_second`: what the limiter's buckets represent
    /// exactly (one request every 1,000 s to one every 10 µs).
    pub const MUTATING_PER_SECOND: Bounds<f64> =
        of("rate_limit.mutating_per_second", MIN_RATE_PER_SECOND, MAX_RATE_PER_SECOND);
    /// `rate_limit.mutating_burst`.
    pub const MUTATING_BURST: Bounds<u64> = of("rate_limit.mutating_burst", 1, MAX_BURST as u64);
    /// `rate_limit.describe_per_second`, as [`MUTATING_PER_SECOND`].
    pub const DESCRIBE_PER_SECOND: Bounds<f64> =
        of("rate_limit.describe_per_second", MIN_RATE_PER_SECOND, MAX_RATE_PER_SECOND);
    /// `rate_limit.describe_burst`.
    pub const DESCRIBE_BURST: Bounds<u64> = of("rate_limit.describe_burst", 1, MAX_BURST as u64);
    /// `rate_limit.max_in_flight`: far beyond what EC2's request limits let
    /// run at once.
    pub const MAX_IN_FLIGHT: Bounds<u64> = of("rate_limit.max_in_flight", 1, 1000);
    /// `rate_limit.max_attempts`.
    pub const MAX_ATTEMPTS: Bounds<u64> = of("rate_limit.max_attempts", 1, 10);
    /// `rate_limit.retry_base_delay`.
    pub const RETRY_BASE_DELAY: Bounds<Duration> =
        of("rate_limit.retry_base_delay", MILLISECOND, Duration::from_secs(60));
    /// `rate_limit.retry_throttled_base_delay`.
    pub const RETRY_THROTTLED_BASE_DELAY: Bounds<Duration> =
        of("rate_limit.retry_throttled_base_delay", MILLISECOND, Duration::from_secs(60));
    /// `rate_limit.retry_max_delay`.
    pub const RETRY_MAX_DELAY: Bounds<Duration> =
        of("rate_limit.retry_max_delay", MILLISECOND, Duration::from_secs(300));
    /// `rate_limit.retry_quota` (0: never retry).
    pub const RETRY_QUOTA: Bounds<u64> = of("rate_limit.retry_quota", 0, A_MILLION);
    /// `rate_limit.retry_cost`.
    pub const RETRY_COST: Bounds<u64> = of("rate_limit.retry_cost", 1, A_MILLION);
    /// `rate_limit.retry_timeout_cost`.
    pub const RETRY_TIMEOUT_COST: Bounds<u64> = of("rate_limit.retry_timeout_cost", 1, A_MILLION);
    /// `limits.rules_per_group`: EC2's hard ceiling is 1000.
    pub const RULES_PER_GROUP: Bounds<u64> = of("limits.rules_per_group", 1, 1000);
    /// `safety.max_source_shrink` is a fraction in (0, 1]: its lower end is
    /// excluded, so it is not a [`Bounds`].
    pub const MAX_SOURCE_SHRINK: (&str, &str) = ("safety.max_source_shrink", "(0, 1]");
    /// `daemon.owner` is a name; these bound its length in characters (EC2
    /// allows 256 in a tag value; a deployment's name is short).
    pub const OWNER_LENGTH: Bounds<u64> = of("daemon.owner", 1, 64);

    /// Every duration key.
    pub const DURATIONS: [Bounds<Duration>; 8] = [
        INTERVAL,
        ORPHAN_GRACE,
        FIGHT_WINDOW,
        FIGHT_BACKOFF,
        FIGHT_BACKOFF_MAX,
        RETRY_BASE_DELAY,
        RETRY_THROTTLED_BASE_DELAY,
        RETRY_MAX_DELAY,
    ];
    /// Every rate key.
    pub const RATES: [Bounds<f64>; 2] = [MUTATING_PER_SECOND, DESCRIBE_PER_SECOND];
    /// Every integer key.
    pub const INTEGERS: [Bounds<u64>; 12] = [
        MAX_REVOKES_PER_CYCLE,
        MAX_DELETES_PER_CYCLE,
        MAX_UNLINKS_PER_CYCLE,
        FIGHT_REPAIRS,
        MUTATING_BURST,
        DESCRIBE_BURST,
        MAX_IN_FLIGHT,
        MAX_ATTEMPTS,
        RETRY_QUOTA,
        RETRY_COST,
        RETRY_TIMEOUT_COST,
        RULES_PER_GROUP,
    ];

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
}

/// Whether writes happen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Observe, plan and write.
    #[default]
    Enforce,
    /// Observe, plan and report drift; never write.
    Audit,
}

/// `[aws]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsConfig {
    /// Region (required; `AWS_REGION` may supply it).
    pub region: String,
    /// An EC2-compatible endpoint, e.g. the emulator.
    pub endpoint_url: Option<String>,
    /// A named profile; otherwise the standard credential chain.
    pub profile: Option<String>,
}

/// `[daemon]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Time between cycle starts (±10% jitter).
    pub interval: Duration,
    /// Address of `/metrics`, `/healthz`, `/readyz`, `/status`.
    pub listen: SocketAddr,
    /// Global mode; mappings may override it.
    pub mode: Mode,
    /// Where the state file lives (`docs/operations.md`). Never created by
    /// the daemon; when it is missing or read-only the daemon runs without
    /// keeping its state.
    pub state_dir: PathBuf,
    /// This deployment's name, written on every mirror it creates or claims
    /// ([`crate::model::OWNER_TAG`]); a mirror naming another owner is never
    /// touched (`docs/operations.md`, two deployments).
    pub owner: String,
}

/// `[safety]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetyConfig {
    /// Rule revocations per cycle.
    pub max_revokes_per_cycle: usize,
    /// Mirror-group deletions per cycle.
    pub max_deletes_per_cycle: usize,
    /// ClassicLink detaches (including a relink's) per cycle.
    pub max_unlinks_per_cycle: usize,
    /// How long a mirror must stay orphaned before deletion.
    pub orphan_grace: Duration,
    /// `false`: report orphans, never delete.
    pub delete_orphans: bool,
    /// Fraction in (0, 1] by which managed sources or linked instances may
    /// drop before destructive actions are held (docs/semantics.md, "Safety").
    pub max_source_shrink: f64,
    /// Repairs of one subject of a pair (its mirror, a grant, an instance's
    /// link) within `fight_window` that make a fight.
    pub fight_repairs: usize,
    /// How far back repairs count toward a fight.
    pub fight_window: Duration,
    /// First backoff of a fight's repairs; doubles per repair.
    pub fight_backoff: Duration,
    /// Longest backoff of a fight's repairs.
    pub fight_backoff_max: Duration,
}

/// `[rate_limit]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Token refill of the shared write bucket.
    pub mutating_per_second: f64,
    /// Write bucket size.
    pub mutating_burst: u32,
    /// Token refill of the describe bucket.
    pub describe_per_second: f64,
    /// Describe bucket size.
    pub describe_burst: u32,
    /// Actions in flight at once.
    pub max_in_flight: usize,
    /// Attempts per EC2 request, the first included (1: never retry).
    pub max_attempts: u32,
    /// Backoff base after a transient error (5xx, timeout, connection).
    pub retry_base_delay: Duration,
    /// Backoff base after a throttling error.
    pub retry_throttled_base_delay: Duration,
    /// Cap on one backoff.
    pub retry_max_delay: Duration,
    /// Size of the client's retry quota, in tokens (0: never retry).
    pub retry_quota: u32,
    /// Quota tokens one retry costs.
    pub retry_cost: u32,
    /// Quota tokens one retry after a timeout costs.
    pub retry_timeout_cost: u32,
}

/// `[limits]`: EC2 quotas of the account, when raised from the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Inbound rules per VPC security group (EC2 default 60).
    pub rules_per_group: usize,
    /// Spill a mirror's grants beyond `rules_per_group` into overflow groups
    /// (`true`, the default) instead of reporting them (docs/semantics.md,
    /// "Overflow groups").
    pub overflow_groups: bool,
}

/// `[discovery]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Source groups carrying this tag are mirrored into the VPC its value
    /// names; `None` when discovery is disabled (`tag_key = ""`).
    pub tag_key: Option<String>,
}

/// `[events]`: the optional event queue (docs/operations.md, "Events").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsConfig {
    /// The SQS queue an EventBridge rule feeds with EC2's events; `None`:
    /// no events, periodic passes only.
    pub queue_url: Option<String>,
    /// An SQS-compatible endpoint; `None`: `[aws] endpoint_url` (so the
    /// emulator serves both), else AWS's own.
    pub endpoint_url: Option<String>,
}

/// How a `[[mirror]]` names its source group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceRef {
    /// By id (Classic or VPC group).
    Id(GroupId),
    /// By name (Classic groups only: names are unique among them).
    Name(String),
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Name(name) => write!(f, "{name}"),
        }
    }
}

/// One `[[mirror]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Source group, by id or name.
    pub source: SourceRef,
    /// Target VPC.
    pub vpc: VpcId,
    /// Mirror name; default the source group's name.
    pub name: Option<String>,
    /// ClassicLink member instances (Classic sources only).
    pub link_instances: bool,
    /// Per-mapping override of `daemon.mode`.
    pub mode: Option<Mode>,
    /// Adopt an existing untagged VPC group of the same name.
    pub adopt: bool,
    /// Enable ClassicLink on the VPC if it is off.
    pub enable_classiclink: bool,
}

impl MirrorConfig {
    /// A mapping with every optional key at its default.
    #[must_use]
    pub fn new(source: SourceRef, vpc: VpcId) -> Self {
        Self { source, vpc, name: None, link_instances: true, mode: None, adopt: false, enable_classiclink: false }
    }
}

/// The validated mapping file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `[aws]`.
    pub aws: AwsConfig,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[safety]`.
    pub safety: SafetyConfig,
    /// `[rate_limit]`.
    pub rate_limit: RateLimitConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[discovery]`.
    pub discovery: DiscoveryConfig,
    /// `[events]`.
    pub events: EventsConfig,
    /// `[[mirror]]`, in file order.
    pub mirrors: Vec<MirrorConfig>,
}

impl Config {
    /// Every default of docs/configuration.md with the given region and no mappings.
    #[must_use]
    pub fn with_region(region: impl Into<String>) -> Self {
        Self {
            aws: AwsConfig { region: region.into(), endpoint_url: None, profile: None },
            daemon: DaemonConfig {
                interval: Duration::from_secs(30),
                listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
                mode: Mode::Enforce,
                state_dir: PathBuf::from(DEFAULT_STATE_DIR),
                owner: DEFAULT_OWNER.to_owned(),
            },
            safety: SafetyConfig {
                max_revokes_per_cycle: 200,
                max_deletes_per_cycle: 10,
                max_unlinks_per_cycle: 50,
                orphan_grace: Duration::from_secs(600),
                delete_orphans: true,
                max_source_shrink: 0.5,
                fight_repairs: 3,
                fight_window: Duration::from_secs(600),
                fight_backoff: Duration::from_secs(60),
                fight_backoff_max: Duration::from_secs(3600),
            },
            rate_limit: RateLimitConfig {
                mutating_per_second: 2.0,
                mutating_burst: 10,
                describe_per_second: 5.0,
                describe_burst: 20,
                max_in_flight: 4,
                max_attempts: 3,
                retry_base_delay: Duration::from_millis(100),
                retry_throttled_base_delay: Duration::from_secs(1),
                retry_max_delay: Duration::from_secs(20),
                retry_quota: 500,
                retry_cost: 5,
                retry_timeout_cost: 10,
            },
            limits: LimitsConfig { rules_per_group: DEFAULT_RULES_PER_GROUP, overflow_groups: true },
            discovery: DiscoveryConfig { tag_key: Some(DEFAULT_DISCOVERY_TAG.to_owned()) },
            events: EventsConfig::default(),
            mirrors: Vec::new(),
        }
    }

    /// The effective mode of a mapping (its override, else the global mode).
    #[must_use]
    pub fn mode_of(&self, mapping: &MirrorConfig) -> Mode {
        mapping.mode.unwrap_or(self.daemon.mode)
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A position in the mapping file, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

impl Location {
    fn of_offset(text: &str, offset: usize) -> Self {
        Self::of_offset_in(text, &LineStarts::of(text), offset)
    }

    /// [`Location::of_offset`] with the line starts computed once: a binary
    /// search for the line, so locating every error of a large file stays
    /// O(errors × log lines) rather than a scan of the text per error.
    fn of_offset_in(text: &str, lines: &LineStarts, offset: usize) -> Self {
        let offset = offset.min(text.len());
        // The number of lines starting at or before the offset; the first starts at 0.
        let line = lines.0.partition_point(|&start| start <= offset);
        let start = lines.0.get(line.saturating_sub(1)).copied().unwrap_or(0);
        let column = text.get(start..offset).map_or(0, |s| s.chars().count());
        Self { line, column: column + 1 }
    }
}

/// The byte offset where each line of a text starts.
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn of(text: &str) -> Self {
        Self(std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What kind of mistake a [`ConfigError`] is; see [`ConfigError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ErrorKind {
    Syntax,
    UnknownKey,
    WrongType,
    MissingKey,
    InvalidValue,
    Duplicate,
}

/// One problem in the mapping file, at a key path.
///
/// Displays as `path: message`, e.g. `mirror[1].vpc: "vpc-xyz" is not a VPC
/// id`. Indices in paths are 0-based. A TOML syntax error has an empty path
/// and displays as its message alone, which names the line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path of the offending key or value (`daemon.interval`,
    /// `mirror[0].vpc`); empty for a syntax error.
    pub path: String,
    /// What is wrong, e.g. `unknown key` or `"30 parsecs" is not a duration`.
    pub message: String,
    kind: ErrorKind,
    location: Option<Location>,
}

impl ConfigError {
    /// Stable label for metrics: `syntax`, `unknown_key`, `wrong_type`,
    /// `missing_key`, `invalid_value` or `duplicate`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self.kind {
            ErrorKind::Syntax => "syntax",
            ErrorKind::UnknownKey => "unknown_key",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::MissingKey => "missing_key",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::Duplicate => "duplicate",
        }
    }

    /// Where in the file the error is, when it is somewhere: a missing key of
    /// an absent section, or a bad `AWS_REGION`, has no location.
    #[must_use]
    pub fn location(&self) -> Option<Location> {
        self.location
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl std::error::Error for ConfigError {}

/// Renders errors one per line (each ending in `\n`), in the order they
/// appear in the file; errors without a location (see
/// [`ConfigError::location`]) come first. This is what `validate` prints.
#[must_use]
pub fn render_errors(errors: &[ConfigError]) -> String {
    let mut sorted: Vec<&ConfigError> = errors.iter().collect();
    sorted.sort_by_key(|e| e.location);
    let mut out = String::new();
    for error in sorted {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{error}");
    }
    out
}

/// Why [`Config::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid mapping file.
    #[error("invalid configuration file {} ({} error{}):\n{}", path.display(), errors.len(),
        if errors.len() == 1 { "" } else { "s" }, render_errors(errors).trim_end())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error, in file order.
        errors: Vec<ConfigError>,
    },
}

impl ConfigLoadError {
    /// Stable label for metrics: `read` or `invalid`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Invalid { .. } => "invalid",
        }
    }
}

// ---------------------------------------------------------------------------
// Schema and raw form
// ---------------------------------------------------------------------------

/// The shape of a top-level key and the keys allowed inside it.
enum Shape {
    /// `[name]`.
    Table(&'static [&'static str]),
    /// `[[name]]`.
    ArrayOfTables(&'static [&'static str]),
}

/// Every key of the file. Must agree with the fields of `RawConfig`; a test
/// checks it does.
const SCHEMA: &[(&str, Shape)] = &[
    ("aws", Shape::Table(&["region", "endpoint_url", "profile"])),
    ("daemon", Shape::Table(&["interval", "listen", "mode", "state_dir", "owner"])),
    (
        "safety",
        Shape::Table(&[
            "max_revokes_per_cycle",
            "max_deletes_per_cycle",
            "max_unlinks_per_cycle",
            "orphan_grace",
            "delete_orphans",
            "max_source_shrink",
            "fight_repairs",
            "fight_window",
            "fight_backoff",
            "fight_backoff_max",
        ]),
    ),
    (
        "rate_limit",
        Shape::Table(&[
            "mutating_per_second",
            "mutating_burst",
            "describe_per_second",
            "describe_burst",
            "max_in_flight",
            "max_attempts",
            "retry_base_delay",
            "retry_throttled_base_delay",
            "retry_max_delay",
            "retry_quota",
            "retry_cost",
            "retry_timeout_cost",
        ]),
    ),
    ("limits", Shape::Table(&["rules_per_group", "overflow_groups"])),
    ("discovery", Shape::Table(&["tag_key"])),
    ("events", Shape::Table(&["queue_url", "endpoint_url"])),
    (
        "mirror",
        Shape::ArrayOfTables(&["source_group", "vpc", "name", "link_instances", "mode", "adopt", "enable_classiclink"]),
    ),
];

/// A leaf as written: any TOML value, with its position, so that checking it
/// is our job and not serde's (which would stop at the first bad one).
type RawValue = Spanned<toml::Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    aws: Option<Spanned<RawAws>>,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    mirror: Vec<Spanned<RawMirror>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<RawValue>,
    endpoint_url: Option<RawValue>,
    profile: Option<RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interval: Option<RawValue>,
    listen: Option<RawValue>,
    mode: Option<RawValue>,
    state_dir: Option<RawValue>,
    owner: Option<RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    max_revokes_per_cycle: Option<RawValue>,
    max_deletes_per_cycle: Option<RawValue>,
    max_unlinks_per_cycle: Option<RawValue>,
    orphan_grace: Option<RawValue>,
    delete_orphans: Option<RawValue>,
    max_source_shrink: Option<RawValue>,
    fight_repairs: Option<RawValue>,
    fight_window: Option<RawValue>,
    fight_backoff: Option<RawValue>,
    fight_backoff_max: Option<RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    mutating_per_second: Option<RawValue>,
    mutating_burst: Option<RawValue>,
    describe_per_second: Option<RawValue>,
    describe_burst: Option<RawValue>,
    max_in_flight: Option<RawValue>,
    max_attempts: Option<RawValue>,
    retry_base_delay: Option<RawValue>,
    retry_throttled_base_delay: Option<RawValue>,
    retry_max_delay: Option<RawValue>,
    retry_quota: Option<RawValue>,
    retry_cost: Option<RawValue>,
    retry_timeout_cost: Option<RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    rules_per_group: Option<RawValue>,
    overflow_groups: Option<RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    tag_key: Option<RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    queue_url: Option<RawValue>,
    endpoint_url: Option<RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    source_group: Option<RawValue>,
    vpc: Option<RawValue>,
    name: Option<RawValue>,
    link_instances: Option<RawValue>,
    mode: Option<RawValue>,
    adopt: Option<RawValue>,
    enable_classiclink: Option<RawValue>,
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

impl Config {
    /// Parses and validates a mapping file's text (docs/configuration.md).
    ///
    /// `env_region` is the `AWS_REGION` environment variable, used when the
    /// file has no `aws.region` (the file wins); an empty value counts as unset.
    ///
    /// # Errors
    /// Every problem found, in file order: a TOML syntax error alone (it stops
    /// parsing), otherwise all unknown keys, wrongly typed or invalid values,
    /// missing required keys and conflicting `[[mirror]]` entries at once.
    pub fn from_toml_str(text: &str, env_region: Option<&str>) -> Result<Config, Vec<ConfigError>> {
        let mut cx = Checker { text, errors: Vec::new(), lines: None };
        let mut root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => {
                let location = e.span().map(|span| Location::of_offset(text, span.start));
                let at = location.map_or_else(String::new, |l| format!(" at {l}"));
                let message = format!("TOML syntax error{at}: {}", e.message().trim().replace('\n', "; "));
                return Err(vec![ConfigError { path: String::new(), message, kind: ErrorKind::Syntax, location }]);
            }
        };
        let skipped = cx.prune(root.get_mut());
        // After pruning, every key left is a field and every leaf is a raw
        // value, so this cannot fail; if it does, report rather than panic.
        let config = match RawConfig::deserialize(toml::de::Deserializer::from(root)) {
            Ok(raw) => cx.check(&raw, &skipped, env_region),
            Err(e) => {
                cx.push(ErrorKind::WrongType, "", e.span(), e.message().to_owned());
                None
            }
        };
        match config {
            Some(config) if cx.errors.is_empty() => Ok(config),
            _ => {
                let mut errors = cx.errors;
                errors.sort_by_key(|e| e.location);
                Err(errors)
            }
        }
    }

    /// Reads and validates the mapping file at `path`; see
    /// [`Config::from_toml_str`].
    ///
    /// # Errors
    /// [`ConfigLoadError::Read`] when the file cannot be read (it names the
    /// path), [`ConfigLoadError::Invalid`] with every validation error.
    pub fn load(path: &Path, env_region: Option<&str>) -> Result<Config, ConfigLoadError> {
        let text = read_bytes(path).and_then(|bytes| text_of(path, bytes))?;
        Self::from_toml_str(&text, env_region)
            .map_err(|errors| ConfigLoadError::Invalid { path: path.to_owned(), errors })
    }
}

/// The largest mapping file read, in bytes (16 MiB: some 200,000
/// `[[mirror]]` entries). A path pointing at something endless (a device, a
/// runaway file) is an error rather than all the memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The bytes of the mapping file at `path`, read in one go.
///
/// # Errors
/// [`ConfigLoadError::Read`] naming the path when it cannot be read (missing,
/// a directory, no permission) or is larger than [`MAX_FILE_BYTES`].
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ConfigLoadError> {
    use std::io::Read as _;
    let error = |source| ConfigLoadError::Read { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)).map_err(error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let message = format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20);
        return Err(error(std::io::Error::new(std::io::ErrorKind::FileTooLarge, message)));
    }
    Ok(bytes)
}

/// `bytes` of the file at `path` as text.
///
/// # Errors
/// [`ConfigLoadError::Read`] naming the path and the position of the first
/// byte that is not UTF-8.
pub fn text_of(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigLoadError> {
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let at = std::str::from_utf8(e.as_bytes().get(..good).unwrap_or_default())
            .map_or(Location { line: 1, column: 1 }, |text| Location::of_offset(text, good));
        let message = format!("the file is not UTF-8 text: invalid byte at {at}");
        ConfigLoadError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
        }
    })
}

// ---------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------

/// Maximum length of a security group name (EC2).
const MAX_GROUP_NAME_LEN: usize = 255;
/// Maximum length of a tag key (EC2).
const MAX_TAG_KEY_LEN: usize = 128;
/// Maximum length of `daemon.owner` ([`bounds::OWNER_LENGTH`]).
const MAX_OWNER_LEN: usize = bounds::OWNER_LENGTH.max as usize;
/// Punctuation EC2 allows in VPC security group names, besides letters,
/// digits and spaces.
const VPC_GROUP_NAME_PUNCTUATION: &str = "._-:/()#,@[]+=&;{}!$*";

/// A key as it appears in a path: bare when TOML allows it bare, else quoted.
fn key_segment(key: &str) -> Cow<'_, str> {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key_segment(key).into_owned() } else { format!("{prefix}.{}", key_segment(key)) }
}

fn a_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// `xx-xxxx-N`: lowercase words joined by dashes, at least two of them,
/// then a number (`us-east-1`, `us-gov-west-1`, `ap-southeast-2`).
fn is_plausible_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((number, words)) = parts.split_last() else { return false };
    words.len() >= 2
        && words[0].len() == 2
        && words.iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The first control character of `text` (NUL, newline, DEL, ...), as
/// `U+0000`: EC2 refuses them in group names and tags, and none belongs in a
/// profile name or a URL.
fn control_character(text: &str) -> Option<String> {
    text.chars().find(|c| c.is_control()).map(|c| format!("U+{:04X}", u32::from(c)))
}

/// Whether `owner` can be `daemon.owner`: 1 to [`MAX_OWNER_LEN`]
/// characters of a tag value EC2 accepts everywhere (ASCII letters, digits,
/// spaces and `+ - = . _ : / @`), not starting or ending with a space, so
/// that it reads the same in a tag, an IAM condition and a log line.
fn check_owner(owner: &str) -> Result<(), String> {
    if owner.is_empty() {
        return Err("is empty; name the deployment (the default is \"default\")".to_owned());
    }
    if let Some(c) = control_character(owner) {
        return Err(format!("contains the control character {c}"));
    }
    if owner.chars().count() > MAX_OWNER_LEN {
        return Err(format!("is longer than {MAX_OWNER_LEN} characters"));
    }
    if let Some(c) = owner.chars().find(|c| !(c.is_ascii_alphanumeric() || " +-=._:/@".contains(*c))) {
        return Err(format!(
            "contains {c:?}; use ASCII letters, digits, spaces and + - = . _ : / @ (EC2's tag-value characters)"
        ));
    }
    if owner.starts_with(' ') || owner.ends_with(' ') {
        return Err("starts or ends with a space".to_owned());
    }
    Ok(())
}

/// A small check that an endpoint is an `http://` or `https://` URL with a
/// host and, if given, a valid port. Not a full URL parser.
fn check_endpoint_url(url: &str) -> Result<(), &'static str> {
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url["http://".len()..]
    } else if lower.starts_with("https://") {
        &url["https://".len()..]
    } else {
        return Err("is not an http:// or https:// URL");
    };
    if url.chars().any(char::is_whitespace) {
        return Err("is not a URL (it contains whitespace)");
    }
    if control_character(url).is_some() {
        return Err("is not a URL (it contains a control character)");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else { return Err("has an unclosed IPv6 address") };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err("has garbage after its IPv6 address"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
        return Err("has an invalid host");
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err())
    {
        return Err("has an invalid port");
    }
    Ok(())
}

/// EC2's rules for a VPC security group name we may create.
fn check_mirror_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.chars().count() > MAX_GROUP_NAME_LEN {
        return Err(format!("is longer than {MAX_GROUP_NAME_LEN} characters"));
    }
    if name.starts_with("sg-") {
        return Err(format!("{name:?} starts with \"sg-\", which EC2 does not allow in group names"));
    }
    if let Some(bad) =
        name.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == ' ' || VPC_GROUP_NAME_PUNCTUATION.contains(c)))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; VPC group names allow letters, digits, spaces and {VPC_GROUP_NAME_PUNCTUATION}"
        ));
    }
    Ok(())
}

/// Collects errors while walking and checking; knows the text so it can turn
/// spans into locations and show values as written.
struct Checker<'t> {
    text: &'t str,
    errors: Vec<ConfigError>,
    /// Computed at the first error.
    lines: Option<LineStarts>,
}

impl Checker<'_> {
    fn push(&mut self, kind: ErrorKind, path: impl Into<String>, span: Option<Range<usize>>, message: String) {
        let text = self.text;
        let location =
            span.map(|s| Location::of_offset_in(text, self.lines.get_or_insert_with(|| LineStarts::of(text)), s.start));
        self.errors.push(ConfigError { path: path.into(), message, kind, location });
    }

    /// Step 2: reports and removes unknown keys and sections of the wrong
    /// shape. Returns the indices of `mirror` entries that are not tables;
    /// they are replaced by empty tables so later indices keep their number,
    /// and skipped by the checks.
    fn prune(&mut self, root: &mut DeTable<'_>) -> BTreeSet<usize> {
        let mut skipped = BTreeSet::new();
        let mut drop = Vec::new();
        for (key, value) in root.iter_mut() {
            let name = key.get_ref().as_ref();
            let Some((_, shape)) = SCHEMA.iter().find(|(known, _)| *known == name) else {
                self.push(ErrorKind::UnknownKey, join("", name), Some(key.span()), "unknown key".to_owned());
                drop.push(name.to_owned());
                continue;
            };
            let span = value.span();
            match (shape, value.get_mut()) {
                (Shape::Table(keys), DeValue::Table(table)) => self.prune_table(table, name, keys),
                (Shape::ArrayOfTables(keys), DeValue::Array(items)) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        let path = format!("{}[{i}]", key_segment(name));
                        let item_span = item.span();
                        if let DeValue::Table(table) = item.get_mut() {
                            self.prune_table(table, &path, keys);
                        } else {
                            let found = a_type(item.get_ref());
                            self.push(
                                ErrorKind::WrongType,
                                path,
                                Some(item_span),
                                format!("expected a table, found {found}"),
                            );
                            *item.get_mut() = DeValue::Table(DeTable::new());
                            skipped.insert(i);
                        }
                    }
                }
                (Shape::Table(_), other) => {
                    let message = format!("expected a table ([{name}]), found {}", a_type(other));
                    self.push(ErrorKind::WrongType, join("", name), Some(span), message);
                    drop.push(name.to_owned());
                }
                (Shape::ArrayOfTables(_), other) => {
                    let message = format!("expected an array of tables ([[{name}]]), found {}", a_type(other));
                    self.push(ErrorKind::WrongType, join("", name), Some(span), message);
                    drop.push(name.to_owned());
                }
            }
        }
        for name in drop {
            root.remove(&Spanned::new(0..0, Cow::Owned(name)));
        }
        skipped
    }

    fn prune_table(&mut self, table: &mut DeTable<'_>, path: &str, known: &[&str]) {
        let mut drop = Vec::new();
        for (key, _) in table.iter() {
            let name = key.get_ref().as_ref();
            if !known.contains(&name) {
                self.push(ErrorKind::UnknownKey, join(path, name), Some(key.span()), "unknown key".to_owned());
                drop.push(name.to_owned());
            }
        }
        for name in drop {
            table.remove(&Spanned::new(0..0, Cow::Owned(name)));
        }
    }

    /// A value as the message shows it: strings quoted, scalars as written.
    fn shown(&self, raw: &RawValue) -> String {
        match raw.get_ref() {
            toml::Value::String(s) => format!("{s:?}"),
            toml::Value::Array(_) => "an array".to_owned(),
            toml::Value::Table(_) => "a table".to_owned(),
            other => self.text.get(raw.span()).map_or_else(|| other.to_string(), |s| s.trim().to_owned()),
        }
    }

    fn wrong_type(&mut self, path: &str, raw: &RawValue, what: &str) {
        let message = format!("{} is not {what}", self.shown(raw));
        self.push(ErrorKind::WrongType, path, Some(raw.span()), message);
    }

    fn invalid(&mut self, path: &str, raw: &RawValue, message: String) {
        self.push(ErrorKind::InvalidValue, path, Some(raw.span()), message);
    }

    fn string<'r>(&mut self, path: &str, raw: &'r RawValue) -> Option<&'r str> {
        if let toml::Value::String(s) = raw.get_ref() {
            Some(s)
        } else {
            self.wrong_type(path, raw, "a string");
            None
        }
    }

    fn boolean(&mut self, path: &str, raw: Option<&RawValue>, default: bool) -> Option<bool> {
        let Some(raw) = raw else { return Some(default) };
        if let toml::Value::Boolean(b) = raw.get_ref() {
            Some(*b)
        } else {
            self.wrong_type(path, raw, "a boolean (true or false)");
            None
        }
    }

    /// A duration within `bounds`.
    fn duration(&mut self, bounds: &Bounds<Duration>, raw: Option<&RawValue>, default: Duration) -> Option<Duration> {
        let path = bounds.key;
        let Some(raw) = raw else { return Some(default) };
        let toml::Value::String(text) = raw.get_ref() else {
            self.wrong_type(path, raw, "a duration (write it as a string, e.g. \"30s\")");
            return None;
        };
        let max = humantime::format_duration(bounds.max);
        let duration = match humantime::parse_duration(text) {
            Ok(duration) => duration,
            // More seconds than a u64 holds: a duration, and far too long.
            Err(humantime::DurationError::NumberOverflow) => {
                self.invalid(path, raw, format!("{text:?} is longer than the maximum {max}"));
                return None;
            }
            Err(_) => {
                self.invalid(path, raw, format!("{text:?} is not a duration"));
                return None;
            }
        };
        if duration < bounds.min {
            let min = humantime::format_duration(bounds.min);
            self.invalid(path, raw, format!("{text:?} is shorter than the minimum {min}"));
            return None;
        }
        if duration > bounds.max {
            self.invalid(path, raw, format!("{text:?} is longer than the maximum {max}"));
            return None;
        }
        Some(duration)
    }

    /// An integer within `bounds`.
    fn integer(&mut self, bounds: &Bounds<u64>, raw: Option<&RawValue>, default: u64) -> Option<u64> {
        let path = bounds.key;
        let Some(raw) = raw else { return Some(default) };
        let toml::Value::Integer(value) = raw.get_ref() else {
            self.wrong_type(path, raw, "an integer");
            return None;
        };
        match u64::try_from(*value) {
            Ok(v) if bounds.contains(&v) => Some(v),
            _ => {
                let shown = self.shown(raw);
                self.invalid(path, raw, format!("{shown} is outside {bounds}"));
                None
            }
        }
    }

    /// A number (integer or float) as `f64`.
    fn number(&mut self, path: &str, raw: &RawValue) -> Option<f64> {
        match raw.get_ref() {
            toml::Value::Float(f) => Some(*f),
            #[expect(clippy::cast_precision_loss, reason = "rates and fractions are small numbers")]
            toml::Value::Integer(i) => Some(*i as f64),
            _ => {
                self.wrong_type(path, raw, "a number");
                None
            }
        }
    }

    /// A rate within `bounds` (NaN and the infinities are outside any).
    fn rate(&mut self, bounds: &Bounds<f64>, raw: Option<&RawValue>, default: f64) -> Option<f64> {
        let path = bounds.key;
        let Some(raw) = raw else { return Some(default) };
        let rate = self.number(path, raw)?;
        if bounds.contains(&rate) {
            Some(rate)
        } else {
            let shown = self.shown(raw);
            self.invalid(path, raw, format!("{shown} is outside {bounds} requests a second"));
            None
        }
    }

    fn usize_of(value: u64) -> usize {
        usize::try_from(value).unwrap_or(usize::MAX)
    }

    fn u32_of(value: u64) -> u32 {
        u32::try_from(value).unwrap_or(u32::MAX)
    }

    fn mode(&mut self, path: &str, raw: &RawValue) -> Option<Mode> {
        match raw.get_ref() {
            toml::Value::String(s) if s == "enforce" => Some(Mode::Enforce),
            toml::Value::String(s) if s == "audit" => Some(Mode::Audit),
            toml::Value::String(s) => {
                self.invalid(path, raw, format!("{s:?} is not a mode (\"enforce\" or \"audit\")"));
                None
            }
            _ => {
                self.wrong_type(path, raw, "a mode (\"enforce\" or \"audit\")");
                None
            }
        }
    }

    /// Step 3: checks every leaf and the cross-entry rules. Returns the
    /// config when every value could be read; the caller still refuses it
    /// if any error was recorded.
    fn check(&mut self, raw: &RawConfig, skipped: &BTreeSet<usize>, env_region: Option<&str>) -> Option<Config> {
        let defaults = Config::with_region(String::new());
        let aws = self.check_aws(raw.aws.as_ref(), env_region);
        let daemon = self.check_daemon(&raw.daemon, &defaults.daemon);
        let safety = self.check_safety(&raw.safety, &defaults.safety);
        let rate_limit = self.check_rate_limit(&raw.rate_limit, &defaults.rate_limit);
        let limits = self.check_limits(&raw.limits, &defaults.limits);
        let discovery = self.check_discovery(&raw.discovery);
        let events = self.check_events(&raw.events);
        let mirrors = self.check_mirrors(&raw.mirror, skipped);
        Some(Config {
            aws: aws?,
            daemon: daemon?,
            safety: safety?,
            rate_limit: rate_limit?,
            limits: limits?,
            discovery: discovery?,
            events: events?,
            mirrors: mirrors?,
        })
    }

    fn check_aws(&mut self, raw: Option<&Spanned<RawAws>>, env_region: Option<&str>) -> Option<AwsConfig> {
        let table_span = raw.map(Spanned::span);
        let empty = RawAws::default();
        let raw = raw.map_or(&empty, Spanned::get_ref);
        let region = match (&raw.region, env_region.map(str::trim).filter(|r| !r.is_empty())) {
            (Some(value), _) => self.string("aws.region", value).and_then(|region| {
                if is_plausible_region(region) {
                    Some(region.to_owned())
                } else {
                    self.invalid("aws.region", value, format!("{region:?} is not an AWS region (like \"us-east-1\")"));
                    None
                }
            }),
            (None, Some(region)) if is_plausible_region(region) => Some(region.to_owned()),
            (None, Some(region)) => {
                let message = format!("{region:?} (from AWS_REGION) is not an AWS region (like \"us-east-1\")");
                self.push(ErrorKind::InvalidValue, "aws.region", None, message);
                None
            }
            (None, None) => {
                let message = "required key is missing (or set AWS_REGION)".to_owned();
                self.push(ErrorKind::MissingKey, "aws.region", table_span, message);
                None
            }
        };
        let mut ok = true;
        let endpoint_url = raw.endpoint_url.as_ref().and_then(|value| {
            let url = self.string("aws.endpoint_url", value).or_else(|| {
                ok = false;
                None
            })?;
            match check_endpoint_url(url) {
                Ok(()) => Some(url.to_owned()),
                Err(why) => {
                    self.invalid("aws.endpoint_url", value, format!("{url:?} {why}"));
                    ok = false;
                    None
                }
            }
        });
        let profile = raw.profile.as_ref().and_then(|value| {
            let profile = self.string("aws.profile", value).or_else(|| {
                ok = false;
                None
            })?;
            if profile.trim().is_empty() {
                self.invalid(
                    "aws.profile",
                    value,
                    "must not be empty (remove the key to use the default chain)".into(),
                );
                ok = false;
                None
            } else if let Some(c) = control_character(profile) {
                self.invalid("aws.profile", value, format!("{profile:?} contains the control character {c}"));
                ok = false;
                None
            } else {
                Some(profile.to_owned())
            }
        });
        ok.then_some(AwsConfig { region: region?, endpoint_url, profile })
    }

    fn check_daemon(&mut self, raw: &RawDaemon, defaults: &DaemonConfig) -> Option<DaemonConfig> {
        let interval = self.duration(&bounds::INTERVAL, raw.interval.as_ref(), defaults.interval);
        let listen = match &raw.listen {
            None => Some(defaults.listen),
            Some(value) => self.string("daemon.listen", value).and_then(|text| match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    let message = format!("{text:?} is not a socket address (IP:port, like \"127.0.0.1:9464\")");
                    self.invalid("daemon.listen", value, message);
                    None
                }
            }),
        };
        let mode = match &raw.mode {
            None => Some(defaults.mode),
            Some(value) => self.mode("daemon.mode", value),
        };
        let state_dir = match &raw.state_dir {
            None => Some(defaults.state_dir.clone()),
            Some(value) => self.string("daemon.state_dir", value).and_then(|text| {
                if text.is_empty() || text.contains('\0') {
                    self.invalid("daemon.state_dir", value, format!("{text:?} is not a directory path"));
                    None
                } else {
                    Some(PathBuf::from(text))
                }
            }),
        };
        let owner = match &raw.owner {
            None => Some(defaults.owner.clone()),
            Some(value) => self.string("daemon.owner", value).and_then(|text| match check_owner(text) {
                Ok(()) => Some(text.to_owned()),
                Err(why) => {
                    self.invalid("daemon.owner", value, format!("{text:?} {why}"));
                    None
                }
            }),
        };
        Some(DaemonConfig { interval: interval?, listen: listen?, mode: mode?, state_dir: state_dir?, owner: owner? })
    }

    fn check_safety(&mut self, raw: &RawSafety, defaults: &SafetyConfig) -> Option<SafetyConfig> {
        let cap = |cx: &mut Self, bounds: &Bounds<u64>, value: &Option<RawValue>, default: usize| {
            cx.integer(bounds, value.as_ref(), default as u64).map(Self::usize_of)
        };
        let max_revokes =
            cap(self, &bounds::MAX_REVOKES_PER_CYCLE, &raw.max_revokes_per_cycle, defaults.max_revokes_per_cycle);
        let max_deletes =
            cap(self, &bounds::MAX_DELETES_PER_CYCLE, &raw.max_deletes_per_cycle, defaults.max_deletes_per_cycle);
        let max_unlinks =
            cap(self, &bounds::MAX_UNLINKS_PER_CYCLE, &raw.max_unlinks_per_cycle, defaults.max_unlinks_per_cycle);
        let orphan_grace = self.duration(&bounds::ORPHAN_GRACE, raw.orphan_grace.as_ref(), defaults.orphan_grace);
        let delete_orphans =
            self.boolean("safety.delete_orphans", raw.delete_orphans.as_ref(), defaults.delete_orphans);
        let max_source_shrink = match &raw.max_source_shrink {
            None => Some(defaults.max_source_shrink),
            Some(value) => self.number("safety.max_source_shrink", value).and_then(|fraction| {
                if fraction > 0.0 && fraction <= 1.0 {
                    Some(fraction)
                } else {
                    let shown = self.shown(value);
                    let range = bounds::MAX_SOURCE_SHRINK.1;
                    self.invalid("safety.max_source_shrink", value, format!("{shown} is outside {range}"));
                    None
                }
            }),
        };
        let fight_repairs = cap(self, &bounds::FIGHT_REPAIRS, &raw.fight_repairs, defaults.fight_repairs);
        let fight_window = self.duration(&bounds::FIGHT_WINDOW, raw.fight_window.as_ref(), defaults.fight_window);
        let fight_backoff = self.duration(&bounds::FIGHT_BACKOFF, raw.fight_backoff.as_ref(), defaults.fight_backoff);
        let fight_backoff_max =
            self.duration(&bounds::FIGHT_BACKOFF_MAX, raw.fight_backoff_max.as_ref(), defaults.fight_backoff_max);
        let fight_backoff_max = match (fight_backoff, fight_backoff_max, raw.fight_backoff_max.as_ref()) {
            (Some(first), Some(max), Some(value)) if max < first => {
                let shown = self.shown(value);
                self.invalid(
                    "safety.fight_backoff_max",
                    value,
                    format!("{shown} is shorter than fight_backoff ({})", humantime::format_duration(first)),
                );
                None
            }
            (Some(first), Some(max), None) => Some(max.max(first)),
            (_, max, _) => max,
        };
        Some(SafetyConfig {
            max_revokes_per_cycle: max_revokes?,
            max_deletes_per_cycle: max_deletes?,
            max_unlinks_per_cycle: max_unlinks?,
            orphan_grace: orphan_grace?,
            delete_orphans: delete_orphans?,
            max_source_shrink: max_source_shrink?,
            fight_repairs: fight_repairs?,
            fight_window: fight_window?,
            fight_backoff: fight_backoff?,
            fight_backoff_max: fight_backoff_max?,
        })
    }

    fn check_rate_limit(&mut self, raw: &RawRateLimit, defaults: &RateLimitConfig) -> Option<RateLimitConfig> {
        let mutating_per_second =
            self.rate(&bounds::MUTATING_PER_SECOND, raw.mutating_per_second.as_ref(), defaults.mutating_per_second);
        let describe_per_second =
            self.rate(&bounds::DESCRIBE_PER_SECOND, raw.describe_per_second.as_ref(), defaults.describe_per_second);
        let int = |cx: &mut Self, bounds: &Bounds<u64>, value: &Option<RawValue>, default: u64| {
            cx.integer(bounds, value.as_ref(), default)
        };
        let u32_of = |value: Option<u64>| value.map(Self::u32_of);
        let mutating_burst =
            u32_of(int(self, &bounds::MUTATING_BURST, &raw.mutating_burst, defaults.mutating_burst.into()));
        let describe_burst =
            u32_of(int(self, &bounds::DESCRIBE_BURST, &raw.describe_burst, defaults.describe_burst.into()));
        let max_in_flight =
            int(self, &bounds::MAX_IN_FLIGHT, &raw.max_in_flight, defaults.max_in_flight as u64).map(Self::usize_of);
        let max_attempts = u32_of(int(self, &bounds::MAX_ATTEMPTS, &raw.max_attempts, defaults.max_attempts.into()));
        let retry_base_delay =
            self.duration(&bounds::RETRY_BASE_DELAY, raw.retry_base_delay.as_ref(), defaults.retry_base_delay);
        let retry_throttled_base_delay = self.duration(
            &bounds::RETRY_THROTTLED_BASE_DELAY,
            raw.retry_throttled_base_delay.as_ref(),
            defaults.retry_throttled_base_delay,
        );
        let retry_max_delay =
            self.duration(&bounds::RETRY_MAX_DELAY, raw.retry_max_delay.as_ref(), defaults.retry_max_delay);
        let retry_quota = u32_of(int(self, &bounds::RETRY_QUOTA, &raw.retry_quota, defaults.retry_quota.into()));
        let retry_cost = u32_of(int(self, &bounds::RETRY_COST, &raw.retry_cost, defaults.retry_cost.into()));
        let retry_timeout_cost =
            u32_of(int(self, &bounds::RETRY_TIMEOUT_COST, &raw.retry_timeout_cost, defaults.retry_timeout_cost.into()));
        // A base above the cap would be silently cut to it: say so instead.
        if let Some(max) = retry_max_delay {
            for (key, value, base) in [
                ("retry_base_delay", &raw.retry_base_delay, retry_base_delay),
                ("retry_throttled_base_delay", &raw.retry_throttled_base_delay, retry_throttled_base_delay),
            ] {
                if let (Some(value), Some(base)) = (value, base)
                    && base > max
                {
                    let shown = self.shown(value);
                    let max = humantime::format_duration(max);
                    let message = format!("{shown} is longer than rate_limit.retry_max_delay ({max})");
                    self.invalid(&format!("rate_limit.{key}"), value, message);
                }
            }
        }
        Some(RateLimitConfig {
            mutating_per_second: mutating_per_second?,
            mutating_burst: mutating_burst?,
            describe_per_second: describe_per_second?,
            describe_burst: describe_burst?,
            max_in_flight: max_in_flight?,
            max_attempts: max_attempts?,
            retry_base_delay: retry_base_delay?,
            retry_throttled_base_delay: retry_throttled_base_delay?,
            retry_max_delay: retry_max_delay?,
            retry_quota: retry_quota?,
            retry_cost: retry_cost?,
            retry_timeout_cost: retry_timeout_cost?,
        })
    }

    fn check_limits(&mut self, raw: &RawLimits, defaults: &LimitsConfig) -> Option<LimitsConfig> {
        let default = defaults.rules_per_group as u64;
        let rules_per_group = self.integer(&bounds::RULES_PER_GROUP, raw.rules_per_group.as_ref(), default)?;
        let overflow_groups =
            self.boolean("limits.overflow_groups", raw.overflow_groups.as_ref(), defaults.overflow_groups);
        Some(LimitsConfig { rules_per_group: Self::usize_of(rules_per_group), overflow_groups: overflow_groups? })
    }

    fn check_events(&mut self, raw: &RawEvents) -> Option<EventsConfig> {
        let mut ok = true;
        let mut url = |this: &mut Self, path: &str, value: &Option<RawValue>| -> Option<String> {
            let value = value.as_ref()?;
            let Some(url) = this.string(path, value) else {
                ok = false;
                return None;
            };
            match check_endpoint_url(url) {
                Ok(()) => Some(url.to_owned()),
                Err(why) => {
                    this.invalid(path, value, format!("{url:?} {why}"));
                    ok = false;
                    None
                }
            }
        };
        let queue_url = url(self, "events.queue_url", &raw.queue_url);
        let endpoint_url = url(self, "events.endpoint_url", &raw.endpoint_url);
        ok.then_some(EventsConfig { queue_url, endpoint_url })
    }

    fn check_discovery(&mut self, raw: &RawDiscovery) -> Option<DiscoveryConfig> {
        let Some(value) = &raw.tag_key else {
            return Some(DiscoveryConfig { tag_key: Some(DEFAULT_DISCOVERY_TAG.to_owned()) });
        };
        let key = self.string("discovery.tag_key", value)?;
        if key.is_empty() {
            return Some(DiscoveryConfig { tag_key: None });
        }
        if key.chars().count() > MAX_TAG_KEY_LEN {
            self.invalid("discovery.tag_key", value, format!("is longer than {MAX_TAG_KEY_LEN} characters"));
            return None;
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            self.invalid("discovery.tag_key", value, format!("{key:?} uses the reserved \"aws:\" prefix"));
            return None;
        }
        if let Some(c) = control_character(key) {
            let message = format!("{key:?} contains the control character {c}, which EC2 does not allow in tag keys");
            self.invalid("discovery.tag_key", value, message);
            return None;
        }
        Some(DiscoveryConfig { tag_key: Some(key.to_owned()) })
    }

    fn source(&mut self, path: &str, raw: &RawValue) -> Option<SourceRef> {
        let text = self.string(path, raw)?;
        if text.starts_with("sg-") {
            return match GroupId::try_new(text) {
                Ok(id) => Some(SourceRef::Id(id)),
                Err(e) => {
                    self.invalid(path, raw, e.to_string());
                    None
                }
            };
        }
        if text.is_empty() {
            self.invalid(path, raw, "must not be empty (a group id like \"sg-0a1b2c3d\" or a group name)".into());
            return None;
        }
        if text.chars().count() > MAX_GROUP_NAME_LEN {
            self.invalid(path, raw, format!("is longer than {MAX_GROUP_NAME_LEN} characters"));
            return None;
        }
        if let Some(c) = control_character(text) {
            let message =
                format!("{text:?} contains the control character {c}, which EC2 does not allow in group names");
            self.invalid(path, raw, message);
            return None;
        }
        Some(SourceRef::Name(text.to_owned()))
    }

    fn check_mirrors(&mut self, raw: &[Spanned<RawMirror>], skipped: &BTreeSet<usize>) -> Option<Vec<MirrorConfig>> {
        let mut mirrors = Vec::new();
        let mut complete = true;
        // First index using each source, and each (VPC, case-folded name):
        // EC2 group names are case-insensitive within a VPC.
        let mut sources: BTreeMap<SourceRef, usize> = BTreeMap::new();
        let mut names: BTreeMap<(VpcId, String), usize> = BTreeMap::new();
        for (i, entry) in raw.iter().enumerate() {
            if skipped.contains(&i) {
                complete = false;
                continue;
            }
            let at = |key: &str| format!("mirror[{i}].{key}");
            let m = entry.get_ref();
            let missing = |cx: &mut Self, key: &str| {
                cx.push(ErrorKind::MissingKey, at(key), Some(entry.span()), "required key is missing".to_owned());
            };
            let source = match &m.source_group {
                Some(value) => self.source(&at("source_group"), value),
                None => {
                    missing(self, "source_group");
                    None
                }
            };
            let vpc = match &m.vpc {
                Some(value) => self.string(&at("vpc"), value).and_then(|text| {
                    VpcId::try_new(text).map_err(|e| self.invalid(&at("vpc"), value, e.to_string())).ok()
                }),
                None => {
                    missing(self, "vpc");
                    None
                }
            };
            let name = match &m.name {
                None => Some(None),
                Some(value) => self.string(&at("name"), value).and_then(|name| match check_mirror_name(name) {
                    Ok(()) => Some(Some(name.to_owned())),
                    Err(why) => {
                        self.invalid(&at("name"), value, why);
                        None
                    }
                }),
            };
            let link_instances = self.boolean(&at("link_instances"), m.link_instances.as_ref(), true);
            let mode = match &m.mode {
                None => Some(None),
                Some(value) => self.mode(&at("mode"), value).map(Some),
            };
            let adopt = self.boolean(&at("adopt"), m.adopt.as_ref(), false);
            let enable_classiclink = self.boolean(&at("enable_classiclink"), m.enable_classiclink.as_ref(), false);

            // Cross-entry rules, on whatever could be read.
            let mut duplicate = false;
            if let (Some(source), Some(value)) = (&source, &m.source_group) {
                if let Some(first) = sources.get(source) {
                    let message = format!("{:?} is already mapped by mirror[{first}]", source.to_string());
                    self.push(ErrorKind::Duplicate, at("source_group"), Some(value.span()), message);
                    duplicate = true;
                } else {
                    sources.insert(source.clone(), i);
                }
            }
            // The mirror's name is known now when given, or when the source
            // is given by name (the mirror is named after it).
            let explicit = match (&name, &source) {
                (Some(Some(name)), _) => m.name.as_ref().map(|v| (name.clone(), "name", v.span(), "")),
                (Some(None), Some(SourceRef::Name(source))) => {
                    m.source_group.as_ref().map(|v| (source.clone(), "source_group", v.span(), " (the source's name)"))
                }
                _ => None,
            };
            if let (false, Some(vpc), Some((name, key, span, origin))) = (duplicate, &vpc, explicit) {
                match names.get(&(vpc.clone(), name.to_lowercase())) {
                    Some(first) => {
                        let message =
                            format!("mirror name {name:?}{origin} is already used in {vpc} by mirror[{first}]");
                        self.push(ErrorKind::Duplicate, at(key), Some(span), message);
                    }
                    None => {
                        names.insert((vpc.clone(), name.to_lowercase()), i);
                    }
                }
            }

            match (source, vpc, name, link_instances, mode, adopt, enable_classiclink) {
                (Some(source), Some(vpc), Some(name), Some(link_instances), Some(mode), Some(adopt), Some(enable)) => {
                    mirrors.push(MirrorConfig {
                        source,
                        vpc,
                        name,
                        link_instances,
                        mode,
                        adopt,
                        enable_classiclink: enable,
                    });
                }
                _ => complete = false,
            }
        }
        complete.then_some(mirrors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: &str = "[aws]\nregion = \"us-east-1\"\n";

    /// Parses `REGION` followed by `rest`.
    fn parse(rest: &str) -> Result<Config, Vec<ConfigError>> {
        Config::from_toml_str(&format!("{REGION}{rest}"), None)
    }

    fn ok(rest: &str) -> Config {
        parse(rest).unwrap_or_else(|errors| panic!("unexpected errors:\n{}", render_errors(&errors)))
    }

    /// The errors of `REGION` followed by `rest`, as displayed.
    fn errors(rest: &str) -> Vec<String> {
        match parse(rest) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(rest: &str) -> String {
        let errors = errors(rest);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().unwrap_or_default()
    }

    const VPC: &str = "vpc-9f2e1d0c";

    fn mirror(source: &str, extra: &str) -> String {
        format!("[[mirror]]\nsource_group = {source:?}\nvpc = \"{VPC}\"\n{extra}\n")
    }

    // --- defaults, region ------------------------------------------------

    #[test]
    fn a_file_with_only_a_region_gives_every_default() {
        assert_eq!(ok(""), Config::with_region("us-east-1"));
    }

    #[test]
    fn an_empty_file_takes_the_region_from_the_environment() {
        assert_eq!(Config::from_toml_str("", Some("eu-west-1")), Ok(Config::with_region("eu-west-1")));
    }

    #[test]
    fn the_region_in_the_file_wins_over_the_environment() {
        let config = Config::from_toml_str(REGION, Some("eu-west-1")).unwrap();
        assert_eq!(config.aws.region, "us-east-1");
    }

    #[test]
    fn a_missing_region_without_environment_is_reported() {
        let errors = Config::from_toml_str("", None).unwrap_err();
        assert_eq!(render_errors(&errors), "aws.region: required key is missing (or set AWS_REGION)\n");
        assert_eq!(errors[0].kind(), "missing_key");
        assert_eq!(errors[0].location(), None);
        let errors = Config::from_toml_str("[aws]\nprofile = \"p\"\n", Some("")).unwrap_err();
        assert_eq!(errors[0].location(), Some(Location { line: 1, column: 1 }), "points at the [aws] header");
    }

    #[test]
    fn an_implausible_region_is_rejected() {
        for bad in ["US-EAST-1", "useast1", "us-east", "us-east-1a", "u-east-1", "us--1", ""] {
            let text = format!("[aws]\nregion = {bad:?}\n");
            let errors = Config::from_toml_str(&text, None).unwrap_err();
            assert_eq!(
                render_errors(&errors),
                format!("aws.region: {bad:?} is not an AWS region (like \"us-east-1\")\n"),
                "{bad}"
            );
        }
        for good in ["us-east-1", "us-gov-west-1", "ap-southeast-2", "eu-central-1", "us-isob-east-1"] {
            assert!(Config::from_toml_str(&format!("[aws]\nregion = {good:?}\n"), None).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_region_from_the_environment_is_checked_too() {
        let errors = Config::from_toml_str("", Some("moon")).unwrap_err();
        assert_eq!(
            render_errors(&errors),
            "aws.region: \"moon\" (from AWS_REGION) is not an AWS region (like \"us-east-1\")\n"
        );
    }

    #[test]
    fn a_region_that_is_not_a_string_is_a_type_error() {
        let errors = Config::from_toml_str("[aws]\nregion = 1\n", None).unwrap_err();
        assert_eq!(render_errors(&errors), "aws.region: 1 is not a string\n");
        assert_eq!(errors[0].kind(), "wrong_type");
    }

    // --- aws -------------------------------------------------------------

    #[test]
    fn endpoint_url_must_be_an_http_or_https_url() {
        for good in ["http://127.0.0.1:4566", "https://ec2.us-east-1.amazonaws.com", "http://[::1]:4566/", "HTTP://x"] {
            let config = ok(&format!("endpoint_url = {good:?}\n"));
            assert_eq!(config.aws.endpoint_url.as_deref(), Some(good));
        }
        for (bad, why) in [
            ("ftp://x", "is not an http:// or https:// URL"),
            ("127.0.0.1:4566", "is not an http:// or https:// URL"),
            ("http://", "has no host"),
            ("http://:80", "has no host"),
            ("http://host:99999", "has an invalid port"),
            ("http://host:", "has an invalid port"),
            ("http://a b", "is not a URL (it contains whitespace)"),
            ("http://[::1", "has an unclosed IPv6 address"),
            ("http://ho%st", "has an invalid host"),
        ] {
            assert_eq!(one_error(&format!("endpoint_url = {bad:?}\n")), format!("aws.endpoint_url: {bad:?} {why}"));
        }
    }

    #[test]
    fn profile_is_read_and_must_not_be_empty() {
        assert_eq!(ok("profile = \"migration\"\n").aws.profile.as_deref(), Some("migration"));
        assert_eq!(
            one_error("profile = \"\"\n"),
            "aws.profile: must not be empty (remove the key to use the default chain)"
        );
    }

    // --- structure ---------------------------------------------------------

    #[test]
    fn an_unknown_key_is_reported_with_its_path() {
        let errors = errors("[safety]\nmax_revoke_per_cycle = 5\n");
        assert_eq!(errors, ["safety.max_revoke_per_cycle: unknown key"]);
    }

    #[test]
    fn an_unknown_section_is_reported_once_not_key_by_key() {
        assert_eq!(errors("[deamon]\ninterval = \"5s\"\nlisten = \"x\"\n"), ["deamon: unknown key"]);
    }

    #[test]
    fn an_unknown_key_in_a_mirror_names_its_index() {
        let text = format!("{}{}", mirror("sg-01", ""), mirror("sg-02", "vcp = \"vpc-1\""));
        assert_eq!(errors(&text), ["mirror[1].vcp: unknown key"]);
    }

    #[test]
    fn an_unknown_key_with_odd_characters_is_quoted_in_the_path() {
        assert_eq!(errors("[aws.\"my key\"]\n"), ["aws.\"my key\": unknown key"]);
    }

    #[test]
    fn a_section_that_is_not_a_table_is_a_type_error() {
        let errors = Config::from_toml_str("aws = \"us-east-1\"\n", None).unwrap_err();
        let rendered = render_errors(&errors);
        assert_eq!(
            rendered,
            "aws.region: required key is missing (or set AWS_REGION)\naws: expected a table ([aws]), found a string\n"
        );
    }

    #[test]
    fn mirror_as_a_single_table_is_a_type_error() {
        assert_eq!(
            errors("[mirror]\nsource_group = \"sg-01\"\n"),
            ["mirror: expected an array of tables ([[mirror]]), found a table"]
        );
    }

    #[test]
    fn a_mirror_entry_that_is_not_a_table_keeps_later_indices_stable() {
        let text = "mirror = [\"sg-01\", { source_group = \"sg-02\", vpc = \"vpc-xyz\" }]\n";
        let errors = Config::from_toml_str(text, Some("us-east-1")).unwrap_err();
        assert_eq!(
            render_errors(&errors),
            "mirror[0]: expected a table, found a string\nmirror[1].vpc: \"vpc-xyz\" is not a VPC id\n"
        );
    }

    #[test]
    fn inline_mirror_tables_are_accepted() {
        let text = "mirror = [{ source_group = \"sg-01\", vpc = \"vpc-02\" }]\n";
        let config = Config::from_toml_str(text, Some("us-east-1")).unwrap();
        assert_eq!(config.mirrors.len(), 1);
    }

    #[test]
    fn a_syntax_error_is_one_error_with_line_and_column() {
        let errors = Config::from_toml_str("[aws]\nregion = \"us-east-1\n[daemon]\nmode = audit\n", None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].kind(), "syntax");
        assert_eq!(errors[0].path, "");
        assert_eq!(errors[0].location(), Some(Location { line: 2, column: 20 }));
        assert_eq!(
            errors[0].to_string(),
            "TOML syntax error at line 2, column 20: invalid basic string, expected `\"`"
        );
    }

    #[test]
    fn a_duplicate_key_is_a_syntax_error() {
        let errors =
            Config::from_toml_str("[aws]\nregion = \"us-east-1\"\nregion = \"us-east-2\"\n", None).unwrap_err();
        assert_eq!(render_errors(&errors), "TOML syntax error at line 3, column 1: duplicate key\n");
    }

    #[test]
    fn every_error_is_reported_in_one_run_in_file_order() {
        let text = "[daemon]\ninterval = \"30 parsecs\"\nbogus = 1\n[safety]\nmax_source_shrink = 1.5\n\
                    delete_orphans = \"yes\"\n[rate_limit]\nmutating_burst = 0\n";
        assert_eq!(
            errors(text),
            [
                "daemon.interval: \"30 parsecs\" is not a duration",
                "daemon.bogus: unknown key",
                "safety.max_source_shrink: 1.5 is outside (0, 1]",
                "safety.delete_orphans: \"yes\" is not a boolean (true or false)",
                "rate_limit.mutating_burst: 0 is outside 1..=1000000",
            ]
        );
    }

    // --- daemon ------------------------------------------------------------

    #[test]
    fn a_malformed_duration_is_reported_as_written() {
        assert_eq!(
            one_error("[daemon]\ninterval = \"30 parsecs\"\n"),
            "daemon.interval: \"30 parsecs\" is not a duration"
        );
        assert_eq!(
            one_error("[safety]\norphan_grace = \"ten minutes\"\n"),
            "safety.orphan_grace: \"ten minutes\" is not a duration"
        );
    }

    #[test]
    fn a_duration_written_as_a_number_is_a_type_error() {
        assert_eq!(
            one_error("[daemon]\ninterval = 30\n"),
            "daemon.interval: 30 is not a duration (write it as a string, e.g. \"30s\")"
        );
    }

    #[test]
    fn durations_are_read_with_humantime() {
        let config = ok("[daemon]\ninterval = \"1m 30s\"\n[safety]\norphan_grace = \"2h\"\n");
        assert_eq!(config.daemon.interval, Duration::from_secs(90));
        assert_eq!(config.safety.orphan_grace, Duration::from_secs(7200));
    }

    #[test]
    fn an_interval_shorter_than_one_second_is_rejected() {
        assert_eq!(
            one_error("[daemon]\ninterval = \"500ms\"\n"),
            "daemon.interval: \"500ms\" is shorter than the minimum 1s"
        );
        assert_eq!(ok("[daemon]\ninterval = \"1s\"\n").daemon.interval, Duration::from_secs(1));
    }

    #[test]
    fn a_fights_longest_backoff_may_not_be_shorter_than_its_first() {
        assert_eq!(
            one_error("[safety]\nfight_backoff = \"10m\"\nfight_backoff_max = \"5m\"\n"),
            "safety.fight_backoff_max: \"5m\" is shorter than fight_backoff (10m)"
        );
        // Left at its default (1h), the longest is raised to the first.
        let config = ok("[safety]\nfight_backoff = \"2h\"\n");
        assert_eq!(config.safety.fight_backoff_max, Duration::from_secs(7200));
        assert_eq!(one_error("[safety]\nfight_repairs = 1\n"), "safety.fight_repairs: 1 is outside 2..=1000");
    }

    #[test]
    fn an_orphan_grace_of_zero_is_allowed() {
        assert_eq!(ok("[safety]\norphan_grace = \"0s\"\n").safety.orphan_grace, Duration::ZERO);
    }

    #[test]
    fn listen_must_be_a_socket_address() {
        assert_eq!(ok("[daemon]\nlisten = \"[::]:9000\"\n").daemon.listen, "[::]:9000".parse().unwrap());
        assert_eq!(
            one_error("[daemon]\nlisten = \"localhost:9464\"\n"),
            "daemon.listen: \"localhost:9464\" is not a socket address (IP:port, like \"127.0.0.1:9464\")"
        );
    }

    #[test]
    fn mode_must_be_enforce_or_audit() {
        assert_eq!(ok("[daemon]\nmode = \"audit\"\n").daemon.mode, Mode::Audit);
        assert_eq!(
            one_error("[daemon]\nmode = \"dry-run\"\n"),
            "daemon.mode: \"dry-run\" is not a mode (\"enforce\" or \"audit\")"
        );
        assert_eq!(
            one_error(&mirror("sg-01", "mode = true")),
            "mirror[0].mode: true is not a mode (\"enforce\" or \"audit\")"
        );
    }

    // --- safety ------------------------------------------------------------

    #[test]
    fn max_source_shrink_must_be_in_zero_exclusive_to_one_inclusive() {
        for bad in ["0", "0.0", "1.5", "-0.1", "nan", "inf"] {
            assert_eq!(
                one_error(&format!("[safety]\nmax_source_shrink = {bad}\n")),
                format!("safety.max_source_shrink: {bad} is outside (0, 1]")
            );
        }
        assert_eq!(ok("[safety]\nmax_source_shrink = 1\n").safety.max_source_shrink, 1.0);
        assert_eq!(ok("[safety]\nmax_source_shrink = 0.01\n").safety.max_source_shrink, 0.01);
        assert_eq!(
            one_error("[safety]\nmax_source_shrink = \"50%\"\n"),
            "safety.max_source_shrink: \"50%\" is not a number"
        );
    }

    #[test]
    fn caps_of_zero_are_allowed() {
        let config = ok("[safety]\nmax_revokes_per_cycle = 0\nmax_deletes_per_cycle = 0\nmax_unlinks_per_cycle = 0\n");
        assert_eq!(
            (
                config.safety.max_revokes_per_cycle,
                config.safety.max_deletes_per_cycle,
                config.safety.max_unlinks_per_cycle
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn caps_must_be_non_negative_integers() {
        assert_eq!(
            errors(
                "[safety]\nmax_revokes_per_cycle = -1\nmax_deletes_per_cycle = 2.5\nmax_unlinks_per_cycle = \"50\"\n"
            ),
            [
                "safety.max_revokes_per_cycle: -1 is outside 0..=1000000",
                "safety.max_deletes_per_cycle: 2.5 is not an integer",
                "safety.max_unlinks_per_cycle: \"50\" is not an integer",
            ]
        );
    }

    #[test]
    fn delete_orphans_must_be_a_boolean() {
        assert!(!ok("[safety]\ndelete_orphans = false\n").safety.delete_orphans);
        assert_eq!(
            one_error("[safety]\ndelete_orphans = 0\n"),
            "safety.delete_orphans: 0 is not a boolean (true or false)"
        );
    }

    // --- rate limits, limits -------------------------------------------------

    #[test]
    fn rates_must_be_positive_and_finite() {
        for bad in ["0", "0.0", "-1.5", "inf", "-inf", "nan", "+nan", "-0.0"] {
            assert_eq!(
                one_error(&format!("[rate_limit]\nmutating_per_second = {bad}\n")),
                format!("rate_limit.mutating_per_second: {bad} is outside 0.001..=100000 requests a second")
            );
        }
        assert_eq!(
            one_error("[rate_limit]\ndescribe_per_second = \"fast\"\n"),
            "rate_limit.describe_per_second: \"fast\" is not a number"
        );
        let config = ok("[rate_limit]\nmutating_per_second = 3\ndescribe_per_second = 0.5\n");
        assert_eq!((config.rate_limit.mutating_per_second, config.rate_limit.describe_per_second), (3.0, 0.5));
    }

    #[test]
    fn bursts_and_max_in_flight_must_be_at_least_one() {
        assert_eq!(
            errors("[rate_limit]\nmutating_burst = 0\ndescribe_burst = -3\nmax_in_flight = 0\n"),
            [
                "rate_limit.mutating_burst: 0 is outside 1..=1000000",
                "rate_limit.describe_burst: -3 is outside 1..=1000000",
                "rate_limit.max_in_flight: 0 is outside 1..=1000",
            ]
        );
        assert_eq!(
            one_error("[rate_limit]\nmutating_burst = 4294967296\n"),
            "rate_limit.mutating_burst: 4294967296 is outside 1..=1000000"
        );
        let config = ok("[rate_limit]\nmutating_burst = 1\ndescribe_burst = 1\nmax_in_flight = 1\n");
        assert_eq!(
            (config.rate_limit.mutating_burst, config.rate_limit.describe_burst, config.rate_limit.max_in_flight),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_rate_that_validated_and_then_panicked_the_limiter_is_refused_with_its_bounds() {
        // `mutating_per_second = 1e12` used to validate, then panic building
        // the governor quota (its period rounds to 0 ns); `1e-300` was
        // silently raised to 1e-3.
        for (key, bad) in
            [("mutating_per_second", "1e12"), ("describe_per_second", "1e10"), ("mutating_per_second", "1e-300")]
        {
            assert_eq!(
                one_error(&format!("[rate_limit]\n{key} = {bad}\n")),
                format!("rate_limit.{key}: {bad} is outside 0.001..=100000 requests a second")
            );
        }
        let config = ok("[rate_limit]\nmutating_per_second = 100000\ndescribe_per_second = 0.001\n");
        assert_eq!((config.rate_limit.mutating_per_second, config.rate_limit.describe_per_second), (1e5, 1e-3));
        assert_eq!(
            one_error("[rate_limit]\ndescribe_burst = 1000001\n"),
            "rate_limit.describe_burst: 1000001 is outside 1..=1000000"
        );
        assert_eq!(ok("[rate_limit]\ndescribe_burst = 1000000\n").rate_limit.describe_burst, 1_000_000);
    }

    #[test]
    fn retry_keys_are_bounded_and_a_base_delay_may_not_exceed_the_cap() {
        assert_eq!(
            errors(
                "[rate_limit]\nmax_attempts = 0\nretry_base_delay = \"0s\"\nretry_throttled_base_delay = \"2m\"\n\
                 retry_max_delay = \"1h\"\nretry_quota = -1\nretry_cost = 0\nretry_timeout_cost = 1000001\n"
            ),
            [
                "rate_limit.max_attempts: 0 is outside 1..=10",
                "rate_limit.retry_base_delay: \"0s\" is shorter than the minimum 1ms",
                "rate_limit.retry_throttled_base_delay: \"2m\" is longer than the maximum 1m",
                "rate_limit.retry_max_delay: \"1h\" is longer than the maximum 5m",
                "rate_limit.retry_quota: -1 is outside 0..=1000000",
                "rate_limit.retry_cost: 0 is outside 1..=1000000",
                "rate_limit.retry_timeout_cost: 1000001 is outside 1..=1000000",
            ]
        );
        // A default base above an explicit cap is simply capped.
        assert_eq!(
            ok("[rate_limit]\nretry_max_delay = \"500ms\"\n").rate_limit.retry_max_delay,
            Duration::from_millis(500)
        );
        assert_eq!(
            one_error(
                "[rate_limit]\nretry_base_delay = \"3s\"\nretry_max_delay = \"2s\"\nretry_throttled_base_delay = \"1s\"\n"
            ),
            "rate_limit.retry_base_delay: \"3s\" is longer than rate_limit.retry_max_delay (2s)"
        );
        let config = ok("[rate_limit]\nmax_attempts = 1\nretry_quota = 0\n");
        assert_eq!((config.rate_limit.max_attempts, config.rate_limit.retry_quota), (1, 0));
    }

    /// `[section]\nkey = value\n` for the key path `section.key`.
    fn set(path: &str, value: &str) -> String {
        let (section, key) = path.split_once('.').unwrap_or_default();
        format!("[{section}]\n{key} = {value}\n")
    }

    #[test]
    fn every_integer_key_accepts_its_ends_and_refuses_one_beyond_naming_its_range() {
        for b in bounds::INTEGERS {
            assert!(parse(&set(b.key, &b.min.to_string())).is_ok(), "{} = {}", b.key, b.min);
            assert!(parse(&set(b.key, &b.max.to_string())).is_ok(), "{} = {}", b.key, b.max);
            let below = i128::from(b.min) - 1;
            for beyond in [below.to_string(), (b.max + 1).to_string(), i64::MAX.to_string(), i64::MIN.to_string()] {
                assert_eq!(
                    one_error(&set(b.key, &beyond)),
                    format!("{}: {beyond} is outside {}..={}", b.key, b.min, b.max)
                );
            }
        }
    }

    #[test]
    fn every_rate_key_accepts_its_ends_and_refuses_beyond_naming_its_range() {
        for b in bounds::RATES {
            assert!(parse(&set(b.key, &format!("{:?}", b.min))).is_ok(), "{}", b.key);
            assert!(parse(&set(b.key, &format!("{:?}", b.max))).is_ok(), "{}", b.key);
            for beyond in ["1e-300", "0.000999", "100000.01", "1e10", "1e12", "1.7976931348623157e308", "-5e-324"] {
                assert_eq!(
                    one_error(&set(b.key, beyond)),
                    format!("{}: {beyond} is outside 0.001..=100000 requests a second", b.key)
                );
            }
        }
    }

    #[test]
    fn every_duration_key_accepts_its_ends_and_refuses_longer_naming_its_maximum() {
        for b in bounds::DURATIONS {
            let (min, max) = (humantime::format_duration(b.min), humantime::format_duration(b.max));
            // A base delay may not exceed the cap: raise the cap to its own maximum.
            let set = |key: &str, value: &str| {
                // Likewise a fight's longest backoff may not be below its first.
                let cap = if key.ends_with("base_delay") {
                    "retry_max_delay = \"5m\"\n"
                } else if key.ends_with("fight_backoff_max") {
                    "fight_backoff = \"1s\"\n"
                } else {
                    ""
                };
                format!("{}{cap}", set(key, value))
            };
            assert!(parse(&set(b.key, &format!("\"{min}\""))).is_ok(), "{} = {min}", b.key);
            assert!(parse(&set(b.key, &format!("\"{max}\""))).is_ok(), "{} = {max}", b.key);
            // 200000000000 years still fits a Duration; the second one overflows
            // humantime's u64 of seconds. Both are "too long", never a panic.
            let one_more = humantime::format_duration(b.max + Duration::from_secs(1)).to_string();
            for beyond in [one_more.as_str(), "200000000000years", "99999999999999999999999years", "584942417356years"]
            {
                assert_eq!(
                    one_error(&set(b.key, &format!("{beyond:?}"))),
                    format!("{}: {beyond:?} is longer than the maximum {max}", b.key)
                );
            }
        }
        assert_eq!(
            one_error("[daemon]\ninterval = \"200000000000years\"\n"),
            "daemon.interval: \"200000000000years\" is longer than the maximum 1day"
        );
        assert_eq!(ok("[safety]\norphan_grace = \"365days\"\n").safety.orphan_grace, Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn every_bound_is_documented_in_the_reference_and_the_shipped_example() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let reference = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        let example = std::fs::read_to_string(root.join("config/classiclink-mirror.toml")).unwrap();
        for (path, range) in bounds::all() {
            let key = path.rsplit('.').next().unwrap_or(path);
            let row = reference.lines().find(|l| l.starts_with(&format!("| `{key}` |")));
            assert!(row.is_some_and(|row| row.contains(&range)), "docs/configuration.md: {path} should say {range}");
            // The comment block just above the key's line.
            let lines: Vec<&str> = example.lines().collect();
            let at = lines.iter().position(|l| l.starts_with(&format!("{key} = "))).unwrap_or_default();
            let comment = lines[..at].iter().rev().take_while(|l| l.starts_with('#')).any(|l| l.contains(&range));
            assert!(comment, "config/classiclink-mirror.toml: the comment of {path} should say {range}");
        }
    }

    #[test]
    fn rules_per_group_must_be_between_1_and_1000() {
        assert_eq!(ok("[limits]\nrules_per_group = 1000\n").limits.rules_per_group, 1000);
        assert_eq!(ok("[limits]\nrules_per_group = 1\n").limits.rules_per_group, 1);
        for bad in ["0", "1001", "-5"] {
            assert_eq!(
                one_error(&format!("[limits]\nrules_per_group = {bad}\n")),
                format!("limits.rules_per_group: {bad} is outside 1..=1000")
            );
        }
    }

    // --- discovery -----------------------------------------------------------

    #[test]
    fn an_empty_tag_key_disables_discovery() {
        assert_eq!(ok("[discovery]\ntag_key = \"\"\n").discovery.tag_key, None);
        assert_eq!(ok("[discovery]\ntag_key = \"team:mirror\"\n").discovery.tag_key.as_deref(), Some("team:mirror"));
    }

    #[test]
    fn owner_defaults_to_default_and_must_be_a_short_tag_value() {
        assert_eq!(ok("").daemon.owner, "default");
        assert_eq!(ok("[daemon]\nowner = \"team-b\"\n").daemon.owner, "team-b");
        assert_eq!(ok("[daemon]\nowner = \"ops@x.com:eu/1+2=3 a_b\"\n").daemon.owner, "ops@x.com:eu/1+2=3 a_b");
        let longest = "o".repeat(64);
        assert_eq!(ok(&format!("[daemon]\nowner = \"{longest}\"\n")).daemon.owner, longest);
        assert_eq!(
            one_error(&format!("[daemon]\nowner = \"{longest}o\"\n")),
            format!("daemon.owner: \"{longest}o\" is longer than 64 characters")
        );
        assert_eq!(
            one_error("[daemon]\nowner = \"\"\n"),
            "daemon.owner: \"\" is empty; name the deployment (the default is \"default\")"
        );
        assert_eq!(
            one_error("[daemon]\nowner = \"a\\u0000b\"\n"),
            "daemon.owner: \"a\\0b\" contains the control character U+0000"
        );
        assert_eq!(
            one_error("[daemon]\nowner = \"team*\"\n"),
            "daemon.owner: \"team*\" contains '*'; use ASCII letters, digits, spaces and + - = . _ : / @ (EC2's \
             tag-value characters)"
        );
        assert_eq!(one_error("[daemon]\nowner = \"\u{e9}quipe\"\n").split(" contains").count(), 2);
        assert_eq!(one_error("[daemon]\nowner = \" a\"\n"), "daemon.owner: \" a\" starts or ends with a space");
        assert_eq!(one_error("[daemon]\nowner = 3\n"), "daemon.owner: 3 is not a string");
    }

    #[test]
    fn a_tag_key_must_be_a_usable_ec2_tag_key() {
        let long = "k".repeat(129);
        assert_eq!(
            one_error(&format!("[discovery]\ntag_key = \"{long}\"\n")),
            "discovery.tag_key: is longer than 128 characters"
        );
        assert_eq!(
            one_error("[discovery]\ntag_key = \"aws:mirror\"\n"),
            "discovery.tag_key: \"aws:mirror\" uses the reserved \"aws:\" prefix"
        );
        assert_eq!(one_error("[discovery]\ntag_key = false\n"), "discovery.tag_key: false is not a string");
    }

    // --- mirrors -------------------------------------------------------------

    #[test]
    fn a_mirror_is_read_with_its_defaults() {
        let config = ok(&mirror("sg-0a1b2c3d", ""));
        let expected =
            MirrorConfig::new(SourceRef::Id(GroupId::try_new("sg-0a1b2c3d").unwrap()), VpcId::try_new(VPC).unwrap());
        assert_eq!(config.mirrors, [expected]);
    }

    #[test]
    fn a_mirror_reads_every_override() {
        let config = ok(&mirror(
            "web",
            "name = \"web-mirror\"\nlink_instances = false\nmode = \"audit\"\nadopt = true\nenable_classiclink = true",
        ));
        let m = &config.mirrors[0];
        assert_eq!(m.source, SourceRef::Name("web".to_owned()));
        assert_eq!(m.name.as_deref(), Some("web-mirror"));
        assert!(!m.link_instances && m.adopt && m.enable_classiclink);
        assert_eq!(m.mode, Some(Mode::Audit));
        assert_eq!(config.mode_of(m), Mode::Audit);
    }

    #[test]
    fn mirror_booleans_must_be_booleans() {
        assert_eq!(
            errors(&mirror("sg-01", "link_instances = 1\nadopt = \"no\"\nenable_classiclink = []")),
            [
                "mirror[0].link_instances: 1 is not a boolean (true or false)",
                "mirror[0].adopt: \"no\" is not a boolean (true or false)",
                "mirror[0].enable_classiclink: an array is not a boolean (true or false)",
            ]
        );
    }

    #[test]
    fn a_source_group_starting_with_sg_must_be_a_well_formed_id() {
        assert_eq!(one_error(&mirror("sg-xyz", "")), "mirror[0].source_group: \"sg-xyz\" is not a security group id");
    }

    #[test]
    fn a_source_group_not_starting_with_sg_is_a_name() {
        assert_eq!(ok(&mirror("web servers", "")).mirrors[0].source, SourceRef::Name("web servers".to_owned()));
        assert_eq!(
            one_error(&mirror("", "")),
            "mirror[0].source_group: must not be empty (a group id like \"sg-0a1b2c3d\" or a group name)"
        );
        assert_eq!(one_error(&mirror(&"w".repeat(256), "")), "mirror[0].source_group: is longer than 255 characters");
        assert!(parse(&mirror(&"w".repeat(255), "")).is_ok());
    }

    #[test]
    fn vpc_must_be_a_vpc_id() {
        let text = format!("{}[[mirror]]\nsource_group = \"sg-02\"\nvpc = \"vpc-xyz\"\n", mirror("sg-01", ""));
        assert_eq!(one_error(&text), "mirror[1].vpc: \"vpc-xyz\" is not a VPC id");
        assert_eq!(one_error("[[mirror]]\nsource_group = \"sg-01\"\nvpc = 7\n"), "mirror[0].vpc: 7 is not a string");
    }

    #[test]
    fn missing_source_group_and_vpc_are_reported_at_the_entry() {
        let errors = parse("\n[[mirror]]\nname = \"x\"\n").unwrap_err();
        assert_eq!(
            render_errors(&errors),
            "mirror[0].source_group: required key is missing\nmirror[0].vpc: required key is missing\n"
        );
        assert_eq!(errors[0].location(), Some(Location { line: 4, column: 1 }));
    }

    #[test]
    fn nul_and_other_control_characters_are_refused_in_names_tag_keys_profiles_and_urls() {
        for (c, code) in
            [('\0', "U+0000"), ('\n', "U+000A"), ('\u{1b}', "U+001B"), ('\u{7f}', "U+007F"), ('\u{85}', "U+0085")]
        {
            let name = format!("web{c}tier");
            // As TOML writes it (`\u0000`); the errors show it as Rust does (`\0`).
            let quoted = toml::Value::String(name.clone()).to_string();
            assert_eq!(
                one_error(&format!("[[mirror]]\nsource_group = {quoted}\nvpc = \"{VPC}\"\n")),
                format!(
                    "mirror[0].source_group: {name:?} contains the control character {code}, which EC2 does not allow in group names"
                )
            );
            assert_eq!(
                one_error(&format!("[discovery]\ntag_key = {quoted}\n")),
                format!(
                    "discovery.tag_key: {name:?} contains the control character {code}, which EC2 does not allow in tag keys"
                )
            );
            assert_eq!(
                one_error(&format!("profile = {quoted}\n")),
                format!("aws.profile: {name:?} contains the control character {code}")
            );
            assert!(one_error(&mirror("sg-01", &format!("name = {quoted}"))).starts_with("mirror[0].name: "));
            let url = format!("http://127.0.0.1:4566/{c}");
            let quoted_url = toml::Value::String(url.clone()).to_string();
            let why = if c.is_whitespace() { "it contains whitespace" } else { "it contains a control character" };
            assert_eq!(
                one_error(&format!("endpoint_url = {quoted_url}\n")),
                format!("aws.endpoint_url: {url:?} is not a URL ({why})")
            );
        }
        // Non-ASCII that is not a control character is a name EC2 may hold.
        assert!(parse(&mirror("wéb", "")).is_ok());
        assert!(parse("[discovery]\ntag_key = \"équipe:miroir\"\n").is_ok());
    }

    #[test]
    fn a_mirror_name_must_be_a_valid_vpc_group_name() {
        let long = "n".repeat(256);
        for (name, why) in [
            ("", "must not be empty".to_owned()),
            (long.as_str(), "is longer than 255 characters".to_owned()),
            ("sg-web", "\"sg-web\" starts with \"sg-\", which EC2 does not allow in group names".to_owned()),
            (
                "web%",
                "\"web%\" contains '%'; VPC group names allow letters, digits, spaces and ._-:/()#,@[]+=&;{}!$*"
                    .to_owned(),
            ),
        ] {
            assert_eq!(one_error(&mirror("sg-01", &format!("name = {name:?}"))), format!("mirror[0].name: {why}"));
        }
        assert!(parse(&mirror("sg-01", "name = \"Web tier (v2): 10.0.0.0/8 #1\"")).is_ok());
    }

    #[test]
    fn the_same_source_id_twice_is_reported_on_the_later_entry() {
        let text = format!("{}{}{}", mirror("sg-01", ""), mirror("sg-02", ""), mirror("sg-01", "name = \"other\""));
        assert_eq!(errors(&text), ["mirror[2].source_group: \"sg-01\" is already mapped by mirror[0]"]);
    }

    #[test]
    fn the_same_source_name_twice_is_reported_even_into_another_vpc() {
        let text = format!("{}[[mirror]]\nsource_group = \"web\"\nvpc = \"vpc-02\"\n", mirror("web", ""));
        let errors = parse(&text).unwrap_err();
        assert_eq!(render_errors(&errors), "mirror[1].source_group: \"web\" is already mapped by mirror[0]\n");
        assert_eq!(errors[0].kind(), "duplicate");
    }

    #[test]
    fn the_same_explicit_mirror_name_in_the_same_vpc_is_reported_ignoring_case() {
        let text = format!("{}{}", mirror("sg-01", "name = \"web\""), mirror("sg-02", "name = \"WEB\""));
        assert_eq!(
            errors(&text),
            [format!("mirror[1].name: mirror name \"WEB\" is already used in {VPC} by mirror[0]")]
        );
    }

    #[test]
    fn a_source_name_counts_as_the_mirror_name_when_no_name_is_given() {
        let text = format!("{}{}", mirror("web", ""), mirror("sg-02", "name = \"web\""));
        assert_eq!(
            errors(&text),
            [format!("mirror[1].name: mirror name \"web\" is already used in {VPC} by mirror[0]")]
        );
        let text = format!("{}{}", mirror("sg-01", "name = \"web\""), mirror("web", ""));
        assert_eq!(
            errors(&text),
            [format!(
                "mirror[1].source_group: mirror name \"web\" (the source's name) is already used in {VPC} by mirror[0]"
            )]
        );
    }

    #[test]
    fn the_same_mirror_name_in_different_vpcs_is_fine() {
        let text = format!(
            "{}[[mirror]]\nsource_group = \"sg-02\"\nvpc = \"vpc-02\"\nname = \"web\"\n",
            mirror("sg-01", "name = \"web\"")
        );
        assert_eq!(ok(&text).mirrors.len(), 2);
    }

    #[test]
    fn mirrors_by_id_without_a_name_never_collide_on_names() {
        assert_eq!(ok(&format!("{}{}", mirror("sg-01", ""), mirror("sg-02", ""))).mirrors.len(), 2);
    }

    // --- errors and loading ------------------------------------------------

    #[test]
    fn render_errors_sorts_by_position_and_puts_unlocated_errors_first() {
        let errors = Config::from_toml_str("[daemon]\nmode = \"x\"\n[aws]\nzone = 1\n", None).unwrap_err();
        assert_eq!(
            render_errors(&errors),
            "daemon.mode: \"x\" is not a mode (\"enforce\" or \"audit\")\naws.region: required key is missing (or set AWS_REGION)\naws.zone: unknown key\n"
        );
        let mut reversed = errors.clone();
        reversed.reverse();
        assert_eq!(render_errors(&reversed), render_errors(&errors));
        let errors = Config::from_toml_str("[daemon]\nmode = \"x\"\n", None).unwrap_err();
        assert_eq!(errors[0].path, "aws.region", "no location sorts first");
    }

    #[test]
    fn an_error_displays_as_path_colon_message_and_has_a_kind() {
        let errors = Config::from_toml_str("x = 1\n", Some("us-east-1")).unwrap_err();
        assert_eq!(errors[0].path, "x");
        assert_eq!(errors[0].message, "unknown key");
        assert_eq!(errors[0].to_string(), "x: unknown key");
        assert_eq!(errors[0].kind(), "unknown_key");
        assert_eq!(errors[0].location(), Some(Location { line: 1, column: 1 }));
    }

    #[test]
    fn load_names_the_path_of_an_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = Config::load(&path, None).unwrap_err();
        assert_eq!(err.kind(), "read");
        assert!(err.to_string().starts_with(&format!("cannot read configuration file {}: ", path.display())), "{err}");
    }

    #[test]
    fn load_returns_every_validation_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[daemon]\nmode = \"x\"\nlisten = \"y\"\n").unwrap();
        let err = Config::load(&path, Some("us-east-1")).unwrap_err();
        assert_eq!(err.kind(), "invalid");
        let ConfigLoadError::Invalid { errors, .. } = &err else { panic!("{err}") };
        assert_eq!(errors.len(), 2);
        assert_eq!(
            err.to_string(),
            format!("invalid configuration file {} (2 errors):\n{}", path.display(), render_errors(errors).trim_end())
        );
    }

    // --- the schema and the shipped example ----------------------------------

    /// A file setting every key of `SCHEMA` to a non-default value.
    const EVERY_KEY: &str = r#"
[aws]
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:4566"
profile = "migration"
[daemon]
interval = "1m"
listen = "0.0.0.0:9000"
mode = "audit"
state_dir = "/srv/mirror-state"
owner = "team-b"
[safety]
max_revokes_per_cycle = 1
max_deletes_per_cycle = 2
max_unlinks_per_cycle = 3
orphan_grace = "1h"
delete_orphans = false
max_source_shrink = 0.25
fight_repairs = 5
fight_window = "30m"
fight_backoff = "2m"
fight_backoff_max = "2h"
[rate_limit]
mutating_per_second = 1.5
mutating_burst = 3
describe_per_second = 2.5
describe_burst = 4
max_in_flight = 8
max_attempts = 5
retry_base_delay = "50ms"
retry_throttled_base_delay = "2s"
retry_max_delay = "10s"
retry_quota = 100
retry_cost = 2
retry_timeout_cost = 4
[limits]
rules_per_group = 120
overflow_groups = false
[discovery]
tag_key = "mirror-to"
[events]
queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/classiclink-mirror-events"
endpoint_url = "http://127.0.0.1:9324"
[[mirror]]
source_group = "web"
vpc = "vpc-0123"
name = "web-mirror"
link_instances = false
mode = "enforce"
adopt = true
enable_classiclink = true
"#;

    #[test]
    fn every_key_of_the_schema_is_a_field_of_the_raw_config() {
        let raw: RawConfig = toml::from_str(EVERY_KEY).unwrap();
        assert!(raw.aws.is_some() && raw.mirror.len() == 1);
        for (section, shape) in SCHEMA {
            let (Shape::Table(keys) | Shape::ArrayOfTables(keys)) = shape;
            for key in *keys {
                assert!(EVERY_KEY.contains(&format!("\n{key} = ")), "{section}.{key} missing from EVERY_KEY");
            }
            assert!(EVERY_KEY.contains(&format!("[{section}]")), "{section}");
        }
    }

    #[test]
    fn every_key_is_read_into_the_config() {
        let config = Config::from_toml_str(EVERY_KEY, None).unwrap();
        let mut expected = Config::with_region("eu-west-1");
        expected.aws.endpoint_url = Some("http://127.0.0.1:4566".to_owned());
        expected.aws.profile = Some("migration".to_owned());
        expected.daemon = DaemonConfig {
            interval: Duration::from_secs(60),
            listen: "0.0.0.0:9000".parse().unwrap(),
            mode: Mode::Audit,
            state_dir: PathBuf::from("/srv/mirror-state"),
            owner: "team-b".to_owned(),
        };
        expected.safety = SafetyConfig {
            max_revokes_per_cycle: 1,
            max_deletes_per_cycle: 2,
            max_unlinks_per_cycle: 3,
            orphan_grace: Duration::from_secs(3600),
            delete_orphans: false,
            max_source_shrink: 0.25,
            fight_repairs: 5,
            fight_window: Duration::from_secs(1800),
            fight_backoff: Duration::from_secs(120),
            fight_backoff_max: Duration::from_secs(7200),
        };
        expected.rate_limit = RateLimitConfig {
            mutating_per_second: 1.5,
            mutating_burst: 3,
            describe_per_second: 2.5,
            describe_burst: 4,
            max_in_flight: 8,
            max_attempts: 5,
            retry_base_delay: Duration::from_millis(50),
            retry_throttled_base_delay: Duration::from_secs(2),
            retry_max_delay: Duration::from_secs(10),
            retry_quota: 100,
            retry_cost: 2,
            retry_timeout_cost: 4,
        };
        expected.limits.rules_per_group = 120;
        expected.limits.overflow_groups = false;
        expected.discovery.tag_key = Some("mirror-to".to_owned());
        expected.events = EventsConfig {
            queue_url: Some("https://sqs.eu-west-1.amazonaws.com/123456789012/classiclink-mirror-events".to_owned()),
            endpoint_url: Some("http://127.0.0.1:9324".to_owned()),
        };
        expected.mirrors = vec![MirrorConfig {
            source: SourceRef::Name("web".to_owned()),
            vpc: VpcId::try_new("vpc-0123").unwrap(),
            name: Some("web-mirror".to_owned()),
            link_instances: false,
            mode: Some(Mode::Enforce),
            adopt: true,
            enable_classiclink: true,
        }];
        assert_eq!(config, expected);
    }

    fn shipped_example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/classiclink-mirror.toml")
    }

    #[test]
    fn the_shipped_example_validates_and_sets_every_default() {
        let config = Config::load(&shipped_example(), None).unwrap_or_else(|e| panic!("{e}"));
        let mut expected = Config::with_region("us-east-1");
        expected.mirrors = vec![MirrorConfig::new(
            SourceRef::Id(GroupId::try_new("sg-0a1b2c3d").unwrap()),
            VpcId::try_new("vpc-9f2e1d0c").unwrap(),
        )];
        assert_eq!(config, expected);
    }

    #[test]
    fn the_shipped_example_documents_every_key() {
        let text = std::fs::read_to_string(shipped_example()).unwrap();
        for (section, shape) in SCHEMA {
            let (Shape::Table(keys) | Shape::ArrayOfTables(keys)) = shape;
            for key in *keys {
                // Set, or shown commented out (keys without a default).
                let documented = text.lines().any(|line| {
                    line.trim_start().trim_start_matches('#').trim_start().starts_with(&format!("{key} = "))
                });
                assert!(documented, "{section}.{key} is not in the shipped example");
            }
        }
    }
}
