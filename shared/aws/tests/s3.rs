//! The S3 artifact store against moto server, for what the port contract cannot see: the
//! bucket's configuration, encryption of every object, multipart uploads, the requests each call
//! makes, live-log chunks, and presigned URLs served over plain HTTP.
//!
//! Needs `OUTPOST_TEST_AWS_ENDPOINT` (see `outpost_aws::testing`).

use futures_util::TryStreamExt;
use outpost_aws::s3::{create_bucket, object_key, S3ArtifactStore};
use outpost_aws::{AwsClients, RequestCounter};
use outpost_core::ports::{ArtifactError, ArtifactStore, RunKey};
use outpost_core::{RunId, TenantId};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A store on a fresh bucket, its clients, and the counter of their requests (reset after setup).
async fn fresh() -> (S3ArtifactStore, AwsClients, RequestCounter) {
    outpost_testkit::aws::fresh_s3_store("s3").await
}

fn key(tenant: &str) -> RunKey {
    RunKey {
        tenant: tenant.parse::<TenantId>().expect("tenant"),
        run: RunId::generate(),
    }
}

fn temp_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("src");
    std::fs::write(&path, content).expect("write");
    (dir, path)
}

/// Requests by operation name.
fn ops(counter: &RequestCounter) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((_, op), n) in counter.snapshot() {
        *out.entry(op).or_default() += n;
    }
    out
}

fn expect_ops(counter: &RequestCounter, want: &[(&str, u64)]) {
    let want: BTreeMap<String, u64> = want.iter().map(|(op, n)| (op.to_string(), *n)).collect();
    assert_eq!(ops(counter), want);
    counter.reset();
}

async fn read_all(store: &S3ArtifactStore, k: &RunKey, name: &str) -> (u64, String, Vec<u8>) {
    let body = store.open(k, name).await.expect("open").expect("stored");
    let chunks: Vec<bytes::Bytes> = body.stream.try_collect().await.expect("stream");
    (body.size, body.content_type, chunks.concat())
}

/// Incompressible noise.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn bucket_is_encrypted_private_and_expires_live_chunks() {
    let (store, clients, _) = fresh().await;
    let s3 = &clients.s3;
    let bucket = store.bucket();

    let enc = s3
        .get_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .expect("encryption");
    let rules = enc
        .server_side_encryption_configuration()
        .expect("configuration")
        .rules();
    let algorithm = rules
        .first()
        .and_then(|r| r.apply_server_side_encryption_by_default())
        .map(|d| d.sse_algorithm().clone());
    assert_eq!(algorithm, Some(aws_sdk_s3::types::ServerSideEncryption::Aes256));

    let lifecycle = s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
        .expect("lifecycle");
    let live = lifecycle
        .rules()
        .iter()
        .find(|r| r.filter().and_then(|f| f.prefix()) == Some("live/"))
        .expect("a rule for live/");
    assert_eq!(live.expiration().and_then(|e| e.days()), Some(2));
    assert_eq!(live.status(), &aws_sdk_s3::types::ExpirationStatus::Enabled);
    let abort = lifecycle
        .rules()
        .iter()
        .find_map(|r| r.abort_incomplete_multipart_upload())
        .expect("an abort rule");
    assert_eq!(abort.days_after_initiation(), Some(1));

    let block = s3
        .get_public_access_block()
        .bucket(bucket)
        .send()
        .await
        .expect("public access block");
    let block = block.public_access_block_configuration().expect("configuration");
    assert_eq!(
        (
            block.block_public_acls(),
            block.ignore_public_acls(),
            block.block_public_policy(),
            block.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );

    // Creating it again is fine (provisioning is rerun).
    create_bucket(s3, bucket).await.expect("create again");
}

#[tokio::test]
async fn a_small_file_is_one_put_object_and_every_object_is_encrypted() {
    let (store, clients, counter) = fresh().await;
    let k = key("acme");
    let (_dir, src) = temp_file(br#"{"ok":true}"#);
    let a = store
        .put_file(&k, "summary.json", &src, "application/json")
        .await
        .expect("put");
    assert_eq!(a.size, 11);
    expect_ops(&counter, &[("PutObject", 1)]);

    store.append_log(&k, "output.log", 0, b"hello ").await.expect("append");
    store.append_log(&k, "output.log", 6, b"world\n").await.expect("append");
    expect_ops(&counter, &[("PutObject", 2)]);

    // A whole small file or a range of it: one GetObject.
    let chunk = store
        .read_range(&k, "summary.json", 2, 4)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (&chunk.data[..], chunk.next_offset, chunk.size),
        (&br#"ok":"#[..], 6, 11)
    );
    expect_ops(&counter, &[("GetObject", 1)]);

    let head = clients
        .s3
        .head_object()
        .bucket(store.bucket())
        .key(object_key(&k, "summary.json"))
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    assert_eq!(head.content_type(), Some("application/json"));

    let listed = clients
        .s3
        .list_objects_v2()
        .bucket(store.bucket())
        .prefix("live/")
        .send()
        .await
        .expect("list");
    let chunk_keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(chunk_keys.len(), 2, "one object per append: {chunk_keys:?}");
    for chunk_key in chunk_keys {
        let prefix = format!("live/acme/{}/output.log/", k.run.as_str());
        assert!(chunk_key.starts_with(&prefix), "{chunk_key}");
        let head = clients
            .s3
            .head_object()
            .bucket(store.bucket())
            .key(chunk_key)
            .send()
            .await
            .expect("head chunk");
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
        );
    }
}

#[tokio::test]
async fn a_file_up_to_the_multipart_threshold_is_one_put_object() {
    let (store, _, counter) = fresh().await;
    let k = key("acme");
    // Above what is sent from memory: streamed from disk.
    let content = noise(3 * 1024 * 1024 + 7);
    let (_dir, src) = temp_file(&content);
    let a = store
        .put_file(&k, "files/mid.bin", &src, "application/octet-stream")
        .await
        .expect("put");
    assert_eq!(a.sha256, hex::encode(Sha256::digest(&content)));
    expect_ops(&counter, &[("PutObject", 1)]);
    let (size, _, data) = read_all(&store, &k, "files/mid.bin").await;
    assert_eq!(size, content.len() as u64);
    assert!(data == content, "streamed content differs");
}

#[tokio::test]
async fn a_large_file_is_a_multipart_upload_and_round_trips() {
    let (store, clients, counter) = fresh().await;
    let k = key("acme");
    let content = noise(20 * 1024 * 1024 + 5);
    let (_dir, src) = temp_file(&content);
    let a = store
        .put_file(&k, "files/big.bin", &src, "application/octet-stream")
        .await
        .expect("put");
    assert_eq!(a.size, content.len() as u64);
    assert_eq!(a.sha256, hex::encode(Sha256::digest(&content)));
    expect_ops(
        &counter,
        &[
            ("CreateMultipartUpload", 1),
            ("UploadPart", 3),
            ("CompleteMultipartUpload", 1),
        ],
    );

    let head = clients
        .s3
        .head_object()
        .bucket(store.bucket())
        .key(object_key(&k, "files/big.bin"))
        .send()
        .await
        .expect("head");
    let etag = head.e_tag().expect("etag").trim_matches('"').to_owned();
    assert!(etag.ends_with("-3"), "a multipart ETag ends in -{{parts}}: {etag}");
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    assert_eq!(head.content_length(), Some(content.len() as i64));
    let checked = clients
        .s3
        .head_object()
        .bucket(store.bucket())
        .key(object_key(&k, "files/big.bin"))
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .expect("head");
    assert!(checked.checksum_crc32().is_some(), "parts carry CRC32 checksums");

    let (size, content_type, data) = read_all(&store, &k, "files/big.bin").await;
    assert_eq!(
        (size, content_type.as_str()),
        (content.len() as u64, "application/octet-stream")
    );
    assert!(data == content, "streamed content differs");
    assert_eq!(hex::encode(Sha256::digest(&data)), a.sha256);

    // A range across the part boundary.
    let from = 8 * 1024 * 1024 - 3;
    let chunk = store
        .read_range(&k, "files/big.bin", from as u64, 6)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(&chunk.data[..], &content[from..from + 6]);
    assert_eq!((chunk.next_offset, chunk.size), (from as u64 + 6, content.len() as u64));

    // No upload is left behind.
    let uploads = clients
        .s3
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .expect("uploads");
    assert!(uploads.uploads().is_empty());
}

#[tokio::test]
async fn a_missing_source_fails_without_writing() {
    let (store, _, counter) = fresh().await;
    let k = key("acme");
    let dir = tempfile::tempdir().expect("tempdir");
    let res = store
        .put_file(&k, "missing.txt", &dir.path().join("nope"), "text/plain")
        .await;
    assert!(matches!(res, Err(ArtifactError::Backend(_))));
    assert!(matches!(
        store.put_file(&k, "dir", dir.path(), "text/plain").await,
        Err(ArtifactError::Backend(_))
    ));
    expect_ops(&counter, &[]);
}

#[tokio::test]
async fn reads_past_the_end_of_a_final_file_are_empty() {
    let (store, _, counter) = fresh().await;
    let k = key("acme");
    let (_dir, src) = temp_file(b"0123456789");
    store.put_file(&k, "a.txt", &src, "text/plain").await.expect("put");
    let (_dir, empty) = temp_file(b"");
    store
        .put_file(&k, "empty.txt", &empty, "text/plain")
        .await
        .expect("put");
    counter.reset();
    for (offset, max_len) in [(10, 5), (25, 5), (3, 0)] {
        let chunk = store
            .read_range(&k, "a.txt", offset, max_len)
            .await
            .expect("read")
            .expect("stored");
        assert!(chunk.data.is_empty());
        assert_eq!(
            (chunk.next_offset, chunk.size),
            (offset.min(10), 10),
            "{offset}+{max_len}"
        );
    }
    // Past the end S3 answers 416 with the object's size: one GetObject each. Nothing asked
    // (max_len 0) is one HeadObject.
    expect_ops(&counter, &[("GetObject", 2), ("HeadObject", 1)]);
    let chunk = store
        .read_range(&k, "empty.txt", 0, 10)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!((chunk.data.len(), chunk.next_offset, chunk.size), (0, 0, 0));
    let (size, _, data) = read_all(&store, &k, "empty.txt").await;
    assert_eq!((size, data.len()), (0, 0));
    // Never a List: a final object is found first.
    assert!(!ops(&counter).contains_key("ListObjectsV2"), "{:?}", ops(&counter));
}

#[tokio::test]
async fn live_chunks_read_back_across_their_boundaries() {
    let (store, clients, counter) = fresh().await;
    let k = key("acme");
    let log = "output.log";
    let batches: [&[u8]; 4] = [b"hello ", b"world\n", b"and ", b"more\n"];
    let mut offset = 0u64;
    for batch in batches {
        store.append_log(&k, log, offset, batch).await.expect("append");
        offset += batch.len() as u64;
    }
    let all: Vec<u8> = batches.concat();
    expect_ops(&counter, &[("PutObject", 4)]);

    let chunk = store.read_range(&k, log, 4, 10).await.expect("read").expect("live");
    assert_eq!(&chunk.data[..], &all[4..14]);
    assert_eq!((chunk.next_offset, chunk.size), (14, all.len() as u64));
    // The final object is looked for, the chunks listed, and only the 3 overlapping ones fetched.
    expect_ops(&counter, &[("GetObject", 4), ("ListObjectsV2", 1)]);

    for (from, max_len) in [
        (0u64, 1u64 << 20),
        (6, 6),
        (7, 3),
        (12, 100),
        (20, 1),
        (21, 5),
        (500, 5),
        (3, 0),
    ] {
        let chunk = store
            .read_range(&k, log, from, max_len)
            .await
            .expect("read")
            .expect("live");
        let start = (from as usize).min(all.len());
        let stop = (start + max_len as usize).min(all.len());
        assert_eq!(&chunk.data[..], &all[start..stop], "{from}+{max_len}");
        assert_eq!((chunk.next_offset, chunk.size), (stop as u64, all.len() as u64));
    }
    let (size, content_type, data) = read_all(&store, &k, log).await;
    assert_eq!((size, data), (all.len() as u64, all.clone()));
    assert!(content_type.starts_with("text/plain"));

    // A retry from inside a batch that goes further, then a store that never saw the log (another
    // process) carries on from where S3 says it ends, and refuses a gap.
    store
        .append_log(&k, log, 17, b"ore\nplus")
        .await
        .expect("retry and extend");
    let other = S3ArtifactStore::new(clients.s3.clone(), store.bucket().to_owned(), Duration::from_secs(60));
    counter.reset();
    assert!(other.append_log(&k, log, 100, b"gap").await.is_err());
    expect_ops(&counter, &[("ListObjectsV2", 1)]);
    other
        .append_log(&k, log, 25, b"!")
        .await
        .expect("append from another store");
    expect_ops(&counter, &[("PutObject", 1)]);
    let chunk = store.read_range(&k, log, 0, 100).await.expect("read").expect("live");
    assert_eq!(&chunk.data[..], b"hello world\nand more\nplus!");
    // The first store last saw the log end at 25: it checks with S3 rather than refuse.
    counter.reset();
    store
        .append_log(&k, log, 26, b"?")
        .await
        .expect("append after another store");
    expect_ops(&counter, &[("ListObjectsV2", 1), ("PutObject", 1)]);
    let chunk = store.read_range(&k, log, 22, 100).await.expect("read").expect("live");
    assert_eq!(&chunk.data[..], b"lus!?");

    // A new attempt starts from 0: the old chunks no longer show, even where they are longer.
    store.append_log(&k, log, 0, b"again\n").await.expect("restart");
    let chunk = store.read_range(&k, log, 0, 100).await.expect("read").expect("live");
    assert_eq!((&chunk.data[..], chunk.size), (&b"again\n"[..], 6));
    store.append_log(&k, log, 6, b"world\n").await.expect("append");
    let (size, _, data) = read_all(&store, &k, log).await;
    assert_eq!((size, data.as_slice()), (12, &b"again\nworld\n"[..]));

    // Chunks of a longer name are not part of this log.
    store.append_log(&k, "output.log/x", 0, b"other").await.expect("append");
    let chunk = store.read_range(&k, log, 0, 100).await.expect("read").expect("live");
    assert_eq!(&chunk.data[..], b"again\nworld\n");

    // The final file wins.
    let (_dir, src) = temp_file(b"final\n");
    store
        .put_file(&k, log, &src, "text/plain; charset=utf-8")
        .await
        .expect("put");
    let chunk = store.read_range(&k, log, 0, 100).await.expect("read").expect("final");
    assert_eq!((&chunk.data[..], chunk.size), (&b"final\n"[..], 6));
}

#[tokio::test]
async fn presigned_urls_serve_the_exact_bytes() {
    let (store, _, counter) = fresh().await;
    let k = key("acme");
    let content = noise(300 * 1024);
    let (_dir, src) = temp_file(&content);
    store
        .put_file(&k, "files/report.bin", &src, "application/octet-stream")
        .await
        .expect("put");
    let (_dir2, other_src) = temp_file(b"someone else's file");
    let other_key = key("globex");
    store
        .put_file(&other_key, "files/report.bin", &other_src, "text/plain")
        .await
        .expect("put");
    counter.reset();

    let url = store
        .presigned_url(&k, "files/report.bin", Duration::from_secs(60))
        .await
        .expect("presign")
        .expect("a URL");
    expect_ops(&counter, &[]);
    let parsed = url::Url::parse(&url).expect("a URL");
    let query: BTreeMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(query.get("X-Amz-Expires").map(String::as_str), Some("60"));
    assert!(query.contains_key("X-Amz-Signature"));
    assert!(parsed
        .path()
        .ends_with(&format!("/runs/acme/{}/files/report.bin", k.run.as_str())));

    let http = reqwest::Client::new();
    let res = http.get(&url).send().await.expect("GET");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/octet-stream")
    );
    let body = res.bytes().await.expect("body");
    assert!(body[..] == content[..], "presigned URL served other bytes");

    // Each URL names one object: another run's URL serves that run's file, never this one.
    let other_url = store
        .presigned_url(&other_key, "files/report.bin", Duration::from_secs(60))
        .await
        .expect("presign")
        .expect("a URL");
    assert_ne!(other_url, url);
    let body = http
        .get(&other_url)
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert_eq!(&body[..], b"someone else's file");
    // Nothing stored: no content (the URL is made without checking).
    let missing = store
        .presigned_url(&k, "missing.bin", Duration::from_secs(60))
        .await
        .expect("presign")
        .expect("a URL");
    assert_eq!(
        http.get(&missing).send().await.expect("GET").status(),
        reqwest::StatusCode::NOT_FOUND
    );

    // A zero lifetime means the store's default; over SigV4's 7 days is refused.
    let default = store
        .presigned_url(&k, "files/report.bin", Duration::ZERO)
        .await
        .expect("presign")
        .expect("a URL");
    assert!(default.contains("X-Amz-Expires=900"), "{default}");
    assert!(store
        .presigned_url(&k, "files/report.bin", Duration::from_secs(8 * 24 * 3600))
        .await
        .is_err());
    assert!(matches!(
        store.presigned_url(&k, "../x", Duration::from_secs(60)).await,
        Err(ArtifactError::BadName(_))
    ));
}
