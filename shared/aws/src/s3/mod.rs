//! `ArtifactStore` on S3: one bucket, every object encrypted at rest (SSE-S3, AES256).
//!
//! - A stored file is the object `runs/{tenant}/{run}/{name}`, with its content type. `put_file`
//!   sends one PutObject up to [`upload::SINGLE_PUT_MAX`] and a multipart upload above it (parts
//!   streamed from disk, a few at a time, the upload aborted on any failure). The SHA-256 of the
//!   manifest is computed from the file; a single PutObject also sends it as the object's checksum,
//!   so S3 rejects a body that differs from what was hashed.
//! - S3 has no append, so a live log is a series of objects, one per appended batch, under
//!   `live/{tenant}/{run}/{name}/` (see [`live`]). They are outside `runs/`, so no artifact name
//!   can collide with them, and the bucket's lifecycle rule expires them after two days. A final
//!   object of the same name always wins over live chunks; `put_file` does not delete the chunks
//!   (that would cost a List and a DeleteObjects on the write path; the lifecycle rule does it).
//! - `read_range` asks for the final object with a `Range` header and falls back to the live
//!   chunks when there is none; `open` streams either, never collecting it.
//! - `presigned_url` signs a GetObject of the final object locally (no request).
//!
//! Names are checked with [`check_artifact_name`] before anything else; tenant and run ids are
//! validated types, so a key never leaves its run's prefix.

mod live;
pub mod post;
mod setup;
mod upload;

pub use setup::create_bucket;

use super::sdk_error;
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use live::{Cursor, Cursors};
use outpost_core::domain::Artifact;
use outpost_core::ports::artifacts::check_artifact_name;
use outpost_core::ports::{ArtifactBody, ArtifactError, ArtifactStore, BackendError, LogChunk, RunKey};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Content type of a live log.
pub const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Content type of a stored object that has none.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// What went wrong in this adapter itself (SDK failures are reported as they come).
#[derive(Debug, thiserror::Error)]
pub enum S3StoreError {
    #[error("log offset {offset} is past its end ({end} bytes)")]
    PastTheEnd { offset: u64, end: u64 },
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} changed while it was uploaded", .0.display())]
    FileChanged(PathBuf),
    #[error("a file of {0} bytes is too large for S3")]
    TooLarge(u64),
    #[error("S3 answered without {0}")]
    Missing(&'static str),
    #[error("live log chunk {0} changed while it was read")]
    ChunkChanged(String),
}

/// Artifacts under `runs/{tenant}/{run}/{name}` in `bucket`, live logs under `live/`.
#[derive(Debug, Clone)]
pub struct S3ArtifactStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    presign_expiry: Duration,
    /// Where each live log this process appends to stands, so appends need no request but their
    /// PutObject.
    cursors: Cursors,
}

impl S3ArtifactStore {
    /// A store on `bucket`. `presign_expiry` is the lifetime of presigned URLs asked for with a
    /// zero `expires_in`.
    pub fn new(client: aws_sdk_s3::Client, bucket: String, presign_expiry: Duration) -> Self {
        Self {
            client,
            bucket,
            presign_expiry,
            cursors: Cursors::default(),
        }
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// Object key of the stored file `name` of a run.
pub fn object_key(key: &RunKey, name: &str) -> String {
    format!("runs/{}/{}/{name}", key.tenant.as_str(), key.run.as_str())
}

fn backend(e: BackendError) -> ArtifactError {
    ArtifactError::Backend(e)
}

fn sdk<E>(e: E) -> ArtifactError
where
    E: std::error::Error + Send + Sync + 'static,
{
    ArtifactError::Backend(sdk_error(e))
}

/// The HTTP status of a failed call, when it got a response.
fn status_of<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Parses `Content-Range: bytes {start}-{end}/{total}` into `(start, total)`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// The `ActualObjectSize` S3 reports in the body of an `InvalidRange` error, if it does.
fn actual_object_size(body: &[u8]) -> Option<u64> {
    xml_tag(std::str::from_utf8(body).ok()?, "ActualObjectSize")?
        .parse()
        .ok()
}

/// The trimmed text of the first `<tag>…</tag>` in an S3 (or EC2) XML answer: what the error
/// bodies and the few answers read here need, without an XML parser.
pub fn xml_tag<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let (_, rest) = body.split_once(&format!("<{tag}>"))?;
    let (text, _) = rest.split_once(&format!("</{tag}>"))?;
    Some(text.trim())
}

/// A chunk that holds nothing, at the end of a file of `size` bytes read from `offset`.
fn empty_chunk(offset: u64, size: u64) -> LogChunk {
    LogChunk {
        data: Bytes::new(),
        next_offset: offset.min(size),
        size,
    }
}

/// An SDK body as the stream [`ArtifactBody`] carries.
fn body_stream(body: ByteStream) -> futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(body), |state| async move {
        let mut body = state?;
        match body.next().await {
            Some(Ok(bytes)) => Some((Ok(bytes), Some(body))),
            Some(Err(e)) => Some((Err(std::io::Error::from(e)), None)),
            None => None,
        }
    })
    .boxed()
}

impl S3ArtifactStore {
    /// Size of the final object `key`, or `None` if there is none (one HeadObject).
    async fn final_size(&self, key: &str) -> Result<Option<u64>, ArtifactError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(
                out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) || status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(sdk(e)),
        }
    }

    /// Up to `max_len` bytes of the final object from `offset`; `None` if it does not exist.
    async fn read_final(&self, key: &str, offset: u64, max_len: u64) -> Result<Option<LogChunk>, ArtifactError> {
        if max_len == 0 {
            return Ok(self.final_size(key).await?.map(|size| empty_chunk(offset, size)));
        }
        let last = offset.saturating_add(max_len - 1);
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) if status_of(&e) == Some(416) || e.code() == Some("InvalidRange") => {
                // `offset` is at or past the end (or the object is empty).
                let reported = e
                    .raw_response()
                    .and_then(|r| r.body().bytes())
                    .and_then(actual_object_size);
                let size = match reported {
                    Some(size) => Some(size),
                    None => self.final_size(key).await?,
                };
                return Ok(size.map(|size| empty_chunk(offset, size)));
            }
            Err(e) => return Err(sdk(e)),
        };
        let range = out.content_range().and_then(parse_content_range);
        let data = out.body.collect().await.map_err(sdk)?.into_bytes();
        let (start, data, size) = match range {
            Some((start, Some(total))) => (start, data, total),
            Some((start, None)) => {
                let size = self.final_size(key).await?.unwrap_or(start + data.len() as u64);
                (start, data, size)
            }
            // The whole object came back (a server that ignores ranges): cut the range out here.
            None => {
                let size = data.len() as u64;
                let from = usize::try_from(offset.min(size)).unwrap_or(data.len());
                let to = usize::try_from(offset.saturating_add(max_len).min(size)).unwrap_or(data.len());
                (offset.min(size), data.slice(from..to), size)
            }
        };
        let max = usize::try_from(max_len).unwrap_or(usize::MAX);
        let data = if data.len() > max { data.slice(..max) } else { data };
        let next_offset = start + data.len() as u64;
        Ok(Some(LogChunk {
            data,
            next_offset,
            size: size.max(next_offset),
        }))
    }
}

#[async_trait]
impl ArtifactStore for S3ArtifactStore {
    async fn put_file(
        &self,
        key: &RunKey,
        name: &str,
        src: &Path,
        content_type: &str,
    ) -> Result<Artifact, ArtifactError> {
        check_artifact_name(name)?;
        let object = object_key(key, name);
        let target = upload::Target {
            client: &self.client,
            bucket: &self.bucket,
            key: &object,
            content_type,
        };
        let (size, sha256) = upload::upload_file(&target, src).await.map_err(backend)?;
        // The final object replaces the live log: a later append starts from what S3 holds.
        self.cursors.forget(&live::log_prefix(key, name));
        Ok(Artifact {
            name: name.to_owned(),
            size,
            sha256,
            content_type: content_type.to_owned(),
        })
    }

    async fn append_log(&self, key: &RunKey, name: &str, offset: u64, data: &[u8]) -> Result<(), ArtifactError> {
        check_artifact_name(name)?;
        let prefix = live::log_prefix(key, name);
        let epoch = if offset == 0 {
            // Offset 0 starts the log afresh (a new attempt): a new epoch hides the old chunks.
            live::new_epoch()
        } else {
            let cursor = match self.cursors.get(&prefix) {
                Some(c) if offset <= c.end => c,
                // Another process began this log, this one forgot it, or the offset is past where
                // this process last saw it end: ask S3 where it stands before refusing anything.
                _ => {
                    let listed = live::load(&self.client, &self.bucket, &prefix).await.map_err(backend)?;
                    let cursor = listed.map_or_else(Cursor::default, |log| Cursor {
                        epoch: log.epoch,
                        end: log.size,
                    });
                    self.cursors.set(&prefix, cursor.clone());
                    cursor
                }
            };
            if offset > cursor.end {
                return Err(backend(Box::new(S3StoreError::PastTheEnd {
                    offset,
                    end: cursor.end,
                })));
            }
            if data.is_empty() {
                return Ok(());
            }
            cursor.epoch
        };
        let chunk = live::chunk_key(&prefix, offset, &epoch);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&chunk)
            .content_type(LOG_CONTENT_TYPE)
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .body(ByteStream::from(Bytes::copy_from_slice(data)))
            .send()
            .await
            .map_err(sdk)?;
        let end = offset + data.len() as u64;
        self.cursors.advance(&prefix, epoch, offset, end);
        Ok(())
    }

    async fn read_range(
        &self,
        key: &RunKey,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Option<LogChunk>, ArtifactError> {
        check_artifact_name(name)?;
        if let Some(chunk) = self.read_final(&object_key(key, name), offset, max_len).await? {
            return Ok(Some(chunk));
        }
        let prefix = live::log_prefix(key, name);
        let Some(log) = live::load(&self.client, &self.bucket, &prefix).await.map_err(backend)? else {
            return Ok(None);
        };
        let start = offset.min(log.size);
        let stop = start.saturating_add(max_len).min(log.size);
        let data = live::read(&self.client, &self.bucket, &log, start, stop)
            .await
            .map_err(backend)?;
        Ok(Some(LogChunk {
            next_offset: start + data.len() as u64,
            size: log.size,
            data,
        }))
    }

    async fn open(&self, key: &RunKey, name: &str) -> Result<Option<ArtifactBody>, ArtifactError> {
        check_artifact_name(name)?;
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object_key(key, name))
            .send()
            .await;
        match res {
            Ok(out) => {
                let size = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                let content_type = out.content_type().unwrap_or(DEFAULT_CONTENT_TYPE).to_owned();
                return Ok(Some(ArtifactBody {
                    size,
                    content_type,
                    stream: body_stream(out.body),
                }));
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {}
            Err(e) => return Err(sdk(e)),
        }
        let prefix = live::log_prefix(key, name);
        let Some(log) = live::load(&self.client, &self.bucket, &prefix).await.map_err(backend)? else {
            return Ok(None);
        };
        Ok(Some(ArtifactBody {
            size: log.size,
            content_type: LOG_CONTENT_TYPE.to_owned(),
            stream: live::stream(self.client.clone(), self.bucket.clone(), log),
        }))
    }

    async fn presigned_url(
        &self,
        key: &RunKey,
        name: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, ArtifactError> {
        check_artifact_name(name)?;
        let expires_in = if expires_in.is_zero() {
            self.presign_expiry
        } else {
            expires_in
        };
        let config = PresigningConfig::expires_in(expires_in).map_err(sdk)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object_key(key, name))
            .presigned(config)
            .await
            .map_err(sdk)?;
        Ok(Some(request.uri().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(parse_content_range("bytes 2-5/11"), Some((2, Some(11))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes */11"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn invalid_range_body_gives_the_size() {
        let body = b"<Error><Code>InvalidRange</Code><RangeRequested>bytes=20-29</RangeRequested>\
                     <ActualObjectSize>11</ActualObjectSize></Error>";
        assert_eq!(actual_object_size(body), Some(11));
        assert_eq!(actual_object_size(b"<Error><Code>InvalidRange</Code></Error>"), None);
    }

    #[test]
    fn past_the_end_is_empty_at_the_end() {
        assert_eq!(
            empty_chunk(100, 12),
            LogChunk {
                data: Bytes::new(),
                next_offset: 12,
                size: 12
            }
        );
        assert_eq!(empty_chunk(5, 12).next_offset, 5);
    }
}
