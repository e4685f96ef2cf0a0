//! Test harness: the real router served over loopback on the embedded backend (SQLite in a
//! tempdir), with API keys for two tenants, and helpers to move runs along through the ports the
//! worker uses.

#![allow(dead_code)]

use ingest_lambda::{router, ApiConfig, AppState};
use outpost_api::client::OutpostClient;
use outpost_api::DispatchRequest;
use outpost_core::ports::{Backend, ClaimOutcome, CreatedKey, RunKey};
use outpost_core::{AgentRegistry, AgentSpec, ApiKeyKind, Artifact, Outcome, RunId, TenantId, WorkerId};
use std::sync::Arc;
use std::time::Duration;

/// One API server for one test.
pub struct TestApi {
    pub base: String,
    pub backend: Backend,
    pub acme: TenantId,
    pub acme_key: String,
    pub globex: TenantId,
    pub globex_key: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The agents of the tests: the built-ins (with `shell`), a `fake` one with a 60 s default and a
/// disabled `retired` one.
pub fn test_agents() -> AgentRegistry {
    let mut agents = AgentRegistry::builtin(true);
    let fake: AgentSpec = serde_json::from_value(serde_json::json!({
        "name": "fake",
        "command": ["/bin/true", "{prompt}"],
        "default_timeout_secs": 60,
        "description": "test agent"
    }))
    .expect("fake agent spec");
    let mut retired = fake.clone();
    retired.name = "retired".into();
    retired.enabled = false;
    agents.insert(fake);
    agents.insert(retired);
    agents
}

/// Opens the embedded backend in a fresh tempdir.
pub fn open_backend() -> (tempfile::TempDir, Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = outpost_embedded::open(dir.path(), Default::default()).expect("embedded backend");
    (dir, backend)
}

/// Serves the router over `backend` on 127.0.0.1:0 and creates keys for tenants `acme` and
/// `globex`.
pub async fn start() -> TestApi {
    let (dir, backend) = open_backend();
    start_with(dir, backend.clone(), backend).await
}

/// Like [`start`], but the router uses `served` (e.g. `backend` with a faulty queue) while keys
/// are created in `backend`.
pub async fn start_with(dir: tempfile::TempDir, backend: Backend, served: Backend) -> TestApi {
    let acme: TenantId = "acme".parse().expect("tenant");
    let globex: TenantId = "globex".parse().expect("tenant");
    let acme_created = CreatedKey::generate(acme.clone(), ApiKeyKind::Test);
    let globex_created = CreatedKey::generate(globex.clone(), ApiKeyKind::Live);
    backend.keys.insert_key(&acme_created).await.expect("insert acme key");
    backend
        .keys
        .insert_key(&globex_created)
        .await
        .expect("insert globex key");

    let state = AppState::new(served, Arc::new(test_agents()), ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            eprintln!("server stopped: {e}");
        }
    });
    TestApi {
        base: format!("http://{addr}"),
        backend,
        acme,
        acme_key: acme_created.expose().to_owned(),
        globex,
        globex_key: globex_created.expose().to_owned(),
        http: reqwest::Client::new(),
        dir,
        server,
    }
}

impl TestApi {
    /// A typed client for tenant `acme`.
    pub fn acme(&self) -> OutpostClient {
        OutpostClient::new(&self.base, Some(self.acme_key.clone())).expect("client")
    }

    /// A typed client for tenant `globex`.
    pub fn globex(&self) -> OutpostClient {
        OutpostClient::new(&self.base, Some(self.globex_key.clone())).expect("client")
    }

    /// A typed client without a key.
    pub fn anonymous(&self) -> OutpostClient {
        OutpostClient::new(&self.base, None).expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A raw request with acme's key.
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(&self.acme_key)
    }

    /// Dispatches a run for acme and returns its id.
    pub async fn dispatch(&self, agent: &str, task: &str) -> RunId {
        let accepted = self
            .acme()
            .dispatch(&dispatch_request(agent, task))
            .await
            .expect("dispatch");
        accepted.id.parse().expect("run id")
    }

    pub fn key(&self, run: &RunId) -> RunKey {
        RunKey {
            tenant: self.acme.clone(),
            run: run.clone(),
        }
    }

    /// Claims a queued run as a worker would; returns the worker.
    pub async fn claim(&self, run: &RunId) -> WorkerId {
        let worker = WorkerId::generate();
        match self
            .backend
            .runs
            .claim(run, &worker, Duration::from_secs(300), 3)
            .await
            .expect("claim")
        {
            ClaimOutcome::Claimed(r) => assert_eq!(&r.id, run),
            other => panic!("not claimed: {other:?}"),
        }
        worker
    }

    /// Stores `content` as artifact `name` of `run`, as the worker does before finishing.
    pub async fn put(&self, run: &RunId, name: &str, content: &[u8], content_type: &str) -> Artifact {
        let src = self.dir.path().join(format!("upload-{}", ulid_like()));
        std::fs::write(&src, content).expect("write upload");
        self.backend
            .artifacts
            .put_file(&self.key(run), name, &src, content_type)
            .await
            .expect("put_file")
    }

    /// Finishes a claimed run.
    pub async fn finish(&self, run: &RunId, worker: &WorkerId, outcome: Outcome, artifacts: Vec<Artifact>) {
        self.backend
            .runs
            .finish(run, worker, outcome, artifacts)
            .await
            .expect("finish");
    }
}

pub fn dispatch_request(agent: &str, task: &str) -> DispatchRequest {
    DispatchRequest {
        agent: agent.to_owned(),
        task: task.to_owned(),
        repo: None,
        branch: None,
        timeout_secs: None,
        idle_timeout_secs: None,
    }
}

fn ulid_like() -> String {
    RunId::generate().as_str().to_owned()
}

/// The `error` member of a JSON error answer: (status, code, field).
pub async fn error_of(resp: reqwest::Response) -> (u16, String, Option<String>, String) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/json"), "error answer is {ct:?}, not JSON");
    let body: outpost_api::ErrorBody = resp.json().await.expect("error body");
    (status, body.error.code, body.error.field, body.error.message)
}
