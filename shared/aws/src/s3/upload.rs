//! Uploading a file from disk as one object: one PutObject up to [`SINGLE_PUT_MAX`], a multipart
//! upload above it. Either way the file's size and SHA-256 (hex, for the manifest) are computed
//! from the file, and nothing larger than [`IN_MEMORY_MAX`] is read into memory whole.
//!
//! - Up to [`IN_MEMORY_MAX`]: read once, hashed, sent from memory.
//! - Up to [`SINGLE_PUT_MAX`]: hashed on the blocking pool, then streamed from disk.
//! - Above: parts of [`PART_SIZE`] (more when the file needs over 10,000 parts) streamed from disk,
//!   [`PART_CONCURRENCY`] at a time, while the file is hashed alongside; any failure aborts the
//!   upload (and the bucket's lifecycle rule aborts any the process did not live to abort).
//!
//! A single PutObject carries the SHA-256 as its checksum, so S3 refuses a body that is not the
//! one hashed (a file changed under the upload). A multipart upload is created with CRC32
//! checksums, each part carries its own (computed by the SDK as it streams), and the completion
//! names them, so S3 checks every part. Every write asks for SSE-S3 (AES256).

use super::{sdk_error, S3StoreError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use base64::Engine;
use futures_util::{StreamExt, TryStreamExt};
use outpost_core::ports::BackendError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files up to this size are read into memory and sent from there.
pub const IN_MEMORY_MAX: u64 = 1024 * 1024;
/// Files up to this size are one PutObject; larger ones a multipart upload.
pub const SINGLE_PUT_MAX: u64 = 16 * 1024 * 1024;
/// Size of each part of a multipart upload (the last may be smaller).
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// Parts in flight at once.
pub const PART_CONCURRENCY: usize = 4;
/// S3's limit on the parts of one upload.
const MAX_PARTS: u64 = 10_000;
const HASH_BUFFER: usize = 256 * 1024;

/// Where an upload goes.
pub(super) struct Target<'a> {
    pub client: &'a aws_sdk_s3::Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
}

/// Size and SHA-256 of a file.
struct Summary {
    size: u64,
    digest: [u8; 32],
}

/// Hashes the file at `path` on the blocking pool.
async fn hash_file(path: PathBuf) -> Result<Summary, BackendError> {
    let task = tokio::task::spawn_blocking(move || -> std::io::Result<Summary> {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; HASH_BUFFER];
        let mut size = 0u64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(buf.get(..n).unwrap_or_default());
                    size += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Summary {
            size,
            digest: hasher.finalize().into(),
        })
    });
    match task.await {
        Ok(res) => res.map_err(|e| Box::new(e) as BackendError),
        Err(e) => Err(Box::new(std::io::Error::other(e.to_string()))),
    }
}

fn io(e: std::io::Error) -> BackendError {
    Box::new(e)
}

/// Uploads the file at `src` to `target`; returns its size and hex SHA-256.
pub(super) async fn upload_file(target: &Target<'_>, src: &Path) -> Result<(u64, String), BackendError> {
    let meta = tokio::fs::metadata(src).await.map_err(io)?;
    if !meta.is_file() {
        return Err(Box::new(S3StoreError::NotAFile(src.to_owned())));
    }
    let len = meta.len();
    let summary = if len <= IN_MEMORY_MAX {
        let data = tokio::fs::read(src).await.map_err(io)?;
        let summary = Summary {
            size: data.len() as u64,
            digest: Sha256::digest(&data).into(),
        };
        put_object(target, ByteStream::from(data), &summary).await?;
        summary
    } else if len <= SINGLE_PUT_MAX {
        let summary = hash_file(src.to_owned()).await?;
        let body = ByteStream::read_from()
            .path(src)
            .length(Length::Exact(summary.size))
            .build()
            .await
            .map_err(sdk_error)?;
        put_object(target, body, &summary).await?;
        summary
    } else {
        multipart(target, src, len).await?
    };
    Ok((summary.size, hex::encode(summary.digest)))
}

/// One PutObject of `body`, whose size and SHA-256 are `summary`.
async fn put_object(target: &Target<'_>, body: ByteStream, summary: &Summary) -> Result<(), BackendError> {
    let size = i64::try_from(summary.size).map_err(|_| S3StoreError::TooLarge(summary.size))?;
    target
        .client
        .put_object()
        .bucket(target.bucket)
        .key(target.key)
        .content_type(target.content_type)
        .content_length(size)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(summary.digest))
        .body(body)
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(())
}

/// The part size for a file of `len` bytes: [`PART_SIZE`], or more (whole MiB) to stay within
/// S3's 10,000 parts.
fn part_size(len: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    needed.max(PART_SIZE)
}

/// A multipart upload of the `len` bytes at `src`, hashing the file alongside.
async fn multipart(target: &Target<'_>, src: &Path, len: u64) -> Result<Summary, BackendError> {
    let created = target
        .client
        .create_multipart_upload()
        .bucket(target.bucket)
        .key(target.key)
        .content_type(target.content_type)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .map_err(sdk_error)?;
    let upload_id = created.upload_id().ok_or(S3StoreError::Missing("UploadId"))?.to_owned();
    tracing::debug!(key = target.key, size = len, upload_id, "multipart upload started");
    let result = async {
        let (hashed, parts) = tokio::join!(hash_file(src.to_owned()), upload_parts(target, &upload_id, src, len));
        let (summary, parts) = (hashed?, parts?);
        if summary.size != len {
            return Err(Box::new(S3StoreError::FileChanged(src.to_owned())) as BackendError);
        }
        target
            .client
            .complete_multipart_upload()
            .bucket(target.bucket)
            .key(target.key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(summary)
    }
    .await;
    if result.is_err() {
        let abort = target
            .client
            .abort_multipart_upload()
            .bucket(target.bucket)
            .key(target.key)
            .upload_id(&upload_id)
            .send()
            .await;
        if let Err(e) = abort {
            tracing::warn!(key = target.key, upload_id, error = %sdk_error(e), "aborting a failed multipart upload failed");
        }
    }
    result
}

/// Uploads every part of `src`, a few at a time; the completed parts in order.
async fn upload_parts(
    target: &Target<'_>,
    upload_id: &str,
    src: &Path,
    len: u64,
) -> Result<Vec<CompletedPart>, BackendError> {
    let size = part_size(len);
    let count = len.div_ceil(size);
    let mut parts: Vec<CompletedPart> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let offset = i * size;
            let part_len = size.min(len - offset);
            let number = i32::try_from(i + 1).map_err(|_| S3StoreError::TooLarge(len))?;
            let body = ByteStream::read_from()
                .path(src)
                .offset(offset)
                .length(Length::Exact(part_len))
                .build()
                .await
                .map_err(sdk_error)?;
            let out = target
                .client
                .upload_part()
                .bucket(target.bucket)
                .key(target.key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .content_length(i64::try_from(part_len).map_err(|_| S3StoreError::TooLarge(len))?)
                .body(body)
                .send()
                .await
                .map_err(sdk_error)?;
            let etag = out.e_tag().ok_or(S3StoreError::Missing("ETag"))?;
            let part = CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                .build();
            Ok::<_, BackendError>(part)
        })
        .buffer_unordered(PART_CONCURRENCY)
        .try_collect()
        .await?;
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_within_the_limit() {
        assert_eq!(part_size(20 * 1024 * 1024), PART_SIZE);
        let huge = 200 * 1024 * 1024 * 1024u64;
        let size = part_size(huge);
        assert!(huge.div_ceil(size) <= MAX_PARTS);
        assert_eq!(size % (1024 * 1024), 0);
    }
}
