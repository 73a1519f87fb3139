//! The real processes a figure drives: `classiclink-mirror emulator`, `apply`,
//! `plan` and `run`, all on 127.0.0.1, with dummy credentials, the instance
//! metadata service disabled and none of the caller's `AWS_*` or
//! `CLASSICLINK_MIRROR_*` variables. Every wait is bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use strum::VariantArray as _;

use anyhow::{Context as _, bail};
use classiclink_mirror::config::AwsConfig;
use classiclink_mirror::ec2::aws::{AwsEc2, AwsOptions, StaticCredentials};
use classiclink_mirror::ec2::{Category, Operation};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long the emulator may take to print its address (a large estate is
/// parsed and loaded first).
const START_WAIT: Duration = Duration::from_secs(120);

/// The `classiclink-mirror` binary under test.
#[derive(Clone, Debug)]
pub struct Binary {
    path: PathBuf,
}

impl Binary {
    /// The binary at `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// A command for the binary with a clean environment: dummy credentials,
    /// no instance metadata lookups, JSON logs at `warn`.
    #[must_use]
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.path);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("CLASSICLINK_MIRROR_LOG_FORMAT", "json")
            .env("CLASSICLINK_MIRROR_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs the binary to completion; `(exit code, stdout, stderr, wall time)`.
    ///
    /// # Errors
    /// It cannot be started, is killed by a signal, or runs past `limit`.
    pub async fn run(&self, args: &[&str], limit: Duration) -> anyhow::Result<Finished> {
        let started = Instant::now();
        let child = self.command().args(args).spawn().with_context(|| format!("cannot start {:?}", self.path))?;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("{args:?} did not finish within {limit:?}"))??;
        let wall = started.elapsed();
        let code = output.status.code().with_context(|| format!("{args:?} was killed: {}", output.status))?;
        Ok(Finished {
            code,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            wall,
        })
    }
}

/// A process that ran to completion.
#[derive(Debug)]
pub struct Finished {
    /// Exit code.
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (JSON log lines).
    pub stderr: String,
    /// From spawning to exit.
    pub wall: Duration,
}

/// A running `classiclink-mirror emulator`.
pub struct EmulatorProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// With `--events`: its event queue's URL.
    pub queue_url: Option<String>,
    /// Kept open so the emulator never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    http: reqwest::Client,
}

impl EmulatorProcess {
    /// Starts the emulator on a free port serving `estate`, with `extra`
    /// flags (`--throttle`, `--throttle-scale K`, …).
    ///
    /// # Errors
    /// It does not start or does not print its address in time.
    pub async fn start(binary: &Binary, estate: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let mut command = binary.command();
        command.args(["emulator", "--listen", "127.0.0.1:0", "--estate"]).arg(estate).args(extra);
        // Its log is not read: a full pipe must never block it.
        command.stderr(Stdio::null());
        let mut child = command.spawn().context("cannot start the emulator")?;
        let mut stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
        let mut line = String::new();
        tokio::time::timeout(START_WAIT, stdout.read_line(&mut line))
            .await
            .context("the emulator did not print its address in time")??;
        let Some(url) = line.trim_end().strip_prefix("emulator listening on ") else {
            let status = child.try_wait().ok().flatten();
            bail!("the emulator did not start (first line {line:?}, status {status:?})");
        };
        let url = url.to_owned();
        let mut queue_url = None;
        if extra.iter().any(|flag| flag == "--events") {
            let mut line = String::new();
            tokio::time::timeout(START_WAIT, stdout.read_line(&mut line))
                .await
                .context("the emulator did not print its event queue in time")??;
            let Some(queue) = line.trim_end().strip_prefix("event queue at ") else {
                bail!("the emulator did not print its event queue (second line {line:?})");
            };
            queue_url = Some(queue.to_owned());
        }
        Ok(Self { url, queue_url, child, _stdout: stdout, http: reqwest::Client::new() })
    }

    /// `GET /_emulator/calls`.
    ///
    /// # Errors
    /// The request fails or the answer is not the counters' JSON.
    pub async fn calls(&self) -> anyhow::Result<Calls> {
        let response = self.http.get(format!("{}/_emulator/calls", self.url)).send().await?.error_for_status()?;
        let by_action: BTreeMap<String, Counts> = response.json().await.context("/_emulator/calls is not JSON")?;
        Ok(Calls(by_action))
    }

    /// `POST /_emulator/reset-calls`.
    ///
    /// # Errors
    /// The request fails.
    pub async fn reset_calls(&self) -> anyhow::Result<()> {
        self.http.post(format!("{}/_emulator/reset-calls", self.url)).send().await?.error_for_status()?;
        Ok(())
    }

    /// The daemon's own SDK adapter pointed at this emulator.
    pub async fn port(&self) -> AwsEc2 {
        let aws = AwsConfig { region: "us-east-1".into(), endpoint_url: Some(self.url.clone()), profile: None };
        let credentials = StaticCredentials { access_key_id: "bench".into(), secret_access_key: "bench".into() };
        AwsEc2::from_config_with(&aws, AwsOptions { credentials: Some(credentials), ..AwsOptions::default() }).await
    }

    /// Kills the emulator and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One action's counters, as `/_emulator/calls` serves them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests received.
    pub requests: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Refused with `RequestLimitExceeded`.
    pub throttled: u64,
    /// Other failures by code.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
}

/// The emulator's counters of every action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Calls(pub BTreeMap<String, Counts>);

impl Calls {
    /// The counts of one action (zero if never called).
    #[must_use]
    pub fn get(&self, operation: Operation) -> Counts {
        self.0.get(operation.as_str()).cloned().unwrap_or_default()
    }

    fn category(&self, category: Category) -> impl Iterator<Item = Counts> + '_ {
        Operation::VARIANTS.iter().copied().filter(move |op| op.category() == category).map(|op| self.get(op))
    }

    /// Requests to mutating actions, throttled ones included.
    #[must_use]
    pub fn mutating_requests(&self) -> u64 {
        self.category(Category::Mutating).map(|c| c.requests).sum()
    }

    /// Mutating requests that were let through the bucket (took a token).
    #[must_use]
    pub fn mutating_admitted(&self) -> u64 {
        self.category(Category::Mutating).map(|c| c.requests - c.throttled).sum()
    }

    /// Describe requests (each page one), throttled ones included.
    #[must_use]
    pub fn describe_requests(&self) -> u64 {
        self.category(Category::Describe).map(|c| c.requests).sum()
    }

    /// `RequestLimitExceeded` answers, every action.
    #[must_use]
    pub fn throttled(&self) -> u64 {
        self.0.values().map(|c| c.throttled).sum()
    }

    /// Failures other than throttling, every action.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.0.values().flat_map(|c| c.errors.values()).sum()
    }

    /// A table: action, requests, ok, throttled, errors.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "  {:<44} {:>9} {:>9} {:>9} {:>7}", "action", "requests", "ok", "throttled", "errors");
        for (action, c) in &self.0 {
            let errors: u64 = c.errors.values().sum();
            let _ = writeln!(out, "  {action:<44} {:>9} {:>9} {:>9} {errors:>7}", c.requests, c.ok, c.throttled);
        }
        out
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the daemon binds it
/// a moment later).
///
/// # Errors
/// No port can be bound.
pub fn free_local_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `[rate_limit]` of a generated mapping file.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RateLimits {
    /// `mutating_per_second`.
    pub mutating_per_second: f64,
    /// `mutating_burst`.
    pub mutating_burst: u32,
    /// `describe_per_second`.
    pub describe_per_second: f64,
    /// `describe_burst`.
    pub describe_burst: u32,
}

impl RateLimits {
    /// EC2's account buckets (describe 100 + 20/s, mutating 50 + 5/s)
    /// multiplied by `scale`, as the emulator's `--throttle-scale` does.
    #[must_use]
    pub fn ec2_scaled(scale: f64) -> Self {
        Self {
            mutating_per_second: 5.0 * scale,
            mutating_burst: burst(50.0 * scale),
            describe_per_second: 20.0 * scale,
            describe_burst: burst(100.0 * scale),
        }
    }
}

fn burst(size: f64) -> u32 {
    // The emulator's bucket admits while it holds one whole token: a
    // bucket of 2.5 admits 2 in a burst.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = size.floor().max(1.0) as u32;
    whole
}

/// A generated mapping file: discovery on (the default), the emulator as
/// endpoint, and optionally an interval, a listen address and rate limits
/// (absent: the shipped defaults).
#[derive(Clone, Debug)]
pub struct MappingFile {
    /// `[aws] endpoint_url`.
    pub endpoint_url: String,
    /// `[daemon] interval`.
    pub interval: Option<Duration>,
    /// `[daemon] listen`.
    pub listen: Option<SocketAddr>,
    /// `[rate_limit]`.
    pub rate_limit: Option<RateLimits>,
    /// `[events] queue_url`.
    pub events_queue: Option<String>,
}

impl MappingFile {
    /// The TOML text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut toml = format!("[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n", self.endpoint_url);
        if self.interval.is_some() || self.listen.is_some() {
            toml.push_str("\n[daemon]\n");
        }
        if let Some(interval) = self.interval {
            let _ = writeln!(toml, "interval = \"{}ms\"", interval.as_millis());
        }
        if let Some(listen) = self.listen {
            let _ = writeln!(toml, "listen = \"{listen}\"");
        }
        if let Some(r) = self.rate_limit {
            let _ = write!(
                toml,
                "\n[rate_limit]\nmutating_per_second = {:?}\nmutating_burst = {}\ndescribe_per_second = {:?}\ndescribe_burst = {}\n",
                r.mutating_per_second, r.mutating_burst, r.describe_per_second, r.describe_burst
            );
        }
        if let Some(queue) = &self.events_queue {
            let _ = write!(toml, "\n[events]\nqueue_url = \"{queue}\"\n");
        }
        toml
    }

    /// Writes it to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.render()).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The load average (1, 5, 15 minutes) from `/proc/loadavg`, if readable.
#[must_use]
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_rate_limits_match_the_emulators_buckets() {
        let r = RateLimits::ec2_scaled(10.0);
        assert_eq!((r.mutating_burst, r.describe_burst), (500, 1000));
        assert!((r.mutating_per_second - 50.0).abs() < 1e-9 && (r.describe_per_second - 200.0).abs() < 1e-9);
    }
}
