//! The real binary's `emulator` subcommand (README.md, "Commands that work today"): it prints its address
//! first, serves an estate over EC2's Query API to the daemon's adapter,
//! honours its fault flags, exits 0 on SIGTERM or SIGINT, and refuses a bad
//! estate with exit 1 and an error naming the place. Only 127.0.0.1; every
//! wait is bounded.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use classiclink_mirror::ec2::codes;
use classiclink_mirror::ec2::{CreateGroup, Ec2, ErrorKind, GroupFilter};
use classiclink_mirror::model::{GroupId, OWNERSHIP_TAG, VpcId};

use crate::common::emulator::{EmulatorProcess, SMALL_ESTATE};
use crate::common::root;

/// Generous for a debug binary on a busy 2-core machine, still bounded.
const WAIT: Duration = Duration::from_secs(30);

/// The binary, run from the crate root, with none of the variables it reads
/// inherited from the test's own environment.
fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_classiclink-mirror"));
    command.current_dir(root()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CLASSICLINK_MIRROR_") || key.starts_with("AWS_") || key == "RUST_LOG" {
            command.env_remove(key.as_ref());
        }
    }
    command.env("CLASSICLINK_MIRROR_LOG_FORMAT", "text").env("CLASSICLINK_MIRROR_LOG_LEVEL", "warn");
    command
}

async fn run_to_exit(mut command: Command) -> (i32, String, String) {
    let child = command.spawn().expect("the binary starts");
    let output =
        tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("exits in time").expect("output readable");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 stderr");
    (output.status.code().expect("exited, not killed"), stdout, stderr)
}

#[tokio::test]
async fn serves_an_estate_to_the_daemons_adapter_and_exits_0_on_sigterm() {
    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--estate", SMALL_ESTATE]);
    let emulator = EmulatorProcess::spawn(command, WAIT).await;
    let port = emulator.sdk().await;

    let groups = port.describe_security_groups(&GroupFilter::default()).await.expect("describe");
    let web = groups.iter().find(|g| g.name == "web").expect("the estate's web group");
    assert_eq!(web.id, GroupId::try_new("sg-0a1b2c3d").unwrap());
    assert!(web.is_classic());
    let target = VpcId::try_new("vpc-9f2e1d0c").unwrap();
    let request = CreateGroup {
        vpc_id: target.clone(),
        name: "web".into(),
        description: "Web tier".into(),
        tags: BTreeMap::from([(OWNERSHIP_TAG.to_owned(), web.id.to_string())]),
    };
    let mirror = port.create_security_group(&request).await.expect("create a mirror");
    let in_target = GroupFilter { vpc_ids: vec![target], ..GroupFilter::default() };
    let mirrors = port.describe_security_groups(&in_target).await.expect("describe VPC");
    assert!(mirrors.iter().any(|g| g.id == mirror && g.mirrored_from().as_ref() == Some(&web.id)), "{mirrors:?}");

    let calls: serde_json::Value = reqwest::get(format!("{}/_emulator/calls", emulator.url))
        .await
        .expect("counters answer")
        .json()
        .await
        .expect("counters are JSON");
    assert_eq!(calls["DescribeSecurityGroups"]["requests"], 2);
    assert_eq!(calls["CreateSecurityGroup"]["ok"], 1);

    let (status, stderr) = emulator.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[tokio::test]
async fn listens_where_the_environment_says_and_exits_0_on_sigint() {
    let mut command = binary();
    command.env("CLASSICLINK_MIRROR_EMULATOR_LISTEN", "127.0.0.1:0").arg("emulator");
    let emulator = EmulatorProcess::spawn(command, WAIT).await;
    let groups = emulator.sdk().await.describe_security_groups(&GroupFilter::default()).await.expect("describe");
    assert_eq!(groups.len(), 1, "an empty world has only the EC2-Classic default group: {groups:?}");
    let (status, stderr) = emulator.stop("INT").await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[tokio::test]
async fn fault_flags_reach_the_engine() {
    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--error-rate", "1"]);
    let failing = EmulatorProcess::spawn(command, WAIT).await;
    let error = failing.sdk().await.describe_security_groups(&GroupFilter::default()).await.expect_err("injected");
    assert!([codes::INTERNAL_ERROR, codes::UNAVAILABLE].contains(&error.code.as_str()), "{error}");
    assert_eq!(error.kind, ErrorKind::Transient);
    failing.stop("TERM").await;

    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--consistency-delay", "1h", "--throttle"]);
    let slow = EmulatorProcess::spawn(command, WAIT).await;
    let port = slow.sdk().await;
    let vpc = port.world().create_vpc("10.0.0.0/16").await.expect("VPCs are visible at once");
    let request = CreateGroup { vpc_id: vpc, name: "m".into(), description: "m".into(), tags: BTreeMap::new() };
    let group = port.create_security_group(&request).await.expect("create");
    let error = port.delete_security_group(&group).await.expect_err("not visible for an hour");
    assert_eq!(error.code, codes::GROUP_NOT_FOUND);
    // EC2's mutating bucket holds 50 requests; three were spent above.
    let mut throttled = None;
    for _ in 0..60 {
        if let Err(error) = port.delete_security_group(&group).await
            && error.code == codes::REQUEST_LIMIT_EXCEEDED
        {
            throttled = Some(error);
            break;
        }
    }
    assert_eq!(throttled.map(|e| e.kind), Some(ErrorKind::Throttled), "--throttle empties the mutating bucket");
    let (status, stderr) = slow.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[tokio::test]
async fn throttle_scale_shrinks_or_grows_the_buckets() {
    // × 0.02: the describe bucket holds 2 requests, the mutating one 1, and
    // they refill at 0.4/s and 0.1/s: the next request of each category, a
    // few milliseconds later, is throttled.
    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--throttle", "--throttle-scale", "0.02"]);
    let emulator = EmulatorProcess::spawn(command, WAIT).await;
    let port = emulator.sdk().await;
    let all = GroupFilter::default();
    port.describe_security_groups(&all).await.expect("first describe token");
    port.describe_security_groups(&all).await.expect("second describe token");
    let error = port.describe_security_groups(&all).await.expect_err("the describe bucket is empty");
    assert_eq!(error.code, codes::REQUEST_LIMIT_EXCEEDED);
    let vpc = port.world().create_vpc("10.0.0.0/16").await.expect("the only mutating token");
    let request = CreateGroup { vpc_id: vpc, name: "m".into(), description: "m".into(), tags: BTreeMap::new() };
    let error = port.create_security_group(&request).await.expect_err("the mutating bucket is empty");
    assert_eq!(error.kind, ErrorKind::Throttled);
    let (status, stderr) = emulator.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{stderr}");

    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--throttle-scale", "2"]);
    let (code, _, stderr) = run_to_exit(command).await;
    assert_eq!(code, 1, "--throttle-scale without --throttle is a usage error: {stderr}");
    assert!(stderr.contains("--throttle"), "{stderr}");
}

#[tokio::test]
async fn a_bad_estate_exits_1_naming_the_file_and_the_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[[group]]\nname = \"web\"\ndescription = \"Web\"\n\n[[group.rules]]\nprotocol = \"tcp\"\nport = 80\nfrom_group = \"lb\"\n",
    )
    .expect("write estate");
    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--estate"]).arg(&path);
    let (code, stdout, stderr) = run_to_exit(command).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "nothing is served, so no address is printed: {stdout}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("group[0].rules[0].from_group"), "{stderr}");

    std::fs::write(&path, "[[vpc]]\nname = \"x\"\ncolour = \"blue\"\n").expect("write estate");
    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--estate"]).arg(&path);
    let (code, _, stderr) = run_to_exit(command).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()) && stderr.contains("colour"), "{stderr}");

    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--estate", "tests/fixtures/estates/missing.toml"]);
    let (code, _, stderr) = run_to_exit(command).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("tests/fixtures/estates/missing.toml"), "{stderr}");
}

#[tokio::test]
async fn an_error_rate_outside_zero_to_one_is_a_usage_error() {
    let mut command = binary();
    command.args(["emulator", "--listen", "127.0.0.1:0", "--error-rate", "2"]);
    let (code, _, stderr) = run_to_exit(command).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not between 0 and 1"), "{stderr}");
}
