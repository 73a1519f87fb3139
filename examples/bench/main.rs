//! The benchmark runner of issue 6: figures 3 (cold convergence at EC2's
//! limits), 4 (change latency of `run`) and 5 (the emulator's and the SDK's
//! per-call cost), measured by driving the real `classiclink-mirror` binary
//! against its emulator over HTTP on 127.0.0.1. Run it through
//! `scripts/bench`, which builds the release binary first; results go into
//! docs/BENCHMARKS.md.
//!
//! ```text
//! bench [--bin PATH] [--json FILE] [--runs N] fig3|fig4|fig5|all [options]
//! ```
//!
//! Each figure prints a readable table on stdout and appends one JSON line
//! per run to `--json` (default `target/bench/results.jsonl`).

mod runner;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use runner::procs::Binary;
use runner::{Shape, fig3, fig4, fig5};

/// Figures 3–5 of docs/BENCHMARKS.md, through the real binary.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    /// The `classiclink-mirror` binary to drive.
    #[arg(long, default_value = "target/release/classiclink-mirror")]
    bin: PathBuf,
    /// Append one JSON line per run here.
    #[arg(long, default_value = "target/bench/results.jsonl")]
    json: PathBuf,
    /// Run each figure this many times.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Debug, Subcommand)]
enum Figure {
    /// Cold convergence at EC2's (scaled) token-bucket limits.
    Fig3(Fig3Args),
    /// Change latency of `run`.
    Fig4(Fig4Args),
    /// Per-call cost of the emulator's HTTP server and of the SDK.
    Fig5(Fig5Args),
    /// Figures 3, 4 and 5 with their defaults.
    All,
    /// Write a figure's generated estate to a file (for profiling by hand:
    /// `classiclink-mirror emulator --estate FILE`).
    Estate(EstateFileArgs),
}

#[derive(Debug, Args)]
struct EstateFileArgs {
    #[command(flatten)]
    estate: EstateArgs,
    /// Where to write it.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct EstateArgs {
    /// Classic groups.
    #[arg(long)]
    groups: Option<usize>,
    /// Running Classic instances.
    #[arg(long)]
    instances: Option<usize>,
    /// Grants per group (at most 60, the VPC quota).
    #[arg(long)]
    grants: Option<usize>,
}

impl EstateArgs {
    fn shape(&self, default: Shape) -> Shape {
        Shape {
            groups: self.groups.unwrap_or(default.groups),
            instances: self.instances.unwrap_or(default.instances),
            grants: self.grants.unwrap_or(default.grants),
            seed: default.seed,
        }
    }
}

#[derive(Debug, Args)]
struct Fig3Args {
    #[command(flatten)]
    estate: EstateArgs,
    /// Multiplies EC2's buckets and the daemon's `[rate_limit]` (1 = EC2's own).
    #[arg(long, default_value_t = 10.0)]
    scale: f64,
}

#[derive(Debug, Args)]
struct Fig4Args {
    #[command(flatten)]
    estate: EstateArgs,
    /// The emulator's `--throttle-scale` (and the converging `apply`'s limits).
    #[arg(long, default_value_t = 10.0)]
    scale: f64,
    /// `run`'s interval.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Rules to add.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Polling period of the mirror.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Each run twice, side by side: without events, then with events on
    /// and the emulator losing every one (`--events --event-loss 1`).
    #[arg(long)]
    lost_events: bool,
}

#[derive(Debug, Args)]
struct Fig5Args {
    #[command(flatten)]
    estate: EstateArgs,
    /// Timed requests per path.
    #[arg(long, default_value_t = 200)]
    requests: usize,
}

fn append_json(path: &PathBuf, line: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("cannot write {}", path.display()))
}

async fn figure3(cli: &Cli, options: &fig3::Options) -> anyhow::Result<()> {
    let binary = Binary::new(&cli.bin);
    for run in 1..=cli.runs {
        let result = fig3::run(&binary, options).await?;
        println!("run {run}/{}: {}", cli.runs, result.table());
        append_json(&cli.json, &result.json())?;
    }
    Ok(())
}

async fn figure4(cli: &Cli, options: &fig4::Options, lost_events: bool) -> anyhow::Result<()> {
    let binary = Binary::new(&cli.bin);
    let variants: &[bool] = if lost_events { &[false, true] } else { &[options.events_lost] };
    for run in 1..=cli.runs {
        for &events_lost in variants {
            let result = fig4::run(&binary, &fig4::Options { events_lost, ..*options }).await?;
            println!("run {run}/{}: {}", cli.runs, result.table());
            append_json(&cli.json, &result.json())?;
        }
    }
    Ok(())
}

async fn figure5(cli: &Cli, options: &fig5::Options) -> anyhow::Result<()> {
    let binary = Binary::new(&cli.bin);
    for run in 1..=cli.runs {
        let result = fig5::run(&binary, options).await?;
        println!("run {run}/{}: {}", cli.runs, result.table());
        append_json(&cli.json, &result.json())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        matches!(cli.figure, Figure::Estate(_)) || cli.bin.exists(),
        "{} does not exist: cargo build --release first",
        cli.bin.display()
    );
    match &cli.figure {
        Figure::Fig3(args) => {
            let default = fig3::Options::default();
            let options = fig3::Options { shape: args.estate.shape(default.shape), scale: args.scale, ..default };
            figure3(&cli, &options).await
        }
        Figure::Fig4(args) => {
            let default = fig4::Options::default();
            let options = fig4::Options {
                shape: args.estate.shape(default.shape),
                scale: args.scale,
                interval: args.interval,
                changes: args.changes,
                poll: args.poll,
                ..default
            };
            figure4(&cli, &options, args.lost_events).await
        }
        Figure::Fig5(args) => {
            let default = fig5::Options::default();
            let options = fig5::Options { shape: args.estate.shape(default.shape), requests: args.requests, ..default };
            figure5(&cli, &options).await
        }
        Figure::Estate(args) => {
            let shape = args.estate.shape(fig3::Options::default().shape);
            let estate = shape.write(&args.out)?;
            println!(
                "{}: {} groups, {} instances, {} grants",
                args.out.display(),
                estate.groups.len(),
                estate.instances.len(),
                estate.groups.iter().map(|g| g.rules.len()).sum::<usize>()
            );
            Ok(())
        }
        Figure::All => {
            figure3(&cli, &fig3::Options::default()).await?;
            figure4(&cli, &fig4::Options::default(), false).await?;
            figure5(&cli, &fig5::Options::default()).await
        }
    }
}
