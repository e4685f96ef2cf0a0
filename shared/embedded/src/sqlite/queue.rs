//! `TaskQueue` on SQLite, with SQS semantics: each message has a `visible_at` time, a receive
//! count, the receipt token of its latest delivery, and a dead flag (the dead-letter queue).
//!
//! - `receive` looks at the oldest few hundred visible messages only (an index range, never the
//!   whole backlog), dead-letters those already received `max_receive_count` times, and picks up
//!   to `max` of the rest round-robin across tenants.
//! - Long polling: an empty receive waits on a [`Notify`] that `send` fires in this process, and
//!   looks again every 50 ms for messages sent by other processes or whose visibility ran out.
//!   Those looks are cheap reads; the writer is only taken when something is visible.
//! - A receipt is `{seq}:{random token}`; it goes stale when the message is delivered again,
//!   dead-lettered or deleted.

use super::db::{duration_ms, now_ms, DbError};
use super::SqliteQueue;
use async_trait::async_trait;
use outpost_core::domain::{RunId, TenantId};
use outpost_core::ports::queue::{Delivery, QueueDepth, QueueError, Receipt, TaskMessage, TaskQueue};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Most tenants one receive looks at (each costs an index seek); past it, the rest wait a turn.
const MAX_TENANTS_PER_RECEIVE: usize = 1000;
/// Most messages one receive returns (as SQS).
const MAX_BATCH: usize = 10;
/// How often a long poll looks again for messages it was not told about.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

impl From<DbError> for QueueError {
    fn from(e: DbError) -> Self {
        QueueError::Backend(Box::new(e))
    }
}

/// Which half of the table an operation is on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Live,
    Dead,
}

impl Lane {
    fn dead_flag(self) -> i64 {
        match self {
            Lane::Live => 0,
            Lane::Dead => 1,
        }
    }

    /// The lane as a literal condition, so the planner can use the lane's partial index (it
    /// cannot for a bound parameter).
    fn condition(self) -> &'static str {
        match self {
            Lane::Live => "dead = 0",
            Lane::Dead => "dead = 1",
        }
    }
}

/// The query for the oldest visible messages of a lane.
pub(super) fn visible_sql(lane: Lane) -> String {
    format!(
        "SELECT seq, tenant, run_id, receive_count FROM queue WHERE {} AND visible_at <= ?1 \
         ORDER BY visible_at, seq LIMIT ?2",
        lane.condition()
    )
}

/// The query for whether a lane has a visible message.
pub(super) fn any_visible_sql(lane: Lane) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM queue WHERE {} AND visible_at <= ?1)",
        lane.condition()
    )
}

/// A fresh receipt for message `seq`.
fn new_receipt(seq: i64) -> String {
    let mut token = [0u8; 16];
    rand::rng().fill_bytes(&mut token);
    format!("{seq}:{}", hex::encode(token))
}

/// The message a receipt names, or `None` for one this queue never handed out.
fn receipt_seq(receipt: &Receipt) -> Option<i64> {
    receipt.0.split_once(':').and_then(|(seq, _)| seq.parse().ok())
}

/// One visible message considered by a receive.
struct Candidate {
    seq: i64,
    tenant: String,
    run_id: String,
    receive_count: u32,
}

/// The seqs to deliver: round-robin over tenants in order of their oldest message.
fn round_robin(candidates: Vec<Candidate>, max: usize) -> Vec<i64> {
    let mut by_tenant: Vec<(String, VecDeque<i64>)> = Vec::new();
    for c in candidates {
        match by_tenant.iter_mut().find(|(t, _)| *t == c.tenant) {
            Some((_, seqs)) => seqs.push_back(c.seq),
            None => by_tenant.push((c.tenant, VecDeque::from([c.seq]))),
        }
    }
    let mut picked = Vec::with_capacity(max);
    while picked.len() < max {
        let mut any = false;
        for (_, seqs) in by_tenant.iter_mut() {
            if picked.len() == max {
                break;
            }
            if let Some(seq) = seqs.pop_front() {
                picked.push(seq);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    picked
}

/// Hands out `seqs` for `visibility`, returning their deliveries.
fn deliver(conn: &Connection, seqs: &[i64], now: i64, visibility_ms: i64) -> Result<Vec<Delivery>, DbError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE queue SET receive_count = receive_count + 1, receipt = ?2, visible_at = ?3 WHERE seq = ?1 \
         RETURNING run_id, tenant, trace_context, receive_count",
    )?;
    let mut out = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let receipt = new_receipt(seq);
        let (run_id, tenant, trace_context, receive_count) =
            stmt.query_row(params![seq, receipt, now.saturating_add(visibility_ms)], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, u32>(3)?,
                ))
            })?;
        out.push(Delivery {
            message: TaskMessage {
                run_id: run_id
                    .parse::<RunId>()
                    .map_err(|e| DbError::Corrupt(format!("queued run id: {e}")))?,
                tenant: tenant
                    .parse::<TenantId>()
                    .map_err(|e| DbError::Corrupt(format!("queued tenant: {e}")))?,
                trace_context,
            },
            receipt: Receipt(receipt),
            receive_count,
        });
    }
    Ok(out)
}

/// The oldest visible messages of `lane`, at most `limit`.
fn visible(conn: &Connection, lane: Lane, now: i64, limit: i64) -> Result<Vec<Candidate>, DbError> {
    let mut stmt = conn.prepare_cached(&visible_sql(lane))?;
    let rows = stmt.query_map(params![now, limit], |row| {
        Ok(Candidate {
            seq: row.get(0)?,
            tenant: row.get(1)?,
            run_id: row.get(2)?,
            receive_count: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The next tenant (in name order) after `?1` with live messages: one index seek.
pub(super) const NEXT_LIVE_TENANT_SQL: &str =
    "SELECT tenant FROM queue WHERE dead = 0 AND tenant > ?1 ORDER BY tenant LIMIT 1";

/// A tenant's oldest visible live messages: one index range.
pub(super) const TENANT_VISIBLE_SQL: &str = "SELECT seq, run_id, receive_count, visible_at FROM queue \
     WHERE dead = 0 AND tenant = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3";

/// For each tenant with live messages (found by index seeks, in name order), its oldest visible
/// messages, at most `per_tenant` each; tenants ordered by their oldest message. Reads
/// O(tenants + picked) index entries however long one tenant's backlog is, and every tenant's
/// head is seen, so a quiet tenant never waits behind a busy one's backlog.
fn live_candidates(conn: &Connection, now: i64, per_tenant: usize) -> Result<Vec<Candidate>, DbError> {
    let mut next_tenant = conn.prepare_cached(NEXT_LIVE_TENANT_SQL)?;
    let mut oldest = conn.prepare_cached(TENANT_VISIBLE_SQL)?;
    let limit = i64::try_from(per_tenant).unwrap_or(i64::MAX);
    let mut heads: Vec<(i64, i64, Vec<Candidate>)> = Vec::new();
    let mut after = String::new();
    for _ in 0..MAX_TENANTS_PER_RECEIVE {
        let tenant: Option<String> = next_tenant.query_row(params![after], |row| row.get(0)).optional()?;
        let Some(tenant) = tenant else { break };
        let mut first = None;
        let rows = oldest.query_map(params![tenant, now, limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u32>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        let mut mine = Vec::new();
        for row in rows {
            let (seq, run_id, receive_count, visible_at) = row?;
            first.get_or_insert((visible_at, seq));
            mine.push(Candidate {
                seq,
                tenant: tenant.clone(),
                run_id,
                receive_count,
            });
        }
        if let Some((visible_at, seq)) = first {
            heads.push((visible_at, seq, mine));
        }
        after = tenant;
    }
    heads.sort_by_key(|(visible_at, seq, _)| (*visible_at, *seq));
    Ok(heads.into_iter().flat_map(|(_, _, c)| c).collect())
}

/// One receive on the live lane, in a write transaction.
fn receive_tx(
    conn: &Connection,
    max: usize,
    visibility_ms: i64,
    max_receive_count: u32,
) -> Result<Vec<Delivery>, DbError> {
    let now = now_ms();
    loop {
        let candidates = live_candidates(conn, now, max)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let (spent, ready): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|c| c.receive_count >= max_receive_count);
        if !spent.is_empty() {
            let mut kill =
                conn.prepare_cached("UPDATE queue SET dead = 1, receipt = NULL, visible_at = ?2 WHERE seq = ?1")?;
            for c in &spent {
                tracing::warn!(run_id = %c.run_id, tenant = %c.tenant, receive_count = c.receive_count,
                    "message received too often; moving it to the dead-letter queue");
                kill.execute(params![c.seq, now])?;
            }
        }
        if ready.is_empty() {
            // Everything in the window was spent: look at the next window.
            continue;
        }
        let picked = round_robin(ready, max);
        return deliver(conn, &picked, now, visibility_ms);
    }
}

/// Whether `lane` has a message visible now (a cheap read before taking the writer).
fn any_visible(conn: &Connection, lane: Lane) -> Result<bool, DbError> {
    let mut stmt = conn.prepare_cached(&any_visible_sql(lane))?;
    Ok(stmt.query_row(params![now_ms()], |row| row.get(0))?)
}

impl SqliteQueue {
    /// One non-waiting receive.
    async fn try_receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        if !self.db.read(|c| any_visible(c, Lane::Live)).await? {
            return Ok(Vec::new());
        }
        let max_receive_count = self.max_receive_count;
        let visibility_ms = duration_ms(visibility);
        Ok(self
            .db
            .write(move |tx| receive_tx(tx, max, visibility_ms, max_receive_count))
            .await?)
    }

    /// Sets the visibility of the message a receipt names, if the receipt is current.
    async fn set_visibility(&self, receipt: &Receipt, lane: Lane, visibility: Duration) -> Result<(), QueueError> {
        let seq = receipt_seq(receipt).ok_or(QueueError::StaleReceipt)?;
        let token = receipt.0.clone();
        let visible_at = now_ms().saturating_add(duration_ms(visibility));
        let changed = self
            .db
            .write(move |conn| {
                Ok(conn
                    .prepare_cached("UPDATE queue SET visible_at = ?3 WHERE seq = ?1 AND receipt = ?2 AND dead = ?4")?
                    .execute(params![seq, token, visible_at, lane.dead_flag()])?)
            })
            .await?;
        if changed == 1 {
            if visibility.is_zero() && lane == Lane::Live {
                self.notify.notify_waiters();
            }
            Ok(())
        } else {
            Err(QueueError::StaleReceipt)
        }
    }

    /// Deletes the message a receipt names, if the receipt is current.
    async fn delete_in(&self, receipt: &Receipt, lane: Lane) -> Result<(), QueueError> {
        let seq = receipt_seq(receipt).ok_or(QueueError::StaleReceipt)?;
        let token = receipt.0.clone();
        let changed = self
            .db
            .write(move |conn| {
                Ok(conn
                    .prepare_cached("DELETE FROM queue WHERE seq = ?1 AND receipt = ?2 AND dead = ?3")?
                    .execute(params![seq, token, lane.dead_flag()])?)
            })
            .await?;
        if changed == 1 {
            Ok(())
        } else {
            Err(QueueError::StaleReceipt)
        }
    }
}

#[async_trait]
impl TaskQueue for SqliteQueue {
    async fn send(&self, message: &TaskMessage) -> Result<(), QueueError> {
        let message = message.clone();
        self.db
            .write(move |conn| {
                let now = now_ms();
                conn.prepare_cached(
                    "INSERT INTO queue (run_id, tenant, trace_context, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                )?
                .execute(params![
                    message.run_id.as_str(),
                    message.tenant.as_str(),
                    message.trace_context,
                    now
                ])?;
                Ok(())
            })
            .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let max = max.clamp(1, MAX_BATCH);
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a send in between still wakes this poll.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.try_receive(max, visibility).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(got);
            }
            let nap = (deadline - now).min(POLL_INTERVAL);
            // Either woken by a send or time to look again; both just loop.
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn extend_visibility(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.set_visibility(receipt, Lane::Live, visibility).await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.delete_in(receipt, Lane::Live).await
    }

    async fn receive_dead_letters(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        let max = i64::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1);
        let visibility_ms = duration_ms(visibility);
        Ok(self
            .db
            .write(move |tx| {
                let now = now_ms();
                let seqs: Vec<i64> = visible(tx, Lane::Dead, now, max)?.into_iter().map(|c| c.seq).collect();
                deliver(tx, &seqs, now, visibility_ms)
            })
            .await?)
    }

    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.delete_in(receipt, Lane::Dead).await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        Ok(self
            .db
            .read(|conn| {
                let now = now_ms();
                let count = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<u64, DbError> {
                    let n: i64 = conn.prepare_cached(sql)?.query_row(args, |row| row.get(0))?;
                    Ok(u64::try_from(n).unwrap_or(0))
                };
                Ok(QueueDepth {
                    visible: count(
                        "SELECT COUNT(*) FROM queue WHERE dead = 0 AND visible_at <= ?1",
                        &[&now],
                    )?,
                    in_flight: count("SELECT COUNT(*) FROM queue WHERE dead = 0 AND visible_at > ?1", &[&now])?,
                    dead: count("SELECT COUNT(*) FROM queue WHERE dead = 1", &[])?,
                })
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(seq: i64, tenant: &str) -> Candidate {
        Candidate {
            seq,
            tenant: tenant.into(),
            run_id: format!("r{seq}"),
            receive_count: 0,
        }
    }

    #[test]
    fn round_robin_interleaves_tenants_in_order_of_age() {
        let c = vec![
            cand(1, "a"),
            cand(2, "a"),
            cand(3, "a"),
            cand(4, "b"),
            cand(5, "c"),
            cand(6, "b"),
        ];
        assert_eq!(round_robin(c, 5), vec![1, 4, 5, 2, 6]);
        assert_eq!(round_robin(vec![cand(1, "a"), cand(2, "a")], 10), vec![1, 2]);
        assert!(round_robin(Vec::new(), 3).is_empty());
    }

    #[test]
    fn receipts_name_their_message() {
        let r = Receipt(new_receipt(42));
        assert_eq!(receipt_seq(&r), Some(42));
        assert_ne!(new_receipt(42), new_receipt(42));
        assert_eq!(receipt_seq(&Receipt("junk".into())), None);
        assert_eq!(receipt_seq(&Receipt("x:y".into())), None);
    }
}
