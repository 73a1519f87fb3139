//! Builders of synthetic passes and an exposition-format checker, shared by
//! the metrics and HTTP tests.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ec2::{Ec2Error, Operation};
use crate::execute::{ActionResult, ExecuteError, Outcome, Report};
use crate::model::{GroupId, InstanceId, Snapshot, SnapshotPart, VpcId};
use crate::observe::ObserveError;
use crate::plan::{
    Action, ActionId, Drift, GroupRef, Origin, Orphan, PairKey, PairPlan, Plan, PlannedAction, Warning, WarningKind,
};
use crate::reconcile::PassReport;

pub fn group(id: &str) -> GroupId {
    GroupId::try_new(id).expect("test group id")
}

pub fn vpc(id: &str) -> VpcId {
    VpcId::try_new(id).expect("test vpc id")
}

pub fn instance(id: &str) -> InstanceId {
    InstanceId::try_new(id).expect("test instance id")
}

pub fn key(source: &str, vpc_id: &str) -> PairKey {
    PairKey { source: group(source), vpc: vpc(vpc_id) }
}

pub fn ec2_failure(operation: Operation, code: &str) -> ActionResult {
    ActionResult::Failed(ExecuteError::Ec2(Ec2Error::new(operation, code, format!("{code} (test)"))))
}

/// A pass assembled by hand: plan, outcomes and snapshot completeness.
pub struct PassBuilder {
    plan: Plan,
    results: Vec<ActionResult>,
    snapshot: Snapshot,
    observe_errors: Vec<ObserveError>,
    duration: Duration,
    created: BTreeMap<PairKey, GroupId>,
}

impl PassBuilder {
    pub fn new() -> Self {
        Self {
            plan: Plan::default(),
            results: Vec::new(),
            snapshot: Snapshot::default(),
            observe_errors: Vec::new(),
            duration: Duration::from_millis(1500),
            created: BTreeMap::new(),
        }
    }

    /// A pair whose mirror is `mirror` (`None`: unavailable), with `drift`.
    pub fn pair(mut self, key: &PairKey, name: &str, mirror: Option<GroupRef>, drift: Drift) -> Self {
        self.plan.pairs.push(PairPlan {
            key: key.clone(),
            source_name: name.to_owned(),
            mirror,
            mirror_name: name.to_owned(),
            audit: false,
            origin: Origin::Config(self.plan.pairs.len()),
            drift,
        });
        self
    }

    pub fn action(mut self, action: Action, pair: Option<&PairKey>, result: ActionResult) -> Self {
        let id = ActionId(self.plan.actions.len());
        let audit = result == ActionResult::Audit;
        self.plan.actions.push(PlannedAction { id, action, depends_on: Vec::new(), audit, pair: pair.cloned() });
        self.results.push(result);
        self
    }

    pub fn warning(mut self, kind: WarningKind, pair: Option<&PairKey>, message: &str) -> Self {
        self.plan.warnings.push(Warning {
            kind,
            pair: pair.cloned(),
            subject: None,
            reason: None,
            message: message.to_owned(),
        });
        self
    }

    pub fn orphan(mut self, id: &str, vpc_id: &str, source: &str) -> Self {
        self.plan.orphans.push(Orphan {
            group: group(id),
            vpc: vpc(vpc_id),
            name: "old".to_owned(),
            source: group(source),
            since: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            due: Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_600)),
        });
        self
    }

    /// `part` could not be observed: the snapshot and the plan's holds say so.
    pub fn incomplete(mut self, part: SnapshotPart) -> Self {
        self.snapshot.incomplete.insert(part);
        if !self.plan.holds.incomplete.contains(&part) {
            self.plan.holds.incomplete.push(part);
        }
        self.observe_errors.push(ObserveError {
            part,
            source: Ec2Error::new(Operation::DescribeSecurityGroups, "RequestLimitExceeded", "slow down"),
        });
        self
    }

    pub fn shrink_hold(mut self) -> Self {
        self.plan.holds.shrink = true;
        self
    }

    pub fn deferred(mut self, deferred: crate::plan::Deferred) -> Self {
        self.plan.deferred = deferred;
        self
    }

    pub fn created(mut self, key: &PairKey, id: &str) -> Self {
        self.created.insert(key.clone(), group(id));
        self
    }

    pub fn build(self) -> PassReport {
        let outcomes = self
            .plan
            .actions
            .iter()
            .zip(self.results)
            .map(|(planned, result)| Outcome {
                id: planned.id,
                kind: planned.action.kind(),
                pair: planned.pair.clone(),
                result,
            })
            .collect();
        PassReport {
            snapshot: self.snapshot,
            observe_errors: self.observe_errors,
            plan: self.plan,
            report: Report { outcomes, created: self.created },
            duration: self.duration,
            interrupted: false,
            fights: Vec::new(),
            fights_started: Vec::new(),
            other_writer: false,
        }
    }
}

/// One sample line of the exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Parses `{a="x",b="y"}`; returns the labels and the rest of the line.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("labels must open with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 1..].strip_prefix('"').ok_or("label value must be quoted")?.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".to_owned()),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = &rest[eq + 1 + 1 + end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Checks every line of a text exposition (format 0.0.4) and returns its
/// samples; `# TYPE` must precede a family's samples.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(_)) if is_metric_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if is_metric_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail("unknown type"));
                    }
                    if typed.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(fail("family typed twice"));
                    }
                }
                _ => return Err(fail("bad comment line")),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| fail("no value"))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail("bad metric name"));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(|e| fail(&e))?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.strip_prefix(' ').ok_or_else(|| fail("no space before value"))?.split(' ');
        let value = fields.next().and_then(parse_value).ok_or_else(|| fail("bad value"))?;
        if let Some(timestamp) = fields.next()
            && timestamp.parse::<i64>().is_err()
        {
            return Err(fail("bad timestamp"));
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix).filter(|base| typed.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !typed.contains_key(family) {
            return Err(fail("sample before its # TYPE"));
        }
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Ok(samples)
}

/// The value of the sample named `name` with exactly these labels.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
}

/// Every sample of the metric `name`.
pub fn series<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

/// Convenience: a fresh pair key for tests that need a mirror reference.
pub fn existing(id: &str) -> GroupRef {
    GroupRef::Existing(group(id))
}

/// A link action for drift counting.
pub fn attach(instance_id: &str, vpc_id: &str, mirror: &str) -> Action {
    Action::Attach { instance: instance(instance_id), vpc: vpc(vpc_id), groups: vec![existing(mirror)] }
}

/// Every metric of the contract (docs/metrics.md), without the prefix.
pub const CONTRACT_METRICS: [&str; 16] = [
    "cycles_total",
    "cycle_duration_seconds",
    "last_successful_cycle_timestamp_seconds",
    "managed_pairs",
    "drift_grants",
    "drift_links",
    "actions_total",
    "actions_deferred_total",
    "aws_requests_total",
    "aws_request_duration_seconds",
    "throttled_requests_total",
    "unmirrorable_grants",
    "conflicts",
    "orphans",
    "safety_hold",
    "config_reloads_total",
];
