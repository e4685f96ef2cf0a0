//! Commands that work on an embedded data dir directly (no API): key creation and the shared
//! opening of the data dir and agents registry.

use anyhow::Context;
use outpost_shared::embedded::{self, EmbeddedOptions};
use outpost_shared::ports::{keys::CreatedKey, Backend};
use outpost_shared::{AgentRegistry, ApiKeyKind, TenantId};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Opens (creating) the data dir's database and artifact folder.
pub fn open_backend(data: &Path, max_receive_count: u32) -> anyhow::Result<Backend> {
    std::fs::create_dir_all(data).with_context(|| format!("cannot create data dir {}", data.display()))?;
    let opts = EmbeddedOptions {
        max_receive_count,
        ..EmbeddedOptions::default()
    };
    embedded::open(data, opts).with_context(|| format!("cannot open data dir {}", data.display()))
}

/// Built-in agents (with `shell`, as the embedded deployment allows it) plus the operator file:
/// `explicit` if given, else `{data}/agents.toml` when it exists.
pub fn load_agents(data: &Path, explicit: Option<&PathBuf>) -> anyhow::Result<AgentRegistry> {
    let mut agents = AgentRegistry::builtin(true);
    let default_file = data.join("agents.toml");
    let file = explicit
        .cloned()
        .or_else(|| default_file.exists().then_some(default_file));
    if let Some(path) = file {
        agents.apply_file(&path)?;
    }
    Ok(agents)
}

/// Creates a key for `tenant` and stores its hash.
pub async fn new_key(backend: &Backend, tenant: TenantId, test: bool) -> anyhow::Result<CreatedKey> {
    let kind = if test { ApiKeyKind::Test } else { ApiKeyKind::Live };
    let key = CreatedKey::generate(tenant, kind);
    backend.keys.insert_key(&key).await.context("cannot store the key")?;
    Ok(key)
}

/// `outpost keys create`: prints a short note, then the key as the last line of stdout.
pub async fn create_key(data: &Path, tenant: &str, test: bool) -> anyhow::Result<ExitCode> {
    let tenant: TenantId = tenant.parse()?;
    let backend = open_backend(data, 5)?;
    let key = new_key(&backend, tenant.clone(), test).await?;
    println!("Created an API key for tenant {tenant}. It is shown once; only its hash is stored:");
    println!("{}", key.expose());
    Ok(ExitCode::SUCCESS)
}
