//! `daemon::run` in-process, in the background: the loop the `run` command
//! runs, driven by the tests through its event channel (reload, shutdown)
//! and read through the `PassObserver` they give it. With the emulator
//! engine behind a connector and tokio's paused time, a test of many
//! intervals runs in milliseconds.

use std::sync::Arc;

use classiclink_mirror::daemon::{Connector, DaemonError, Event, PassObserver, Settings, run};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A daemon loop running in the background, observed by an `O`.
pub struct InProcessDaemon<O> {
    events: mpsc::Sender<Event>,
    task: JoinHandle<Result<(), DaemonError>>,
    observer: Arc<O>,
}

/// Starts `daemon::run` with `settings`, `connector` and `observer`.
pub fn spawn_daemon<C, O>(settings: Settings, connector: C, observer: Arc<O>) -> InProcessDaemon<O>
where
    C: Connector + 'static,
    O: PassObserver + 'static,
{
    let (events, rx) = mpsc::channel(4);
    let watching = Arc::clone(&observer);
    let task = tokio::spawn(async move { run(&settings, &connector, watching.as_ref(), rx).await });
    InProcessDaemon { events, task, observer }
}

impl<O> InProcessDaemon<O> {
    /// Sends the loop an event (a reload, a shutdown).
    pub async fn send(&self, event: Event) {
        self.events.send(event).await.unwrap();
    }

    /// The observer, while the loop runs.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// Whether the loop has returned (it should not, until told to stop).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Shuts the loop down; it returns `Ok`. Returns the observer.
    pub async fn stop(self) -> Arc<O> {
        self.send(Event::Shutdown).await;
        self.task.await.unwrap().unwrap();
        self.observer
    }
}
