//! Observe: the first stage of a pass. Describes, through the [`Ec2`] port,
//! everything the planner needs into one [`Snapshot`], with the fewest calls,
//! and marks a part incomplete when any page of any call feeding it failed.
//! It gathers; it never decides.
//!
//! The calls of one pass (each paginated by 1,000; a filter takes at most
//! [`MAX_FILTER_VALUES`] values, so long lists are split into chunks):
//!
//! - source groups: by config id, by config name (chunked), by discovery tag;
//! - VPC groups: every group with the ownership tag, then, by name and target
//!   VPC, only the mirror names that describe did not find (none in steady
//!   state);
//! - instances: the pending and running members of the managed Classic
//!   groups, filtered by group id while those fit in one chunk, else by state
//!   alone and kept here when they are members;
//! - every ClassicLink link of the account, and the target VPCs' ClassicLink
//!   flags (`DescribeVpcs` instead when no Classic group is managed);
//! - only when some mapping expands unmanaged references: the prefix lists
//!   carrying the expansion tag with their entries, and the running members
//!   of the groups they expand (instances and network interfaces by group);
//! - only when a VPC source of the target's own account references prefix
//!   lists: their max entries (`list_sizes`), by id;
//! - only for VPC sources in another account than their target that
//!   reference prefix lists: those lists in the source's account, and the
//!   target region's AWS-managed lists they map to (`observe/prefix_lists.rs`).

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use crate::config::{Config, SourceRef};
use crate::ec2::{Ec2, Ec2Error, GroupFilter, InstanceFilter, InterfaceFilter, LinkFilter, PrefixListFilter};
use crate::model::{
    EXPANSION_TAG, ExpansionList, GroupId, Instance, InstanceState, OWNERSHIP_TAG, Peer, PrefixListId, SecurityGroup,
    Snapshot, SnapshotPart, Vpc, VpcId,
};

mod prefix_lists;

pub(crate) use prefix_lists::{observe_source_prefix_lists, unknown_source_prefix_lists};

/// EC2 accepts at most this many values in one filter.
pub const MAX_FILTER_VALUES: usize = 200;

/// A describe call that failed; its part of the snapshot is incomplete.
#[derive(Debug, Clone, thiserror::Error)]
#[error("observing {}: {source}", part.as_str())]
pub struct ObserveError {
    /// The part the call was for.
    pub part: SnapshotPart,
    /// The EC2 error.
    #[source]
    pub source: Ec2Error,
}

impl ObserveError {
    /// Stable metric label (the EC2 error kind).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.source.kind()
    }
}

/// A snapshot and the errors that made parts of it incomplete.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// What was seen; `snapshot.incomplete` lists the parts with errors.
    pub snapshot: Snapshot,
    /// The failed calls.
    pub errors: Vec<ObserveError>,
}

impl Observation {
    fn fail(&mut self, part: SnapshotPart, source: Ec2Error) {
        self.snapshot.incomplete.insert(part);
        self.errors.push(ObserveError { part, source });
    }
}

fn chunks<T: Clone>(items: &BTreeSet<T>) -> Vec<Vec<T>> {
    let items: Vec<T> = items.iter().cloned().collect();
    items.chunks(MAX_FILTER_VALUES).map(<[T]>::to_vec).collect()
}

/// Runs one describe per chunk of filter values, concurrently.
async fn describe_groups_chunked<F>(
    ec2: &dyn Ec2,
    values: Vec<Vec<F>>,
    make: impl Fn(Vec<F>) -> GroupFilter,
) -> Vec<Result<Vec<SecurityGroup>, Ec2Error>> {
    let filters: Vec<GroupFilter> = values.into_iter().map(make).collect();
    join_all(filters.iter().map(|f| ec2.describe_security_groups(f))).await
}

/// How observe asks for the instances of the managed Classic groups. Both
/// give the same instances; they differ in cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstanceQuery {
    /// One `DescribeInstances` per chunk of [`MAX_FILTER_VALUES`] group ids
    /// (`instance.group-id`). Reads only members, but an instance in groups of
    /// several chunks is read once per chunk, and each chunk is a call.
    ByGroup,
    /// One paginated `DescribeInstances` filtered by state only, members kept
    /// here: ⌈pending and running instances of the account / 1000⌉ calls,
    /// whatever the number of groups.
    ByState,
}

impl InstanceQuery {
    /// The group-id filter while the managed groups fit in one chunk (one
    /// call that reads members only, cheaper on a large account); the state
    /// filter beyond, where the chunks would multiply the calls.
    fn for_groups(count: usize) -> Self {
        if count > MAX_FILTER_VALUES { Self::ByState } else { Self::ByGroup }
    }
}

/// Choices that change what observe costs, never what it sees. `observe`
/// uses the default; tests force each choice to prove the snapshot is the same.
#[derive(Clone, Copy, Debug, Default)]
struct Strategy {
    /// `None`: [`InstanceQuery::for_groups`].
    instances: Option<InstanceQuery>,
    /// Look up every mirror name, including those the ownership-tag describe
    /// already found (what happens anyway when that describe fails).
    every_name: bool,
}

/// The instance states the snapshot holds: running instances are linked (and
/// counted by the shrink guard), pending ones are left for the next cycle;
/// stopped ones have no link to keep.
const OBSERVED_STATES: [InstanceState; 2] = [InstanceState::Pending, InstanceState::Running];

/// The pending and running instances that are members of `groups`, one
/// result per call.
async fn describe_member_instances(
    ec2: &dyn Ec2,
    groups: &BTreeSet<GroupId>,
    query: InstanceQuery,
) -> Vec<Result<Vec<Instance>, Ec2Error>> {
    if groups.is_empty() {
        return Vec::new();
    }
    match query {
        InstanceQuery::ByGroup => {
            let filters: Vec<InstanceFilter> = chunks(groups)
                .into_iter()
                .map(|group_ids| InstanceFilter {
                    group_ids,
                    states: OBSERVED_STATES.to_vec(),
                    ..InstanceFilter::default()
                })
                .collect();
            join_all(filters.iter().map(|f| ec2.describe_instances(f))).await
        }
        InstanceQuery::ByState => {
            let filter = InstanceFilter { states: OBSERVED_STATES.to_vec(), ..InstanceFilter::default() };
            let members = ec2
                .describe_instances(&filter)
                .await
                .map(|all| all.into_iter().filter(|i| i.groups.iter().any(|g| groups.contains(g))).collect());
            vec![members]
        }
    }
}

/// The VPC groups: every group carrying the ownership tag, then, by name, the
/// `wanted` (VPC, mirror name) pairs that describe did not find. Names are
/// unique within a VPC, so a tagged group with the pair's name is the group
/// the name lookup would return: in steady state every mirror is found by
/// its tag and the name lookup does not run. It waits for the tag describe;
/// if that fails, every wanted name is looked up, as if none were found, so
/// the planner still recognises each mirror by its name (and does not plan
/// to create it again) while the part is marked incomplete. Name results are
/// kept for their wanted pairs only, so the answer is the same whichever
/// names the tag found. One result per call, the tag describe first.
async fn describe_vpc_groups(
    ec2: &dyn Ec2,
    wanted: &BTreeMap<VpcId, BTreeSet<String>>,
    every_name: bool,
) -> Vec<Result<Vec<SecurityGroup>, Ec2Error>> {
    let mirror_filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.to_owned()], ..GroupFilter::default() };
    let tagged = ec2.describe_security_groups(&mirror_filter).await;
    let found: BTreeSet<(&VpcId, &str)> = match &tagged {
        Ok(groups) if !every_name => {
            groups.iter().filter_map(|g| Some((g.vpc_id.as_ref()?, g.name.as_str()))).collect()
        }
        _ => BTreeSet::new(),
    };
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut vpcs: BTreeSet<VpcId> = BTreeSet::new();
    for (vpc, wanted_names) in wanted {
        for name in wanted_names.iter().filter(|n| !found.contains(&(vpc, n.as_str()))) {
            names.insert(name.clone());
            vpcs.insert(vpc.clone());
        }
    }
    let vpc_ids: Vec<VpcId> = vpcs.into_iter().collect();
    let by_name = describe_groups_chunked(ec2, chunks(&names), |group_names| GroupFilter {
        group_names,
        vpc_ids: vpc_ids.clone(),
        ..GroupFilter::default()
    })
    .await;
    // The filter asks for every missing name in every VPC missing one; keep
    // the pairs asked for.
    let is_wanted =
        |g: &SecurityGroup| g.vpc_id.as_ref().and_then(|v| wanted.get(v)).is_some_and(|names| names.contains(&g.name));
    std::iter::once(tagged)
        .chain(by_name.into_iter().map(|result| result.map(|groups| groups.into_iter().filter(is_wanted).collect())))
        .collect()
}

/// Observes everything `config` manages. Never fails as a whole: failed calls
/// mark their part incomplete and are returned with the snapshot.
pub async fn observe(ec2: &dyn Ec2, config: &Config) -> Observation {
    observe_with(ec2, config, Strategy::default(), &|_| {}).await
}

/// [`observe`], calling `report` with each failed call as soon as the calls
/// feeding its part have answered (the source groups first, then each of the
/// other parts as it ends), so a long observation shows its failures while
/// it runs. Every error reported is also in the returned [`Observation`].
pub async fn observe_reporting(ec2: &dyn Ec2, config: &Config, report: &(dyn Fn(&ObserveError) + Sync)) -> Observation {
    observe_with(ec2, config, Strategy::default(), report).await
}

/// Reports the failed results of `part`.
fn report_failures<T>(part: SnapshotPart, results: &[Result<T, Ec2Error>], report: &(dyn Fn(&ObserveError) + Sync)) {
    for source in results.iter().filter_map(|r| r.as_ref().err()) {
        report(&ObserveError { part, source: source.clone() });
    }
}

async fn observe_with(
    ec2: &dyn Ec2,
    config: &Config,
    strategy: Strategy,
    report: &(dyn Fn(&ObserveError) + Sync),
) -> Observation {
    let mut obs = Observation::default();

    // Source groups: by id, by name, and by discovery tag (three filters,
    // because EC2 ANDs different filters).
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    for mapping in &config.mirrors {
        match &mapping.source {
            SourceRef::Id(id) => ids.insert(id.clone()),
            SourceRef::Name(name) => names.insert(name.clone()),
        };
    }
    let (by_id, by_name, by_tag) = futures::join!(
        describe_groups_chunked(ec2, chunks(&ids), |group_ids| GroupFilter { group_ids, ..GroupFilter::default() }),
        describe_groups_chunked(ec2, chunks(&names), |group_names| GroupFilter {
            group_names,
            ..GroupFilter::default()
        }),
        async {
            match &config.discovery.tag_key {
                Some(key) => {
                    vec![
                        ec2.describe_security_groups(&GroupFilter {
                            tag_keys: vec![key.clone()],
                            ..GroupFilter::default()
                        })
                        .await,
                    ]
                }
                None => Vec::new(),
            }
        }
    );
    // A name resolves to a Classic group only (names are unique there, not
    // across VPCs): the describe by name also returns every VPC group of that
    // name (each VPC's `default`, our own mirrors), and none of them is a
    // source.
    let by_name = by_name
        .into_iter()
        .map(|result| result.map(|groups| groups.into_iter().filter(SecurityGroup::is_classic).collect()));
    let sources: Vec<Result<Vec<SecurityGroup>, Ec2Error>> = by_id.into_iter().chain(by_name).chain(by_tag).collect();
    report_failures(SnapshotPart::SourceGroups, &sources, report);
    for result in sources {
        match result {
            Ok(groups) => obs.snapshot.source_groups.extend(groups.into_iter().map(|g| (g.id.clone(), g))),
            Err(error) => obs.fail(SnapshotPart::SourceGroups, error),
        }
    }

    // What the sources tell us, resolved exactly as the planner resolves them
    // (`mapping::resolve`): target VPCs, the Classic groups whose instances
    // matter, and the name each mirror has in its VPC. A source named
    // `default` (mirror name "default") maps onto its VPC's `default` group
    // (docs/architecture.md, "Mirrors"), which is looked up like any other
    // mirror name; no other mapping needs a VPC's `default` group.
    let mut vpcs: BTreeSet<VpcId> = config.mirrors.iter().map(|mapping| mapping.vpc.clone()).collect();
    let mut classic_sources: BTreeSet<GroupId> = BTreeSet::new();
    let mut mirror_names: BTreeMap<VpcId, BTreeSet<String>> = BTreeMap::new();
    for candidate in crate::mapping::resolve(config, &obs.snapshot.source_groups).candidates {
        if candidate.source.is_classic() {
            classic_sources.insert(candidate.source.id.clone());
        }
        vpcs.insert(candidate.vpc.clone());
        mirror_names.entry(candidate.vpc).or_default().insert(candidate.name);
    }

    // ClassicLink matters only when a Classic group is managed. VPC-to-VPC
    // mirroring (docs/semantics.md, "VPC source mode") must not depend on the ClassicLink APIs, which
    // are gone from today's AWS (and from other EC2 emulators): it sees no
    // links and learns which target VPCs exist from DescribeVpcs.
    let uses_classiclink = !classic_sources.is_empty();
    let instance_query = strategy.instances.unwrap_or_else(|| InstanceQuery::for_groups(classic_sources.len()));

    // VPC side, instances, links and VPC flags are independent of each other.
    let vpc_list: Vec<VpcId> = vpcs.iter().cloned().collect();
    let all_links = LinkFilter::default();
    let (vpc_groups, instances, links, vpc_flags) = futures::join!(
        async {
            let results = describe_vpc_groups(ec2, &mirror_names, strategy.every_name).await;
            report_failures(SnapshotPart::VpcGroups, &results, report);
            results
        },
        async {
            let results = describe_member_instances(ec2, &classic_sources, instance_query).await;
            report_failures(SnapshotPart::Instances, &results, report);
            results
        },
        // Every link of the account in one paginated call: cheaper than
        // filtering by thousands of instance ids, and it shows foreign links.
        async {
            let result =
                if uses_classiclink { ec2.describe_classic_link_instances(&all_links).await } else { Ok(Vec::new()) };
            report_failures(SnapshotPart::Links, std::slice::from_ref(&result), report);
            result
        },
        async {
            let result = async {
                if vpc_list.is_empty() {
                    Ok(Vec::new())
                } else if uses_classiclink {
                    ec2.describe_vpc_classic_link(&vpc_list).await
                } else {
                    let found = ec2.describe_vpcs(&vpc_list).await?;
                    Ok(found.into_iter().map(|id| Vpc { id, classic_link_enabled: false }).collect())
                }
            }
            .await;
            report_failures(SnapshotPart::Vpcs, std::slice::from_ref(&result), report);
            result
        }
    );

    for result in vpc_groups {
        match result {
            Ok(groups) => obs
                .snapshot
                .vpc_groups
                .extend(groups.into_iter().filter(|g| g.vpc_id.is_some()).map(|g| (g.id.clone(), g))),
            Err(error) => obs.fail(SnapshotPart::VpcGroups, error),
        }
    }
    for result in instances {
        match result {
            Ok(found) => obs.snapshot.instances.extend(found.into_iter().map(|i| (i.id.clone(), i))),
            Err(error) => obs.fail(SnapshotPart::Instances, error),
        }
    }
    match links {
        Ok(found) => {
            let ours: BTreeSet<&GroupId> =
                obs.snapshot.vpc_groups.values().filter(|g| g.mirrored_from().is_some()).map(|g| &g.id).collect();
            let relevant: Vec<_> = found
                .into_iter()
                .filter(|l| {
                    obs.snapshot.instances.contains_key(&l.instance_id) || l.groups.iter().any(|g| ours.contains(g))
                })
                .collect();
            obs.snapshot.links.extend(relevant.into_iter().map(|l| (l.instance_id.clone(), l)));
        }
        Err(error) => obs.fail(SnapshotPart::Links, error),
    }
    match vpc_flags {
        Ok(found) => obs.snapshot.vpcs.extend(found.into_iter().map(|v| (v.id.clone(), v))),
        Err(error) => obs.fail(SnapshotPart::Vpcs, error),
    }
    // Sources in other accounts: the lists they reference (observe/prefix_lists.rs).
    for error in observe_source_prefix_lists(ec2, config, &mut obs.snapshot).await {
        report(&ObserveError { part: SnapshotPart::PrefixLists, source: error.clone() });
        obs.fail(SnapshotPart::PrefixLists, error);
    }
    if config.any_expands() {
        let errors = observe_expansions(ec2, config, &mut obs.snapshot).await;
        for error in errors {
            report(&ObserveError { part: SnapshotPart::Expansions, source: error.clone() });
            obs.fail(SnapshotPart::Expansions, error);
        }
    }
    for error in observe_list_sizes(ec2, config, &mut obs.snapshot).await {
        report(&ObserveError { part: SnapshotPart::ListSizes, source: error.clone() });
        obs.fail(SnapshotPart::ListSizes, error);
    }
    obs
}

/// The `MaxEntries` of the prefix lists that managed VPC sources of the
/// target's own account reference (ingress and egress; a source of another
/// account is [`observe_source_prefix_lists`]'s) and that are not our expansion lists, so
/// the planner weighs their grants as EC2 counts them (a list weighs its
/// `MaxEntries` against the rules-per-group quota). One describe per chunk
/// of ids, on the target's port, filtered by `prefix-list-id` (an id the
/// target cannot see is simply absent: its grant is weighed as a whole
/// group). Lists whose size the snapshot has already are not described
/// again (a targeted pass reads only the lists a changed source names
/// newly); none when no source references a list. Returns the errors; any
/// makes the part incomplete.
pub(crate) async fn observe_list_sizes(ec2: &dyn Ec2, config: &Config, snapshot: &mut Snapshot) -> Vec<Ec2Error> {
    let mut referenced: BTreeSet<PrefixListId> = BTreeSet::new();
    for candidate in crate::mapping::resolve(config, &snapshot.source_groups).candidates {
        // A source of another account: its lists are described in its own
        // account (`prefix_lists`).
        if candidate.entry.is_some_and(|entry| entry.source_account != entry.target_account) {
            continue;
        }
        for grant in candidate.source.ingress.iter().chain(&candidate.source.egress) {
            if let Peer::PrefixList(id) = &grant.key.peer
                && !snapshot.expansion_lists.contains_key(id)
                && !snapshot.list_sizes.contains_key(id)
            {
                referenced.insert(id.clone());
            }
        }
    }
    let filters: Vec<PrefixListFilter> = chunks(&referenced)
        .into_iter()
        .map(|prefix_list_ids| PrefixListFilter { prefix_list_ids, ..PrefixListFilter::default() })
        .collect();
    let mut errors = Vec::new();
    for result in join_all(filters.iter().map(|f| ec2.describe_prefix_lists(f))).await {
        match result {
            Ok(lists) => snapshot
                .list_sizes
                .extend(lists.into_iter().filter(|l| referenced.contains(&l.id)).map(|l| (l.id, l.max_entries))),
            Err(error) => errors.push(error),
        }
    }
    errors
}

/// The groups an expanding mapping's source references that no mapping
/// manages (same account only: another account's members cannot be read).
/// Sorted, for observe and the targeted pass alike.
#[must_use]
pub fn expanded_groups(config: &Config, sources: &BTreeMap<GroupId, SecurityGroup>) -> BTreeSet<GroupId> {
    let candidates = crate::mapping::resolve(config, sources).candidates;
    let managed: BTreeSet<&GroupId> = candidates.iter().map(|c| &c.source.id).collect();
    let mut referenced = BTreeSet::new();
    for candidate in candidates.iter().filter(|c| config.expands(c.entry)) {
        for grant in candidate.source.ingress.iter().chain(&candidate.source.egress) {
            if let Peer::Group { group, owner: None } = &grant.key.peer
                && !managed.contains(group)
            {
                referenced.insert(group.clone());
            }
        }
    }
    referenced
}

/// The expansion part of the snapshot: every prefix list carrying
/// [`EXPANSION_TAG`] with its entries, and the running members' private
/// addresses of each group [`expanded_groups`] names (Classic and VPC
/// instances by `instance.group-id`, other interfaces by `group-id`).
/// Returns the errors; any makes the part incomplete.
pub(crate) async fn observe_expansions(ec2: &dyn Ec2, config: &Config, snapshot: &mut Snapshot) -> Vec<Ec2Error> {
    let mut errors = Vec::new();
    let referenced = expanded_groups(config, &snapshot.source_groups);
    let list_filter = PrefixListFilter { tag_keys: vec![EXPANSION_TAG.to_owned()], ..PrefixListFilter::default() };
    let instance_filters: Vec<InstanceFilter> = chunks(&referenced)
        .into_iter()
        .map(|group_ids| InstanceFilter {
            group_ids,
            states: vec![InstanceState::Running],
            ..InstanceFilter::default()
        })
        .collect();
    let interface_filters: Vec<InterfaceFilter> = chunks(&referenced)
        .into_iter()
        .map(|group_ids| InterfaceFilter { group_ids, ..InterfaceFilter::default() })
        .collect();
    let (lists, instances, interfaces) = futures::join!(
        ec2.describe_prefix_lists(&list_filter),
        join_all(instance_filters.iter().map(|f| ec2.describe_instances(f))),
        join_all(interface_filters.iter().map(|f| ec2.describe_network_interfaces(f))),
    );
    match lists {
        Ok(lists) => {
            let entries = join_all(lists.iter().map(|list| ec2.prefix_list_entries(&list.id))).await;
            for (list, entries) in lists.into_iter().zip(entries) {
                match entries {
                    Ok(entries) => {
                        snapshot.expansion_lists.insert(list.id.clone(), ExpansionList { list, entries });
                    }
                    Err(error) => errors.push(error),
                }
            }
        }
        Err(error) => errors.push(error),
    }
    for group in &referenced {
        snapshot.members.insert(group.clone(), BTreeSet::new());
    }
    for result in instances {
        match result {
            Ok(found) => {
                for instance in found.into_iter().filter(|i| i.state == InstanceState::Running) {
                    let Some(ip) = instance.private_ip else { continue };
                    for group in instance.groups.iter().filter(|g| referenced.contains(*g)) {
                        snapshot.members.entry(group.clone()).or_default().insert(ip);
                    }
                }
            }
            Err(error) => errors.push(error),
        }
    }
    for result in interfaces {
        match result {
            Ok(found) => {
                for interface in found.into_iter().filter(|i| i.status == "in-use") {
                    let Some(ip) = interface.private_ip else { continue };
                    for group in interface.groups.iter().filter(|g| referenced.contains(*g)) {
                        snapshot.members.entry(group.clone()).or_default().insert(ip);
                    }
                }
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use async_trait::async_trait;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::MirrorConfig;
    use crate::ec2::{CreateGroup, Operation, Page};
    use crate::emulator::estate::EstateInstance;
    use crate::emulator::{Emulator, EmulatorOptions, ErrorInjection, Estate, Faults, GenerateSpec, NewGroup, NewVpc};
    use crate::model::{DEFAULT_DISCOVERY_TAG, Grant, InstanceId, Link};
    use crate::plan::Memory;

    /// The describe actions and how many requests (pages) each received.
    fn describes(emu: &Emulator) -> BTreeMap<Operation, u64> {
        let counters = emu.counters();
        [
            Operation::DescribeSecurityGroups,
            Operation::DescribeInstances,
            Operation::DescribeClassicLinkInstances,
            Operation::DescribeVpcClassicLink,
            Operation::DescribeVpcs,
        ]
        .into_iter()
        .map(|op| (op, counters.requests(op)))
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    /// Requests of one paginated describe answering `items` (1,000 a page;
    /// an empty answer is one request too).
    fn pages(items: usize) -> u64 {
        items.div_ceil(1000).max(1) as u64
    }

    /// Pending and running instances of the estate, Classic or not.
    fn live(estate: &Estate) -> usize {
        estate.instances.iter().filter(|i| OBSERVED_STATES.contains(&i.state)).map(|i| i.count).sum()
    }

    /// `groups` generated Classic groups (a `tagged` fraction carrying the
    /// discovery tag), `instances` Classic instances in 1–3 of them with a
    /// fifth stopped, plus 7 pending Classic instances in the first group, a
    /// Classic instance in the Classic `default` group only and 3 running
    /// instances in the VPC: every kind the state-only describe returns and
    /// the member filter must drop.
    fn estate(groups: usize, tagged: f64, instances: usize) -> Estate {
        let mut estate = GenerateSpec {
            classic_groups: groups,
            rules_per_group: 3,
            cross_reference_fraction: 0.3,
            instances,
            stopped_fraction: 0.2,
            vpcs: 1,
            discovery_fraction: tagged,
            seed: 7,
            ..GenerateSpec::default()
        }
        .estate();
        let first = estate.groups[0].name.clone();
        estate.instances.extend([
            EstateInstance {
                groups: vec![first],
                state: InstanceState::Pending,
                count: 7,
                ..EstateInstance::default()
            },
            EstateInstance { groups: vec!["default".into()], ..EstateInstance::default() },
            EstateInstance { vpc: Some(estate.vpcs[0].name.clone()), count: 3, ..EstateInstance::default() },
        ]);
        estate
    }

    /// Managed groups carrying the discovery tag, so the estate needs no
    /// `[[mirror]]` entry; the orphan grace is zero so `apply` converges.
    fn config() -> Config {
        let mut config = Config::with_region("us-east-1");
        config.safety.orphan_grace = Duration::ZERO;
        config
    }

    fn load(estate: &Estate) -> Emulator {
        Emulator::from_estate(estate, EmulatorOptions::default()).expect("the estate loads")
    }

    fn tagged(estate: &Estate) -> usize {
        estate.groups.iter().filter(|g| g.tags.contains_key(DEFAULT_DISCOVERY_TAG)).count()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    async fn converge(ec2: &dyn Ec2, config: &Config) {
        let report = crate::reconcile::apply(ec2, config, 5, &now, &CancellationToken::new()).await;
        assert!(report.converged, "not converged after {} passes", report.passes.len());
    }

    async fn observed(emu: &Emulator, config: &Config, strategy: Strategy) -> (Snapshot, BTreeMap<Operation, u64>) {
        emu.reset_counters();
        let observation = observe_with(emu, config, strategy, &|_| {}).await;
        assert!(observation.errors.is_empty(), "{:?}", observation.errors);
        assert!(observation.snapshot.is_complete());
        (observation.snapshot, describes(emu))
    }

    const BY_GROUP: Strategy = Strategy { instances: Some(InstanceQuery::ByGroup), every_name: false };
    const BY_STATE: Strategy = Strategy { instances: Some(InstanceQuery::ByState), every_name: false };

    #[tokio::test(start_paused = true)]
    async fn up_to_one_chunk_of_managed_groups_instances_are_described_by_group_id_in_one_call() {
        let estate = estate(MAX_FILTER_VALUES, 1.0, 1500);
        assert_eq!(tagged(&estate), MAX_FILTER_VALUES);
        let emu = load(&estate);
        let config = config();
        let (snapshot, calls) = observed(&emu, &config, Strategy::default()).await;
        // Every group is managed: all live instances are members but the
        // Classic `default` one and the 3 in the VPC.
        let members = live(&estate) - 4;
        assert_eq!(snapshot.instances.len(), members);
        assert_eq!(
            calls,
            BTreeMap::from([
                // Sources by discovery tag; mirrors by ownership tag (none);
                // the 200 mirror names, one chunk.
                (Operation::DescribeSecurityGroups, 3),
                (Operation::DescribeInstances, pages(members)),
                (Operation::DescribeClassicLinkInstances, 1),
                (Operation::DescribeVpcClassicLink, 1),
            ])
        );
        assert!(calls[&Operation::DescribeInstances] > 1, "several pages");

        let (by_state, by_state_calls) = observed(&emu, &config, BY_STATE).await;
        assert_eq!(by_state, snapshot);
        // Reading the whole account costs more here: that is why one chunk
        // keeps the group filter.
        assert_eq!(by_state_calls[&Operation::DescribeInstances], pages(live(&estate)));
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_one_chunk_of_managed_groups_instances_are_described_by_state_and_members_kept() {
        let estate = estate(300, 0.8, 2500);
        let managed = tagged(&estate);
        assert!(managed > MAX_FILTER_VALUES && managed < 300, "{managed} managed groups");
        let emu = load(&estate);
        let config = config();
        let (snapshot, calls) = observed(&emu, &config, Strategy::default()).await;
        assert_eq!(
            calls,
            BTreeMap::from([
                // Sources by tag; mirrors by tag; 2 chunks of mirror names.
                (Operation::DescribeSecurityGroups, 4),
                // Every pending and running instance of the account, once.
                (Operation::DescribeInstances, pages(live(&estate))),
                (Operation::DescribeClassicLinkInstances, 1),
                (Operation::DescribeVpcClassicLink, 1),
            ])
        );
        assert!(calls[&Operation::DescribeInstances] > 1, "several pages");

        // The same instances as filtering by chunks of group ids, which the
        // server answers (instances in groups of both chunks come twice).
        let (by_group, by_group_calls) = observed(&emu, &config, BY_GROUP).await;
        assert_eq!(snapshot, by_group);
        assert!(by_group_calls[&Operation::DescribeInstances] > calls[&Operation::DescribeInstances]);
        let managed: BTreeSet<&GroupId> = snapshot.source_groups.keys().collect();
        assert!(snapshot.instances.values().all(|i| {
            i.vpc_id.is_none()
                && matches!(i.state, InstanceState::Running | InstanceState::Pending)
                && i.groups.iter().any(|g| managed.contains(g))
        }));
        assert_eq!(snapshot.instances.values().filter(|i| i.state == InstanceState::Pending).count(), 7);
        assert!(snapshot.instances.len() < live(&estate) - 4, "members of unmanaged groups only are dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_converged_estate_finds_every_mirror_by_its_tag_and_looks_up_no_name() {
        let estate = estate(300, 0.8, 2500);
        let emu = load(&estate);
        let config = config();
        converge(&emu, &config).await;
        let (snapshot, calls) = observed(&emu, &config, Strategy::default()).await;
        let mirrors = snapshot.vpc_groups.values().filter(|g| g.mirrored_from().is_some()).count();
        assert_eq!(mirrors, tagged(&estate));
        assert_eq!(
            calls,
            BTreeMap::from([
                // Sources by discovery tag, mirrors by ownership tag: no name.
                (Operation::DescribeSecurityGroups, 2),
                (Operation::DescribeInstances, pages(live(&estate))),
                (Operation::DescribeClassicLinkInstances, pages(snapshot.links.len())),
                (Operation::DescribeVpcClassicLink, 1),
            ])
        );
        assert_eq!(emu.counters().mutating_calls(), 0);

        // Looking every name up as well finds nothing more.
        let (every_name, every_name_calls) =
            observed(&emu, &config, Strategy { every_name: true, ..Strategy::default() }).await;
        assert_eq!(every_name, snapshot);
        assert_eq!(every_name_calls[&Operation::DescribeSecurityGroups], 2 + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn only_names_the_tag_did_not_find_are_looked_up_and_only_in_the_vpcs_missing_them() {
        let emu = Emulator::new(EmulatorOptions::default());
        let (a, b) = (
            emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap(),
            emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap(),
        );
        let web = emu.create_group(&NewGroup::classic("web", "Web")).await.unwrap();
        let app = emu.create_group(&NewGroup::classic("app", "App")).await.unwrap();
        // web is mirrored into a already; app is not yet, and b has an
        // unrelated group named "web" and one named "app".
        let web_mirror =
            emu.create_group(&NewGroup::in_vpc(&a, "web", "Web").tag(OWNERSHIP_TAG, web.to_string())).await.unwrap();
        let foreign_web = emu.create_group(&NewGroup::in_vpc(&b, "web", "someone else")).await.unwrap();
        let foreign_app = emu.create_group(&NewGroup::in_vpc(&b, "app", "someone else")).await.unwrap();
        let mut config = config();
        config.discovery.tag_key = None;
        config.mirrors.push(MirrorConfig::new(SourceRef::Id(web.clone()), a.clone()));
        config.mirrors.push(MirrorConfig::new(SourceRef::Id(app.clone()), b.clone()));
        let (snapshot, calls) = observed(&emu, &config, Strategy::default()).await;
        // Sources by id, mirrors by tag, "app" in b.
        assert_eq!(calls[&Operation::DescribeSecurityGroups], 3);
        let vpc_groups: BTreeSet<&GroupId> = snapshot.vpc_groups.keys().collect();
        assert_eq!(vpc_groups, BTreeSet::from([&web_mirror, &foreign_app]));
        assert!(!vpc_groups.contains(&foreign_web), "b's \"web\" is no mirror's name in b");
        // No mapping needs a VPC's `default` group.
        assert!(!vpc_groups.contains(&emu.default_group(Some(&a)).unwrap()));

        let (every_name, _) = observed(&emu, &config, Strategy { every_name: true, ..Strategy::default() }).await;
        assert_eq!(every_name, snapshot);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_named_default_looks_up_the_vpc_default_group_until_it_carries_our_tag() {
        for by_name in [false, true] {
            let emu = Emulator::new(EmulatorOptions::default());
            let vpc = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
            let vpc_default = emu.default_group(Some(&vpc)).unwrap();
            let classic_default = emu.default_group(None).unwrap();
            let mut config = config();
            config.discovery.tag_key = None;
            let source =
                if by_name { SourceRef::Name("default".into()) } else { SourceRef::Id(classic_default.clone()) };
            config.mirrors.push(MirrorConfig::new(source, vpc.clone()));
            let (cold, calls) = observed(&emu, &config, Strategy::default()).await;
            // The describe by name also returns the VPC's own `default`: it is
            // a mirror candidate, never a source.
            assert_eq!(cold.source_groups.keys().collect::<Vec<_>>(), [&classic_default], "by name: {by_name}");
            assert!(cold.vpc_groups.contains_key(&vpc_default));
            // Sources by id or name, mirrors by tag, "default" by name.
            assert_eq!(calls[&Operation::DescribeSecurityGroups], 3);

            converge(&emu, &config).await;
            let (steady, calls) = observed(&emu, &config, Strategy::default()).await;
            assert!(steady.vpc_groups[&vpc_default].mirrored_from().is_some(), "by name: {by_name}");
            assert_eq!(calls[&Operation::DescribeSecurityGroups], 2, "the tagged default group is found by its tag");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_given_by_name_is_the_classic_group_not_its_mirror_of_the_same_name() {
        let estate: Estate = toml::from_str(
            r#"
            [[vpc]]
            name = "target"
            classic_link = true

            [[group]]
            name = "web"
            rules = [{ protocol = "tcp", port = 443, cidr = "0.0.0.0/0" }]
            "#,
        )
        .expect("estate");
        let emu = load(&estate);
        let vpc = emu.vpc_id("target").unwrap();
        let mut config = config();
        config.discovery.tag_key = None;
        config.mirrors.push(MirrorConfig::new(SourceRef::Name("web".into()), vpc));
        converge(&emu, &config).await;
        let (steady, _) = observed(&emu, &config, Strategy::default()).await;
        assert_eq!(steady.source_groups.len(), 1);
        assert!(steady.source_groups.values().all(SecurityGroup::is_classic));
        assert_eq!(steady.vpc_groups.values().filter(|g| g.name == "web").count(), 1, "the mirror is a VPC group");
    }

    /// The emulator, with chosen describes failing before they reach it.
    struct Failing<'a> {
        emu: &'a Emulator,
        groups: fn(&GroupFilter) -> bool,
        instances: bool,
    }

    fn injected(operation: Operation) -> Ec2Error {
        Ec2Error::new(operation, "InternalError", "injected")
    }

    #[async_trait]
    impl Ec2 for Failing<'_> {
        async fn security_groups_page(
            &self,
            filter: &GroupFilter,
            next_token: Option<String>,
        ) -> Result<Page<SecurityGroup>, Ec2Error> {
            if (self.groups)(filter) {
                return Err(injected(Operation::DescribeSecurityGroups));
            }
            self.emu.security_groups_page(filter, next_token).await
        }
        async fn instances_page(
            &self,
            filter: &InstanceFilter,
            next_token: Option<String>,
        ) -> Result<Page<Instance>, Ec2Error> {
            if self.instances {
                return Err(injected(Operation::DescribeInstances));
            }
            self.emu.instances_page(filter, next_token).await
        }
        async fn classic_link_instances_page(
            &self,
            filter: &LinkFilter,
            next_token: Option<String>,
        ) -> Result<Page<Link>, Ec2Error> {
            self.emu.classic_link_instances_page(filter, next_token).await
        }
        async fn vpcs_page(&self, vpc_ids: &[VpcId], next_token: Option<String>) -> Result<Page<VpcId>, Ec2Error> {
            self.emu.vpcs_page(vpc_ids, next_token).await
        }
        async fn vpc_classic_link_request(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
            self.emu.vpc_classic_link_request(vpc_ids).await
        }
        async fn prefix_lists_page(
            &self,
            filter: &crate::ec2::PrefixListFilter,
            next_token: Option<String>,
        ) -> Result<Page<crate::model::PrefixList>, Ec2Error> {
            self.emu.prefix_lists_page(filter, next_token).await
        }
        async fn prefix_list_entries_page(
            &self,
            id: &crate::model::PrefixListId,
            next_token: Option<String>,
        ) -> Result<Page<crate::model::PrefixListEntry>, Ec2Error> {
            self.emu.prefix_list_entries_page(id, next_token).await
        }
        async fn network_interfaces_page(
            &self,
            filter: &crate::ec2::InterfaceFilter,
            next_token: Option<String>,
        ) -> Result<Page<crate::model::NetworkInterface>, Ec2Error> {
            self.emu.network_interfaces_page(filter, next_token).await
        }
        async fn create_prefix_list(
            &self,
            request: &crate::ec2::CreatePrefixList,
        ) -> Result<crate::model::PrefixList, Ec2Error> {
            self.emu.create_prefix_list(request).await
        }
        async fn modify_prefix_list(
            &self,
            request: &crate::ec2::ModifyPrefixList,
        ) -> Result<crate::model::PrefixList, Ec2Error> {
            self.emu.modify_prefix_list(request).await
        }
        async fn delete_prefix_list(&self, id: &crate::model::PrefixListId) -> Result<(), Ec2Error> {
            self.emu.delete_prefix_list(id).await
        }
        async fn create_security_group(&self, request: &CreateGroup) -> Result<GroupId, Ec2Error> {
            self.emu.create_security_group(request).await
        }
        async fn delete_security_group(&self, group_id: &GroupId) -> Result<(), Ec2Error> {
            self.emu.delete_security_group(group_id).await
        }
        async fn authorize_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.authorize_ingress(group_id, grants).await
        }
        async fn revoke_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.revoke_ingress(group_id, grants).await
        }
        async fn authorize_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.authorize_egress(group_id, grants).await
        }
        async fn revoke_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.revoke_egress(group_id, grants).await
        }
        async fn update_ingress_descriptions(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.update_ingress_descriptions(group_id, grants).await
        }
        async fn create_tags(&self, group_id: &GroupId, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
            self.emu.create_tags(group_id, tags).await
        }
        async fn delete_tags(&self, group_id: &GroupId, keys: &[String]) -> Result<(), Ec2Error> {
            self.emu.delete_tags(group_id, keys).await
        }
        async fn attach_classic_link_vpc(
            &self,
            instance_id: &InstanceId,
            vpc_id: &VpcId,
            groups: &[GroupId],
        ) -> Result<(), Ec2Error> {
            self.emu.attach_classic_link_vpc(instance_id, vpc_id, groups).await
        }
        async fn detach_classic_link_vpc(&self, instance_id: &InstanceId, vpc_id: &VpcId) -> Result<(), Ec2Error> {
            self.emu.detach_classic_link_vpc(instance_id, vpc_id).await
        }
        async fn enable_vpc_classic_link(&self, vpc_id: &VpcId) -> Result<(), Ec2Error> {
            self.emu.enable_vpc_classic_link(vpc_id).await
        }
    }

    fn is_ownership_tag_describe(filter: &GroupFilter) -> bool {
        filter.tag_keys == [OWNERSHIP_TAG]
    }

    fn is_mirror_name_lookup(filter: &GroupFilter) -> bool {
        !filter.group_names.is_empty() && !filter.vpc_ids.is_empty()
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_ownership_tag_describe_fails_every_mirror_name_is_looked_up_and_vpc_groups_is_incomplete() {
        let estate = estate(300, 0.8, 2500);
        let emu = load(&estate);
        let config = config();
        converge(&emu, &config).await;
        let (complete, _) = observed(&emu, &config, Strategy::default()).await;

        emu.reset_counters();
        let failing = Failing { emu: &emu, groups: is_ownership_tag_describe, instances: false };
        let observation = observe(&failing, &config).await;
        assert_eq!(observation.snapshot.incomplete, BTreeSet::from([SnapshotPart::VpcGroups]));
        assert_eq!(observation.errors.len(), 1);
        // Sources by tag (1) and the 2 chunks of every mirror name: each
        // mirror is still seen, by its name (it carries our tag), ...
        assert_eq!(emu.counters().requests(Operation::DescribeSecurityGroups), 1 + 2);
        let mut expected = complete.clone();
        expected.incomplete.insert(SnapshotPart::VpcGroups);
        assert_eq!(observation.snapshot, expected);
        // ... so the planner plans no second mirror, and nothing destructive.
        let (plan, _) = crate::plan::plan(&config, &observation.snapshot, &Memory::default(), now());
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    }

    #[tokio::test(start_paused = true)]
    async fn when_a_mirror_name_lookup_fails_vpc_groups_is_incomplete() {
        let estate = estate(300, 0.8, 2500);
        let emu = load(&estate);
        let config = config();
        let failing = Failing { emu: &emu, groups: is_mirror_name_lookup, instances: false };
        let observation = observe(&failing, &config).await;
        assert_eq!(observation.snapshot.incomplete, BTreeSet::from([SnapshotPart::VpcGroups]));
        assert_eq!(observation.errors.len(), 2, "both chunks");
        let (plan, _) = crate::plan::plan(&config, &observation.snapshot, &Memory::default(), now());
        assert!(plan.holds.destructive_held());
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_instance_describe_fails_only_instances_is_incomplete_either_way() {
        for (groups, strategy) in [(MAX_FILTER_VALUES, BY_GROUP), (MAX_FILTER_VALUES, BY_STATE), (300, BY_STATE)] {
            let estate = estate(groups, 1.0, 600);
            let emu = load(&estate);
            let config = config();
            let failing = Failing { emu: &emu, groups: |_| false, instances: true };
            let observation = observe_with(&failing, &config, strategy, &|_| {}).await;
            assert_eq!(observation.snapshot.incomplete, BTreeSet::from([SnapshotPart::Instances]), "{strategy:?}");
            assert!(observation.snapshot.instances.is_empty());
            assert!(observation.errors.iter().all(|e| e.part == SnapshotPart::Instances));

            // The emulator's own injected errors, on every page.
            emu.set_faults(Faults {
                errors: ErrorInjection {
                    per_operation: BTreeMap::from([(Operation::DescribeInstances, 1.0)]),
                    ..ErrorInjection::default()
                },
                ..Faults::none()
            });
            let observation = observe_with(&emu, &config, strategy, &|_| {}).await;
            assert_eq!(observation.snapshot.incomplete, BTreeSet::from([SnapshotPart::Instances]), "{strategy:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_size_of_each_prefix_list_a_vpc_source_references_is_read_in_one_describe() {
        let estate = Estate::from_toml(
            r#"
[[vpc]]
name = "old"
[[vpc]]
name = "new"
id = "vpc-0000bbbb"
[[prefix_list]]
name = "partners"
max_entries = 20
entries = ["198.51.100.0/24"]
[[group]]
name = "api"
vpc = "old"
id = "sg-0000a001"
rules = [{ protocol = "tcp", port = 443, prefix_list = "partners" }]
egress = [{ protocol = "tcp", port = 443, prefix_list = "partners" }]
[[group]]
name = "db"
vpc = "old"
id = "sg-0000a002"
rules = [{ protocol = "tcp", port = 5432, cidr = "10.0.0.0/8" }]
"#,
        )
        .expect("the estate parses");
        let emu = load(&estate);
        let mut config = Config::with_region("us-east-1");
        config.mirrors.push(MirrorConfig::new(
            SourceRef::Id(GroupId::try_new("sg-0000a001").unwrap()),
            VpcId::try_new("vpc-0000bbbb").unwrap(),
        ));
        emu.reset_counters();
        let observation = observe_with(&emu, &config, Strategy::default(), &|_| {}).await;
        assert!(observation.errors.is_empty(), "{:?}", observation.errors);
        let sizes: Vec<u32> = observation.snapshot.list_sizes.values().copied().collect();
        assert_eq!(sizes, vec![20], "{:?}", observation.snapshot.list_sizes);
        assert_eq!(emu.counters().requests(Operation::DescribeManagedPrefixLists), 1);
        // Sizes known already (a targeted pass merges into the last
        // snapshot) are not described again.
        let mut known = observation.snapshot.clone();
        assert!(observe_list_sizes(&emu, &config, &mut known).await.is_empty());
        assert_eq!(emu.counters().requests(Operation::DescribeManagedPrefixLists), 1);
        assert_eq!(known.list_sizes, observation.snapshot.list_sizes);

        // A source that names no list costs no describe.
        let mut config = Config::with_region("us-east-1");
        config.mirrors.push(MirrorConfig::new(
            SourceRef::Id(GroupId::try_new("sg-0000a002").unwrap()),
            VpcId::try_new("vpc-0000bbbb").unwrap(),
        ));
        emu.reset_counters();
        let observation = observe_with(&emu, &config, Strategy::default(), &|_| {}).await;
        assert!(observation.snapshot.list_sizes.is_empty());
        assert_eq!(emu.counters().requests(Operation::DescribeManagedPrefixLists), 0);
    }
}
