//! The executor abstraction: how one claimed run's agent actually runs (a local process group
//! now; an ECS task or an SSM command later). The receive loop only sees [`Executor`].

pub mod group;
pub mod process;

use async_trait::async_trait;
use outpost_core::domain::{Artifact, Outcome, Run};
use tokio::sync::watch;

pub use process::{ProcessConfig, ProcessExecutor};

/// What the loop asks of a running execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep going.
    Continue,
    /// A client cancelled the run: stop the agent, store its artifacts, report `cancelled`.
    Cancel,
    /// The worker lost the lease or is shutting down: stop the agent and report nothing.
    Abandon,
}

/// The loop's side of a run's stop signal.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<Stop>);

impl StopHandle {
    /// Raises the request to `stop` (a request never goes back down: abandon beats cancel).
    pub fn request(&self, stop: Stop) {
        self.0.send_if_modified(|cur| {
            if stop > *cur {
                *cur = stop;
                true
            } else {
                false
            }
        });
    }

    /// The strongest request made so far.
    pub fn current(&self) -> Stop {
        *self.0.borrow()
    }
}

/// The executor's side of a run's stop signal.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<Stop>);

impl StopSignal {
    /// A signal that never fires (tests, and callers with nothing to stop).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(Stop::Continue);
        // With the sender gone, `requested` pends forever.
        drop(tx);
        Self(rx)
    }

    /// The strongest request made so far.
    pub fn current(&self) -> Stop {
        *self.0.borrow()
    }

    /// Resolves once a stop other than `Continue` is requested; pends forever if none ever is.
    pub async fn requested(&mut self) -> Stop {
        loop {
            let cur = *self.0.borrow_and_update();
            if cur != Stop::Continue {
                return cur;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A fresh stop channel for one run.
pub fn stop_channel() -> (StopHandle, StopSignal) {
    let (tx, rx) = watch::channel(Stop::Continue);
    (StopHandle(tx), StopSignal(rx))
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Execution {
    /// The run reached a final outcome; every artifact in the manifest is stored.
    Finished { outcome: Outcome, artifacts: Vec<Artifact> },
    /// Stopped on [`Stop::Abandon`]: the agent is killed and nothing is reported.
    Abandoned,
}

/// Runs one claimed run's agent to an outcome, storing its artifacts first (artifact-first).
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs `run` until it ends, `stop` asks it to, or its timeout passes. Never panics on bad
    /// data: every failure is a `Finished` outcome with a failure reason.
    async fn execute(&self, run: &Run, stop: StopSignal) -> Execution;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_requests_only_go_up() {
        let (h, mut s) = stop_channel();
        assert_eq!(s.current(), Stop::Continue);
        h.request(Stop::Abandon);
        h.request(Stop::Cancel);
        assert_eq!(h.current(), Stop::Abandon);
        assert_eq!(s.requested().await, Stop::Abandon);
        let never = StopSignal::never();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), never.clone().requested()).await;
        assert!(waited.is_err(), "never() must not fire");
    }
}
