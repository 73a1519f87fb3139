//! The command line (SPEC §2), clap derive. Parsing only: `main.rs` decides
//! what each command does. Every flag that makes sense as an environment
//! variable has one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Observe and plan, print the plan, change nothing. Exit 0: nothing to
    /// do; 2: changes pending; 1: error.
    Plan(PlanArgs),
    /// Observe → plan → execute passes until the plan is empty or
    /// `--max-passes` ran. Exit 0: converged (audited drift allowed); 1:
    /// error; 3: not converged.
    Apply(ApplyArgs),
    /// Parse and validate the mapping file, print every error with its key
    /// path. Exit 0: valid; 1: invalid.
    Validate(ConfigArg),
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
}
