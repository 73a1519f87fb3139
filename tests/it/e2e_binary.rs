//! The real binary end to end: `emulator` serving an estate on 127.0.0.1:0,
//! and `apply`, `plan`, `run` and `demo` talking to it through the AWS SDK
//! over HTTP. State is read back through the SDK and the emulator's
//! `/_emulator/calls` counters. Every wait is bounded.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use classiclink_mirror::ec2::aws::AwsEc2;
use classiclink_mirror::ec2::{Ec2, GroupFilter};
use classiclink_mirror::model::{GroupId, OWNERSHIP_TAG, Peer, Ports, Protocol, SecurityGroup, VpcId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::config::{write_config, write_listening_config};
use crate::common::emulator::{EmulatorProcess, SMALL_ESTATE};
use crate::common::http::{self, free_port, get, metric};
use crate::common::process::{Output, run_command, run_daemon, signal, stop};
use crate::common::wait::{eventually, wait_ready};
use crate::common::{binary, root};

const TARGET_VPC: &str = "vpc-9f2e1d0c";

/// The groups carrying the ownership tag: the daemon's mirrors.
async fn mirrors(ec2: &AwsEc2) -> Vec<SecurityGroup> {
    let filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.into()], ..GroupFilter::default() };
    ec2.describe_security_groups(&filter).await.unwrap()
}

#[tokio::test]
async fn apply_over_the_wire_converges_and_a_second_apply_writes_nothing() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &["--throttle"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emulator.url, "127.0.0.1:0", "");
    let config = config.to_str().unwrap();

    let plan = run_command(&["plan", "--config", config]).await;
    assert_eq!(plan.code, 2, "changes pending: {}{}", plan.stdout, plan.stderr);

    let first = run_command(&["apply", "--config", config]).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("converged"), "{}", first.stdout);
    let ec2 = emulator.sdk().await;
    // web is mirrored; app conflicts with a VPC group of the same name that is not ours.
    let names: Vec<String> = mirrors(&ec2).await.into_iter().map(|g| g.name).collect();
    assert!(names.contains(&"web".to_owned()), "{names:?}");
    assert!(first.stdout.contains("not ours"), "the conflict is reported: {}", first.stdout);

    emulator.reset_calls().await;
    let second = run_command(&["apply", "--config", config]).await;
    assert_eq!(second.code, 0, "{}", second.stdout);
    assert_eq!(emulator.mutating_calls().await, 0, "a converged estate gets no writes");
    let plan = run_command(&["plan", "--config", config]).await;
    assert_eq!(plan.code, 0, "{}", plan.stdout);
}

#[tokio::test]
async fn apply_that_cannot_converge_in_one_pass_exits_3() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emulator.url, "127.0.0.1:0", "");
    let run = run_command(&["apply", "--config", config.to_str().unwrap(), "--max-passes", "1"]).await;
    assert_eq!(run.code, 3, "one pass writes, a second would confirm: {}", run.stdout);
    assert!(run.stdout.contains("not converged after 1 passes"), "{}", run.stdout);
}

#[tokio::test]
async fn the_daemon_serves_health_metrics_and_status_reloads_and_stops_cleanly() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &[]).await;
    let ec2 = emulator.sdk().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = write_listening_config(dir.path(), &emulator.url, "");
    let daemon = run_daemon(&config);

    wait_ready(&base, Duration::from_secs(30)).await;
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    // Ready comes with the first complete snapshot, before its plan runs
    // (docs/operations.md, `/readyz`): the pass is counted when it ends.
    eventually(Duration::from_secs(30), "the first pass counted", || async {
        metric(&get(&format!("{base}/metrics")).await.1, "classiclink_mirror_cycles_total{outcome=\"success\"}") >= 1.0
    })
    .await;
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(metric(&metrics, "classiclink_mirror_actions_total{kind=\"create_mirror\",outcome=\"done\"}") >= 1.0);
    assert!(metric(&metrics, "classiclink_mirror_conflicts{kind=\"name_taken\"}") >= 1.0);
    let (_, status) = get(&format!("{base}/status")).await;
    assert!(status.contains("name_taken"), "the estate's name conflict shows in /status: {status}");

    // A rule added on the Classic side is mirrored by a later pass, and the
    // metrics move with it.
    let authorized = "classiclink_mirror_actions_total{kind=\"authorize\",outcome=\"done\"}";
    let before = metric(&get(&format!("{base}/metrics")).await.1, authorized);
    let web = GroupId::try_new("sg-0a1b2c3d").unwrap();
    let rule = classiclink_mirror::model::Grant::new(
        Protocol::Tcp,
        Ports::Range { from: 8443, to: 8443 },
        Peer::Ipv4("10.9.0.0/16".parse().unwrap()),
        None,
    );
    ec2.authorize_ingress(&web, std::slice::from_ref(&rule)).await.unwrap();
    eventually(Duration::from_secs(20), "the new rule on web's mirror", || async {
        mirrors(&ec2).await.iter().any(|g| g.name == "web" && g.ingress.iter().any(|r| r.key == rule.key))
    })
    .await;
    eventually(Duration::from_secs(10), "the authorize counted", || async {
        metric(&get(&format!("{base}/metrics")).await.1, authorized) > before
    })
    .await;

    // An invalid file + SIGHUP: rejected, counted, the old config keeps running.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "[daemon]\ninterval = \"fast\"\n").unwrap();
    signal(&daemon, "HUP").await;
    eventually(Duration::from_secs(20), "a rejected reload", || async {
        metric(
            &get(&format!("{base}/metrics")).await.1,
            "classiclink_mirror_config_reloads_total{outcome=\"rejected\"}",
        ) >= 1.0
    })
    .await;
    let cycles =
        metric(&get(&format!("{base}/metrics")).await.1, "classiclink_mirror_cycles_total{outcome=\"success\"}");
    eventually(Duration::from_secs(20), "cycles after the rejection", || async {
        metric(&get(&format!("{base}/metrics")).await.1, "classiclink_mirror_cycles_total{outcome=\"success\"}")
            > cycles
    })
    .await;

    // A valid file that also mirrors db under a new name + SIGHUP: applied.
    let renamed = format!("{good}[[mirror]]\nsource_group = \"app\"\nvpc = \"{TARGET_VPC}\"\nname = \"app-classic\"\n");
    std::fs::write(&config, renamed).unwrap();
    signal(&daemon, "HUP").await;
    eventually(Duration::from_secs(20), "the new mapping mirrored", || async {
        mirrors(&ec2).await.iter().any(|g| g.name == "app-classic")
    })
    .await;

    // The container health check probes the same endpoint.
    let probe = run_command(&["healthcheck", "--url", &format!("{base}/healthz")]).await;
    assert_eq!(probe.code, 0, "{}{}", probe.stdout, probe.stderr);

    let status = stop(daemon, "TERM").await;
    assert_eq!(status.code(), Some(0));
    let gone = run_command(&["healthcheck", "--url", &format!("{base}/healthz")]).await;
    assert_eq!(gone.code, 1, "nothing listens any more: {}", gone.stderr);
}

#[tokio::test]
async fn sigterm_during_a_throttled_pass_exits_0_within_the_grace_and_leaves_no_half_made_group() {
    // Sixty groups to mirror at one write a second: a long pass.
    let mut estate = String::from("[[vpc]]\nname = \"target\"\nid = \"vpc-9f2e1d0c\"\nclassic_link = true\n");
    for n in 0..60 {
        estate.push_str(&format!(
            "[[group]]\nname = \"g{n:02}\"\ntags = {{ \"classiclinkmirror:linkToVPC\" = \"vpc-9f2e1d0c\" }}\n\
             [[group.rules]]\nprotocol = \"tcp\"\nport = {}\ncidr = \"10.0.0.0/8\"\n",
            1000 + n
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate).unwrap();
    let emulator = EmulatorProcess::start(estate_path.to_str().unwrap(), &["--throttle"]).await;
    let config = write_config(
        dir.path(),
        &emulator.url,
        "127.0.0.1:0",
        "[rate_limit]\nmutating_per_second = 1.0\nmutating_burst = 1\n",
    );
    let daemon = run_daemon(&config);
    let ec2 = emulator.sdk().await;
    eventually(Duration::from_secs(30), "the pass under way", || async { mirrors(&ec2).await.len() >= 3 }).await;
    let asked = tokio::time::Instant::now();
    let status = stop(daemon, "TERM").await;
    assert_eq!(status.code(), Some(0));
    assert!(asked.elapsed() < Duration::from_secs(25), "stopped within the drain grace: {:?}", asked.elapsed());
    let target = VpcId::try_new(TARGET_VPC).unwrap();
    let groups =
        ec2.describe_security_groups(&GroupFilter { vpc_ids: vec![target], ..GroupFilter::default() }).await.unwrap();
    let made = groups.iter().filter(|g| g.name != "default").count();
    assert!(made < 60, "the pass was interrupted ({made} of 60)");
    assert!(groups.iter().all(|g| g.name == "default" || g.mirrored_from().is_some()), "every mirror is tagged");
}

#[tokio::test]
async fn demo_mirrors_the_sample_estate_and_follows_the_scripted_changes() {
    let run = run_command(&["demo", "--listen", "127.0.0.1:0", "--interval", "1s", "--exit-when-done"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for expected in [
        "created mirrors: web in vpc-0d3e4f50, app in vpc-0d3e4f50, db in vpc-0d3e4f50",
        "16 instances linked",
        "cannot be mirrored: group of another account",
        "1 rules added",
        "2 instances linked",
        "deleted orphaned mirrors: db",
        "demo finished",
    ] {
        assert!(run.stdout.contains(expected), "missing {expected:?} in:\n{}", run.stdout);
    }
}

/// Emulator flags failing every request of every describe action.
const EVERY_DESCRIBE_FAILS: [&str; 2] = [
    "--operation-error-rate",
    "DescribeSecurityGroups=1,DescribeInstances=1,DescribeClassicLinkInstances=1,DescribeVpcClassicLink=1,DescribeVpcs=1",
];

/// Runs `args`, returning the output and how long it took.
async fn timed(args: &[&str]) -> (Output, Duration) {
    let started = std::time::Instant::now();
    let output = run_command(args).await;
    (output, started.elapsed())
}

#[tokio::test]
async fn against_an_ec2_failing_every_describe_apply_fails_fast_with_exit_1_and_sends_no_write() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &EVERY_DESCRIBE_FAILS).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emulator.url, "127.0.0.1:0", "");
    let config = config.to_str().unwrap();

    let (one, one_took) = timed(&["apply", "--config", config, "--max-passes", "1"]).await;
    let (two, two_took) = timed(&["apply", "--config", config, "--max-passes", "2"]).await;
    eprintln!("every describe failing: apply --max-passes 1 took {one_took:?}, --max-passes 2 took {two_took:?}");
    for (run, passes) in [(&one, 1), (&two, 2)] {
        assert_eq!(run.code, 1, "an incomplete observation is an error: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("snapshot incomplete"), "{}", run.stdout);
        assert!(run.stdout.contains(&format!("not converged after {passes} passes")), "{}", run.stdout);
        assert!(run.stderr.contains("the observation of EC2 is incomplete"), "{}", run.stderr);
    }
    assert_eq!(emulator.mutating_calls().await, 0, "no write without a complete observation");
    // Bounded retries: seconds, not the minutes of unbounded ones (the goal
    // is 10 s a pass; the bound only catches a regression to minutes).
    assert!(two_took < Duration::from_secs(60), "{two_took:?}");
    let calls = emulator.calls().await;
    let describes = calls["DescribeSecurityGroups"]["requests"].as_u64().unwrap_or(0);
    // Three passes in all, each two describes of groups (sources, then
    // mirrors by tag), each at most 3 attempts.
    assert!(describes > 0 && describes <= 3 * 2 * 3, "at most 3 attempts per request: {describes}");
}

#[tokio::test]
async fn plan_exits_1_instead_of_no_changes_when_every_describe_fails_or_ec2_is_unreachable() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &EVERY_DESCRIBE_FAILS).await;
    let dir = tempfile::tempdir().unwrap();
    let failing = write_config(dir.path(), &emulator.url, "127.0.0.1:0", "");
    let (failed, took) = timed(&["plan", "--config", failing.to_str().unwrap()]).await;
    eprintln!("every describe failing: plan took {took:?}");
    assert_eq!(failed.code, 1, "{}{}", failed.stdout, failed.stderr);
    assert!(
        failed.stderr.contains("the observation of EC2 is incomplete (source_groups, vpc_groups)"),
        "{}",
        failed.stderr
    );

    // Nothing listens on that port: every request is refused.
    let nowhere = tempfile::tempdir().unwrap();
    let unreachable = write_config(nowhere.path(), &format!("http://127.0.0.1:{}", free_port()), "127.0.0.1:0", "");
    let (refused, took) = timed(&["plan", "--config", unreachable.to_str().unwrap()]).await;
    eprintln!("unreachable EC2: plan took {took:?}");
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("ConnectionError"), "{}", refused.stderr);
    assert!(took < Duration::from_secs(60), "{took:?}");
}

#[tokio::test]
async fn a_first_pass_failing_every_describe_is_visible_while_it_runs_and_sigterm_stops_its_observation_at_once() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &EVERY_DESCRIBE_FAILS).await;
    let dir = tempfile::tempdir().unwrap();
    // Slow retries, so that one observation takes many seconds.
    let (config, base) = write_listening_config(
        dir.path(),
        &emulator.url,
        "[rate_limit]\nmax_attempts = 10\nretry_base_delay = \"1s\"\nretry_max_delay = \"2s\"\n",
    );
    let daemon = run_daemon(&config);

    // The first pass is shown under way, alive and not ready.
    eventually(Duration::from_secs(30), "the first pass under way", || async {
        http::status(&base).await.unwrap_or_default()["current_cycle"]["phase"] == "observing"
    })
    .await;
    let status = http::status(&base).await.unwrap_or_default();
    assert_eq!(status["last_cycle"], serde_json::Value::Null, "{status}");
    assert!(status["current_cycle"]["started_at"].is_string(), "{status}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);

    // The source describes' failure shows as soon as they have failed, while
    // the pass goes on observing the rest.
    eventually(Duration::from_secs(60), "the failing part shown during the pass", || async {
        let status = http::status(&base).await.unwrap_or_default();
        status["last_cycle"].is_null()
            && status["current_cycle"]["incomplete"]
                .as_array()
                .is_some_and(|parts| parts.contains(&"source_groups".into()))
    })
    .await;
    let status = http::status(&base).await.unwrap_or_default();
    let code = &status["current_cycle"]["observe_errors"][0]["code"];
    assert!(*code == "InternalError" || *code == "Unavailable", "{status}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200, "a pass making requests is alive");

    // Once over, it is recorded as what it was.
    eventually(Duration::from_secs(60), "the failed first pass recorded", || async {
        http::status(&base).await.unwrap_or_default()["last_cycle"]["outcome"] == "failed"
    })
    .await;
    let status = http::status(&base).await.unwrap_or_default();
    assert!(status["holds"]["incomplete"].as_array().unwrap().contains(&"source_groups".into()), "{status}");
    assert_eq!(status["holds"]["destructive_held"], true);
    assert!(!status["last_cycle"]["observe_errors"].as_array().unwrap().is_empty(), "{status}");
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(metric(&metrics, "classiclink_mirror_cycles_total{outcome=\"failed\"}") >= 1.0, "{metrics}");

    // SIGTERM while the next pass observes: it stops at once, with nothing
    // unfinished to wait for.
    eventually(Duration::from_secs(30), "the next pass observing", || async {
        http::status(&base).await.unwrap_or_default()["current_cycle"]["phase"] == "observing"
    })
    .await;
    let asked = std::time::Instant::now();
    signal(&daemon, "TERM").await;
    let output =
        tokio::time::timeout(Duration::from_secs(30), daemon.wait_with_output()).await.expect("exits").unwrap();
    let took = asked.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(took < Duration::from_secs(5), "stopped at once, not after the 20 s drain grace: {took:?}");
    assert!(stderr.contains("shutdown during observation"), "{stderr}");
    assert!(!stderr.contains("did not finish within the drain grace"), "{stderr}");
    assert_eq!(emulator.mutating_calls().await, 0);
}

#[tokio::test]
async fn apply_interrupted_during_observation_stops_at_once_and_says_nothing_was_started() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &EVERY_DESCRIBE_FAILS).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &emulator.url,
        "127.0.0.1:0",
        "[rate_limit]\nmax_attempts = 10\nretry_base_delay = \"1s\"\nretry_max_delay = \"2s\"\n",
    );
    let child = binary().args(["apply", "--config", config.to_str().unwrap()]).spawn().unwrap();
    // Observing: the first describe is failing and backing off for seconds.
    eventually(Duration::from_secs(30), "apply's first describes", || async {
        emulator.calls().await.get("DescribeSecurityGroups").and_then(|c| c["requests"].as_u64()).unwrap_or(0) > 0
    })
    .await;
    let asked = std::time::Instant::now();
    signal(&child, "INT").await;
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("exits").unwrap();
    let took = asked.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(took < Duration::from_secs(5), "stopped at once: {took:?}");
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("pass 1: interrupted during observation; nothing planned or started"), "{stdout}");
    assert!(stdout.contains("interrupted before converging"), "{stdout}");
    assert_eq!(emulator.mutating_calls().await, 0);
}

#[tokio::test]
async fn more_idle_sockets_than_open_files_allowed_neither_starve_healthz_nor_stall_passes() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), &emulator.url, &format!("127.0.0.1:{port}"), "");
    // The daemon under a tiny open-files limit, below its connection cap.
    let program = env!("CARGO_BIN_EXE_classiclink-mirror");
    let daemon = Command::new("sh")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CLASSICLINK_MIRROR_LOG_FORMAT", "json")
        .current_dir(root())
        .args(["-c", "ulimit -n 100 && exec \"$0\" run --config \"$1\"", program, config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_ready(&base, Duration::from_secs(30)).await;

    // 300 sockets that send nothing: more than the daemon may have open.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap());
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let asked = std::time::Instant::now();
    let healthz = client.get(format!("{base}/healthz")).send().await.expect("/healthz answers");
    assert_eq!(healthz.status(), 200);
    assert!(asked.elapsed() < Duration::from_secs(3), "took {:?}", asked.elapsed());

    // Passes go on: new passes succeed while the sockets are still open.
    let success = "classiclink_mirror_cycles_total{outcome=\"success\"}";
    let before = metric(&client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap(), success);
    eventually(Duration::from_secs(20), "successful passes with the sockets open", || async {
        let text = match client.get(format!("{base}/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        metric(&text, success) >= before + 2.0
    })
    .await;
    drop(idle);
    signal(&daemon, "TERM").await;
    let output =
        tokio::time::timeout(Duration::from_secs(30), daemon.wait_with_output()).await.expect("exits").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // The listener did run out of descriptors, and said so without flooding the log.
    let warnings = stderr.matches("the HTTP listener cannot accept a connection").count();
    assert!((1..=5).contains(&warnings), "{warnings} accept warnings: {stderr}");
}

/// An EC2 client that is not the daemon (no `app/classiclink-mirror` in its
/// `User-Agent`): its writes are a human's, not the daemon's echo.
fn someone_else(url: &str) -> aws_sdk_ec2::Client {
    crate::common::raw_ec2(url)
}

#[tokio::test]
async fn with_events_a_change_is_mirrored_in_seconds_though_the_interval_is_a_minute() {
    let emulator = EmulatorProcess::start(SMALL_ESTATE, &["--events"]).await;
    let ec2 = emulator.sdk().await;
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("{}/123456789012/classiclink-mirror-events", emulator.url);
    let extra = format!("[events]\nqueue_url = \"{queue}\"\n");
    let (config, base) = write_listening_config(dir.path(), &emulator.url, &extra);
    let text = std::fs::read_to_string(&config).unwrap().replace("interval = \"1s\"", "interval = \"60s\"");
    std::fs::write(&config, text).unwrap();
    let daemon = run_daemon(&config);
    wait_ready(&base, Duration::from_secs(30)).await;
    let targeted = "classiclink_mirror_passes_total{kind=\"targeted\"}";
    let echoes = "classiclink_mirror_events_ignored_total{reason=\"own_echo\"}";
    eventually(Duration::from_secs(10), "the first pass's own writes read back as echoes", || async {
        metric(&get(&format!("{base}/metrics")).await.1, echoes) >= 1.0
    })
    .await;
    assert_eq!(metric(&get(&format!("{base}/metrics")).await.1, targeted), 0.0, "echoes pay no pass");

    let changed = std::time::Instant::now();
    someone_else(&emulator.url)
        .authorize_security_group_ingress()
        .group_id("sg-0a1b2c3d")
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(8443)
                .to_port(8443)
                .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip("10.9.0.0/16").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "the new rule on web's mirror, long before the 60 s pass", || async {
        mirrors(&ec2)
            .await
            .iter()
            .any(|g| g.name == "web" && g.ingress.iter().any(|r| r.key.ports == Ports::Range { from: 8443, to: 8443 }))
    })
    .await;
    let latency = changed.elapsed();
    assert!(latency < Duration::from_secs(15), "{latency:?}");
    // The pass is counted when it ends, a moment after its write is visible.
    eventually(Duration::from_secs(10), "the targeted pass counted", || async {
        metric(&get(&format!("{base}/metrics")).await.1, targeted) >= 1.0
    })
    .await;
    let metrics = get(&format!("{base}/metrics")).await.1;
    assert!(metric(&metrics, "classiclink_mirror_events_acted_on_total") >= 1.0);
    assert_eq!(metric(&metrics, "classiclink_mirror_event_source_up"), 1.0);
    let (_, status) = get(&format!("{base}/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["events"]["state"], "ok", "{status}");
    assert!(status["events"]["acted_on"].as_u64() >= Some(1));
    assert_eq!(stop(daemon, "TERM").await.code(), Some(0));
}

/// Change latency with events on (docs/BENCHMARKS.md, "Events"): the real
/// binary, `emulator --events` with a generated estate
/// (`EVENTS_BENCH_GROUPS` Classic groups, 10 rules each, two instances per
/// group, all discovered), `daemon.interval = 60s`. `EVENTS_BENCH_CHANGES`
/// changes, alternately a rule on a Classic group and a new Classic instance,
/// each timed from just before the write to the first describe (every 50 ms)
/// that shows it mirrored or linked. In the suite it runs small (20 groups,
/// 10 changes, a few seconds) and checks that every change arrives through
/// its event, long before the next full pass; the benchmark's sizes are
/// `EVENTS_BENCH_GROUPS=500 EVENTS_BENCH_CHANGES=50 cargo test --test it
/// events_change_latency -- --nocapture`.
#[tokio::test]
async fn events_change_latency() {
    use classiclink_mirror::ec2::LinkFilter;
    use classiclink_mirror::emulator::GenerateSpec;
    let groups: usize = std::env::var("EVENTS_BENCH_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let changes: u32 = std::env::var("EVENTS_BENCH_CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let estate = GenerateSpec {
        classic_groups: groups,
        rules_per_group: 10,
        instances: groups * 2,
        vpcs: 1,
        discovery_fraction: 1.0,
        seed: 3,
        ..GenerateSpec::default()
    }
    .estate();
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, toml::to_string(&estate).unwrap()).unwrap();
    // `EVENTS_BENCH_BIN=PATH` measures another build of the binary (an
    // older revision, or the release build) with this same driver.
    let bench_binary = || match std::env::var_os("EVENTS_BENCH_BIN") {
        Some(path) => crate::common::binary_at(path),
        None => binary(),
    };
    // `EVENTS_BENCH_DELAY=2s` (and `EVENTS_BENCH_DELAY_JITTER`): the
    // emulator's delivery delay; `EVENTS_BENCH_LOSS=1`: its loss rate.
    let mut knobs = Vec::new();
    for (var, flag) in [
        ("EVENTS_BENCH_DELAY", "--event-delay"),
        ("EVENTS_BENCH_DELAY_JITTER", "--event-delay-jitter"),
        ("EVENTS_BENCH_LOSS", "--event-loss"),
    ] {
        if let Ok(value) = std::env::var(var) {
            knobs.extend([flag.to_owned(), value]);
        }
    }
    let mut child = bench_binary()
        .args(["emulator", "--listen", "127.0.0.1:0", "--events", "--estate", estate_path.to_str().unwrap()])
        .args(&knobs)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await.unwrap().unwrap().unwrap();
    let url = first.rsplit(' ').next().unwrap().to_owned();
    let extra = format!(
        "[rate_limit]\nmutating_per_second = 500.0\nmutating_burst = 500\ndescribe_per_second = 500.0\ndescribe_burst = 500\n\
         [events]\nqueue_url = \"{url}/123456789012/classiclink-mirror-events\"\n"
    );
    let (config, base) = write_listening_config(dir.path(), &url, &extra);
    let text = std::fs::read_to_string(&config).unwrap().replace("interval = \"1s\"", "interval = \"60s\"");
    std::fs::write(&config, text).unwrap();
    // Thousands of log lines: an unread pipe would fill and stall the daemon.
    // `EVENTS_BENCH_LOG=FILE` keeps them (JSON, one pass a line with its
    // observe/plan/execute times).
    let log = match std::env::var_os("EVENTS_BENCH_LOG") {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let daemon = bench_binary()
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(600), "the first pass", || async {
        metric(&get(&format!("{base}/metrics")).await.1, "classiclink_mirror_passes_total{kind=\"full\"}") >= 1.0
    })
    .await;
    let ec2 = crate::common::local_port(&url).await;
    let operator = someone_else(&url);
    let discovered = GroupFilter {
        tag_keys: vec![classiclink_mirror::model::DEFAULT_DISCOVERY_TAG.to_owned()],
        ..GroupFilter::default()
    };
    let sources: Vec<String> =
        ec2.describe_security_groups(&discovered).await.unwrap().into_iter().map(|g| g.id.to_string()).collect();
    assert!(!sources.is_empty());
    // Per kind: a rule added on a Classic group, a new Classic instance.
    let mut latencies: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..changes {
        let group = sources[(i as usize * 7) % sources.len()].clone();
        let started = std::time::Instant::now();
        if i % 2 == 0 {
            let port = 40000 + i as i32;
            operator
                .authorize_security_group_ingress()
                .group_id(&group)
                .ip_permissions(
                    aws_sdk_ec2::types::IpPermission::builder()
                        .ip_protocol("tcp")
                        .from_port(port)
                        .to_port(port)
                        .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip("10.99.0.1/32").build())
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let filter = GroupFilter {
                tags: BTreeMap::from([(OWNERSHIP_TAG.to_owned(), vec![group.clone()])]),
                ..GroupFilter::default()
            };
            let wanted = Ports::Range { from: port as u16, to: port as u16 };
            while !ec2
                .describe_security_groups(&filter)
                .await
                .unwrap()
                .iter()
                .any(|g| g.ingress.iter().any(|r| r.key.ports == wanted))
            {
                assert!(started.elapsed() < Duration::from_secs(60), "change {i} not mirrored before the full pass");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            let launched = operator
                .run_instances()
                .image_id("ami-1")
                .min_count(1)
                .max_count(1)
                .security_group_ids(&group)
                .send()
                .await
                .unwrap();
            let id =
                classiclink_mirror::model::InstanceId::try_new(launched.instances()[0].instance_id().unwrap()).unwrap();
            let filter = LinkFilter { instance_ids: vec![id], ..LinkFilter::default() };
            while ec2.describe_classic_link_instances(&filter).await.unwrap().is_empty() {
                assert!(started.elapsed() < Duration::from_secs(60), "instance {i} not linked before the full pass");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        latencies[i as usize % 2].push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = get(&format!("{base}/metrics")).await.1;
    println!(
        "groups {groups}: targeted passes {}, full passes {}",
        metric(&metrics, "classiclink_mirror_passes_total{kind=\"targeted\"}"),
        metric(&metrics, "classiclink_mirror_passes_total{kind=\"full\"}"),
    );
    for (kind, mut samples) in ["rule", "instance"].into_iter().zip(latencies) {
        samples.sort();
        // p99 by nearest rank: the ceil(0.99 n)-th sample (the largest for n ≤ 100).
        let rank = (samples.len() * 99).div_ceil(100).max(1) - 1;
        println!(
            "{kind}: n {} min {:.2?} median {:.2?} p99 {:.2?} max {:.2?}",
            samples.len(),
            samples[0],
            samples[(samples.len() - 1) / 2],
            samples[rank],
            samples[samples.len() - 1],
        );
    }
    // Every change came through its event: targeted passes did the work.
    assert!(metric(&metrics, "classiclink_mirror_passes_total{kind=\"targeted\"}") >= 1.0, "{metrics}");
    let _ = stop(daemon, "TERM").await;
}

/// Issue 15's goal, end to end: a Classic source with 100 rules and EC2's
/// default quota of 60 (the emulator's too). One `apply` puts every rule on
/// the VPC side, in the mirror and one overflow group, and links each member
/// to both; a second `apply` writes nothing.
#[tokio::test]
async fn a_source_with_100_rules_and_a_quota_of_60_is_mirrored_whole_in_one_apply_then_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut estate = String::from(
        "[[vpc]]\nname = \"target\"\nid = \"vpc-9f2e1d0c\"\ncidr = \"10.0.0.0/16\"\nclassic_link = true\n\n\
         [[group]]\nname = \"big\"\nid = \"sg-0b1b2b3b\"\ndescription = \"Big\"\n\
         tags = { \"classiclinkmirror:linkToVPC\" = \"vpc-9f2e1d0c\" }\n",
    );
    for port in 1..=100 {
        estate.push_str(&format!("\n[[group.rules]]\nprotocol = \"tcp\"\nport = {port}\ncidr = \"10.1.0.0/16\"\n"));
    }
    estate.push_str("\n[[instance]]\ngroups = [\"big\"]\ncount = 2\n");
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate).unwrap();
    let emulator = EmulatorProcess::start(estate_path.to_str().unwrap(), &[]).await;
    let config = write_config(dir.path(), &emulator.url, "127.0.0.1:0", "");
    let config = config.to_str().unwrap();

    let first = run_command(&["apply", "--config", config]).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let ec2 = emulator.sdk().await;
    let groups = mirrors(&ec2).await;
    let ours: Vec<&SecurityGroup> =
        groups.iter().filter(|g| g.mirrored_from() == Some("sg-0b1b2b3b".parse().unwrap())).collect();
    assert_eq!(
        ours.len(),
        2,
        "the mirror and one overflow group: {:?}",
        ours.iter().map(|g| &g.name).collect::<Vec<_>>()
    );
    let mut ports: Vec<u16> = ours
        .iter()
        .flat_map(|g| g.ingress.iter())
        .map(|r| match r.key.ports {
            Ports::Range { from, .. } => from,
            _ => 0,
        })
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, (1..=100).collect::<Vec<u16>>(), "every rule once on the VPC side");
    assert!(ours.iter().all(|g| g.ingress.len() <= 60));
    let ids: std::collections::BTreeSet<GroupId> = ours.iter().map(|g| g.id.clone()).collect();
    let links = ec2.describe_classic_link_instances(&Default::default()).await.unwrap();
    assert_eq!(links.len(), 2, "{links:?}");
    for link in &links {
        assert_eq!(link.groups, ids, "{} is linked to the mirror and its overflow group", link.instance_id);
    }

    emulator.reset_calls().await;
    let second = run_command(&["apply", "--config", config]).await;
    assert_eq!(second.code, 0, "{}", second.stdout);
    assert_eq!(emulator.mutating_calls().await, 0, "a converged estate gets no writes");
}

/// A VPC source with ingress, egress (IPv6 included, no default rule) and
/// references to two other mirrored groups: one `apply` mirrors all of it,
/// references translated to the mirrors and the new mirror's default egress
/// gone; a second `apply` writes nothing.
#[tokio::test]
async fn a_vpc_source_is_mirrored_egress_and_ipv6_included_and_a_second_apply_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let estate = r#"
[[vpc]]
name = "old"
id = "vpc-0000aaaa"
cidr = "10.50.0.0/16"

[[vpc]]
name = "new"
id = "vpc-0000bbbb"
cidr = "10.60.0.0/16"

[[group]]
name = "api"
vpc = "old"
id = "sg-0000a001"
rules = [
  { protocol = "tcp", port = 443, cidr = "0.0.0.0/0" },
  { protocol = "tcp", port = 443, cidr = "2001:db8::/32", description = "v6 clients" },
  { protocol = "tcp", port = 8080, from_group = "cache" },
]
egress = [
  { protocol = "tcp", port = 443, cidr = "10.0.0.0/8" },
  { protocol = "tcp", port = 443, cidr = "2001:db8:1::/48" },
  { protocol = "tcp", port = 5432, from_group = "db" },
  { protocol = "tcp", port = 6379, from_group = "cache" },
]

[[group]]
name = "db"
vpc = "old"
id = "sg-0000a002"
rules = [{ protocol = "tcp", port = 5432, from_group = "api" }]

[[group]]
name = "cache"
vpc = "old"
id = "sg-0000a003"
rules = [{ protocol = "tcp", port = 6379, from_group = "api" }]
"#;
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate).unwrap();
    let emulator = EmulatorProcess::start(estate_path.to_str().unwrap(), &[]).await;
    let mappings: String = ["sg-0000a001", "sg-0000a002", "sg-0000a003"]
        .iter()
        .map(|id| format!("[[mirror]]\nsource_group = \"{id}\"\nvpc = \"vpc-0000bbbb\"\n"))
        .collect();
    let config = write_config(dir.path(), &emulator.url, "127.0.0.1:0", &mappings);
    let config = config.to_str().unwrap();

    let first = run_command(&["apply", "--config", config]).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let ec2 = emulator.sdk().await;
    let by_source: BTreeMap<String, SecurityGroup> =
        mirrors(&ec2).await.into_iter().map(|g| (g.mirrored_from().unwrap().to_string(), g)).collect();
    assert_eq!(by_source.len(), 3, "{by_source:?}");
    let (api, db, cache) = (&by_source["sg-0000a001"], &by_source["sg-0000a002"], &by_source["sg-0000a003"]);
    let tcp = |port: u16, peer: Peer| (Protocol::Tcp, Ports::Range { from: port, to: port }, peer);
    let keys = |rules: &[classiclink_mirror::model::Grant]| -> std::collections::BTreeSet<(Protocol, Ports, Peer)> {
        rules.iter().map(|g| (g.key.protocol, g.key.ports, g.key.peer.clone())).collect()
    };
    let refer = |g: &SecurityGroup| Peer::Group { group: g.id.clone(), owner: None };
    let v4 = |c: &str| Peer::Ipv4(c.parse().unwrap());
    let v6 = |c: &str| Peer::Ipv6(c.parse().unwrap());
    assert_eq!(
        keys(&api.ingress),
        [tcp(443, v4("0.0.0.0/0")), tcp(443, v6("2001:db8::/32")), tcp(8080, refer(cache))].into_iter().collect()
    );
    assert_eq!(
        keys(&api.egress),
        [tcp(443, v4("10.0.0.0/8")), tcp(443, v6("2001:db8:1::/48")), tcp(5432, refer(db)), tcp(6379, refer(cache))]
            .into_iter()
            .collect(),
        "the source's egress, references translated, EC2's default rule gone"
    );
    // db and cache keep EC2's default egress, as their sources do.
    let all_out = (Protocol::All, Ports::None, v4("0.0.0.0/0"));
    assert_eq!(keys(&db.egress), [all_out.clone()].into_iter().collect());
    assert_eq!(keys(&cache.egress), [all_out].into_iter().collect());
    assert_eq!(keys(&db.ingress), [tcp(5432, refer(api))].into_iter().collect());

    emulator.reset_calls().await;
    let second = run_command(&["apply", "--config", config]).await;
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert_eq!(emulator.mutating_calls().await, 0, "a converged estate gets no writes");
}
