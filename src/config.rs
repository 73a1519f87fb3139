//! The mapping file: TOML → validated [`Config`] (SPEC §3).
//!
//! Sits before the loop: the daemon, `plan`, `apply` and `validate` all read
//! the file through [`Config::from_toml_str`], which reads raw values first and
//! validates after, so one run reports every error, each with its key path.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{DEFAULT_DISCOVERY_TAG, DEFAULT_RULES_PER_GROUP, GroupId, VpcId};

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
    /// drop before destructive actions are held (SPEC §6).
    pub max_source_shrink: f64,
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
}

/// `[limits]`: EC2 quotas of the account, when raised from the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Inbound rules per VPC security group (EC2 default 60).
    pub rules_per_group: usize,
}

/// `[discovery]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Source groups carrying this tag are mirrored into the VPC its value
    /// names; `None` when discovery is disabled (`tag_key = ""`).
    pub tag_key: Option<String>,
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
    /// `[[mirror]]`, in file order.
    pub mirrors: Vec<MirrorConfig>,
}

impl Config {
    /// Every default of SPEC §3 with the given region and no mappings.
    #[must_use]
    pub fn with_region(region: impl Into<String>) -> Self {
        Self {
            aws: AwsConfig { region: region.into(), endpoint_url: None, profile: None },
            daemon: DaemonConfig {
                interval: Duration::from_secs(30),
                listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
                mode: Mode::Enforce,
            },
            safety: SafetyConfig {
                max_revokes_per_cycle: 200,
                max_deletes_per_cycle: 10,
                max_unlinks_per_cycle: 50,
                orphan_grace: Duration::from_secs(600),
                delete_orphans: true,
                max_source_shrink: 0.5,
            },
            rate_limit: RateLimitConfig {
                mutating_per_second: 2.0,
                mutating_burst: 10,
                describe_per_second: 5.0,
                describe_burst: 20,
                max_in_flight: 4,
            },
            limits: LimitsConfig { rules_per_group: DEFAULT_RULES_PER_GROUP },
            discovery: DiscoveryConfig { tag_key: Some(DEFAULT_DISCOVERY_TAG.to_owned()) },
            mirrors: Vec::new(),
        }
    }

    /// The effective mode of a mapping (its override, else the global mode).
    #[must_use]
    pub fn mode_of(&self, mapping: &MirrorConfig) -> Mode {
        mapping.mode.unwrap_or(self.daemon.mode)
    }
}
