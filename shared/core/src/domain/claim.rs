//! The claim rule: what claiming a delivered run does, decided from the run as stored.
//!
//! Every store asks [`decide_claim`] about the run as stored and writes the decision's `next` run
//! (when there is one) as a conditional write on the run it looked at, so that two workers can
//! never both win. SQLite reads the run inside its write transaction; DynamoDB sends the last
//! row (`Start`) as one conditional write first, since that is the common claim, and asks the rule
//! about the run its refusal hands back. The rule is pure (no I/O, no clock: `now` is the caller's), and its table is:
//!
//! | the stored run | decision | written |
//! | --- | --- | --- |
//! | terminal | [`AlreadyFinished`](ClaimDecision::AlreadyFinished): a duplicate delivery | nothing |
//! | `running`, lease live at `now` | [`HeldElsewhere`](ClaimDecision::HeldElsewhere) until the lease ends | nothing |
//! | otherwise, cancel requested | [`Cancel`](ClaimDecision::Cancel) | `cancelled`, reason `cancelled` |
//! | `running` (lease expired), `attempts >= max_attempts` | [`Exhaust`](ClaimDecision::Exhaust) | `failed`, reason `worker_lost` |
//! | otherwise (`queued`, or `running` with an expired lease and attempts left) | [`Start`](ClaimDecision::Start) | a new attempt of the worker |
//!
//! The rows are tried in order: a live lease wins over a requested cancel (the holder stops the
//! run at its next heartbeat), and a requested cancel wins over a used-up attempt count. A lease
//! ending exactly at `now` has expired. The runs written are built through the state machine
//! ([`Run::ended`], [`Run::start_attempt`]), so the rule cannot make an illegal move.

use super::ids::WorkerId;
use super::run::{FailureReason, Run, RunStatus, TerminalStatus, TransitionError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What claiming a run does, and for the writing cases the run to write.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimDecision {
    /// The run already ended: the delivery is a duplicate. Nothing to write.
    AlreadyFinished,
    /// Another worker's lease is live until `lease_expires_at`. Nothing to write.
    HeldElsewhere { lease_expires_at: DateTime<Utc> },
    /// Nobody holds the run and a cancel was requested: write `next` (`cancelled`); the claim
    /// answers that the run already finished.
    Cancel { next: Run },
    /// The run's last worker was lost and it was claimed `max_attempts` times already: write
    /// `next` (`failed`, `worker_lost`); the claim answers that the run is exhausted.
    Exhaust { next: Run },
    /// The run is claimable: write `next` (`running`, one more attempt, held by the claiming
    /// worker); the claim answers that it is claimed.
    Start { next: Run },
}

impl ClaimDecision {
    /// The run to write, for the decisions that write one.
    pub fn next(&self) -> Option<&Run> {
        match self {
            ClaimDecision::AlreadyFinished | ClaimDecision::HeldElsewhere { .. } => None,
            ClaimDecision::Cancel { next } | ClaimDecision::Exhaust { next } | ClaimDecision::Start { next } => {
                Some(next)
            }
        }
    }
}

/// What `worker` claiming the stored `run` at `now` does, with a lease of `lease` (it ends at
/// `now + lease`, to the millisecond as the stores keep times, saturating) and at most
/// `max_attempts` attempts. See the [module docs](self) for the table. Fails only if the state
/// machine refused a move, which the table never asks for.
pub fn decide_claim(
    run: &Run,
    worker: &WorkerId,
    now: DateTime<Utc>,
    lease: Duration,
    max_attempts: u32,
) -> Result<ClaimDecision, TransitionError> {
    Ok(match run.status {
        status if status.is_terminal() => ClaimDecision::AlreadyFinished,
        RunStatus::Running if run.lease_live(now) => ClaimDecision::HeldElsewhere {
            lease_expires_at: run.lease_expires_at.unwrap_or(now),
        },
        _ if run.cancel_requested => ClaimDecision::Cancel {
            next: run.ended(TerminalStatus::Cancelled, FailureReason::Cancelled, now)?,
        },
        RunStatus::Running if run.attempts >= max_attempts => ClaimDecision::Exhaust {
            next: run.ended(TerminalStatus::Failed, FailureReason::WorkerLost, now)?,
        },
        _ => ClaimDecision::Start {
            next: run.start_attempt(worker, now, lease_end(now, lease))?,
        },
    })
}

/// `now + lease` to the millisecond, saturating at the latest representable time.
fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    let end = chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    DateTime::<Utc>::from_timestamp_millis(end.timestamp_millis()).unwrap_or(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewRun, RunId};

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123).expect("time")
    }

    fn run(status: RunStatus) -> Run {
        Run {
            status,
            ..Run::queued(NewRun {
                id: RunId::generate(),
                tenant: "acme".parse().expect("tenant"),
                agent: "fake".into(),
                task: "t".into(),
                repo: None,
                timeout_secs: 60,
                idle_timeout_secs: None,
                created_at: now() - chrono::Duration::minutes(5),
            })
        }
    }

    fn worker(name: &str) -> WorkerId {
        WorkerId(name.into())
    }

    fn decide(run: &Run, max_attempts: u32) -> ClaimDecision {
        decide_claim(run, &worker("b"), now(), Duration::from_secs(30), max_attempts).expect("legal")
    }

    /// Which row of the table a decision is.
    fn row(d: &ClaimDecision) -> &'static str {
        match d {
            ClaimDecision::AlreadyFinished => "finished",
            ClaimDecision::HeldElsewhere { .. } => "held",
            ClaimDecision::Cancel { .. } => "cancel",
            ClaimDecision::Exhaust { .. } => "exhaust",
            ClaimDecision::Start { .. } => "start",
        }
    }

    #[test]
    fn the_table_is_tried_in_order() {
        let now = now();
        let later = now + chrono::Duration::seconds(30);
        let earlier = now - chrono::Duration::seconds(1);
        for terminal in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::TimedOut,
            RunStatus::Cancelled,
        ] {
            assert_eq!(decide(&run(terminal), 3), ClaimDecision::AlreadyFinished);
        }
        let held = Run {
            lease_expires_at: Some(later),
            attempts: 3,
            cancel_requested: true,
            worker_id: Some(worker("a")),
            ..run(RunStatus::Running)
        };
        assert_eq!(
            decide(&held, 3),
            ClaimDecision::HeldElsewhere {
                lease_expires_at: later
            }
        );
        let lost = Run {
            lease_expires_at: Some(earlier),
            attempts: 3,
            worker_id: Some(worker("a")),
            ..run(RunStatus::Running)
        };
        assert_eq!(row(&decide(&lost, 3)), "exhaust");
        assert_eq!(row(&decide(&lost, 4)), "start");
        // A lease ending exactly now has expired.
        let expiring = Run {
            lease_expires_at: Some(now),
            ..lost.clone()
        };
        assert_eq!(row(&decide(&expiring, 3)), "exhaust");
        let lost_cancelled = Run {
            cancel_requested: true,
            ..lost
        };
        assert_eq!(row(&decide(&lost_cancelled, 3)), "cancel");
        let queued_cancelled = Run {
            cancel_requested: true,
            ..run(RunStatus::Queued)
        };
        assert_eq!(row(&decide(&queued_cancelled, 3)), "cancel");
        assert_eq!(row(&decide(&run(RunStatus::Queued), 3)), "start");
        // A queued run is claimable whatever max_attempts says.
        assert_eq!(row(&decide(&run(RunStatus::Queued), 0)), "start");
    }

    #[test]
    fn the_writing_decisions_build_the_next_run() {
        let now = now();
        let queued = run(RunStatus::Queued);
        let Some(next) = decide(&queued, 3).next().cloned() else {
            panic!("a start writes");
        };
        let expected = Run {
            status: RunStatus::Running,
            attempts: 1,
            worker_id: Some(worker("b")),
            started_at: Some(now),
            lease_expires_at: Some(now + chrono::Duration::seconds(30)),
            ..queued.clone()
        };
        assert_eq!(next, expected);

        let lost = Run {
            lease_expires_at: Some(now - chrono::Duration::seconds(1)),
            started_at: Some(now - chrono::Duration::minutes(1)),
            worker_id: Some(worker("a")),
            attempts: 1,
            ..run(RunStatus::Running)
        };
        let next = decide(&lost, 3).next().cloned().expect("a new attempt writes");
        assert_eq!(
            (next.attempts, next.worker_id.clone(), next.started_at, next.finished_at),
            (2, Some(worker("b")), Some(now), None)
        );

        let failed = decide(&lost, 1).next().cloned().expect("exhausting writes");
        let expected = Run {
            status: RunStatus::Failed,
            failure_reason: Some(FailureReason::WorkerLost),
            finished_at: Some(now),
            lease_expires_at: None,
            ..lost.clone()
        };
        assert_eq!(failed, expected, "the lost worker's attempt count and id are kept");

        let cancelled = Run {
            cancel_requested: true,
            ..queued
        };
        let next = decide(&cancelled, 3).next().cloned().expect("cancelling writes");
        assert_eq!(
            (
                next.status,
                next.failure_reason,
                next.finished_at,
                next.lease_expires_at
            ),
            (RunStatus::Cancelled, Some(FailureReason::Cancelled), Some(now), None)
        );
        assert_eq!(decide(&run(RunStatus::Succeeded), 3).next(), None);
    }

    #[test]
    fn leases_end_to_the_millisecond_and_saturate() {
        let now = now();
        assert_eq!(
            lease_end(now, Duration::from_micros(1_500)),
            now + chrono::Duration::milliseconds(1)
        );
        let far = lease_end(now, Duration::MAX);
        assert!(far > now + chrono::Duration::days(365 * 100_000));
        assert_eq!(far.timestamp_subsec_nanos() % 1_000_000, 0);
    }
}
