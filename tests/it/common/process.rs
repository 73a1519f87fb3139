//! The real binary as a process: a command's output, a daemon started on a
//! config file, signals by PID with kill(1), a bounded stop, and the log a
//! process wrote to stderr. Every wait is bounded.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::binary;

/// What a finished command printed, and its exit code (-1 when killed).
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` to its exit, within 120 s.
pub async fn run_command(args: &[&str]) -> Output {
    let output = tokio::time::timeout(Duration::from_secs(120), binary().args(args).output())
        .await
        .expect("the command finishes within 120 s")
        .expect("the command runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `classiclink-mirror run --config <config>`, not started yet (its output
/// piped: a caller that will not read a busy daemon's log sets it to null).
pub fn daemon_command(config: &Path) -> Command {
    let mut command = binary();
    command.arg("run").arg("--config").arg(config);
    command
}

/// The daemon started on `config`.
pub fn run_daemon(config: &Path) -> Child {
    daemon_command(config).spawn().expect("start run")
}

/// Sends `signal` (`TERM`, `INT`, `HUP`, …) to the running `child` with
/// kill(1); asserts it was delivered.
pub async fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill").args([format!("-{signal}"), pid]).status().await.expect("kill runs");
    assert!(sent.success(), "kill -{signal} failed");
}

/// Sends `signal` and waits for the exit, within 30 s.
pub async fn stop(mut child: Child, signal: &str) -> ExitStatus {
    self::signal(&child, signal).await;
    tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits within 30 s").unwrap()
}

/// [`stop`], then everything the process wrote to stderr (its log).
pub async fn stop_with_log(mut child: Child, signal: &str) -> (ExitStatus, String) {
    self::signal(&child, signal).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits within 30 s").unwrap();
    (status, log_of(&mut child).await)
}

/// Everything `child` wrote to its piped stderr, read within 10 s (empty
/// when stderr was not piped or was taken already).
pub async fn log_of(child: &mut Child) -> String {
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(10), stderr.read_to_string(&mut log)).await;
    }
    log
}
