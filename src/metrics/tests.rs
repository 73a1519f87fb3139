use strum::VariantArray as _;

use crate::ec2::limited::RetryOutcome;
use crate::ec2::{ErrorKind, Operation};
use crate::execute::{ActionResult, OutcomeKind};
use crate::model::SnapshotPart;
use crate::plan::{Action, ActionKind, Deferred, RepairKind, WarningKind};
use crate::reconcile::{CycleOutcome, PassReport};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::test_support::*;
use super::*;
use crate::ec2::limited::{Limited, RetryPolicy};
use crate::plan::Drift;

fn name(metric: &str) -> String {
    format!("{PREFIX}_{metric}")
}

fn samples(metrics: &Metrics) -> Vec<Sample> {
    let text = metrics.render();
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn get(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, &name(metric), labels).unwrap_or_else(|| panic!("no sample {metric} {labels:?}"))
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A pass with a bit of everything: two pairs with drift, conflicts, an
/// unmirrorable grant, an orphan, a failed and a deferred action.
fn busy_pass() -> PassReport {
    let web = key("sg-0a1", "vpc-9f2");
    let app = key("sg-0a2", "vpc-9f2");
    PassBuilder::new()
        .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 3, remove: 1, update: 2, links: 1 })
        .pair(&app, "app", None, Drift::default())
        .action(attach("i-0b3", "vpc-9f2", "sg-77c"), Some(&web), ActionResult::Done)
        .action(
            Action::EnableClassicLink { vpc: vpc("vpc-9f2") },
            None,
            ec2_failure(Operation::EnableVpcClassicLink, "UnauthorizedOperation"),
        )
        .warning(WarningKind::ConflictNameTaken, Some(&app), "the name app is taken in vpc-9f2")
        .warning(WarningKind::ConflictForeignLink, None, "i-0b9 is linked to vpc-111 by someone else")
        .warning(WarningKind::ConflictForeignLink, None, "i-0ba is linked to vpc-111 by someone else")
        .warning(WarningKind::Unmirrorable, Some(&web), "sg-0a1 rule tcp 80 from sg-0ff cannot be mirrored")
        .orphan("sg-99e", "vpc-9f2", "sg-0a9")
        .deferred(Deferred { revokes: 4, deletes: 1, unlinks: 2, adds: 3, held: 0, fights: 5 })
        .shrink_hold()
        .build()
}

#[test]
fn every_spec_metric_is_exposed_before_the_first_pass() {
    let metrics = Metrics::new();
    let text = metrics.render();
    let samples = parse_exposition(&text).unwrap();
    for metric in CONTRACT_METRICS {
        assert!(text.contains(&format!("# TYPE {} ", name(metric))), "{metric} is not exposed:\n{text}");
    }
    assert_eq!(get(&samples, "build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(get(&samples, "config_last_reload_successful", &[]), 1.0);
    assert!(text.contains(&format!("# TYPE {} counter", name("observe_errors_total"))));
}

#[test]
fn every_known_label_combination_starts_at_zero() {
    let metrics = Metrics::new();
    let samples = samples(&metrics);
    assert_eq!(
        series(&samples, &name("actions_total")).len(),
        ActionKind::VARIANTS.len() * OutcomeKind::VARIANTS.len()
    );
    for kind in ActionKind::VARIANTS {
        for outcome in OutcomeKind::VARIANTS.iter().map(OutcomeKind::as_str) {
            assert_eq!(get(&samples, "actions_total", &[("kind", kind.as_str()), ("outcome", outcome)]), 0.0);
        }
    }
    for outcome in CycleOutcome::VARIANTS {
        assert_eq!(get(&samples, "cycles_total", &[("outcome", outcome.as_str())]), 0.0);
    }
    for reason in DEFERRED_REASONS {
        assert_eq!(get(&samples, "actions_deferred_total", &[("reason", reason)]), 0.0);
    }
    for direction in DRIFT_DIRECTIONS {
        assert_eq!(get(&samples, "drift_grants", &[("direction", direction)]), 0.0);
    }
    for kind in [
        "name_taken",
        "foreign_link",
        "multi_vpc",
        "duplicate_mapping",
        "duplicate_name",
        "invalid_mapping",
        "foreign_owner",
    ] {
        assert_eq!(get(&samples, "conflicts", &[("kind", kind)]), 0.0);
    }
    for op in Operation::daemon_operations() {
        assert_eq!(get(&samples, "aws_requests_total", &[("operation", op.as_str()), ("outcome", "ok")]), 0.0);
        assert_eq!(get(&samples, "aws_requests_total", &[("operation", op.as_str()), ("outcome", "throttled")]), 0.0);
        assert_eq!(get(&samples, "aws_request_duration_seconds_count", &[("operation", op.as_str())]), 0.0);
    }
    for outcome in ["applied", "rejected"] {
        assert_eq!(get(&samples, "config_reloads_total", &[("outcome", outcome)]), 0.0);
    }
    for part in SnapshotPart::VARIANTS {
        assert_eq!(get(&samples, "observe_errors_total", &[("part", part.as_str())]), 0.0);
    }
    assert_eq!(get(&samples, "last_successful_cycle_timestamp_seconds", &[]), 0.0);
}

#[test]
fn label_values_are_closed_sets_never_ids() {
    let metrics = Metrics::new();
    metrics.record_pass(&busy_pass(), t0());
    metrics.record_request(Operation::CreateSecurityGroup, "fatal", Duration::from_millis(30));
    let text = metrics.render();
    for id in ["sg-", "vpc-", "i-0"] {
        assert!(!text.lines().filter(|l| !l.starts_with('#')).any(|l| l.contains(id)), "{id} in a label:\n{text}");
    }
    let allowed: BTreeMap<&str, Vec<String>> = BTreeMap::from([
        ("outcome", {
            let mut v: Vec<String> = CycleOutcome::VARIANTS.iter().map(|o| o.as_str().to_owned()).collect();
            v.extend(OutcomeKind::VARIANTS.iter().map(|k| k.as_str().to_owned()));
            v.extend(ErrorKind::VARIANTS.iter().map(|k| k.as_str().to_owned()));
            v.extend(["ok", "applied", "rejected"].map(str::to_owned));
            v.extend(RetryOutcome::VARIANTS.iter().map(|o| o.as_str().to_owned()));
            v
        }),
        ("kind", {
            let mut v: Vec<String> = ActionKind::VARIANTS.iter().map(|k| k.as_str().to_owned()).collect();
            v.extend(CONFLICT_KINDS.iter().filter_map(WarningKind::conflict_kind).map(str::to_owned));
            v.extend(STATE_FILE_ERROR_KINDS.map(str::to_owned));
            v.extend(RepairKind::VARIANTS.iter().map(|k| k.as_str().to_owned()));
            v
        }),
        ("operation", Operation::VARIANTS.iter().map(|o| o.as_str().to_owned()).collect()),
        ("reason", DEFERRED_REASONS.map(str::to_owned).to_vec()),
        ("direction", DRIFT_DIRECTIONS.map(str::to_owned).to_vec()),
        ("part", SnapshotPart::VARIANTS.iter().map(|p| p.as_str().to_owned()).collect()),
        ("version", vec![env!("CARGO_PKG_VERSION").to_owned()]),
        ("le", Vec::new()),
    ]);
    for sample in parse_exposition(&text).unwrap() {
        for (label, value) in &sample.labels {
            let Some(values) = allowed.get(label.as_str()) else { panic!("unexpected label {label}") };
            assert!(label == "le" || values.contains(value), "{} has {label}={value}", sample.name);
        }
    }
}

#[test]
fn gauges_describe_the_last_pass_and_reset_when_it_is_clean() {
    let metrics = Metrics::new();
    metrics.record_pass(&busy_pass(), t0());
    let s = samples(&metrics);
    assert_eq!(get(&s, "managed_pairs", &[]), 2.0);
    assert_eq!(get(&s, "drift_grants", &[("direction", "add")]), 3.0);
    assert_eq!(get(&s, "drift_grants", &[("direction", "remove")]), 1.0);
    assert_eq!(get(&s, "drift_grants", &[("direction", "update")]), 2.0);
    assert_eq!(get(&s, "drift_links", &[]), 1.0);
    assert_eq!(get(&s, "unmirrorable_grants", &[]), 1.0);
    assert_eq!(get(&s, "conflicts", &[("kind", "name_taken")]), 1.0);
    assert_eq!(get(&s, "conflicts", &[("kind", "foreign_link")]), 2.0);
    assert_eq!(get(&s, "conflicts", &[("kind", "multi_vpc")]), 0.0);
    assert_eq!(get(&s, "orphans", &[]), 1.0);
    assert_eq!(get(&s, "safety_hold", &[]), 1.0);

    let web = key("sg-0a1", "vpc-9f2");
    let clean = PassBuilder::new().pair(&web, "web", Some(existing("sg-77c")), Drift::default()).build();
    metrics.record_pass(&clean, t0() + Duration::from_secs(30));
    let s = samples(&metrics);
    assert_eq!(get(&s, "managed_pairs", &[]), 1.0);
    for direction in DRIFT_DIRECTIONS {
        assert_eq!(get(&s, "drift_grants", &[("direction", direction)]), 0.0);
    }
    assert_eq!(get(&s, "drift_links", &[]), 0.0);
    assert_eq!(get(&s, "unmirrorable_grants", &[]), 0.0);
    assert!(series(&s, &name("conflicts")).iter().all(|c| c.value == 0.0), "a conflict survived: {s:?}");
    assert_eq!(get(&s, "orphans", &[]), 0.0);
    assert_eq!(get(&s, "safety_hold", &[]), 0.0);
}

#[test]
fn an_incomplete_snapshot_is_a_safety_hold_and_an_incomplete_cycle() {
    let metrics = Metrics::new();
    let pass = PassBuilder::new().incomplete(SnapshotPart::Links).build();
    assert_eq!(metrics.record_pass(&pass, t0()), CycleOutcome::Incomplete);
    let s = samples(&metrics);
    assert_eq!(get(&s, "safety_hold", &[]), 1.0);
    assert_eq!(get(&s, "cycles_total", &[("outcome", "incomplete")]), 1.0);
    assert_eq!(get(&s, "observe_errors_total", &[("part", "links")]), 1.0);
    assert_eq!(get(&s, "last_successful_cycle_timestamp_seconds", &[]), 0.0);
}

#[test]
fn cycle_outcomes_classify_passes() {
    let web = key("sg-0a1", "vpc-9f2");
    let ok = PassBuilder::new().action(attach("i-0b3", "vpc-9f2", "sg-77c"), Some(&web), ActionResult::Done);
    assert_eq!(CycleOutcome::of(&ok.build()), CycleOutcome::Success);
    let audited = PassBuilder::new().action(attach("i-0b3", "vpc-9f2", "sg-77c"), None, ActionResult::Audit);
    assert_eq!(CycleOutcome::of(&audited.build()), CycleOutcome::Success);
    let failed = PassBuilder::new().action(
        attach("i-0b3", "vpc-9f2", "sg-77c"),
        None,
        ec2_failure(Operation::AttachClassicLinkVpc, "X"),
    );
    assert_eq!(CycleOutcome::of(&failed.build()), CycleOutcome::Partial);
    let cancelled = PassBuilder::new().action(attach("i-0b3", "vpc-9f2", "sg-77c"), None, ActionResult::Cancelled);
    assert_eq!(CycleOutcome::of(&cancelled.build()), CycleOutcome::Partial);
    let incomplete = PassBuilder::new().incomplete(SnapshotPart::Instances).action(
        attach("i-0b3", "vpc-9f2", "sg-77c"),
        None,
        ec2_failure(Operation::AttachClassicLinkVpc, "X"),
    );
    assert_eq!(CycleOutcome::of(&incomplete.build()), CycleOutcome::Incomplete);
    let blind = PassBuilder::new().incomplete(SnapshotPart::Links).incomplete(SnapshotPart::SourceGroups);
    assert_eq!(CycleOutcome::of(&blind.build()), CycleOutcome::Failed);
}

#[test]
fn counters_accumulate_cycles_actions_and_deferrals() {
    let metrics = Metrics::new();
    let started = t0();
    assert_eq!(metrics.record_pass(&busy_pass(), started), CycleOutcome::Partial);
    assert_eq!(metrics.record_pass(&busy_pass(), started + Duration::from_secs(30)), CycleOutcome::Partial);
    let clean = PassBuilder::new().build();
    assert_eq!(metrics.record_pass(&clean, started + Duration::from_secs(60)), CycleOutcome::Success);
    let mut blind = PassBuilder::new().incomplete(SnapshotPart::SourceGroups).build();
    blind.duration = Duration::from_secs(2);
    assert_eq!(metrics.record_pass(&blind, started + Duration::from_secs(90)), CycleOutcome::Failed);
    let s = samples(&metrics);
    assert_eq!(get(&s, "cycles_total", &[("outcome", "partial")]), 2.0);
    assert_eq!(get(&s, "cycles_total", &[("outcome", "success")]), 1.0);
    assert_eq!(get(&s, "cycles_total", &[("outcome", "failed")]), 1.0);
    assert_eq!(get(&s, "cycle_duration_seconds_count", &[]), 4.0);
    assert_eq!(get(&s, "cycle_duration_seconds_sum", &[]), 1.5 * 3.0 + 2.0);
    assert_eq!(get(&s, "cycle_duration_seconds_bucket", &[("le", "1")]), 0.0);
    assert_eq!(get(&s, "cycle_duration_seconds_bucket", &[("le", "2.5")]), 4.0);
    assert_eq!(get(&s, "actions_total", &[("kind", "attach"), ("outcome", "done")]), 2.0);
    assert_eq!(get(&s, "actions_total", &[("kind", "enable_classiclink"), ("outcome", "failed")]), 2.0);
    assert_eq!(get(&s, "actions_deferred_total", &[("reason", "revoke_cap")]), 8.0);
    assert_eq!(get(&s, "actions_deferred_total", &[("reason", "delete_cap")]), 2.0);
    assert_eq!(get(&s, "actions_deferred_total", &[("reason", "unlink_cap")]), 4.0);
    assert_eq!(get(&s, "actions_deferred_total", &[("reason", "quota")]), 6.0);
    assert_eq!(get(&s, "actions_deferred_total", &[("reason", "safety_hold")]), 0.0);
    // The last success is the clean pass's end: its start plus 1.5 s.
    let expected = (started + Duration::from_secs(60) + Duration::from_millis(1500))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(get(&s, "last_successful_cycle_timestamp_seconds", &[]), expected);
}

#[test]
fn reloads_are_counted_and_the_last_one_is_remembered() {
    let metrics = Metrics::new();
    metrics.record_reload(ReloadOutcome::Applied);
    metrics.record_reload(ReloadOutcome::Rejected);
    let s = samples(&metrics);
    assert_eq!(get(&s, "config_reloads_total", &[("outcome", "applied")]), 1.0);
    assert_eq!(get(&s, "config_reloads_total", &[("outcome", "rejected")]), 1.0);
    assert_eq!(get(&s, "config_last_reload_successful", &[]), 0.0);
    metrics.record_reload(ReloadOutcome::Applied);
    assert_eq!(get(&samples(&metrics), "config_last_reload_successful", &[]), 1.0);
}

#[test]
fn fights_and_another_writer_are_counted_and_the_fights_gauge_follows_the_last_pass() {
    use crate::plan::{Fight, FightKey};
    let metrics = Metrics::new();
    let s = samples(&metrics);
    for kind in RepairKind::VARIANTS {
        assert_eq!(get(&s, "fights_total", &[("kind", kind.as_str())]), 0.0);
        assert_eq!(get(&s, "fights", &[("kind", kind.as_str())]), 0.0);
    }
    assert_eq!(get(&s, "other_writer_passes_total", &[]), 0.0);
    assert_eq!(get(&s, "actions_deferred_total", &[("reason", "fight")]), 0.0);

    let web = key("sg-0a1", "vpc-9f2");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let fight = Fight {
        pair: web.clone(),
        kind: RepairKind::Grant,
        since: at,
        repairs: 1,
        retry_after: at + Duration::from_secs(60),
        principal: None,
    };
    let mut pass = PassBuilder::new().deferred(Deferred { fights: 2, ..Deferred::default() }).build();
    pass.fights = vec![fight];
    pass.fights_started = vec![FightKey { pair: web, kind: RepairKind::Grant }];
    pass.other_writer = true;
    metrics.record_pass(&pass, at);
    let s = samples(&metrics);
    assert_eq!(get(&s, "fights_total", &[("kind", "grant")]), 1.0);
    assert_eq!(get(&s, "fights", &[("kind", "grant")]), 1.0);
    assert_eq!(get(&s, "other_writer_passes_total", &[]), 1.0);
    assert_eq!(get(&s, "actions_deferred_total", &[("reason", "fight")]), 2.0);

    // The fight goes on (not counted again), then ends.
    pass.fights_started.clear();
    pass.other_writer = false;
    metrics.record_pass(&pass, at);
    pass.fights.clear();
    metrics.record_pass(&pass, at);
    let s = samples(&metrics);
    assert_eq!(get(&s, "fights_total", &[("kind", "grant")]), 1.0);
    assert_eq!(get(&s, "fights", &[("kind", "grant")]), 0.0);
    assert_eq!(get(&s, "other_writer_passes_total", &[]), 1.0);
}

#[test]
fn state_file_errors_are_counted_by_kind_from_zero() {
    let metrics = Metrics::new();
    let s = samples(&metrics);
    for kind in STATE_FILE_ERROR_KINDS {
        assert_eq!(get(&s, "state_file_errors_total", &[("kind", kind)]), 0.0, "{kind}");
    }
    // Every kind the state module can report has a pre-registered label.
    let dir = tempfile::tempdir().unwrap();
    let error = crate::state::StateFile::new(dir.path().join("missing")).save(&crate::plan::Memory::default());
    let kind = error.unwrap_err().kind();
    assert!(STATE_FILE_ERROR_KINDS.contains(&kind));
    metrics.record_state_file_error(kind);
    metrics.record_state_file_error("corrupt");
    let s = samples(&metrics);
    assert_eq!(get(&s, "state_file_errors_total", &[("kind", "write")]), 1.0);
    assert_eq!(get(&s, "state_file_errors_total", &[("kind", "corrupt")]), 1.0);
}

#[test]
fn request_observer_counts_attempts_latency_and_throttles() {
    let metrics = Metrics::new();
    let observer = metrics.request_observer();
    observer.record(Operation::DescribeInstances, REQUEST_OK, Duration::from_millis(40));
    observer.record(Operation::DescribeInstances, "throttled", Duration::from_millis(8));
    observer.record(Operation::AuthorizeSecurityGroupIngress, "duplicate", Duration::from_millis(120));
    let s = samples(&metrics);
    assert_eq!(get(&s, "aws_requests_total", &[("operation", "DescribeInstances"), ("outcome", "ok")]), 1.0);
    assert_eq!(get(&s, "aws_requests_total", &[("operation", "DescribeInstances"), ("outcome", "throttled")]), 1.0);
    assert_eq!(
        get(&s, "aws_requests_total", &[("operation", "AuthorizeSecurityGroupIngress"), ("outcome", "duplicate")]),
        1.0
    );
    assert_eq!(get(&s, "throttled_requests_total", &[]), 1.0);
    assert_eq!(get(&s, "aws_request_duration_seconds_count", &[("operation", "DescribeInstances")]), 2.0);
    assert_eq!(
        get(&s, "aws_request_duration_seconds_bucket", &[("operation", "DescribeInstances"), ("le", "0.01")]),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_through_the_limiter_is_observed_retries_included() {
    use crate::emulator::{Emulator, EmulatorOptions, ErrorInjection, Faults};
    use crate::model::{GroupId, VpcId};
    let metrics = Metrics::new();
    let emu = Emulator::new(EmulatorOptions::default());
    emu.set_faults(Faults {
        errors: ErrorInjection {
            per_operation: BTreeMap::from([(Operation::DescribeVpcClassicLink, 1.0)]),
            codes: vec!["RequestLimitExceeded".into()],
            ..ErrorInjection::default()
        },
        ..Faults::none()
    });
    let config = crate::config::Config::with_region("us-east-1");
    let retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        throttled_base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let ec2 = Limited::new(emu, &config.rate_limit).with_retry(retry).with_observer(metrics.request_observer());
    use crate::ec2::Ec2;
    let error = ec2.describe_vpc_classic_link(&[VpcId::try_new("vpc-1").unwrap()]).await.unwrap_err();
    assert_eq!(error.code, "RequestLimitExceeded");
    let missing = ec2.delete_security_group(&GroupId::try_new("sg-1").unwrap()).await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    let s = samples(&metrics);
    let throttled = [("operation", "DescribeVpcClassicLink"), ("outcome", "throttled")];
    assert_eq!(get(&s, "aws_requests_total", &throttled), 4.0);
    assert_eq!(get(&s, "throttled_requests_total", &[]), 4.0);
    let not_found = [("operation", "DeleteSecurityGroup"), ("outcome", "not_found")];
    assert_eq!(get(&s, "aws_requests_total", &not_found), 1.0);
    // Three retries, then the fourth attempt was the last; a not-found is
    // never retried.
    assert_eq!(get(&s, "aws_retries_total", &[("outcome", "retried")]), 3.0);
    assert_eq!(get(&s, "aws_retries_total", &[("outcome", "max_attempts")]), 1.0);
    assert_eq!(get(&s, "aws_retries_total", &[("outcome", "quota_empty")]), 0.0);
    assert_eq!(get(&s, "aws_retry_quota_tokens", &[("account", "aws")]), f64::from(500 - 3 * 5));
}

#[test]
fn the_retry_quota_of_each_account_is_its_own_series_not_one_gauge_every_client_overwrote() {
    use crate::emulator::{Emulator, EmulatorOptions};
    let metrics = Metrics::new();
    let config = crate::config::Config::with_region("us-east-1");
    // Each client reports its full quota when it is made.
    let _source = Limited::new(Emulator::new(EmulatorOptions::default()), &config.rate_limit)
        .with_observer(metrics.account_request_observer("source"));
    let _home = Limited::new(Emulator::new(EmulatorOptions::default()), &config.rate_limit)
        .with_observer(metrics.request_observer());
    metrics.account_request_observer("source").retry_quota(0);
    metrics.account_request_observer("target").retry_quota(125);
    let s = samples(&metrics);
    assert_eq!(get(&s, "aws_retry_quota_tokens", &[("account", "source")]), 0.0);
    assert_eq!(get(&s, "aws_retry_quota_tokens", &[("account", "target")]), 125.0);
    assert_eq!(get(&s, "aws_retry_quota_tokens", &[("account", "aws")]), 500.0, "the [aws] client's, untouched");

    // A reload leaves no mirror reaching `target`: its series goes.
    metrics.retain_retry_quotas(&BTreeSet::from(["aws".to_owned(), "source".to_owned()]));
    let s = samples(&metrics);
    assert!(value(&s, &name("aws_retry_quota_tokens"), &[("account", "target")]).is_none());
    assert_eq!(get(&s, "aws_retry_quota_tokens", &[("account", "source")]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_real_pass_against_the_emulator_is_measured() {
    use crate::config::{Config, MirrorConfig, SourceRef};
    use crate::emulator::{Emulator, EmulatorOptions, IpPermission, NewGroup, NewVpc, RunInstances};
    use crate::model::{Grant, GroupId, Peer, Ports, Protocol};
    use crate::plan::Memory;
    use crate::reconcile::{execute_options, reconcile_once};

    let emu = Emulator::new(EmulatorOptions::default());
    let vpc_id = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = emu.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
    let app = emu.create_group(&NewGroup::classic("app", "App tier")).await.unwrap();
    let grants = [
        Grant::new(Protocol::Tcp, Ports::Range { from: 443, to: 443 }, Peer::Ipv4("0.0.0.0/0".parse().unwrap()), None),
        Grant::new(
            Protocol::Tcp,
            Ports::Range { from: 80, to: 80 },
            Peer::Group { group: GroupId::try_new("sg-843f59ed").unwrap(), owner: Some("amazon-elb".into()) },
            None,
        ),
    ];
    let account = emu.account_id();
    let permissions: Vec<IpPermission> = grants.iter().map(|g| IpPermission::from_grant(g, &account)).collect();
    emu.authorize_permissions(&web, &permissions).await.unwrap();
    emu.run_instances(&RunInstances::classic([web.clone()]).count(2)).await.unwrap();
    let mut config = Config::with_region("us-east-1");
    config.discovery.tag_key = None;
    for source in [&web, &app] {
        config.mirrors.push(MirrorConfig::new(SourceRef::Id(source.clone()), vpc_id.clone()));
    }

    let metrics = Metrics::new();
    let ec2 = Limited::new(emu, &config.rate_limit).with_observer(metrics.request_observer());
    let mut memory = Memory::default();
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = execute_options(&config);
    let first = reconcile_once(&ec2, &config, &mut memory, t0(), &options, &cancel).await;
    assert_eq!(metrics.record_pass(&first, t0()), CycleOutcome::Success);
    let s = samples(&metrics);
    assert_eq!(get(&s, "managed_pairs", &[]), 2.0);
    assert_eq!(get(&s, "unmirrorable_grants", &[]), 1.0);
    assert_eq!(get(&s, "drift_links", &[]), 2.0);
    assert_eq!(get(&s, "drift_grants", &[("direction", "add")]), 1.0);
    assert_eq!(get(&s, "actions_total", &[("kind", "create_mirror"), ("outcome", "done")]), 2.0);
    assert_eq!(get(&s, "actions_total", &[("kind", "attach"), ("outcome", "done")]), 2.0);
    let creates = [("operation", "CreateSecurityGroup"), ("outcome", "ok")];
    assert_eq!(get(&s, "aws_requests_total", &creates), 2.0);
    assert!(get(&s, "aws_requests_total", &[("operation", "DescribeSecurityGroups"), ("outcome", "ok")]) >= 1.0);
    assert!(get(&s, "last_successful_cycle_timestamp_seconds", &[]) >= 1.8e9);

    let second = reconcile_once(&ec2, &config, &mut memory, t0() + Duration::from_secs(30), &options, &cancel).await;
    metrics.record_pass(&second, t0() + Duration::from_secs(30));
    let s = samples(&metrics);
    assert_eq!(get(&s, "drift_links", &[]), 0.0);
    assert_eq!(get(&s, "drift_grants", &[("direction", "add")]), 0.0);
    assert_eq!(get(&s, "unmirrorable_grants", &[]), 1.0, "still reported while the source has it");
    assert_eq!(get(&s, "cycles_total", &[("outcome", "success")]), 2.0);
    assert_eq!(get(&s, "aws_requests_total", &creates), 2.0, "a converged pass writes nothing");
}

#[test]
fn the_exposition_checker_rejects_malformed_lines() {
    for bad in [
        "foo 1",                             // no # TYPE
        "# TYPE foo counter\nfoo{a=\"x\" 1", // unterminated labels
        "# TYPE foo counter\nfoo{a=x} 1",    // unquoted value
        "# TYPE foo counter\nfoo one",       // bad value
        "# TYPE foo bogus\nfoo 1",           // bad type
        "# TYPE 9foo counter\n9foo 1",       // bad name
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
    let good =
        "# HELP foo Help.\n# TYPE foo histogram\nfoo_bucket{le=\"+Inf\",a=\"x\\\"y\"} 3\nfoo_sum 1.5\nfoo_count 3\n";
    let samples = parse_exposition(good).unwrap();
    assert_eq!(samples[0].labels["a"], "x\"y");
}

/// Fails to compile when a variant is added without being listed.
#[test]
fn label_lists_are_exhaustive() {
    for kind in ErrorKind::VARIANTS.iter().copied() {
        match kind {
            ErrorKind::Throttled
            | ErrorKind::NotFound
            | ErrorKind::Duplicate
            | ErrorKind::Dependency
            | ErrorKind::Invalid
            | ErrorKind::Transient
            | ErrorKind::Fatal => {}
        }
    }
    assert_eq!(ErrorKind::VARIANTS.len(), 7);
    let every_result = |result: &ActionResult| match result {
        ActionResult::Done
        | ActionResult::AlreadyDone
        | ActionResult::Failed(_)
        | ActionResult::Skipped
        | ActionResult::Audit
        | ActionResult::Cancelled
        | ActionResult::Yielded => result.label(),
    };
    let failed = ec2_failure(Operation::CreateTags, "X");
    for result in [
        ActionResult::Done,
        ActionResult::AlreadyDone,
        failed,
        ActionResult::Skipped,
        ActionResult::Audit,
        ActionResult::Cancelled,
        ActionResult::Yielded,
    ] {
        assert!(OutcomeKind::VARIANTS.iter().any(|k| k.as_str() == every_result(&result)));
    }
    for kind in CONFLICT_KINDS {
        assert!(kind.conflict_kind().is_some(), "{kind:?} is not a conflict");
    }
}

#[test]
fn every_declared_metric_is_exposed_and_documented() {
    let metrics = Metrics::new();
    // A target's series exist once its loop has started.
    metrics.record_target_started("aws");
    // An account's retry quota, once its client is made.
    metrics.record_retry_quota("aws", 500);
    let text = metrics.render();
    let docs = include_str!("../../docs/metrics.md");
    let declared = [
        passes::PassMetrics::NAMES,
        requests::RequestMetrics::NAMES,
        process::ProcessMetrics::NAMES,
        targets::TargetMetrics::NAMES,
    ];
    for metric in declared.concat() {
        assert!(text.contains(&format!("# TYPE {} ", name(metric))), "{metric} is not exposed:\n{text}");
        assert!(docs.contains(&format!("`{metric}")), "{metric} is not in docs/metrics.md");
    }
}

#[test]
fn a_target_s_series_follow_its_passes_and_go_with_it() {
    let metrics = Metrics::new();
    metrics.record_target_started("b");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    metrics.record_target_pass("b", CycleOutcome::Success, 0, at);
    metrics.record_target_pass("b", CycleOutcome::Failed, 1, at + Duration::from_secs(60));
    let text = metrics.render();
    assert!(text.contains("classiclink_mirror_target_up{account=\"b\"} 0"), "{text}");
    assert!(text.contains("classiclink_mirror_target_passes_total{account=\"b\",outcome=\"failed\"} 1"), "{text}");
    assert!(text.contains("classiclink_mirror_target_passes_total{account=\"b\",outcome=\"success\"} 1"), "{text}");
    assert!(text.contains("classiclink_mirror_target_consecutive_failures{account=\"b\"} 1"), "{text}");
    assert!(
        text.contains("classiclink_mirror_target_last_success_timestamp_seconds{account=\"b\"} 1800000000"),
        "{text}"
    );
    metrics.record_target_stopped("b");
    assert!(!metrics.render().contains("account=\"b\""), "a removed target leaves no series");
}
