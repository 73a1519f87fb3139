//! The `emulator` subcommand as a process: started on 127.0.0.1:0, its
//! address read from the first line it prints, and its
//! `/_emulator/calls` request counters (see `docs/emulator.md`).

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use classiclink_mirror::ec2::Operation;
use classiclink_mirror::ec2::aws::AwsEc2;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::{binary, process};

/// The small estate most end-to-end tests serve (`web`, `app`, `db` and
/// the target VPC `vpc-9f2e1d0c`).
pub const SMALL_ESTATE: &str = "tests/fixtures/estates/small.toml";

/// A running `emulator` process (killed on drop) and the URL it printed.
pub struct EmulatorProcess {
    child: Child,
    pub url: String,
    /// Kept open: the emulator's stdout is not closed under it.
    _stdout: BufReader<ChildStdout>,
}

impl EmulatorProcess {
    /// `emulator --listen 127.0.0.1:0 --estate <estate> <args>`, its log
    /// discarded (nobody reads it; a full pipe would stall it), its address
    /// read within 30 s.
    pub async fn start(estate: &str, args: &[&str]) -> Self {
        Self::start_within(estate, args, Duration::from_secs(30)).await
    }

    /// [`EmulatorProcess::start`], its address read within `limit` (a large
    /// generated estate takes longer to load).
    pub async fn start_within(estate: &str, args: &[&str], limit: Duration) -> Self {
        let mut command = binary();
        command.args(["emulator", "--listen", "127.0.0.1:0", "--estate", estate]).args(args).stderr(Stdio::null());
        Self::spawn(command, limit).await
    }

    /// Starts `command` (an `emulator` command line with stdout piped) and
    /// reads the address it prints first, `emulator listening on URL`,
    /// within `limit`.
    pub async fn spawn(mut command: Command, limit: Duration) -> Self {
        let mut child = command.spawn().expect("start the emulator");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        tokio::time::timeout(limit, stdout.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("the emulator prints its address within {limit:?}"))
            .expect("stdout is readable");
        let url = line
            .trim_end()
            .strip_prefix("emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");
        Self { child, url, _stdout: stdout }
    }

    /// The daemon's own adapter against this emulator.
    pub async fn sdk(&self) -> AwsEc2 {
        super::local_port(&self.url).await
    }

    /// `/_emulator/calls`: request counts by action.
    pub async fn calls(&self) -> BTreeMap<String, serde_json::Value> {
        let body = reqwest::get(format!("{}/_emulator/calls", self.url)).await.unwrap().text().await.unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// `/_emulator/calls?account=…&region=…`: request counts by action in
    /// one account's world in one region.
    pub async fn calls_in(&self, account: &str, region: &str) -> BTreeMap<String, serde_json::Value> {
        let url = format!("{}/_emulator/calls?account={account}&region={region}", self.url);
        serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap()
    }

    /// Sets every counter of one account's world in one region back to zero.
    pub async fn reset_calls_in(&self, account: &str, region: &str) {
        let url = format!("{}/_emulator/reset-calls?account={account}&region={region}", self.url);
        assert!(reqwest::Client::new().post(url).send().await.unwrap().status().is_success());
    }

    /// Requests of one action so far.
    pub async fn requests(&self, operation: &str) -> u64 {
        self.calls().await.get(operation).map_or(0, |c| c["requests"].as_u64().unwrap_or(0))
    }

    /// Requests of every action the daemon writes with.
    pub async fn mutating_calls(&self) -> u64 {
        let calls = self.calls().await;
        Operation::daemon_writes()
            .filter_map(|op| calls.get(op.as_str()))
            .map(|c| c["requests"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Sets every counter back to zero.
    pub async fn reset_calls(&self) {
        let response = reqwest::Client::new().post(format!("{}/_emulator/reset-calls", self.url)).send().await.unwrap();
        assert!(response.status().is_success());
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the exit (30 s); returns
    /// the status and what it wrote to stderr, when that was piped.
    pub async fn stop(self, signal: &str) -> (ExitStatus, String) {
        process::stop_with_log(self.child, signal).await
    }
}
