//! Logs and artifacts over real HTTP, SQLite and the artifact folder: live log reads from
//! offsets, the manifest, and streamed downloads.

mod support;

use outpost_api::{HEADER_LOG_SIZE, HEADER_NEXT_OFFSET, HEADER_RUN_STATUS};
use outpost_core::{Outcome, RunStatus};
use reqwest::Method;
use support::{error_of, start};

#[tokio::test]
async fn logs_read_from_offsets_while_running_and_after() {
    let api = start().await;
    let client = api.acme();
    let run = api.dispatch("fake", "talk").await;

    // Nothing stored yet: empty, size 0, offset kept.
    let first = client.logs(run.as_str(), 0).await.expect("logs");
    assert_eq!((first.data.len(), first.size, first.next_offset), (0, 0, 0));
    assert_eq!(first.status, RunStatus::Queued);

    let worker = api.claim(&run).await;
    let key = api.key(&run);
    let parts: [&[u8]; 3] = [b"hello ", b"live ", b"world\n"];
    let mut written = 0u64;
    for part in parts {
        api.backend
            .artifacts
            .append_log(&key, "output.log", written, part)
            .await
            .expect("append");
        written += part.len() as u64;
    }

    let all = client.logs(run.as_str(), 0).await.expect("logs");
    assert_eq!(&all.data[..], b"hello live world\n");
    assert_eq!((all.next_offset, all.size), (17, 17));
    assert_eq!(all.status, RunStatus::Running);

    let tail = client.logs(run.as_str(), 6).await.expect("logs");
    assert_eq!(&tail.data[..], b"live world\n");
    assert_eq!(tail.next_offset, 17);

    let at_end = client.logs(run.as_str(), 17).await.expect("logs");
    assert!(at_end.data.is_empty());
    assert_eq!((at_end.next_offset, at_end.size), (17, 17));

    // More output arrives; the tail picks up where it stopped.
    api.backend
        .artifacts
        .append_log(&key, "output.log", written, b"bye\n")
        .await
        .expect("append");
    let more = client.logs(run.as_str(), at_end.next_offset).await.expect("logs");
    assert_eq!(&more.data[..], b"bye\n");
    assert_eq!((more.next_offset, more.size), (21, 21));

    // `limit` pages through the log; the headers are there on the raw answer.
    let resp = api
        .raw(Method::GET, &format!("/v1/runs/{run}/logs?offset=6&limit=4"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(header(HEADER_NEXT_OFFSET).as_deref(), Some("10"));
    assert_eq!(header(HEADER_LOG_SIZE).as_deref(), Some("21"));
    assert_eq!(header(HEADER_RUN_STATUS).as_deref(), Some("running"));
    assert_eq!(&resp.bytes().await.expect("body")[..], b"live");

    for query in ["limit=0", "limit=8388609", "offset=-1", "offset=x"] {
        let resp = api
            .raw(Method::GET, &format!("/v1/runs/{run}/logs?{query}"))
            .send()
            .await
            .expect("send");
        let (status, code, _, _) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (400, "invalid_query"), "{query}");
    }

    // After the run finishes the final log is served with the terminal status.
    let log_path = api.dir.path().join("final.log");
    std::fs::write(&log_path, b"hello live world\nbye\ndone\n").expect("write");
    let log = api
        .backend
        .artifacts
        .put_file(&key, "output.log", &log_path, "text/plain; charset=utf-8")
        .await
        .expect("put log");
    api.finish(&run, &worker, Outcome::succeeded(), vec![log]).await;
    let done = client.logs(run.as_str(), 17).await.expect("logs");
    assert_eq!(&done.data[..], b"bye\ndone\n");
    assert_eq!((done.next_offset, done.size), (26, 26));
    assert_eq!(done.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn artifacts_are_listed_and_downloaded() {
    let api = start().await;
    let client = api.acme();
    let run = api.dispatch("fake", "write files").await;
    let worker = api.claim(&run).await;

    assert!(client.artifacts(run.as_str()).await.expect("manifest").is_empty());

    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let manifest = vec![
        api.put(&run, "output.log", b"all good\n", "text/plain; charset=utf-8")
            .await,
        api.put(&run, "files/report.md", b"# Report\n", "text/markdown").await,
        api.put(&run, "files/my notes #1.txt", b"spaces and hash", "text/plain")
            .await,
        api.put(&run, "files/deep/data.bin", &big, "application/octet-stream")
            .await,
    ];
    api.finish(&run, &worker, Outcome::succeeded(), manifest.clone()).await;

    let listed = client.artifacts(run.as_str()).await.expect("manifest");
    assert_eq!(
        listed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        manifest.iter().map(|a| a.name.as_str()).collect::<Vec<_>>()
    );
    for (view, stored) in listed.iter().zip(&manifest) {
        assert_eq!((view.size, &view.sha256), (stored.size, &stored.sha256));
    }
    // The run view carries the same manifest.
    assert_eq!(client.get_run(run.as_str()).await.expect("get").artifacts, listed);

    assert_eq!(
        &client.artifact(run.as_str(), "files/report.md").await.expect("get")[..],
        b"# Report\n"
    );
    assert_eq!(
        &client.artifact(run.as_str(), "files/deep/data.bin").await.expect("get")[..],
        &big[..]
    );
    assert_eq!(
        &client
            .artifact(run.as_str(), "files/my notes #1.txt")
            .await
            .expect("get")[..],
        b"spaces and hash"
    );

    // Each manifest entry's `url` works as given, with type and length headers.
    for view in &listed {
        let resp = api.raw(Method::GET, &view.url).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{}", view.url);
        assert_eq!(
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some(view.content_type.as_str())
        );
        assert_eq!(resp.content_length(), Some(view.size));
        assert_eq!(
            resp.headers()
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff")
        );
        assert_eq!(resp.bytes().await.expect("body").len() as u64, view.size);
    }

    // The live log of an unfinished run is served before any manifest exists.
    let live = api.dispatch("fake", "still going").await;
    api.claim(&live).await;
    api.backend
        .artifacts
        .append_log(&api.key(&live), "output.log", 0, b"partial")
        .await
        .expect("append");
    assert_eq!(
        &client.artifact(live.as_str(), "output.log").await.expect("live log")[..],
        b"partial"
    );
    // A file stored but not (yet) in a manifest is not an artifact.
    api.put(&live, "files/early.txt", b"not listed", "text/plain").await;
    let e = client
        .artifact(live.as_str(), "files/early.txt")
        .await
        .expect_err("unlisted");
    assert_eq!(e.status(), Some(404));

    for missing in ["nope.txt", "files", "files/report.md/x"] {
        let e = client.artifact(run.as_str(), missing).await.expect_err("missing");
        assert_eq!((e.status(), e.code()), (Some(404), Some("not_found")), "{missing}");
    }
    for path in [
        format!("/v1/runs/{run}/artifacts/..%2Foutput.log"),
        format!("/v1/runs/{run}/artifacts/files/..%2F..%2Fsecret"),
        format!("/v1/runs/{run}/artifacts/a%5Cb"),
    ] {
        let resp = api.raw(Method::GET, &path).send().await.expect("send");
        let (status, code, _, _) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
}
