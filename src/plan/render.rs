//! Plan rendering: the reviewable text diff `plan` prints and the versioned JSON
//! document of `docs/plan-json.md`. Pure functions of the plan and the
//! snapshot it was made from (for names).

use std::fmt::Write as _;

use serde::Serialize;

use super::types::{Action, ActionKind, GroupRef, Plan, PlannedAction};
use crate::model::{Grant, ORPHANED_SINCE_TAG, Peer, Ports, Protocol, Snapshot, format_time};

/// Version of the JSON plan document; bumped on any incompatible change.
pub const PLAN_JSON_VERSION: u32 = 1;

/// Totals over a plan, as in its summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Mirrors to create.
    pub create: usize,
    /// Groups to tag (default group, adoption).
    pub tag: usize,
    /// Grants to add.
    pub add: usize,
    /// Grants to remove.
    pub remove: usize,
    /// Descriptions to update.
    pub update: usize,
    /// Attaches and relinks.
    pub links: usize,
    /// Detaches.
    pub unlinks: usize,
    /// Mirrors to delete.
    pub delete: usize,
    /// Groups to untag.
    pub untag: usize,
    /// VPCs to enable ClassicLink on.
    pub enable_classiclink: usize,
    /// Orphans to mark with their `classiclinkmirror:orphanedSince` tag.
    pub mark: usize,
    /// Mirrors claimed again whose `classiclinkmirror:orphanedSince` tag goes.
    pub unmark: usize,
    /// Expansion prefix lists to create, modify or delete.
    #[serde(skip_serializing_if = "is_zero")]
    pub prefix_lists: usize,
    /// Warnings.
    pub warnings: usize,
    /// Actions shown but not executed (audit).
    pub audit_only: usize,
    /// Actions deferred or held to later cycles.
    pub deferred: usize,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// Totals of `plan`.
    #[must_use]
    pub fn of(plan: &Plan) -> Self {
        let mut s = Self { warnings: plan.warnings.len(), deferred: plan.deferred.total(), ..Self::default() };
        for planned in &plan.actions {
            if planned.audit {
                s.audit_only += 1;
            }
            match &planned.action {
                Action::CreateMirror { .. } => s.create += 1,
                Action::TagGroup { .. } => s.tag += 1,
                Action::UntagGroup { .. } => s.untag += 1,
                Action::Authorize { grants, .. } | Action::AuthorizeEgress { grants, .. } => s.add += grants.len(),
                Action::Revoke { grants, .. } | Action::RevokeEgress { grants, .. } => s.remove += grants.len(),
                Action::UpdateDescriptions { grants, .. } => s.update += grants.len(),
                Action::Attach { .. } | Action::Relink { .. } => s.links += 1,
                Action::Detach { .. } => s.unlinks += 1,
                Action::DeleteMirror { .. } => s.delete += 1,
                Action::EnableClassicLink { .. } => s.enable_classiclink += 1,
                Action::MarkOrphan { .. } => s.mark += 1,
                Action::UnmarkOrphan { .. } => s.unmark += 1,
                Action::CreatePrefixList { .. } | Action::ModifyPrefixList { .. } | Action::DeletePrefixList { .. } => {
                    s.prefix_lists += 1
                }
            }
        }
        s
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.create > 0 {
            parts.push(plural(self.create, "mirror to create", "mirrors to create"));
        }
        if self.tag > 0 {
            parts.push(format!("{} to tag", self.tag));
        }
        parts.push(format!("{} to add, {} to remove, {} to update", self.add, self.remove, self.update));
        parts.push(plural(self.links, "link", "links"));
        if self.unlinks > 0 {
            parts.push(plural(self.unlinks, "unlink", "unlinks"));
        }
        if self.enable_classiclink > 0 {
            parts.push(format!("{} ClassicLink to enable", self.enable_classiclink));
        }
        if self.delete > 0 {
            parts.push(format!("{} to delete", self.delete));
        }
        if self.untag > 0 {
            parts.push(format!("{} to untag", self.untag));
        }
        if self.mark > 0 {
            parts.push(plural(self.mark, "orphan to mark", "orphans to mark"));
        }
        if self.unmark > 0 {
            parts.push(format!("{} to unmark", self.unmark));
        }
        if self.prefix_lists > 0 {
            parts.push(plural(self.prefix_lists, "prefix list to change", "prefix lists to change"));
        }
        write!(f, "{}; {}", parts.join(", "), plural(self.warnings, "warning", "warnings"))?;
        if self.deferred > 0 {
            write!(f, "; {} deferred", self.deferred)?;
        }
        if self.audit_only > 0 {
            write!(f, "; {} audit only (not executed)", plural(self.audit_only, "action", "actions"))?;
        }
        Ok(())
    }
}

/// `tcp 443`, `udp 1000-2000`, `icmp type 8`, `all`, `50`.
pub(super) fn proto_ports(protocol: Protocol, ports: &Ports) -> String {
    let ports = ports.to_string();
    if ports.is_empty() { protocol.to_string() } else { format!("{protocol} {ports}") }
}

pub(super) fn peer_text(peer: &Peer<GroupRef>) -> String {
    match peer {
        Peer::Ipv4(net) => net.to_string(),
        Peer::Ipv6(net) => net.to_string(),
        Peer::PrefixList(pl) => pl.to_string(),
        Peer::Group { group, owner: Some(owner) } => format!("{group} (account {owner})"),
        Peer::Group { group, owner: None } => group.to_string(),
    }
}

struct Namer<'a> {
    plan: &'a Plan,
    snapshot: &'a Snapshot,
}

impl Namer<'_> {
    /// `sg-77d (app) [classic sg-0a2]` for a mirror, `sg-1 (lb)` otherwise.
    fn group(&self, group: &GroupRef) -> String {
        match group {
            GroupRef::Existing(id) => match self.snapshot.vpc_groups.get(id) {
                Some(g) => match g.mirrored_from() {
                    Some(source) => format!("{id} ({}) [{} {source}]", g.name, self.source_kind(&source)),
                    None => format!("{id} ({})", g.name),
                },
                None => id.to_string(),
            },
            GroupRef::New { source, vpc, shard } => {
                let pair = self.plan.pairs.iter().find(|p| &p.key.source == source && &p.key.vpc == vpc);
                let name = match *shard {
                    0 => pair.map(|p| p.mirror_name.clone()),
                    shard => pair.and_then(|p| p.shards.iter().find(|s| s.shard == shard)).map(|s| s.name.clone()),
                };
                format!("(new) ({}) [{} {source}]", name.as_deref().unwrap_or("?"), self.source_kind(source))
            }
        }
    }

    /// `   [in sg-… (web-overflow-1)]` when `group`, written by `planned`, is
    /// not its pair's mirror (an overflow group); nothing otherwise.
    fn overflow_place(&self, planned: &PlannedAction, group: &GroupRef) -> String {
        let pair = planned.pair.as_ref().and_then(|key| self.plan.pairs.iter().find(|p| &p.key == key));
        match pair {
            Some(pair) if pair.mirror.as_ref() != Some(group) => {
                let name = match group {
                    GroupRef::Existing(id) => self.snapshot.vpc_groups.get(id).map(|g| g.name.clone()),
                    GroupRef::New { shard, .. } => {
                        pair.shards.iter().find(|s| s.shard == *shard).map(|s| s.name.clone())
                    }
                };
                format!("   [in {} ({})]", self.group_short(group), name.unwrap_or_default())
            }
            _ => String::new(),
        }
    }

    fn group_short(&self, group: &GroupRef) -> String {
        match group {
            GroupRef::Existing(id) => id.to_string(),
            GroupRef::New { source, shard: 0, .. } => format!("(new mirror of {source})"),
            GroupRef::New { source, shard, .. } => format!("(new overflow group {shard} of {source})"),
        }
    }

    fn source_kind(&self, source: &crate::model::GroupId) -> &'static str {
        match self.snapshot.source_groups.get(source) {
            Some(g) if !g.is_classic() => "vpc",
            _ => "classic",
        }
    }

    fn grant(&self, grant: &Grant<GroupRef>) -> String {
        self.grant_towards(grant, "from")
    }

    /// An egress grant: traffic goes *to* its peer.
    fn egress_grant(&self, grant: &Grant<GroupRef>) -> String {
        self.grant_towards(grant, "to")
    }

    fn grant_towards(&self, grant: &Grant<GroupRef>, towards: &str) -> String {
        let peer = match &grant.key.peer {
            Peer::Group { group, owner: None } => self.group(group),
            other => peer_text(other),
        };
        format!("{} {towards} {peer}", proto_ports(grant.key.protocol, &grant.key.ports))
    }

    fn link_groups(&self, groups: &[GroupRef]) -> String {
        let names: Vec<String> = groups.iter().map(|g| self.group_short(g)).collect();
        format!("[{}]", names.join(", "))
    }
}

fn quoted(description: Option<&str>) -> String {
    format!("{:?}", description.unwrap_or(""))
}

fn grant_lines(out: &mut String, namer: &Namer<'_>, planned: &PlannedAction) {
    let audit = if planned.audit { "   [audit]" } else { "" };
    match &planned.action {
        Action::CreateMirror { name, vpc, shard: 0, .. } => {
            let _ = writeln!(out, "  + create group {name:?} in {vpc}{audit}");
        }
        Action::CreateMirror { name, vpc, shard, .. } => {
            let _ = writeln!(out, "  + create overflow group {shard} {name:?} in {vpc}{audit}");
        }
        Action::TagGroup { group, reason, .. } => {
            let why = match reason {
                super::types::TagReason::Default => "the VPC's default group",
                super::types::TagReason::Adopt => "adopted (adopt = true)",
                super::types::TagReason::Claim => "claimed (it had no owner tag)",
            };
            let _ = writeln!(out, "  + tag {group} as the mirror: {why}{audit}");
        }
        Action::Authorize { grants, group } => {
            let place = namer.overflow_place(planned, group);
            for grant in grants {
                let description =
                    grant.description.as_deref().map(|d| format!("   {}", quoted(Some(d)))).unwrap_or_default();
                let _ = writeln!(out, "  + ingress {}{description}{place}{audit}", namer.grant(grant));
            }
        }
        Action::Revoke { grants, group } => {
            let place = namer.overflow_place(planned, &GroupRef::Existing(group.clone()));
            for grant in grants {
                let grant = grant.clone().map_group(GroupRef::Existing);
                let _ = writeln!(out, "  - ingress {}{place}{audit}", namer.grant(&grant));
            }
        }
        Action::AuthorizeEgress { grants, .. } => {
            for grant in grants {
                let description =
                    grant.description.as_deref().map(|d| format!("   {}", quoted(Some(d)))).unwrap_or_default();
                let _ = writeln!(out, "  + egress {}{description}{audit}", namer.egress_grant(grant));
            }
        }
        Action::RevokeEgress { grants, .. } => {
            for grant in grants {
                let grant = grant.clone().map_group(GroupRef::Existing);
                let _ = writeln!(out, "  - egress {}{audit}", namer.egress_grant(&grant));
            }
        }
        Action::UpdateDescriptions { grants, previous, .. } => {
            for (grant, before) in grants.iter().zip(previous) {
                let after = grant.description.as_deref();
                let grant = grant.clone().map_group(GroupRef::Existing);
                let _ = writeln!(
                    out,
                    "  ~ description {}: {} -> {}{audit}",
                    namer.grant(&grant),
                    quoted(before.as_deref()),
                    quoted(after)
                );
            }
        }
        _ => {}
    }
}

fn other_line(out: &mut String, namer: &Namer<'_>, planned: &PlannedAction) {
    let audit = if planned.audit { "   [audit]" } else { "" };
    match &planned.action {
        Action::EnableClassicLink { vpc } => {
            let _ = writeln!(out, "enable classiclink {vpc}{audit}");
        }
        Action::Attach { instance, vpc, groups } => {
            let _ = writeln!(out, "link {instance} -> {vpc} {}   (was: not linked){audit}", namer.link_groups(groups));
        }
        Action::Relink { instance, from_vpc, from, vpc, groups } => {
            let was: Vec<GroupRef> = from.iter().cloned().map(GroupRef::Existing).collect();
            let was_vpc = if from_vpc == vpc { String::new() } else { format!("{from_vpc} ") };
            let _ = writeln!(
                out,
                "relink {instance} -> {vpc} {}   (was: {was_vpc}{}){audit}",
                namer.link_groups(groups),
                namer.link_groups(&was)
            );
        }
        Action::Detach { instance, vpc, groups } => {
            let was: Vec<GroupRef> = groups.iter().cloned().map(GroupRef::Existing).collect();
            let _ = writeln!(out, "unlink {instance} from {vpc}   (was: {}){audit}", namer.link_groups(&was));
        }
        Action::DeleteMirror { group, vpc, name, source } => {
            let _ = writeln!(out, "delete orphan {group} ({name}) in {vpc}, mirror of {source}{audit}");
        }
        Action::UntagGroup { group, vpc, .. } => {
            let _ = writeln!(out, "untag {group} (default) in {vpc}: no longer a mirror{audit}");
        }
        Action::MarkOrphan { group, vpc, since } => {
            let _ = writeln!(out, "mark orphan {group} in {vpc}: {ORPHANED_SINCE_TAG}={since}{audit}");
        }
        Action::UnmarkOrphan { group, vpc } => {
            let _ = writeln!(out, "unmark {group} in {vpc}: a mirror again, {ORPHANED_SINCE_TAG} removed{audit}");
        }
        Action::CreatePrefixList { expands, name, max_entries, entries, .. } => {
            let _ = writeln!(
                out,
                "create prefix list {name:?} expanding {expands}: {} (max {max_entries}){audit}",
                entries_text(entries.iter().map(ToString::to_string)),
            );
        }
        Action::ModifyPrefixList { list, expands, version, add, remove } => {
            let _ = writeln!(
                out,
                "modify prefix list {list} expanding {expands} at version {version}: + {}, - {}{audit}",
                entries_text(add.iter().map(ToString::to_string)),
                entries_text(remove.iter().map(ToString::to_string)),
            );
        }
        Action::DeletePrefixList { list, expands } => {
            let _ = writeln!(out, "delete prefix list {list} expanding {expands}: no mirror needs it{audit}");
        }
        Action::Revoke { group, grants } => {
            // Rules of an orphan that reference an orphan being deleted.
            for grant in grants {
                let grant = grant.clone().map_group(GroupRef::Existing);
                let _ = writeln!(out, "orphan {group} - ingress {}{audit}", namer.grant(&grant));
            }
        }
        _ => {}
    }
}

/// `[a, b, c]`, or `none`.
fn entries_text(entries: impl Iterator<Item = String>) -> String {
    let entries: Vec<String> = entries.collect();
    if entries.is_empty() { "none".to_owned() } else { format!("[{}]", entries.join(", ")) }
}

fn is_pair_action(kind: ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::CreateMirror
            | ActionKind::TagGroup
            | ActionKind::Authorize
            | ActionKind::Revoke
            | ActionKind::AuthorizeEgress
            | ActionKind::RevokeEgress
            | ActionKind::UpdateDescriptions
    )
}

/// The plan as a reviewable diff (what `plan` prints): one section per mirror pair with
/// changes, then links, deletions, warnings and a summary line.
#[must_use]
pub fn render_text(plan: &Plan, snapshot: &Snapshot) -> String {
    let namer = Namer { plan, snapshot };
    let mut out = String::new();
    for pair in &plan.pairs {
        let actions: Vec<&PlannedAction> = plan
            .actions
            .iter()
            .filter(|a| is_pair_action(a.action.kind()) && a.pair.as_ref() == Some(&pair.key))
            .collect();
        if actions.is_empty() {
            continue;
        }
        let mirror = match &pair.mirror {
            Some(GroupRef::Existing(id)) => id.to_string(),
            _ => "(new)".to_owned(),
        };
        let audit = if pair.audit { "   [audit]" } else { "" };
        let _ = writeln!(
            out,
            "mirror {} ({}) -> {} {mirror} ({}){audit}",
            pair.key.source, pair.source_name, pair.key.vpc, pair.mirror_name
        );
        if !pair.shards.is_empty() {
            let shards: Vec<String> = pair
                .shards
                .iter()
                .map(|s| format!("{} ({}, {} rules)", namer.group_short(&s.group), s.name, s.rules))
                .collect();
            let _ = writeln!(out, "  overflow groups: {}", shards.join(", "));
        }
        for planned in actions {
            grant_lines(&mut out, &namer, planned);
        }
    }
    for planned in plan.actions.iter().filter(|a| !is_pair_action(a.action.kind()) || a.pair.is_none()) {
        other_line(&mut out, &namer, planned);
    }
    for orphan in &plan.orphans {
        let due = orphan.due.map_or_else(
            || "kept (delete_orphans = false)".to_owned(),
            |due| format!("removal due at {}", format_time(due)),
        );
        let _ = writeln!(
            out,
            "orphan {} ({}) in {}, mirror of {}: orphaned since {}; {due}",
            orphan.group,
            orphan.name,
            orphan.vpc,
            orphan.source,
            format_time(orphan.since)
        );
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {}", warning.message);
    }
    if plan.actions.is_empty() {
        let _ = writeln!(out, "no changes; {}", plural(plan.warnings.len(), "warning", "warnings"));
    } else {
        let _ = writeln!(out, "{}", Summary::of(plan));
    }
    out
}

#[derive(Serialize)]
struct JsonOrphan<'a> {
    group: &'a crate::model::GroupId,
    vpc: &'a crate::model::VpcId,
    name: &'a str,
    source: &'a crate::model::GroupId,
    orphaned_since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_due_at: Option<String>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    version: u32,
    converged: bool,
    summary: Summary,
    holds: &'a super::types::Holds,
    deferred: &'a super::types::Deferred,
    pairs: &'a [super::types::PairPlan],
    actions: &'a [PlannedAction],
    warnings: &'a [super::types::Warning],
    orphans: Vec<JsonOrphan<'a>>,
}

/// The plan as the stable JSON document of `docs/plan-json.md`.
#[must_use]
pub fn render_json(plan: &Plan) -> String {
    let doc = JsonPlan {
        version: PLAN_JSON_VERSION,
        converged: plan.is_converged(),
        summary: Summary::of(plan),
        holds: &plan.holds,
        deferred: &plan.deferred,
        pairs: &plan.pairs,
        actions: &plan.actions,
        warnings: &plan.warnings,
        orphans: plan
            .orphans
            .iter()
            .map(|o| JsonOrphan {
                group: &o.group,
                vpc: &o.vpc,
                name: &o.name,
                source: &o.source,
                orphaned_since: format_time(o.since),
                deletion_due_at: o.due.map(format_time),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("plan serialises");
    text.push('\n');
    text
}
