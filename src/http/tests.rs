use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strum::VariantArray as _;

use axum::http::{StatusCode, header};

use crate::config::Config;
use crate::execute::ActionResult;
use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::model::SnapshotPart;
use crate::observe::ObserveError;
use crate::plan::{Action, Deferred, Drift, GroupRef};
use crate::reconcile::{CycleOutcome, Phase};
use std::collections::BTreeMap;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::ec2::Operation;
use crate::metrics::test_support::*;
use crate::metrics::{PREFIX, ReloadOutcome};
use crate::plan::WarningKind;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn config(interval: Duration) -> Config {
    let mut config = Config::with_region("us-east-1");
    config.daemon.interval = interval;
    config
}

fn state() -> State {
    State::with_clock(Metrics::new(), &config(Duration::from_secs(30)), Arc::new(t0))
}

async fn get(state: &State, path: &str) -> (StatusCode, String, String) {
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let code = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = to_bytes(response.into_body(), 16 << 20).await.unwrap();
    (code, content_type, String::from_utf8(body.to_vec()).unwrap())
}

async fn status_json(state: &State) -> Value {
    let (code, content_type, body) = get(state, "/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    serde_json::from_str(&body).unwrap()
}

fn pair<'a>(status: &'a Value, source: &str) -> &'a Value {
    status["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source"]["id"] == source)
        .unwrap_or_else(|| panic!("no pair {source} in {status:#}"))
}

#[tokio::test]
async fn readyz_is_503_until_the_first_complete_snapshot_then_stays_200() {
    let state = state();
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    state.record_pass(&PassBuilder::new().incomplete(SnapshotPart::Instances).build(), t0());
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!state.is_ready());
    state.record_pass(&PassBuilder::new().build(), t0() + Duration::from_secs(30));
    assert!(state.is_ready());
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
    state.record_pass(&PassBuilder::new().incomplete(SnapshotPart::Links).build(), t0() + Duration::from_secs(60));
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn healthz_turns_503_when_cycles_stop() {
    let state = state();
    let step = |secs| tokio::time::advance(Duration::from_secs(secs));
    // Grace after start: three intervals of 30 s.
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    step(89).await;
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    step(2).await;
    let (code, _, body) = get(&state, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("no cycle yet"), "{body}");

    state.cycle_started();
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    for _ in 0..5 {
        step(30).await;
        state.cycle_started();
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    }
    step(90).await;
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    step(1).await;
    let (code, _, body) = get(&state, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("91s ago (limit 90s)"), "{body}");

    // A reload to a longer interval widens the window.
    state.apply_config(&config(Duration::from_secs(60)));
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_endpoint_serves_the_text_format_with_every_spec_metric() {
    let state = state();
    state.record_pass(&PassBuilder::new().build(), t0());
    state.metrics().record_reload(ReloadOutcome::Rejected);
    let (code, content_type, body) = get(&state, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}"));
    for metric in CONTRACT_METRICS {
        assert!(body.contains(&format!("# TYPE {PREFIX}_{metric} ")), "{metric} missing");
    }
    let name = format!("{PREFIX}_config_reloads_total");
    assert_eq!(value(&samples, &name, &[("outcome", "rejected")]), Some(1.0));
    let name = format!("{PREFIX}_cycles_total");
    assert_eq!(value(&samples, &name, &[("outcome", "success")]), Some(1.0));
}

#[tokio::test]
async fn status_names_the_pairs_in_a_fight_and_shows_another_writer() {
    use crate::plan::{Fight, RepairKind};
    let state = state();
    let web = key("sg-0a1", "vpc-9f2");
    let mut pass = PassBuilder::new()
        .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 1, remove: 0, update: 0, links: 0 })
        .deferred(Deferred { fights: 1, ..Deferred::default() })
        .build();
    pass.fights = vec![Fight {
        pair: web,
        kind: RepairKind::Grant,
        since: t0(),
        repairs: 2,
        retry_after: t0() + Duration::from_secs(120),
        principal: None,
    }];
    pass.other_writer = true;
    state.record_pass(&pass, t0());
    let status = status_json(&state).await;
    assert_eq!(
        status["fights"],
        serde_json::json!([{
            "source": "sg-0a1",
            "vpc": "vpc-9f2",
            "kind": "grant",
            "since": "2027-01-15T08:00:00Z",
            "repairs": 2,
            "next_repair_at": "2027-01-15T08:02:00Z",
            "principal": null,
        }])
    );
    assert_eq!(status["deferred"]["fights"], 1);
    assert_eq!(status["last_cycle"]["other_writer"], true);
    assert_eq!(status["last_cycle"]["actions"]["yielded"], 0);
}

#[tokio::test]
async fn status_shows_conflicts_and_keeps_the_last_error_across_passes() {
    let state = state();
    let web = key("sg-0a1", "vpc-9f2");
    let app = key("sg-0a2", "vpc-9f2");
    let db = key("sg-0a3", "vpc-9f2");
    let failing = PassBuilder::new()
        .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 1, remove: 0, update: 0, links: 0 })
        .pair(&app, "app", None, Drift::default())
        .pair(&db, "db", Some(GroupRef::New { source: group("sg-0a3"), vpc: vpc("vpc-9f2") }), Drift::default())
        .action(
            Action::Authorize { group: existing("sg-77c"), grants: Vec::new() },
            Some(&web),
            ec2_failure(Operation::AuthorizeSecurityGroupIngress, "UnauthorizedOperation"),
        )
        .action(
            Action::CreateMirror {
                source: group("sg-0a3"),
                vpc: vpc("vpc-9f2"),
                name: "db".into(),
                description: "Database".into(),
                tags: BTreeMap::new(),
            },
            Some(&db),
            ActionResult::Done,
        )
        .created(&db, "sg-77e")
        .warning(WarningKind::ConflictNameTaken, Some(&app), "group app in vpc-9f2 exists and is not ours")
        .warning(WarningKind::Unmirrorable, Some(&web), "sg-0a1 rule tcp 80 from sg-0ff cannot be mirrored")
        .warning(WarningKind::ConflictForeignLink, None, "i-0b9 is linked to vpc-111 by someone else")
        .orphan("sg-99e", "vpc-9f2", "sg-0a9")
        .build();
    assert_eq!(state.record_pass(&failing, t0()), CycleOutcome::Partial);

    let status = status_json(&state).await;
    assert_eq!(status["version"], 1);
    assert_eq!(status["daemon_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["generated_at"], "2027-01-15T08:00:00Z");
    assert_eq!(status["mode"], "enforce");
    assert_eq!(status["ready"], true);
    assert_eq!(status["last_cycle"]["outcome"], "partial");
    assert_eq!(status["last_cycle"]["started_at"], "2027-01-15T08:00:00Z");
    assert_eq!(status["last_cycle"]["actions"]["failed"], 1);
    assert_eq!(status["last_successful_cycle_at"], Value::Null);
    let web_status = pair(&status, "sg-0a1");
    assert_eq!(web_status["source"]["name"], "web");
    assert_eq!(web_status["mirror"], serde_json::json!({"id": "sg-77c", "name": "web", "state": "existing"}));
    assert_eq!(web_status["in_sync"], false);
    assert_eq!(web_status["drift"]["add"], 1);
    assert_eq!(web_status["warnings"][0]["kind"], "unmirrorable");
    let error = &web_status["last_error"];
    assert_eq!(error["action"], "authorize");
    assert_eq!(error["subject"], "sg-77c");
    assert_eq!(error["kind"], "fatal");
    assert_eq!(error["code"], "UnauthorizedOperation");
    assert_eq!(error["at"], "2027-01-15T08:00:01Z");
    assert!(error["message"].as_str().unwrap().contains("UnauthorizedOperation"));
    assert_eq!(web_status["last_success_at"], Value::Null);
    let app_status = pair(&status, "sg-0a2");
    assert_eq!(app_status["mirror"]["state"], "unavailable");
    assert_eq!(app_status["mirror"]["id"], Value::Null);
    assert_eq!(app_status["conflicts"][0]["kind"], "name_taken");
    assert_eq!(app_status["conflicts"][0]["message"], "group app in vpc-9f2 exists and is not ours");
    assert_eq!(app_status["warnings"], serde_json::json!([]));
    let db_status = pair(&status, "sg-0a3");
    assert_eq!(db_status["mirror"]["state"], "created");
    assert_eq!(db_status["mirror"]["id"], "sg-77e");
    assert_eq!(db_status["last_success_at"], "2027-01-15T08:00:01Z", "all its actions succeeded");
    assert_eq!(status["warnings"][0]["conflict"], "foreign_link");
    assert_eq!(status["orphans"][0]["group"], "sg-99e");
    assert_eq!(status["orphans"][0]["since"], "2023-11-14T22:13:20Z");
    assert_eq!(status["orphans"][0]["deletion_due_at"], "2023-11-14T22:23:20Z");

    // Next pass: web is in sync; its last error stays, with a later success.
    let healed = PassBuilder::new()
        .pair(&web, "web", Some(existing("sg-77c")), Drift::default())
        .pair(&app, "app", None, Drift::default())
        .warning(WarningKind::ConflictNameTaken, Some(&app), "group app in vpc-9f2 exists and is not ours")
        .build();
    assert_eq!(state.record_pass(&healed, t0() + Duration::from_secs(30)), CycleOutcome::Success);
    let status = status_json(&state).await;
    let web_status = pair(&status, "sg-0a1");
    assert_eq!(web_status["in_sync"], true);
    assert_eq!(web_status["last_error"]["code"], "UnauthorizedOperation");
    assert_eq!(web_status["last_success_at"], "2027-01-15T08:00:31Z");
    assert_eq!(status["last_successful_cycle_at"], "2027-01-15T08:00:31Z");
    assert_eq!(status["pairs"].as_array().unwrap().len(), 2, "db is no longer managed");
    assert_eq!(status["orphans"], serde_json::json!([]));
    assert_eq!(status["warnings"], serde_json::json!([]));

    // The document is the typed one.
    let typed: StatusDocument = serde_json::from_value(status).unwrap();
    assert_eq!(typed.pairs[0].source.name, "web");
}

#[tokio::test]
async fn history_survives_a_pass_that_could_not_see_the_sources() {
    let state = state();
    let web = key("sg-0a1", "vpc-9f2");
    let failing = PassBuilder::new()
        .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 1, remove: 0, update: 0, links: 0 })
        .action(
            Action::Authorize { group: existing("sg-77c"), grants: Vec::new() },
            Some(&web),
            ec2_failure(Operation::AuthorizeSecurityGroupIngress, "InvalidParameterValue"),
        )
        .build();
    state.record_pass(&failing, t0());
    let blind = PassBuilder::new().incomplete(SnapshotPart::SourceGroups).build();
    assert_eq!(state.record_pass(&blind, t0() + Duration::from_secs(30)), CycleOutcome::Failed);
    let status = status_json(&state).await;
    assert_eq!(status["pairs"], serde_json::json!([]));
    assert_eq!(status["holds"]["destructive_held"], true);
    assert_eq!(status["holds"]["incomplete"], serde_json::json!(["source_groups"]));
    assert_eq!(status["last_cycle"]["observe_errors"][0]["part"], "source_groups");
    assert_eq!(status["last_cycle"]["observe_errors"][0]["code"], "RequestLimitExceeded");

    let back = PassBuilder::new().pair(&web, "web", Some(existing("sg-77c")), Drift::default()).build();
    state.record_pass(&back, t0() + Duration::from_secs(60));
    let status = status_json(&state).await;
    assert_eq!(pair(&status, "sg-0a1")["last_error"]["code"], "InvalidParameterValue");
}

#[tokio::test]
async fn a_pass_under_way_is_shown_with_its_phase_and_the_describes_failing_so_far() {
    let state = state();
    assert_eq!(status_json(&state).await["current_cycle"], Value::Null);
    state.cycle_started();
    let status = status_json(&state).await;
    assert_eq!(status["current_cycle"]["phase"], "observing");
    assert_eq!(status["current_cycle"]["started_at"], "2027-01-15T08:00:00Z");
    assert_eq!(status["current_cycle"]["observe_errors"], serde_json::json!([]));
    let failure = ObserveError {
        part: SnapshotPart::SourceGroups,
        source: crate::ec2::Ec2Error::new(Operation::DescribeSecurityGroups, "InternalError", "boom"),
    };
    state.describe_failed(&failure);
    state.describe_failed(&failure);
    let status = status_json(&state).await;
    let current = &status["current_cycle"];
    assert_eq!(current["incomplete"], serde_json::json!(["source_groups"]));
    assert_eq!(current["observe_errors"].as_array().unwrap().len(), 2);
    assert_eq!(current["observe_errors"][0]["code"], "InternalError");
    assert_eq!(current["observe_errors"][0]["kind"], "transient");
    assert_eq!(status["last_cycle"], Value::Null, "no cycle finished yet");
    state.pass_phase(Phase::Planning);
    state.pass_planned(0);
    state.pass_phase(Phase::Executing);
    state.action_finished(&ActionResult::Done);
    state.action_finished(&ActionResult::Done);
    state.action_finished(&ActionResult::Skipped);
    let status = status_json(&state).await;
    assert_eq!(status["current_cycle"]["phase"], "executing");
    assert_eq!(status["current_cycle"]["actions_planned"], 0);
    assert_eq!(status["current_cycle"]["actions"], serde_json::json!({"done": 2, "skipped": 1}));

    // It ends as what it was, and is no longer under way.
    let blind = PassBuilder::new().incomplete(SnapshotPart::SourceGroups).build();
    assert_eq!(state.record_pass(&blind, t0()), CycleOutcome::Failed);
    let status = status_json(&state).await;
    assert_eq!(status["current_cycle"], Value::Null);
    assert_eq!(status["last_cycle"]["outcome"], "failed");
    assert_eq!(status["holds"]["incomplete"], serde_json::json!(["source_groups"]));
    assert_eq!(status["holds"]["destructive_held"], true);
}

#[tokio::test]
async fn a_pass_stopped_during_observation_is_recorded_as_failed_with_why_and_no_actions() {
    let state = state();
    state.cycle_started();
    let mut stopped = PassBuilder::new().build();
    stopped.snapshot.incomplete.extend(SnapshotPart::VARIANTS.iter().copied());
    stopped.interrupted = true;
    assert_eq!(state.record_pass(&stopped, t0()), CycleOutcome::Failed);
    let status = status_json(&state).await;
    assert_eq!(status["last_cycle"]["outcome"], "failed");
    assert_eq!(status["last_cycle"]["error"], INTERRUPTED_OBSERVATION);
    assert_eq!(status["last_cycle"]["actions"]["cancelled"], 0);
    let samples = parse_exposition(&get(&state, "/metrics").await.2).unwrap();
    assert_eq!(value(&samples, &format!("{PREFIX}_cycles_total"), &[("outcome", "failed")]), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn healthz_stays_200_through_a_long_pass_that_keeps_making_requests() {
    let state = state();
    state.cycle_started();
    // 30 s interval, limit 90 s; the pass runs 300 s, a request ending every 20 s.
    for _ in 0..15 {
        tokio::time::advance(Duration::from_secs(20)).await;
        state.metrics().record_request(Operation::DescribeSecurityGroups, "transient", Duration::from_secs(1));
        let (code, _, body) = get(&state, "/healthz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    let (_, _, body) = get(&state, "/healthz").await;
    assert!(body.contains("a pass is under way, started 300s ago; its last EC2 request ended 0s ago"), "{body}");
    // A pass that stops making requests is not alive.
    tokio::time::advance(Duration::from_secs(91)).await;
    let (code, _, body) = get(&state, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Once it finished, the usual rule: time since the last cycle started.
    state.record_pass(&PassBuilder::new().build(), t0());
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    state.cycle_started();
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn status_of_real_passes_against_the_emulator() {
    use crate::config::{MirrorConfig, SourceRef};
    use crate::ec2::limited::Limited;
    use crate::emulator::{Emulator, EmulatorOptions, ErrorInjection, Faults, NewGroup, NewVpc};
    use crate::plan::Memory;
    use crate::reconcile::{execute_options, reconcile_once};

    let emu = Emulator::new(EmulatorOptions::default());
    let vpc_id = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = emu.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
    let app = emu.create_group(&NewGroup::classic("app", "App tier")).await.unwrap();
    // Someone else's VPC group already has app's mirror name.
    emu.create_group(&NewGroup::in_vpc(&vpc_id, "app", "not ours")).await.unwrap();
    let mut config = config(Duration::from_secs(30));
    config.discovery.tag_key = None;
    for source in [&web, &app] {
        config.mirrors.push(MirrorConfig::new(SourceRef::Id(source.clone()), vpc_id.clone()));
    }
    emu.set_faults(Faults {
        errors: ErrorInjection {
            per_operation: BTreeMap::from([(Operation::CreateSecurityGroup, 1.0)]),
            codes: vec!["UnauthorizedOperation".into()],
            ..ErrorInjection::default()
        },
        ..Faults::none()
    });

    let metrics = Metrics::new();
    let state = State::with_clock(Arc::clone(&metrics), &config, Arc::new(t0));
    let ec2 = Limited::new(emu.clone(), &config.rate_limit).with_observer(metrics.request_observer());
    let mut memory = Memory::default();
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = execute_options(&config);
    state.cycle_started();
    let pass = reconcile_once(&ec2, &config, &mut memory, t0(), &options, &cancel).await;
    assert_eq!(state.record_pass(&pass, t0()), CycleOutcome::Partial);

    let status = status_json(&state).await;
    let web_status = pair(&status, web.as_str());
    assert_eq!(web_status["mirror"]["state"], "to_be_created");
    assert_eq!(web_status["last_error"]["action"], "create_mirror");
    assert_eq!(web_status["last_error"]["code"], "UnauthorizedOperation");
    assert_eq!(web_status["last_error"]["subject"], format!("{vpc_id}/web"));
    let app_status = pair(&status, app.as_str());
    assert_eq!(app_status["conflicts"][0]["kind"], "name_taken");
    let samples = parse_exposition(&get(&state, "/metrics").await.2).unwrap();
    assert_eq!(value(&samples, &format!("{PREFIX}_conflicts"), &[("kind", "name_taken")]), Some(1.0));
    let fatal = [("operation", "CreateSecurityGroup"), ("outcome", "fatal")];
    assert_eq!(value(&samples, &format!("{PREFIX}_aws_requests_total"), &fatal), Some(1.0));

    // The permission is fixed: web's mirror is created, and stays created.
    emu.set_faults(Faults::none());
    let later = t0() + Duration::from_secs(30);
    state.cycle_started();
    let pass = reconcile_once(&ec2, &config, &mut memory, later, &options, &cancel).await;
    assert_eq!(state.record_pass(&pass, later), CycleOutcome::Success);
    let status = status_json(&state).await;
    let web_status = pair(&status, web.as_str());
    assert_eq!(web_status["mirror"]["state"], "created");
    assert!(web_status["mirror"]["id"].as_str().unwrap().starts_with("sg-"));
    assert!(web_status["last_success_at"].is_string());
    assert_eq!(web_status["last_error"]["code"], "UnauthorizedOperation", "kept as history");
    let even_later = later + Duration::from_secs(30);
    let pass = reconcile_once(&ec2, &config, &mut memory, even_later, &options, &cancel).await;
    state.record_pass(&pass, even_later);
    let status = status_json(&state).await;
    let web_status = pair(&status, web.as_str());
    assert_eq!(web_status["mirror"]["state"], "existing");
    assert_eq!(web_status["in_sync"], true);
    assert_eq!(pair(&status, app.as_str())["in_sync"], false);
}

/// Reads until the server closes the connection (or `limit` passes);
/// true when it closed.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = [0u8; 4096];
    let read_to_end = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_end).await.is_ok()
}

#[tokio::test]
async fn healthz_answers_at_once_past_more_idle_connections_than_the_cap_and_idle_ones_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let limits =
        ListenerLimits { header_read_timeout: Duration::from_secs(3), max_connections: 4, ..ListenerLimits::default() };
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve_with_limits(listener, router(state()), limits, stop.clone().cancelled_owned()));

    // Twelve sockets that never send a byte: three times the cap.
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    // /healthz still answers, long before any idle socket times out.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let asked = std::time::Instant::now();
    let response = client.get(format!("http://{address}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Well before the 3 s timeout could have freed a slot.
    assert!(asked.elapsed() < Duration::from_secs(2), "took {:?}", asked.elapsed());
    let response = client.get(format!("http://{address}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A keep-alive connection that goes quiet after its answer is closed too.
    let mut kept = tokio::net::TcpStream::connect(address).await.unwrap();
    kept.write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 503");

    // Every idle socket is closed: made room for others, or timed out.
    let opened = std::time::Instant::now();
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(closed_within(stream, Duration::from_secs(8)).await, "idle socket {i} still open");
    }
    assert!(closed_within(&mut kept, Duration::from_secs(8)).await, "quiet keep-alive connection still open");
    assert!(opened.elapsed() < Duration::from_secs(8), "took {:?}", opened.elapsed());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn serve_answers_over_tcp_and_stops_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = state();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve(listener, state.clone(), stop.clone().cancelled_owned()));
    let client = reqwest::Client::new();
    let response = client.get(format!("http://{address}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    parse_exposition(&response.text().await.unwrap()).unwrap();
    let response = client.get(format!("http://{address}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let status: StatusDocument =
        client.get(format!("http://{address}/status")).send().await.unwrap().json().await.unwrap();
    assert!(status.last_cycle.is_none());
    assert_eq!(client.get(format!("http://{address}/nope")).send().await.unwrap().status(), 404);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}
