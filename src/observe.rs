//! Observe: the first stage of a pass. Describes, through the [`Ec2`] port,
//! everything the planner needs into one [`Snapshot`], with the fewest calls
//! (server-side filters, not full scans where the estate allows), and marks a
//! part incomplete when any of its calls failed. It gathers; it never decides.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use crate::config::{Config, SourceRef};
use crate::ec2::{Ec2, Ec2Error, GroupFilter, InstanceFilter, LinkFilter};
use crate::model::{
    GroupId, InstanceState, OWNERSHIP_TAG, SecurityGroup, Snapshot, SnapshotPart, Vpc, VpcId, mirror_name,
};

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

/// Observes everything `config` manages. Never fails as a whole: failed calls
/// mark their part incomplete and are returned with the snapshot.
pub async fn observe(ec2: &dyn Ec2, config: &Config) -> Observation {
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
    for result in by_id.into_iter().chain(by_name).chain(by_tag) {
        match result {
            Ok(groups) => obs.snapshot.source_groups.extend(groups.into_iter().map(|g| (g.id.clone(), g))),
            Err(error) => obs.fail(SnapshotPart::SourceGroups, error),
        }
    }

    // What the sources tell us: target VPCs, the Classic groups whose
    // instances matter, and the names mirrors will have.
    let sources = &obs.snapshot.source_groups;
    let classic_by_name: BTreeMap<&str, &SecurityGroup> =
        sources.values().filter(|g| g.is_classic()).map(|g| (g.name.as_str(), g)).collect();
    let mut vpcs: BTreeSet<VpcId> = BTreeSet::new();
    let mut classic_sources: BTreeSet<GroupId> = BTreeSet::new();
    let mut mirror_names: BTreeSet<String> = BTreeSet::from(["default".to_owned()]);
    for mapping in &config.mirrors {
        vpcs.insert(mapping.vpc.clone());
        let source = match &mapping.source {
            SourceRef::Id(id) => sources.get(id),
            SourceRef::Name(name) => classic_by_name.get(name.as_str()).copied(),
        };
        if let Some(source) = source {
            if source.is_classic() {
                classic_sources.insert(source.id.clone());
            }
            mirror_names.insert(mirror_name(mapping.name.as_deref().unwrap_or(&source.name), &source.id));
        }
    }
    if let Some(key) = &config.discovery.tag_key {
        for source in sources.values().filter(|g| g.is_classic()) {
            if let Some(vpc) = source.tags.get(key).and_then(|v| VpcId::try_new(v.trim()).ok()) {
                vpcs.insert(vpc);
                classic_sources.insert(source.id.clone());
                mirror_names.insert(mirror_name(&source.name, &source.id));
            }
        }
    }

    // ClassicLink matters only when a Classic group is managed. VPC-to-VPC
    // mirroring (SPEC §4.6) must not depend on the ClassicLink APIs, which
    // are gone from today's AWS (and from other EC2 emulators): it sees no
    // links and learns which target VPCs exist from DescribeVpcs.
    let uses_classiclink = !classic_sources.is_empty();

    // VPC side, instances, links and VPC flags are independent of each other.
    let vpc_list: Vec<VpcId> = vpcs.iter().cloned().collect();
    let mirror_filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.to_owned()], ..GroupFilter::default() };
    let all_links = LinkFilter::default();
    let (mirrors, candidates, instances, links, vpc_flags) = futures::join!(
        ec2.describe_security_groups(&mirror_filter),
        async {
            if vpc_list.is_empty() {
                return Vec::new();
            }
            describe_groups_chunked(ec2, chunks(&mirror_names), |group_names| GroupFilter {
                group_names,
                vpc_ids: vpc_list.clone(),
                ..GroupFilter::default()
            })
            .await
        },
        async {
            let filters: Vec<InstanceFilter> = chunks(&classic_sources)
                .into_iter()
                .map(|group_ids| InstanceFilter {
                    group_ids,
                    states: vec![InstanceState::Pending, InstanceState::Running],
                    ..InstanceFilter::default()
                })
                .collect();
            join_all(filters.iter().map(|f| ec2.describe_instances(f))).await
        },
        // Every link of the account in one paginated call: cheaper than
        // filtering by thousands of instance ids, and it shows foreign links.
        async { if uses_classiclink { ec2.describe_classic_link_instances(&all_links).await } else { Ok(Vec::new()) } },
        async {
            if vpc_list.is_empty() {
                Ok(Vec::new())
            } else if uses_classiclink {
                ec2.describe_vpc_classic_link(&vpc_list).await
            } else {
                let found = ec2.describe_vpcs(&vpc_list).await?;
                Ok(found.into_iter().map(|id| Vpc { id, classic_link_enabled: false }).collect())
            }
        }
    );

    for result in std::iter::once(mirrors).chain(candidates) {
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
    obs
}
