//! Commands that work on a backend directly (no API): key creation and AWS provisioning.

use anyhow::Context;
use outpost_config::Settings;
use outpost_core::ports::{keys::CreatedKey, Backend};
use outpost_core::{ApiKeyKind, TenantId};
use std::process::ExitCode;

/// Creates a key for `tenant` and stores its hash.
pub async fn new_key(backend: &Backend, tenant: TenantId, test: bool) -> anyhow::Result<CreatedKey> {
    let kind = if test { ApiKeyKind::Test } else { ApiKeyKind::Live };
    let key = CreatedKey::generate(tenant, kind);
    backend.keys.insert_key(&key).await.context("cannot store the key")?;
    Ok(key)
}

/// `outpost keys create`: prints a short note, then the key as the last line of stdout.
pub async fn create_key(settings: &Settings, tenant: &str, test: bool) -> anyhow::Result<ExitCode> {
    let tenant: TenantId = tenant.parse()?;
    let opened = settings.open_backend().await?;
    let key = new_key(&opened.backend, tenant.clone(), test).await?;
    println!("Created an API key for tenant {tenant}. It is shown once; only its hash is stored:");
    println!("{}", key.expose());
    Ok(ExitCode::SUCCESS)
}

/// `outpost aws provision`: creates the table, queues and bucket of a deployment through the AWS
/// SDK (for emulators and quick trials; production uses the template in `infra/`), then prints
/// the variables that select it.
#[cfg(feature = "aws")]
pub async fn aws_provision(name: &str, max_receive_count: u32) -> anyhow::Result<ExitCode> {
    use outpost_aws::provision::{provision, ProvisionOptions};
    let clients = outpost_aws::AwsClients::from_env(None).await;
    let opts = ProvisionOptions {
        name: name.to_owned(),
        max_receive_count,
    };
    let settings = provision(&clients, &opts).await?;
    println!("# Created. Select this deployment with:");
    println!("export OUTPOST_BACKEND=aws");
    println!("export OUTPOST_TABLE={}", settings.table);
    println!("export OUTPOST_QUEUE_URL={}", settings.queue_url);
    println!("export OUTPOST_DLQ_URL={}", settings.dead_letter_queue_url);
    println!("export OUTPOST_BUCKET={}", settings.bucket);
    Ok(ExitCode::SUCCESS)
}

/// `outpost aws provision` in a build without the AWS backend.
#[cfg(not(feature = "aws"))]
pub async fn aws_provision(_name: &str, _max_receive_count: u32) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this outpost was built without AWS support: build it with `--features aws`")
}
