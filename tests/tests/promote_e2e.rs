//! End-to-end: promote (`POST /v1/runs/{id}/promote`, `outpost promote`) against real git
//! remotes. A real `outpost dev` clones a `file://` origin, the fake agent edits a file and adds a
//! binary one, and promote pushes the run's commit to a new branch: deterministic and idempotent,
//! never overwriting another branch, refusing a base that is gone, a run without a repository or
//! changes. Then a git smart-HTTP remote (`git http-backend` behind a token check) that both the
//! worker's clone and the API's push reach only with the tenant's `GIT_TOKEN` secret, which never
//! shows in the run's log. Last, the same over the AWS backend (moto) through the Lambda gateway.

use outpost_api::client::{ClientError, OutpostClient};
use outpost_api::{DispatchRequest, PromoteRequest, PromoteResult};
use outpost_core::RunStatus;
use outpost_testkit::{git_bytes, git_ok};
use outpost_tests::git_http::GitHttpServer;
use outpost_tests::{binary_bytes, fake_task, make_origin, wait_run_with, AppOptions, TestApp};
use std::path::Path;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn repo_task(task: &str, url: &str, branch: Option<&str>) -> DispatchRequest {
    let mut req = fake_task(task);
    req.repo = Some(url.to_owned());
    req.branch = branch.map(str::to_owned);
    req
}

/// Dispatches and waits for the end.
async fn run_to_end(server: &TestApp, req: &DispatchRequest) -> anyhow::Result<outpost_api::RunView> {
    let id = server.client()?.dispatch(req).await?.id;
    server.wait_terminal(&id, RUN_TIMEOUT).await
}

/// Polls the run through `client` until it is finished.
async fn wait_terminal(client: &OutpostClient, id: &str) -> anyhow::Result<outpost_api::RunView> {
    wait_run_with(client, id, RUN_TIMEOUT, |run| run.status.is_terminal()).await
}

/// The API error code of a failed call.
fn api_error(r: Result<PromoteResult, ClientError>) -> (u16, String, String) {
    match r {
        Err(ClientError::Api { status, code, message }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn branch(name: &str) -> PromoteRequest {
    PromoteRequest {
        branch: Some(name.to_owned()),
    }
}

#[tokio::test]
async fn promote_pushes_a_runs_changes_and_is_idempotent() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let origin = tmp.path().join("origin");
    let url = make_origin(&origin);
    let dev_head = git_ok(&origin, &["rev-parse", "dev"]).trim().to_owned();
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;

    let run = run_to_end(
        &server,
        &repo_task(
            "Shout the second line\nwrite src/lib.txt ONE TWO THREE\nbinary assets/logo.bin 3000\nartifact report.md done",
            &url,
            Some("dev"),
        ),
    )
    .await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");

    let first = client.promote(&run.id, &PromoteRequest::default()).await?;
    assert!(first.pushed);
    assert_eq!(first.run_id, run.id);
    assert_eq!(first.branch, format!("outpost/{}", run.id));
    assert_eq!(first.base_commit, dev_head);
    assert_eq!(first.compare_url, None, "file:// remotes have no web page");
    assert_eq!(first.pull_request_url, None);

    // The branch exists in origin with the expected tree and message.
    let on_origin = git_ok(&origin, &["rev-parse", &format!("refs/heads/{}", first.branch)]);
    assert_eq!(on_origin.trim(), first.commit);
    assert_eq!(
        git_ok(&origin, &["rev-parse", &format!("{}^", first.commit)]).trim(),
        dev_head
    );
    let files = git_ok(&origin, &["ls-tree", "-r", "--name-only", &first.commit]);
    let mut files: Vec<&str> = files.lines().collect();
    files.sort_unstable();
    assert_eq!(files, ["NOTES.md", "README.md", "assets/logo.bin", "src/lib.txt"]);
    assert_eq!(
        git_ok(&origin, &["show", &format!("{}:src/lib.txt", first.commit)]),
        "ONE TWO THREE\n"
    );
    assert_eq!(
        git_bytes(
            &origin,
            &["cat-file", "blob", &format!("{}:assets/logo.bin", first.commit)]
        ),
        binary_bytes(3000)
    );
    let message = git_ok(&origin, &["log", "-1", "--format=%an <%ae>%n%B", &first.commit]);
    assert!(
        message.starts_with("Outpost <outpost@noreply.invalid>\nShout the second line\n"),
        "{message}"
    );
    assert!(message.contains(&run.id), "{message}");

    // Twice: the same commit, nothing pushed. An empty body is fine too.
    let again = client.promote(&run.id, &PromoteRequest::default()).await?;
    assert_eq!((again.commit.as_str(), again.pushed), (first.commit.as_str(), false));
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/runs/{}/promote", server.url, run.id))
        .bearer_auth(&server.api_key)
        .send()
        .await?;
    assert_eq!(raw.status(), 200);
    let raw: PromoteResult = raw.json().await?;
    assert_eq!((raw.commit.as_str(), raw.pushed), (first.commit.as_str(), false));

    // The CLI, to a branch of our choosing.
    let out = server.cli(&["promote", &run.id, "--branch", "feature/shout", "--json"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: PromoteResult = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        (cli.branch.as_str(), cli.commit.as_str()),
        ("feature/shout", first.commit.as_str())
    );
    assert_eq!(git_ok(&origin, &["rev-parse", "feature/shout"]).trim(), first.commit);
    let out = server.cli(&["promote", &run.id, "--branch", "feature/shout"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("feature/shout") && text.contains(&first.commit), "{text}");

    // A second run with other changes, promoted onto the first run's branch: 409, untouched.
    let other = run_to_end(&server, &repo_task("write README.md bye", &url, Some("dev"))).await?;
    assert_eq!(other.status, RunStatus::Succeeded, "{other:?}");
    let (status, code, message) = api_error(client.promote(&other.id, &branch(&first.branch)).await);
    assert_eq!((status, code.as_str()), (409, "promote_conflict"), "{message}");
    assert_eq!(
        git_ok(&origin, &["rev-parse", &format!("refs/heads/{}", first.branch)]).trim(),
        first.commit
    );

    // Bad branch name: 422 naming the field.
    match client.promote(&other.id, &branch("a..b")).await {
        Err(ClientError::Api { status: 422, code, .. }) => assert_eq!(code, "validation_failed"),
        r => panic!("expected 422, got {r:?}"),
    }

    // No repository, no changes, not succeeded: 409 not_promotable.
    let plain = run_to_end(&server, &fake_task("write x.txt hi")).await?;
    let failed = run_to_end(&server, &repo_task("write README.md x\nexit 3", &url, None)).await?;
    let unchanged = run_to_end(&server, &repo_task("say nothing to do", &url, None)).await?;
    for (what, id) in [
        ("no repo", &plain.id),
        ("failed", &failed.id),
        ("no changes", &unchanged.id),
    ] {
        let (status, code, message) = api_error(client.promote(id, &PromoteRequest::default()).await);
        assert_eq!((status, code.as_str()), (409, "not_promotable"), "{what}: {message}");
    }

    // Another tenant's run is not there at all.
    let other_key = server.create_key("globex")?;
    let (status, _, _) = api_error(
        server
            .client_with_key(&other_key)?
            .promote(&run.id, &PromoteRequest::default())
            .await,
    );
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn a_base_rewritten_away_is_base_moved() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let origin = tmp.path().join("origin");
    std::fs::create_dir_all(&origin)?;
    git_ok(&origin, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(origin.join("a.txt"), "a\n")?;
    git_ok(&origin, &["add", "-A"]);
    git_ok(&origin, &["commit", "--quiet", "-m", "one"]);
    let url = format!("file://{}", origin.display());
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let run = run_to_end(&server, &repo_task("write a.txt b", &url, None)).await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");

    // Rewrite history so the base commit is gone for good.
    git_ok(&origin, &["commit", "--quiet", "--amend", "-m", "one, rewritten"]);
    git_ok(&origin, &["reflog", "expire", "--expire=now", "--all"]);
    git_ok(&origin, &["gc", "--quiet", "--prune=now"]);
    let (status, code, message) = api_error(client.promote(&run.id, &PromoteRequest::default()).await);
    assert_eq!((status, code.as_str()), (409, "base_moved"), "{message}");
    assert!(
        git_ok(&origin, &["branch", "--list", "outpost/*"]).trim().is_empty(),
        "nothing pushed"
    );
    Ok(())
}

/// A bare repository `root/app.git` with one commit on `main`.
fn make_bare(root: &Path) -> std::path::PathBuf {
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    git_ok(&seed, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(seed.join("app.txt"), "v1\n").expect("write");
    git_ok(&seed, &["add", "-A"]);
    git_ok(&seed, &["commit", "--quiet", "-m", "seed"]);
    let bare = root.join("srv").join("app.git");
    std::fs::create_dir_all(&bare).expect("mkdir");
    git_ok(&bare, &["init", "--quiet", "--bare", "--initial-branch=main"]);
    git_ok(&seed, &["push", "--quiet", bare.to_str().expect("utf8"), "main"]);
    bare
}

#[tokio::test]
async fn smart_http_remote_needs_the_tenants_git_token() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bare = make_bare(tmp.path());
    let token = "ghs_e2eT0kenValue8812";
    let http = GitHttpServer::start(&tmp.path().join("srv"), token)?;
    let url = http.repo_url("app.git");
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;

    // No token (a tenant that set none: workers cache a tenant's secrets for a while): the
    // worker's clone is refused, cleanly.
    let tokenless = server.client_with_key(&server.create_key("globex")?)?;
    let denied_id = tokenless
        .dispatch(&repo_task("write app.txt v2", &url, Some("main")))
        .await?
        .id;
    let denied = wait_terminal(&tokenless, &denied_id).await?;
    assert_eq!(denied.status, RunStatus::Failed, "{denied:?}");
    let log = String::from_utf8_lossy(&tokenless.artifact(&denied.id, "output.log").await?).into_owned();
    assert!(log.contains("git clone failed"), "{log}");
    assert!(http.refused() > 0);

    // With the tenant's GIT_TOKEN: the worker clones with it; the agent is never given it.
    client.put_secret("GIT_TOKEN", token).await?;
    let run = run_to_end(
        &server,
        &repo_task(
            "Bump the version\nenv GIT_TOKEN\nwrite app.txt v2\nbinary icon.bin 700",
            &url,
            Some("main"),
        ),
    )
    .await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let log = String::from_utf8_lossy(&client.artifact(&run.id, "output.log").await?).into_owned();
    assert!(!log.contains(token), "the token leaked into output.log: {log}");
    assert!(log.contains("GIT_TOKEN is unset"), "{log}");

    let promoted = client.promote(&run.id, &PromoteRequest::default()).await?;
    assert!(promoted.pushed);
    assert_eq!(
        git_ok(&bare, &["rev-parse", &format!("refs/heads/{}", promoted.branch)]).trim(),
        promoted.commit
    );
    assert_eq!(
        git_ok(&bare, &["show", &format!("{}:app.txt", promoted.commit)]),
        "v2\n"
    );
    assert_eq!(
        git_bytes(&bare, &["cat-file", "blob", &format!("{}:icon.bin", promoted.commit)]),
        binary_bytes(700)
    );
    let again = client.promote(&run.id, &PromoteRequest::default()).await?;
    assert_eq!((again.commit.as_str(), again.pushed), (promoted.commit.as_str(), false));

    // Without the token the API's push is refused: 502, no token in the message.
    client.delete_secret("GIT_TOKEN").await?;
    let (status, code, message) = api_error(client.promote(&run.id, &branch("no-token")).await);
    assert_eq!((status, code.as_str()), (502, "remote_unavailable"), "{message}");
    assert!(message.contains("GIT_TOKEN"), "the message says what to do: {message}");
    assert!(!message.contains(token));
    // A wrong token is refused the same way.
    client.put_secret("GIT_TOKEN", "not-the-token").await?;
    let (status, code, message) = api_error(client.promote(&run.id, &branch("wrong-token")).await);
    assert_eq!((status, code.as_str()), (502, "remote_unavailable"), "{message}");
    assert!(!message.contains("not-the-token"));
    assert!(git_ok(&bare, &["branch", "--list", "no-token", "wrong-token"])
        .trim()
        .is_empty());
    Ok(())
}

/// AWS backend (moto): the Lambda behind the API Gateway emulator promotes a run that the AWS
/// worker ran, reading `diff.patch` and `summary.json` from S3.
#[tokio::test]
async fn promote_through_the_lambda_on_the_aws_backend() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let origin = tmp.path().join("origin");
    let url = make_origin(&origin);
    let app = TestApp::spawn(
        AppOptions::aws(5)
            // The remote is a file:// repository, which the AWS deployment refuses by default.
            .env("OUTPOST_ALLOW_LOCAL_REPOS", "true")
            .slots(1)
            .lease_secs(10),
    )
    .await?;
    let client = app.client()?;

    let id = client
        .dispatch(&repo_task(
            "Edit on AWS\nwrite src/lib.txt aws\nbinary b.bin 300",
            &url,
            Some("main"),
        ))
        .await?
        .id;
    let run = wait_terminal(&client, &id).await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");

    let promoted = client.promote(&id, &branch("aws/promoted")).await?;
    assert!(promoted.pushed);
    assert_eq!(git_ok(&origin, &["rev-parse", "aws/promoted"]).trim(), promoted.commit);
    assert_eq!(git_ok(&origin, &["show", "aws/promoted:src/lib.txt"]), "aws\n");
    assert_eq!(
        git_bytes(&origin, &["cat-file", "blob", "aws/promoted:b.bin"]),
        binary_bytes(300)
    );
    let again = client.promote(&id, &branch("aws/promoted")).await?;
    assert_eq!((again.commit.as_str(), again.pushed), (promoted.commit.as_str(), false));
    Ok(())
}
