//! The real binary end to end (README.md, "Commands that work today"): `validate` and offline `plan
//! --snapshot`, their output and exit codes (0 nothing to do / valid, 2
//! changes pending, 1 error), and the environment variables that stand in
//! for flags. Each child gets a clean environment for the variables the
//! binary reads, so the developer's or CI's `AWS_REGION` cannot leak in.

use crate::common::root;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::SystemTime;

use classiclink_mirror::config::{Config, ConfigLoadError, render_errors};
use classiclink_mirror::model::Snapshot;
use classiclink_mirror::plan::{self, Memory};

const EXIT_OK: i32 = 0;
const EXIT_ERROR: i32 = 1;
const EXIT_CHANGES: i32 = 2;

fn scenario(name: &str, file: &str) -> PathBuf {
    root().join("tests/fixtures/plans").join(name).join(file)
}

/// The binary, run from the crate root, with none of the variables it reads
/// inherited from the test's own environment.
fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_classiclink-mirror"));
    command.current_dir(root());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CLASSICLINK_MIRROR_") || key.starts_with("AWS_") || key == "RUST_LOG" {
            command.env_remove(key.as_ref());
        }
    }
    // Logs go to stderr; keep them plain and quiet so assertions see messages.
    command.env("CLASSICLINK_MIRROR_LOG_FORMAT", "text").env("CLASSICLINK_MIRROR_LOG_LEVEL", "warn");
    command
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(command: &mut Command) -> Self {
        let Output { status, stdout, stderr } = command.output().expect("the binary runs");
        let run = Self {
            code: status.code().expect("exited, not killed"),
            stdout: String::from_utf8(stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(stderr).expect("UTF-8 stderr"),
        };
        eprintln!("exit {}\n--- stdout\n{}--- stderr\n{}", run.code, run.stdout, run.stderr);
        run
    }

    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn plan_text_of(name: &str) -> String {
    let config = Config::load(&scenario(name, "config.toml"), None).expect("fixture config is valid");
    let text = std::fs::read_to_string(scenario(name, "snapshot.json")).expect("fixture snapshot is readable");
    let snapshot = Snapshot::from_json(&text).expect("fixture snapshot parses");
    let (plan, _) = plan::plan(&config, &snapshot, &Memory::default(), SystemTime::now());
    plan::render_text(&plan, &snapshot)
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("temp file is writable");
    path
}

const NO_REGION: &str = "[[mirror]]\nsource_group = \"sg-0a1b2c3d\"\nvpc = \"vpc-9f2e1d0c\"\n";

// ----- validate ------------------------------------------------------------

#[test]
fn validate_accepts_the_shipped_mapping_file() {
    let run = Run::of(cli().args(["validate", "--config", "config/classiclink-mirror.toml"]));
    assert_eq!(run.code, EXIT_OK);
    assert!(run.stdout.contains("config/classiclink-mirror.toml: valid"), "{}", run.stdout);
}

#[test]
fn validate_prints_every_error_of_a_bad_file_in_file_order_and_exits_1() {
    let path = "tests/fixtures/config/bad.toml";
    let errors = match Config::load(&root().join(path), None) {
        Err(ConfigLoadError::Invalid { errors, .. }) => errors,
        other => panic!("the fixture must be invalid, got {other:?}"),
    };
    let run = Run::of(cli().args(["validate", "--config", path]));
    assert_eq!(run.code, EXIT_ERROR);
    let expected = format!("{}{path}: {} errors\n", render_errors(&errors), errors.len());
    assert_eq!(run.stdout, expected);
    assert!(run.stdout.contains("mirror[1].vpc: \"vpc-xyz\" is not a VPC id\n"));
    assert!(run.stdout.contains("safety.max_revoke_per_cycle: unknown key\n"));
}

#[test]
fn validate_of_a_missing_file_says_it_cannot_read_it_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let run = Run::of(cli().arg("validate").arg("--config").arg(&missing));
    assert_eq!(run.code, EXIT_ERROR);
    let output = run.output();
    assert!(output.contains("cannot read configuration file"), "{output}");
    assert!(output.contains(&missing.display().to_string()), "{output}");
}

#[test]
fn aws_region_from_the_environment_supplies_a_missing_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "no-region.toml", NO_REGION);

    let without = Run::of(cli().arg("validate").arg("--config").arg(&path));
    assert_eq!(without.code, EXIT_ERROR);
    assert!(without.stdout.contains("aws.region: required key is missing"), "{}", without.stdout);

    let with = Run::of(cli().arg("validate").arg("--config").arg(&path).env("AWS_REGION", "eu-west-1"));
    assert_eq!(with.code, EXIT_OK);
    assert!(with.stdout.contains("valid"), "{}", with.stdout);

    let empty = Run::of(cli().arg("validate").arg("--config").arg(&path).env("AWS_REGION", ""));
    assert_eq!(empty.code, EXIT_ERROR, "an empty AWS_REGION counts as unset");
}

#[test]
fn classiclink_mirror_config_stands_in_for_the_config_flag() {
    let run = Run::of(cli().arg("validate").env("CLASSICLINK_MIRROR_CONFIG", "config/classiclink-mirror.toml"));
    assert_eq!(run.code, EXIT_OK);
    assert!(run.stdout.contains("valid"), "{}", run.stdout);

    let run = Run::of(
        cli()
            .args(["plan", "--snapshot"])
            .arg(scenario("steady-state", "snapshot.json"))
            .env("CLASSICLINK_MIRROR_CONFIG", scenario("steady-state", "config.toml")),
    );
    assert_eq!(run.code, EXIT_OK);
}

// ----- plan --snapshot ---------------------------------------------------------

#[test]
fn plan_of_a_converged_estate_exits_0_and_says_no_changes() {
    let run = Run::of(
        cli()
            .args(["plan", "--config"])
            .arg(scenario("steady-state", "config.toml"))
            .arg("--snapshot")
            .arg(scenario("steady-state", "snapshot.json")),
    );
    assert_eq!(run.code, EXIT_OK);
    assert_eq!(run.stdout, plan_text_of("steady-state"));
    assert!(run.stdout.ends_with("no changes; 3 warnings\n"), "{}", run.stdout);
}

#[test]
fn plan_of_a_cold_start_exits_2_and_prints_the_reviewable_diff() {
    let run = Run::of(
        cli()
            .args(["plan", "--config"])
            .arg(scenario("cold-start", "config.toml"))
            .arg("--snapshot")
            .arg(scenario("cold-start", "snapshot.json")),
    );
    assert_eq!(run.code, EXIT_CHANGES);
    assert_eq!(run.stdout, plan_text_of("cold-start"));
    assert!(run.stdout.starts_with("mirror sg-0a1b2c3d (web) -> vpc-9f2e1d0c (new) (web)\n"), "{}", run.stdout);
}

#[test]
fn plan_with_only_audited_drift_still_exits_2() {
    let run = Run::of(
        cli()
            .args(["plan", "--format", "json", "--config"])
            .arg(scenario("audit-global", "config.toml"))
            .arg("--snapshot")
            .arg(scenario("audit-global", "snapshot.json")),
    );
    assert_eq!(run.code, EXIT_CHANGES, "audited drift is still a change to show");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON plan");
    assert_eq!(doc["converged"], true);
}

#[test]
fn plan_format_json_is_the_versioned_document() {
    let run = Run::of(
        cli()
            .args(["plan", "--format", "json", "--config"])
            .arg(scenario("cold-start", "config.toml"))
            .arg("--snapshot")
            .arg(scenario("cold-start", "snapshot.json")),
    );
    assert_eq!(run.code, EXIT_CHANGES);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["converged"], false);
    assert_eq!(doc["summary"]["create"], 3);
    assert_eq!(doc["actions"][0]["action"]["type"], "enable_classiclink");

    let by_env = Run::of(
        cli()
            .args(["plan", "--config"])
            .arg(scenario("cold-start", "config.toml"))
            .arg("--snapshot")
            .arg(scenario("cold-start", "snapshot.json"))
            .env("CLASSICLINK_MIRROR_PLAN_FORMAT", "json"),
    );
    assert_eq!(by_env.stdout, run.stdout);
}

#[test]
fn plan_of_a_malformed_snapshot_names_the_file_line_and_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "broken.json", "{\n  \"vpcs\": [\n    {\"id\": 5}\n  ]\n}\n");
    let run = Run::of(
        cli().args(["plan", "--config"]).arg(scenario("steady-state", "config.toml")).arg("--snapshot").arg(&path),
    );
    assert_eq!(run.code, EXIT_ERROR);
    assert!(run.stdout.is_empty(), "no plan on error: {}", run.stdout);
    assert!(run.stderr.contains(&format!("{} is not a valid snapshot", path.display())), "{}", run.stderr);
    assert!(run.stderr.contains("line 3 column 12"), "{}", run.stderr);
}

#[test]
fn plan_of_a_snapshot_that_is_not_json_names_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "truncated.json", "{\n  \"vpcs\": [\n");
    let run = Run::of(
        cli().args(["plan", "--config"]).arg(scenario("steady-state", "config.toml")).arg("--snapshot").arg(&path),
    );
    assert_eq!(run.code, EXIT_ERROR);
    assert!(run.stderr.contains("truncated.json is not a valid snapshot"), "{}", run.stderr);
    assert!(run.stderr.contains("line 3 column 0"), "{}", run.stderr);
}

#[test]
fn plan_of_a_missing_snapshot_file_exits_1() {
    let run = Run::of(
        cli()
            .args(["plan", "--config"])
            .arg(scenario("steady-state", "config.toml"))
            .args(["--snapshot", "tests/fixtures/plans/no-such-snapshot.json"]),
    );
    assert_eq!(run.code, EXIT_ERROR);
    assert!(run.stderr.contains("cannot read snapshot tests/fixtures/plans/no-such-snapshot.json"), "{}", run.stderr);
}

#[test]
fn plan_with_an_invalid_config_reports_its_errors_and_exits_1() {
    let run = Run::of(
        cli()
            .args(["plan", "--config", "tests/fixtures/config/bad.toml", "--snapshot"])
            .arg(scenario("steady-state", "snapshot.json")),
    );
    assert_eq!(run.code, EXIT_ERROR);
    assert!(run.stdout.is_empty(), "no plan on error: {}", run.stdout);
    assert!(
        run.stderr.contains("invalid configuration file tests/fixtures/config/bad.toml (17 errors)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("mirror[4].source_group: required key is missing"), "{}", run.stderr);
}

#[test]
fn plan_without_a_region_uses_aws_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "no-region.toml", NO_REGION);
    let snapshot = scenario("steady-state", "snapshot.json");
    let without = Run::of(cli().arg("plan").arg("--config").arg(&path).arg("--snapshot").arg(&snapshot));
    assert_eq!(without.code, EXIT_ERROR);
    assert!(without.stderr.contains("aws.region: required key is missing"), "{}", without.stderr);
    let with = Run::of(
        cli().arg("plan").arg("--config").arg(&path).arg("--snapshot").arg(&snapshot).env("AWS_REGION", "us-east-1"),
    );
    assert_ne!(with.code, EXIT_ERROR, "{}", with.stderr);
}

#[test]
fn a_usage_error_exits_1_not_2_which_would_read_as_changes_pending() {
    // Regression: clap's own exit code for usage errors is 2, which `plan`
    // uses for "changes pending"; automation read a typo as drift.
    let run = Run::of(cli().args(["plan", "--snapshot", "x.json"]));
    assert_eq!(run.code, EXIT_ERROR);
    assert!(run.stderr.contains("--config"), "{}", run.stderr);
    let run = Run::of(cli().args(["plan", "--config", "c.toml", "--snapshot", "s.json", "--format", "yaml"]));
    assert_eq!(run.code, EXIT_ERROR);
    let help = Run::of(cli().args(["plan", "--help"]));
    assert_eq!(help.code, EXIT_OK);
    assert!(help.stdout.contains("--snapshot"), "{}", help.stdout);
}

// ----- docs ----------------------------------------------------------------------

/// The body of the first fenced block of `lang` after `heading` in `doc`.
fn fenced_after(doc: &str, heading: &str, lang: &str) -> String {
    let start = doc.find(heading).unwrap_or_else(|| panic!("{heading:?} is in the document"));
    let fence = format!("```{lang}\n");
    let body = start + doc[start..].find(&fence).unwrap_or_else(|| panic!("a {lang} block after {heading:?}"));
    let body = &doc[body + fence.len()..];
    body[..body.find("```").expect("the block is closed")].to_owned()
}

#[test]
fn the_documented_snapshot_example_plans_as_documented() {
    let doc = std::fs::read_to_string(root().join("docs/snapshot-json.md")).expect("docs/snapshot-json.md");
    let dir = tempfile::tempdir().unwrap();
    let snapshot = write_temp(&dir, "example.json", &fenced_after(&doc, "## Example", "json"));
    let config = write_temp(&dir, "example.toml", "[aws]\nregion = \"us-east-1\"\n");
    let run = Run::of(cli().arg("plan").arg("--config").arg(&config).arg("--snapshot").arg(&snapshot));
    assert_eq!(run.code, EXIT_CHANGES);
    assert_eq!(run.stdout, fenced_after(&doc, "## Example", "text"));
}
