//! S3 presigned POST: uploads by a holder of no AWS credentials, limited to one key prefix, one
//! size limit and one lifetime, and [`PostArtifactStore`], the `ArtifactStore` that writes
//! through two of them.
//!
//! Why: a run's agent container gets no AWS credentials. The worker signs a SigV4 POST policy
//! ([`S3ArtifactStore::presign_post`]) for the run's prefixes and hands it over inside the run
//! spec; the container's [`PostArtifactStore`] uploads with it. The worker passes its own
//! credentials in ([`sdk_credentials`] reads them from its `SdkConfig`): the SDK's clients do not
//! hand theirs out. The AWS SDK has no presigned POST, so the policy is built here (and signed with
//! the SDK's SigV4 signer) as <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>
//! describes.
//!
//! # The policy
//!
//! [`sign_post`] signs, with HMAC-SHA256 under the SigV4 signing key of the credentials' secret,
//! the date, the region and `s3` ([`post_signature`]: the SDK's own signer, `aws-sigv4`), a
//! policy that expires at `now + expires_in` and whose conditions are:
//!
//! - `{"bucket": b}`: this bucket only;
//! - `["starts-with", "$key", prefix]`: keys under the prefix only (the prefix ends with `/`, so
//!   `runs/t/r/` never admits `runs/t/r2/…`);
//! - `["content-length-range", 0, max_bytes]`: at most `max_bytes` per object;
//! - `["starts-with", "$Content-Type", ""]`: any content type (the uploader names it);
//! - `{"x-amz-server-side-encryption": "AES256"}`: SSE-S3, as every write of [`S3ArtifactStore`];
//! - equality on `x-amz-algorithm`, `x-amz-credential`, `x-amz-date` and, with temporary
//!   credentials, `x-amz-security-token`.
//!
//! The uploader sends every field of [`PresignedPost::fields`], then `key` and `Content-Type`,
//! then the file last. S3 refuses a form with a field no condition covers, so nothing else may be
//! added. Signing is local and free (no request). A policy signed with temporary credentials
//! (an ECS task role) stops working when they expire: [`S3ArtifactStore::presign_post`] shortens
//! the lifetime to theirs, so [`PresignedPost::expires_at`] is when it really stops working.
//!
//! # The POST store
//!
//! [`PostArtifactStore`] writes exactly the objects [`S3ArtifactStore`] writes (the same keys,
//! content types and SSE), so a reader on the API side cannot tell who wrote them:
//!
//! - `put_file` is one form POST of the file (streamed from disk, never read whole; S3 takes at
//!   most 5 GiB in one POST) to `runs/{tenant}/{run}/{name}`. The manifest's size and SHA-256 are
//!   of the bytes sent, hashed as they stream (the file is read once per attempt; the S3 store's
//!   upload helpers hash before sending, which a POST does not need). Unlike the single PutObject
//!   of [`S3ArtifactStore`], a POST carries no checksum, so S3 does not check the body against
//!   that hash; a file that changes length during the upload fails it. No multipart upload: one
//!   POST per file, up to the post's `max_bytes`.
//! - `append_log` is one form POST per batch to the chunk key of the S3 store's live logs (the
//!   `live` module: `live/{tenant}/{run}/{name}/{offset:020}.{epoch}`), with the same
//!   epochs: offset 0 starts a new epoch, later offsets keep the one this store began. The POST
//!   store cannot list, so it only appends to logs it began itself (at offset 0): an append at a
//!   nonzero offset to another log, or past the end it wrote, is refused with no request.
//! - `read_range` and `open` answer `Ok(None)`: a POST policy grants writes only, by design (the
//!   container has no business reading the bucket). `presigned_url` is `None` as well.
//!
//! A key outside the post's prefix, a file over its `max_bytes` or a post past its `expires_at`
//! is refused before any request. S3's refusals become [`ArtifactError::Backend`] carrying its
//! `<Code>` and `<Message>`. A 5xx answer or a failed connection is tried again, up to
//! [`ATTEMPTS`] times in all with a short pause between (a POST of the same key overwrites, so a
//! retry after a lost answer is harmless).

use super::live::{self, Cursor, Cursors};
use super::{object_key, xml_tag, S3ArtifactStore, S3StoreError, LOG_CONTENT_TYPE};
use async_trait::async_trait;
use aws_sdk_s3::config::{Credentials, ProvideCredentials};
use aws_sdk_s3::presigning::PresigningConfig;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use outpost_core::domain::Artifact;
use outpost_core::ports::artifacts::check_artifact_name;
use outpost_core::ports::{ArtifactBody, ArtifactError, ArtifactStore, LogChunk, RunKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The SigV4 algorithm name, in the form and in the policy.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The server-side encryption every upload asks for (SSE-S3).
pub const SSE: &str = "AES256";
/// Tries of one upload in all (the first and two retries) on a 5xx answer or a failed connection.
pub const ATTEMPTS: u32 = 3;
/// Pause before the first retry; the second waits twice as long.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Read size of a file streamed into a POST.
const READ_BUFFER: usize = 256 * 1024;

/// Why a presigned POST could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("a POST key prefix must end with '/', got {0:?}")]
    BadPrefix(String),
    #[error("a POST policy must live between one second and what a date can hold, got {0:?}")]
    BadExpiry(Duration),
    #[error("the SDK configuration has no credentials provider")]
    NoCredentials,
    #[error("the S3 client has no region")]
    NoRegion,
    #[error("the SDK's credentials could not be resolved: {0}")]
    Credentials(#[source] outpost_core::ports::BackendError),
    #[error("the signing credentials have expired")]
    CredentialsExpired,
    #[error("the bucket's POST URL could not be resolved: {0}")]
    Url(String),
    #[error("key {key:?} is outside the POST's prefix {prefix:?}")]
    OutsidePrefix { key: String, prefix: String },
    #[error("the POST for {prefix:?} expired at {expires_at}")]
    Expired { prefix: String, expires_at: DateTime<Utc> },
    #[error("{size} bytes exceed the POST's limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("live log {0:?} was not begun by this store (it cannot list the bucket): append from offset 0")]
    UnknownLog(String),
    #[error("S3 refused the POST of {key:?}: HTTP {status} {code}: {message}")]
    Rejected {
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the POST of {key:?} failed: {source}")]
    Http {
        key: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A signed POST policy: what an uploader needs to put objects under one prefix, and nothing
/// else (no credentials). Its `Debug` shows neither the policy, the signature nor the token.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct PresignedPost {
    /// Where to POST the form: `{endpoint}/{bucket}` (path style) with an endpoint override,
    /// otherwise `https://{bucket}.s3.{region}.amazonaws.com/`.
    pub url: String,
    /// Every form field to send before `key`, `Content-Type` and the file, in this order.
    pub fields: Vec<(String, String)>,
    /// Keys this post may write start with this (ends with `/`).
    pub key_prefix: String,
    /// The most bytes one object may have.
    pub max_bytes: u64,
    /// When S3 stops accepting it.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for PresignedPost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresignedPost")
            .field("url", &self.url)
            .field("key_prefix", &self.key_prefix)
            .field("max_bytes", &self.max_bytes)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl PresignedPost {
    /// The value of form field `name` (exact name), if the post has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Refuses `key` unless it is under this post's prefix.
    fn check_key(&self, key: &str) -> Result<(), PostError> {
        if key.starts_with(&self.key_prefix) && key.len() > self.key_prefix.len() {
            Ok(())
        } else {
            Err(PostError::OutsidePrefix {
                key: key.to_owned(),
                prefix: self.key_prefix.clone(),
            })
        }
    }

    /// Refuses once the post has expired (S3 would, after the upload was sent).
    fn check_fresh(&self) -> Result<(), PostError> {
        if Utc::now() < self.expires_at {
            Ok(())
        } else {
            Err(PostError::Expired {
                prefix: self.key_prefix.clone(),
                expires_at: self.expires_at,
            })
        }
    }
}

/// The prefix of a run's stored files, `runs/{tenant}/{run}/` (what [`object_key`] puts names under).
pub fn run_prefix(key: &RunKey) -> String {
    object_key(key, "")
}

/// The prefix of a run's live logs, `live/{tenant}/{run}/` (each log is a folder under it).
pub fn live_prefix(key: &RunKey) -> String {
    format!("{}{}/{}/", live::LIVE_PREFIX, key.tenant.as_str(), key.run.as_str())
}

/// The bucket's POST URL: path style `{endpoint}/{bucket}` with an endpoint override, otherwise
/// the virtual-hosted `https://{bucket}.s3.{region}.amazonaws.com/`.
pub fn post_url(endpoint: Option<&str>, bucket: &str, region: &str) -> String {
    match endpoint {
        Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        None => format!("https://{bucket}.s3.{region}.amazonaws.com/"),
    }
}

/// The hex SigV4 signature of a POST policy: HMAC-SHA256 of `policy_b64` (the base64 policy, as
/// sent) under the SigV4 signing key of `secret_key` for the date, `region` and `s3`, both from
/// the SDK's own signer (`aws-sigv4`). `date_yyyymmdd` is the credential scope's date
/// (`20240131`); `None` when it is not one.
pub fn post_signature(secret_key: &str, date_yyyymmdd: &str, region: &str, policy_b64: &str) -> Option<String> {
    let day = chrono::NaiveDate::parse_from_str(date_yyyymmdd, "%Y%m%d").ok()?;
    Some(signature_at(
        secret_key,
        day.and_time(chrono::NaiveTime::MIN).and_utc(),
        region,
        policy_b64,
    ))
}

/// [`post_signature`] for the date of `at`.
fn signature_at(secret_key: &str, at: DateTime<Utc>, region: &str, policy_b64: &str) -> String {
    let key = aws_sigv4::sign::v4::generate_signing_key(secret_key, at.into(), region, "s3");
    aws_sigv4::sign::v4::calculate_signature(key, policy_b64.as_bytes())
}

/// Signs a POST policy for keys under `key_prefix` in `bucket` (posted to `url`, see
/// [`post_url`]), objects of at most `max_bytes`, living `expires_in` from `now`. Pure: no
/// request, no clock (tests pass any `now`).
#[allow(clippy::too_many_arguments)] // every input of the policy, each named at the call
pub fn sign_post(
    access_key: &str,
    secret_key: &str,
    session_token: Option<&str>,
    region: &str,
    url: &str,
    bucket: &str,
    key_prefix: &str,
    expires_in: Duration,
    max_bytes: u64,
    now: DateTime<Utc>,
) -> Result<PresignedPost, PostError> {
    if !key_prefix.ends_with('/') {
        return Err(PostError::BadPrefix(key_prefix.to_owned()));
    }
    let expires_at = chrono::Duration::from_std(expires_in)
        .ok()
        .filter(|d| *d >= chrono::Duration::seconds(1))
        .and_then(|d| now.checked_add_signed(d))
        .ok_or(PostError::BadExpiry(expires_in))?;
    let date = now.format("%Y%m%d").to_string();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!("{access_key}/{date}/{region}/s3/aws4_request");

    let mut signed = vec![
        ("x-amz-algorithm".to_owned(), ALGORITHM.to_owned()),
        ("x-amz-credential".to_owned(), credential),
        ("x-amz-date".to_owned(), amz_date),
    ];
    if let Some(token) = session_token {
        signed.push(("x-amz-security-token".to_owned(), token.to_owned()));
    }
    signed.push(("x-amz-server-side-encryption".to_owned(), SSE.to_owned()));

    let mut conditions = vec![
        serde_json::json!({ "bucket": bucket }),
        serde_json::json!(["starts-with", "$key", key_prefix]),
        serde_json::json!(["content-length-range", 0, max_bytes]),
        serde_json::json!(["starts-with", "$Content-Type", ""]),
    ];
    conditions.extend(signed.iter().map(|(k, v)| serde_json::json!({ k.as_str(): v })));
    let policy = serde_json::json!({
        "expiration": expires_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "conditions": conditions,
    });
    let policy_b64 = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
    let signature = signature_at(secret_key, now, region, &policy_b64);

    let mut fields = signed;
    fields.push(("policy".to_owned(), policy_b64));
    fields.push(("x-amz-signature".to_owned(), signature));
    Ok(PresignedPost {
        url: url.to_owned(),
        fields,
        key_prefix: key_prefix.to_owned(),
        max_bytes,
        expires_at,
    })
}

fn backend(e: PostError) -> ArtifactError {
    ArtifactError::Backend(Box::new(e))
}

/// Where the spec of one attempt of a run is staged: `specs/{tenant}/{run}/{attempt}.json`,
/// outside `runs/` (never an artifact, never listed to the client) and expired by the bucket's
/// lifecycle rule for `specs/`.
pub fn spec_key(key: &RunKey, attempt: u32) -> String {
    format!("specs/{}/{}/{attempt}.json", key.tenant.as_str(), key.run.as_str())
}

impl S3ArtifactStore {
    /// Stores `body` (a run spec, JSON) at [`spec_key`] with SSE-S3 and returns a presigned GET
    /// of it living `expires_in`: the only thing a remote execution is handed. One PutObject; the
    /// presigning is local.
    pub async fn stage_spec(
        &self,
        key: &RunKey,
        attempt: u32,
        body: Vec<u8>,
        expires_in: Duration,
    ) -> Result<String, ArtifactError> {
        let object = spec_key(key, attempt);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .content_type("application/json")
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .body(body.into())
            .send()
            .await
            .map_err(super::sdk)?;
        let config = PresigningConfig::expires_in(expires_in).map_err(super::sdk)?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .presigned(config)
            .await
            .map_err(super::sdk)?;
        Ok(presigned.uri().to_owned())
    }

    /// A POST policy for keys under `prefix` (ends with `/`; see [`run_prefix`], [`live_prefix`])
    /// in this store's bucket, signed with `credentials` (the worker's own, see
    /// [`sdk_credentials`]) for the region of this store's client, for objects of at most
    /// `max_bytes`, living `expires_in` or until `credentials` expire, whichever is sooner.
    ///
    /// Local: nothing is sent to S3. The bucket's URL is the one the SDK resolves for this
    /// client (endpoint override and path style included): it is read off a presigned GetObject
    /// of a one-letter key, signed locally with the client's own credentials and never sent (the
    /// SDK's `Config` does not hand out its endpoint override).
    pub async fn presign_post(
        &self,
        credentials: &Credentials,
        prefix: &str,
        expires_in: Duration,
        max_bytes: u64,
    ) -> Result<PresignedPost, ArtifactError> {
        let region = self
            .client
            .config()
            .region()
            .ok_or(PostError::NoRegion)
            .map_err(backend)?
            .to_string();
        let config = PresigningConfig::expires_in(Duration::from_secs(60)).map_err(super::sdk)?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key("k")
            .presigned(config)
            .await
            .map_err(super::sdk)?;
        let url = bucket_url(presigned.uri()).map_err(backend)?;
        let now = Utc::now();
        let expires_in = match credentials.expiry() {
            Some(expiry) => {
                let left = expiry
                    .duration_since(std::time::SystemTime::from(now))
                    .map_err(|_| backend(PostError::CredentialsExpired))?;
                expires_in.min(left)
            }
            None => expires_in,
        };
        sign_post(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            credentials.session_token(),
            &region,
            &url,
            &self.bucket,
            prefix,
            expires_in,
            max_bytes,
            now,
        )
        .map_err(backend)
    }
}

/// The credentials of `sdk` (what its clients sign with), for [`S3ArtifactStore::presign_post`].
///
/// Cost: `SdkConfig`'s provider is not the clients' identity cache, so each call asks the
/// provider chain afresh (on ECS one request to the task's credentials endpoint; with static
/// keys nothing); call it once per run, not per upload.
pub async fn sdk_credentials(sdk: &aws_config::SdkConfig) -> Result<Credentials, PostError> {
    let provider = sdk.credentials_provider().ok_or(PostError::NoCredentials)?;
    provider
        .provide_credentials()
        .await
        .map_err(|e| PostError::Credentials(Box::new(e)))
}

/// `{scheme}://{host}/{bucket}` or `{scheme}://{bucket}.{host}/` from the URL of object `k`.
fn bucket_url(object_url: &str) -> Result<String, PostError> {
    let mut url = url::Url::parse(object_url).map_err(|e| PostError::Url(e.to_string()))?;
    url.set_query(None);
    url.set_fragment(None);
    if url.path_segments().and_then(|mut s| s.next_back()) != Some("k") {
        return Err(PostError::Url(format!("unexpected object URL shape {}", url.path())));
    }
    url.path_segments_mut()
        .map_err(|()| PostError::Url("a URL that cannot hold a path".to_owned()))?
        .pop();
    let text = url.to_string();
    Ok(if url.path() == "/" {
        text
    } else {
        text.trim_end_matches('/').to_owned()
    })
}

/// What one upload sends as its file part.
enum Upload<'a> {
    Bytes(Bytes),
    /// A file of `len` bytes, streamed; its size and SHA-256 are counted as it is sent.
    File {
        path: &'a Path,
        len: u64,
    },
}

/// Bytes and SHA-256 of what a streamed file part has sent.
#[derive(Default)]
struct Tally {
    hasher: Sha256,
    sent: u64,
}

impl Upload<'_> {
    /// The file part of one attempt (a fresh read of the file each time).
    async fn part(&self) -> Result<(reqwest::multipart::Part, Option<Arc<Mutex<Tally>>>), PostError> {
        match self {
            Upload::Bytes(data) => {
                let part = reqwest::multipart::Part::stream_with_length(data.clone(), data.len() as u64);
                Ok((part.file_name("upload"), None))
            }
            Upload::File { path, len } => {
                let file = tokio::fs::File::open(path).await.map_err(|source| PostError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let tally = Arc::new(Mutex::new(Tally::default()));
                let seen = tally.clone();
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(file.take(*len), READ_BUFFER).map(move |chunk| {
                        if let Ok(bytes) = &chunk {
                            let mut t = seen.lock().unwrap_or_else(PoisonError::into_inner);
                            t.hasher.update(bytes);
                            t.sent += bytes.len() as u64;
                        }
                        chunk
                    });
                let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), *len);
                Ok((part.file_name("upload"), Some(tally)))
            }
        }
    }
}

/// An `ArtifactStore` that can only write, through two presigned POSTs: `artifacts` for
/// `runs/{tenant}/{run}/` and `live` for `live/{tenant}/{run}/` (see the module docs).
#[derive(Debug, Clone)]
pub struct PostArtifactStore {
    artifacts: PresignedPost,
    live: PresignedPost,
    http: reqwest::Client,
    /// Where each live log this store began stands (it cannot list the bucket to find out).
    cursors: Cursors,
}

impl PostArtifactStore {
    /// A store writing with `artifacts` (made for [`run_prefix`]) and `live` (for
    /// [`live_prefix`]) over `http` (its timeouts are the caller's choice).
    pub fn new(artifacts: PresignedPost, live: PresignedPost, http: reqwest::Client) -> Self {
        Self {
            artifacts,
            live,
            http,
            cursors: Cursors::default(),
        }
    }

    /// One form POST of `upload` as `key` with `content_type`, tried up to [`ATTEMPTS`] times;
    /// for a streamed file, the size and SHA-256 of what the successful attempt sent.
    async fn post(
        &self,
        post: &PresignedPost,
        key: &str,
        content_type: &str,
        upload: &Upload<'_>,
    ) -> Result<Option<(u64, [u8; 32])>, PostError> {
        let mut attempt = 1;
        loop {
            let (part, tally) = upload.part().await?;
            let mut form = reqwest::multipart::Form::new();
            for (name, value) in &post.fields {
                form = form.text(name.clone(), value.clone());
            }
            let form = form
                .text("key", key.to_owned())
                .text("Content-Type", content_type.to_owned())
                .part("file", part);
            let failure = match self.http.post(&post.url).multipart(form).send().await {
                Ok(res) if res.status().is_success() => {
                    return Ok(tally.map(|t| {
                        let t = std::mem::take(&mut *t.lock().unwrap_or_else(PoisonError::into_inner));
                        (t.sent, t.hasher.finalize().into())
                    }));
                }
                Ok(res) => {
                    let status = res.status().as_u16();
                    let body = res.text().await.unwrap_or_default();
                    let rejected = PostError::Rejected {
                        key: key.to_owned(),
                        status,
                        code: xml_tag(&body, "Code").unwrap_or("(none)").to_owned(),
                        message: xml_tag(&body, "Message").unwrap_or("(none)").to_owned(),
                    };
                    if status < 500 {
                        return Err(rejected);
                    }
                    rejected
                }
                Err(source) if source.is_builder() => {
                    return Err(PostError::Http {
                        key: key.to_owned(),
                        source,
                    })
                }
                Err(source) => PostError::Http {
                    key: key.to_owned(),
                    source,
                },
            };
            if attempt >= ATTEMPTS {
                return Err(failure);
            }
            tracing::debug!(key, attempt, error = %failure, "presigned POST failed; trying again");
            tokio::time::sleep(RETRY_PAUSE * attempt).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl ArtifactStore for PostArtifactStore {
    async fn put_file(
        &self,
        key: &RunKey,
        name: &str,
        src: &Path,
        content_type: &str,
    ) -> Result<Artifact, ArtifactError> {
        check_artifact_name(name)?;
        let object = object_key(key, name);
        self.artifacts.check_key(&object).map_err(backend)?;
        let meta = tokio::fs::metadata(src).await.map_err(|source| {
            backend(PostError::Io {
                path: src.to_owned(),
                source,
            })
        })?;
        if !meta.is_file() {
            return Err(ArtifactError::Backend(Box::new(S3StoreError::NotAFile(src.to_owned()))));
        }
        let len = meta.len();
        if len > self.artifacts.max_bytes {
            return Err(backend(PostError::TooLarge {
                size: len,
                max: self.artifacts.max_bytes,
            }));
        }
        self.artifacts.check_fresh().map_err(backend)?;
        let upload = Upload::File { path: src, len };
        let sent = self
            .post(&self.artifacts, &object, content_type, &upload)
            .await
            .map_err(backend)?;
        let Some((size, digest)) = sent.filter(|(size, _)| *size == len) else {
            return Err(ArtifactError::Backend(Box::new(S3StoreError::FileChanged(
                src.to_owned(),
            ))));
        };
        // The final object replaces the live log, as in the S3 store.
        self.cursors.forget(&live::log_prefix(key, name));
        Ok(Artifact {
            name: name.to_owned(),
            size,
            sha256: hex::encode(digest),
            content_type: content_type.to_owned(),
        })
    }

    async fn append_log(&self, key: &RunKey, name: &str, offset: u64, data: &[u8]) -> Result<(), ArtifactError> {
        check_artifact_name(name)?;
        let prefix = live::log_prefix(key, name);
        self.live.check_key(&prefix).map_err(backend)?;
        let epoch = if offset == 0 {
            // Offset 0 starts the log afresh (a new attempt): a new epoch hides the old chunks.
            live::new_epoch()
        } else {
            let Some(Cursor { epoch, end }) = self.cursors.get(&prefix) else {
                return Err(backend(PostError::UnknownLog(prefix)));
            };
            if offset > end {
                return Err(ArtifactError::Backend(Box::new(S3StoreError::PastTheEnd {
                    offset,
                    end,
                })));
            }
            if data.is_empty() {
                return Ok(());
            }
            epoch
        };
        let len = data.len() as u64;
        if len > self.live.max_bytes {
            return Err(backend(PostError::TooLarge {
                size: len,
                max: self.live.max_bytes,
            }));
        }
        self.live.check_fresh().map_err(backend)?;
        let chunk = live::chunk_key(&prefix, offset, &epoch);
        let upload = Upload::Bytes(Bytes::copy_from_slice(data));
        self.post(&self.live, &chunk, LOG_CONTENT_TYPE, &upload)
            .await
            .map_err(backend)?;
        self.cursors.advance(&prefix, epoch, offset, offset + len);
        Ok(())
    }

    /// Always `None`: a POST policy cannot read (the API reads with [`S3ArtifactStore`]).
    async fn read_range(
        &self,
        key: &RunKey,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Option<LogChunk>, ArtifactError> {
        let _ = (key, offset, max_len);
        check_artifact_name(name)?;
        Ok(None)
    }

    /// Always `None`: a POST policy cannot read.
    async fn open(&self, key: &RunKey, name: &str) -> Result<Option<ArtifactBody>, ArtifactError> {
        let _ = key;
        check_artifact_name(name)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_core::{RunId, TenantId};

    const NOW: &str = "2024-01-31T23:59:30Z";

    fn now() -> DateTime<Utc> {
        NOW.parse().expect("a date")
    }

    fn run() -> RunKey {
        RunKey {
            tenant: "acme".parse::<TenantId>().expect("tenant"),
            run: RunId::generate(),
        }
    }

    fn policy_of(post: &PresignedPost) -> serde_json::Value {
        let b64 = post.field("policy").expect("policy");
        let json = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
        serde_json::from_slice(&json).expect("json")
    }

    #[test]
    fn the_signature_is_the_documented_key_derivation() {
        // The derivation S3's POST documentation gives, written out with HMAC-SHA256:
        // HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), "s3"), "aws4_request").
        fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let policy = "eyJleHBpcmF0aW9uIjogIjIwMTUtMTItMzBUMTI6MDA6MDAuMDAwWiJ9";
        let key = ["20151229", "us-east-1", "s3", "aws4_request"]
            .iter()
            .fold(format!("AWS4{secret}").into_bytes(), |k, part| {
                hmac(&k, part.as_bytes())
            });
        let want = hex::encode(hmac(&key, policy.as_bytes()));
        assert_eq!(
            post_signature(secret, "20151229", "us-east-1", policy),
            Some(want.clone())
        );
        assert_ne!(post_signature(secret, "20151230", "us-east-1", policy), Some(want));
        assert_eq!(post_signature(secret, "2015-12-29", "us-east-1", policy), None);
    }

    #[test]
    fn the_policy_holds_every_condition_and_the_fields_match_it() {
        let post = sign_post(
            "AKID",
            "secret",
            Some("token"),
            "eu-west-1",
            "https://b.s3.eu-west-1.amazonaws.com/",
            "b",
            "runs/acme/r1/",
            Duration::from_secs(600),
            1000,
            now(),
        )
        .expect("signed");
        assert_eq!(
            post.expires_at,
            "2024-02-01T00:09:30Z".parse::<DateTime<Utc>>().expect("date")
        );
        assert_eq!(post.field("x-amz-algorithm"), Some(ALGORITHM));
        assert_eq!(
            post.field("x-amz-credential"),
            Some("AKID/20240131/eu-west-1/s3/aws4_request")
        );
        assert_eq!(post.field("x-amz-date"), Some("20240131T235930Z"));
        assert_eq!(post.field("x-amz-security-token"), Some("token"));
        assert_eq!(post.field("x-amz-server-side-encryption"), Some(SSE));
        let policy = policy_of(&post);
        assert_eq!(policy["expiration"], "2024-02-01T00:09:30.000Z");
        let want = serde_json::json!([
            {"bucket": "b"},
            ["starts-with", "$key", "runs/acme/r1/"],
            ["content-length-range", 0, 1000],
            ["starts-with", "$Content-Type", ""],
            {"x-amz-algorithm": ALGORITHM},
            {"x-amz-credential": "AKID/20240131/eu-west-1/s3/aws4_request"},
            {"x-amz-date": "20240131T235930Z"},
            {"x-amz-security-token": "token"},
            {"x-amz-server-side-encryption": SSE},
        ]);
        assert_eq!(policy["conditions"], want);
        let signature =
            post_signature("secret", "20240131", "eu-west-1", post.field("policy").expect("policy")).expect("a date");
        assert_eq!(post.field("x-amz-signature"), Some(signature.as_str()));

        let plain = sign_post(
            "AKID",
            "secret",
            None,
            "r",
            "u",
            "b",
            "p/",
            Duration::from_secs(1),
            0,
            now(),
        )
        .expect("signed");
        assert_eq!(plain.field("x-amz-security-token"), None);
        assert!(!policy_of(&plain).to_string().contains("security-token"));
    }

    #[test]
    fn prefixes_and_lifetimes_are_checked() {
        let sign = |prefix: &str, expires_in| sign_post("a", "s", None, "r", "u", "b", prefix, expires_in, 1, now());
        assert!(matches!(
            sign("runs/acme/r1", Duration::from_secs(60)),
            Err(PostError::BadPrefix(_))
        ));
        assert!(matches!(
            sign("", Duration::from_secs(60)),
            Err(PostError::BadPrefix(_))
        ));
        assert!(matches!(sign("p/", Duration::ZERO), Err(PostError::BadExpiry(_))));
        assert!(matches!(sign("p/", Duration::MAX), Err(PostError::BadExpiry(_))));
    }

    #[test]
    fn debug_hides_the_secrets() {
        let post = sign_post(
            "AKID",
            "secret",
            Some("tok3n"),
            "r",
            "u",
            "b",
            "p/",
            Duration::from_secs(60),
            5,
            now(),
        )
        .expect("signed");
        let shown = format!("{post:?}");
        assert!(
            shown.contains("key_prefix: \"p/\"") && shown.contains("max_bytes: 5"),
            "{shown}"
        );
        for secret in [
            post.field("policy").expect("policy"),
            post.field("x-amz-signature").expect("signature"),
            "tok3n",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn prefixes_are_the_stores_own() {
        let k = run();
        let prefix = run_prefix(&k);
        assert_eq!(prefix, format!("runs/acme/{}/", k.run.as_str()));
        assert!(object_key(&k, "output.log").starts_with(&prefix));
        let live = live_prefix(&k);
        assert_eq!(live, format!("live/acme/{}/", k.run.as_str()));
        assert!(live::log_prefix(&k, "output.log").starts_with(&live));
    }

    #[test]
    fn urls_are_path_or_virtual_hosted_style() {
        assert_eq!(
            post_url(Some("http://127.0.0.1:5000/"), "b", "r"),
            "http://127.0.0.1:5000/b"
        );
        assert_eq!(
            post_url(None, "b", "eu-west-1"),
            "https://b.s3.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            bucket_url("http://127.0.0.1:5000/b/k?X-Amz-Signature=1").expect("url"),
            "http://127.0.0.1:5000/b"
        );
        assert_eq!(
            bucket_url("https://b.s3.eu-west-1.amazonaws.com/k?X-Amz-Signature=1").expect("url"),
            "https://b.s3.eu-west-1.amazonaws.com/"
        );
        assert!(bucket_url("https://b.s3.amazonaws.com/other").is_err());
    }

    #[test]
    fn keys_outside_the_prefix_are_refused() {
        let post = sign_post(
            "a",
            "s",
            None,
            "r",
            "u",
            "b",
            "runs/acme/r1/",
            Duration::from_secs(60),
            1,
            now(),
        )
        .expect("signed");
        assert!(post.check_key("runs/acme/r1/output.log").is_ok());
        for key in ["runs/acme/r10/x", "runs/acme/r1/", "live/acme/r1/x", "runs/acme/r1"] {
            assert!(
                matches!(post.check_key(key), Err(PostError::OutsidePrefix { .. })),
                "{key}"
            );
        }
        assert!(
            matches!(post.check_fresh(), Err(PostError::Expired { .. })),
            "signed in the past"
        );
    }

    #[test]
    fn s3_errors_are_read() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Invalid according to Policy: \
                    Policy expired.</Message></Error>";
        assert_eq!(xml_tag(body, "Code"), Some("AccessDenied"));
        assert_eq!(
            xml_tag(body, "Message"),
            Some("Invalid according to Policy: Policy expired.")
        );
        assert_eq!(xml_tag("oops", "Code"), None);
    }
}
