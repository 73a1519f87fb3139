//! Synthetic estates for benchmarks and scale tests: `N` Classic groups of
//! `R` rules each (a fraction referencing other groups), `I` instances spread
//! over 1–3 groups each, `V` target VPCs with ClassicLink on, optionally
//! discovery tags. Seeded, so the same spec always gives the same estate.
//! The result is an ordinary [`Estate`], loaded with
//! [`Emulator::from_estate`](super::Emulator::from_estate) or saved with
//! [`Estate::to_toml`].

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::model::{DEFAULT_DISCOVERY_TAG, InstanceState, VpcId};

use super::estate::{Estate, EstateGroup, EstateInstance, EstateRule, EstateVpc};

/// The first port of generated rules; rule `j` of a group uses port `FIRST_PORT + j`.
const FIRST_PORT: usize = 1024;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateSpec {
    /// Number of Classic groups (`N`).
    pub classic_groups: usize,
    /// Rules per Classic group (`R`); at most the Classic rules quota (100 by
    /// default) for the estate to load.
    pub rules_per_group: usize,
    /// Fraction (0–1) of rules whose source is another Classic group.
    pub cross_reference_fraction: f64,
    /// Number of Classic instances (`I`), each in 1–3 groups.
    pub instances: usize,
    /// Fraction (0–1) of instances that are stopped rather than running.
    pub stopped_fraction: f64,
    /// Number of target VPCs (`V`), ClassicLink enabled, ids `vpc-00000001`….
    pub vpcs: usize,
    /// Fraction (0–1) of groups carrying the discovery tag, spread round-robin over the VPCs.
    pub discovery_fraction: f64,
    /// The discovery tag key.
    pub discovery_tag: String,
    /// Random seed.
    pub seed: u64,
    /// Fraction (0–1) of groups that get [`Self::oversized_rules`] rules
    /// instead of `rules_per_group`: mirrors beyond the VPC quota, which
    /// spill into overflow groups.
    pub oversized_fraction: f64,
    /// Rules of an oversized group; at most the Classic rules quota.
    pub oversized_rules: usize,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        Self {
            classic_groups: 10,
            rules_per_group: 5,
            cross_reference_fraction: 0.2,
            instances: 20,
            stopped_fraction: 0.0,
            vpcs: 1,
            discovery_fraction: 0.0,
            discovery_tag: DEFAULT_DISCOVERY_TAG.to_owned(),
            seed: 0,
            oversized_fraction: 0.0,
            oversized_rules: 0,
        }
    }
}

impl GenerateSpec {
    /// The benchmark size of docs/BENCHMARKS.md (figure 1): 5,000 groups × 100 rules, 50,000 instances.
    #[must_use]
    pub fn large() -> Self {
        Self { classic_groups: 5000, rules_per_group: 100, instances: 50_000, vpcs: 4, ..Self::default() }
    }

    /// The name of generated Classic group `index`.
    #[must_use]
    pub fn group_name(index: usize) -> String {
        format!("classic-{index:05}")
    }

    /// The id of generated VPC `index`.
    #[must_use]
    pub fn vpc_id(index: usize) -> VpcId {
        VpcId::try_new(format!("vpc-{:08x}", index + 1)).expect("well-formed id")
    }

    /// Generates the estate.
    #[must_use]
    pub fn estate(&self) -> Estate {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let vpcs: Vec<EstateVpc> = (0..self.vpcs)
            .map(|k| EstateVpc {
                name: format!("target-{k}"),
                id: Some(Self::vpc_id(k)),
                cidr: None,
                classic_link: true,
            })
            .collect();
        let names: Vec<String> = (0..self.classic_groups).map(Self::group_name).collect();
        let mut tagged = 0usize;
        let groups = (0..self.classic_groups)
            .map(|g| {
                let mut tags = BTreeMap::new();
                if self.vpcs > 0 && rng.random_bool(self.discovery_fraction.clamp(0.0, 1.0)) {
                    tags.insert(self.discovery_tag.clone(), Self::vpc_id(tagged % self.vpcs).to_string());
                    tagged += 1;
                }
                // Drawn only when asked for, so that other estates stay as they were.
                let oversized =
                    self.oversized_fraction > 0.0 && rng.random_bool(self.oversized_fraction.clamp(0.0, 1.0));
                let count = if oversized { self.oversized_rules } else { self.rules_per_group };
                let rules = (0..count).map(|j| self.rule(&mut rng, &names, g, j)).collect();
                EstateGroup {
                    name: names[g].clone(),
                    vpc: None,
                    id: None,
                    description: Some(format!("Synthetic Classic group {g}")),
                    tags,
                    rules,
                    egress: None,
                }
            })
            .collect();
        let instances = (0..self.instances).map(|_| self.instance(&mut rng, &names)).collect();
        Estate { vpcs, groups, instances, ..Estate::default() }
    }

    fn rule(&self, rng: &mut StdRng, names: &[String], group: usize, j: usize) -> EstateRule {
        let protocol = if j % 5 == 4 { "udp" } else { "tcp" };
        let mut rule = EstateRule {
            protocol: protocol.to_owned(),
            port: Some(i32::try_from(FIRST_PORT + j).unwrap_or(i32::MAX)),
            ..EstateRule::default()
        };
        let cross = names.len() > 1 && rng.random_bool(self.cross_reference_fraction.clamp(0.0, 1.0));
        if cross {
            let mut other = rng.random_range(0..names.len() - 1);
            if other >= group {
                other += 1;
            }
            rule.from_group = Some(names[other].clone());
        } else {
            let host: u32 = rng.random_range(0..(1 << 17));
            rule.cidr = Some(format!("198.{}.{}.{}/32", 18 + (host >> 16), (host >> 8) & 0xff, host & 0xff));
        }
        rule
    }

    fn instance(&self, rng: &mut StdRng, names: &[String]) -> EstateInstance {
        let mut groups = Vec::with_capacity(3);
        if !names.is_empty() {
            let wanted = rng.random_range(1..=3usize).min(names.len());
            while groups.len() < wanted {
                let name = &names[rng.random_range(0..names.len())];
                if !groups.contains(name) {
                    groups.push(name.clone());
                }
            }
        }
        let stopped = rng.random_bool(self.stopped_fraction.clamp(0.0, 1.0));
        EstateInstance {
            groups,
            state: if stopped { InstanceState::Stopped } else { InstanceState::Running },
            ..EstateInstance::default()
        }
    }
}
