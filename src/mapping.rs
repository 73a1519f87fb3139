//! The mapping file resolved against the observed source groups: which
//! source group each `[[mirror]]` entry and each discovery-tagged Classic
//! group names, into which VPC, under which mirror name.
//!
//! One pure function, [`resolve`], that both sides of a pass call: observe,
//! to know which VPCs, instances and mirror names to describe, and the
//! planner, to decide which pairs it manages. Sharing it is what keeps the two
//! from disagreeing about a source (a name several Classic groups carry, a
//! tag the config overrides, a mirror name) and so from observing one thing
//! and planning another. The planner then rejects candidates that conflict
//! (a source named twice, a source that is itself a mirror, one mirror name
//! claimed twice); that is a decision, and stays in the planner.

use std::collections::BTreeMap;

use crate::config::{Config, MirrorConfig, SourceRef};
use crate::model::{GroupId, SecurityGroup, VpcId, mirror_name};
use crate::plan::Origin;

/// A source group some entry or tag wants mirrored, before conflicts are
/// weighed.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    /// The source group.
    pub source: &'a SecurityGroup,
    /// The target VPC.
    pub vpc: VpcId,
    /// The mirror's name in `vpc` ([`mirror_name`] of the entry's `name`, or
    /// of the source's name).
    pub name: String,
    /// `mirror[i]` of the config, or the discovery tag.
    pub origin: Origin,
    /// The config entry, for [`Origin::Config`].
    pub entry: Option<&'a MirrorConfig>,
}

/// An entry or tag that names no usable source, in the order found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved<'a> {
    /// `mirror[index]` names its source by a name several Classic groups carry.
    AmbiguousName {
        /// The entry's position in the config.
        index: usize,
        /// The name.
        name: &'a str,
    },
    /// `mirror[index]`'s source is not among the observed groups.
    MissingSource {
        /// The entry's position in the config.
        index: usize,
        /// How the entry names it.
        source: &'a SourceRef,
    },
    /// A Classic group carries the discovery tag but `mirror[index]` names
    /// it: the config entry wins.
    TagOverridden {
        /// The tagged group.
        source: &'a GroupId,
        /// The tag's value.
        value: &'a str,
        /// The config entry that names it.
        index: usize,
    },
    /// A Classic group's discovery tag is not a VPC id.
    TagNotAVpc {
        /// The tagged group.
        source: &'a GroupId,
        /// The tag's value.
        value: &'a str,
    },
}

/// What [`resolve`] found.
#[derive(Clone, Debug, Default)]
pub struct Resolution<'a> {
    /// Config entries first (in file order), then tagged Classic groups (in
    /// id order).
    pub candidates: Vec<Candidate<'a>>,
    /// Entries and tags that name no usable source.
    pub unresolved: Vec<Unresolved<'a>>,
}

/// Resolves the config's `[[mirror]]` entries and the discovery tag against
/// `source_groups` (what observe found of the sources). Pure and
/// deterministic.
///
/// A source named by *name* is the one Classic group of that name (names are
/// unique among Classic groups, not across VPCs). A tagged Classic group that
/// a config entry also names is the entry's, not the tag's.
#[must_use]
pub fn resolve<'a>(config: &'a Config, source_groups: &'a BTreeMap<GroupId, SecurityGroup>) -> Resolution<'a> {
    let mut resolution = Resolution::default();
    // Built only when an entry names its source by name: the planner runs
    // this on every pass, over thousands of groups.
    let mut classic_by_name: BTreeMap<&str, Vec<&SecurityGroup>> = BTreeMap::new();
    if config.mirrors.iter().any(|entry| matches!(entry.source, SourceRef::Name(_))) {
        for group in source_groups.values().filter(|g| g.is_classic()) {
            classic_by_name.entry(group.name.as_str()).or_default().push(group);
        }
    }
    for (index, entry) in config.mirrors.iter().enumerate() {
        let source = match &entry.source {
            SourceRef::Id(id) => source_groups.get(id),
            SourceRef::Name(name) => match classic_by_name.get(name.as_str()).map(Vec::as_slice) {
                Some([one]) => Some(*one),
                Some([_, _, ..]) => {
                    resolution.unresolved.push(Unresolved::AmbiguousName { index, name });
                    continue;
                }
                _ => None,
            },
        };
        let Some(source) = source else {
            resolution.unresolved.push(Unresolved::MissingSource { index, source: &entry.source });
            continue;
        };
        resolution.candidates.push(Candidate {
            source,
            vpc: entry.vpc.clone(),
            name: mirror_name(entry.name.as_deref().unwrap_or(&source.name), &source.id),
            origin: Origin::Config(index),
            entry: Some(entry),
        });
    }

    let Some(tag_key) = &config.discovery.tag_key else { return resolution };
    // The first config entry naming each source, for "config wins".
    let mut named_by_config: BTreeMap<&GroupId, usize> = BTreeMap::new();
    for candidate in &resolution.candidates {
        if let Origin::Config(index) = candidate.origin {
            named_by_config.entry(&candidate.source.id).or_insert(index);
        }
    }
    for source in source_groups.values().filter(|g| g.is_classic()) {
        let Some(value) = source.tags.get(tag_key) else { continue };
        if let Some(&index) = named_by_config.get(&source.id) {
            resolution.unresolved.push(Unresolved::TagOverridden { source: &source.id, value, index });
            continue;
        }
        let Ok(vpc) = value.trim().parse::<VpcId>() else {
            resolution.unresolved.push(Unresolved::TagNotAVpc { source: &source.id, value });
            continue;
        };
        resolution.candidates.push(Candidate {
            source,
            vpc,
            name: mirror_name(&source.name, &source.id),
            origin: Origin::Tag,
            entry: None,
        });
    }
    resolution
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorConfig;

    fn group(id: &str, name: &str, vpc: Option<&str>, tag: Option<&str>) -> SecurityGroup {
        SecurityGroup {
            id: GroupId::try_new(id).unwrap(),
            name: name.to_owned(),
            description: String::new(),
            vpc_id: vpc.map(|v| VpcId::try_new(v).unwrap()),
            owner_id: "111122223333".to_owned(),
            tags: tag.map(|t| [("mirror-to".to_owned(), t.to_owned())].into_iter().collect()).unwrap_or_default(),
            ingress: Vec::new(),
            egress: Vec::new(),
        }
    }

    fn groups(list: Vec<SecurityGroup>) -> BTreeMap<GroupId, SecurityGroup> {
        list.into_iter().map(|g| (g.id.clone(), g)).collect()
    }

    fn vpc(id: &str) -> VpcId {
        VpcId::try_new(id).unwrap()
    }

    fn config(mirrors: Vec<MirrorConfig>, tag_key: Option<&str>) -> Config {
        let mut config = Config::from_toml_str("", Some("us-east-1")).expect("an empty file is a valid config");
        config.mirrors = mirrors;
        config.discovery.tag_key = tag_key.map(str::to_owned);
        config
    }

    #[test]
    fn entries_by_id_and_by_name_resolve_to_their_classic_group_and_mirror_name() {
        let sources = groups(vec![
            group("sg-1", "web", None, None),
            group("sg-2", "db", None, None),
            // A VPC group of the same name is never a source by name.
            group("sg-3", "db", Some("vpc-9"), None),
        ]);
        let mut renamed = MirrorConfig::new(SourceRef::Id(GroupId::try_new("sg-1").unwrap()), vpc("vpc-1"));
        renamed.name = Some("web-mirror".into());
        let config = config(vec![renamed, MirrorConfig::new(SourceRef::Name("db".into()), vpc("vpc-1"))], None);
        let resolution = resolve(&config, &sources);
        let found: Vec<_> =
            resolution.candidates.iter().map(|c| (c.source.id.as_str(), c.name.as_str(), c.origin)).collect();
        assert_eq!(found, vec![("sg-1", "web-mirror", Origin::Config(0)), ("sg-2", "db", Origin::Config(1))]);
        assert!(resolution.unresolved.is_empty());
    }

    #[test]
    fn an_ambiguous_name_and_a_missing_source_are_unresolved_in_entry_order() {
        let sources = groups(vec![group("sg-1", "app", None, None), group("sg-2", "app", None, None)]);
        let missing = SourceRef::Id(GroupId::try_new("sg-404").unwrap());
        let config = config(
            vec![
                MirrorConfig::new(missing.clone(), vpc("vpc-1")),
                MirrorConfig::new(SourceRef::Name("app".into()), vpc("vpc-1")),
            ],
            None,
        );
        let resolution = resolve(&config, &sources);
        assert!(resolution.candidates.is_empty());
        assert_eq!(
            resolution.unresolved,
            vec![
                Unresolved::MissingSource { index: 0, source: &missing },
                Unresolved::AmbiguousName { index: 1, name: "app" },
            ]
        );
    }

    #[test]
    fn tagged_classic_groups_follow_the_entries_and_the_config_wins_over_a_tag() {
        let sources = groups(vec![
            group("sg-1", "web", None, Some("vpc-1")),
            group("sg-2", "db", None, Some("vpc-2")),
            group("sg-3", "bad", None, Some("not-a-vpc")),
            // Tags on VPC groups discover nothing.
            group("sg-4", "vpc-side", Some("vpc-1"), Some("vpc-2")),
        ]);
        let config = config(
            vec![MirrorConfig::new(SourceRef::Id(GroupId::try_new("sg-1").unwrap()), vpc("vpc-9"))],
            Some("mirror-to"),
        );
        let resolution = resolve(&config, &sources);
        let found: Vec<_> =
            resolution.candidates.iter().map(|c| (c.source.id.as_str(), c.vpc.as_str(), c.origin)).collect();
        assert_eq!(found, vec![("sg-1", "vpc-9", Origin::Config(0)), ("sg-2", "vpc-2", Origin::Tag)]);
        let sg1 = GroupId::try_new("sg-1").unwrap();
        let sg3 = GroupId::try_new("sg-3").unwrap();
        assert_eq!(
            resolution.unresolved,
            vec![
                Unresolved::TagOverridden { source: &sg1, value: "vpc-1", index: 0 },
                Unresolved::TagNotAVpc { source: &sg3, value: "not-a-vpc" },
            ]
        );
    }
}
