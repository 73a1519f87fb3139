//! The daemon's HTTP surface (docs/metrics.md): `/metrics`, `/healthz`, `/readyz`
//! and `/status`, served by axum over a [`State`] the daemon loop updates.
//!
//! The loop tells the state what happens while it happens: a cycle started
//! ([`State::cycle_started`], for liveness and `/status`'s `current_cycle`),
//! its phase and the describes failing so far ([`State::pass_phase`],
//! [`State::describe_failed`]), a pass finished ([`State::record_pass`]:
//! metrics, readiness and the `/status` document in one call), and a new
//! configuration is in force ([`State::apply_config`]); with one loop per
//! target account, each target's loop started, passes and removal
//! ([`State::target_started`], [`State::target_pass_finished`],
//! [`State::target_stopped`]: `/status` `targets`). Handlers only read.
//! `docs/metrics.md` documents the endpoints and the `/status` JSON.
//!
//! [`serve`] is hardened for months unattended (`docs/operations.md`, "The
//! HTTP listener"): a header-read timeout that also closes idle keep-alive
//! connections, a cap on open connections that closes the oldest idle one to
//! make room, and accept errors (`EMFILE`) that back off instead of spinning.

mod board;
mod health;
mod listener;
mod probe;
mod routes;
mod state;
mod status;
mod targets;
#[cfg(test)]
mod tests;

pub use board::StatusBoard;
pub use health::{Health, LIVENESS_INTERVALS, Liveness};
pub use listener::{HEADER_READ_TIMEOUT, ListenerLimits, MAX_CONNECTIONS, serve, serve_with_limits};
pub use probe::{ProbeError, probe};
pub use routes::router;
pub use state::State;
pub use status::*;
pub use targets::{TargetBoard, TargetErrorStatus, TargetStatus, is_failure as is_target_failure};
