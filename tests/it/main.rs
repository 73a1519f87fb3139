//! The integration tests, one crate so the binary that links the AWS SDK is
//! built and linked once. Each module was once its own `tests/*.rs` file and
//! keeps its own `//!` page; helpers shared between them live in `common`.
//!
//! Run one module with `cargo test --test it module::` (for example
//! `cargo test --test it plan_fixtures::`).

// A test crate: an unwrap that fails is a failed test, in the helpers the
// tests share as in the tests (Cargo.toml's [lints] forbid it elsewhere).
#![allow(clippy::unwrap_used)]

mod common;

mod accounts;
mod architecture;
mod aws_canned;
mod bench_runner;
mod cli;
mod config_errors;
mod config_props;
mod crash_safety;
mod cross_refs;
mod daemon_loop;
mod docs;
mod e2e_binary;
mod emulator_cli;
mod emulator_wire;
mod events_daemon;
mod events_wire;
mod expansion;
mod many_targets;
mod moto_accounts;
mod moto_apply;
mod moto_conformance;
mod moto_events;
mod plan_fixtures;
mod planner_props;
mod reconcile_scenarios;
mod two_deployments;
mod two_writers;
