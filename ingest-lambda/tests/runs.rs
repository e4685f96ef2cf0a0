//! Runs over real HTTP and SQLite: dispatch, read, list with filters and cursors, cancel, and a
//! queue that refuses a message.

mod support;

use async_trait::async_trait;
use outpost_api::client::ClientError;
use outpost_api::{DispatchRequest, ListRunsQuery};
use outpost_core::ports::{Backend, Delivery, QueueDepth, QueueError, Receipt, TaskMessage, TaskQueue};
use outpost_core::{FailureReason, Outcome, RunStatus};
use reqwest::Method;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use support::{dispatch_request, error_of, start};

#[tokio::test]
async fn dispatch_is_accepted_recorded_and_queued() {
    let api = start().await;
    let mut req = dispatch_request("fake", "write a haiku");
    req.repo = Some("https://github.com/acme/app.git".into());
    req.branch = Some("main".into());
    let resp = api
        .raw(Method::POST, "/v1/runs")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&req)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_owned();
    let accepted: outpost_api::DispatchAccepted = resp.json().await.expect("body");
    assert_eq!(accepted.status, RunStatus::Queued);
    assert_eq!(location, format!("/v1/runs/{}", accepted.id));
    assert_eq!(accepted.links.self_, location);

    let run = api.acme().get_run(&accepted.id).await.expect("get");
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.tenant, "acme");
    assert_eq!(run.agent, "fake");
    assert_eq!(run.task, "write a haiku");
    assert_eq!(run.timeout_secs, 60, "the agent's default timeout");
    assert_eq!(run.repo.as_ref().and_then(|r| r.branch.as_deref()), Some("main"));
    assert_eq!(run.created_at, accepted.created_at);

    // The queue holds exactly this run's message, with the tenant and the trace context.
    let deliveries = api
        .backend
        .queue
        .receive(10, Duration::from_secs(30), Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(deliveries.len(), 1);
    let m = &deliveries[0].message;
    assert_eq!(m.run_id.as_str(), accepted.id);
    assert_eq!(m.tenant, api.acme);
    assert_eq!(
        m.trace_context.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    // An explicit timeout is kept.
    let mut req = dispatch_request("claude", "x");
    req.timeout_secs = Some(3600);
    let accepted = api.acme().dispatch(&req).await.expect("dispatch");
    let view = api.acme().get_run(&accepted.id).await.expect("get");
    assert_eq!(view.timeout_secs, 3600);
    assert_eq!(view.idle_timeout_secs, None, "the agent's own idle timeout applies");

    // So is an idle timeout, on the record and in the view.
    let mut req = dispatch_request("fake", "x");
    req.timeout_secs = Some(600);
    req.idle_timeout_secs = Some(42);
    let accepted = api.acme().dispatch(&req).await.expect("dispatch");
    let view = api.acme().get_run(&accepted.id).await.expect("get");
    assert_eq!((view.timeout_secs, view.idle_timeout_secs), (600, Some(42)));
    let id: outpost_core::RunId = accepted.id.parse().expect("run id");
    let stored = api.backend.runs.get_by_id(&id).await.expect("get").expect("stored");
    assert_eq!(stored.idle_timeout_secs, Some(42));
}

#[tokio::test]
async fn a_finished_run_shows_the_agent_report() {
    let api = start().await;
    let id = api.dispatch("fake", "answer me").await;
    let worker = api.claim(&id).await;
    let report = outpost_core::AgentReport {
        result: Some("The answer — ünïcödé ✓".into()),
        error: Some("API Error: 401 invalid x-api-key".into()),
        usage: Some(outpost_core::Usage {
            input_tokens: Some(1_000),
            cached_input_tokens: Some(800),
            output_tokens: Some(50),
            cost_usd: Some(0.0123),
            source: "claude result.total_cost_usd".into(),
        }),
        session_id: Some("sess-42".into()),
    };
    api.finish(
        &id,
        &worker,
        Outcome::failed(FailureReason::AgentError, Some(0)).with_report(report.clone()),
        Vec::new(),
    )
    .await;
    let view = api.acme().get_run(id.as_str()).await.expect("get");
    assert_eq!(view.failure_reason, Some(FailureReason::AgentError));
    assert_eq!(view.result, report.result);
    assert_eq!(view.agent_error, report.error);
    assert_eq!(view.usage, report.usage);
    assert_eq!(view.session_id, report.session_id);
    let listed = api.acme().list_runs(&ListRunsQuery::default()).await.expect("list");
    assert_eq!(listed.runs.len(), 1);
    assert_eq!(listed.runs[0], view, "the listing shows the same");
    // On the wire, with the documented names.
    let raw: serde_json::Value = api
        .raw(Method::GET, &format!("/v1/runs/{id}"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(raw["agent_error"], "API Error: 401 invalid x-api-key");
    assert_eq!(raw["usage"]["cached_input_tokens"], 800);
    assert_eq!(raw["usage"]["cost_usd"], 0.0123);
    assert_eq!(raw["session_id"], "sess-42");
}

#[tokio::test]
async fn many_concurrent_dispatches_all_land_in_the_queue() {
    let api = start().await;
    let client = api.acme();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.dispatch(&dispatch_request("fake", &format!("task {i}"))).await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.expect("join").expect("dispatch").id);
    }
    assert_eq!(ids.len(), 100);
    let depth = api.backend.queue.depth().await.expect("depth");
    assert_eq!(depth.visible, 100);
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let api = start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let agent = if i % 2 == 0 { "fake" } else { "claude" };
        ids.push(api.dispatch(agent, &format!("task {i}")).await);
    }
    // globex's runs never show up in acme's list.
    api.globex()
        .dispatch(&dispatch_request("fake", "other tenant"))
        .await
        .expect("globex dispatch");
    let cancelled = ids[1].clone();
    api.acme().cancel_run(cancelled.as_str()).await.expect("cancel");

    // All pages of 3, newest first, each run once.
    let client = api.acme();
    let mut seen = Vec::new();
    let mut q = ListRunsQuery {
        limit: Some(3),
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = client.list_runs(&q).await.expect("list");
        assert!(page.runs.len() <= 3);
        pages += 1;
        seen.extend(page.runs.into_iter().map(|r| (r.created_at, r.id)));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    // Newest first (ids made within one millisecond may tie on time).
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "not newest first: {seen:?}");
    let seen: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7, "each run once");
    let expected: HashSet<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(pages, 3);

    // Default page holds all of them.
    let all = client.list_runs(&ListRunsQuery::default()).await.expect("list");
    assert_eq!(all.runs.len(), 7);
    assert!(all.runs.iter().all(|r| r.tenant == "acme"));

    let by_agent = client
        .list_runs(&ListRunsQuery {
            agent: Some("claude".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(by_agent.runs.len(), 3);
    assert!(by_agent.runs.iter().all(|r| r.agent == "claude"));

    let by_status = client
        .list_runs(&ListRunsQuery {
            status: Some(RunStatus::Cancelled),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        by_status.runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [cancelled.as_str()]
    );

    let combined = client
        .list_runs(&ListRunsQuery {
            status: Some(RunStatus::Queued),
            agent: Some("fake".into()),
            limit: Some(2),
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(combined.runs.len(), 2);
    assert!(combined.next_cursor.is_some());
    assert!(combined
        .runs
        .iter()
        .all(|r| r.agent == "fake" && r.status == RunStatus::Queued));

    let globex = api.globex().list_runs(&ListRunsQuery::default()).await.expect("list");
    assert_eq!(globex.runs.len(), 1);
}

#[tokio::test]
async fn bad_list_queries_are_400() {
    let api = start().await;
    api.dispatch("fake", "x").await;
    for (query, code) in [
        ("status=done", "invalid_query"),
        ("status=", "invalid_query"),
        ("limit=0", "invalid_query"),
        ("limit=101", "invalid_query"),
        ("limit=abc", "invalid_query"),
        ("limit=-1", "invalid_query"),
        ("cursor=not-a-cursor", "invalid_cursor"),
    ] {
        let resp = api
            .raw(Method::GET, &format!("/v1/runs?{query}"))
            .send()
            .await
            .expect("send");
        let (status, got, _, message) = error_of(resp).await;
        assert_eq!((status, got.as_str()), (400, code), "{query}: {message}");
    }
    // Both ends of the limit are fine.
    for query in ["limit=1", "limit=100"] {
        let resp = api
            .raw(Method::GET, &format!("/v1/runs?{query}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "{query}");
    }
}

#[tokio::test]
async fn cancel_queued_running_and_finished_runs() {
    let api = start().await;
    let client = api.acme();

    // queued → cancelled at once
    let queued = api.dispatch("fake", "x").await;
    let view = client.cancel_run(queued.as_str()).await.expect("cancel");
    assert_eq!(view.status, RunStatus::Cancelled);
    assert_eq!(
        client.get_run(queued.as_str()).await.expect("get").status,
        RunStatus::Cancelled
    );
    // cancelled is terminal: a second cancel is a conflict
    let e = client.cancel_run(queued.as_str()).await.expect_err("already cancelled");
    assert_eq!((e.status(), e.code()), (Some(409), Some("conflict")));
    assert!(e.to_string().contains("already finished"), "{e}");

    // running → cancel requested, still running
    let running = api.dispatch("fake", "y").await;
    let worker = api.claim(&running).await;
    let view = client.cancel_run(running.as_str()).await.expect("cancel");
    assert_eq!(view.status, RunStatus::Running);
    assert!(view.cancel_requested);
    let hb = api
        .backend
        .runs
        .heartbeat(&running, &worker, Duration::from_secs(60))
        .await
        .expect("heartbeat");
    assert!(hb.cancel_requested, "the worker learns of the cancel");

    // finished → 409, unchanged
    api.finish(&running, &worker, Outcome::succeeded(), Vec::new()).await;
    let e = client.cancel_run(running.as_str()).await.expect_err("finished");
    assert_eq!((e.status(), e.code()), (Some(409), Some("conflict")));
    assert!(e.to_string().contains("succeeded"), "{e}");
    assert_eq!(
        client.get_run(running.as_str()).await.expect("get").status,
        RunStatus::Succeeded
    );
}

/// A real queue that refuses every `send` (the store stays real SQLite).
struct RefusingQueue(Arc<dyn TaskQueue>);

#[async_trait]
impl TaskQueue for RefusingQueue {
    async fn send(&self, _message: &TaskMessage) -> Result<(), QueueError> {
        Err(QueueError::Backend("queue endpoint unreachable (injected)".into()))
    }
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.0.receive(max, visibility, wait).await
    }
    async fn extend_visibility(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.0.extend_visibility(receipt, visibility).await
    }
    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.0.delete(receipt).await
    }
    async fn receive_dead_letters(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.0.receive_dead_letters(max, visibility).await
    }
    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.0.delete_dead_letter(receipt).await
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.0.depth().await
    }
}

#[tokio::test]
async fn a_run_that_cannot_be_queued_is_failed_not_left_queued() {
    let (dir, backend) = support::open_backend();
    let served = Backend {
        queue: Arc::new(RefusingQueue(backend.queue.clone())),
        ..backend.clone()
    };
    let api = support::start_with(dir, backend, served).await;
    let resp = api
        .raw(Method::POST, "/v1/runs")
        .json(&dispatch_request("fake", "x"))
        .send()
        .await
        .expect("send");
    let (status, code, _, message) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    assert!(!message.contains("injected"), "backend detail leaked: {message}");

    let list = api.acme().list_runs(&ListRunsQuery::default()).await.expect("list");
    assert_eq!(list.runs.len(), 1, "the run was recorded");
    assert_eq!(list.runs[0].status, RunStatus::Failed);
    assert_eq!(list.runs[0].failure_reason, Some(FailureReason::EnqueueFailed));
    assert_eq!(api.backend.queue.depth().await.expect("depth").visible, 0);
}

#[tokio::test]
async fn client_errors_read_as_one_line() {
    let api = start().await;
    let e = api
        .acme()
        .dispatch(&DispatchRequest {
            agent: "fake".into(),
            task: " ".into(),
            repo: None,
            branch: None,
            timeout_secs: None,
            idle_timeout_secs: None,
        })
        .await
        .expect_err("empty task");
    assert_eq!(e.to_string(), "validation_failed (422): task: must not be empty");
    let e = api
        .acme()
        .get_run("run_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .expect_err("no such run");
    assert!(
        matches!(&e, ClientError::Api { status: 404, code, .. } if code == "not_found"),
        "{e:?}"
    );
    let health = api.anonymous().health().await.expect("health");
    assert_eq!(health.status, "ok");
}
