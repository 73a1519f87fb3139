//! Clocks the daemon reads, injectable so tests control time. The planner
//! reads none (`now` is a parameter); the loop reads the wall clock for
//! each pass's `now` and `/status` reads it for `generated_at`. Tokio's
//! clock (paused in tests) times intervals, liveness and rate limits.

use std::sync::Arc;
use std::time::SystemTime;

/// A wall clock, injectable for tests.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system's wall clock.
#[must_use]
pub fn system() -> WallClock {
    Arc::new(SystemTime::now)
}
