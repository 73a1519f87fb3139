//! Every key of the mapping file, each declared once: its type, its default
//! (or that it is optional or required), how its value is read and, for a
//! number or a duration, its range. `section!` (`config/declare.rs`)
//! generates from each declaration the typed field, the raw form the schema
//! walk and the checks read, the default and the range `config::bounds`
//! lists. docs/configuration.md is the reference of the same keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::accounts::{self, DEFAULT_SESSION_NAME};
use super::bounds::units::{A_MILLION, DAY, MILLISECOND, MINUTE, SECOND, YEAR};
use super::check::Checker;
use super::declare::section;
use super::{DEFAULT_OWNER, DEFAULT_STATE_DIR, Mode, SourceRef, UnmanagedReferences, values};
use crate::ec2::limited::{MAX_BURST, MAX_RATE_PER_SECOND, MIN_RATE_PER_SECOND};
use crate::model::{DEFAULT_DISCOVERY_TAG, DEFAULT_RULES_PER_GROUP, VpcId};

section! {
    /// `[aws]`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    "aws" => AwsConfig, RawAws, PartialAws {
        /// Region (required; `AWS_REGION` may supply it).
        region: String { absent: values::region_from_environment, read: values::region },
        /// An EC2-compatible endpoint, e.g. the emulator.
        endpoint_url: Option<String> { optional, read: values::endpoint_url },
        /// A named profile; otherwise the standard credential chain.
        profile: Option<String> { optional, read: values::profile },
    }
}

section! {
    /// `[daemon]`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    "daemon" => DaemonConfig, RawDaemon, PartialDaemon {
        /// Time between cycle starts (±10% jitter).
        interval: Duration { default: Duration::from_secs(30), read: duration(SECOND, DAY) },
        /// Address of `/metrics`, `/healthz`, `/readyz`, `/status`.
        listen: SocketAddr {
            default: SocketAddr::from(([127, 0, 0, 1], 9464)),
            read: values::socket_address
        },
        /// Global mode; mappings may override it.
        mode: Mode { default: Mode::Enforce, read: Checker::mode },
        /// Where the state file lives (`docs/operations.md`). Never created by
        /// the daemon; when it is missing or read-only the daemon runs without
        /// keeping its state.
        state_dir: PathBuf { default: PathBuf::from(DEFAULT_STATE_DIR), read: values::directory },
        /// This deployment's name, written on every mirror it creates or claims
        /// ([`crate::model::OWNER_TAG`]); a mirror naming another owner is never
        /// touched (`docs/operations.md`, two deployments).
        owner: String { default: DEFAULT_OWNER.to_owned(), read: values::owner },
    }
}

section! {
    /// `[safety]`.
    #[derive(Clone, Debug, PartialEq)]
    "safety" => SafetyConfig, RawSafety, PartialSafety {
        /// Rule revocations per cycle.
        max_revokes_per_cycle: usize { default: 200, read: integer(0, A_MILLION) },
        /// Mirror-group deletions per cycle.
        max_deletes_per_cycle: usize { default: 10, read: integer(0, A_MILLION) },
        /// ClassicLink detaches (including a relink's) per cycle.
        max_unlinks_per_cycle: usize { default: 50, read: integer(0, A_MILLION) },
        /// How long a mirror must stay orphaned before deletion (up to a year).
        orphan_grace: Duration { default: Duration::from_secs(600), read: duration(Duration::ZERO, YEAR) },
        /// `false`: report orphans, never delete.
        delete_orphans: bool { default: true, read: Checker::boolean },
        /// Fraction in (0, 1] by which managed sources or linked instances may
        /// drop before destructive actions are held (docs/semantics.md, "Safety").
        max_source_shrink: f64 { default: 0.5, read: values::fraction },
        /// Repairs of one subject of a pair (its mirror, a grant, an instance's
        /// link) within `fight_window` that make a fight (1 would call every
        /// repair a fight).
        fight_repairs: usize { default: 3, read: integer(2, 1000) },
        /// How far back repairs count toward a fight.
        fight_window: Duration { default: Duration::from_secs(600), read: duration(SECOND, DAY) },
        /// First backoff of a fight's repairs; doubles per repair.
        fight_backoff: Duration { default: Duration::from_secs(60), read: duration(SECOND, DAY) },
        /// Longest backoff of a fight's repairs (at least `fight_backoff`:
        /// left at its default, it is raised to it).
        fight_backoff_max: Duration { default: Duration::from_secs(3600), read: duration(SECOND, DAY) },
    }
}

section! {
    /// `[rate_limit]`.
    #[derive(Clone, Debug, PartialEq)]
    "rate_limit" => RateLimitConfig, RawRateLimit, PartialRateLimit {
        /// Token refill of the shared write bucket: what the limiter's buckets
        /// represent exactly (one request every 1,000 s to one every 10 µs).
        mutating_per_second: f64 { default: 2.0, read: rate(MIN_RATE_PER_SECOND, MAX_RATE_PER_SECOND) },
        /// Write bucket size.
        mutating_burst: u32 { default: 10, read: integer(1, MAX_BURST as u64) },
        /// Token refill of the describe bucket.
        describe_per_second: f64 { default: 5.0, read: rate(MIN_RATE_PER_SECOND, MAX_RATE_PER_SECOND) },
        /// Describe bucket size.
        describe_burst: u32 { default: 20, read: integer(1, MAX_BURST as u64) },
        /// Actions in flight at once (far beyond what EC2's request limits
        /// let run at once).
        max_in_flight: usize { default: 4, read: integer(1, 1000) },
        /// Attempts per EC2 request, the first included (1: never retry).
        max_attempts: u32 { default: 3, read: integer(1, 10) },
        /// Backoff base after a transient error (5xx, timeout, connection).
        retry_base_delay: Duration { default: Duration::from_millis(100), read: duration(MILLISECOND, MINUTE) },
        /// Backoff base after a throttling error.
        retry_throttled_base_delay: Duration { default: SECOND, read: duration(MILLISECOND, MINUTE) },
        /// Cap on one backoff (at least each base the file sets).
        retry_max_delay: Duration { default: Duration::from_secs(20), read: duration(MILLISECOND, Duration::from_secs(300)) },
        /// Size of the client's retry quota, in tokens (0: never retry).
        retry_quota: u32 { default: 500, read: integer(0, A_MILLION) },
        /// Quota tokens one retry costs.
        retry_cost: u32 { default: 5, read: integer(1, A_MILLION) },
        /// Quota tokens one retry after a timeout costs.
        retry_timeout_cost: u32 { default: 10, read: integer(1, A_MILLION) },
    }
}

section! {
    /// `[limits]`: EC2 quotas of the account, when raised from the defaults.
    #[derive(Clone, Debug, PartialEq, Eq)]
    "limits" => LimitsConfig, RawLimits, PartialLimits {
        /// Inbound rules per VPC security group (EC2 default 60, hard
        /// ceiling 1000).
        rules_per_group: usize { default: DEFAULT_RULES_PER_GROUP, read: integer(1, 1000) },
        /// Spill a mirror's grants beyond `rules_per_group` into overflow
        /// groups (`true`) instead of reporting them (docs/semantics.md,
        /// "Overflow groups").
        overflow_groups: bool { default: true, read: Checker::boolean },
    }
}

section! {
    /// `[mirroring]`: how mirrors treat what they cannot mirror.
    #[derive(Clone, Debug, PartialEq, Eq)]
    "mirroring" => MirroringConfig, RawMirroring, PartialMirroring {
        /// A rule naming a group no mapping mirrors (in this account):
        /// `"report"` drops and reports it; `"expand"` keeps a managed prefix
        /// list of the group's members' private addresses and grants that
        /// (docs/semantics.md, "Expanded references").
        unmanaged_references: UnmanagedReferences {
            default: UnmanagedReferences::Report,
            read: values::unmanaged_references
        },
    }
}

section! {
    /// `[discovery]`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    "discovery" => DiscoveryConfig, RawDiscovery, PartialDiscovery {
        /// Source groups carrying this tag are mirrored into the VPC its value
        /// names; `None` when discovery is disabled (`tag_key = ""`).
        tag_key: Option<String> { default: Some(DEFAULT_DISCOVERY_TAG.to_owned()), read: values::tag_key },
    }
}

section! {
    /// `[events]`: the optional event queue (docs/operations.md, "Events").
    #[derive(Clone, Debug, PartialEq, Eq)]
    "events" => EventsConfig, RawEvents, PartialEvents {
        /// The SQS queue an EventBridge rule feeds with EC2's events; `None`:
        /// no events, periodic passes only.
        queue_url: Option<String> { optional, read: values::endpoint_url },
        /// An SQS-compatible endpoint; `None`: `[aws] endpoint_url` (so the
        /// emulator serves both), else AWS's own.
        endpoint_url: Option<String> { optional, read: values::endpoint_url },
    }
}

section! {
    /// One `[[mirror]]` entry.
    #[derive(Clone, Debug, PartialEq, Eq)]
    "mirror" => MirrorConfig, RawMirror, PartialMirror {
        /// Source group, by id or name (the file's key is `source_group`).
        source("source_group"): SourceRef { required, read: values::source },
        /// Target VPC.
        vpc: VpcId { required, read: values::vpc },
        /// Mirror name; default the source group's name.
        name: Option<String> { optional, read: values::mirror_name },
        /// ClassicLink member instances (Classic sources only).
        link_instances: bool { default: true, read: Checker::boolean },
        /// Per-mapping override of `daemon.mode`.
        mode: Option<Mode> { optional, read: Checker::mode },
        /// Adopt an existing untagged VPC group of the same name.
        adopt: bool { default: false, read: Checker::boolean },
        /// Enable ClassicLink on the VPC if it is off.
        enable_classiclink: bool { default: false, read: Checker::boolean },
        /// The account (a name of `[accounts]`) the source group lives in;
        /// `None`: the `[aws]` account.
        source_account: Option<String> { optional, read: accounts::account_name },
        /// The account (a name of `[accounts]`) of the target VPC; `None`:
        /// the `[aws]` account.
        target_account: Option<String> { optional, read: accounts::account_name },
        /// Per-mapping override of `mirroring.unmanaged_references`.
        unmanaged_references: Option<UnmanagedReferences> { optional, read: values::unmanaged_references },
    }
}

section! {
    /// One `[accounts.NAME]`: another account (or region) the daemon reaches
    /// (docs/migrating-vpc-to-vpc.md).
    #[derive(Clone, Debug, PartialEq, Eq)]
    "accounts" => AccountConfig, RawAccount, PartialAccount {
        /// The region of this account's EC2 client.
        region: String { required, read: values::region },
        /// The role to assume (`arn:aws:iam::<account>:role/<name>`); `None`:
        /// the default credential chain, as `[aws]`.
        role_arn: Option<String> { optional, read: accounts::role_arn },
        /// The `sts:ExternalId` the role's trust policy asks for.
        external_id: Option<String> { optional, read: accounts::external_id },
        /// The `RoleSessionName` (CloudTrail shows it).
        session_name: String { default: DEFAULT_SESSION_NAME.to_owned(), read: accounts::session_name },
        /// An endpoint for EC2 and STS, e.g. the emulator; `None`: `[aws]
        /// endpoint_url` when set, else AWS's own.
        endpoint_url: Option<String> { optional, read: values::endpoint_url },
    }
}
