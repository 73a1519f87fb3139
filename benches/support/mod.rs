//! Shared by `benches/planner.rs` and the measuring examples (`plan_rss`,
//! `steady_economy`): the generated estates of issue 6 and the in-process
//! world they are observed from. Each target uses a different subset.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use classiclink_mirror::config::Config;
use classiclink_mirror::emulator::{Emulator, EmulatorOptions, GenerateSpec, Limits};
use classiclink_mirror::model::Snapshot;
use classiclink_mirror::observe::observe;
use classiclink_mirror::reconcile::apply;
use tokio_util::sync::CancellationToken;

/// Grants per Classic group: EC2-Classic's quota (100), and the VPC quota
/// raised to match so every grant is mirrored (EC2 allows up to 1000).
pub const GRANTS: usize = 100;

/// Groups beyond the VPC quota (issue 15): this fraction of the groups has
/// [`OVERSIZED_GRANTS`] grants, so its mirror spills into an overflow group.
pub const OVERSIZED_FRACTION: f64 = 0.05;

/// Grants of an oversized group (the emulator's Classic quota is raised to
/// match; the VPC quota stays at [`GRANTS`]).
pub const OVERSIZED_GRANTS: usize = 150;

/// Instances per Classic group.
pub const INSTANCES_PER_GROUP: usize = 10;

/// `groups` Classic groups × [`GRANTS`] grants (20% referencing another
/// group), `10 × groups` running instances in 1–3 groups each, one target VPC
/// with ClassicLink on, the discovery tag on every group.
#[must_use]
pub fn spec(groups: usize) -> GenerateSpec {
    GenerateSpec {
        classic_groups: groups,
        rules_per_group: GRANTS,
        cross_reference_fraction: 0.2,
        instances: groups * INSTANCES_PER_GROUP,
        vpcs: 1,
        discovery_fraction: 1.0,
        seed: 6,
        oversized_fraction: OVERSIZED_FRACTION,
        oversized_rules: OVERSIZED_GRANTS,
        ..GenerateSpec::default()
    }
}

/// Groups left unmanaged in the expanding estate: the discovery tag is on
/// all but this fraction, so the references to them (20% of the grants
/// reference some group) are expanded into prefix lists of their members.
/// At 0.5% (at least 5 groups), about one source in ten references one; `BENCH_UNMANAGED`
/// (a fraction) overrides it, e.g. 0.02 for one source in three.
pub const UNMANAGED_FRACTION: f64 = 0.005;

/// [`spec`] with [`UNMANAGED_FRACTION`] of the groups unmanaged: with
/// [`expanding_config`], their references become expansion lists (about
/// 20 members each, so lists of 40 entries that weigh 40 rules: every
/// mirror referencing one spills into an overflow group, as each source
/// holds exactly the quota of grants).
#[must_use]
pub fn expanding_spec(groups: usize) -> GenerateSpec {
    let unmanaged = std::env::var("BENCH_UNMANAGED")
        .map_or(UNMANAGED_FRACTION, |v| v.parse().expect("BENCH_UNMANAGED: a fraction"));
    // Small estates (the smoke run's 50 groups) get about 5 unmanaged
    // groups, so that they expand something too.
    let unmanaged = unmanaged.max(5.0 / groups.max(1) as f64);
    GenerateSpec { discovery_fraction: 1.0 - unmanaged, ..spec(groups) }
}

/// [`config`] with `unmanaged_references = "expand"`, and no cap on the
/// unlinks of a pass: the overflow groups the lists open are created after
/// the mirrors' links, so `converge` relinks thousands of instances, which
/// the default cap (50 a pass) would spread over a hundred passes.
#[must_use]
pub fn expanding_config() -> Config {
    let mut config = config();
    config.mirroring.unmanaged_references = classiclink_mirror::config::UnmanagedReferences::Expand;
    config.safety.max_unlinks_per_cycle = 1_000_000;
    config
}

/// The default config (discovery on), with the rules quota at [`GRANTS`].
#[must_use]
pub fn config() -> Config {
    let mut config = Config::with_region("us-east-1");
    config.limits.rules_per_group = GRANTS;
    config
}

/// The in-process world of `spec`, no faults, no throttling. Loaded inside
/// `runtime` so the world's clock is the runtime's paused clock (loaded
/// outside, every group would be "not yet visible" to the paused runtime).
#[must_use]
pub fn emulator(runtime: &tokio::runtime::Runtime, spec: &GenerateSpec) -> Emulator {
    let _clock = runtime.enter();
    let options = EmulatorOptions {
        limits: Limits { rules_per_group: GRANTS, classic_rules_per_group: OVERSIZED_GRANTS },
        ..EmulatorOptions::default()
    };
    Emulator::from_estate(&spec.estate(), options).expect("the generated estate loads")
}

/// A single-threaded runtime with a paused clock: no wall time is spent on
/// the executor's sleeps.
#[must_use]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a tokio runtime")
}

/// The planner's `now`.
#[must_use]
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// One complete observation of `emu`.
pub async fn snapshot(emu: &Emulator, config: &Config) -> Snapshot {
    let observation = observe(emu, config).await;
    assert!(observation.errors.is_empty(), "observe failed: {:?}", observation.errors);
    observation.snapshot
}

/// Mirrors everything with `apply` (passes until converged).
pub async fn converge(emu: &Emulator, config: &Config) {
    let report = apply(emu, config, 5, &now, &CancellationToken::new()).await;
    assert!(report.converged, "not converged after {} passes: {}", report.passes.len(), {
        let last = report.passes.last().expect("a pass ran");
        format!(
            "{} actions, first {:?}; failed {:?}; warnings {:?}",
            last.plan.actions.len(),
            last.plan.actions.iter().take(3).map(|a| &a.action).collect::<Vec<_>>(),
            last.report.failures().take(2).map(|(_, e)| e.to_string()).collect::<Vec<_>>(),
            last.plan.warnings.iter().take(3).collect::<Vec<_>>()
        )
    });
}

/// Sizes from `BENCH_GROUPS` (comma-separated), else `default`.
#[must_use]
pub fn sizes(default: &[usize]) -> Vec<usize> {
    match std::env::var("BENCH_GROUPS") {
        Ok(list) => list.split(',').map(|s| s.trim().parse().expect("BENCH_GROUPS: numbers")).collect(),
        Err(_) => default.to_vec(),
    }
}
