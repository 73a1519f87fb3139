//! Helpers shared by the integration tests' modules. Here: where the crate
//! lives, the real binary as the end-to-end tests start it, and the daemon's
//! own SDK adapter pointed at a local endpoint (the emulator's HTTP server, a
//! canned server or moto) with test credentials. One module per job:
//!
//! - `process`: a command run to its exit, a daemon started on a config,
//!   signals by PID, a bounded stop, a process's log;
//! - `emulator`: the `emulator` subcommand as a process, its address and its
//!   request counters;
//! - `served`: the emulator engine served in-process on 127.0.0.1:0;
//! - `http`: a free port, `GET`, `/status`, one `/metrics` value, "settled";
//! - `wait`: `eventually` and `wait_ready`, bounded polls;
//! - `config`: daemon config files for a local endpoint;
//! - `daemon`: `daemon::run` in-process in the background (paused-time tests);
//! - `moto`: the shared moto server.
//!
//! A test module keeps only what is its own (its estate, its assertions).
#![allow(dead_code)] // each test module uses a different part of it

pub mod config;
pub mod daemon;
pub mod emulator;
pub mod http;
pub mod moto;
pub mod process;
pub mod served;
pub mod wait;

use std::path::Path;
use std::process::Stdio;

use classiclink_mirror::config::AwsConfig;
use classiclink_mirror::ec2::aws::{AwsEc2, AwsEventSource, AwsOptions, StaticCredentials};
use classiclink_mirror::ec2::{Ec2, GroupFilter};
use classiclink_mirror::events::QueueSettings;
use classiclink_mirror::model::{SecurityGroup, VpcId};

/// The crate root: tests run the binary from here and read `tests/fixtures`.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The real `classiclink-mirror` binary, run from the crate root with an
/// environment of its own: test credentials, no instance metadata service
/// (nothing may reach AWS), JSON logs, its output piped, killed when dropped.
pub fn binary() -> tokio::process::Command {
    binary_at(env!("CARGO_BIN_EXE_classiclink-mirror"))
}

/// As [`binary`], for another build of the program at `path` (an older
/// revision, or the release build, under the same test driver).
pub fn binary_at(path: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(path);
    command
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CLASSICLINK_MIRROR_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `[aws]` for a local endpoint in `us-east-1`.
pub fn endpoint_config(url: &str) -> AwsConfig {
    AwsConfig { region: "us-east-1".into(), endpoint_url: Some(url.to_owned()), profile: None }
}

/// The credentials every local endpoint accepts.
pub fn test_credentials() -> StaticCredentials {
    StaticCredentials { access_key_id: "test".into(), secret_access_key: "test".into() }
}

/// The adapter against a local endpoint, with EC2's largest page.
pub async fn local_port(url: &str) -> AwsEc2 {
    local_port_paged(url, AwsOptions::default().page_size).await
}

/// The adapter against a local endpoint, reading `page_size` items a page.
pub async fn local_port_paged(url: &str, page_size: i32) -> AwsEc2 {
    let options = AwsOptions { page_size, credentials: Some(test_credentials()), ..AwsOptions::default() };
    AwsEc2::from_config_with(&endpoint_config(url), options).await
}

/// The daemon's adapter of the event source port against a local endpoint
/// (`endpoint_url`), reading the queue at `queue_url`, with test credentials.
pub async fn local_event_source(endpoint_url: &str, queue_url: &str) -> AwsEventSource {
    let settings = QueueSettings {
        queue_url: queue_url.to_owned(),
        endpoint_url: Some(endpoint_url.to_owned()),
        region: "us-east-1".into(),
        profile: None,
    };
    let options = AwsOptions { credentials: Some(test_credentials()), ..AwsOptions::default() };
    AwsEventSource::from_settings_with(&settings, options).await
}

/// A plain SDK EC2 client (not the daemon's adapter) against a local
/// endpoint in `us-east-1`: test credentials, SDK retries off, no
/// `app/classiclink-mirror` in its `User-Agent`.
pub fn raw_ec2(url: &str) -> aws_sdk_ec2::Client {
    use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// A plain SDK SQS client against a local endpoint in `us-east-1`: test
/// credentials, SDK retries off.
pub fn raw_sqs(url: &str) -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Every group in `vpc`, read through `ec2`.
pub async fn vpc_groups(ec2: &AwsEc2, vpc: &str) -> Vec<SecurityGroup> {
    let filter = GroupFilter { vpc_ids: vec![VpcId::try_new(vpc).unwrap()], ..GroupFilter::default() };
    ec2.describe_security_groups(&filter).await.unwrap()
}
