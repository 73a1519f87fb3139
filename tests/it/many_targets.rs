//! Many targets, one daemon, isolated failures (docs/migrating-vpc-to-vpc.md,
//! "Several targets"): the real binary's `run` against the emulator serving
//! three accounts in two regions each — six target accounts, one loop each.
//! One target's role is revoked: the other five keep converging within an
//! interval, the sixth shows as failing in `/status` and `/metrics`, and
//! converges again once the role is restored; then a region goes down.

use std::time::{Duration, Instant};

use classiclink_mirror::config::AwsConfig;
use classiclink_mirror::ec2::Ec2;
use classiclink_mirror::ec2::aws::{AwsEc2, AwsOptions, StaticCredentials};
use classiclink_mirror::model::{Grant, GroupId, Peer, Ports, Protocol};
use serde_json::Value;

use crate::common::config::write_listening_config;
use crate::common::emulator::EmulatorProcess;
use crate::common::http::{self, metric};
use crate::common::process::{run_daemon, stop_with_log};
use crate::common::vpc_groups;
use crate::common::wait::{eventually, wait_ready};

/// Account letter, account id.
const ACCOUNTS: [(&str, &str); 3] = [("a", "111111111111"), ("b", "222222222222"), ("c", "333333333333")];
/// Region short name, region.
const REGIONS: [(&str, &str); 2] = [("use1", "us-east-1"), ("euw1", "eu-west-1")];
/// The target whose role the test revokes.
const REVOKED: &str = "c-euw1";

/// One target: its account name in the config, account id, region, and
/// the ids of its world (a source group in one VPC, the target VPC).
struct Target {
    name: String,
    account: &'static str,
    region: &'static str,
    source: String,
    vpc: String,
}

impl Target {
    fn role_arn(&self) -> String {
        format!("arn:aws:iam::{}:role/mirror-{}", self.account, self.region)
    }

    /// The account's operator in the target's region, by its own key.
    async fn operator(&self, url: &str) -> AwsEc2 {
        let aws = AwsConfig { region: self.region.into(), endpoint_url: Some(url.to_owned()), profile: None };
        let credentials =
            StaticCredentials { access_key_id: format!("AKIA{}", self.account), secret_access_key: "operator".into() };
        AwsEc2::from_config_with(
            &aws,
            AwsOptions { credentials: Some(credentials), app_name: "operator".into(), ..AwsOptions::default() },
        )
        .await
    }

    /// Whether the mirror of the source in the target VPC has a rule for `port`.
    async fn mirrored(&self, operator: &AwsEc2, port: u16) -> bool {
        vpc_groups(operator, &self.vpc)
            .await
            .iter()
            .filter(|g| g.name == "web")
            .any(|g| g.ingress.iter().any(|grant| grant.key.ports == Ports::Range { from: port, to: port }))
    }
}

fn targets() -> Vec<Target> {
    let mut targets = Vec::new();
    for (a, (letter, account)) in ACCOUNTS.iter().enumerate() {
        for (r, (short, region)) in REGIONS.iter().enumerate() {
            let (a, r) = (a + 1, r + 1);
            targets.push(Target {
                name: format!("{letter}-{short}"),
                account,
                region,
                source: format!("sg-{a}{r}0e0e01"),
                vpc: format!("vpc-{a}{r}0b0b0b"),
            });
        }
    }
    targets
}

/// Each account may be entered from the daemon's own account (the
/// emulator's default, where the `test` key lands) through one role per
/// region; each world holds a VPC source group `web` and an empty target VPC.
fn estate(targets: &[Target]) -> String {
    let mut text = String::new();
    for (_, account) in ACCOUNTS {
        text.push_str(&format!("[[account]]\nid = \"{account}\"\naccess_keys = [\"AKIA{account}\"]\n"));
        for (_, region) in REGIONS {
            text.push_str(&format!(
                "[[account.role]]\nname = \"mirror-{region}\"\ntrusted_accounts = [\"123456789012\"]\n"
            ));
        }
    }
    for (i, t) in targets.iter().enumerate() {
        let old = t.vpc.replace("0b0b0b", "0a0a0a");
        text.push_str(&format!(
            "\n[[world]]\naccount = \"{}\"\nregion = \"{}\"\n\
             [[world.vpc]]\nname = \"old\"\nid = \"{old}\"\ncidr = \"172.20.0.0/16\"\n\
             [[world.vpc]]\nname = \"new\"\nid = \"{}\"\ncidr = \"10.{i}.0.0/16\"\n\
             [[world.group]]\nname = \"web\"\nvpc = \"old\"\nid = \"{}\"\n\
             [[world.group.rules]]\nprotocol = \"tcp\"\nport = 443\ncidr = \"0.0.0.0/0\"\n",
            t.account, t.region, t.vpc, t.source
        ));
    }
    text
}

/// `[accounts.NAME]` per target and one mirror each, source and target in
/// the target's account.
fn config_extra(targets: &[Target]) -> String {
    let mut text = String::new();
    for t in targets {
        text.push_str(&format!("[accounts.{}]\nregion = \"{}\"\nrole_arn = \"{}\"\n", t.name, t.region, t.role_arn()));
    }
    for t in targets {
        text.push_str(&format!(
            "[[mirror]]\nsource_group = \"{}\"\nvpc = \"{}\"\nsource_account = \"{}\"\ntarget_account = \"{}\"\n",
            t.source, t.vpc, t.name, t.name
        ));
    }
    text
}

fn tcp(port: u16) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::Ipv4("10.99.0.0/16".parse().unwrap()), None)
}

fn target_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["targets"].as_array().and_then(|t| t.iter().find(|t| t["account"] == name)).unwrap_or(&Value::Null)
}

async fn admin(url: &str, action: &str, arn: &str) {
    let response = reqwest::Client::new().post(format!("{url}/_emulator/roles/{action}?arn={arn}")).send().await;
    assert_eq!(response.unwrap().status().as_u16(), 204, "{action} {arn}");
}

#[tokio::test]
async fn three_accounts_in_two_regions_converge_in_one_run_while_one_revoked_target_fails_alone() {
    let targets = targets();
    let dir = tempfile::tempdir().unwrap();
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate(&targets)).unwrap();
    let emulator = EmulatorProcess::start(estate_path.to_str().unwrap(), &[]).await;
    let url = emulator.url.clone();
    let (config, base) = write_listening_config(dir.path(), &url, &config_extra(&targets));
    let interval = Duration::from_secs(1); // the helper's daemon.interval
    let daemon = run_daemon(&config);
    let mut operators = Vec::new();
    for t in &targets {
        operators.push(t.operator(&url).await);
    }

    // Every target converges in the one run; each keeps its own state file.
    wait_ready(&base, Duration::from_secs(60)).await;
    for (t, operator) in targets.iter().zip(&operators) {
        eventually(Duration::from_secs(30), &format!("the mirror in {}", t.name), || t.mirrored(operator, 443)).await;
    }
    let status = http::status(&base).await.expect("/status");
    assert_eq!(status["targets"].as_array().map(Vec::len), Some(6), "{status:#}");

    // One target's role is revoked (its sessions too): it fails alone.
    let revoked = targets.iter().position(|t| t.name == REVOKED).unwrap();
    admin(&url, "revoke", &targets[revoked].role_arn()).await;
    eventually(Duration::from_secs(15), "the revoked target failing in /status", || async {
        http::status(&base).await.is_some_and(|s| target_status(&s, REVOKED)["state"] == "failing")
    })
    .await;

    // A change at every source: the five others follow within an interval
    // (the next pass starts at most 1.1 intervals after the change) plus a
    // margin for the pass itself on a loaded machine.
    for (t, operator) in targets.iter().zip(&operators) {
        operator.authorize_ingress(&GroupId::try_new(&t.source).unwrap(), &[tcp(8443)]).await.unwrap();
    }
    let changed = Instant::now();
    let limit = interval.mul_f64(1.1) + Duration::from_secs(4);
    for (i, (t, operator)) in targets.iter().zip(&operators).enumerate() {
        if i == revoked {
            continue;
        }
        let left = limit.saturating_sub(changed.elapsed());
        eventually(left, &format!("the change mirrored in {} within an interval", t.name), || {
            t.mirrored(operator, 8443)
        })
        .await;
    }
    assert!(!targets[revoked].mirrored(&operators[revoked], 8443).await, "the revoked target is not written");

    // The sixth shows as failing; the daemon stays ready and alive.
    let status = http::status(&base).await.expect("/status");
    let failing = target_status(&status, REVOKED);
    assert_eq!(failing["state"], "failing", "{status:#}");
    assert!(failing["consecutive_failures"].as_u64().unwrap_or(0) >= 1, "{failing:#}");
    assert_eq!(failing["last_error"]["kind"], "fatal", "{failing:#}");
    assert!(failing["last_error"]["message"].as_str().unwrap_or("").contains(REVOKED), "{failing:#}");
    assert_eq!(failing["region"], "eu-west-1");
    for t in targets.iter().filter(|t| t.name != REVOKED) {
        assert_eq!(target_status(&status, &t.name)["state"], "ok", "{status:#}");
    }
    assert_eq!(status["ready"], true);
    let metrics = http::metrics(&base).await;
    assert_eq!(metric(&metrics, &format!("classiclink_mirror_target_up{{account=\"{REVOKED}\"}}")), 0.0, "{metrics}");
    for t in targets.iter().filter(|t| t.name != REVOKED) {
        let up = format!("classiclink_mirror_target_up{{account=\"{}\"}}", t.name);
        assert_eq!(metric(&metrics, &up), 1.0, "{up}");
    }
    let failed = format!("classiclink_mirror_target_passes_total{{account=\"{REVOKED}\",outcome=\"failed\"}}");
    assert!(metric(&metrics, &failed) >= 1.0, "{metrics}");
    assert_eq!(crate::common::http::get(&format!("{base}/healthz")).await.0, 200);

    // The role is back: the sixth converges, with the change it missed.
    admin(&url, "restore", &targets[revoked].role_arn()).await;
    let t = &targets[revoked];
    eventually(Duration::from_secs(15), "the restored target converging", || t.mirrored(&operators[revoked], 8443))
        .await;
    eventually(Duration::from_secs(15), "the restored target ok in /status", || async {
        http::status(&base).await.is_some_and(|s| target_status(&s, REVOKED)["state"] == "ok")
    })
    .await;

    // A region down: its three targets fail, the three others still
    // follow a change within an interval (plus the margin).
    let post = |path: String| async move { reqwest::Client::new().post(path).send().await.unwrap().status().as_u16() };
    assert_eq!(post(format!("{url}/_emulator/regions/down?region=eu-west-1")).await, 204);
    for (t, operator) in targets.iter().zip(&operators).filter(|(t, _)| t.region == "us-east-1") {
        operator.authorize_ingress(&GroupId::try_new(&t.source).unwrap(), &[tcp(9443)]).await.unwrap();
    }
    let changed = Instant::now();
    for (t, operator) in targets.iter().zip(&operators).filter(|(t, _)| t.region == "us-east-1") {
        let left = limit.saturating_sub(changed.elapsed());
        eventually(left, &format!("{} converging beside a region down", t.name), || t.mirrored(operator, 9443)).await;
    }
    eventually(Duration::from_secs(30), "the eu-west-1 targets failing", || async {
        http::status(&base).await.is_some_and(|s| {
            targets.iter().all(|t| (target_status(&s, &t.name)["state"] == "failing") == (t.region == "eu-west-1"))
        })
    })
    .await;
    assert_eq!(post(format!("{url}/_emulator/regions/up?region=eu-west-1")).await, 204);
    eventually(Duration::from_secs(60), "every target ok again", || async {
        http::status(&base).await.is_some_and(|s| targets.iter().all(|t| target_status(&s, &t.name)["state"] == "ok"))
    })
    .await;

    let (status, log) = stop_with_log(daemon, "TERM").await;
    assert!(status.success(), "{log}");
    // The failing target's log lines name its account.
    assert!(log.lines().any(|l| l.contains(REVOKED) && l.contains("could not observe")), "{log}");
    for t in &targets {
        assert!(dir.path().join(format!("state-{}.json", t.name)).exists(), "state-{}.json", t.name);
    }
}

/// The config file for the daemon at `url` with the mirrors of `targets`.
fn write_targets_config(dir: &std::path::Path, url: &str, listen: &str, targets: &[&Target]) -> std::path::PathBuf {
    write_targets_config_with(dir, url, listen, targets, "")
}

/// [`write_targets_config`] with `extra` sections after the mirrors.
fn write_targets_config_with(
    dir: &std::path::Path,
    url: &str,
    listen: &str,
    targets: &[&Target],
    extra: &str,
) -> std::path::PathBuf {
    let owned: Vec<Target> = targets
        .iter()
        .map(|t| Target {
            name: t.name.clone(),
            account: t.account,
            region: t.region,
            source: t.source.clone(),
            vpc: t.vpc.clone(),
        })
        .collect();
    crate::common::config::write_config(dir, url, listen, &format!("{}{extra}", config_extra(&owned)))
}

#[tokio::test]
async fn apply_and_plan_take_each_target_account_in_turn_with_its_own_state_file() {
    let all = targets();
    let dir = tempfile::tempdir().unwrap();
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate(&all)).unwrap();
    let emulator = EmulatorProcess::start(estate_path.to_str().unwrap(), &[]).await;
    let chosen = [&all[0], &all[3]];
    let config = write_targets_config(dir.path(), &emulator.url, "127.0.0.1:0", &chosen);
    let config = config.to_str().unwrap();
    // The daemon's state files exist: apply keeps them.
    for t in chosen {
        std::fs::write(dir.path().join(format!("state-{}.json", t.name)), "{\"version\": 1}\n").unwrap();
    }

    let plan = crate::common::process::run_command(&["plan", "--config", config]).await;
    assert_eq!(plan.code, 2, "changes pending in both: {}{}", plan.stdout, plan.stderr);
    assert!(plan.stderr.contains("target account a-use1 (us-east-1):"), "{}", plan.stderr);
    assert!(plan.stderr.contains("target account b-euw1 (eu-west-1):"), "{}", plan.stderr);

    let apply = crate::common::process::run_command(&["apply", "--config", config]).await;
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert_eq!(apply.stdout.matches("converged\n").count(), 2, "{}", apply.stdout);
    for t in chosen {
        assert!(t.mirrored(&t.operator(&emulator.url).await, 443).await, "{}", t.name);
        let state = std::fs::read_to_string(dir.path().join(format!("state-{}.json", t.name))).unwrap();
        assert!(state.contains("\"version\": 1") && state.len() > 20, "{state}");
    }
    assert!(!dir.path().join("state.json").exists(), "state.json is the [aws] target's");

    // Steady-state economy per target: a pass of each target costs what a
    // daemon with that target alone pays (docs/BENCHMARKS.md, figure 2),
    // and writes nothing.
    let mut together = Vec::new();
    for t in chosen {
        emulator.reset_calls_in(t.account, t.region).await;
    }
    let again = crate::common::process::run_command(&["plan", "--config", config]).await;
    assert_eq!(again.code, 0, "nothing left in either: {}{}", again.stdout, again.stderr);
    for t in chosen {
        together.push(emulator.calls_in(t.account, t.region).await);
    }
    for (t, calls) in chosen.iter().zip(&together) {
        let alone_dir = tempfile::tempdir().unwrap();
        // Discovery serves the primary target only: with several named
        // targets it is off, so the daemon alone is compared without it.
        let alone = write_targets_config_with(
            alone_dir.path(),
            &emulator.url,
            "127.0.0.1:0",
            &[t],
            "[discovery]\ntag_key = \"\"\n",
        );
        emulator.reset_calls_in(t.account, t.region).await;
        let plan = crate::common::process::run_command(&["plan", "--config", alone.to_str().unwrap()]).await;
        assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
        let requests = |calls: &std::collections::BTreeMap<String, Value>| -> Vec<(String, u64)> {
            calls
                .iter()
                .map(|(op, c)| (op.clone(), c["requests"].as_u64().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        let alone_calls = emulator.calls_in(t.account, t.region).await;
        assert_eq!(
            requests(calls),
            requests(&alone_calls),
            "{}: the same requests as a daemon of that target alone",
            t.name
        );
        assert!(requests(calls).iter().all(|(op, _)| op.starts_with("Describe")), "{}: {calls:?}", t.name);
    }
}

#[tokio::test]
async fn a_reload_starts_the_loop_of_a_new_target_and_stops_the_loop_of_one_gone() {
    let all = targets();
    let dir = tempfile::tempdir().unwrap();
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate(&all)).unwrap();
    let emulator = EmulatorProcess::start(estate_path.to_str().unwrap(), &[]).await;
    let url = emulator.url.clone();
    let port = crate::common::http::free_port();
    let (listen, base) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    let (first, second) = (&all[1], &all[4]);
    let config = write_targets_config(dir.path(), &url, &listen, &[first]);
    // An earlier version's file of its only target: taken over under the
    // target's own name.
    classiclink_mirror::state::StateFile::new(dir.path()).save(&Default::default()).unwrap();
    let daemon = run_daemon(&config);
    wait_ready(&base, Duration::from_secs(60)).await;
    let accounts = |status: &Value| -> Vec<String> {
        status["targets"].as_array().map_or_else(Vec::new, |targets| {
            targets.iter().filter_map(|t| t["account"].as_str().map(str::to_owned)).collect()
        })
    };
    assert_eq!(accounts(&http::status(&base).await.unwrap()), std::slice::from_ref(&first.name));
    assert!(dir.path().join(format!("state-{}.json", first.name)).exists(), "each target has its own file");
    assert!(!dir.path().join("state.json").exists(), "taken over by the only target");

    // A second target appears: its loop starts and converges.
    write_targets_config(dir.path(), &url, &listen, &[first, second]);
    crate::common::process::signal(&daemon, "HUP").await;
    let operator = second.operator(&url).await;
    eventually(Duration::from_secs(20), "the new target converging", || second.mirrored(&operator, 443)).await;
    let status = http::status(&base).await.unwrap();
    assert_eq!(accounts(&status), [first.name.clone(), second.name.clone()], "{status:#}");

    // The first target goes: its loop stops, its series go with it.
    write_targets_config(dir.path(), &url, &listen, &[second]);
    crate::common::process::signal(&daemon, "HUP").await;
    eventually(Duration::from_secs(20), "the first target gone from /status", || async {
        http::status(&base).await.is_some_and(|s| accounts(&s) == std::slice::from_ref(&second.name))
    })
    .await;
    let metrics = http::metrics(&base).await;
    assert!(!metrics.contains(&format!("account=\"{}\"", first.name)), "{metrics}");
    assert_eq!(metric(&metrics, &format!("classiclink_mirror_target_up{{account=\"{}\"}}", second.name)), 1.0);
    // Its mirror stays where it is: a target no mirror names is left alone.
    let first_operator = first.operator(&url).await;
    assert!(first.mirrored(&first_operator, 443).await);

    let (status, log) = stop_with_log(daemon, "TERM").await;
    assert!(status.success(), "{log}");
}

mod in_process {
    //! The loops in process under paused time: a target whose every
    //! request hangs never delays another target's passes.

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use async_trait::async_trait;
    use classiclink_mirror::config::Config;
    use classiclink_mirror::daemon::{Connector, PassObserver, Settings};
    use classiclink_mirror::ec2::Ec2;
    use classiclink_mirror::ec2::limited::Limited;
    use classiclink_mirror::emulator::{Emulator, EmulatorOptions, Faults, NewGroup, NewVpc};
    use classiclink_mirror::reconcile::{CycleOutcome, PassReport};
    use tokio::time::Instant;

    use crate::common::daemon::spawn_daemon;

    /// The `slow` target's port is `slow`, every other target's `fast`.
    struct TwoWorlds {
        fast: Emulator,
        slow: Emulator,
    }

    #[async_trait]
    impl Connector for TwoWorlds {
        async fn connect(&self, config: &Config) -> Arc<dyn Ec2> {
            let world = if config.target_account() == Some("slow") { &self.slow } else { &self.fast };
            Arc::new(Limited::new(world.clone(), &config.rate_limit))
        }
    }

    #[derive(Default)]
    struct Passes(Mutex<Vec<(String, Instant, CycleOutcome)>>);

    impl PassObserver for Passes {
        fn target_pass_finished(&self, account: &str, pass: &PassReport, _: SystemTime) {
            self.0.lock().unwrap().push((account.to_owned(), Instant::now(), CycleOutcome::of(pass)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_whose_requests_hang_never_delays_another_target_s_passes() {
        let (fast, slow) = (Emulator::new(EmulatorOptions::default()), Emulator::new(EmulatorOptions::default()));
        // Ids differ between the two worlds (a source is mapped once).
        slow.create_group(&NewGroup::classic("other", "Not mirrored")).await.unwrap();
        let mut mirrors = String::new();
        for (name, world) in [("fast", &fast), ("slow", &slow)] {
            let vpc = world.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
            let web = world.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
            mirrors.push_str(&format!(
                "[[mirror]]\nsource_group = \"{web}\"\nvpc = \"{vpc}\"\nsource_account = \"{name}\"\n\
                 target_account = \"{name}\"\n"
            ));
        }
        // Every request of the slow target takes an hour.
        slow.set_faults(Faults { latency: Duration::from_secs(3600), ..Faults::none() });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirror.toml");
        let text = format!(
            "[aws]\nregion = \"us-east-1\"\n[daemon]\ninterval = \"10s\"\nstate_dir = \"{}\"\n[discovery]\ntag_key = \"\"\n\
             [accounts.fast]\nregion = \"us-east-1\"\n[accounts.slow]\nregion = \"eu-west-1\"\n{mirrors}",
            dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
        let daemon = spawn_daemon(Settings::new(path, None), TwoWorlds { fast, slow }, Arc::new(Passes::default()));
        tokio::time::sleep(Duration::from_secs(125)).await;
        let passes = daemon.observer().0.lock().unwrap().clone();
        let stopped = daemon.stop().await;
        // The shutdown stops the slow target's observation at once.
        let last = stopped.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!((last.0.as_str(), last.2), ("slow", CycleOutcome::Failed));

        assert!(passes.iter().all(|(account, ..)| account == "fast"), "the slow target finished no pass: {passes:?}");
        let starts: Vec<Instant> = passes.iter().map(|(_, at, _)| *at).collect();
        assert!(starts.len() >= 11, "one pass of the fast target per interval: {passes:?}");
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_secs(9) && gap <= Duration::from_secs(11), "gap {gap:?}");
        }
        assert!(passes.iter().all(|(_, _, outcome)| *outcome == CycleOutcome::Success), "{passes:?}");
    }
}
