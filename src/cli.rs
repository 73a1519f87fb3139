//! The command line (README.md, "Commands that work today"), clap derive. Parsing only: `main.rs` decides
//! what each command does. Every flag that makes sense as an environment
//! variable has one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ec2::Operation;

/// Keeps mirrors of EC2-Classic security groups in a VPC, and the Classic
/// instances ClassicLinked to them.
#[derive(Debug, Parser)]
#[command(name = "classiclink-mirror", version, about, long_about = None)]
pub struct Cli {
    /// Flags shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format; default text on a terminal, json otherwise.
    #[arg(long, global = true, value_enum, env = "CLASSICLINK_MIRROR_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (e.g. `debug`, `classiclink_mirror=debug`); `RUST_LOG` also works.
    #[arg(long, global = true, env = "CLASSICLINK_MIRROR_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Plan output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// The reviewable diff.
    #[default]
    Text,
    /// The versioned JSON document (docs/plan-json.md).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: reconcile every `daemon.interval` until SIGTERM/SIGINT
    /// (exit 0). SIGHUP or a changed file reloads the mapping file.
    Run(ConfigArg),
    /// Start the EC2 emulator with a sample Classic estate and the daemon
    /// against it over HTTP; narrate until converged, change the Classic side
    /// a few times, and keep serving `/metrics` until Ctrl-C.
    Demo(DemoArgs),
    /// Exit 0 when the daemon's `/healthz` answers 200 (for container health
    /// checks on images without curl).
    Healthcheck(HealthcheckArgs),
    /// Observe and plan, print the plan, change nothing. Exit 0: nothing to
    /// do; 2: changes pending; 1: error, including an incomplete observation
    /// (a describe failed).
    Plan(PlanArgs),
    /// Observe → plan → execute passes until the plan is empty or
    /// `--max-passes` ran. Exit 0: converged (audited drift allowed); 1:
    /// error, including a last pass that could not observe EC2 completely; 3:
    /// not converged.
    Apply(ApplyArgs),
    /// Parse and validate the mapping file, print every error with its key
    /// path. Exit 0: valid; 1: invalid.
    Validate(ConfigArg),
    /// Serve the EC2 emulator (docs/emulator.md) over EC2's Query API until SIGINT or
    /// SIGTERM. Prints `emulator listening on http://ADDR` first.
    Emulator(EmulatorArgs),
}

/// `emulator` flags: where to listen, what world to seed, which faults.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4566", env = "CLASSICLINK_MIRROR_EMULATOR_LISTEN")]
    pub listen: SocketAddr,
    /// Estate file (TOML, docs/estate.md) to seed the world; default: only the EC2-Classic `default` group.
    #[arg(long, value_name = "FILE", env = "CLASSICLINK_MIRROR_EMULATOR_ESTATE")]
    pub estate: Option<PathBuf>,
    /// Throttle like EC2's default token buckets (describe 100 + 20/s, mutating 50 + 5/s).
    #[arg(long, env = "CLASSICLINK_MIRROR_EMULATOR_THROTTLE")]
    pub throttle: bool,
    /// Multiply both buckets' size and refill rate by K (e.g. `10` for a ten
    /// times larger account, `0.5` for a stingier one); needs `--throttle`.
    #[arg(long, value_name = "K", default_value_t = 1.0, value_parser = parse_scale, requires = "throttle",
          env = "CLASSICLINK_MIRROR_EMULATOR_THROTTLE_SCALE")]
    pub throttle_scale: f64,
    /// Share of requests answered with an injected `InternalError` / `Unavailable`, 0 to 1.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate,
          env = "CLASSICLINK_MIRROR_EMULATOR_ERROR_RATE")]
    pub error_rate: f64,
    /// One action's share of injected errors, 0 to 1, in place of
    /// `--error-rate` for it: `ACTION=RATE` with EC2's action name (e.g.
    /// `DescribeSecurityGroups=1` fails every such request). Repeat the flag,
    /// or separate pairs with commas, for several actions.
    #[arg(long = "operation-error-rate", value_name = "ACTION=RATE", value_parser = parse_operation_rate,
          value_delimiter = ',', env = "CLASSICLINK_MIRROR_EMULATOR_OPERATION_ERROR_RATE")]
    pub operation_error_rates: Vec<(Operation, f64)>,
    /// How long new groups and instances stay invisible (e.g. `1s`, `500ms`).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration,
          env = "CLASSICLINK_MIRROR_EMULATOR_CONSISTENCY_DELAY")]
    pub consistency_delay: Duration,
    /// Publish the EventBridge event of every accepted write into an SQS
    /// queue served on the same address (docs/emulator.md, "Event queue");
    /// its URL is the second line of stdout.
    #[arg(long, env = "CLASSICLINK_MIRROR_EMULATOR_EVENTS")]
    pub events: bool,
    /// With `--events`: how long after its write an event is delivered.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration,
          requires = "events", env = "CLASSICLINK_MIRROR_EMULATOR_EVENT_DELAY")]
    pub event_delay: Duration,
    /// With `--events`: up to this much more delay, uniformly drawn (events overtake each other).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration,
          requires = "events", env = "CLASSICLINK_MIRROR_EMULATOR_EVENT_DELAY_JITTER")]
    pub event_delay_jitter: Duration,
    /// With `--events`: share of events lost, 0 to 1.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate, requires = "events",
          env = "CLASSICLINK_MIRROR_EMULATOR_EVENT_LOSS")]
    pub event_loss: f64,
    /// With `--events`: share of events delivered twice, 0 to 1.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate, requires = "events",
          env = "CLASSICLINK_MIRROR_EMULATOR_EVENT_DUPLICATION")]
    pub event_duplication: f64,
    /// With `--events`: seed of the delay, loss and duplication draws.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "events",
        env = "CLASSICLINK_MIRROR_EMULATOR_EVENT_SEED"
    )]
    pub event_seed: u64,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) { Ok(rate) } else { Err(format!("{rate} is not between 0 and 1")) }
}

fn parse_operation_rate(text: &str) -> Result<(Operation, f64), String> {
    let (name, rate) = text.split_once('=').ok_or_else(|| format!("{text:?} is not ACTION=RATE"))?;
    let operation = Operation::from_name(name.trim())
        .ok_or_else(|| format!("{:?} is not an EC2 action the emulator serves", name.trim()))?;
    Ok((operation, parse_rate(rate)?))
}

fn parse_scale(text: &str) -> Result<f64, String> {
    let scale: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    // Below 0.02 the mutating bucket (50 × K) holds less than one request.
    if scale.is_finite() && (0.02..=1000.0).contains(&scale) {
        Ok(scale)
    } else {
        Err(format!("{scale} is not between 0.02 and 1000"))
    }
}

/// `--config`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML mapping file.
    #[arg(long, short = 'c', env = "CLASSICLINK_MIRROR_CONFIG")]
    pub config: PathBuf,
}

/// `plan` flags.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The mapping file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t, env = "CLASSICLINK_MIRROR_PLAN_FORMAT")]
    pub format: PlanFormat,
    /// Plan offline from a captured JSON snapshot instead of observing EC2.
    #[arg(long, value_name = "FILE", conflicts_with = "dump_snapshot")]
    pub snapshot: Option<PathBuf>,
    /// Also write the observed snapshot as JSON to FILE (to replay it later
    /// with `--snapshot`).
    #[arg(long, value_name = "FILE")]
    pub dump_snapshot: Option<PathBuf>,
}

/// `demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the daemon serves `/metrics`, `/healthz`, `/readyz`, `/status`.
    #[arg(long, default_value = "127.0.0.1:9464", env = "CLASSICLINK_MIRROR_DEMO_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Time between passes.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Exit once the scripted changes are mirrored instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
    /// What to migrate: `classic` (EC2-Classic groups into a VPC) or
    /// `vpc-accounts` (a VPC of one account into a VPC of another account
    /// and region, through assumed roles; docs/migrating-vpc-to-vpc.md).
    #[arg(long, value_enum, default_value_t = crate::demo::Scenario::Classic)]
    pub scenario: crate::demo::Scenario,
}

/// `healthcheck` flags.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The URL to probe.
    #[arg(long, default_value = "http://127.0.0.1:9464/healthz", env = "CLASSICLINK_MIRROR_HEALTHCHECK_URL")]
    pub url: String,
}

/// `apply` flags.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The mapping file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Stop after this many passes even if not converged.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), env = "CLASSICLINK_MIRROR_MAX_PASSES")]
    pub max_passes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plan_parses_format_and_snapshot() {
        let cli = Cli::parse_from(["x", "plan", "--config", "c.toml", "--format", "json", "--snapshot", "s.json"]);
        let Command::Plan(args) = cli.command else { panic!() };
        assert_eq!(args.format, PlanFormat::Json);
        assert_eq!(args.snapshot, Some(PathBuf::from("s.json")));
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;

    #[test]
    fn apply_defaults_to_five_passes_and_refuses_zero() {
        let cli = Cli::parse_from(["x", "apply", "--config", "c.toml"]);
        let Command::Apply(args) = cli.command else { panic!() };
        assert_eq!(args.max_passes, 5);
        assert!(Cli::try_parse_from(["x", "apply", "--config", "c.toml", "--max-passes", "0"]).is_err());
    }

    #[test]
    fn event_knobs_need_events_and_take_rates_and_durations() {
        let cli = Cli::parse_from([
            "x",
            "emulator",
            "--events",
            "--event-delay",
            "2s",
            "--event-delay-jitter",
            "500ms",
            "--event-loss",
            "0.1",
            "--event-duplication",
            "0.2",
            "--event-seed",
            "9",
        ]);
        let Command::Emulator(args) = cli.command else { panic!() };
        assert!(args.events);
        assert_eq!((args.event_delay, args.event_delay_jitter), (Duration::from_secs(2), Duration::from_millis(500)));
        assert_eq!((args.event_loss, args.event_duplication, args.event_seed), (0.1, 0.2, 9));
        assert!(Cli::try_parse_from(["x", "emulator", "--event-loss", "0.1"]).is_err(), "needs --events");
        assert!(Cli::try_parse_from(["x", "emulator", "--events", "--event-loss", "1.5"]).is_err());
        let Command::Emulator(off) = Cli::parse_from(["x", "emulator"]).command else { panic!() };
        assert!(!off.events);
    }

    #[test]
    fn emulator_parses_its_flags_and_defaults() {
        let cli = Cli::parse_from(["x", "emulator"]);
        let Command::Emulator(args) = cli.command else { panic!() };
        assert_eq!(args.listen, "127.0.0.1:4566".parse().unwrap());
        assert_eq!((args.throttle, args.error_rate, args.consistency_delay), (false, 0.0, Duration::ZERO));
        assert!((args.throttle_scale - 1.0).abs() < f64::EPSILON);
        let cli = Cli::parse_from([
            "x",
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--estate",
            "e.toml",
            "--throttle",
            "--error-rate",
            "0.25",
            "--consistency-delay",
            "1s 500ms",
        ]);
        let Command::Emulator(args) = cli.command else { panic!() };
        assert_eq!(args.listen.port(), 0);
        assert_eq!(args.estate, Some(PathBuf::from("e.toml")));
        assert!(args.throttle);
        assert!((args.error_rate - 0.25).abs() < f64::EPSILON);
        assert_eq!(args.consistency_delay, Duration::from_millis(1500));
    }

    #[test]
    fn throttle_scale_multiplies_the_buckets_and_needs_throttle() {
        let cli = Cli::parse_from(["x", "emulator", "--throttle", "--throttle-scale", "10"]);
        let Command::Emulator(args) = cli.command else { panic!() };
        assert!(args.throttle);
        assert!((args.throttle_scale - 10.0).abs() < f64::EPSILON);
        let error = Cli::try_parse_from(["x", "emulator", "--throttle-scale", "10"]).unwrap_err();
        assert!(error.to_string().contains("--throttle"), "{error}");
        for scale in ["0", "-1", "0.01", "1001", "inf", "NaN", "lots"] {
            assert!(
                Cli::try_parse_from(["x", "emulator", "--throttle", "--throttle-scale", scale]).is_err(),
                "{scale}"
            );
        }
        assert!(Cli::try_parse_from(["x", "emulator", "--throttle", "--throttle-scale", "0.5"]).is_ok());
    }

    #[test]
    fn operation_error_rates_name_an_action_and_a_rate_and_repeat() {
        let cli = Cli::try_parse_from([
            "x",
            "emulator",
            "--operation-error-rate",
            "DescribeSecurityGroups=1",
            "--operation-error-rate",
            "DescribeInstances=0.5,DescribeVpcs=0",
        ])
        .unwrap();
        let Command::Emulator(args) = cli.command else { panic!() };
        assert_eq!(
            args.operation_error_rates,
            [
                (Operation::DescribeSecurityGroups, 1.0),
                (Operation::DescribeInstances, 0.5),
                (Operation::DescribeVpcs, 0.0)
            ]
        );
        for bad in ["DescribeSecurityGroups", "DescribeNothing=1", "CreateTags=2", "CreateTags=x"] {
            assert!(Cli::try_parse_from(["x", "emulator", "--operation-error-rate", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_rates_outside_zero_to_one_are_usage_errors() {
        for rate in ["1.5", "-0.1", "lots"] {
            assert!(Cli::try_parse_from(["x", "emulator", "--error-rate", rate]).is_err(), "{rate}");
        }
    }
}
