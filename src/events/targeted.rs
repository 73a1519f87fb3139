//! The targeted observation: describe only what is [`Dirty`], merge it into
//! the last complete snapshot, and hand the planner the whole picture — so a
//! reference to another mirror still translates and every safety rule
//! applies exactly as after a full observation (a failed describe marks its
//! part incomplete, and an incomplete snapshot plans nothing destructive).
//!
//! The calls, each chunked by [`MAX_FILTER_VALUES`] ids:
//!
//! 1. the dirty groups by id, and the mirrors of the dirty groups by their
//!    ownership tag's value (a mirror the last pass created is found too);
//! 2. by name, the mirror names of dirty sources that no known group has in
//!    their VPC (a new source's mirror-to-be; none in steady state);
//! 3. the dirty instances by id, and the members of sources that just became
//!    managed (both pending and running only);
//! 4. the links of those instances and of the members of dirty Classic
//!    sources;
//! 5. the ClassicLink flags of target VPCs the snapshot does not know yet;
//! 6. when some mapping expands unmanaged references, the expansion lists and
//!    members, whole, as a full observation reads them.
//!
//! A group the by-id describe does not return is gone; a dirty instance not
//! returned is no longer pending or running (or gone). Then the same rules
//! as a full observation prune what no longer matters: instances of no
//! managed Classic source, links of neither such an instance nor a mirror.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use crate::config::{Config, SourceRef};
use crate::ec2::{Ec2, Ec2Error, GroupFilter, InstanceFilter, LinkFilter};
use crate::model::{GroupId, InstanceId, InstanceState, OWNERSHIP_TAG, SecurityGroup, Snapshot, SnapshotPart, Vpc};
use crate::observe::{MAX_FILTER_VALUES, Observation, ObserveError};

use super::dirty::Dirty;

const OBSERVED_STATES: [InstanceState; 2] = [InstanceState::Pending, InstanceState::Running];

fn chunks<T: Clone>(items: &BTreeSet<T>) -> Vec<Vec<T>> {
    let items: Vec<T> = items.iter().cloned().collect();
    items.chunks(MAX_FILTER_VALUES).map(<[T]>::to_vec).collect()
}

/// One describe per filter, concurrently; all results or the first error.
async fn groups(ec2: &dyn Ec2, filters: Vec<GroupFilter>) -> Result<Vec<SecurityGroup>, Ec2Error> {
    let results = join_all(filters.iter().map(|f| ec2.describe_security_groups(f))).await;
    let mut out = Vec::new();
    for result in results {
        out.extend(result?);
    }
    Ok(out)
}

fn fail(obs: &mut Observation, part: SnapshotPart, source: Ec2Error) {
    obs.snapshot.incomplete.insert(part);
    obs.errors.push(ObserveError { part, source });
}

/// True when `config` names `group` as a source, or it carries the discovery tag.
fn is_source(config: &Config, group: &SecurityGroup) -> bool {
    let named = config.mirrors.iter().any(|m| match &m.source {
        SourceRef::Id(id) => *id == group.id,
        SourceRef::Name(name) => group.is_classic() && *name == group.name,
    });
    named || config.discovery.tag_key.as_ref().is_some_and(|key| group.tags.contains_key(key))
}

/// The managed Classic sources of a snapshot, as the planner resolves them.
fn classic_sources(config: &Config, snapshot: &Snapshot) -> BTreeSet<GroupId> {
    crate::mapping::resolve(config, &snapshot.source_groups)
        .candidates
        .into_iter()
        .filter(|c| c.source.is_classic())
        .map(|c| c.source.id.clone())
        .collect()
}

/// Observes what is dirty and merges it into `base`, the last complete
/// snapshot. Never fails as a whole: failed calls mark their part
/// incomplete and are returned with the merged snapshot.
pub async fn observe_targeted(ec2: &dyn Ec2, config: &Config, base: &Snapshot, dirty: &Dirty) -> Observation {
    let mut obs = Observation { snapshot: base.clone(), errors: Vec::new() };
    let base_sources = classic_sources(config, base);

    // 1. The dirty groups, and the mirrors of dirty groups.
    let by_id: Vec<GroupFilter> = chunks(&dirty.groups)
        .into_iter()
        .map(|group_ids| GroupFilter { group_ids, ..GroupFilter::default() })
        .collect();
    let by_owner: Vec<GroupFilter> = chunks(&dirty.groups)
        .into_iter()
        .map(|ids| GroupFilter {
            tags: BTreeMap::from([(OWNERSHIP_TAG.to_owned(), ids.iter().map(ToString::to_string).collect())]),
            ..GroupFilter::default()
        })
        .collect();
    let (found, mirrors) = futures::join!(groups(ec2, by_id), groups(ec2, by_owner));
    match found {
        Ok(found) => {
            let found: BTreeMap<GroupId, SecurityGroup> = found.into_iter().map(|g| (g.id.clone(), g)).collect();
            for id in &dirty.groups {
                let snap = &mut obs.snapshot;
                let Some(group) = found.get(id) else {
                    snap.source_groups.remove(id);
                    snap.vpc_groups.remove(id);
                    continue;
                };
                if is_source(config, group) {
                    snap.source_groups.insert(id.clone(), group.clone());
                } else {
                    snap.source_groups.remove(id);
                }
                let known = base.vpc_groups.contains_key(id);
                if group.vpc_id.is_some() && (known || group.tags.contains_key(OWNERSHIP_TAG)) {
                    snap.vpc_groups.insert(id.clone(), group.clone());
                } else {
                    snap.vpc_groups.remove(id);
                }
            }
        }
        Err(error) => {
            obs.snapshot.incomplete.insert(SnapshotPart::VpcGroups);
            fail(&mut obs, SnapshotPart::SourceGroups, error);
        }
    }
    match mirrors {
        Ok(mirrors) => {
            let mirrors = mirrors.into_iter().filter(|g| g.vpc_id.is_some());
            obs.snapshot.vpc_groups.extend(mirrors.map(|g| (g.id.clone(), g)));
        }
        Err(error) => fail(&mut obs, SnapshotPart::VpcGroups, error),
    }

    // 2. Mirror names of dirty sources that no known group has in its VPC.
    // (source, VPC, mirror name) of every managed pair, as the planner resolves them.
    let candidates: Vec<(GroupId, crate::model::VpcId, String)> =
        crate::mapping::resolve(config, &obs.snapshot.source_groups)
            .candidates
            .into_iter()
            .map(|c| (c.source.id.clone(), c.vpc, c.name))
            .collect();
    let known: BTreeSet<(&crate::model::VpcId, &str)> =
        obs.snapshot.vpc_groups.values().filter_map(|g| Some((g.vpc_id.as_ref()?, g.name.as_str()))).collect();
    let mut wanted: BTreeMap<crate::model::VpcId, BTreeSet<String>> = BTreeMap::new();
    for (_, vpc, name) in candidates.iter().filter(|(source, _, _)| dirty.groups.contains(source)) {
        if !known.contains(&(vpc, name.as_str())) {
            wanted.entry(vpc.clone()).or_default().insert(name.clone());
        }
    }
    if !wanted.is_empty() {
        let names: BTreeSet<String> = wanted.values().flatten().cloned().collect();
        let vpc_ids: Vec<_> = wanted.keys().cloned().collect();
        let filters = chunks(&names)
            .into_iter()
            .map(|group_names| GroupFilter { group_names, vpc_ids: vpc_ids.clone(), ..GroupFilter::default() })
            .collect();
        match groups(ec2, filters).await {
            Ok(found) => {
                let is_wanted = |g: &SecurityGroup| {
                    g.vpc_id.as_ref().and_then(|v| wanted.get(v)).is_some_and(|names| names.contains(&g.name))
                };
                obs.snapshot.vpc_groups.extend(found.into_iter().filter(is_wanted).map(|g| (g.id.clone(), g)));
            }
            Err(error) => fail(&mut obs, SnapshotPart::VpcGroups, error),
        }
    }

    // 3. Dirty instances, and the members of sources that just became managed.
    let sources = classic_sources(config, &obs.snapshot);
    let new_sources: BTreeSet<GroupId> = sources.difference(&base_sources).cloned().collect();
    let by_instance = chunks(&dirty.instances).into_iter().map(|instance_ids| InstanceFilter {
        instance_ids,
        states: OBSERVED_STATES.to_vec(),
        ..InstanceFilter::default()
    });
    let by_member = chunks(&new_sources).into_iter().map(|group_ids| InstanceFilter {
        group_ids,
        states: OBSERVED_STATES.to_vec(),
        ..InstanceFilter::default()
    });
    let filters: Vec<InstanceFilter> = by_instance.chain(by_member).collect();
    let results = join_all(filters.iter().map(|f| ec2.describe_instances(f))).await;
    let mut seen: BTreeSet<InstanceId> = BTreeSet::new();
    let mut instances_ok = true;
    for result in results {
        match result {
            Ok(found) => {
                for instance in found {
                    seen.insert(instance.id.clone());
                    if instance.groups.iter().any(|g| sources.contains(g)) {
                        obs.snapshot.instances.insert(instance.id.clone(), instance);
                    }
                }
            }
            Err(error) => {
                instances_ok = false;
                fail(&mut obs, SnapshotPart::Instances, error);
            }
        }
    }
    if instances_ok {
        for id in dirty.instances.iter().filter(|i| !seen.contains(*i)) {
            obs.snapshot.instances.remove(id);
        }
    }
    obs.snapshot.instances.retain(|_, i| i.groups.iter().any(|g| sources.contains(g)));

    // 4. Links of the instances looked at, and of the dirty sources' members.
    let uses_classiclink = !sources.is_empty();
    let mut link_ids: BTreeSet<InstanceId> = dirty.instances.clone();
    link_ids.extend(seen);
    link_ids.extend(
        obs.snapshot
            .instances
            .values()
            .filter(|i| i.groups.iter().any(|g| dirty.groups.contains(g)))
            .map(|i| i.id.clone()),
    );
    if uses_classiclink && !link_ids.is_empty() {
        let filters: Vec<LinkFilter> = chunks(&link_ids)
            .into_iter()
            .map(|instance_ids| LinkFilter { instance_ids, ..LinkFilter::default() })
            .collect();
        let results = join_all(filters.iter().map(|f| ec2.describe_classic_link_instances(f))).await;
        let mut found = Vec::new();
        let mut ok = true;
        for result in results {
            match result {
                Ok(links) => found.extend(links),
                Err(error) => {
                    ok = false;
                    fail(&mut obs, SnapshotPart::Links, error);
                }
            }
        }
        if ok {
            for id in &link_ids {
                obs.snapshot.links.remove(id);
            }
            obs.snapshot.links.extend(found.into_iter().map(|l| (l.instance_id.clone(), l)));
        }
    }
    let snap = &mut obs.snapshot;
    let ours: BTreeSet<GroupId> =
        snap.vpc_groups.values().filter(|g| g.mirrored_from().is_some()).map(|g| g.id.clone()).collect();
    let instances = &snap.instances;
    snap.links.retain(|id, l| instances.contains_key(id) || l.groups.iter().any(|g| ours.contains(g)));

    // 5. Target VPCs the snapshot has not seen yet.
    let missing: Vec<_> = candidates
        .iter()
        .map(|(_, vpc, _)| vpc.clone())
        .filter(|v| !obs.snapshot.vpcs.contains_key(v))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        let flags = if uses_classiclink {
            ec2.describe_vpc_classic_link(&missing).await
        } else {
            ec2.describe_vpcs(&missing)
                .await
                .map(|ids| ids.into_iter().map(|id| Vpc { id, classic_link_enabled: false }).collect())
        };
        match flags {
            Ok(found) => obs.snapshot.vpcs.extend(found.into_iter().map(|v| (v.id.clone(), v))),
            Err(error) => fail(&mut obs, SnapshotPart::Vpcs, error),
        }
    }
    // A prefix list that a source of another account references and the
    // last full pass did not describe (a rule just added): the lists are
    // read again whole (one call per such source account, and one in the
    // target; observe/prefix_lists.rs), else nothing.
    if crate::observe::unknown_source_prefix_lists(config, &obs.snapshot) {
        for error in crate::observe::observe_source_prefix_lists(ec2, config, &mut obs.snapshot).await {
            fail(&mut obs, SnapshotPart::PrefixLists, error);
        }
    }
    // Expansion lists and members are read again whole (a few calls): a
    // member that started is what a targeted pass is for, and a list the
    // last pass created must be known, or it would be created again.
    if config.any_expands() {
        obs.snapshot.expansion_lists.clear();
        obs.snapshot.members.clear();
        for error in crate::observe::observe_expansions(ec2, config, &mut obs.snapshot).await {
            fail(&mut obs, SnapshotPart::Expansions, error);
        }
    }
    // A changed source may reference a list the last snapshot has no size
    // of: that one is described (none when every list named is known).
    for error in crate::observe::observe_list_sizes(ec2, config, &mut obs.snapshot).await {
        fail(&mut obs, SnapshotPart::ListSizes, error);
    }
    obs
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::ec2::Operation;
    use crate::emulator::{CidrSource, Emulator, EmulatorOptions, GenerateSpec, IpPermission, RunInstances};
    use crate::events::dirty::touched;
    use crate::execute::OutcomeKind;
    use crate::execute::{ExecuteOptions, execute};
    use crate::model::DEFAULT_DISCOVERY_TAG;
    use crate::observe::observe;
    use crate::plan::{Memory, plan};

    const DESCRIBES: [Operation; 5] = [
        Operation::DescribeSecurityGroups,
        Operation::DescribeInstances,
        Operation::DescribeClassicLinkInstances,
        Operation::DescribeVpcClassicLink,
        Operation::DescribeVpcs,
    ];

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// Eight Classic groups, half carrying the discovery tag, 20 instances,
    /// one VPC; converged.
    async fn world() -> (Emulator, Config) {
        let estate = GenerateSpec {
            classic_groups: 8,
            rules_per_group: 3,
            cross_reference_fraction: 0.3,
            instances: 20,
            stopped_fraction: 0.2,
            vpcs: 1,
            discovery_fraction: 0.5,
            seed: 11,
            ..GenerateSpec::default()
        }
        .estate();
        let emu = Emulator::from_estate(&estate, EmulatorOptions::default()).expect("the estate loads");
        let mut config = Config::with_region("us-east-1");
        config.safety.orphan_grace = Duration::ZERO;
        let report = crate::reconcile::apply(&emu, &config, 5, &now, &CancellationToken::new()).await;
        assert!(report.converged);
        (emu, config)
    }

    async fn full(emu: &Emulator, config: &Config) -> Snapshot {
        let observation = observe(emu, config).await;
        assert!(observation.errors.is_empty(), "{:?}", observation.errors);
        observation.snapshot
    }

    /// The targeted observation of `dirty` on `base` equals a full
    /// observation now; returns the describe requests it cost.
    async fn same_as_full(emu: &Emulator, config: &Config, base: &Snapshot, dirty: &Dirty) -> u64 {
        emu.reset_counters();
        let targeted = observe_targeted(emu, config, base, dirty).await;
        let counters = emu.counters();
        let cost = DESCRIBES.iter().map(|op| counters.requests(*op)).sum();
        assert!(targeted.errors.is_empty(), "{:?}", targeted.errors);
        assert_eq!(targeted.snapshot, full(emu, config).await);
        cost
    }

    fn managed_classic(base: &Snapshot) -> Vec<GroupId> {
        base.source_groups.values().filter(|g| g.is_classic()).map(|g| g.id.clone()).collect()
    }

    fn groups(ids: &[&GroupId]) -> Dirty {
        Dirty { groups: ids.iter().map(|g| (*g).clone()).collect(), ..Dirty::default() }
    }

    #[tokio::test]
    async fn a_rule_added_to_a_source_costs_a_handful_of_describes_and_matches_a_full_observation() {
        let (emu, config) = world().await;
        let base = full(&emu, &config).await;
        let source = managed_classic(&base)[0].clone();
        let rule = IpPermission {
            ip_protocol: "tcp".into(),
            from_port: Some(6379),
            to_port: Some(6379),
            ip_ranges: vec![CidrSource { cidr: "10.9.0.0/16".into(), description: None }],
            ..IpPermission::default()
        };
        emu.authorize_permissions(&source, &[rule]).await.expect("authorize");
        let blind = observe_targeted(&emu, &config, &base, &Dirty::default()).await;
        assert_eq!(blind.snapshot, base, "nothing dirty: nothing described, the base unchanged");
        assert_ne!(blind.snapshot, full(&emu, &config).await, "the change is seen only through the dirty set");
        let cost = same_as_full(&emu, &config, &base, &groups(&[&source])).await;
        // By id, mirrors by tag, the links of the source's members.
        assert!(cost <= 3, "a targeted pass for one group cost {cost} describes");
    }

    #[tokio::test]
    async fn a_new_instance_and_a_stopped_one_match_a_full_observation() {
        let (emu, config) = world().await;
        let base = full(&emu, &config).await;
        let source = managed_classic(&base)[0].clone();
        let launched = emu.run_instances(&RunInstances::classic([source])).await.expect("run");
        let stopped = base.instances.keys().next().expect("an instance").clone();
        emu.stop_instances(std::slice::from_ref(&stopped)).await.expect("stop");
        let dirty = Dirty { instances: launched.into_iter().chain([stopped]).collect(), ..Dirty::default() };
        let cost = same_as_full(&emu, &config, &base, &dirty).await;
        assert!(cost <= 2, "{cost}");
    }

    #[tokio::test]
    async fn a_group_that_gets_the_discovery_tag_becomes_a_source_with_its_members() {
        let (emu, config) = world().await;
        let base = full(&emu, &config).await;
        // Ids are counters (`sg-00000001`, …): the first unmanaged Classic group.
        let untagged = (1..=64u32)
            .filter_map(|n| GroupId::try_new(format!("sg-{n:08x}")).ok())
            .find(|id| {
                emu.peek_group(id).is_some_and(|g| g.is_classic() && g.name != "default")
                    && !base.source_groups.contains_key(id)
            })
            .expect("an unmanaged Classic group");
        let vpc = base.vpcs.keys().next().expect("a VPC").to_string();
        let tags = BTreeMap::from([(DEFAULT_DISCOVERY_TAG.to_owned(), vpc)]);
        emu.tag_groups(std::slice::from_ref(&untagged), &tags).await.expect("tag");
        let members = full(&emu, &config).await.instances.values().filter(|i| i.groups.contains(&untagged)).count();
        same_as_full(&emu, &config, &base, &groups(&[&untagged])).await;
        assert!(!base.source_groups.contains_key(&untagged) && members > 0, "a new source with members");
    }

    #[tokio::test]
    async fn drift_on_a_mirror_matches_a_full_observation() {
        let (emu, config) = world().await;
        let base = full(&emu, &config).await;
        let mirror = base
            .vpc_groups
            .values()
            .find(|g| g.mirrored_from().is_some() && !g.ingress.is_empty())
            .expect("a mirror with rules");
        let grant = mirror.ingress.first().expect("a grant").clone();
        emu.revoke_ingress(&mirror.id, &[grant]).await.expect("revoke");
        same_as_full(&emu, &config, &base, &groups(&[&mirror.id])).await;
    }

    #[tokio::test]
    async fn the_writes_of_a_pass_are_seen_again_through_what_they_touched() {
        let (emu, config) = world().await;
        let base = full(&emu, &config).await;
        let source = managed_classic(&base)[1].clone();
        let rule = IpPermission {
            ip_protocol: "udp".into(),
            from_port: Some(53),
            to_port: Some(53),
            ip_ranges: vec![CidrSource { cidr: "10.8.0.0/16".into(), description: None }],
            ..IpPermission::default()
        };
        emu.authorize_permissions(&source, &[rule]).await.expect("authorize");
        emu.run_instances(&RunInstances::classic([source.clone()])).await.expect("run");
        // A full pass: observe, plan, execute. Its snapshot predates its writes.
        let before = full(&emu, &config).await;
        let (planned, _) = plan(&config, &before, &Memory::default(), now());
        assert!(planned.executable().count() >= 2, "an authorize and an attach");
        let report = execute(&emu, &planned, &ExecuteOptions::default(), &CancellationToken::new()).await;
        assert_eq!(report.count(OutcomeKind::Failed), 0);
        let blind = observe_targeted(&emu, &config, &before, &Dirty::default()).await;
        assert_ne!(blind.snapshot, full(&emu, &config).await, "the pass's own snapshot is stale after its writes");
        let stale = touched(&planned);
        same_as_full(&emu, &config, &before, &stale).await;
    }

    /// One change a human (or another tool) could make, with the ids its
    /// event names.
    #[derive(Clone, Debug)]
    enum Change {
        AddRule(usize, u16),
        RemoveRule(usize, u16),
        Launch(usize),
        Stop(usize),
        Terminate(usize),
        Start(usize),
        Discover(usize),
        Undiscover(usize),
        MirrorDrift(usize),
        DaemonPass,
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        prop_oneof![
            (0..16usize, 1000..2000u16).prop_map(|(g, p)| Change::AddRule(g, p)),
            (0..16usize).prop_map(|g| Change::RemoveRule(g, 0)),
            (0..16usize).prop_map(Change::Launch),
            (0..32usize).prop_map(Change::Stop),
            (0..32usize).prop_map(Change::Terminate),
            (0..32usize).prop_map(Change::Start),
            (0..16usize).prop_map(Change::Discover),
            (0..16usize).prop_map(Change::Undiscover),
            (0..16usize).prop_map(Change::MirrorDrift),
            Just(Change::DaemonPass),
        ]
    }

    /// Applies `change`; what its events would mark dirty (a daemon pass:
    /// what its plan wrote).
    async fn apply(emu: &Emulator, config: &Config, base: &Snapshot, change: &Change) -> Dirty {
        let classic: Vec<GroupId> = (1..=16u32)
            .filter_map(|n| GroupId::try_new(format!("sg-{n:08x}")).ok())
            .filter(|g| emu.peek_group(g).is_some_and(|g| g.is_classic() && g.name != "default"))
            .collect();
        let instances: Vec<InstanceId> =
            (1..=40u32).filter_map(|n| InstanceId::try_new(format!("i-{n:08x}")).ok()).collect();
        let pick = |list: &[GroupId], i: usize| list.get(i % list.len().max(1)).cloned();
        let mut dirty = Dirty::default();
        match change {
            Change::AddRule(g, port) | Change::RemoveRule(g, port) if !classic.is_empty() => {
                let group = pick(&classic, *g).expect("a group");
                let rule = IpPermission {
                    ip_protocol: "tcp".into(),
                    from_port: Some(i32::from(*port)),
                    to_port: Some(i32::from(*port)),
                    ip_ranges: vec![CidrSource { cidr: "10.7.0.0/16".into(), description: None }],
                    ..IpPermission::default()
                };
                let done = match change {
                    Change::AddRule(..) => emu.authorize_permissions(&group, &[rule]).await.is_ok(),
                    _ => {
                        let first = emu.peek_group(&group).and_then(|g| g.ingress.first().cloned());
                        match first {
                            Some(grant) => Ec2::revoke_ingress(emu, &group, &[grant]).await.is_ok(),
                            None => false,
                        }
                    }
                };
                if done {
                    dirty.groups.insert(group);
                }
            }
            Change::Launch(g) if !classic.is_empty() => {
                let group = pick(&classic, *g).expect("a group");
                if let Ok(ids) = emu.run_instances(&RunInstances::classic([group])).await {
                    dirty.instances.extend(ids);
                }
            }
            Change::Stop(i) | Change::Terminate(i) | Change::Start(i) => {
                let id = instances[i % instances.len()].clone();
                let ids = std::slice::from_ref(&id);
                let done = match change {
                    Change::Stop(_) => emu.stop_instances(ids).await.is_ok(),
                    Change::Terminate(_) => emu.terminate_instances(ids).await.is_ok(),
                    _ => emu.start_instances(ids).await.is_ok(),
                };
                if done {
                    dirty.instances.insert(id);
                }
            }
            Change::Discover(g) | Change::Undiscover(g) if !classic.is_empty() => {
                let group = pick(&classic, *g).expect("a group");
                let vpc = base.vpcs.keys().next().expect("a VPC").to_string();
                let done = match change {
                    Change::Discover(_) => {
                        emu.tag_groups(
                            std::slice::from_ref(&group),
                            &BTreeMap::from([(DEFAULT_DISCOVERY_TAG.to_owned(), vpc)]),
                        )
                        .await
                    }
                    _ => {
                        emu.untag_groups(std::slice::from_ref(&group), &[(DEFAULT_DISCOVERY_TAG.to_owned(), None)])
                            .await
                    }
                };
                if done.is_ok() {
                    dirty.groups.insert(group);
                }
            }
            Change::MirrorDrift(m) => {
                let mirrors: Vec<&SecurityGroup> = base.vpc_groups.values().filter(|g| !g.ingress.is_empty()).collect();
                if let Some(mirror) = mirrors.get(m % mirrors.len().max(1))
                    && let Some(grant) = mirror.ingress.first()
                    && Ec2::revoke_ingress(emu, &mirror.id, std::slice::from_ref(grant)).await.is_ok()
                {
                    dirty.groups.insert(mirror.id.clone());
                }
            }
            Change::DaemonPass => {
                let (planned, _) = plan(config, base, &Memory::default(), now());
                execute(emu, &planned, &ExecuteOptions::default(), &CancellationToken::new()).await;
                dirty = touched(&planned);
            }
            _ => {}
        }
        dirty
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..proptest::prelude::ProptestConfig::default() })]

        /// Whatever changes happen, describing what their events name (and
        /// what the daemon's own passes wrote) and merging it into the last
        /// snapshot gives what a full observation sees.
        #[test]
        fn targeted_observation_after_any_changes_equals_a_full_one(changes in proptest::collection::vec(change(), 1..8)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            runtime.block_on(async {
                let (emu, config) = world().await;
                let mut snapshot = full(&emu, &config).await;
                for change in &changes {
                    let dirty = apply(&emu, &config, &snapshot, change).await;
                    let targeted = observe_targeted(&emu, &config, &snapshot, &dirty).await;
                    assert!(targeted.errors.is_empty());
                    assert_eq!(targeted.snapshot, full(&emu, &config).await, "after {change:?} in {changes:?}");
                    snapshot = targeted.snapshot;
                }
            });
        }
    }
}
