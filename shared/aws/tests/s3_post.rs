//! Presigned POST uploads (`outpost_aws::s3::post`) against moto server: what the POST store
//! writes is what the S3 store reads (keys, content types, live-log chunks), signing is local,
//! and what the POST store refuses it refuses before any request. Moto checks no POST policy
//! (the fault layer's tests in outpost-testkit do), so these prove the objects, not the policy.
//! Retries and S3's error answers are checked against a small local stand-in.
//!
//! Needs `OUTPOST_TEST_AWS_ENDPOINT` (see `outpost_testkit::aws`).

use aws_sdk_s3::config::Credentials;
use futures_util::TryStreamExt;
use outpost_aws::s3::post::{
    live_prefix, run_prefix, sdk_credentials, sign_post, PostArtifactStore, PostError, PresignedPost, ATTEMPTS,
};
use outpost_aws::s3::{object_key, S3ArtifactStore, LOG_CONTENT_TYPE};
use outpost_aws::{AwsClients, RequestCounter};
use outpost_core::ports::{ArtifactError, ArtifactStore, RunKey};
use outpost_core::{RunId, TenantId};
use outpost_testkit::aws::{emulator_endpoint, emulator_sdk_config};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const MAX_BYTES: u64 = 1024 * 1024;

/// A store on a fresh bucket, its clients, and the counter of their requests (reset after setup).
async fn fresh() -> (S3ArtifactStore, AwsClients, RequestCounter) {
    outpost_testkit::aws::fresh_s3_store("post").await
}

fn run(tenant: &str) -> RunKey {
    RunKey {
        tenant: tenant.parse::<TenantId>().expect("tenant"),
        run: RunId::generate(),
    }
}

/// The emulator's credentials, read as the worker reads its own.
async fn credentials() -> Credentials {
    sdk_credentials(&emulator_sdk_config(&emulator_endpoint()).await)
        .await
        .expect("credentials")
}

/// The POST store of run `k`, signed by `s3` with the emulator's credentials.
async fn post_store(s3: &S3ArtifactStore, k: &RunKey) -> PostArtifactStore {
    let creds = credentials().await;
    let ttl = Duration::from_secs(600);
    let artifacts = s3
        .presign_post(&creds, &run_prefix(k), ttl, MAX_BYTES)
        .await
        .expect("presign artifacts");
    let live = s3
        .presign_post(&creds, &live_prefix(k), ttl, MAX_BYTES)
        .await
        .expect("presign live");
    PostArtifactStore::new(artifacts, live, reqwest::Client::new())
}

fn temp_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("src");
    std::fs::write(&path, content).expect("write");
    (dir, path)
}

/// Incompressible, not UTF-8.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn read_all(store: &S3ArtifactStore, k: &RunKey, name: &str) -> (u64, String, Vec<u8>) {
    let body = store.open(k, name).await.expect("open").expect("stored");
    let chunks: Vec<bytes::Bytes> = body.stream.try_collect().await.expect("stream");
    (body.size, body.content_type, chunks.concat())
}

/// The `PostError` inside an artifact error (panics when it is something else).
fn post_error(e: &ArtifactError) -> &PostError {
    match e {
        ArtifactError::Backend(inner) => inner
            .downcast_ref::<PostError>()
            .unwrap_or_else(|| panic!("not a PostError: {e}")),
        other => panic!("not a backend error: {other}"),
    }
}

#[tokio::test]
async fn a_posted_file_reads_back_through_the_s3_store() {
    let (s3, _clients, counter) = fresh().await;
    let k = run("acme");
    let post = post_store(&s3, &k).await;
    // Signing is local: the two presign_post calls sent nothing to S3.
    assert!(counter.snapshot().is_empty(), "{:?}", counter.snapshot());

    let content = noise(300 * 1024 + 7);
    let (_dir, path) = temp_file(&content);
    let artifact = post
        .put_file(&k, "out/result.bin", &path, "application/x-test")
        .await
        .expect("posted");
    assert_eq!(artifact.name, "out/result.bin");
    assert_eq!(artifact.size, content.len() as u64);
    assert_eq!(artifact.sha256, hex::encode(Sha256::digest(&content)));
    assert_eq!(artifact.content_type, "application/x-test");

    // The S3 store finds it under its own key, with the same bytes and content type.
    let (size, content_type, data) = read_all(&s3, &k, "out/result.bin").await;
    assert_eq!(size, content.len() as u64);
    assert_eq!(content_type, "application/x-test");
    assert_eq!(hex::encode(Sha256::digest(&data)), artifact.sha256);
    let chunk = s3
        .read_range(&k, "out/result.bin", 1000, 24)
        .await
        .expect("range")
        .expect("stored");
    assert_eq!(&chunk.data[..], &content[1000..1024]);
    assert_eq!(chunk.size, content.len() as u64);

    // The POST store cannot read, by design.
    assert!(post
        .read_range(&k, "out/result.bin", 0, 10)
        .await
        .expect("read")
        .is_none());
    assert!(post.open(&k, "out/result.bin").await.expect("open").is_none());
    assert!(post
        .presigned_url(&k, "out/result.bin", Duration::ZERO)
        .await
        .expect("presign")
        .is_none());

    // An empty file is an object too.
    let (_dir, empty) = temp_file(b"");
    let artifact = post
        .put_file(&k, "empty.txt", &empty, "text/plain")
        .await
        .expect("posted");
    assert_eq!(
        (artifact.size, artifact.sha256.as_str()),
        (0, hex::encode(Sha256::digest(b"")).as_str())
    );
    let (size, content_type, _) = read_all(&s3, &k, "empty.txt").await;
    assert_eq!((size, content_type.as_str()), (0, "text/plain"));
}

#[tokio::test]
async fn the_post_is_path_style_on_an_endpoint_and_carries_sse() {
    let (s3, _clients, _) = fresh().await;
    let k = run("acme");
    let creds = credentials().await;
    let post = s3
        .presign_post(&creds, &run_prefix(&k), Duration::from_secs(60), 5)
        .await
        .expect("presign");
    assert_eq!(
        post.url,
        format!("{}/{}", emulator_endpoint().trim_end_matches('/'), s3.bucket())
    );
    assert_eq!(post.key_prefix, run_prefix(&k));
    assert_eq!(post.max_bytes, 5);
    assert_eq!(post.field("x-amz-server-side-encryption"), Some("AES256"));
    assert!(post
        .field("x-amz-credential")
        .is_some_and(|c| c.starts_with("testing/")));
    // Travels as JSON inside a run spec and comes back the same.
    let json = serde_json::to_string(&post).expect("json");
    assert_eq!(serde_json::from_str::<PresignedPost>(&json).expect("parse"), post);
}

#[tokio::test]
async fn temporary_credentials_bound_the_lifetime() {
    let (s3, _clients, _) = fresh().await;
    let k = run("acme");
    let soon = SystemTime::now() + Duration::from_secs(120);
    let creds = Credentials::new("AKID", "secret", Some("token".into()), Some(soon), "test");
    let post = s3
        .presign_post(&creds, &run_prefix(&k), Duration::from_secs(3600), 5)
        .await
        .expect("presign");
    assert!(
        post.expires_at <= chrono::DateTime::<chrono::Utc>::from(soon),
        "{post:?}"
    );
    assert_eq!(post.field("x-amz-security-token"), Some("token"));
    assert!(post.field("x-amz-credential").is_some_and(|c| c.starts_with("AKID/")));

    let gone = Credentials::new(
        "AKID",
        "secret",
        Some("token".into()),
        Some(SystemTime::UNIX_EPOCH),
        "test",
    );
    let e = s3
        .presign_post(&gone, &run_prefix(&k), Duration::from_secs(60), 5)
        .await
        .expect_err("expired credentials");
    assert!(matches!(post_error(&e), PostError::CredentialsExpired), "{e}");
    let e = s3
        .presign_post(&creds, "runs/no-slash", Duration::from_secs(60), 5)
        .await
        .expect_err("bad prefix");
    assert!(matches!(post_error(&e), PostError::BadPrefix(_)), "{e}");
}

#[tokio::test]
async fn posted_log_chunks_read_back_as_one_live_log() {
    let (s3, clients, _) = fresh().await;
    let k = run("acme");
    let post = post_store(&s3, &k).await;
    post.append_log(&k, "output.log", 0, b"hello ").await.expect("append 0");
    post.append_log(&k, "output.log", 6, b"world\n")
        .await
        .expect("append 6");
    // A retry from inside the last batch, and an empty append, are harmless.
    post.append_log(&k, "output.log", 6, b"world\n").await.expect("retry 6");
    post.append_log(&k, "output.log", 12, b"").await.expect("empty");

    let chunk = s3
        .read_range(&k, "output.log", 0, 100)
        .await
        .expect("read")
        .expect("live");
    assert_eq!(&chunk.data[..], b"hello world\n");
    assert_eq!((chunk.next_offset, chunk.size), (12, 12));
    let (size, content_type, data) = read_all(&s3, &k, "output.log").await;
    assert_eq!(
        (size, content_type.as_str(), &data[..]),
        (12, LOG_CONTENT_TYPE, &b"hello world\n"[..])
    );

    // The chunks are the S3 store's own objects: under the run's live prefix, as text.
    let listed = clients
        .s3
        .list_objects_v2()
        .bucket(s3.bucket())
        .prefix(live_prefix(&k))
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let head = clients
        .s3
        .head_object()
        .bucket(s3.bucket())
        .key(keys[0])
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_type(), Some(LOG_CONTENT_TYPE));

    // The S3 store carries on the log the POST store began, and a new attempt (offset 0) hides
    // both: the epochs are shared.
    s3.append_log(&k, "output.log", 12, b"more\n").await.expect("s3 append");
    let chunk = s3
        .read_range(&k, "output.log", 0, 100)
        .await
        .expect("read")
        .expect("live");
    assert_eq!(&chunk.data[..], b"hello world\nmore\n");
    post.append_log(&k, "output.log", 0, b"again\n")
        .await
        .expect("new attempt");
    let chunk = s3
        .read_range(&k, "output.log", 0, 100)
        .await
        .expect("read")
        .expect("live");
    assert_eq!(&chunk.data[..], b"again\n");

    // The final file wins over the live chunks, as with the S3 store.
    let (_dir, path) = temp_file(b"final\n");
    post.put_file(&k, "output.log", &path, LOG_CONTENT_TYPE)
        .await
        .expect("final");
    let (_, _, data) = read_all(&s3, &k, "output.log").await;
    assert_eq!(&data[..], b"final\n");
}

#[tokio::test]
async fn appends_the_post_store_cannot_place_are_refused_locally() {
    let (s3, _clients, _) = fresh().await;
    let k = run("acme");
    let post = post_store(&s3, &k).await;
    // Not begun by this store: it cannot list to find the epoch.
    let e = post
        .append_log(&k, "other.log", 5, b"x")
        .await
        .expect_err("unknown log");
    assert!(matches!(post_error(&e), PostError::UnknownLog(_)), "{e}");
    post.append_log(&k, "a.log", 0, b"abc").await.expect("append");
    let e = post.append_log(&k, "a.log", 4, b"x").await.expect_err("gap");
    assert!(e.to_string().contains("past its end"), "{e}");
    let e = post
        .append_log(&k, "a.log", 3, &vec![b'x'; MAX_BYTES as usize + 1])
        .await
        .expect_err("too large");
    assert!(matches!(post_error(&e), PostError::TooLarge { .. }), "{e}");
    let chunk = s3.read_range(&k, "a.log", 0, 100).await.expect("read").expect("live");
    assert_eq!(&chunk.data[..], b"abc");
    assert!(s3.read_range(&k, "other.log", 0, 100).await.expect("read").is_none());
}

#[tokio::test]
async fn keys_outside_the_prefix_sizes_over_the_limit_and_expired_posts_are_refused_locally() {
    let (s3, _clients, _) = fresh().await;
    let mine = run("acme");
    let other = run("acme");
    let post = post_store(&s3, &mine).await;
    let (_dir, path) = temp_file(b"data");

    let e = post
        .put_file(&other, "result.md", &path, "text/markdown")
        .await
        .expect_err("another run's prefix");
    assert!(matches!(post_error(&e), PostError::OutsidePrefix { .. }), "{e}");
    let e = post
        .append_log(&other, "output.log", 0, b"x")
        .await
        .expect_err("another run's live prefix");
    assert!(matches!(post_error(&e), PostError::OutsidePrefix { .. }), "{e}");
    // Nothing reached the bucket for the other run.
    assert!(s3.read_range(&other, "result.md", 0, 10).await.expect("read").is_none());
    assert!(s3
        .read_range(&other, "output.log", 0, 10)
        .await
        .expect("read")
        .is_none());

    let big = noise(MAX_BYTES as usize + 1);
    let (_dir2, big_path) = temp_file(&big);
    let e = post
        .put_file(&mine, "big.bin", &big_path, "application/octet-stream")
        .await
        .expect_err("too large");
    assert!(matches!(post_error(&e), PostError::TooLarge { .. }), "{e}");
    assert!(s3.read_range(&mine, "big.bin", 0, 10).await.expect("read").is_none());

    // A post signed long ago, pointed at a port nothing answers on: refused before any request
    // (a request would fail with a connection error instead).
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    let stale = |prefix: String| {
        sign_post(
            "testing",
            "testing",
            None,
            "us-east-1",
            "http://127.0.0.1:9/nowhere",
            "nowhere",
            &prefix,
            Duration::from_secs(60),
            MAX_BYTES,
            long_ago,
        )
        .expect("signed")
    };
    let expired = PostArtifactStore::new(
        stale(run_prefix(&mine)),
        stale(live_prefix(&mine)),
        reqwest::Client::new(),
    );
    let e = expired
        .put_file(&mine, "late.txt", &path, "text/plain")
        .await
        .expect_err("expired");
    assert!(matches!(post_error(&e), PostError::Expired { .. }), "{e}");
    let e = expired
        .append_log(&mine, "late.log", 0, b"x")
        .await
        .expect_err("expired");
    assert!(matches!(post_error(&e), PostError::Expired { .. }), "{e}");
    // Names are checked as every store checks them.
    let e = post
        .put_file(&mine, "../x", &path, "text/plain")
        .await
        .expect_err("bad name");
    assert!(matches!(e, ArtifactError::BadName(_)), "{e}");
    // The prefix on the bucket holds nothing but what was allowed.
    assert!(object_key(&other, "result.md").starts_with(&run_prefix(&other)));
}

/// A stand-in for S3 that answers the first `fail` POSTs with `status` and `body`, then 204;
/// counts every POST. Its URL and the counter.
async fn stand_in(fail: u64, status: u16, body: &'static str) -> (String, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    let app = axum::Router::new().route(
        "/b",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let count = count.clone();
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= fail {
                    let status = axum::http::StatusCode::from_u16(status).expect("status");
                    (status, body.to_owned())
                } else {
                    (axum::http::StatusCode::NO_CONTENT, String::new())
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/b"), seen)
}

fn store_for(url: &str, k: &RunKey) -> PostArtifactStore {
    let sign = |prefix: String| {
        sign_post(
            "AKID",
            "secret",
            None,
            "us-east-1",
            url,
            "b",
            &prefix,
            Duration::from_secs(600),
            MAX_BYTES,
            chrono::Utc::now(),
        )
        .expect("signed")
    };
    PostArtifactStore::new(sign(run_prefix(k)), sign(live_prefix(k)), reqwest::Client::new())
}

const INTERNAL: &str = "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>We encountered an internal \
                        error.</Message></Error>";
const DENIED: &str = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Invalid according to Policy: \
                      Policy expired.</Message></Error>";

#[tokio::test]
async fn server_errors_are_tried_again_up_to_three_times() {
    let k = run("acme");
    let (_dir, path) = temp_file(b"retried file");

    let (url, seen) = stand_in(u64::from(ATTEMPTS) - 1, 503, INTERNAL).await;
    let post = store_for(&url, &k);
    let artifact = post
        .put_file(&k, "a.txt", &path, "text/plain")
        .await
        .expect("third try");
    assert_eq!(seen.load(Ordering::SeqCst), u64::from(ATTEMPTS));
    // The streamed file is read afresh on each try: the manifest is of the file, not of a partial.
    assert_eq!(artifact.sha256, hex::encode(Sha256::digest(b"retried file")));
    assert_eq!(artifact.size, 12);

    let (url, seen) = stand_in(u64::from(ATTEMPTS), 500, INTERNAL).await;
    let post = store_for(&url, &k);
    let e = post.append_log(&k, "o.log", 0, b"x").await.expect_err("three failures");
    assert_eq!(seen.load(Ordering::SeqCst), u64::from(ATTEMPTS));
    match post_error(&e) {
        PostError::Rejected {
            status, code, message, ..
        } => {
            assert_eq!((*status, code.as_str()), (500, "InternalError"));
            assert_eq!(message, "We encountered an internal error.");
        }
        other => panic!("{other}"),
    }

    // Nothing answers: a connection error, tried three times, then reported.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let post = store_for(&format!("http://{dead}/b"), &k);
    let e = post
        .put_file(&k, "a.txt", &path, "text/plain")
        .await
        .expect_err("no server");
    assert!(matches!(post_error(&e), PostError::Http { .. }), "{e}");
}

#[tokio::test]
async fn a_refusal_is_not_tried_again_and_names_s3s_code_and_message() {
    let k = run("acme");
    let (url, seen) = stand_in(u64::MAX, 403, DENIED).await;
    let post = store_for(&url, &k);
    let (_dir, path) = temp_file(b"x");
    let e = post
        .put_file(&k, "a.txt", &path, "text/plain")
        .await
        .expect_err("refused");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let shown = e.to_string();
    assert!(
        shown.contains("AccessDenied") && shown.contains("Invalid according to Policy: Policy expired."),
        "{shown}"
    );
    match post_error(&e) {
        PostError::Rejected { status, code, .. } => assert_eq!((*status, code.as_str()), (403, "AccessDenied")),
        other => panic!("{other}"),
    }
}
