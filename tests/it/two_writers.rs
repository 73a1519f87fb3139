//! Two writers on one estate, with real processes: two `run` daemons with
//! the same configuration share the work instead of both making every
//! write, and a daemon whose grant someone keeps revoking detects the fight
//! and backs off. State is read through the SDK, the emulator's
//! `/_emulator/calls` counters and the daemons' `/metrics` and `/status`.
//! Every wait is bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use classiclink_mirror::ec2::Ec2;
use classiclink_mirror::ec2::aws::AwsEc2;
use classiclink_mirror::emulator::GenerateSpec;
use classiclink_mirror::model::{Grant, GroupId, Peer, Ports, Protocol};
use tokio::process::Child;

use crate::common::config::write_listening_config;
use crate::common::emulator::{EmulatorProcess, SMALL_ESTATE};
use crate::common::http::{converged, metric, metrics, status};
use crate::common::process::{daemon_command, stop};
use crate::common::wait::eventually;

/// The daemon on `config`, its output discarded: a daemon's logs would fill
/// a pipe nobody reads.
fn run(config: &Path) -> Child {
    daemon_command(config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start run")
}

#[tokio::test]
async fn two_daemons_with_the_same_config_make_at_most_a_fifth_more_writes_than_one_and_show_the_other_writer() {
    // A generated estate: 30 discovered groups, 60 running instances.
    let files = tempfile::tempdir().unwrap();
    let estate_file = files.path().join("estate.toml");
    let spec = GenerateSpec {
        classic_groups: 30,
        rules_per_group: 4,
        cross_reference_fraction: 0.3,
        instances: 60,
        stopped_fraction: 0.0,
        vpcs: 1,
        discovery_fraction: 1.0,
        seed: 11,
        ..GenerateSpec::default()
    };
    std::fs::write(&estate_file, spec.estate().to_toml()).unwrap();
    let estate_file = estate_file.to_str().unwrap();
    // Fast writes: the test is about how many, not how fast.
    let fast = "[rate_limit]\nmutating_per_second = 50.0\nmutating_burst = 50\n";

    // The writes needed: one daemon alone on the cold estate, until converged.
    let alone = EmulatorProcess::start(estate_file, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = write_listening_config(dir.path(), &alone.url, fast);
    alone.reset_calls().await;
    let daemon = run(&config);
    eventually(Duration::from_secs(60), "one daemon converged", || converged(&base)).await;
    let needed = alone.mutating_calls().await;
    stop(daemon, "TERM").await;
    assert!(needed >= 100, "the estate needs a good number of writes: {needed}");

    // Two daemons, same configuration (each its own state directory and
    // port, as on two hosts), started together on the same cold estate.
    let estate = EmulatorProcess::start(estate_file, &[]).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config_a, base_a) = write_listening_config(dir_a.path(), &estate.url, fast);
    let (config_b, base_b) = write_listening_config(dir_b.path(), &estate.url, fast);
    estate.reset_calls().await;
    let (a, b) = (run(&config_a), run(&config_b));
    eventually(Duration::from_secs(90), "both daemons converged", || async {
        converged(&base_a).await && converged(&base_b).await
    })
    .await;
    let total = estate.mutating_calls().await;
    let (metrics_a, metrics_b) = (metrics(&base_a).await, metrics(&base_b).await);
    stop(a, "TERM").await;
    stop(b, "TERM").await;
    eprintln!("writes: {total} by two daemons, {needed} needed");
    if std::env::var_os("TWO_WRITERS_DEBUG").is_some() {
        eprintln!("{:?}", estate.calls().await);
        for (name, text) in [("a", &metrics_a), ("b", &metrics_b)] {
            for line in text.lines().filter(|l| {
                (l.starts_with("classiclink_mirror_actions_total")
                    || l.starts_with("classiclink_mirror_cycles_total")
                    || l.starts_with("classiclink_mirror_other"))
                    && !l.ends_with(" 0")
            }) {
                eprintln!("{name}: {line}");
            }
        }
    }
    assert!(total as f64 <= 1.2 * needed as f64, "{total} writes by two daemons for {needed} needed");

    // The second writer shows: already-done answers, and the other-writer count.
    let sum = |name: &str| metric(&metrics_a, name) + metric(&metrics_b, name);
    let already_done: f64 = metrics_a
        .lines()
        .chain(metrics_b.lines())
        .filter(|l| l.starts_with("classiclink_mirror_actions_total{") && l.contains("outcome=\"already_done\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(already_done >= 1.0, "already_done counted:\n{metrics_a}\n{metrics_b}");
    assert!(sum("classiclink_mirror_other_writer_passes_total") >= 1.0, "{metrics_a}\n{metrics_b}");
}

#[tokio::test]
async fn a_grant_revoked_every_2_s_is_a_fight_within_5_repairs_then_repaired_once_per_backoff() {
    let estate = EmulatorProcess::start(SMALL_ESTATE, &[]).await;
    let ec2: AwsEc2 = crate::common::local_port(&estate.url).await;
    let dir = tempfile::tempdir().unwrap();
    let extra =
        "[safety]\nfight_repairs = 3\nfight_window = \"1m\"\nfight_backoff = \"5s\"\nfight_backoff_max = \"10s\"\n";
    let (config, base) = write_listening_config(dir.path(), &estate.url, extra);
    let daemon = run(&config);
    eventually(Duration::from_secs(60), "converged", || converged(&base)).await;

    // web's mirror and its office rule, as mirrored.
    let web = GroupId::try_new("sg-0a1b2c3d").unwrap();
    let office = Grant::new(
        Protocol::Tcp,
        Ports::Range { from: 443, to: 443 },
        Peer::Ipv4("203.0.113.0/24".parse().unwrap()),
        Some("office".to_owned()),
    );
    let mirror = classiclink_mirror::ec2::GroupFilter {
        tags: BTreeMap::from([(classiclink_mirror::model::OWNERSHIP_TAG.to_owned(), vec![web.to_string()])]),
        ..Default::default()
    };
    let mirror = ec2.describe_security_groups(&mirror).await.unwrap().remove(0);
    assert!(mirror.ingress.iter().any(|r| r.key == office.key), "{:?}", mirror.ingress);

    // Someone revokes it every 2 s.
    estate.reset_calls().await;
    let revoker = {
        let ec2 = crate::common::local_port(&estate.url).await;
        let (group, grant) = (mirror.id.clone(), office.clone());
        tokio::spawn(async move {
            loop {
                let _ = ec2.revoke_ingress(&group, std::slice::from_ref(&grant)).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    eventually(Duration::from_secs(40), "a fight in /status", || async {
        status(&base).await.is_some_and(|s| s["fights"].as_array().is_some_and(|f| !f.is_empty()))
    })
    .await;
    let until_detected = estate.requests("AuthorizeSecurityGroupIngress").await;
    assert!((1..=5).contains(&until_detected), "detected after {until_detected} repairs");
    let status = status(&base).await.unwrap();
    let fight = &status["fights"][0];
    assert_eq!(fight["source"], "sg-0a1b2c3d");
    assert_eq!(fight["vpc"], "vpc-9f2e1d0c");
    assert_eq!(fight["kind"], "grant");
    assert!(fight["principal"].is_null(), "not known yet: {fight}");
    let text = metrics(&base).await;
    assert_eq!(metric(&text, "classiclink_mirror_fights_total{kind=\"grant\"}"), 1.0, "{text}");
    assert_eq!(metric(&text, "classiclink_mirror_fights{kind=\"grant\"}"), 1.0);

    // Then at most one repair per backoff (5 s, then 10 s): over 24 s, at
    // most 3 where full speed would have made 12.
    tokio::time::sleep(Duration::from_secs(24)).await;
    let after = estate.requests("AuthorizeSecurityGroupIngress").await - until_detected;
    assert!(after <= 3, "{after} repairs in 24 s after the fight was detected");
    let text = metrics(&base).await;
    assert!(metric(&text, "classiclink_mirror_actions_deferred_total{reason=\"fight\"}") >= 1.0, "{text}");
    revoker.abort();
    stop(daemon, "TERM").await;
}
