//! The API's edges over real HTTP: authentication, tenant isolation, validation, malformed and
//! oversized bodies, unknown routes and methods, the OpenAPI document and the fleet view.

mod support;

use chrono::Utc;
use outpost_core::ports::workers::AgentLoad;
use outpost_core::ports::WorkerInfo;
use outpost_core::{ExecutorKind, WorkerId};
use reqwest::Method;
use serde_json::{json, Value};
use support::{dispatch_request, error_of, start};

/// Every authenticated endpoint, for a run id.
fn protected(run: &str) -> Vec<(Method, String)> {
    vec![
        (Method::POST, "/v1/runs".into()),
        (Method::GET, "/v1/runs".into()),
        (Method::GET, format!("/v1/runs/{run}")),
        (Method::POST, format!("/v1/runs/{run}/cancel")),
        (Method::GET, format!("/v1/runs/{run}/logs")),
        (Method::GET, format!("/v1/runs/{run}/artifacts")),
        (Method::GET, format!("/v1/runs/{run}/artifacts/output.log")),
        (Method::GET, "/v1/fleet".into()),
    ]
}

#[tokio::test]
async fn missing_or_bad_keys_are_401_everywhere() {
    let api = start().await;
    let run = api.dispatch("fake", "x").await;
    let bad_headers: [Option<String>; 6] = [
        None,
        Some(String::new()),
        Some(format!("Basic {}", api.acme_key)),
        Some(api.acme_key.clone()),
        Some("Bearer op_live_0000000000000000000000000000000000000000000000000000000000000000".into()),
        Some(format!("Bearer {}x", api.acme_key)),
    ];
    for (method, path) in protected(run.as_str()) {
        for header in &bad_headers {
            let mut req = api.http.request(method.clone(), api.url(&path));
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            if method == Method::POST {
                req = req.json(&dispatch_request("fake", "x"));
            }
            let resp = req.send().await.expect("send");
            assert_eq!(
                resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{method} {path}"
            );
            let (status, code, _, message) = error_of(resp).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "unauthorized"),
                "{method} {path} {header:?}"
            );
            assert!(!message.contains(&api.acme_key), "key echoed back");
        }
    }
    // Nothing was dispatched by the refused requests.
    assert_eq!(api.backend.queue.depth().await.expect("depth").visible, 1);
    // The typed client says the same.
    let e = api.anonymous().fleet().await.expect_err("no key");
    assert_eq!((e.status(), e.code()), (Some(401), Some("unauthorized")));
    // The scheme is case-insensitive.
    let resp = api
        .http
        .get(api.url("/v1/fleet"))
        .header("authorization", format!("bearer {}", api.acme_key))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn health_and_openapi_need_no_key() {
    let api = start().await;
    let resp = api.http.get(api.url("/health")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let health: Value = resp.json().await.expect("json");
    assert_eq!(health["status"], "ok");
    let resp = api.http.get(api.url("/v1/openapi.json")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn other_tenants_runs_do_not_exist() {
    let api = start().await;
    let run = api.dispatch("fake", "acme's secret work").await;
    let worker = api.claim(&run).await;
    api.backend
        .artifacts
        .append_log(&api.key(&run), "output.log", 0, b"acme output")
        .await
        .expect("append");
    let log = api.put(&run, "files/a.txt", b"acme file", "text/plain").await;
    api.finish(&run, &worker, outpost_core::Outcome::succeeded(), vec![log])
        .await;

    let globex = api.globex();
    let id = run.as_str();
    let checks = [
        globex.get_run(id).await.err(),
        globex.cancel_run(id).await.err(),
        globex.logs(id, 0).await.err(),
        globex.artifacts(id).await.err(),
        globex.artifact(id, "files/a.txt").await.err(),
    ];
    for e in checks {
        let e = e.expect("refused");
        assert_eq!((e.status(), e.code()), (Some(404), Some("not_found")), "{e}");
        assert!(!e.to_string().contains("acme"), "{e}");
    }
    // ... and look exactly like a run that does not exist at all, or an id that does not parse.
    let unknown = globex
        .get_run("run_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .expect_err("unknown");
    let cross = globex.get_run(id).await.expect_err("cross");
    assert_eq!(unknown, cross);
    for bad in ["nope", "run_123", "run_01ARZ3NDEKTSV4RRFFQ69G5FAV%00"] {
        for path in [
            format!("/v1/runs/{bad}"),
            format!("/v1/runs/{bad}/logs"),
            format!("/v1/runs/{bad}/artifacts"),
            format!("/v1/runs/{bad}/artifacts/x"),
        ] {
            let resp = api.raw(Method::GET, &path).send().await.expect("send");
            let (status, code, _, _) = error_of(resp).await;
            assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
        }
        let resp = api
            .raw(Method::POST, &format!("/v1/runs/{bad}/cancel"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
    }
    // acme still sees it, untouched.
    let view = api.acme().get_run(id).await.expect("owner");
    assert_eq!(view.status, outpost_core::RunStatus::Succeeded);
    assert!(!view.cancel_requested);
}

#[tokio::test]
async fn every_validation_error_is_422_with_its_field() {
    let api = start().await;
    let long_task = "x".repeat(50_001);
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"agent": "nope", "task": "x"}), "unknown_agent", "agent"),
        (json!({"agent": "retired", "task": "x"}), "unknown_agent", "agent"),
        (json!({"agent": "fake", "task": ""}), "validation_failed", "task"),
        (json!({"agent": "fake", "task": "  \n "}), "validation_failed", "task"),
        (json!({"agent": "fake", "task": long_task}), "validation_failed", "task"),
        (json!({"agent": "fake", "task": "a\u{0}b"}), "validation_failed", "task"),
        (
            json!({"agent": "fake", "task": "x", "timeout_secs": 9}),
            "validation_failed",
            "timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "timeout_secs": 86_401}),
            "validation_failed",
            "timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "timeout_secs": -1}),
            "validation_failed",
            "timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "timeout_secs": "60"}),
            "validation_failed",
            "timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "idle_timeout_secs": 0}),
            "validation_failed",
            "idle_timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "idle_timeout_secs": 86_401}),
            "validation_failed",
            "idle_timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "idle_timeout_secs": -1}),
            "validation_failed",
            "idle_timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "idle_timeout_secs": "30"}),
            "validation_failed",
            "idle_timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "timeout_secs": 60, "idle_timeout_secs": 61}),
            "validation_failed",
            "idle_timeout_secs",
        ),
        (
            json!({"agent": "fake", "task": "x", "repo": "http://github.com/a/b"}),
            "validation_failed",
            "repo",
        ),
        (
            json!({"agent": "fake", "task": "x", "repo": "ext::sh -c id"}),
            "validation_failed",
            "repo",
        ),
        (
            json!({"agent": "fake", "task": "x", "repo": "https://u:tok@github.com/a/b"}),
            "validation_failed",
            "repo",
        ),
        (
            json!({"agent": "fake", "task": "x", "repo": "https://github.com/a/b", "branch": "a..b"}),
            "validation_failed",
            "branch",
        ),
        (
            json!({"agent": "fake", "task": "x", "branch": "main"}),
            "validation_failed",
            "branch",
        ),
        (json!({"task": "x"}), "validation_failed", "agent"),
        (json!({"agent": "fake"}), "validation_failed", "task"),
        (json!({"agent": 5, "task": "x"}), "validation_failed", "agent"),
        // Unknown fields are a 422 naming the field (the body is JSON, just not a dispatch).
        (
            json!({"agent": "fake", "task": "x", "priority": 1}),
            "validation_failed",
            "priority",
        ),
    ];
    for (body, code, field) in cases {
        let resp = api
            .raw(Method::POST, "/v1/runs")
            .json(&body)
            .send()
            .await
            .expect("send");
        let (status, got_code, got_field, message) = error_of(resp).await;
        assert_eq!(
            (status, got_code.as_str(), got_field.as_deref()),
            (422, code, Some(field)),
            "{body}: {message}"
        );
        assert!(message.len() < 500, "message quotes too much: {}", message.len());
    }
    let resp = api
        .raw(Method::POST, "/v1/runs")
        .json(&json!({"agent": "nope", "task": "x"}))
        .send()
        .await
        .expect("send");
    let (_, _, _, message) = error_of(resp).await;
    assert!(message.contains("claude") && message.contains("fake"), "{message}");
    assert!(
        !message.contains("retired"),
        "disabled agents are not listed: {message}"
    );
    assert_eq!(
        api.backend.queue.depth().await.expect("depth").visible,
        0,
        "nothing queued"
    );
    // 50,000 multi-byte characters are fine.
    let accepted = api
        .acme()
        .dispatch(&dispatch_request("fake", &"é".repeat(50_000)))
        .await
        .expect("limit is in characters");
    assert_eq!(accepted.status, outpost_core::RunStatus::Queued);
}

#[tokio::test]
async fn malformed_bodies_and_content_types() {
    let api = start().await;
    for body in [
        "",
        "{",
        "{\"agent\": \"fake\", \"task\": }",
        "nope",
        "{\"agent\":\"fake\",\"task\":\"x\"}}",
    ] {
        let resp = api
            .raw(Method::POST, "/v1/runs")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        let (status, code, _, _) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (400, "invalid_json"), "{body:?}");
    }
    let good = serde_json::to_string(&dispatch_request("fake", "x")).expect("json");
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let mut req = api.raw(Method::POST, "/v1/runs").body(good.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("send");
        let (status, code, _, _) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (415, "unsupported_media_type"), "{ct:?}");
    }
    let resp = api
        .raw(Method::POST, "/v1/runs")
        .header("content-type", "application/json; charset=utf-8")
        .body(good)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn bodies_over_256_kib_are_413() {
    let api = start().await;
    // Valid JSON, just too big: the size is checked before anything else about the body.
    let body = serde_json::to_vec(&json!({"agent": "fake", "task": "x".repeat(256 * 1024)})).expect("json");
    let resp = api
        .raw(Method::POST, "/v1/runs")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("send");
    let (status, code, _, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    // Also when streamed without a Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util::stream::iter(chunks);
    let resp = api
        .raw(Method::POST, "/v1/runs")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("send");
    let (status, code, _, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    // Just under the limit the body is read (and the task is refused for its length instead).
    let body = serde_json::to_vec(&json!({"agent": "fake", "task": "x".repeat(200 * 1024)})).expect("json");
    let resp = api
        .raw(Method::POST, "/v1/runs")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let (status, _, field, _) = error_of(resp).await;
    assert_eq!((status, field.as_deref()), (422, Some("task")));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let api = start().await;
    for path in [
        "/",
        "/v2/runs",
        "/v1/nope",
        "/v1/runs/run_01ARZ3NDEKTSV4RRFFQ69G5FAV/explode",
    ] {
        let resp = api.raw(Method::GET, path).send().await.expect("send");
        let (status, code, _, _) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    for (method, path) in [
        (Method::DELETE, "/v1/runs"),
        (Method::PUT, "/v1/runs/run_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        (Method::GET, "/v1/runs/run_01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel"),
        (Method::POST, "/v1/fleet"),
        (Method::POST, "/health"),
    ] {
        let resp = api.raw(method.clone(), path).send().await.expect("send");
        assert!(
            resp.headers().get("allow").is_some(),
            "{method} {path}: no Allow header"
        );
        let (status, code, _, _) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (405, "method_not_allowed"), "{method} {path}");
    }
}

#[tokio::test]
async fn openapi_document_lists_every_path() {
    let api = start().await;
    let doc: Value = api
        .http
        .get(api.url("/v1/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/v1/runs", vec!["post", "get"]),
        ("/v1/runs/{id}", vec!["get"]),
        ("/v1/runs/{id}/cancel", vec!["post"]),
        ("/v1/runs/{id}/promote", vec!["post"]),
        ("/v1/runs/{id}/logs", vec!["get"]),
        ("/v1/runs/{id}/artifacts", vec!["get"]),
        ("/v1/runs/{id}/artifacts/{name}", vec!["get"]),
        ("/v1/secrets", vec!["get"]),
        ("/v1/secrets/{name}", vec!["put", "delete"]),
        ("/v1/fleet", vec!["get"]),
        ("/health", vec!["get"]),
        ("/v1/openapi.json", vec!["get"]),
    ];
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, methods) in expected {
        for m in methods {
            assert!(paths[path][m].is_object(), "{m} {path} missing");
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"].as_str(),
        Some("bearer")
    );
    assert!(doc["security"].to_string().contains("bearer"));
    assert_eq!(paths["/health"]["get"]["security"], json!([{}]), "health is public");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "DispatchRequest",
        "DispatchAccepted",
        "RunView",
        "RunList",
        "ArtifactView",
        "FleetStatus",
        "ErrorBody",
        "Health",
        "RunStatus",
        "Usage",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    // The agent's report and the idle timeout are documented fields.
    assert!(
        schemas["DispatchRequest"]["properties"]["idle_timeout_secs"].is_object(),
        "{}",
        schemas["DispatchRequest"]
    );
    let run_view = &schemas["RunView"]["properties"];
    for field in ["idle_timeout_secs", "result", "agent_error", "usage", "session_id"] {
        assert!(run_view[field].is_object(), "RunView.{field} undocumented: {run_view}");
    }
    assert!(
        run_view["usage"].to_string().contains("#/components/schemas/Usage"),
        "{}",
        run_view["usage"]
    );
    let agent_view = &schemas["AgentView"]["properties"];
    for field in ["executor", "in_flight", "available", "availability"] {
        assert!(
            agent_view[field].is_object(),
            "AgentView.{field} undocumented: {agent_view}"
        );
    }
    assert!(
        schemas["ExecutorKind"].to_string().contains("ssm"),
        "{}",
        schemas["ExecutorKind"]
    );
    let usage = &schemas["Usage"]["properties"];
    for field in [
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "cost_usd",
        "source",
    ] {
        assert!(usage[field].is_object(), "Usage.{field} undocumented: {usage}");
    }
    // The logs endpoint documents its headers.
    let log_headers = &paths["/v1/runs/{id}/logs"]["get"]["responses"]["200"]["headers"];
    for h in ["outpost-next-offset", "outpost-log-size", "outpost-run-status"] {
        assert!(log_headers[h].is_object(), "header {h} undocumented");
    }
}

#[tokio::test]
async fn fleet_shows_agents_queue_and_recent_workers() {
    let api = start().await;
    for i in 0..3 {
        api.dispatch("fake", &format!("t{i}")).await;
    }
    api.dispatch("fake", "running").await;
    // A worker takes one message and claims its run.
    let taken = api
        .backend
        .queue
        .receive(1, std::time::Duration::from_secs(60), std::time::Duration::ZERO)
        .await
        .expect("receive");
    api.claim(&taken[0].message.run_id).await;
    let now = Utc::now();
    for (slots, busy, seen_secs_ago) in [(4, 1, 1), (2, 2, 5), (8, 0, 600)] {
        api.backend
            .workers
            .report_worker(&WorkerInfo {
                id: WorkerId::generate(),
                hostname: "box".into(),
                slots,
                busy,
                started_at: now - chrono::Duration::seconds(3600),
                last_seen: now - chrono::Duration::seconds(seen_secs_ago),
                agents: Vec::new(),
            })
            .await
            .expect("report");
    }
    let fleet = api.acme().fleet().await.expect("fleet");
    let names: Vec<&str> = fleet.agents.iter().map(|a| a.name.as_str()).collect();
    assert!(
        names.contains(&"fake") && names.contains(&"claude") && names.contains(&"shell"),
        "{names:?}"
    );
    assert!(!names.contains(&"retired"), "disabled agents are not listed");
    let claude = fleet.agents.iter().find(|a| a.name == "claude").expect("claude");
    assert_eq!(claude.key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
    assert_eq!(
        (fleet.queue.visible, fleet.queue.in_flight),
        (3, 1),
        "{:?}",
        fleet.queue
    );
    assert_eq!(fleet.running, 1);
    assert_eq!(fleet.workers.len(), 2, "the stale worker is left out");
    assert_eq!((fleet.slots_total, fleet.slots_busy), (6, 3));
    assert!(
        fleet.agents.iter().all(|a| a.in_flight == 0 && a.available.is_none()),
        "no worker reported loads: {:?}",
        fleet.agents
    );
}

#[tokio::test]
async fn fleet_shows_each_agents_executor_runs_in_flight_and_availability() {
    let api = start().await;
    let now = Utc::now();
    let load = |agent: &str, in_flight: u32, available: Option<bool>, detail: Option<&str>| AgentLoad {
        agent: agent.into(),
        executor: ExecutorKind::Process,
        in_flight,
        available,
        detail: detail.map(Into::into),
    };
    let report = |seen_secs_ago: i64, agents: Vec<AgentLoad>| WorkerInfo {
        id: WorkerId::generate(),
        hostname: "box".into(),
        slots: 4,
        busy: agents.iter().map(|l| l.in_flight).sum(),
        started_at: now - chrono::Duration::seconds(3600),
        last_seen: now - chrono::Duration::seconds(seen_secs_ago),
        agents,
    };
    for info in [
        report(
            1,
            vec![
                load("fake", 1, Some(true), None),
                load("claude", 0, Some(false), Some("no key")),
            ],
        ),
        report(2, vec![load("fake", 2, Some(true), None), load("codex", 0, None, None)]),
        // Stale: left out of every sum.
        report(
            600,
            vec![load("fake", 5, Some(true), None), load("shell", 1, Some(true), None)],
        ),
    ] {
        api.backend.workers.report_worker(&info).await.expect("report");
    }
    let fleet = api.acme().fleet().await.expect("fleet");
    let of = |name: &str| fleet.agents.iter().find(|a| a.name == name).expect(name);
    let fake = of("fake");
    assert_eq!(
        (
            fake.executor,
            fake.in_flight,
            fake.available,
            fake.availability.as_deref()
        ),
        (ExecutorKind::Process, 3, Some(true), None)
    );
    let claude = of("claude");
    assert_eq!(
        (claude.in_flight, claude.available, claude.availability.as_deref()),
        (0, Some(false), Some("no key"))
    );
    let codex = of("codex");
    assert_eq!(
        (codex.in_flight, codex.available),
        (0, None),
        "reported, availability unknown"
    );
    let shell = of("shell");
    assert_eq!(
        (shell.in_flight, shell.available),
        (0, None),
        "only a stale worker reports it"
    );
    assert_eq!(fleet.workers.len(), 2);
    let first = fleet
        .workers
        .iter()
        .find(|w| w.agents.iter().any(|a| a.agent == "claude"))
        .expect("the worker reporting claude");
    assert_eq!(first.agents.len(), 2);

    // On the wire: snake_case executors, absent when unknown.
    let raw: Value = api
        .http
        .get(api.url("/v1/fleet"))
        .bearer_auth(&api.acme_key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let agents = raw["agents"].as_array().expect("agents");
    let fake = agents.iter().find(|a| a["name"] == "fake").expect("fake");
    assert_eq!(
        (&fake["executor"], &fake["in_flight"], &fake["available"]),
        (&json!("process"), &json!(3), &json!(true))
    );
    let shell = agents.iter().find(|a| a["name"] == "shell").expect("shell");
    assert!(
        shell.get("available").is_none() && shell.get("availability").is_none(),
        "{shell}"
    );
}
