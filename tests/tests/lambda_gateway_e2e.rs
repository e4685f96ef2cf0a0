//! End-to-end: the real `ingest-lambda` binary as a Lambda function behind the emulated API
//! Gateway HTTP API (`outpost_testkit::lambda_gateway`), over the embedded backend; and the
//! emulator's own error paths, with the test playing the function over the Runtime API.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use outpost_api::client::{ClientError, OutpostClient};
use outpost_api::DispatchRequest;
use outpost_core::RunStatus;
use outpost_testkit::lambda_gateway::{GatewayConfig, LambdaFunction, LambdaGateway, MAX_EVENT_BYTES};
use outpost_tests::{ingest_lambda_bin, AppOptions, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The API in `instances` Lambda instances over a fresh embedded data dir, with a key of `acme`.
struct LambdaApi {
    app: TestApp,
    key: String,
}

impl LambdaApi {
    async fn start(instances: usize) -> anyhow::Result<Self> {
        let app = TestApp::spawn(AppOptions::lambda().instances(instances).function_arg("--allow-shell")).await?;
        let key = app.api_key.clone();
        Ok(Self { app, key })
    }

    fn gateway(&self) -> &LambdaGateway {
        self.app.gateway().expect("a Lambda front")
    }

    fn client(&self) -> anyhow::Result<OutpostClient> {
        self.app.client()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.url)
    }
}

fn assert_api_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn api_serves_through_lambda_and_api_gateway() -> anyhow::Result<()> {
    let api = LambdaApi::start(1).await?;
    let http = reqwest::Client::new();

    let health = http.get(api.url("/health")).send().await?;
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("apigw-requestid"));
    assert_eq!(health.json::<Value>().await?["status"], "ok");

    // Dispatch and read back through the typed client, unchanged.
    let client = api.client()?;
    let accepted = client
        .dispatch(&DispatchRequest {
            agent: "shell".into(),
            task: "echo hi".into(),
            repo: None,
            branch: None,
            timeout_secs: None,
            idle_timeout_secs: None,
        })
        .await?;
    assert_eq!(accepted.status, RunStatus::Queued);
    let run = client.get_run(&accepted.id).await?;
    assert_eq!(run.id, accepted.id);
    assert_eq!(run.status, RunStatus::Queued);

    // Raw dispatch: 202 with the run id.
    let raw = http
        .post(api.url("/v1/runs"))
        .bearer_auth(&api.key)
        .json(&json!({"agent": "shell", "task": "echo hi"}))
        .send()
        .await?;
    assert_eq!(raw.status(), 202);
    let raw: Value = raw.json().await?;
    assert!(raw["id"].as_str().is_some_and(|id| id.starts_with("run_")), "{raw}");

    // A body that does not fit: the API's error shape survives the trip.
    let bad = http
        .post(api.url("/v1/runs"))
        .bearer_auth(&api.key)
        .json(&json!({"agent": "shell"}))
        .send()
        .await?;
    assert_eq!(bad.status(), 422);
    assert_api_error(&bad.json().await?, "validation_failed");

    // No key.
    let anonymous = http.get(api.url(&format!("/v1/runs/{}", accepted.id))).send().await?;
    assert_eq!(anonymous.status(), 401);
    assert_api_error(&anonymous.json().await?, "unauthorized");
    match OutpostClient::new(&api.app.url, None)?.get_run(&accepted.id).await {
        Err(ClientError::Api { status: 401, .. }) => {}
        other => panic!("expected a 401 API error, got {other:?}"),
    }

    // Not UTF-8: the gateway base64-encodes it, lambda_http decodes it, axum sees the bytes.
    let binary = http
        .post(api.url("/v1/runs"))
        .bearer_auth(&api.key)
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe, b'{', 0x80])
        .send()
        .await?;
    assert_eq!(binary.status(), 400);
    assert_api_error(&binary.json().await?, "invalid_json");

    assert_eq!(api.gateway().invocations(), 8);
    assert!(api.gateway().function_errors().is_empty());
    Ok(())
}

#[tokio::test]
async fn two_instances_both_serve_requests() -> anyhow::Result<()> {
    let api = LambdaApi::start(2).await?;
    let http = reqwest::Client::new();
    let requests = (0..8).map(|_| http.get(api.url("/health")).send());
    let mut api_ids = HashSet::new();
    for response in futures_join_all(requests).await {
        let response = response?;
        assert_eq!(response.status(), 200);
        let id = response.headers()["apigw-requestid"].to_str()?.to_owned();
        api_ids.insert(id);
    }
    assert_eq!(api_ids.len(), 8, "API Gateway request ids are unique");

    let deliveries = api.gateway().deliveries();
    assert_eq!(api.gateway().invocations(), 8);
    let instances: HashSet<usize> = deliveries.iter().map(|d| d.instance).collect();
    assert_eq!(instances, HashSet::from([0, 1]), "{deliveries:?}");
    let aws_ids: HashSet<&str> = deliveries.iter().map(|d| d.aws_request_id.as_str()).collect();
    assert_eq!(aws_ids.len(), 8);
    let delivered_api_ids: HashSet<String> = deliveries.iter().map(|d| d.api_request_id.clone()).collect();
    assert_eq!(delivered_api_ids, api_ids);
    Ok(())
}

/// Awaits all futures concurrently (no `futures` crate needed).
async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn a_function_that_exits_during_init_fails_start_and_its_output_is_logged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("function.log");
    let function = LambdaFunction {
        // The embedded backend over a data dir that cannot exist: the binary refuses to start.
        env: vec![
            ("OUTPOST_BACKEND".to_owned(), "embedded".to_owned()),
            ("OUTPOST_DATA".to_owned(), "/dev/null/outpost".to_owned()),
        ],
        ..LambdaFunction::new(ingest_lambda_bin()?)
    };
    let config = GatewayConfig {
        function_log: Some(log.clone()),
        ..GatewayConfig::default()
    };
    let error = match LambdaGateway::start_with(function, config).await {
        Ok(_) => panic!("start should fail"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("exited during init"), "{error}");
    let output = std::fs::read_to_string(&log)?;
    assert!(
        output.contains("cannot create the data directory /dev/null/outpost"),
        "{output}"
    );
    Ok(())
}

/// lambda_http 1.3 turns a response body into a JSON string (not base64) when its content type is
/// `text/*`, JSON, XML… and decodes it lossily, so non-UTF-8 bytes of logs and `text/plain`
/// artifacts would come back as U+FFFD (11 bytes in, 15 out). The Lambda entry point relabels such
/// bodies (`ingest_lambda::lambda`); this checks every byte survives the real binary.
#[tokio::test]
async fn non_utf8_logs_survive_the_lambda() -> anyhow::Result<()> {
    let app = TestApp::spawn(
        AppOptions::lambda()
            .agents_toml("[agents.sh]\ncommand = [\"sh\", \"-c\", \"{prompt}\"]\n")
            .slots(1),
    )
    .await?;
    let client = app.client()?;
    let accepted = client
        .dispatch(&DispatchRequest {
            agent: "sh".into(),
            task: r"printf 'A\377\376B caf\303\251\n'".into(),
            repo: None,
            branch: None,
            timeout_secs: None,
            idle_timeout_secs: None,
        })
        .await?;
    app.wait_terminal(&accepted.id, Duration::from_secs(20)).await?;
    let expected: &[u8] = b"A\xff\xfeB caf\xc3\xa9\n";
    assert_eq!(client.logs(&accepted.id, 0).await?.data.as_ref(), expected);
    assert_eq!(client.artifact(&accepted.id, "output.log").await?.as_ref(), expected);
    Ok(())
}

// --- The emulator's own paths: the test plays the function over the Runtime API. ---

/// The gateway with one Runtime API endpoint and no process.
async fn bare_gateway(integration_timeout: Duration) -> anyhow::Result<(LambdaGateway, String)> {
    let config = GatewayConfig {
        integration_timeout,
        ..GatewayConfig::default()
    };
    let gateway = LambdaGateway::without_function(1, config).await?;
    let runtime = format!(
        "http://{}/2018-06-01/runtime",
        gateway.runtime_api(0).expect("endpoint 0")
    );
    Ok((gateway, runtime))
}

/// `GET /invocation/next`: (request id, event).
async fn next_event(
    http: &reqwest::Client,
    runtime: &str,
) -> anyhow::Result<(String, reqwest::header::HeaderMap, Value)> {
    let response = http.get(format!("{runtime}/invocation/next")).send().await?;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let id = headers["lambda-runtime-aws-request-id"].to_str()?.to_owned();
    Ok((id, headers, response.json().await?))
}

#[tokio::test]
async fn runtime_api_delivers_events_and_returns_responses() -> anyhow::Result<()> {
    let (gateway, runtime) = bare_gateway(Duration::from_secs(10)).await?;
    let http = reqwest::Client::new();
    let front = tokio::spawn(
        http.post(format!("{}/upload/x?a=1", gateway.url()))
            .header("content-type", "application/octet-stream")
            .header("cookie", "session=abc")
            .body(vec![0u8, 1, 2, 255])
            .send(),
    );

    let (id, headers, event) = next_event(&http, &runtime).await?;
    for name in [
        "lambda-runtime-deadline-ms",
        "lambda-runtime-invoked-function-arn",
        "lambda-runtime-trace-id",
    ] {
        assert!(headers.contains_key(name), "{name} missing: {headers:?}");
    }
    assert!(headers["lambda-runtime-invoked-function-arn"]
        .to_str()?
        .starts_with("arn:aws:lambda:"));
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["rawPath"], "/upload/x");
    assert_eq!(event["rawQueryString"], "a=1");
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["cookies"], json!(["session=abc"]));
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["body"], BASE64.encode([0u8, 1, 2, 255]));

    // An unknown id is refused; the right one completes the request.
    let unknown = http
        .post(format!("{runtime}/invocation/nope/response"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(unknown.status(), 400);
    let answer = json!({
        "statusCode": 201,
        "headers": {"content-type": "application/octet-stream", "x-echo": "yes"},
        "cookies": ["seen=1"],
        "body": BASE64.encode([9u8, 8, 7]),
        "isBase64Encoded": true,
    });
    let posted = http
        .post(format!("{runtime}/invocation/{id}/response"))
        .body(answer.to_string())
        .send()
        .await?;
    assert_eq!(posted.status(), 202);

    let response = front.await??;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-echo"], "yes");
    assert_eq!(response.headers()["set-cookie"], "seen=1");
    let request_id = response.headers()["apigw-requestid"].to_str()?.to_owned();
    assert_eq!(response.bytes().await?.as_ref(), [9u8, 8, 7]);
    assert_eq!(event["requestContext"]["requestId"], request_id.as_str());
    assert_eq!(gateway.invocations(), 1);
    Ok(())
}

#[tokio::test]
async fn function_error_is_502() -> anyhow::Result<()> {
    let (gateway, runtime) = bare_gateway(Duration::from_secs(10)).await?;
    let http = reqwest::Client::new();
    let front = tokio::spawn(http.get(format!("{}/health", gateway.url())).send());
    let (id, _, _) = next_event(&http, &runtime).await?;
    let posted = http
        .post(format!("{runtime}/invocation/{id}/error"))
        .header("lambda-runtime-function-error-type", "Runtime.Panic")
        .body(r#"{"errorType":"Panic","errorMessage":"boom"}"#)
        .send()
        .await?;
    assert_eq!(posted.status(), 202);
    let response = front.await??;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.json::<Value>().await?,
        json!({"message": "Internal Server Error"})
    );
    let errors = gateway.function_errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].error_type.as_str(), errors[0].message.as_str()),
        ("Panic", "boom")
    );
    Ok(())
}

#[tokio::test]
async fn response_over_6_mb_is_refused_and_502() -> anyhow::Result<()> {
    let (gateway, runtime) = bare_gateway(Duration::from_secs(10)).await?;
    let http = reqwest::Client::new();
    let front = tokio::spawn(http.get(format!("{}/big", gateway.url())).send());
    let (id, _, _) = next_event(&http, &runtime).await?;
    let huge = json!({"statusCode": 200, "body": "x".repeat(6 * 1024 * 1024 + 200)}).to_string();
    let posted = http
        .post(format!("{runtime}/invocation/{id}/response"))
        .body(huge)
        .send()
        .await?;
    assert_eq!(posted.status(), 413);
    let response = front.await??;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.json::<Value>().await?,
        json!({"message": "Internal Server Error"})
    );
    Ok(())
}

#[tokio::test]
async fn request_over_6_mb_is_413_and_never_reaches_the_function() -> anyhow::Result<()> {
    let (gateway, _runtime) = bare_gateway(Duration::from_secs(10)).await?;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/runs", gateway.url()))
        .header("content-type", "application/json")
        .body(vec![b' '; MAX_EVENT_BYTES])
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await?,
        json!({"message": "Request Entity Too Large"})
    );
    assert_eq!(gateway.invocations(), 0);
    Ok(())
}

#[tokio::test]
async fn integration_timeout_is_503_and_the_event_is_dropped() -> anyhow::Result<()> {
    let (gateway, runtime) = bare_gateway(Duration::from_millis(300)).await?;
    let http = reqwest::Client::new();
    let response = http.get(format!("{}/slow", gateway.url())).send().await?;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<Value>().await?,
        json!({"message": "Service Unavailable"})
    );

    // Nobody waits for that event any more: `next` skips it and keeps polling.
    let poll = tokio::time::timeout(Duration::from_millis(300), next_event(&http, &runtime)).await;
    assert!(poll.is_err(), "the abandoned event was delivered: {poll:?}");
    assert_eq!(gateway.invocations(), 0);
    Ok(())
}

#[tokio::test]
async fn concurrent_next_callers_each_get_one_event() -> anyhow::Result<()> {
    let (gateway, runtime) = bare_gateway(Duration::from_secs(10)).await?;
    let http = reqwest::Client::new();
    let pollers: Vec<_> = (0..3)
        .map(|_| {
            let (http, runtime) = (http.clone(), runtime.clone());
            tokio::spawn(async move {
                let (id, _, event) = next_event(&http, &runtime).await?;
                let body = json!({"statusCode": 200, "body": event["rawPath"]});
                http.post(format!("{runtime}/invocation/{id}/response"))
                    .body(body.to_string())
                    .send()
                    .await?;
                anyhow::Ok(id)
            })
        })
        .collect();
    let fronts: Vec<_> = (0..3)
        .map(|i| tokio::spawn(http.get(format!("{}/p{i}", gateway.url())).send()))
        .collect();
    for (i, front) in fronts.into_iter().enumerate() {
        let response = front.await??;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await?, format!("/p{i}"));
    }
    let mut ids = HashSet::new();
    for poller in pollers {
        ids.insert(poller.await??);
    }
    assert_eq!(ids.len(), 3);
    Ok(())
}
