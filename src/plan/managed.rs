//! Phase 1, managed groups: which source groups the planner manages and
//! where each goes.
//!
//! Reads the config's `mirror` entries and discovery tag through
//! [`crate::mapping::resolve`] (the one resolution observe shares) and the
//! snapshot's source groups. Decides the accepted mappings (`managed`, in
//! source id order, and `managed_index`), and warns about each candidate it
//! rejects: a source mapped twice, a source that is itself a mirror or
//! already in the target VPC, a mirror name taken. Rules: docs/semantics.md,
//! "Which groups are managed".

use super::{LookupMap, Mapping, Origin, Planner, WarningKind};
use crate::config::Mode;
use crate::mapping::Unresolved;
use crate::model::{GroupId, SecurityGroup, VpcId};

impl<'a> Planner<'a> {
    pub(super) fn resolve_mappings(&mut self) {
        let snap = self.snap;
        let sources_complete = !snap.incomplete.contains(&crate::model::SnapshotPart::SourceGroups);
        let resolution = crate::mapping::resolve(self.config, &snap.source_groups);
        for unresolved in &resolution.unresolved {
            match *unresolved {
                Unresolved::AmbiguousName { index, name } => self.warn(
                    WarningKind::ConflictDuplicateMapping,
                    None,
                    Some(name.to_owned()),
                    format!("mirror[{index}]: several Classic groups are named {name:?}; name it by id"),
                ),
                Unresolved::MissingSource { index, source } => {
                    let why =
                        if sources_complete { "does not exist" } else { "was not observed (incomplete snapshot)" };
                    self.warn(
                        WarningKind::MissingSource,
                        None,
                        Some(source.to_string()),
                        format!("mirror[{index}]: source group {source} {why}"),
                    );
                }
                Unresolved::TagOverridden { source, value, index } => {
                    let tag_key = self.config.discovery.tag_key.as_deref().unwrap_or_default();
                    self.warn(
                        WarningKind::DiscoveryTag,
                        None,
                        Some(source.to_string()),
                        format!(
                            "{} carries {tag_key}={value} but mirror[{index}] names it; the config entry wins",
                            self.group_label(source)
                        ),
                    );
                }
                Unresolved::TagNotAVpc { source, value } => {
                    let tag_key = self.config.discovery.tag_key.as_deref().unwrap_or_default();
                    self.warn(
                        WarningKind::DiscoveryTag,
                        None,
                        Some(source.to_string()),
                        format!("{} carries {tag_key}={value:?}, which is not a VPC id", self.group_label(source)),
                    );
                }
            }
        }
        let mut claimed_names: LookupMap<(VpcId, String), GroupId> = LookupMap::default();
        // The accepted mappings, and the position of each source among them.
        let mut managed: Vec<Mapping<'a>> = Vec::new();
        let mut managed_index: LookupMap<&'a GroupId, usize> = LookupMap::default();
        let candidates = resolution.candidates.into_iter().map(|candidate| {
            let (link_instances, audit, adopt, enable_classiclink) = match candidate.entry {
                Some(entry) => (
                    entry.link_instances,
                    self.config.mode_of(entry) == Mode::Audit,
                    entry.adopt,
                    entry.enable_classiclink,
                ),
                None => (true, self.global_audit(), false, false),
            };
            let expands = self.config.expands(candidate.entry);
            Mapping {
                expands,
                source: candidate.source,
                vpc: candidate.vpc,
                name: candidate.name,
                link_instances,
                audit,
                adopt,
                enable_classiclink,
                origin: candidate.origin,
                mirror: None,
                pair: 0,
                prepare: None,
                shard_groups: Vec::new(),
                shards: Vec::new(),
                links_instances: false,
            }
        });
        let candidates: Vec<Mapping<'a>> = candidates.collect();

        for mapping in candidates {
            let source: &'a SecurityGroup = mapping.source;
            let first = managed_index.get(&source.id).map(|&position| managed[position].origin);
            let name_key = (mapping.vpc.clone(), mapping.name.clone());
            if let Some((kind, message)) = self.rejection(&mapping, first, claimed_names.get(&name_key)) {
                self.warn(kind, None, Some(source.id.to_string()), message);
                continue;
            }
            claimed_names.insert(name_key, source.id.clone());
            managed_index.insert(&source.id, managed.len());
            managed.push(mapping);
        }
        // In id order, the order every later phase walks them in.
        managed.sort_unstable_by(|a, b| a.source.id.cmp(&b.source.id));
        // Owned keys: a probe then compares ids stored in the table itself
        // instead of following a pointer into the snapshot for each rule.
        self.managed_index = managed.iter().enumerate().map(|(index, m)| (m.source.id.clone(), index)).collect();
        self.managed = managed;
    }

    /// Why a candidate mapping cannot be accepted, if it cannot: its source
    /// is already mapped (`first`, by that origin), is itself a mirror or
    /// already in the target VPC, or its mirror name is taken (by the mirror
    /// of `name_taken_by`).
    fn rejection(
        &self,
        mapping: &Mapping<'a>,
        first: Option<Origin>,
        name_taken_by: Option<&GroupId>,
    ) -> Option<(WarningKind, String)> {
        // Labels are formatted only for a rejection.
        let label = || self.group_label(&mapping.source.id);
        let origin = || origin_label(mapping.origin);
        if let Some(first) = first {
            let first = origin_label(first);
            return Some((
                WarningKind::ConflictDuplicateMapping,
                format!("{} names {}, which {first} already mirrors; ignored", origin(), label()),
            ));
        }
        if mapping.source.mirrored_from().is_some() {
            return Some((
                WarningKind::ConflictInvalidMapping,
                format!("{}: {} is itself a mirror; ignored", origin(), label()),
            ));
        }
        if mapping.source.vpc_id.as_ref() == Some(&mapping.vpc) {
            return Some((
                WarningKind::ConflictInvalidMapping,
                format!(
                    "{}: {} is already in {}; a group cannot mirror into its own VPC",
                    origin(),
                    label(),
                    mapping.vpc
                ),
            ));
        }
        let other = self.group_label(name_taken_by?);
        Some((
            WarningKind::ConflictDuplicateName,
            format!(
                "{}: mirror name {:?} in {} is already used by the mirror of {other}; {} ignored",
                origin(),
                mapping.name,
                mapping.vpc,
                label()
            ),
        ))
    }
}

fn origin_label(origin: Origin) -> String {
    match origin {
        Origin::Config(index) => format!("mirror[{index}]"),
        Origin::Tag => "the discovery tag".to_owned(),
    }
}
