//! The benchmark runner of issue 6 (figures 3, 4 and 5): it drives the real
//! `classiclink-mirror` binary — `emulator`, `apply`, `plan`, `run` —
//! against generated estates over HTTP on 127.0.0.1, and measures.
//!
//! Shared by the `bench` example (`scripts/bench`, which prints the tables
//! and the JSON lines for docs/BENCHMARKS.md) and by `tests/it/bench_runner.rs`
//! (the same code at a tiny size through the debug binary, asserting counts,
//! never times).
#![allow(dead_code)]

pub mod fig3;
pub mod fig4;
pub mod fig5;
pub mod procs;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use classiclink_mirror::emulator::{Estate, GenerateSpec};
use classiclink_mirror::model::{DEFAULT_DISCOVERY_TAG, InstanceState};
use serde::Serialize;

/// The VPC rules quota of the emulator (EC2's default): generated groups
/// must fit it, so every grant is mirrored without raising any quota.
pub const VPC_RULES_QUOTA: usize = 60;

/// The shape of a generated estate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// Classic groups, all carrying the discovery tag for the one target VPC.
    pub groups: usize,
    /// Running Classic instances, each in 1–3 of the groups.
    pub instances: usize,
    /// Grants per group, 20% of them referencing another group.
    pub grants: usize,
    /// Generator seed.
    pub seed: u64,
}

impl Shape {
    /// The generator's spec: one ClassicLink-enabled VPC, discovery tag on
    /// every group (so every cross reference is translatable), nothing stopped.
    #[must_use]
    pub fn spec(&self) -> GenerateSpec {
        GenerateSpec {
            classic_groups: self.groups,
            rules_per_group: self.grants,
            cross_reference_fraction: 0.2,
            instances: self.instances,
            stopped_fraction: 0.0,
            vpcs: 1,
            discovery_fraction: 1.0,
            seed: self.seed,
            ..GenerateSpec::default()
        }
    }

    /// Generates the estate and saves it as TOML at `path` (the emulator
    /// process loads it with `--estate`).
    ///
    /// # Errors
    /// The shape does not fit the quotas, or the file cannot be written.
    pub fn write(&self, path: &Path) -> anyhow::Result<Estate> {
        if self.grants > VPC_RULES_QUOTA {
            bail!("{} grants per group do not fit the VPC rules quota of {VPC_RULES_QUOTA}", self.grants);
        }
        let estate = self.spec().estate();
        std::fs::write(path, estate.to_toml()).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(estate)
    }
}

/// The fewest mutating calls that mirror an estate from nothing, counted
/// from the estate file alone (not from the planner): EC2 needs
///
/// - one `CreateSecurityGroup` per managed Classic group (the ownership tag
///   goes in its `TagSpecifications`, so no `CreateTags`);
/// - one `AuthorizeSecurityGroupIngress` per managed group with at least
///   one mirrorable grant (one request carries every grant of a group;
///   generated groups fit the rules quota);
/// - one `AttachClassicLinkVpc` per running Classic instance in at least
///   one managed group (a link carries all its groups at once);
/// - one `EnableVpcClassicLink` per target VPC that has it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Minimum {
    /// `CreateSecurityGroup`.
    pub creates: u64,
    /// `AuthorizeSecurityGroupIngress`.
    pub authorizes: u64,
    /// `AttachClassicLinkVpc`.
    pub attaches: u64,
    /// `EnableVpcClassicLink`.
    pub enables: u64,
}

impl Minimum {
    /// Counts what `estate` needs when Classic groups carrying the default
    /// discovery tag are mirrored (the default mapping file).
    #[must_use]
    pub fn of(estate: &Estate) -> Self {
        let vpc_of =
            |reference: &str| estate.vpcs.iter().find(|v| v.id.as_ref().is_some_and(|id| id.as_str() == reference));
        // Managed: a Classic group whose discovery tag names a known VPC.
        let managed: Vec<_> = estate
            .groups
            .iter()
            .filter(|g| g.vpc.is_none())
            .filter_map(|g| g.tags.get(DEFAULT_DISCOVERY_TAG).and_then(|v| vpc_of(v)).map(|vpc| (g, vpc)))
            .collect();
        let managed_names: BTreeSet<&str> = managed.iter().map(|(g, _)| g.name.as_str()).collect();
        let target_of = |name: &str| managed.iter().find(|(g, _)| g.name == name).map(|(_, vpc)| vpc.name.as_str());
        let authorizes = managed
            .iter()
            .filter(|(g, vpc)| {
                g.rules.iter().any(|r| match &r.from_group {
                    // A reference is mirrorable when its group is mirrored into the same VPC.
                    Some(peer) => target_of(peer) == Some(vpc.name.as_str()),
                    None => r.cidr.as_deref().is_some_and(|c| c.contains('.')),
                })
            })
            .count();
        let attaches: usize = estate
            .instances
            .iter()
            .filter(|i| i.vpc.is_none() && i.state == InstanceState::Running && i.link.is_none())
            .filter(|i| i.groups.iter().any(|g| managed_names.contains(g.as_str())))
            .map(|i| i.count)
            .sum();
        let targets: BTreeSet<&str> = managed.iter().map(|(_, vpc)| vpc.name.as_str()).collect();
        let enables = estate.vpcs.iter().filter(|v| targets.contains(v.name.as_str()) && !v.classic_link).count();
        Self {
            creates: managed.len() as u64,
            authorizes: authorizes as u64,
            attaches: attaches as u64,
            enables: enables as u64,
        }
    }

    /// All of them.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.creates + self.authorizes + self.attaches + self.enables
    }
}

/// The least time a token bucket of `burst` tokens refilling `per_second`
/// (full at the start) allows for `calls` requests: the burst at once, the
/// rest at the refill rate, `max(0, calls − burst) / per_second`.
#[must_use]
pub fn bucket_bound(calls: u64, burst: f64, per_second: f64) -> Duration {
    #[allow(clippy::cast_precision_loss)]
    let over = (calls as f64 - burst.floor()).max(0.0);
    Duration::from_secs_f64(over / per_second)
}

/// The sample at quantile `q` (0–1) of sorted `values`, nearest rank.
#[must_use]
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Seconds with millisecond precision, for JSON.
#[must_use]
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_bound_is_the_burst_then_the_refill() {
        assert_eq!(bucket_bound(3000, 500.0, 50.0), Duration::from_secs(50));
        assert_eq!(bucket_bound(3000, 50.0, 5.0), Duration::from_secs(590));
        assert_eq!(bucket_bound(30, 500.0, 50.0), Duration::ZERO);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=50).map(Duration::from_secs).collect();
        assert_eq!(quantile(&values, 0.5), Duration::from_secs(25));
        assert_eq!(quantile(&values, 0.99), Duration::from_secs(50));
        assert_eq!(quantile(&values, 1.0), Duration::from_secs(50));
    }

    #[test]
    fn the_minimum_counts_groups_grants_and_running_members() {
        let shape = Shape { groups: 20, instances: 70, grants: 10, seed: 1 };
        let minimum = Minimum::of(&shape.spec().estate());
        assert_eq!(minimum, Minimum { creates: 20, authorizes: 20, attaches: 70, enables: 0 });
        assert_eq!(minimum.total(), 110);
        let bare = Shape { grants: 0, ..shape };
        assert_eq!(Minimum::of(&bare.spec().estate()).authorizes, 0);
    }
}
