//! The remote executors' settings (flags and the variables `infra/outpost.yaml` sets on the
//! worker service) and the [`Dispatcher`] they build. A worker has the ECS executor when
//! `OUTPOST_ECS_CLUSTER` is set, the SSM executor when `OUTPOST_SSM_HOST_TAG` or
//! `OUTPOST_SSM_HOST_IDS` is; with neither, entries of those executors are refused
//! (`executor_unavailable`, with a note).

use super::dispatch::{DispatchConfig, Dispatcher};
use outpost_aws::ecs::{EcsConfig, EcsLauncher};
use outpost_aws::s3::S3ArtifactStore;
use outpost_aws::ssm_exec::{HostSource, SsmConfig, SsmLauncher};
use outpost_aws::AwsSettings;
use outpost_core::domain::WorkerId;
use outpost_core::ports::{Backend, RemoteLauncher};
use std::sync::Arc;
use std::time::Duration;

/// Settings of the remote executors.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RemoteArgs {
    /// The ECS cluster of per-run agent tasks (enables the `ecs` executor).
    #[arg(long, env = "OUTPOST_ECS_CLUSTER")]
    pub ecs_cluster: Option<String>,
    /// Subnets of the agent tasks.
    #[arg(long, env = "OUTPOST_ECS_SUBNETS", value_delimiter = ',')]
    pub ecs_subnets: Vec<String>,
    /// Security groups of the agent tasks.
    #[arg(long, env = "OUTPOST_ECS_SECURITY_GROUPS", value_delimiter = ',')]
    pub ecs_security_groups: Vec<String>,
    /// Give agent tasks a public IP (public subnets without NAT).
    #[arg(long, env = "OUTPOST_ECS_ASSIGN_PUBLIC_IP", num_args = 0..=1, default_missing_value = "true")]
    pub ecs_assign_public_ip: Option<bool>,
    /// A capacity provider (e.g. FARGATE_SPOT) instead of launch type FARGATE.
    #[arg(long, env = "OUTPOST_ECS_CAPACITY_PROVIDER")]
    pub ecs_capacity_provider: Option<String>,
    /// Agents' task definition families are `{prefix}{agent}`. Default: outpost-agent-
    #[arg(long, env = "OUTPOST_ECS_TASK_FAMILY_PREFIX")]
    pub ecs_task_family_prefix: Option<String>,
    /// SSM agent hosts by tag, `Key=Value` (enables the `ssm` executor).
    #[arg(long, env = "OUTPOST_SSM_HOST_TAG", value_name = "KEY=VALUE")]
    pub ssm_host_tag: Option<String>,
    /// SSM agent hosts by instance id (enables the `ssm` executor).
    #[arg(long, env = "OUTPOST_SSM_HOST_IDS", value_delimiter = ',')]
    pub ssm_host_ids: Vec<String>,
    /// The entrypoint on the SSM hosts. Default: /usr/local/bin/outpost-worker
    #[arg(long, env = "OUTPOST_SSM_ENTRYPOINT")]
    pub ssm_entrypoint: Option<String>,
    /// The unprivileged user the entrypoint runs as on the hosts. Default: outpost
    #[arg(long, env = "OUTPOST_SSM_RUN_AS")]
    pub ssm_run_as: Option<String>,
    /// The hosts' folder for run workspaces. Default: /var/lib/outpost/runs
    #[arg(long, env = "OUTPOST_SSM_WORK_DIR")]
    pub ssm_work_dir: Option<String>,
    /// Where SSM writes the commands' own output in the artifacts bucket. Default: ssm-output/
    #[arg(long, env = "OUTPOST_SSM_OUTPUT_PREFIX")]
    pub ssm_output_prefix: Option<String>,
    /// Milliseconds between polls of remote executions (DescribeTasks, GetCommandInvocation).
    /// Default: 5000
    #[arg(long, env = "OUTPOST_REMOTE_POLL_MS")]
    pub remote_poll_ms: Option<u64>,
    /// Seconds a remote run gets beyond its timeout to start and store its artifacts. Default: 600
    #[arg(long, env = "OUTPOST_REMOTE_START_SLACK_SECS")]
    pub remote_start_slack_secs: Option<u64>,
    /// Seconds between reconciliation sweeps (orphaned tasks and commands stopped). Default: 300
    #[arg(long, env = "OUTPOST_REMOTE_SWEEP_SECS")]
    pub remote_sweep_secs: Option<u64>,
}

/// Why the remote executors' settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    #[error("{0}")]
    Setting(String),
    #[error(transparent)]
    Aws(#[from] outpost_aws::AwsSetupError),
}

impl RemoteArgs {
    /// Whether any remote executor is configured.
    pub fn any(&self) -> bool {
        self.ecs_cluster.is_some() || self.ssm_host_tag.is_some() || !self.ssm_host_ids.is_empty()
    }

    /// The launchers these settings ask for, with `sdk`'s clients.
    pub fn launchers(
        &self,
        sdk: &aws_config::SdkConfig,
        backend: &Backend,
        aws: &AwsSettings,
    ) -> Result<Vec<Arc<dyn RemoteLauncher>>, RemoteConfigError> {
        let poll = self.remote_poll_ms.map(Duration::from_millis);
        let mut out: Vec<Arc<dyn RemoteLauncher>> = Vec::new();
        if let Some(cluster) = &self.ecs_cluster {
            if self.ecs_subnets.is_empty() {
                return Err(RemoteConfigError::Setting(
                    "OUTPOST_ECS_SUBNETS is empty: ECS agent tasks need at least one subnet".into(),
                ));
            }
            let mut c = EcsConfig::new(
                cluster.clone(),
                self.ecs_subnets.clone(),
                self.ecs_security_groups.clone(),
                self.ecs_task_family_prefix
                    .clone()
                    .unwrap_or_else(|| "outpost-agent-".to_owned()),
                aws.secrets_prefix.clone(),
            );
            c.assign_public_ip = self.ecs_assign_public_ip.unwrap_or(false);
            c.capacity_provider = self.ecs_capacity_provider.clone();
            if let Some(p) = poll {
                c.poll_interval = p;
            }
            let client = aws_sdk_ecs::Client::new(sdk);
            out.push(Arc::new(EcsLauncher::new(client, Arc::clone(&backend.secrets), c)));
        }
        let hosts = match (&self.ssm_host_tag, self.ssm_host_ids.is_empty()) {
            (Some(_), false) => {
                return Err(RemoteConfigError::Setting(
                    "set OUTPOST_SSM_HOST_TAG or OUTPOST_SSM_HOST_IDS, not both".into(),
                ))
            }
            (Some(tag), true) => match tag.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Some(HostSource::Tag {
                    key: k.trim().to_owned(),
                    value: v.trim().to_owned(),
                }),
                _ => {
                    return Err(RemoteConfigError::Setting(format!(
                        "OUTPOST_SSM_HOST_TAG must be Key=Value, got {tag:?}"
                    )))
                }
            },
            (None, false) => Some(HostSource::Ids(self.ssm_host_ids.clone())),
            (None, true) => None,
        };
        if let Some(hosts) = hosts {
            let mut c = SsmConfig::new(hosts, aws.bucket.clone());
            if let Some(v) = &self.ssm_entrypoint {
                c.entrypoint = v.clone();
            }
            if let Some(v) = &self.ssm_run_as {
                c.run_as = unprivileged_user(v)?.to_owned();
            }
            if let Some(v) = &self.ssm_work_dir {
                c.work_dir = v.clone();
            }
            if let Some(v) = &self.ssm_output_prefix {
                c.output_prefix = v.clone();
            }
            if let Some(p) = poll {
                c.poll_interval = p;
            }
            out.push(Arc::new(SsmLauncher::new(aws_sdk_ssm::Client::new(sdk), c)));
        }
        Ok(out)
    }

    /// The worker's dispatcher, when a remote executor is configured; AWS settings from the
    /// environment (`OUTPOST_BUCKET`, `OUTPOST_SSM_PREFIX`), the SDK's default chain.
    pub async fn dispatcher(
        &self,
        backend: &Backend,
        worker: &WorkerId,
    ) -> Result<Option<Dispatcher>, RemoteConfigError> {
        if !self.any() {
            return Ok(None);
        }
        let aws = AwsSettings::from_env()?;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        let launchers = self.launchers(&sdk, backend, &aws)?;
        let s3 = S3ArtifactStore::new(aws_sdk_s3::Client::new(&sdk), aws.bucket.clone(), aws.presign_expiry);
        let mut config = DispatchConfig {
            secrets_prefix: aws.secrets_prefix.clone(),
            ..DispatchConfig::default()
        };
        if let Some(s) = self.remote_start_slack_secs {
            config.start_slack = Duration::from_secs(s);
        }
        if let Some(s) = self.remote_sweep_secs {
            config.sweep_interval = Duration::from_secs(s.max(1));
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
}

/// `OUTPOST_SSM_RUN_AS`, refused when it names root: the entrypoint and its agent run
/// unprivileged on a host, where root would hold the host's credentials and every run's files.
fn unprivileged_user(name: &str) -> Result<&str, RemoteConfigError> {
    match name.trim() {
        "" | "root" | "0" => Err(RemoteConfigError::Setting(format!(
            "OUTPOST_SSM_RUN_AS must name an unprivileged user, got {name:?}"
        ))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssm_user_is_never_root() {
        for bad in ["root", " root ", "0", ""] {
            let err = unprivileged_user(bad).expect_err(bad).to_string();
            assert!(
                err.contains("OUTPOST_SSM_RUN_AS must name an unprivileged user"),
                "{err}"
            );
        }
        assert_eq!(unprivileged_user(" outpost ").expect("a user"), "outpost");
        assert_eq!(unprivileged_user("nobody").expect("a user"), "nobody");
    }
}
