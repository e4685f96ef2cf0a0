//! ArtifactStore: the files of each run (output.log, summary.json, diff.patch, files/...).
//!
//! Artifact-first: the worker puts every file here before it writes the run's final status, so a
//! finished run's manifest only names stored files. `output.log` also grows while the run goes on
//! (`append_log`), so clients can tail it live.

use super::BackendError;
use crate::domain::{Artifact, RunId, TenantId};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Names are relative paths of `/`-separated parts without `.`/`..`, at most 512 bytes.
    #[error("invalid artifact name {0:?}")]
    BadName(String),
    #[error("artifact backend error: {0}")]
    Backend(#[source] BackendError),
}

/// Which run's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    pub tenant: TenantId,
    pub run: RunId,
}

/// A stored file's content, read whole or streamed.
pub struct ArtifactBody {
    pub size: u64,
    pub content_type: String,
    /// The content as a stream of chunks.
    pub stream: futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
}

/// Bytes of a log from an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub data: Bytes,
    /// Offset just past `data`: pass it as the next offset.
    pub next_offset: u64,
    /// Total bytes stored so far.
    pub size: u64,
}

/// Checks an artifact name: relative, `/`-separated, no empty, `.` or `..` parts, no NUL or
/// backslash, at most 512 bytes.
pub fn check_artifact_name(name: &str) -> Result<(), ArtifactError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && !name.contains(['\0', '\\'])
        && name.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::BadName(name.to_owned()))
    }
}

#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores the file at `src` as `name`, replacing any earlier content (and any live log of the
    /// same name). Returns its manifest entry (size, SHA-256, content type). The adapter may move
    /// `src` instead of copying it.
    async fn put_file(
        &self,
        key: &RunKey,
        name: &str,
        src: &Path,
        content_type: &str,
    ) -> Result<Artifact, ArtifactError>;

    /// Writes `data` at `offset` of the live log `name` (offset = bytes already appended).
    async fn append_log(&self, key: &RunKey, name: &str, offset: u64, data: &[u8]) -> Result<(), ArtifactError>;

    /// Up to `max_len` bytes of `name` from `offset` (live or final). `None` if nothing is stored.
    async fn read_range(
        &self,
        key: &RunKey,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Option<LogChunk>, ArtifactError>;

    /// The whole stored file, streamed. `None` if not stored.
    async fn open(&self, key: &RunKey, name: &str) -> Result<Option<ArtifactBody>, ArtifactError>;

    /// A URL that serves the stored file to anyone holding it for `expires_in` (S3 presigned GET),
    /// or `None` when this store has no such URLs (the API then links its own artifact route).
    /// Made without a request to the store: it does not check that the file exists.
    async fn presigned_url(
        &self,
        key: &RunKey,
        name: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<String>, ArtifactError> {
        let _ = (key, name, expires_in);
        Ok(None)
    }
}
