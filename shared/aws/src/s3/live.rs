//! Live logs on S3, which has no append: one object per appended batch,
//! `live/{tenant}/{run}/{name}/{offset:020}.{epoch}`.
//!
//! - The offset is zero-padded, so a listing returns the chunks in offset order; a retried append
//!   of the same offset overwrites the same object.
//! - The epoch is a ULID chosen by the append at offset 0 (which starts the log afresh, a new
//!   attempt) and kept by the later appends of that attempt. Readers take the newest epoch that
//!   has a chunk at offset 0 and ignore the others, so an old attempt's chunks never show through
//!   a new, shorter one, and no append has to list or delete them first.
//! - The log is the chunks of that epoch laid end to end from offset 0; where chunks overlap (a
//!   retry from inside an earlier batch) the bytes are the same, and each offset is read once.
//!   The first gap ends the log.
//! - Appends need to know where the log ends (a gap is refused): each store remembers that for
//!   the logs it appends to ([`Cursors`]), so an append is one PutObject. Only an append at a
//!   nonzero offset to a log this store has not seen, or past the end it last saw (another
//!   writer, or a gap about to be refused), lists the chunks first.
//! - Reads list the log's chunks (ListObjectsV2 with a `/` delimiter, so chunks of a longer name
//!   such as `{name}/more` are not mixed in) and fetch only the chunks that overlap the range.

use super::{sdk_error, S3StoreError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use outpost_core::ports::{BackendError, RunKey};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// Prefix of every live log chunk in the bucket (the lifecycle rule expires it).
pub const LIVE_PREFIX: &str = "live/";
/// Chunks fetched at once by a read.
const READ_CONCURRENCY: usize = 4;
/// Logs a store remembers the end of; past this it forgets them all (and lists on the next
/// append of each, which is correct, only dearer).
const MAX_CURSORS: usize = 4096;
/// Digits of the zero-padded offset in a chunk key.
const OFFSET_DIGITS: usize = 20;

/// The prefix holding the chunks of one live log (ends with `/`).
pub(super) fn log_prefix(key: &RunKey, name: &str) -> String {
    format!("{LIVE_PREFIX}{}/{}/{name}/", key.tenant.as_str(), key.run.as_str())
}

/// Key of the chunk appended at `offset` in `epoch`.
pub(super) fn chunk_key(prefix: &str, offset: u64, epoch: &str) -> String {
    format!("{prefix}{offset:020}.{epoch}")
}

/// A fresh epoch: later ones sort after earlier ones.
pub(super) fn new_epoch() -> String {
    ulid::Ulid::new().to_string()
}

/// Where a live log stands: its current epoch and its end (none yet: an empty epoch at 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    pub epoch: String,
    pub end: u64,
}

/// The cursors of the live logs one store appends to, by chunk prefix.
#[derive(Debug, Clone, Default)]
pub(super) struct Cursors(Arc<Mutex<HashMap<String, Cursor>>>);

impl Cursors {
    pub fn get(&self, prefix: &str) -> Option<Cursor> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(prefix)
            .cloned()
    }

    /// Records where a log stands as listed.
    pub fn set(&self, prefix: &str, cursor: Cursor) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CURSORS && !map.contains_key(prefix) {
            map.clear();
        }
        map.insert(prefix.to_owned(), cursor);
    }

    pub fn forget(&self, prefix: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(prefix);
    }

    /// Records an append of `offset..end` in `epoch` (offset 0 starts the log again).
    pub fn advance(&self, prefix: &str, epoch: String, offset: u64, end: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CURSORS && !map.contains_key(prefix) {
            map.clear();
        }
        let cursor = map.entry(prefix.to_owned()).or_insert_with(|| Cursor {
            epoch: epoch.clone(),
            end: 0,
        });
        if offset == 0 || cursor.epoch != epoch {
            *cursor = Cursor { epoch, end };
        } else {
            cursor.end = cursor.end.max(end);
        }
    }
}

/// A chunk as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    offset: u64,
    epoch: String,
    key: String,
    len: u64,
}

/// Reads `key` (listed with `len` bytes) as a chunk under `prefix`, if it is one.
fn parse_chunk(prefix: &str, key: &str, len: u64) -> Option<Listed> {
    let rest = key.strip_prefix(prefix)?;
    let (offset, epoch) = rest.split_once('.')?;
    let digits_ok = offset.len() == OFFSET_DIGITS && offset.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok || epoch.is_empty() || epoch.contains('/') {
        return None;
    }
    Some(Listed {
        offset: offset.parse().ok()?,
        epoch: epoch.to_owned(),
        key: key.to_owned(),
        len,
    })
}

/// The bytes `start..end` of the log, found in `key` (which begins at `chunk_offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Segment {
    key: String,
    chunk_offset: u64,
    chunk_len: u64,
    start: u64,
    end: u64,
}

/// A live log as stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LiveLog {
    pub epoch: String,
    pub size: u64,
    segments: Vec<Segment>,
}

/// Lays the current epoch's chunks end to end. `None` without a chunk at offset 0.
fn assemble(chunks: Vec<Listed>) -> Option<LiveLog> {
    let epoch = chunks.iter().filter(|c| c.offset == 0).map(|c| &c.epoch).max()?.clone();
    let mut current: Vec<Listed> = chunks.into_iter().filter(|c| c.epoch == epoch).collect();
    current.sort_by_key(|c| c.offset);
    let mut size = 0u64;
    let mut segments = Vec::new();
    for c in current {
        if c.offset > size {
            break; // a gap: the log ends before it
        }
        let end = c.offset + c.len;
        if end > size {
            segments.push(Segment {
                key: c.key,
                chunk_offset: c.offset,
                chunk_len: c.len,
                start: size,
                end,
            });
            size = end;
        }
    }
    Some(LiveLog { epoch, size, segments })
}

/// Lists the chunks under `prefix` (every page) and assembles the log. `None` if there is none.
pub(super) async fn load(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Option<LiveLog>, BackendError> {
    let mut chunks = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_error)?;
        for object in page.contents() {
            let len = object.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            if let Some(chunk) = object.key().and_then(|k| parse_chunk(prefix, k, len)) {
                chunks.push(chunk);
            }
        }
    }
    Ok(assemble(chunks))
}

/// The segments holding bytes `start..stop`, each with the part of it that is wanted.
fn overlapping(log: &LiveLog, start: u64, stop: u64) -> impl Iterator<Item = (Segment, u64, u64)> + '_ {
    log.segments
        .iter()
        .filter(move |s| s.end > start && s.start < stop)
        .map(move |s| (s.clone(), s.start.max(start), s.end.min(stop)))
}

/// GetObject of the log bytes `from..to` out of `segment` (a `Range` unless it is the whole chunk).
async fn get_part(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    segment: &Segment,
    from: u64,
    to: u64,
) -> Result<ByteStream, BackendError> {
    let inner_from = from - segment.chunk_offset;
    let inner_to = to - segment.chunk_offset;
    let mut req = client.get_object().bucket(bucket).key(&segment.key);
    if inner_from > 0 || inner_to < segment.chunk_len {
        req = req.range(format!("bytes={inner_from}-{}", inner_to - 1));
    }
    Ok(req.send().await.map_err(sdk_error)?.body)
}

/// The log bytes `start..stop`, fetching only the chunks that hold them.
pub(super) async fn read(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    log: &LiveLog,
    start: u64,
    stop: u64,
) -> Result<Bytes, BackendError> {
    if start >= stop {
        return Ok(Bytes::new());
    }
    let parts: Vec<Bytes> = futures_util::stream::iter(overlapping(log, start, stop))
        .map(|(segment, from, to)| async move {
            let body = get_part(client, bucket, &segment, from, to).await?;
            let bytes = body.collect().await.map_err(sdk_error)?.into_bytes();
            if bytes.len() as u64 != to - from {
                return Err(Box::new(S3StoreError::ChunkChanged(segment.key)) as BackendError);
            }
            Ok(bytes)
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    if let [one] = parts.as_slice() {
        return Ok(one.clone());
    }
    let mut out = BytesMut::with_capacity(usize::try_from(stop - start).unwrap_or(0));
    for part in parts {
        out.extend_from_slice(&part);
    }
    Ok(out.freeze())
}

/// The whole log as a stream: each chunk fetched when the previous one is done.
pub(super) fn stream(
    client: aws_sdk_s3::Client,
    bucket: String,
    log: LiveLog,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    struct State {
        client: aws_sdk_s3::Client,
        bucket: String,
        pending: VecDeque<Segment>,
        body: Option<ByteStream>,
    }
    let state = State {
        client,
        bucket,
        pending: log.segments.into(),
        body: None,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(body) = state.body.as_mut() {
                match body.next().await {
                    Some(Ok(bytes)) => return Some((Ok(bytes), state)),
                    Some(Err(e)) => {
                        state.pending.clear();
                        state.body = None;
                        return Some((Err(std::io::Error::from(e)), state));
                    }
                    None => state.body = None,
                }
            }
            let segment = state.pending.pop_front()?;
            match get_part(&state.client, &state.bucket, &segment, segment.start, segment.end).await {
                Ok(body) => state.body = Some(body),
                Err(e) => {
                    state.pending.clear();
                    return Some((Err(std::io::Error::other(e)), state));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "live/acme/r1/output.log/";

    fn listed(offset: u64, epoch: &str, len: u64) -> Listed {
        let key = chunk_key(P, offset, epoch);
        parse_chunk(P, &key, len).expect("a chunk key")
    }

    #[test]
    fn keys_sort_by_offset_and_parse_back() {
        let a = chunk_key(P, 9, "01A");
        let b = chunk_key(P, 10, "01A");
        assert!(a < b);
        assert_eq!(a, "live/acme/r1/output.log/00000000000000000009.01A");
        assert_eq!(parse_chunk(P, &b, 3).map(|c| c.offset), Some(10));
        // Chunks of a longer name, and anything else, are not chunks of this log.
        assert!(parse_chunk(P, "live/acme/r1/output.log/more/00000000000000000000.01A", 1).is_none());
        assert!(parse_chunk(P, "live/acme/r1/output.log/0.01A", 1).is_none());
        assert!(parse_chunk(P, "live/acme/r1/output.log/00000000000000000000.", 1).is_none());
    }

    #[test]
    fn chunks_are_laid_end_to_end() {
        let log = assemble(vec![listed(0, "E", 6), listed(6, "E", 6), listed(12, "E", 4)]).expect("log");
        assert_eq!(log.size, 16);
        let parts: Vec<_> = overlapping(&log, 4, 13)
            .map(|(s, a, b)| (s.chunk_offset, a, b))
            .collect();
        assert_eq!(parts, vec![(0, 4, 6), (6, 6, 12), (12, 12, 13)]);
    }

    #[test]
    fn overlaps_are_read_once_and_a_gap_ends_the_log() {
        // A retry from inside the second batch that also went further.
        let log = assemble(vec![
            listed(0, "E", 6),
            listed(6, "E", 6),
            listed(8, "E", 7),
            listed(20, "E", 1),
        ])
        .expect("log");
        assert_eq!(log.size, 15);
        let parts: Vec<_> = overlapping(&log, 0, 15)
            .map(|(s, a, b)| (s.chunk_offset, a, b))
            .collect();
        assert_eq!(parts, vec![(0, 0, 6), (6, 6, 12), (8, 12, 15)]);
    }

    #[test]
    fn the_newest_attempt_wins() {
        let log = assemble(vec![
            listed(0, "01AAA", 19),
            listed(0, "01BBB", 6),
            listed(6, "01AAA", 100),
            listed(19, "01AAA", 100),
        ])
        .expect("log");
        assert_eq!((log.epoch.as_str(), log.size), ("01BBB", 6));
        assert!(assemble(vec![listed(6, "E", 1)]).is_none(), "no chunk at 0, no log");
        assert!(assemble(Vec::new()).is_none());
    }

    #[test]
    fn cursors_follow_appends() {
        let c = Cursors::default();
        c.advance(P, "A".into(), 0, 6);
        c.advance(P, "A".into(), 6, 12);
        c.advance(P, "A".into(), 6, 12);
        assert_eq!(
            c.get(P),
            Some(Cursor {
                epoch: "A".into(),
                end: 12
            })
        );
        c.advance(P, "B".into(), 0, 3);
        assert_eq!(
            c.get(P),
            Some(Cursor {
                epoch: "B".into(),
                end: 3
            })
        );
        c.forget(P);
        assert_eq!(c.get(P), None);
    }
}
