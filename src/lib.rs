//! # classiclink-mirror
//!
//! Keeps mirrors of EC2-Classic security groups in a target VPC, keeps the
//! Classic instances of those groups ClassicLinked to the mirrors, and cleans
//! up mirrors that are no longer wanted. One way: the source side is the truth.
//!
//! Every pass is level-triggered:
//!
//! 1. [`observe`] describes sources, instances, links and mirrors into a
//!    [`model::Snapshot`], tracking which parts are complete;
//! 2. [`plan`] — pure, no I/O, no clock — turns config + snapshot + memory into
//!    a [`plan::Plan`] of idempotent actions;
//! 3. [`execute`] runs the plan through the [`ec2::Ec2`] port under rate
//!    limits, retries and safety caps.
//!
//! The little the planner remembers between passes that EC2 does not hold
//! (the shrink guard's baseline, deletion backoffs) is kept in a [`state`]
//! file, so a restart does not forget it.
//!
//! The [`emulator`] is an in-memory EC2 with Classic semantics behind the same
//! port, used by `demo`, the tests and the benchmarks.

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod ec2;
pub mod emulator;
pub mod events;
pub mod execute;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod state;
