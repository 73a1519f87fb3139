//! Figure 4 — change latency: with `run` going at a fixed interval over a
//! converged estate, the time from a rule authorized on a Classic group
//! (through `aws-sdk-ec2`, the daemon's own adapter) to the mirror carrying
//! the translated rule (polled through the same SDK).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use classiclink_mirror::ec2::aws::AwsEc2;
use classiclink_mirror::ec2::{Ec2, GroupFilter};
use classiclink_mirror::model::{Grant, GroupId, OWNERSHIP_TAG, Peer, Ports, Protocol};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio::io::AsyncReadExt as _;

use super::procs::{Binary, EmulatorProcess, MappingFile, RateLimits, free_local_address, load_average};
use super::{Shape, quantile, secs};

/// What to run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Options {
    /// The estate, converged with `apply` before the measurement.
    pub shape: Shape,
    /// `--throttle-scale` of the emulator (and `[rate_limit]` of the
    /// converging `apply`; `run` keeps the shipped defaults).
    pub scale: f64,
    /// `[daemon] interval` of `run`.
    pub interval: Duration,
    /// How many rules to add, one after the other.
    pub changes: usize,
    /// How often the mirror is described while waiting.
    pub poll: Duration,
    /// Seed of the waits between changes.
    pub seed: u64,
    /// Events on (`emulator --events`, `[events] queue_url`) with the
    /// emulator losing every one (`--event-loss 1`): the latency must be
    /// what it is without events.
    pub events_lost: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            shape: Shape { groups: 500, instances: 2000, grants: 50, seed: 6 },
            scale: 10.0,
            interval: Duration::from_secs(5),
            changes: 50,
            poll: Duration::from_millis(50),
            seed: 4,
            events_lost: false,
        }
    }
}

/// The measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Fig4 {
    /// What ran.
    pub options: Options,
    /// Rule authorized → mirror carries it, one per change, in order.
    pub latencies: Vec<Duration>,
    /// `classiclink_mirror_cycle_duration_seconds` over the measurement:
    /// passes and their mean duration.
    pub passes: u64,
    /// Mean pass duration.
    pub mean_pass: Duration,
    /// `RequestLimitExceeded` answers during the measurement.
    pub throttled: u64,
    /// The daemon's exit code on SIGTERM.
    pub daemon_exit: Option<i32>,
    /// Load average before and after.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

impl Fig4 {
    fn sorted(&self) -> Vec<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
    }

    /// Median latency.
    #[must_use]
    pub fn median(&self) -> Duration {
        quantile(&self.sorted(), 0.5)
    }

    /// 99th percentile (nearest rank: the largest of 50 is p99 and max alike).
    #[must_use]
    pub fn p99(&self) -> Duration {
        quantile(&self.sorted(), 0.99)
    }

    /// The slowest change.
    #[must_use]
    pub fn max(&self) -> Duration {
        self.latencies.iter().max().copied().unwrap_or_default()
    }

    /// The goal: interval + 1 s.
    #[must_use]
    pub fn goal(&self) -> Duration {
        self.options.interval + Duration::from_secs(1)
    }

    /// The readable report.
    #[must_use]
    pub fn table(&self) -> String {
        let s = &self.options.shape;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "figure 4: change latency, {} groups × {} grants, {} instances converged; run interval {:?} (±10%), \
             default [rate_limit]; emulator --throttle --throttle-scale {}{}",
            s.groups,
            s.grants,
            s.instances,
            self.options.interval,
            self.options.scale,
            if self.options.events_lost { " --events --event-loss 1; [events] on, every event lost" } else { "" }
        );
        let _ = writeln!(
            out,
            "  {} changes: min {:.3} s, median {:.3} s, p99 {:.3} s, max {:.3} s   (goal ≤ {:.1} s)",
            self.latencies.len(),
            self.sorted().first().copied().unwrap_or_default().as_secs_f64(),
            self.median().as_secs_f64(),
            self.p99().as_secs_f64(),
            self.max().as_secs_f64(),
            self.goal().as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  daemon: {} passes, mean pass {:.3} s; throttled responses {}; exit on SIGTERM {:?}",
            self.passes,
            self.mean_pass.as_secs_f64(),
            self.throttled,
            self.daemon_exit
        );
        out
    }

    /// The JSON line.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "figure": 4,
            "options": {
                "shape": self.options.shape,
                "scale": self.options.scale,
                "interval_s": secs(self.options.interval),
                "changes": self.options.changes,
                "poll_s": secs(self.options.poll),
                "seed": self.options.seed,
                "events_lost": self.options.events_lost,
            },
            "median_s": secs(self.median()),
            "p99_s": secs(self.p99()),
            "max_s": secs(self.max()),
            "goal_s": secs(self.goal()),
            "latencies_s": self.latencies.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
            "passes": self.passes,
            "mean_pass_s": secs(self.mean_pass),
            "throttled": self.throttled,
            "daemon_exit": self.daemon_exit,
            "load_before": self.load.0,
            "load_after": self.load.1,
        })
    }
}

/// `(count, sum)` of `cycle_duration_seconds` from the daemon's `/metrics`.
async fn cycle_stats(http: &reqwest::Client, metrics: &str) -> anyhow::Result<(u64, f64)> {
    let text = http.get(metrics).send().await?.error_for_status()?.text().await?;
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = value("classiclink_mirror_cycle_duration_seconds_count ") as u64;
    Ok((count, value("classiclink_mirror_cycle_duration_seconds_sum ")))
}

/// Mirror of each source, from the ownership tag.
async fn mirrors(port: &AwsEc2) -> anyhow::Result<BTreeMap<GroupId, GroupId>> {
    let filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.to_owned()], ..GroupFilter::default() };
    let groups = port.describe_security_groups(&filter).await?;
    Ok(groups.into_iter().filter_map(|g| g.mirrored_from().map(|source| (source, g.id))).collect())
}

/// Change `index`: a new TCP rule on one Classic group — from a /32 for even
/// changes, from another Classic group (mirrored as a reference to that
/// group's mirror) for odd ones. `(group, grant, the grant the mirror must carry)`.
fn change(index: usize, sources: &[(GroupId, GroupId)]) -> (GroupId, GroupId, Grant, Grant) {
    // Spread over the groups; port 40000 + i is not used by generated rules.
    let (source, mirror) = sources[(index * 7) % sources.len()].clone();
    let port = u16::try_from(40_000 + index).unwrap_or(u16::MAX);
    let ports = Ports::Range { from: port, to: port };
    let (peer, translated) = if index.is_multiple_of(2) || sources.len() < 2 {
        let net: ipnet::Ipv4Net = format!("203.0.113.{}/32", index % 250).parse().expect("a CIDR");
        (Peer::Ipv4(net), Peer::Ipv4(net))
    } else {
        let (other, other_mirror) = sources[(index * 7 + 1) % sources.len()].clone();
        (Peer::Group { group: other, owner: None }, Peer::Group { group: other_mirror, owner: None })
    };
    let description = Some(format!("bench change {index}"));
    let grant = Grant::new(Protocol::Tcp, ports, peer, description.clone());
    let expected = Grant::new(Protocol::Tcp, ports, translated, description);
    (source, mirror, grant, expected)
}

/// Runs figure 4 once.
///
/// # Errors
/// A process fails, the estate does not converge, or a change is not
/// mirrored within a minute.
pub async fn run(binary: &Binary, options: &Options) -> anyhow::Result<Fig4> {
    let load_before = load_average();
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let estate_path = dir.path().join("estate.toml");
    options.shape.write(&estate_path)?;
    let scale = options.scale.to_string();
    let mut flags = vec!["--throttle".to_owned(), "--throttle-scale".to_owned(), scale];
    if options.events_lost {
        flags.extend(["--events", "--event-loss", "1"].map(str::to_owned));
    }
    let emulator = EmulatorProcess::start(binary, &estate_path, &flags).await?;

    // Converge first (figure 3's run, not measured here).
    let apply_path = dir.path().join("apply.toml");
    let apply = MappingFile {
        endpoint_url: emulator.url.clone(),
        interval: None,
        listen: None,
        rate_limit: Some(RateLimits::ec2_scaled(options.scale)),
        events_queue: None,
    };
    apply.write(&apply_path)?;
    let apply_config = apply_path.to_str().context("a UTF-8 path")?;
    let converged = binary.run(&["apply", "--config", apply_config], Duration::from_secs(1800)).await?;
    if converged.code != 0 {
        bail!("apply did not converge (exit {}):\n{}", converged.code, converged.stdout);
    }

    // The daemon, with the shipped rate limits.
    let listen = free_local_address()?;
    let run_path = dir.path().join("run.toml");
    let run = MappingFile {
        endpoint_url: emulator.url.clone(),
        interval: Some(options.interval),
        listen: Some(listen),
        rate_limit: None,
        events_queue: emulator.queue_url.clone(),
    };
    run.write(&run_path)?;
    let mut daemon = binary.command();
    daemon.args(["run", "--config"]).arg(&run_path).stdout(std::process::Stdio::null());
    let mut daemon = daemon.spawn().context("cannot start the daemon")?;
    let mut daemon_log = daemon.stderr.take().context("piped stderr")?;
    // Drained so the daemon never blocks on a full pipe; kept for a failure report.
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = daemon_log.read_to_string(&mut text).await;
        text
    });
    let http = reqwest::Client::new();
    let ready = format!("http://{listen}/readyz");
    let metrics = format!("http://{listen}/metrics");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = http.get(&ready).send().await
            && response.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the daemon is not ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let port = emulator.port().await;
    let sources: Vec<(GroupId, GroupId)> = mirrors(&port).await?.into_iter().collect();
    if sources.is_empty() {
        bail!("no mirrors after apply");
    }
    let throttled_before = emulator.calls().await?.throttled();
    let (passes_before, sum_before) = cycle_stats(&http, &metrics).await?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut latencies = Vec::with_capacity(options.changes);
    for index in 0..options.changes {
        // A random phase of the daemon's cycle for every change.
        tokio::time::sleep(options.interval.mul_f64(rng.random::<f64>())).await;
        let (source, mirror, grant, expected) = change(index, &sources);
        let by_id = GroupFilter { group_ids: vec![mirror.clone()], ..GroupFilter::default() };
        let started = Instant::now();
        port.authorize_ingress(&source, std::slice::from_ref(&grant))
            .await
            .with_context(|| format!("authorize change {index} on {source}"))?;
        loop {
            let groups = port.describe_security_groups(&by_id).await?;
            if groups.iter().any(|g| g.ingress.iter().any(|have| have.key == expected.key)) {
                latencies.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("change {index} ({source} → {mirror}) not mirrored within 60 s");
            }
            tokio::time::sleep(options.poll).await;
        }
    }
    let (passes_after, sum_after) = cycle_stats(&http, &metrics).await?;
    let throttled = emulator.calls().await?.throttled() - throttled_before;

    let pid = daemon.id().context("the daemon is running")?.to_string();
    let _ = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
    let daemon_exit = match tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await {
        Ok(Ok(status)) => status.code(),
        _ => {
            let _ = daemon.kill().await;
            None
        }
    };
    let log = log.await.unwrap_or_default();
    if daemon_exit != Some(0) {
        eprintln!("daemon log:\n{log}");
    }
    emulator.stop().await;

    let passes = passes_after.saturating_sub(passes_before);
    #[allow(clippy::cast_precision_loss)]
    let mean_pass =
        if passes == 0 { Duration::ZERO } else { Duration::from_secs_f64((sum_after - sum_before) / passes as f64) };
    Ok(Fig4 {
        options: *options,
        latencies,
        passes,
        mean_pass,
        throttled,
        daemon_exit,
        load: (load_before, load_average()),
    })
}
