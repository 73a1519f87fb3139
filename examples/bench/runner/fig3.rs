//! Figure 3 — cold convergence at the limit: `apply` mirrors a generated
//! estate from nothing against the `emulator` process with EC2's token
//! buckets on (scaled by `K`, the daemon's `[rate_limit]` scaled alike).
//! Reports mutating calls ÷ the minimum the estate needs, throttled
//! responses and failed actions, and wall time ÷ the token-bucket bound.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::Serialize;

use super::procs::{Binary, Calls, EmulatorProcess, MappingFile, RateLimits, load_average};
use super::{Minimum, Shape, bucket_bound, secs};

/// What to run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Options {
    /// The estate.
    pub shape: Shape,
    /// `--throttle-scale` of the emulator and the factor of `[rate_limit]`.
    pub scale: f64,
    /// `apply --max-passes`.
    pub max_passes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self { shape: Shape { groups: 500, instances: 2000, grants: 50, seed: 6 }, scale: 10.0, max_passes: 5 }
    }
}

/// One `pass N: …` line of `apply`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pass {
    /// Actions planned (audit-only excluded).
    pub actions: u64,
    /// Done or already done.
    pub done: u64,
    /// Failed.
    pub failed: u64,
    /// Skipped (a dependency failed).
    pub skipped: u64,
}

impl Pass {
    /// Parses `pass 1: 3000 actions (3000 done, 0 failed, 0 skipped)`.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("pass ")?;
        let (_, rest) = rest.split_once(": ")?;
        let (actions, rest) = rest.split_once(" actions (")?;
        let inner = rest.split(')').next()?;
        let mut numbers = inner.split(", ").map(|part| part.split(' ').next().and_then(|n| n.parse().ok()));
        Some(Self {
            actions: actions.parse().ok()?,
            done: numbers.next()??,
            failed: numbers.next()??,
            skipped: numbers.next()??,
        })
    }
}

/// The measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Fig3 {
    /// What ran.
    pub options: Options,
    /// The fewest mutating calls the estate needs (from the estate alone).
    pub minimum: Minimum,
    /// The emulator's counters over the whole `apply`.
    pub calls: Calls,
    /// `apply`'s exit code (0: converged).
    pub exit_code: i32,
    /// `apply`'s passes.
    pub passes: Vec<Pass>,
    /// Exit code of a `plan` right after (0: nothing left to do).
    pub plan_after: i32,
    /// `apply` from spawn to exit.
    pub wall: Duration,
    /// From spawn to the first write's log line.
    pub before_first_write: Option<Duration>,
    /// From the first write's log line to the last one.
    pub write_span: Option<Duration>,
    /// The emulator's mutating bucket: burst, refill per second.
    pub mutating_bucket: (f64, f64),
    /// Load average before and after.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

impl Fig3 {
    /// Mutating requests that reached the world (took a token).
    #[must_use]
    pub fn mutating_admitted(&self) -> u64 {
        self.calls.mutating_admitted()
    }

    /// Mutating calls ÷ the minimum (goal 1.00).
    #[must_use]
    pub fn call_ratio(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ratio = self.mutating_admitted() as f64 / self.minimum.total().max(1) as f64;
        ratio
    }

    /// Actions that failed over all passes (goal 0).
    #[must_use]
    pub fn failed_actions(&self) -> u64 {
        self.passes.iter().map(|p| p.failed).sum()
    }

    /// The least time the mutating bucket allows for the admitted calls.
    #[must_use]
    pub fn bound(&self) -> Duration {
        bucket_bound(self.mutating_admitted(), self.mutating_bucket.0, self.mutating_bucket.1)
    }

    /// Wall time ÷ the bound (goal ≤ 1.10); `None` when the burst covers everything.
    #[must_use]
    pub fn time_ratio(&self) -> Option<f64> {
        let bound = self.bound();
        (!bound.is_zero()).then(|| self.wall.as_secs_f64() / bound.as_secs_f64())
    }

    /// The readable report.
    #[must_use]
    pub fn table(&self) -> String {
        let s = &self.options.shape;
        let m = &self.minimum;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "figure 3: cold convergence, {} groups × {} grants, {} instances; emulator --throttle --throttle-scale {} \
             (mutating bucket {} + {}/s); [rate_limit] alike",
            s.groups, s.grants, s.instances, self.options.scale, self.mutating_bucket.0, self.mutating_bucket.1
        );
        let _ = writeln!(
            out,
            "  apply: exit {}, {} passes {:?}; plan afterwards: exit {}",
            self.exit_code,
            self.passes.len(),
            self.passes.iter().map(|p| p.actions).collect::<Vec<_>>(),
            self.plan_after
        );
        out.push_str(&self.calls.table());
        let _ = writeln!(
            out,
            "  minimum: {} creates + {} authorizes + {} attaches + {} enables = {}",
            m.creates,
            m.authorizes,
            m.attaches,
            m.enables,
            m.total()
        );
        let _ = writeln!(
            out,
            "  mutating calls {} ÷ minimum {} = {:.2}   (goal 1.00)",
            self.mutating_admitted(),
            m.total(),
            self.call_ratio()
        );
        let _ = writeln!(
            out,
            "  throttled responses {} (mutating {}), failed actions {}   (goal: none failing an action)",
            self.calls.throttled(),
            self.calls.mutating_requests() - self.calls.mutating_admitted(),
            self.failed_actions()
        );
        let ratio = self.time_ratio().map_or("n/a (within the burst)".to_owned(), |r| format!("{r:.3}"));
        let _ = writeln!(
            out,
            "  wall {:.2} s ÷ bound {:.2} s = {ratio}   (goal ≤ 1.10); before the first write {:.2} s, writes {:.2} s",
            self.wall.as_secs_f64(),
            self.bound().as_secs_f64(),
            self.before_first_write.unwrap_or_default().as_secs_f64(),
            self.write_span.unwrap_or_default().as_secs_f64(),
        );
        out
    }

    /// The JSON line.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "figure": 3,
            "options": self.options,
            "minimum": self.minimum,
            "minimum_total": self.minimum.total(),
            "mutating_calls": self.mutating_admitted(),
            "call_ratio": self.call_ratio(),
            "throttled": self.calls.throttled(),
            "failed_actions": self.failed_actions(),
            "exit_code": self.exit_code,
            "plan_after": self.plan_after,
            "passes": self.passes,
            "wall_s": secs(self.wall),
            "bound_s": secs(self.bound()),
            "time_ratio": self.time_ratio(),
            "before_first_write_s": self.before_first_write.map(secs),
            "write_span_s": self.write_span.map(secs),
            "mutating_bucket": self.mutating_bucket,
            "calls": self.calls,
            "load_before": self.load.0,
            "load_after": self.load.1,
        })
    }
}

/// Timestamps of the executor's per-action log lines (`action succeeded` /
/// `action failed`, JSON) in `stderr`.
fn action_times(stderr: &str) -> Vec<SystemTime> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            let message = entry["fields"]["message"].as_str().unwrap_or_default();
            message == "action succeeded" || message == "action failed"
        })
        .filter_map(|entry| entry["timestamp"].as_str().and_then(|t| humantime::parse_rfc3339_weak(t).ok()))
        .collect()
}

/// Runs figure 3 once.
///
/// # Errors
/// A process fails to start, a file cannot be written, or `apply` runs
/// far past its bound.
pub async fn run(binary: &Binary, options: &Options) -> anyhow::Result<Fig3> {
    let load_before = load_average();
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let estate_path = dir.path().join("estate.toml");
    let estate = options.shape.write(&estate_path)?;
    let minimum = Minimum::of(&estate);
    drop(estate);

    let scale = options.scale;
    let flags = vec!["--throttle".to_owned(), "--throttle-scale".to_owned(), scale.to_string()];
    let emulator = EmulatorProcess::start(binary, &estate_path, &flags).await?;
    let config_path = dir.path().join("mirror.toml");
    let mapping = MappingFile {
        endpoint_url: emulator.url.clone(),
        interval: None,
        listen: None,
        rate_limit: Some(RateLimits::ec2_scaled(scale)),
        events_queue: None,
    };
    mapping.write(&config_path)?;
    let config = config_path.to_str().context("a UTF-8 temporary path")?;
    let mutating_bucket = (50.0 * scale, 5.0 * scale);

    emulator.reset_calls().await?;
    let expected = bucket_bound(minimum.total(), mutating_bucket.0, mutating_bucket.1);
    let limit = expected * 3 + Duration::from_secs(300);
    let max_passes = options.max_passes.to_string();
    let spawned = SystemTime::now();
    let apply =
        binary.run(&["apply", "--config", config, "--max-passes", &max_passes, "--log-level", "info"], limit).await?;
    let calls = emulator.calls().await?;
    let plan = binary.run(&["plan", "--config", config], Duration::from_secs(300)).await?;
    emulator.stop().await;

    let passes: Vec<Pass> = apply.stdout.lines().filter_map(Pass::parse).collect();
    if apply.code != 0 {
        eprintln!("apply exited {}:\n{}", apply.code, apply.stdout);
    }
    let times = action_times(&apply.stderr);
    let first = times.iter().min().copied();
    let last = times.iter().max().copied();
    let before_first_write = first.and_then(|f| f.duration_since(spawned).ok());
    let write_span = first.zip(last).and_then(|(f, l)| l.duration_since(f).ok());
    Ok(Fig3 {
        options: *options,
        minimum,
        calls,
        exit_code: apply.code,
        passes,
        plan_after: plan.code,
        wall: apply.wall,
        before_first_write,
        write_span,
        mutating_bucket,
        load: (load_before, load_average()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_lines_parse() {
        let pass = Pass::parse("pass 1: 3000 actions (2990 done, 4 failed, 6 skipped); snapshot incomplete");
        assert_eq!(pass, Some(Pass { actions: 3000, done: 2990, failed: 4, skipped: 6 }));
        assert_eq!(Pass::parse("converged"), None);
    }
}
