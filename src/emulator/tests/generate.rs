//! The synthetic estate generator.

use std::collections::BTreeSet;
use std::time::Instant;

use super::*;
use crate::emulator::{Estate, GenerateSpec};
use crate::model::DEFAULT_DISCOVERY_TAG;

fn spec() -> GenerateSpec {
    GenerateSpec {
        classic_groups: 50,
        rules_per_group: 20,
        cross_reference_fraction: 0.25,
        instances: 400,
        stopped_fraction: 0.1,
        vpcs: 2,
        discovery_fraction: 0.5,
        seed: 42,
        ..GenerateSpec::default()
    }
}

#[test]
fn the_same_spec_generates_the_same_estate_and_another_seed_another() {
    assert_eq!(spec().estate(), spec().estate());
    assert_ne!(spec().estate(), GenerateSpec { seed: 43, ..spec() }.estate());
}

#[test]
fn generated_estates_have_the_requested_shape() {
    let estate: Estate = spec().estate();
    assert_eq!(estate.vpcs.len(), 2);
    assert!(estate.vpcs.iter().all(|v| v.classic_link));
    assert_eq!(estate.groups.len(), 50);
    assert!(estate.groups.iter().all(|g| g.rules.len() == 20 && g.vpc.is_none()));
    let rules: Vec<_> = estate.groups.iter().flat_map(|g| &g.rules).collect();
    let cross = rules.iter().filter(|r| r.from_group.is_some()).count();
    assert!((150..=350).contains(&cross), "about a quarter of 1000 rules reference groups, got {cross}");
    for group in &estate.groups {
        assert!(group.rules.iter().all(|r| r.from_group.as_deref() != Some(group.name.as_str())));
    }
    let tagged = estate.groups.iter().filter(|g| g.tags.contains_key(DEFAULT_DISCOVERY_TAG)).count();
    assert!((10..=40).contains(&tagged), "about half carry the discovery tag, got {tagged}");
    assert_eq!(estate.instances.len(), 400);
    for instance in &estate.instances {
        let distinct: BTreeSet<_> = instance.groups.iter().collect();
        assert!((1..=3).contains(&distinct.len()) && distinct.len() == instance.groups.len());
    }
}

#[tokio::test]
async fn a_generated_estate_loads() {
    let emu = Emulator::from_estate(&spec().estate(), EmulatorOptions::default()).unwrap();
    let stats = emu.stats();
    assert_eq!(stats.vpcs, 2);
    assert_eq!(stats.groups, 1 + 2 + 50, "Classic default, two VPC defaults, the generated groups");
    assert_eq!(stats.grants, 3 + 2 + 50 * 20);
    assert_eq!(stats.instances, 400);
    let vpc = GenerateSpec::vpc_id(1);
    assert!(emu.peek_vpc(&vpc).unwrap().classic_link_enabled);
    assert!(emu.group_id(None, &GenerateSpec::group_name(49)).is_some());
}

/// The benchmark size loads whole and pages correctly. How fast is a
/// benchmark's business (docs/BENCHMARKS.md), not a test's.
#[tokio::test]
async fn generator_builds_the_benchmark_estate_and_describes_page_through_it() {
    use crate::ec2::{Ec2, GroupFilter, InstanceFilter, Operation};

    let start = Instant::now();
    let estate = GenerateSpec::large().estate();
    let generated = start.elapsed();
    let emu = Emulator::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let loaded = start.elapsed();
    let stats = emu.stats();
    println!("generated in {generated:?}, loaded by {loaded:?}: {stats:?}");
    assert_eq!(stats.instances, 50_000);
    assert_eq!(stats.grants, 3 + 4 + 5000 * 100);

    let start = Instant::now();
    let all = emu.describe_instances(&InstanceFilter::default()).await.unwrap();
    let groups: Vec<GroupId> = (0..200).map(|g| emu.group_id(None, &GenerateSpec::group_name(g)).unwrap()).collect();
    let some =
        emu.describe_instances(&InstanceFilter { group_ids: groups.clone(), ..Default::default() }).await.unwrap();
    let described =
        emu.describe_security_groups(&GroupFilter { group_ids: groups, ..Default::default() }).await.unwrap();
    let every_group = emu.describe_security_groups(&GroupFilter::default()).await.unwrap();
    println!(
        "described {} instances, {} of 200 groups, {} + {} groups in {:?} ({} DescribeInstances pages)",
        all.len(),
        some.len(),
        described.len(),
        every_group.len(),
        start.elapsed(),
        emu.counters().requests(Operation::DescribeInstances)
    );
    assert_eq!(all.len(), 50_000);
    assert_eq!(every_group.len(), stats.groups);
    assert_eq!(
        emu.counters().requests(Operation::DescribeInstances) as usize,
        50_000_usize.div_ceil(1000) + some.len().div_ceil(1000)
    );
}

/// The benchmark runner seeds the `emulator` process by saving a generated
/// estate as TOML and passing it to `--estate`: the file must give the same
/// world as the estate itself.
#[tokio::test]
async fn a_generated_estate_saved_as_toml_loads_into_the_same_world() {
    use crate::ec2::{Ec2, GroupFilter, InstanceFilter, LinkFilter};

    let estate = spec().estate();
    let text = estate.to_toml();
    let reread = Estate::from_toml(&text).expect("the saved estate parses");
    assert_eq!(reread, estate);

    let direct = Emulator::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let from_file = Emulator::from_estate(&reread, EmulatorOptions::default()).unwrap();
    assert_eq!(direct.stats(), from_file.stats());
    let groups = |emu: Emulator| async move { emu.describe_security_groups(&GroupFilter::default()).await.unwrap() };
    assert_eq!(groups(direct.clone()).await, groups(from_file.clone()).await);
    let instances = |emu: Emulator| async move { emu.describe_instances(&InstanceFilter::default()).await.unwrap() };
    assert_eq!(instances(direct.clone()).await, instances(from_file.clone()).await);
    let links =
        |emu: Emulator| async move { emu.describe_classic_link_instances(&LinkFilter::default()).await.unwrap() };
    assert_eq!(links(direct.clone()).await, links(from_file.clone()).await);
    assert_eq!(direct.vpc_ids(), from_file.vpc_ids());
}

#[test]
fn oversized_groups_get_their_own_rule_count_and_none_are_drawn_by_default() {
    let plain = spec().estate();
    assert!(plain.groups.iter().all(|g| g.rules.len() == 20));
    let oversized = GenerateSpec { oversized_fraction: 0.5, oversized_rules: 30, ..spec() }.estate();
    let big = oversized.groups.iter().filter(|g| g.rules.len() == 30).count();
    assert!(big > 0 && big < 50, "{big} of 50 oversized");
    assert!(oversized.groups.iter().all(|g| g.rules.len() == 20 || g.rules.len() == 30));
}
