//! `outpost dev` (API + worker pool in one process over the embedded adapters) and
//! `outpost worker` (a worker process over the same data dir).

use crate::local::new_key;
use anyhow::Context;
use ingest_lambda::settings::api_config;
use ingest_lambda::{router, AppState};
use outpost_config::Settings;
use outpost_core::TenantId;
use outpost_worker::{Worker, WorkerConfig, WorkerError};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The tenant `outpost dev` creates on first start.
pub const DEV_TENANT: &str = "dev";

/// Prints the start-up banner; a closed stdout must not bring the server down.
fn print_banner(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// Logs as the settings say (`--log-format`: text on embedded, JSON on AWS, unless set).
fn init_tracing(settings: &Settings) {
    outpost_config::telemetry::init_logs(
        "warn,outpost=info,outpost_worker=info,ingest_lambda=info",
        settings.json_logs(),
    );
}

/// Resolves on SIGINT or SIGTERM or when `token` is cancelled, and cancels `token`.
async fn shutdown_signal(token: CancellationToken) {
    tokio::select! {
        () = outpost_config::telemetry::shutdown_signal() => {}
        () = token.cancelled() => {}
    }
    token.cancel();
}

pub async fn run_dev(settings: &Settings) -> anyhow::Result<ExitCode> {
    init_tracing(settings);
    let agents = Arc::new(settings.agents()?);
    let opened = settings.open_backend().await?;
    let api_config = api_config(settings, &opened, false);
    let description = opened.description;
    let backend = opened.backend;

    let listen = &settings.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // The dev key is made only once the address is ours, so a failed start never stores a key
    // that nobody was shown.
    let dev_tenant: TenantId = DEV_TENANT.parse()?;
    let fresh_key = if backend.keys.tenant_has_keys(&dev_tenant).await? {
        None
    } else {
        Some(new_key(&backend, dev_tenant.clone(), false).await?)
    };
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let mut config = WorkerConfig::from_settings(settings);
    // Agents with `network = "open"` may not call this API (its real port, also when 0 was asked).
    if !config.sandbox.protected_ports.contains(&addr.port()) {
        config.sandbox.protected_ports.push(addr.port());
    }
    let slots = config.slots;

    let mut banner = vec![
        "Outpost dev is running".to_owned(),
        format!("  URL:      {url}"),
        format!("  Backend:  {description}"),
        format!("  Workers:  {slots} slots in this process"),
        format!("  Agents:   {}", agents.enabled_names().join(", ")),
    ];
    match &fresh_key {
        Some(key) => {
            banner.push(format!(
                "  API key:  {} (tenant {DEV_TENANT}; shown once, save it)",
                key.expose()
            ));
            banner.push(String::new());
            banner.push("Try it:".to_owned());
            banner.push(format!("  export OUTPOST_URL={url} OUTPOST_API_KEY={}", key.expose()));
        }
        None => {
            banner.push(format!(
                "  API key:  printed at first start (`outpost keys create --tenant {DEV_TENANT}` makes another)"
            ));
            banner.push(String::new());
            banner.push("Try it:".to_owned());
            banner.push(format!("  export OUTPOST_URL={url} OUTPOST_API_KEY=<your key>"));
        }
    }
    banner.push("  outpost dispatch --agent shell --wait 'echo hello from outpost; ls -la'".to_owned());
    banner.push(String::new());

    print_banner(&banner);

    let token = CancellationToken::new();
    let state = AppState::new(backend.clone(), agents.clone(), api_config);
    let app = router(state);
    let server_token = token.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_token.cancelled().await })
            .await
    });

    let worker = if slots > 0 {
        let worker = Worker::new(backend, agents, config);
        let worker_token = token.clone();
        Some(tokio::spawn(async move {
            worker.run(async move { worker_token.cancelled().await }).await
        }))
    } else {
        None
    };
    supervise(token, server, worker).await
}

/// Waits for a signal, or for the server or the worker to stop by itself (an error), then shuts
/// both down: the server stops accepting, the worker drains its in-flight runs. The first error
/// is returned after the other part has stopped.
async fn supervise(
    token: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    worker: Option<JoinHandle<Result<(), WorkerError>>>,
) -> anyhow::Result<ExitCode> {
    let mut server = Some(server);
    let mut worker = worker;
    let mut first_error: Option<anyhow::Error> = None;
    let worker_done = async {
        match worker.as_mut() {
            Some(w) => w.await,
            None => std::future::pending().await,
        }
    };
    let server_done = async {
        match server.as_mut() {
            Some(s) => s.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown_signal(token.clone()) => {}
        r = server_done => {
            server = None;
            first_error = Some(server_error(r));
        }
        r = worker_done => {
            worker = None;
            first_error = Some(worker_error(r));
        }
    }
    token.cancel();
    tracing::info!("shutting down: draining in-flight runs");
    if let Some(w) = worker {
        if let Err(e) = w
            .await
            .map_err(anyhow::Error::new)
            .and_then(|r| r.map_err(anyhow::Error::new))
        {
            first_error.get_or_insert(e);
        }
    }
    if let Some(s) = server {
        if let Err(e) = s
            .await
            .map_err(anyhow::Error::new)
            .and_then(|r| r.map_err(anyhow::Error::new))
        {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn server_error(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("the API server stopped unexpectedly"),
        Ok(Err(e)) => anyhow::Error::new(e).context("the API server failed"),
        Err(e) => anyhow::Error::new(e).context("the API server task panicked"),
    }
}

fn worker_error(r: Result<Result<(), WorkerError>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("the worker pool stopped unexpectedly"),
        Ok(Err(e)) => anyhow::Error::new(e).context("the worker pool failed"),
        Err(e) => anyhow::Error::new(e).context("the worker task panicked"),
    }
}

pub async fn run_worker(settings: &Settings) -> anyhow::Result<ExitCode> {
    init_tracing(settings);
    settings.require_slots()?;
    let agents = Arc::new(settings.agents()?);
    let opened = settings.open_backend().await?;
    let config = WorkerConfig::from_settings(settings);
    let worker = Worker::new(opened.backend, agents, config);
    println!("Outpost worker {} is running ({})", worker.id(), opened.description);
    let token = CancellationToken::new();
    let worker_token = token.clone();
    let handle = tokio::spawn(async move { worker.run(async move { worker_token.cancelled().await }).await });
    shutdown_signal(token).await;
    handle.await.context("worker task panicked")??;
    Ok(ExitCode::SUCCESS)
}
