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
//! 2. the tree is walked against the schema of known sections and keys
//!    (`raw.rs`): unknown keys and sections of the wrong shape are reported
//!    and pruned;
//! 3. what is left is deserialized into `RawConfig` — every leaf a raw, spanned
//!    TOML value, so deserialization cannot fail on a bad value — and each leaf
//!    (`check.rs`, `values.rs`) and each rule across keys and entries
//!    (`rules.rs`) is checked, collecting every error.
//!
//! Errors carry the position of the offending key or value, so they are
//! reported in file order. Indices in paths are 0-based (`mirror[0]` is the
//! first `[[mirror]]`).
//!
//! Each key is declared once, in `sections.rs`, with its type, its default
//! and how it is read (its range, for a number or a duration): the typed
//! section, its raw form, the schema's key list, the defaults and
//! [`bounds`] are generated from that declaration (`declare.rs`). Errors
//! are [`ConfigError`]s (`error.rs`).
//!
//! Every number and duration has a range, written once beside its key and
//! collected in [`bounds`]; a value
//! outside it is an error naming the key and the range, never clamped. So
//! nothing built from a validated [`Config`] (the rate limiter, the daemon's
//! timers, the planner's clock arithmetic) meets a value it cannot handle,
//! and a reload cannot take the daemon down.

mod accounts;
pub mod bounds;
mod check;
mod declare;
mod error;
mod raw;
mod rules;
mod sections;
mod targets;
mod values;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::de::DeTable;

pub use self::accounts::{AWS_ACCOUNT, DEFAULT_SESSION_NAME};
use self::check::Checker;
use self::error::ErrorKind;
pub use self::error::{ConfigError, ConfigLoadError, Location, render_errors};
use self::raw::RawConfig;
pub use self::sections::{
    AccountConfig, AwsConfig, DaemonConfig, DiscoveryConfig, EventsConfig, LimitsConfig, MirrorConfig, MirroringConfig,
    RateLimitConfig, SafetyConfig,
};
use self::sections::{
    PartialAws, PartialDaemon, PartialDiscovery, PartialEvents, PartialLimits, PartialMirror, PartialMirroring,
    PartialRateLimit, PartialSafety,
};
pub use self::targets::{STATE_FILE_NAME, Target};
use crate::model::{GroupId, VpcId};

/// Default of `daemon.state_dir`: systemd's `StateDirectory=classiclink-mirror`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/classiclink-mirror";

/// Default of `daemon.owner`: the identity an estate made before owner tags
/// existed is handed to (`docs/operations.md`, upgrading to owner tags).
pub const DEFAULT_OWNER: &str = "default";

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

/// What a mirror does with a rule naming a group that no mapping mirrors
/// (`mirroring.unmanaged_references`, docs/semantics.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmanagedReferences {
    /// Drop the rule and report it.
    #[default]
    Report,
    /// Grant a managed prefix list of the group's members' private addresses.
    Expand,
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

impl MirrorConfig {
    /// A mapping with every optional key at its default.
    #[must_use]
    pub fn new(source: SourceRef, vpc: VpcId) -> Self {
        let mirror = PartialMirror { source: Some(source), vpc: Some(vpc), ..PartialMirror::default() };
        mirror.complete().expect("a [[mirror]] has a default for every key but its source and VPC")
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
    /// `[mirroring]`.
    pub mirroring: MirroringConfig,
    /// `[discovery]`.
    pub discovery: DiscoveryConfig,
    /// `[events]`.
    pub events: EventsConfig,
    /// `[accounts.NAME]`, by name.
    pub accounts: BTreeMap<String, AccountConfig>,
    /// `[[mirror]]`, in file order.
    pub mirrors: Vec<MirrorConfig>,
}

impl Config {
    /// Every default of docs/configuration.md (as `config/sections.rs`
    /// declares them) with the given region and no mappings.
    #[must_use]
    pub fn with_region(region: impl Into<String>) -> Self {
        let aws = PartialAws { region: Some(region.into()), ..PartialAws::default() };
        Self {
            aws: aws.complete().expect("[aws] has a default for every key but the region"),
            daemon: PartialDaemon::default().complete().expect("every key of [daemon] has a default"),
            safety: PartialSafety::default().complete().expect("every key of [safety] has a default"),
            rate_limit: PartialRateLimit::default().complete().expect("every key of [rate_limit] has a default"),
            limits: PartialLimits::default().complete().expect("every key of [limits] has a default"),
            mirroring: PartialMirroring::default().complete().expect("every key of [mirroring] has a default"),
            discovery: PartialDiscovery::default().complete().expect("every key of [discovery] has a default"),
            events: PartialEvents::default().complete().expect("every key of [events] has a default"),
            accounts: BTreeMap::new(),
            mirrors: Vec::new(),
        }
    }

    /// The account the first mirror naming one targets: `None` for the
    /// `[aws]` account. The port of one target's part of the file
    /// ([`Config::for_target`]), whose mirrors all target it.
    #[must_use]
    pub fn target_account(&self) -> Option<&str> {
        self.mirrors.iter().find_map(|m| m.target_account.as_deref())
    }

    /// The region of the account named `account` (`None`: the `[aws]`
    /// one). A name `[accounts]` lacks (validation refuses it) is taken
    /// for `[aws]`.
    #[must_use]
    pub fn region_of(&self, account: Option<&str>) -> &str {
        account.and_then(|name| self.accounts.get(name)).map_or(self.aws.region.as_str(), |a| a.region.as_str())
    }

    /// Whether any mirror reaches an account of `[accounts]`.
    #[must_use]
    pub fn uses_accounts(&self) -> bool {
        self.mirrors.iter().any(|m| m.source_account.is_some() || m.target_account.is_some())
    }

    /// The effective mode of a mapping (its override, else the global mode).
    #[must_use]
    pub fn mode_of(&self, mapping: &MirrorConfig) -> Mode {
        mapping.mode.unwrap_or(self.daemon.mode)
    }

    /// Whether a mapping expands references to unmanaged groups: its
    /// override, else `mirroring.unmanaged_references` (a source found by
    /// the discovery tag has no entry, and follows the default).
    /// A source in another account than its target never expands: its
    /// groups' members are in the source account, which the daemon only
    /// asks for the sources themselves (docs/semantics.md, "References to
    /// groups of other accounts").
    #[must_use]
    pub fn expands(&self, entry: Option<&MirrorConfig>) -> bool {
        let cross_account = entry.is_some_and(|e| e.source_account != e.target_account);
        !cross_account
            && entry.and_then(|e| e.unmanaged_references).unwrap_or(self.mirroring.unmanaged_references)
                == UnmanagedReferences::Expand
    }

    /// Whether any mapping may expand: observe reads prefix lists and
    /// members only then, so that a file without expansion costs no call.
    #[must_use]
    pub fn any_expands(&self) -> bool {
        self.mirrors.iter().any(|mapping| self.expands(Some(mapping)))
            || (self.mirroring.unmanaged_references == UnmanagedReferences::Expand && self.discovery.tag_key.is_some())
    }
}

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
        let mut cx = Checker::new(text, env_region);
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
            Ok(raw) => check(&mut cx, &raw, &skipped),
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

/// Step 3: checks every section and the rules across keys and entries.
/// Returns the config when every value could be read; the caller still
/// refuses it if any error was recorded.
fn check(cx: &mut Checker<'_>, raw: &RawConfig, skipped: &BTreeSet<usize>) -> Option<Config> {
    let aws = PartialAws::read_table(cx, raw.aws.as_ref());
    let daemon = PartialDaemon::read_table(cx, raw.daemon.as_ref());
    let mut safety = PartialSafety::read_table(cx, raw.safety.as_ref());
    rules::fight_backoff(cx, raw.safety.as_ref(), &mut safety);
    let rate_limit = PartialRateLimit::read_table(cx, raw.rate_limit.as_ref());
    rules::retry_delays(cx, raw.rate_limit.as_ref(), &rate_limit);
    let limits = PartialLimits::read_table(cx, raw.limits.as_ref());
    let mirroring = PartialMirroring::read_table(cx, raw.mirroring.as_ref());
    let discovery = PartialDiscovery::read_table(cx, raw.discovery.as_ref());
    let events = PartialEvents::read_table(cx, raw.events.as_ref());
    let accounts = accounts::accounts(cx, &raw.accounts);
    let mirrors = rules::mirrors(cx, &raw.mirror, skipped);
    if let Some(mirrors) = &mirrors {
        accounts::mirror_rules(cx, &raw.mirror, mirrors, &raw.accounts);
    }
    let config = Config {
        aws: aws.complete()?,
        daemon: daemon.complete()?,
        safety: safety.complete()?,
        rate_limit: rate_limit.complete()?,
        limits: limits.complete()?,
        mirroring: mirroring.complete()?,
        discovery: discovery.complete()?,
        events: events.complete()?,
        accounts: accounts?,
        mirrors: mirrors?,
    };
    targets::distinct_targets(cx, &raw.mirror, &config);
    Some(config)
}
