//! The remote executors built from their settings ([`outpost_config::remote::RemoteSettings`],
//! part of the one settings tree: flags, `OUTPOST_ECS_*` / `OUTPOST_SSM_*` / `OUTPOST_REMOTE_*`
//! variables, the settings file's `[remote]` table) and the [`Dispatcher`] they make. A worker
//! has the ECS executor when a cluster is set, the SSM executor when hosts are; with neither,
//! entries of those executors are refused (`executor_unavailable`, with a note).

use super::dispatch::{DispatchConfig, Dispatcher};
use outpost_aws::ecs::{EcsConfig, EcsLauncher};
use outpost_aws::s3::S3ArtifactStore;
use outpost_aws::ssm_exec::{HostSource, SsmConfig, SsmLauncher};
use outpost_aws::AwsSettings;
use outpost_config::remote::{RemoteSettings, SsmHosts};
use outpost_core::domain::WorkerId;
use outpost_core::ports::{Backend, RemoteLauncher};
use std::sync::Arc;

/// Why the remote executors could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    #[error(transparent)]
    Aws(#[from] outpost_aws::AwsSetupError),
}

/// The launchers `remote` asks for, with `sdk`'s clients.
pub fn launchers(
    remote: &RemoteSettings,
    sdk: &aws_config::SdkConfig,
    backend: &Backend,
    aws: &AwsSettings,
) -> Vec<Arc<dyn RemoteLauncher>> {
    let mut out: Vec<Arc<dyn RemoteLauncher>> = Vec::new();
    if let Some(e) = &remote.ecs {
        let mut c = EcsConfig::new(
            e.cluster.clone(),
            e.subnets.clone(),
            e.security_groups.clone(),
            e.task_family_prefix
                .clone()
                .unwrap_or_else(|| "outpost-agent-".to_owned()),
            aws.secrets_prefix.clone(),
        );
        c.assign_public_ip = e.assign_public_ip;
        c.capacity_provider = e.capacity_provider.clone();
        if let Some(p) = remote.poll {
            c.poll_interval = p;
        }
        let client = aws_sdk_ecs::Client::new(sdk);
        out.push(Arc::new(EcsLauncher::new(client, Arc::clone(&backend.secrets), c)));
    }
    if let Some(s) = &remote.ssm {
        let hosts = match &s.hosts {
            SsmHosts::Tag { key, value } => HostSource::Tag {
                key: key.clone(),
                value: value.clone(),
            },
            SsmHosts::Ids(ids) => HostSource::Ids(ids.clone()),
        };
        let mut c = SsmConfig::new(hosts, aws.bucket.clone());
        for (value, slot) in [
            (&s.entrypoint, &mut c.entrypoint),
            (&s.run_as, &mut c.run_as),
            (&s.work_dir, &mut c.work_dir),
            (&s.output_prefix, &mut c.output_prefix),
        ] {
            if let Some(v) = value {
                slot.clone_from(v);
            }
        }
        if let Some(p) = remote.poll {
            c.poll_interval = p;
        }
        out.push(Arc::new(SsmLauncher::new(aws_sdk_ssm::Client::new(sdk), c)));
    }
    out
}

/// The worker's dispatcher, when `remote` configures an executor; AWS settings from the
/// environment (`OUTPOST_BUCKET`, `OUTPOST_SSM_PREFIX`), the SDK's default chain.
pub async fn dispatcher(
    remote: &RemoteSettings,
    backend: &Backend,
    worker: &WorkerId,
) -> Result<Option<Dispatcher>, RemoteConfigError> {
    if !remote.any() {
        return Ok(None);
    }
    let aws = AwsSettings::from_env()?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let launchers = launchers(remote, &sdk, backend, &aws);
    let s3 = S3ArtifactStore::new(aws_sdk_s3::Client::new(&sdk), aws.bucket.clone(), aws.presign_expiry);
    let mut config = DispatchConfig {
        secrets_prefix: aws.secrets_prefix.clone(),
        ..DispatchConfig::default()
    };
    if let Some(s) = remote.start_slack {
        config.start_slack = s;
    }
    if let Some(s) = remote.sweep {
        config.sweep_interval = s;
    }
    Ok(Some(Dispatcher::new(
        launchers,
        s3,
        sdk,
        Arc::clone(&backend.runs),
        Arc::clone(&backend.artifacts),
        worker.clone(),
        config,
    )))
}
