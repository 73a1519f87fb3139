//! Unit tests of the mapping file: every key, every error, the schema and the
//! shipped example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, SCHEMA, Shape};
use super::*;

const REGION: &str = "[aws]\nregion = \"us-east-1\"\n";

/// Parses `REGION` followed by `rest`.
fn parse(rest: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml_str(&format!("{REGION}{rest}"), None)
}

fn ok(rest: &str) -> Config {
    parse(rest).unwrap_or_else(|errors| panic!("unexpected errors:\n{}", render_errors(&errors)))
}

/// The errors of `REGION` followed by `rest`, as displayed.
fn errors(rest: &str) -> Vec<String> {
    match parse(rest) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn one_error(rest: &str) -> String {
    let errors = errors(rest);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap_or_default()
}

const VPC: &str = "vpc-9f2e1d0c";

fn mirror(source: &str, extra: &str) -> String {
    format!("[[mirror]]\nsource_group = {source:?}\nvpc = \"{VPC}\"\n{extra}\n")
}

// --- defaults, region ------------------------------------------------

#[test]
fn a_file_with_only_a_region_gives_every_default() {
    assert_eq!(ok(""), Config::with_region("us-east-1"));
}

#[test]
fn an_empty_file_takes_the_region_from_the_environment() {
    assert_eq!(Config::from_toml_str("", Some("eu-west-1")), Ok(Config::with_region("eu-west-1")));
}

#[test]
fn the_region_in_the_file_wins_over_the_environment() {
    let config = Config::from_toml_str(REGION, Some("eu-west-1")).unwrap();
    assert_eq!(config.aws.region, "us-east-1");
}

#[test]
fn a_missing_region_without_environment_is_reported() {
    let errors = Config::from_toml_str("", None).unwrap_err();
    assert_eq!(render_errors(&errors), "aws.region: required key is missing (or set AWS_REGION)\n");
    assert_eq!(errors[0].kind(), "missing_key");
    assert_eq!(errors[0].location(), None);
    let errors = Config::from_toml_str("[aws]\nprofile = \"p\"\n", Some("")).unwrap_err();
    assert_eq!(errors[0].location(), Some(Location { line: 1, column: 1 }), "points at the [aws] header");
}

#[test]
fn an_implausible_region_is_rejected() {
    for bad in ["US-EAST-1", "useast1", "us-east", "us-east-1a", "u-east-1", "us--1", ""] {
        let text = format!("[aws]\nregion = {bad:?}\n");
        let errors = Config::from_toml_str(&text, None).unwrap_err();
        assert_eq!(
            render_errors(&errors),
            format!("aws.region: {bad:?} is not an AWS region (like \"us-east-1\")\n"),
            "{bad}"
        );
    }
    for good in ["us-east-1", "us-gov-west-1", "ap-southeast-2", "eu-central-1", "us-isob-east-1"] {
        assert!(Config::from_toml_str(&format!("[aws]\nregion = {good:?}\n"), None).is_ok(), "{good}");
    }
}

#[test]
fn a_region_from_the_environment_is_checked_too() {
    let errors = Config::from_toml_str("", Some("moon")).unwrap_err();
    assert_eq!(
        render_errors(&errors),
        "aws.region: \"moon\" (from AWS_REGION) is not an AWS region (like \"us-east-1\")\n"
    );
}

#[test]
fn a_region_that_is_not_a_string_is_a_type_error() {
    let errors = Config::from_toml_str("[aws]\nregion = 1\n", None).unwrap_err();
    assert_eq!(render_errors(&errors), "aws.region: 1 is not a string\n");
    assert_eq!(errors[0].kind(), "wrong_type");
}

// --- aws -------------------------------------------------------------

#[test]
fn endpoint_url_must_be_an_http_or_https_url() {
    for good in ["http://127.0.0.1:4566", "https://ec2.us-east-1.amazonaws.com", "http://[::1]:4566/", "HTTP://x"] {
        let config = ok(&format!("endpoint_url = {good:?}\n"));
        assert_eq!(config.aws.endpoint_url.as_deref(), Some(good));
    }
    for (bad, why) in [
        ("ftp://x", "is not an http:// or https:// URL"),
        ("127.0.0.1:4566", "is not an http:// or https:// URL"),
        ("http://", "has no host"),
        ("http://:80", "has no host"),
        ("http://host:99999", "has an invalid port"),
        ("http://host:", "has an invalid port"),
        ("http://a b", "is not a URL (it contains whitespace)"),
        ("http://[::1", "has an unclosed IPv6 address"),
        ("http://ho%st", "has an invalid host"),
    ] {
        assert_eq!(one_error(&format!("endpoint_url = {bad:?}\n")), format!("aws.endpoint_url: {bad:?} {why}"));
    }
}

#[test]
fn profile_is_read_and_must_not_be_empty() {
    assert_eq!(ok("profile = \"migration\"\n").aws.profile.as_deref(), Some("migration"));
    assert_eq!(
        one_error("profile = \"\"\n"),
        "aws.profile: must not be empty (remove the key to use the default chain)"
    );
}

// --- structure ---------------------------------------------------------

#[test]
fn an_unknown_key_is_reported_with_its_path() {
    let errors = errors("[safety]\nmax_revoke_per_cycle = 5\n");
    assert_eq!(errors, ["safety.max_revoke_per_cycle: unknown key"]);
}

#[test]
fn an_unknown_section_is_reported_once_not_key_by_key() {
    assert_eq!(errors("[deamon]\ninterval = \"5s\"\nlisten = \"x\"\n"), ["deamon: unknown key"]);
}

#[test]
fn an_unknown_key_in_a_mirror_names_its_index() {
    let text = format!("{}{}", mirror("sg-01", ""), mirror("sg-02", "vcp = \"vpc-1\""));
    assert_eq!(errors(&text), ["mirror[1].vcp: unknown key"]);
}

#[test]
fn an_unknown_key_with_odd_characters_is_quoted_in_the_path() {
    assert_eq!(errors("[aws.\"my key\"]\n"), ["aws.\"my key\": unknown key"]);
}

#[test]
fn a_section_that_is_not_a_table_is_a_type_error() {
    let errors = Config::from_toml_str("aws = \"us-east-1\"\n", None).unwrap_err();
    let rendered = render_errors(&errors);
    assert_eq!(
        rendered,
        "aws.region: required key is missing (or set AWS_REGION)\naws: expected a table ([aws]), found a string\n"
    );
}

#[test]
fn mirror_as_a_single_table_is_a_type_error() {
    assert_eq!(
        errors("[mirror]\nsource_group = \"sg-01\"\n"),
        ["mirror: expected an array of tables ([[mirror]]), found a table"]
    );
}

#[test]
fn a_mirror_entry_that_is_not_a_table_keeps_later_indices_stable() {
    let text = "mirror = [\"sg-01\", { source_group = \"sg-02\", vpc = \"vpc-xyz\" }]\n";
    let errors = Config::from_toml_str(text, Some("us-east-1")).unwrap_err();
    assert_eq!(
        render_errors(&errors),
        "mirror[0]: expected a table, found a string\nmirror[1].vpc: \"vpc-xyz\" is not a VPC id\n"
    );
}

#[test]
fn inline_mirror_tables_are_accepted() {
    let text = "mirror = [{ source_group = \"sg-01\", vpc = \"vpc-02\" }]\n";
    let config = Config::from_toml_str(text, Some("us-east-1")).unwrap();
    assert_eq!(config.mirrors.len(), 1);
}

#[test]
fn a_syntax_error_is_one_error_with_line_and_column() {
    let errors = Config::from_toml_str("[aws]\nregion = \"us-east-1\n[daemon]\nmode = audit\n", None).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind(), "syntax");
    assert_eq!(errors[0].path, "");
    assert_eq!(errors[0].location(), Some(Location { line: 2, column: 20 }));
    assert_eq!(errors[0].to_string(), "TOML syntax error at line 2, column 20: invalid basic string, expected `\"`");
}

#[test]
fn a_duplicate_key_is_a_syntax_error() {
    let errors = Config::from_toml_str("[aws]\nregion = \"us-east-1\"\nregion = \"us-east-2\"\n", None).unwrap_err();
    assert_eq!(render_errors(&errors), "TOML syntax error at line 3, column 1: duplicate key\n");
}

#[test]
fn every_error_is_reported_in_one_run_in_file_order() {
    let text = "[daemon]\ninterval = \"30 parsecs\"\nbogus = 1\n[safety]\nmax_source_shrink = 1.5\n\
                delete_orphans = \"yes\"\n[rate_limit]\nmutating_burst = 0\n";
    assert_eq!(
        errors(text),
        [
            "daemon.interval: \"30 parsecs\" is not a duration",
            "daemon.bogus: unknown key",
            "safety.max_source_shrink: 1.5 is outside (0, 1]",
            "safety.delete_orphans: \"yes\" is not a boolean (true or false)",
            "rate_limit.mutating_burst: 0 is outside 1..=1000000",
        ]
    );
}

// --- daemon ------------------------------------------------------------

#[test]
fn a_malformed_duration_is_reported_as_written() {
    assert_eq!(one_error("[daemon]\ninterval = \"30 parsecs\"\n"), "daemon.interval: \"30 parsecs\" is not a duration");
    assert_eq!(
        one_error("[safety]\norphan_grace = \"ten minutes\"\n"),
        "safety.orphan_grace: \"ten minutes\" is not a duration"
    );
}

#[test]
fn a_duration_written_as_a_number_is_a_type_error() {
    assert_eq!(
        one_error("[daemon]\ninterval = 30\n"),
        "daemon.interval: 30 is not a duration (write it as a string, e.g. \"30s\")"
    );
}

#[test]
fn durations_are_read_with_humantime() {
    let config = ok("[daemon]\ninterval = \"1m 30s\"\n[safety]\norphan_grace = \"2h\"\n");
    assert_eq!(config.daemon.interval, Duration::from_secs(90));
    assert_eq!(config.safety.orphan_grace, Duration::from_secs(7200));
}

#[test]
fn an_interval_shorter_than_one_second_is_rejected() {
    assert_eq!(
        one_error("[daemon]\ninterval = \"500ms\"\n"),
        "daemon.interval: \"500ms\" is shorter than the minimum 1s"
    );
    assert_eq!(ok("[daemon]\ninterval = \"1s\"\n").daemon.interval, Duration::from_secs(1));
}

#[test]
fn a_fights_longest_backoff_may_not_be_shorter_than_its_first() {
    assert_eq!(
        one_error("[safety]\nfight_backoff = \"10m\"\nfight_backoff_max = \"5m\"\n"),
        "safety.fight_backoff_max: \"5m\" is shorter than fight_backoff (10m)"
    );
    // Left at its default (1h), the longest is raised to the first.
    let config = ok("[safety]\nfight_backoff = \"2h\"\n");
    assert_eq!(config.safety.fight_backoff_max, Duration::from_secs(7200));
    assert_eq!(one_error("[safety]\nfight_repairs = 1\n"), "safety.fight_repairs: 1 is outside 2..=1000");
}

#[test]
fn an_orphan_grace_of_zero_is_allowed() {
    assert_eq!(ok("[safety]\norphan_grace = \"0s\"\n").safety.orphan_grace, Duration::ZERO);
}

#[test]
fn listen_must_be_a_socket_address() {
    assert_eq!(ok("[daemon]\nlisten = \"[::]:9000\"\n").daemon.listen, "[::]:9000".parse().unwrap());
    assert_eq!(
        one_error("[daemon]\nlisten = \"localhost:9464\"\n"),
        "daemon.listen: \"localhost:9464\" is not a socket address (IP:port, like \"127.0.0.1:9464\")"
    );
}

#[test]
fn mode_must_be_enforce_or_audit() {
    assert_eq!(ok("[daemon]\nmode = \"audit\"\n").daemon.mode, Mode::Audit);
    assert_eq!(
        one_error("[daemon]\nmode = \"dry-run\"\n"),
        "daemon.mode: \"dry-run\" is not a mode (\"enforce\" or \"audit\")"
    );
    assert_eq!(
        one_error(&mirror("sg-01", "mode = true")),
        "mirror[0].mode: true is not a mode (\"enforce\" or \"audit\")"
    );
}

// --- safety ------------------------------------------------------------

#[test]
fn max_source_shrink_must_be_in_zero_exclusive_to_one_inclusive() {
    for bad in ["0", "0.0", "1.5", "-0.1", "nan", "inf"] {
        assert_eq!(
            one_error(&format!("[safety]\nmax_source_shrink = {bad}\n")),
            format!("safety.max_source_shrink: {bad} is outside (0, 1]")
        );
    }
    assert_eq!(ok("[safety]\nmax_source_shrink = 1\n").safety.max_source_shrink, 1.0);
    assert_eq!(ok("[safety]\nmax_source_shrink = 0.01\n").safety.max_source_shrink, 0.01);
    assert_eq!(
        one_error("[safety]\nmax_source_shrink = \"50%\"\n"),
        "safety.max_source_shrink: \"50%\" is not a number"
    );
}

#[test]
fn caps_of_zero_are_allowed() {
    let config = ok("[safety]\nmax_revokes_per_cycle = 0\nmax_deletes_per_cycle = 0\nmax_unlinks_per_cycle = 0\n");
    assert_eq!(
        (config.safety.max_revokes_per_cycle, config.safety.max_deletes_per_cycle, config.safety.max_unlinks_per_cycle),
        (0, 0, 0)
    );
}

#[test]
fn caps_must_be_non_negative_integers() {
    assert_eq!(
        errors("[safety]\nmax_revokes_per_cycle = -1\nmax_deletes_per_cycle = 2.5\nmax_unlinks_per_cycle = \"50\"\n"),
        [
            "safety.max_revokes_per_cycle: -1 is outside 0..=1000000",
            "safety.max_deletes_per_cycle: 2.5 is not an integer",
            "safety.max_unlinks_per_cycle: \"50\" is not an integer",
        ]
    );
}

#[test]
fn delete_orphans_must_be_a_boolean() {
    assert!(!ok("[safety]\ndelete_orphans = false\n").safety.delete_orphans);
    assert_eq!(
        one_error("[safety]\ndelete_orphans = 0\n"),
        "safety.delete_orphans: 0 is not a boolean (true or false)"
    );
}

// --- rate limits, limits -------------------------------------------------

#[test]
fn rates_must_be_positive_and_finite() {
    for bad in ["0", "0.0", "-1.5", "inf", "-inf", "nan", "+nan", "-0.0"] {
        assert_eq!(
            one_error(&format!("[rate_limit]\nmutating_per_second = {bad}\n")),
            format!("rate_limit.mutating_per_second: {bad} is outside 0.001..=100000 requests a second")
        );
    }
    assert_eq!(
        one_error("[rate_limit]\ndescribe_per_second = \"fast\"\n"),
        "rate_limit.describe_per_second: \"fast\" is not a number"
    );
    let config = ok("[rate_limit]\nmutating_per_second = 3\ndescribe_per_second = 0.5\n");
    assert_eq!((config.rate_limit.mutating_per_second, config.rate_limit.describe_per_second), (3.0, 0.5));
}

#[test]
fn bursts_and_max_in_flight_must_be_at_least_one() {
    assert_eq!(
        errors("[rate_limit]\nmutating_burst = 0\ndescribe_burst = -3\nmax_in_flight = 0\n"),
        [
            "rate_limit.mutating_burst: 0 is outside 1..=1000000",
            "rate_limit.describe_burst: -3 is outside 1..=1000000",
            "rate_limit.max_in_flight: 0 is outside 1..=1000",
        ]
    );
    assert_eq!(
        one_error("[rate_limit]\nmutating_burst = 4294967296\n"),
        "rate_limit.mutating_burst: 4294967296 is outside 1..=1000000"
    );
    let config = ok("[rate_limit]\nmutating_burst = 1\ndescribe_burst = 1\nmax_in_flight = 1\n");
    assert_eq!(
        (config.rate_limit.mutating_burst, config.rate_limit.describe_burst, config.rate_limit.max_in_flight),
        (1, 1, 1)
    );
}

#[test]
fn a_rate_that_validated_and_then_panicked_the_limiter_is_refused_with_its_bounds() {
    // `mutating_per_second = 1e12` used to validate, then panic building
    // the governor quota (its period rounds to 0 ns); `1e-300` was
    // silently raised to 1e-3.
    for (key, bad) in
        [("mutating_per_second", "1e12"), ("describe_per_second", "1e10"), ("mutating_per_second", "1e-300")]
    {
        assert_eq!(
            one_error(&format!("[rate_limit]\n{key} = {bad}\n")),
            format!("rate_limit.{key}: {bad} is outside 0.001..=100000 requests a second")
        );
    }
    let config = ok("[rate_limit]\nmutating_per_second = 100000\ndescribe_per_second = 0.001\n");
    assert_eq!((config.rate_limit.mutating_per_second, config.rate_limit.describe_per_second), (1e5, 1e-3));
    assert_eq!(
        one_error("[rate_limit]\ndescribe_burst = 1000001\n"),
        "rate_limit.describe_burst: 1000001 is outside 1..=1000000"
    );
    assert_eq!(ok("[rate_limit]\ndescribe_burst = 1000000\n").rate_limit.describe_burst, 1_000_000);
}

#[test]
fn retry_keys_are_bounded_and_a_base_delay_may_not_exceed_the_cap() {
    assert_eq!(
        errors(
            "[rate_limit]\nmax_attempts = 0\nretry_base_delay = \"0s\"\nretry_throttled_base_delay = \"2m\"\n\
             retry_max_delay = \"1h\"\nretry_quota = -1\nretry_cost = 0\nretry_timeout_cost = 1000001\n"
        ),
        [
            "rate_limit.max_attempts: 0 is outside 1..=10",
            "rate_limit.retry_base_delay: \"0s\" is shorter than the minimum 1ms",
            "rate_limit.retry_throttled_base_delay: \"2m\" is longer than the maximum 1m",
            "rate_limit.retry_max_delay: \"1h\" is longer than the maximum 5m",
            "rate_limit.retry_quota: -1 is outside 0..=1000000",
            "rate_limit.retry_cost: 0 is outside 1..=1000000",
            "rate_limit.retry_timeout_cost: 1000001 is outside 1..=1000000",
        ]
    );
    // A default base above an explicit cap is simply capped.
    assert_eq!(
        ok("[rate_limit]\nretry_max_delay = \"500ms\"\n").rate_limit.retry_max_delay,
        Duration::from_millis(500)
    );
    assert_eq!(
        one_error(
            "[rate_limit]\nretry_base_delay = \"3s\"\nretry_max_delay = \"2s\"\nretry_throttled_base_delay = \"1s\"\n"
        ),
        "rate_limit.retry_base_delay: \"3s\" is longer than rate_limit.retry_max_delay (2s)"
    );
    let config = ok("[rate_limit]\nmax_attempts = 1\nretry_quota = 0\n");
    assert_eq!((config.rate_limit.max_attempts, config.rate_limit.retry_quota), (1, 0));
}

/// `[section]\nkey = value\n` for the key path `section.key`.
fn set(path: &str, value: &str) -> String {
    let (section, key) = path.split_once('.').unwrap_or_default();
    format!("[{section}]\n{key} = {value}\n")
}

#[test]
fn every_integer_key_accepts_its_ends_and_refuses_one_beyond_naming_its_range() {
    for b in bounds::INTEGERS {
        assert!(parse(&set(b.key, &b.min.to_string())).is_ok(), "{} = {}", b.key, b.min);
        assert!(parse(&set(b.key, &b.max.to_string())).is_ok(), "{} = {}", b.key, b.max);
        let below = i128::from(b.min) - 1;
        for beyond in [below.to_string(), (b.max + 1).to_string(), i64::MAX.to_string(), i64::MIN.to_string()] {
            assert_eq!(
                one_error(&set(b.key, &beyond)),
                format!("{}: {beyond} is outside {}..={}", b.key, b.min, b.max)
            );
        }
    }
}

#[test]
fn every_rate_key_accepts_its_ends_and_refuses_beyond_naming_its_range() {
    for b in bounds::RATES {
        assert!(parse(&set(b.key, &format!("{:?}", b.min))).is_ok(), "{}", b.key);
        assert!(parse(&set(b.key, &format!("{:?}", b.max))).is_ok(), "{}", b.key);
        for beyond in ["1e-300", "0.000999", "100000.01", "1e10", "1e12", "1.7976931348623157e308", "-5e-324"] {
            assert_eq!(
                one_error(&set(b.key, beyond)),
                format!("{}: {beyond} is outside 0.001..=100000 requests a second", b.key)
            );
        }
    }
}

#[test]
fn every_duration_key_accepts_its_ends_and_refuses_longer_naming_its_maximum() {
    for b in bounds::DURATIONS {
        let (min, max) = (humantime::format_duration(b.min), humantime::format_duration(b.max));
        // A base delay may not exceed the cap: raise the cap to its own maximum.
        let set = |key: &str, value: &str| {
            // Likewise a fight's longest backoff may not be below its first.
            let cap = if key.ends_with("base_delay") {
                "retry_max_delay = \"5m\"\n"
            } else if key.ends_with("fight_backoff_max") {
                "fight_backoff = \"1s\"\n"
            } else {
                ""
            };
            format!("{}{cap}", set(key, value))
        };
        assert!(parse(&set(b.key, &format!("\"{min}\""))).is_ok(), "{} = {min}", b.key);
        assert!(parse(&set(b.key, &format!("\"{max}\""))).is_ok(), "{} = {max}", b.key);
        // 200000000000 years still fits a Duration; the second one overflows
        // humantime's u64 of seconds. Both are "too long", never a panic.
        let one_more = humantime::format_duration(b.max + Duration::from_secs(1)).to_string();
        for beyond in [one_more.as_str(), "200000000000years", "99999999999999999999999years", "584942417356years"] {
            assert_eq!(
                one_error(&set(b.key, &format!("{beyond:?}"))),
                format!("{}: {beyond:?} is longer than the maximum {max}", b.key)
            );
        }
    }
    assert_eq!(
        one_error("[daemon]\ninterval = \"200000000000years\"\n"),
        "daemon.interval: \"200000000000years\" is longer than the maximum 1day"
    );
    assert_eq!(ok("[safety]\norphan_grace = \"365days\"\n").safety.orphan_grace, Duration::from_secs(365 * 86_400));
}

#[test]
fn every_bound_is_documented_in_the_reference_and_the_shipped_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(root.join("config/classiclink-mirror.toml")).unwrap();
    for (path, range) in bounds::all() {
        let key = path.rsplit('.').next().unwrap_or(path);
        let row = reference.lines().find(|l| l.starts_with(&format!("| `{key}` |")));
        assert!(row.is_some_and(|row| row.contains(&range)), "docs/configuration.md: {path} should say {range}");
        // The comment block just above the key's line.
        let lines: Vec<&str> = example.lines().collect();
        let at = lines.iter().position(|l| l.starts_with(&format!("{key} = "))).unwrap_or_default();
        let comment = lines[..at].iter().rev().take_while(|l| l.starts_with('#')).any(|l| l.contains(&range));
        assert!(comment, "config/classiclink-mirror.toml: the comment of {path} should say {range}");
    }
}

#[test]
fn rules_per_group_must_be_between_1_and_1000() {
    assert_eq!(ok("[limits]\nrules_per_group = 1000\n").limits.rules_per_group, 1000);
    assert_eq!(ok("[limits]\nrules_per_group = 1\n").limits.rules_per_group, 1);
    for bad in ["0", "1001", "-5"] {
        assert_eq!(
            one_error(&format!("[limits]\nrules_per_group = {bad}\n")),
            format!("limits.rules_per_group: {bad} is outside 1..=1000")
        );
    }
}

// --- discovery -----------------------------------------------------------

#[test]
fn an_empty_tag_key_disables_discovery() {
    assert_eq!(ok("[discovery]\ntag_key = \"\"\n").discovery.tag_key, None);
    assert_eq!(ok("[discovery]\ntag_key = \"team:mirror\"\n").discovery.tag_key.as_deref(), Some("team:mirror"));
}

#[test]
fn owner_defaults_to_default_and_must_be_a_short_tag_value() {
    assert_eq!(ok("").daemon.owner, "default");
    assert_eq!(ok("[daemon]\nowner = \"team-b\"\n").daemon.owner, "team-b");
    assert_eq!(ok("[daemon]\nowner = \"ops@x.com:eu/1+2=3 a_b\"\n").daemon.owner, "ops@x.com:eu/1+2=3 a_b");
    let longest = "o".repeat(64);
    assert_eq!(ok(&format!("[daemon]\nowner = \"{longest}\"\n")).daemon.owner, longest);
    assert_eq!(
        one_error(&format!("[daemon]\nowner = \"{longest}o\"\n")),
        format!("daemon.owner: \"{longest}o\" is longer than 64 characters")
    );
    assert_eq!(
        one_error("[daemon]\nowner = \"\"\n"),
        "daemon.owner: \"\" is empty; name the deployment (the default is \"default\")"
    );
    assert_eq!(
        one_error("[daemon]\nowner = \"a\\u0000b\"\n"),
        "daemon.owner: \"a\\0b\" contains the control character U+0000"
    );
    assert_eq!(
        one_error("[daemon]\nowner = \"team*\"\n"),
        "daemon.owner: \"team*\" contains '*'; use ASCII letters, digits, spaces and + - = . _ : / @ (EC2's \
         tag-value characters)"
    );
    assert_eq!(one_error("[daemon]\nowner = \"\u{e9}quipe\"\n").split(" contains").count(), 2);
    assert_eq!(one_error("[daemon]\nowner = \" a\"\n"), "daemon.owner: \" a\" starts or ends with a space");
    assert_eq!(one_error("[daemon]\nowner = 3\n"), "daemon.owner: 3 is not a string");
}

#[test]
fn a_tag_key_must_be_a_usable_ec2_tag_key() {
    let long = "k".repeat(129);
    assert_eq!(
        one_error(&format!("[discovery]\ntag_key = \"{long}\"\n")),
        "discovery.tag_key: is longer than 128 characters"
    );
    assert_eq!(
        one_error("[discovery]\ntag_key = \"aws:mirror\"\n"),
        "discovery.tag_key: \"aws:mirror\" uses the reserved \"aws:\" prefix"
    );
    assert_eq!(one_error("[discovery]\ntag_key = false\n"), "discovery.tag_key: false is not a string");
}

// --- mirrors -------------------------------------------------------------

#[test]
fn a_mirror_is_read_with_its_defaults() {
    let config = ok(&mirror("sg-0a1b2c3d", ""));
    let expected =
        MirrorConfig::new(SourceRef::Id(GroupId::try_new("sg-0a1b2c3d").unwrap()), VpcId::try_new(VPC).unwrap());
    assert_eq!(config.mirrors, [expected]);
}

#[test]
fn a_mirror_reads_every_override() {
    let config = ok(&mirror(
        "web",
        "name = \"web-mirror\"\nlink_instances = false\nmode = \"audit\"\nadopt = true\nenable_classiclink = true",
    ));
    let m = &config.mirrors[0];
    assert_eq!(m.source, SourceRef::Name("web".to_owned()));
    assert_eq!(m.name.as_deref(), Some("web-mirror"));
    assert!(!m.link_instances && m.adopt && m.enable_classiclink);
    assert_eq!(m.mode, Some(Mode::Audit));
    assert_eq!(config.mode_of(m), Mode::Audit);
}

#[test]
fn mirror_booleans_must_be_booleans() {
    assert_eq!(
        errors(&mirror("sg-01", "link_instances = 1\nadopt = \"no\"\nenable_classiclink = []")),
        [
            "mirror[0].link_instances: 1 is not a boolean (true or false)",
            "mirror[0].adopt: \"no\" is not a boolean (true or false)",
            "mirror[0].enable_classiclink: an array is not a boolean (true or false)",
        ]
    );
}

#[test]
fn a_source_group_starting_with_sg_must_be_a_well_formed_id() {
    assert_eq!(one_error(&mirror("sg-xyz", "")), "mirror[0].source_group: \"sg-xyz\" is not a security group id");
}

#[test]
fn a_source_group_not_starting_with_sg_is_a_name() {
    assert_eq!(ok(&mirror("web servers", "")).mirrors[0].source, SourceRef::Name("web servers".to_owned()));
    assert_eq!(
        one_error(&mirror("", "")),
        "mirror[0].source_group: must not be empty (a group id like \"sg-0a1b2c3d\" or a group name)"
    );
    assert_eq!(one_error(&mirror(&"w".repeat(256), "")), "mirror[0].source_group: is longer than 255 characters");
    assert!(parse(&mirror(&"w".repeat(255), "")).is_ok());
}

#[test]
fn vpc_must_be_a_vpc_id() {
    let text = format!("{}[[mirror]]\nsource_group = \"sg-02\"\nvpc = \"vpc-xyz\"\n", mirror("sg-01", ""));
    assert_eq!(one_error(&text), "mirror[1].vpc: \"vpc-xyz\" is not a VPC id");
    assert_eq!(one_error("[[mirror]]\nsource_group = \"sg-01\"\nvpc = 7\n"), "mirror[0].vpc: 7 is not a string");
}

#[test]
fn missing_source_group_and_vpc_are_reported_at_the_entry() {
    let errors = parse("\n[[mirror]]\nname = \"x\"\n").unwrap_err();
    assert_eq!(
        render_errors(&errors),
        "mirror[0].source_group: required key is missing\nmirror[0].vpc: required key is missing\n"
    );
    assert_eq!(errors[0].location(), Some(Location { line: 4, column: 1 }));
}

#[test]
fn nul_and_other_control_characters_are_refused_in_names_tag_keys_profiles_and_urls() {
    for (c, code) in
        [('\0', "U+0000"), ('\n', "U+000A"), ('\u{1b}', "U+001B"), ('\u{7f}', "U+007F"), ('\u{85}', "U+0085")]
    {
        let name = format!("web{c}tier");
        // As TOML writes it (`\u0000`); the errors show it as Rust does (`\0`).
        let quoted = toml::Value::String(name.clone()).to_string();
        assert_eq!(
            one_error(&format!("[[mirror]]\nsource_group = {quoted}\nvpc = \"{VPC}\"\n")),
            format!(
                "mirror[0].source_group: {name:?} contains the control character {code}, which EC2 does not allow in group names"
            )
        );
        assert_eq!(
            one_error(&format!("[discovery]\ntag_key = {quoted}\n")),
            format!(
                "discovery.tag_key: {name:?} contains the control character {code}, which EC2 does not allow in tag keys"
            )
        );
        assert_eq!(
            one_error(&format!("profile = {quoted}\n")),
            format!("aws.profile: {name:?} contains the control character {code}")
        );
        assert!(one_error(&mirror("sg-01", &format!("name = {quoted}"))).starts_with("mirror[0].name: "));
        let url = format!("http://127.0.0.1:4566/{c}");
        let quoted_url = toml::Value::String(url.clone()).to_string();
        let why = if c.is_whitespace() { "it contains whitespace" } else { "it contains a control character" };
        assert_eq!(
            one_error(&format!("endpoint_url = {quoted_url}\n")),
            format!("aws.endpoint_url: {url:?} is not a URL ({why})")
        );
    }
    // Non-ASCII that is not a control character is a name EC2 may hold.
    assert!(parse(&mirror("wéb", "")).is_ok());
    assert!(parse("[discovery]\ntag_key = \"équipe:miroir\"\n").is_ok());
}

#[test]
fn a_mirror_name_must_be_a_valid_vpc_group_name() {
    let long = "n".repeat(256);
    for (name, why) in [
        ("", "must not be empty".to_owned()),
        (long.as_str(), "is longer than 255 characters".to_owned()),
        ("sg-web", "\"sg-web\" starts with \"sg-\", which EC2 does not allow in group names".to_owned()),
        (
            "web%",
            "\"web%\" contains '%'; VPC group names allow letters, digits, spaces and ._-:/()#,@[]+=&;{}!$*".to_owned(),
        ),
    ] {
        assert_eq!(one_error(&mirror("sg-01", &format!("name = {name:?}"))), format!("mirror[0].name: {why}"));
    }
    assert!(parse(&mirror("sg-01", "name = \"Web tier (v2): 10.0.0.0/8 #1\"")).is_ok());
}

#[test]
fn the_same_source_id_twice_is_reported_on_the_later_entry() {
    let text = format!("{}{}{}", mirror("sg-01", ""), mirror("sg-02", ""), mirror("sg-01", "name = \"other\""));
    assert_eq!(errors(&text), ["mirror[2].source_group: \"sg-01\" is already mapped by mirror[0]"]);
}

#[test]
fn the_same_source_name_twice_is_reported_even_into_another_vpc() {
    let text = format!("{}[[mirror]]\nsource_group = \"web\"\nvpc = \"vpc-02\"\n", mirror("web", ""));
    let errors = parse(&text).unwrap_err();
    assert_eq!(render_errors(&errors), "mirror[1].source_group: \"web\" is already mapped by mirror[0]\n");
    assert_eq!(errors[0].kind(), "duplicate");
}

#[test]
fn the_same_explicit_mirror_name_in_the_same_vpc_is_reported_ignoring_case() {
    let text = format!("{}{}", mirror("sg-01", "name = \"web\""), mirror("sg-02", "name = \"WEB\""));
    assert_eq!(errors(&text), [format!("mirror[1].name: mirror name \"WEB\" is already used in {VPC} by mirror[0]")]);
}

#[test]
fn a_source_name_counts_as_the_mirror_name_when_no_name_is_given() {
    let text = format!("{}{}", mirror("web", ""), mirror("sg-02", "name = \"web\""));
    assert_eq!(errors(&text), [format!("mirror[1].name: mirror name \"web\" is already used in {VPC} by mirror[0]")]);
    let text = format!("{}{}", mirror("sg-01", "name = \"web\""), mirror("web", ""));
    assert_eq!(
        errors(&text),
        [format!(
            "mirror[1].source_group: mirror name \"web\" (the source's name) is already used in {VPC} by mirror[0]"
        )]
    );
}

#[test]
fn the_same_mirror_name_in_different_vpcs_is_fine() {
    let text = format!(
        "{}[[mirror]]\nsource_group = \"sg-02\"\nvpc = \"vpc-02\"\nname = \"web\"\n",
        mirror("sg-01", "name = \"web\"")
    );
    assert_eq!(ok(&text).mirrors.len(), 2);
}

#[test]
fn mirrors_by_id_without_a_name_never_collide_on_names() {
    assert_eq!(ok(&format!("{}{}", mirror("sg-01", ""), mirror("sg-02", ""))).mirrors.len(), 2);
}

// --- errors and loading ------------------------------------------------

#[test]
fn render_errors_sorts_by_position_and_puts_unlocated_errors_first() {
    let errors = Config::from_toml_str("[daemon]\nmode = \"x\"\n[aws]\nzone = 1\n", None).unwrap_err();
    assert_eq!(
        render_errors(&errors),
        "daemon.mode: \"x\" is not a mode (\"enforce\" or \"audit\")\naws.region: required key is missing (or set AWS_REGION)\naws.zone: unknown key\n"
    );
    let mut reversed = errors.clone();
    reversed.reverse();
    assert_eq!(render_errors(&reversed), render_errors(&errors));
    let errors = Config::from_toml_str("[daemon]\nmode = \"x\"\n", None).unwrap_err();
    assert_eq!(errors[0].path, "aws.region", "no location sorts first");
}

#[test]
fn an_error_displays_as_path_colon_message_and_has_a_kind() {
    let errors = Config::from_toml_str("x = 1\n", Some("us-east-1")).unwrap_err();
    assert_eq!(errors[0].path, "x");
    assert_eq!(errors[0].message, "unknown key");
    assert_eq!(errors[0].to_string(), "x: unknown key");
    assert_eq!(errors[0].kind(), "unknown_key");
    assert_eq!(errors[0].location(), Some(Location { line: 1, column: 1 }));
}

#[test]
fn load_names_the_path_of_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = Config::load(&path, None).unwrap_err();
    assert_eq!(err.kind(), "read");
    assert!(err.to_string().starts_with(&format!("cannot read configuration file {}: ", path.display())), "{err}");
}

#[test]
fn load_returns_every_validation_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[daemon]\nmode = \"x\"\nlisten = \"y\"\n").unwrap();
    let err = Config::load(&path, Some("us-east-1")).unwrap_err();
    assert_eq!(err.kind(), "invalid");
    let ConfigLoadError::Invalid { errors, .. } = &err else { panic!("{err}") };
    assert_eq!(errors.len(), 2);
    assert_eq!(
        err.to_string(),
        format!("invalid configuration file {} (2 errors):\n{}", path.display(), render_errors(errors).trim_end())
    );
}

// --- the schema and the shipped example ----------------------------------

/// A file setting every key of `SCHEMA` to a non-default value.
const EVERY_KEY: &str = r#"
[aws]
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:4566"
profile = "migration"
[daemon]
interval = "1m"
listen = "0.0.0.0:9000"
mode = "audit"
state_dir = "/srv/mirror-state"
owner = "team-b"
[safety]
max_revokes_per_cycle = 1
max_deletes_per_cycle = 2
max_unlinks_per_cycle = 3
orphan_grace = "1h"
delete_orphans = false
max_source_shrink = 0.25
fight_repairs = 5
fight_window = "30m"
fight_backoff = "2m"
fight_backoff_max = "2h"
[rate_limit]
mutating_per_second = 1.5
mutating_burst = 3
describe_per_second = 2.5
describe_burst = 4
max_in_flight = 8
max_attempts = 5
retry_base_delay = "50ms"
retry_throttled_base_delay = "2s"
retry_max_delay = "10s"
retry_quota = 100
retry_cost = 2
retry_timeout_cost = 4
[limits]
rules_per_group = 120
overflow_groups = false
[mirroring]
unmanaged_references = "expand"
[discovery]
tag_key = "mirror-to"
[events]
queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/classiclink-mirror-events"
endpoint_url = "http://127.0.0.1:9324"
[[mirror]]
source_group = "web"
vpc = "vpc-0123"
name = "web-mirror"
link_instances = false
mode = "enforce"
adopt = true
enable_classiclink = true
source_account = "prod"
target_account = "prod"
unmanaged_references = "report"
[accounts.prod]
region = "eu-central-1"
role_arn = "arn:aws:iam::210987654321:role/classiclink-mirror"
external_id = "migration-2026"
session_name = "mirror-b"
endpoint_url = "http://127.0.0.1:4567"
"#;

#[test]
fn every_key_of_the_schema_is_a_field_of_the_raw_config() {
    let raw: RawConfig = toml::from_str(EVERY_KEY).unwrap();
    assert!(raw.aws.is_some() && raw.mirror.len() == 1);
    for (section, shape) in SCHEMA {
        let (Shape::Table(keys) | Shape::ArrayOfTables(keys) | Shape::NamedTables(keys)) = shape;
        for key in *keys {
            assert!(EVERY_KEY.contains(&format!("\n{key} = ")), "{section}.{key} missing from EVERY_KEY");
        }
        let header =
            if matches!(shape, Shape::NamedTables(_)) { format!("[{section}.") } else { format!("[{section}]") };
        assert!(EVERY_KEY.contains(&header), "{section}");
    }
}

#[test]
fn every_key_is_read_into_the_config() {
    let config = Config::from_toml_str(EVERY_KEY, None).unwrap();
    let mut expected = Config::with_region("eu-west-1");
    expected.aws.endpoint_url = Some("http://127.0.0.1:4566".to_owned());
    expected.aws.profile = Some("migration".to_owned());
    expected.daemon = DaemonConfig {
        interval: Duration::from_secs(60),
        listen: "0.0.0.0:9000".parse().unwrap(),
        mode: Mode::Audit,
        state_dir: PathBuf::from("/srv/mirror-state"),
        owner: "team-b".to_owned(),
    };
    expected.safety = SafetyConfig {
        max_revokes_per_cycle: 1,
        max_deletes_per_cycle: 2,
        max_unlinks_per_cycle: 3,
        orphan_grace: Duration::from_secs(3600),
        delete_orphans: false,
        max_source_shrink: 0.25,
        fight_repairs: 5,
        fight_window: Duration::from_secs(1800),
        fight_backoff: Duration::from_secs(120),
        fight_backoff_max: Duration::from_secs(7200),
    };
    expected.rate_limit = RateLimitConfig {
        mutating_per_second: 1.5,
        mutating_burst: 3,
        describe_per_second: 2.5,
        describe_burst: 4,
        max_in_flight: 8,
        max_attempts: 5,
        retry_base_delay: Duration::from_millis(50),
        retry_throttled_base_delay: Duration::from_secs(2),
        retry_max_delay: Duration::from_secs(10),
        retry_quota: 100,
        retry_cost: 2,
        retry_timeout_cost: 4,
    };
    expected.limits.rules_per_group = 120;
    expected.limits.overflow_groups = false;
    expected.mirroring.unmanaged_references = super::UnmanagedReferences::Expand;
    expected.discovery.tag_key = Some("mirror-to".to_owned());
    expected.events = EventsConfig {
        queue_url: Some("https://sqs.eu-west-1.amazonaws.com/123456789012/classiclink-mirror-events".to_owned()),
        endpoint_url: Some("http://127.0.0.1:9324".to_owned()),
    };
    expected.mirrors = vec![MirrorConfig {
        source: SourceRef::Name("web".to_owned()),
        vpc: VpcId::try_new("vpc-0123").unwrap(),
        name: Some("web-mirror".to_owned()),
        link_instances: false,
        mode: Some(Mode::Enforce),
        adopt: true,
        enable_classiclink: true,
        source_account: Some("prod".to_owned()),
        target_account: Some("prod".to_owned()),
        unmanaged_references: Some(super::UnmanagedReferences::Report),
    }];
    expected.accounts = std::collections::BTreeMap::from([(
        "prod".to_owned(),
        AccountConfig {
            region: "eu-central-1".to_owned(),
            role_arn: Some("arn:aws:iam::210987654321:role/classiclink-mirror".to_owned()),
            external_id: Some("migration-2026".to_owned()),
            session_name: "mirror-b".to_owned(),
            endpoint_url: Some("http://127.0.0.1:4567".to_owned()),
        },
    )]);
    assert_eq!(config, expected);
}

fn shipped_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/classiclink-mirror.toml")
}

#[test]
fn the_shipped_example_validates_and_sets_every_default() {
    let config = Config::load(&shipped_example(), None).unwrap_or_else(|e| panic!("{e}"));
    let mut expected = Config::with_region("us-east-1");
    expected.mirrors = vec![MirrorConfig::new(
        SourceRef::Id(GroupId::try_new("sg-0a1b2c3d").unwrap()),
        VpcId::try_new("vpc-9f2e1d0c").unwrap(),
    )];
    assert_eq!(config, expected);
}

#[test]
fn the_shipped_example_documents_every_key() {
    let text = std::fs::read_to_string(shipped_example()).unwrap();
    for (section, shape) in SCHEMA {
        let (Shape::Table(keys) | Shape::ArrayOfTables(keys) | Shape::NamedTables(keys)) = shape;
        for key in *keys {
            // Set, or shown commented out (keys without a default).
            let documented = text
                .lines()
                .any(|line| line.trim_start().trim_start_matches('#').trim_start().starts_with(&format!("{key} = ")));
            assert!(documented, "{section}.{key} is not in the shipped example");
        }
    }
}
