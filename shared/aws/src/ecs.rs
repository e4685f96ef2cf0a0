//! RemoteLauncher on ECS (Fargate): one task per run attempt, on the agent's task definition
//! `{task_family_prefix}{agent}` (container `agent`), or on a per-tenant copy of it that adds the
//! tenant's secrets.
//!
//! Requests:
//! - `start`: one listing of the tenant's secret names ([`SecretStore::list_secrets`], kept
//!   [`EcsConfig::secret_names_ttl`]), then one
//!   `RunTask` per try (capacity answers `RESOURCE:*`/`AGENT*`, throttling, 5xx and dropped
//!   connections are tried again up to [`RetryPolicy::max_tries`] with exponential backoff and
//!   jitter, the same `clientToken` `{run}-{attempt}` each time, so a retried start never makes a
//!   second task). A tenant with secrets costs, the first time in this process, one
//!   `DescribeTaskDefinition` of the base family, one of the tenant family and at most one
//!   `RegisterTaskDefinition` (cached in memory by agent, tenant and secret names).
//! - `wait`: none of its own. One watcher per launcher (a background task, started by the first
//!   `wait` and ended when nothing is watched) sends one `DescribeTasks` of up to 100 ARNs per
//!   [`EcsConfig::poll_interval`] for every watched task together.
//! - `stop`: one `StopTask` (retried like a start when throttled).
//! - `availability`: one `DescribeTaskDefinition` per agent per [`EcsConfig::availability_ttl`].
//!
//! The SDK's own retries are turned off on the client this launcher uses: the backoff above is
//! the only one, so the number of requests is the one written here.
//!
//! Secrets never travel in `RunTask`: CloudTrail records its parameters. The per-tenant revision
//! names them (`secrets: [{name: OUTPOST_SECRET_{NAME}, valueFrom: <parameter ARN>}]`) and ECS
//! reads them with the task's execution role when the task starts. The only override is
//! `OUTPOST_RUN_SPEC_URL` (a presigned URL that expires soon after); it is never logged.

use async_trait::async_trait;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerDefinition, ContainerOverride,
    KeyValuePair, LaunchType, NetworkConfiguration, Secret, Tag, Task, TaskDefinition, TaskDefinitionField,
    TaskOverride, TaskStopCode,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use outpost_core::domain::{AgentSpec, ExecutorKind, RemoteTask, TenantId};
use outpost_core::ports::{
    ActiveExecution, Availability, EndHow, LaunchError, LaunchRequest, RemoteEnd, RemoteLauncher, SecretStore,
};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The variable of the run spec's presigned URL in the task (the one container override).
pub const SPEC_URL_ENV: &str = "OUTPOST_RUN_SPEC_URL";
/// Tenant secrets reach the container as `OUTPOST_SECRET_{NAME}`.
pub const SECRET_ENV_PREFIX: &str = "OUTPOST_SECRET_";
/// Most ARNs one `DescribeTasks` takes.
pub const DESCRIBE_BATCH: usize = 100;
/// Polls an ARN may be `MISSING` in a row before its task counts as gone (right after `RunTask`,
/// `DescribeTasks` may not know the task yet).
pub const MISSING_POLLS: u32 = 3;
/// Longest `clientToken` ECS takes.
const MAX_CLIENT_TOKEN: usize = 64;
/// Longest `startedBy` ECS takes.
const MAX_STARTED_BY: usize = 128;
/// Longest `StopTask` reason ECS takes.
const MAX_STOP_REASON: usize = 255;
/// How much longer than the poll interval the watcher waits at most after failed polls.
const MAX_BACKOFF_FACTOR: u32 = 8;

/// A bounded exponential backoff with jitter: try `n` (from 1) waits, before it, a random time
/// between half and all of `min(base × 2^(n-2), max_delay)`; try 1 does not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (at least 1).
    pub max_tries: u32,
    /// The wait before the second try.
    pub base: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait before try `attempt` (1-based), with equal jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.cap(attempt).map_or(Duration::ZERO, jitter_half)
    }

    /// The wait before try `attempt` (1-based), with full jitter (anything from 0 to the cap).
    pub fn full_jitter_delay(&self, attempt: u32) -> Duration {
        self.cap(attempt).map_or(Duration::ZERO, |full| {
            let nanos = u64::try_from(full.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rand::random_range(0..=nanos))
        })
    }

    /// The longest wait before try `attempt`: `min(base × 2^(attempt-2), max_delay)`; none
    /// before the first.
    fn cap(&self, attempt: u32) -> Option<Duration> {
        (attempt > 1).then(|| {
            let factor = 1u32.checked_shl(attempt.saturating_sub(2).min(20)).unwrap_or(u32::MAX);
            self.base.saturating_mul(factor).min(self.max_delay)
        })
    }

    /// Tries in all: `max_tries`, at least one.
    pub fn tries(&self) -> u32 {
        self.max_tries.max(1)
    }
}

/// A random duration between half of `d` and `d`.
pub(crate) fn jitter_half(d: Duration) -> Duration {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let half = nanos / 2;
    Duration::from_nanos(half + rand::random_range(0..=nanos - half))
}

/// Whether an SDK failure may pass if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transience {
    /// Throttling, a 5xx, a timeout or a connection that broke: try again.
    Transient,
    /// A refusal (bad parameter, not found, no permission): trying again will not help.
    Permanent,
}

/// Error codes that mean "slow down" in the AWS JSON services.
const THROTTLING_CODES: [&str; 6] = [
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "ProvisionedThroughputExceededException",
];

/// How to treat `err` (see [`Transience`]).
pub(crate) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Transience {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Transience::Transient,
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            if service.raw().status().as_u16() >= 500 || THROTTLING_CODES.contains(&code) {
                Transience::Transient
            } else {
                Transience::Permanent
            }
        }
        _ => Transience::Permanent,
    }
}

/// A short description of an SDK failure: its code and message, or its whole cause chain.
pub(crate) fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => aws_smithy_types::error::display::DisplayErrorContext(err).to_string(),
    }
}

/// One stop request (`StopTask`, `CancelCommand`) sent by `call`, tried again under `policy`
/// while it fails transiently; the error code `gone` means the execution is unknown
/// ([`LaunchError::Gone`]).
pub(crate) async fn stop_request<T, E, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    gone: &str,
    mut call: F,
) -> Result<(), LaunchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut last = String::new();
    for attempt in 1..=policy.tries() {
        tokio::time::sleep(policy.delay(attempt)).await;
        match call().await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let why = format!("{what} failed: {}", describe(&e));
                match classify(&e) {
                    Transience::Transient => last = why,
                    Transience::Permanent if e.code() == Some(gone) => return Err(LaunchError::Gone(why)),
                    Transience::Permanent => return Err(LaunchError::Api(why)),
                }
            }
        }
    }
    Err(LaunchError::Api(last))
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the ECS launcher needs to know of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsConfig {
    /// The cluster the tasks run in (name or ARN; `OUTPOST_ECS_CLUSTER`).
    pub cluster: String,
    /// The tasks' subnets (`OUTPOST_ECS_SUBNETS`).
    pub subnets: Vec<String>,
    /// The tasks' security groups (`OUTPOST_ECS_SECURITY_GROUPS`).
    pub security_groups: Vec<String>,
    /// Give the tasks a public IP (public subnets without NAT; `OUTPOST_ECS_ASSIGN_PUBLIC_IP`).
    pub assign_public_ip: bool,
    /// A capacity provider (e.g. `FARGATE_SPOT`); launch type `FARGATE` when `None`.
    pub capacity_provider: Option<String>,
    /// The agents' task definition families are `{task_family_prefix}{agent}`, e.g.
    /// `outpost-agent-` (`OUTPOST_ECS_TASK_FAMILY_PREFIX`).
    pub task_family_prefix: String,
    /// Parameter Store prefix of the tenants' secrets (`/outpost`: `/outpost/{tenant}/{NAME}`).
    pub secrets_prefix: String,
    /// The container that runs the entrypoint (`agent`).
    pub container: String,
    /// How often the watcher describes the watched tasks.
    pub poll_interval: Duration,
    /// How `RunTask` and `StopTask` are tried again.
    pub start_retry: RetryPolicy,
    /// How long `DescribeTasks` may keep failing before the waiting tasks get
    /// [`LaunchError::Api`].
    pub patience: Duration,
    /// How long an answer of [`RemoteLauncher::availability`] is kept.
    pub availability_ttl: Duration,
    /// How long a tenant's secret names are kept (a new secret reaches its runs' tasks within
    /// this; values are read by ECS at each task's start and are never cached here).
    pub secret_names_ttl: Duration,
}

impl EcsConfig {
    /// A configuration with the defaults: container `agent`, poll every 5 s, 5 tries of
    /// `RunTask` from 1 s up to 20 s apart, 10 minutes of patience, availability kept 60 s.
    pub fn new(
        cluster: impl Into<String>,
        subnets: Vec<String>,
        security_groups: Vec<String>,
        task_family_prefix: impl Into<String>,
        secrets_prefix: impl Into<String>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            subnets,
            security_groups,
            assign_public_ip: false,
            capacity_provider: None,
            task_family_prefix: task_family_prefix.into(),
            secrets_prefix: secrets_prefix.into().trim_end_matches('/').to_owned(),
            container: "agent".to_owned(),
            poll_interval: Duration::from_secs(5),
            start_retry: RetryPolicy {
                max_tries: 5,
                base: Duration::from_secs(1),
                max_delay: Duration::from_secs(20),
            },
            patience: Duration::from_secs(10 * 60),
            availability_ttl: Duration::from_secs(60),
            secret_names_ttl: Duration::from_secs(60),
        }
    }

    /// The base task definition family of `agent`.
    pub fn base_family(&self, agent: &str) -> String {
        format!("{}{agent}", self.task_family_prefix)
    }

    /// The per-tenant family of `agent`: `{base}-t{first 8 hex digits of sha256(tenant)}`.
    pub fn tenant_family(&self, agent: &str, tenant: &TenantId) -> String {
        let digest = Sha256::digest(tenant.as_str().as_bytes());
        let short = hex::encode(&digest[..4]);
        format!("{}-t{short}", self.base_family(agent))
    }
}

/// One watched task: who waits for it and how many polls in a row it was missing.
struct Watched {
    waiters: Vec<oneshot::Sender<Result<RemoteEnd, LaunchError>>>,
    missing: u32,
}

/// The watcher's shared state.
#[derive(Default)]
struct Watch {
    tasks: HashMap<String, Watched>,
    /// Whether a watcher task is running (it clears this, under the lock, when it ends).
    running: bool,
}

type FamilyKey = (String, String, Vec<String>);

struct Inner {
    client: aws_sdk_ecs::Client,
    secrets: Arc<dyn SecretStore>,
    config: EcsConfig,
    /// Per-tenant task definition ARNs, by (agent, tenant, sorted secret names).
    families: Mutex<HashMap<FamilyKey, String>>,
    /// Each tenant's secret names, as last listed, and when.
    secret_names: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// One registration at a time, so that concurrent starts of one tenant register once.
    registering: tokio::sync::Mutex<()>,
    availability: Mutex<HashMap<String, (Instant, Availability)>>,
    watch: Mutex<Watch>,
}

/// One ECS (Fargate) task per run (see the module docs). Cheap to clone; clones share the
/// watcher and the caches.
#[derive(Clone)]
pub struct EcsLauncher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EcsLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsLauncher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl EcsLauncher {
    /// A launcher on `client` (its SDK retries are turned off; see the module docs), listing
    /// tenants' secret names through `secrets`.
    pub fn new(client: aws_sdk_ecs::Client, secrets: Arc<dyn SecretStore>, config: EcsConfig) -> Self {
        let client = aws_sdk_ecs::Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Self {
            inner: Arc::new(Inner {
                client,
                secrets,
                config,
                families: Mutex::default(),
                secret_names: Mutex::default(),
                registering: tokio::sync::Mutex::new(()),
                availability: Mutex::default(),
                watch: Mutex::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EcsConfig {
        &self.inner.config
    }

    /// How many tasks the watcher is watching now.
    pub fn watched(&self) -> usize {
        lock(&self.inner.watch).tasks.len()
    }
}

/// Region, account and partition of an ARN `arn:{partition}:{service}:{region}:{account}:…`.
fn arn_parts(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(_service), Some(region), Some(account)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (!partition.is_empty() && !region.is_empty() && !account.is_empty()).then_some((partition, region, account))
}

/// Ends the waits of a watcher that stopped abnormally (a panic, its runtime shutting down), so
/// that no wait hangs, and lets the next `wait` start a new one.
struct WatcherGuard {
    inner: Arc<Inner>,
    ended: bool,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let waiting: Vec<Watched> = {
            let mut watch = lock(&self.inner.watch);
            watch.running = false;
            watch.tasks.drain().map(|(_, w)| w).collect()
        };
        for w in waiting {
            for tx in w.waiters {
                let _ = tx.send(Err(LaunchError::Api("the ECS watcher stopped".to_owned())));
            }
        }
    }
}

/// Why a `RunTask` try did not start a task.
enum StartFailure {
    Retry(String),
    GiveUp(String),
}

impl Inner {
    /// The task definition to run for `agent` and `tenant`: the base family, or the tenant's
    /// revision when the tenant has secrets.
    async fn task_definition(&self, agent: &str, tenant: &TenantId) -> Result<String, LaunchError> {
        let names = self.secret_names(tenant).await?;
        if names.is_empty() {
            return Ok(self.config.base_family(agent));
        }
        let mut names = names;
        names.sort();
        names.dedup();
        let key = (agent.to_owned(), tenant.as_str().to_owned(), names);
        if let Some(arn) = lock(&self.families).get(&key) {
            return Ok(arn.clone());
        }
        let _one_at_a_time = self.registering.lock().await;
        if let Some(arn) = lock(&self.families).get(&key) {
            return Ok(arn.clone());
        }
        let arn = self.ensure_tenant_family(agent, tenant, &key.2).await?;
        lock(&self.families).insert(key, arn.clone());
        Ok(arn)
    }

    /// The tenant's secret names: one listing per [`EcsConfig::secret_names_ttl`].
    async fn secret_names(&self, tenant: &TenantId) -> Result<Vec<String>, LaunchError> {
        if let Some((at, names)) = lock(&self.secret_names).get(tenant.as_str()) {
            if at.elapsed() < self.config.secret_names_ttl {
                return Ok(names.clone());
            }
        }
        let names: Vec<String> = self
            .secrets
            .list_secrets(tenant)
            .await
            .map_err(|e| LaunchError::Unavailable(format!("listing the tenant's secrets failed: {e}")))?
            .into_iter()
            .map(|s| s.name.as_str().to_owned())
            .collect();
        lock(&self.secret_names).insert(tenant.as_str().to_owned(), (Instant::now(), names.clone()));
        Ok(names)
    }

    /// Describes a task definition (with its tags); `None` when ECS does not know it.
    async fn describe_definition(
        &self,
        family: &str,
    ) -> Result<Option<(TaskDefinition, Vec<Tag>)>, (Transience, String)> {
        match self
            .client
            .describe_task_definition()
            .task_definition(family)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
        {
            Ok(out) => Ok(out.task_definition.map(|td| (td, out.tags.unwrap_or_default()))),
            Err(e) if e.code() == Some("ClientException") => Ok(None),
            Err(e) => Err((classify(&e), describe(&e))),
        }
    }

    /// Finds or registers the tenant's revision: the base family's latest revision with the
    /// tenant's secrets added to the entrypoint's container. An existing latest revision of the
    /// tenant family that is exactly that is used as it is.
    async fn ensure_tenant_family(
        &self,
        agent: &str,
        tenant: &TenantId,
        names: &[String],
    ) -> Result<String, LaunchError> {
        let base_family = self.config.base_family(agent);
        let family = self.config.tenant_family(agent, tenant);
        let unavailable =
            |what: &str, (_, why): (Transience, String)| LaunchError::Unavailable(format!("{what} failed: {why}"));
        let (base, tags) = self
            .describe_definition(&base_family)
            .await
            .map_err(|e| unavailable(&format!("DescribeTaskDefinition {base_family}"), e))?
            .ok_or_else(|| LaunchError::Unavailable(format!("no task definition {base_family}")))?;
        let base_arn = base.task_definition_arn.clone().unwrap_or_default();
        let (partition, region, account) = arn_parts(&base_arn)
            .or_else(|| base.execution_role_arn.as_deref().and_then(arn_parts))
            .ok_or_else(|| {
                LaunchError::Unavailable(format!(
                    "task definition {base_family} has no ARN to take the region and account from"
                ))
            })?;
        if base.execution_role_arn.is_none() {
            return Err(LaunchError::Unavailable(format!(
                "task definition {base_family} has no execution role to read the tenant's secrets with"
            )));
        }
        let secrets: Vec<Secret> = names
            .iter()
            .map(|name| {
                Secret::builder()
                    .name(format!("{SECRET_ENV_PREFIX}{name}"))
                    .value_from(format!(
                        "arn:{partition}:ssm:{region}:{account}:parameter{}/{}/{name}",
                        self.config.secrets_prefix,
                        tenant.as_str()
                    ))
                    .build()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| LaunchError::Unavailable(format!("building the task's secrets failed: {e}")))?;
        let mut containers: Vec<ContainerDefinition> = base.container_definitions.clone().unwrap_or_default();
        let Some(agent_container) = containers
            .iter_mut()
            .find(|c| c.name.as_deref() == Some(self.config.container.as_str()))
        else {
            return Err(LaunchError::Unavailable(format!(
                "task definition {base_family} has no container {:?}",
                self.config.container
            )));
        };
        let mut all: Vec<Secret> = agent_container
            .secrets
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.name.starts_with(SECRET_ENV_PREFIX))
            .collect();
        all.extend(secrets);
        agent_container.secrets = Some(all);

        // The tenant family's latest revision, if it is already this one.
        if let Ok(Some((existing, _))) = self.describe_definition(&family).await {
            let same = existing.container_definitions.as_ref() == Some(&containers)
                && existing.execution_role_arn == base.execution_role_arn
                && existing.task_role_arn == base.task_role_arn
                && existing.cpu == base.cpu
                && existing.memory == base.memory
                && existing.status.as_ref().map(|s| s.as_str()) == Some("ACTIVE");
            if let (true, Some(arn)) = (same, existing.task_definition_arn) {
                tracing::debug!(family, "the tenant's task definition is up to date");
                return Ok(arn);
            }
        }

        let registered = self
            .client
            .register_task_definition()
            .family(&family)
            .set_container_definitions(Some(containers))
            .set_task_role_arn(base.task_role_arn.clone())
            .set_execution_role_arn(base.execution_role_arn.clone())
            .set_network_mode(base.network_mode.clone())
            .set_requires_compatibilities(base.requires_compatibilities.clone())
            .set_cpu(base.cpu.clone())
            .set_memory(base.memory.clone())
            .set_volumes(base.volumes.clone().filter(|v| !v.is_empty()))
            .set_placement_constraints(base.placement_constraints.clone().filter(|v| !v.is_empty()))
            .set_runtime_platform(base.runtime_platform.clone())
            .set_ephemeral_storage(base.ephemeral_storage.clone())
            .set_pid_mode(base.pid_mode.clone())
            .set_ipc_mode(base.ipc_mode.clone())
            .set_proxy_configuration(base.proxy_configuration.clone())
            .set_tags(Some(tags).filter(|t| !t.is_empty()))
            .send()
            .await
            .map_err(|e| {
                LaunchError::Unavailable(format!("RegisterTaskDefinition {family} failed: {}", describe(&e)))
            })?;
        let arn = registered
            .task_definition
            .and_then(|td| td.task_definition_arn)
            .ok_or_else(|| LaunchError::Unavailable(format!("RegisterTaskDefinition {family} returned no ARN")))?;
        tracing::info!(
            family,
            arn,
            secrets = names.len(),
            "registered the tenant's task definition"
        );
        Ok(arn)
    }

    /// One `RunTask` try.
    async fn run_task(&self, request: &LaunchRequest<'_>, task_definition: &str) -> Result<String, StartFailure> {
        let run = request.run;
        let config = &self.config;
        let token = format!("{}-{}", run.id.as_str(), run.attempts);
        let network = AwsVpcConfiguration::builder()
            .set_subnets(Some(config.subnets.clone()))
            .set_security_groups(Some(config.security_groups.clone()).filter(|g| !g.is_empty()))
            .assign_public_ip(if config.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| StartFailure::GiveUp(format!("bad network configuration: {e}")))?;
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&config.container)
                    .environment(
                        KeyValuePair::builder()
                            .name(SPEC_URL_ENV)
                            .value(request.spec_url)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let mut call = self
            .client
            .run_task()
            .cluster(&config.cluster)
            .task_definition(task_definition)
            .count(1)
            .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
            .overrides(overrides)
            .client_token(truncate(&token, MAX_CLIENT_TOKEN))
            .started_by(truncate(run.id.as_str(), MAX_STARTED_BY))
            .tags(tag("outpost:run", run.id.as_str()))
            .tags(tag("outpost:tenant", run.tenant.as_str()))
            .tags(tag("outpost:attempt", &run.attempts.to_string()));
        call = match &config.capacity_provider {
            Some(provider) => call.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(provider)
                    .weight(1)
                    .build()
                    .map_err(|e| StartFailure::GiveUp(format!("bad capacity provider: {e}")))?,
            ),
            None => call.launch_type(LaunchType::Fargate),
        };
        let out = match call.send().await {
            Ok(out) => out,
            Err(e) => {
                let why = format!("RunTask failed: {}", describe(&e));
                return Err(match classify(&e) {
                    Transience::Transient => StartFailure::Retry(why),
                    Transience::Permanent => StartFailure::GiveUp(why),
                });
            }
        };
        if let Some(arn) = out.tasks().iter().find_map(|t| t.task_arn()) {
            return Ok(arn.to_owned());
        }
        let reasons: Vec<String> = out
            .failures()
            .iter()
            .map(|f| {
                let reason = f.reason().unwrap_or("no reason");
                match f.detail() {
                    Some(d) if !d.is_empty() => format!("{reason} ({d})"),
                    _ => reason.to_owned(),
                }
            })
            .collect();
        let capacity = out.failures().iter().any(|f| {
            f.reason()
                .is_some_and(|r| r.starts_with("RESOURCE:") || r.starts_with("AGENT"))
        });
        let why = if reasons.is_empty() {
            "RunTask started no task and gave no reason".to_owned()
        } else {
            format!("RunTask started no task: {}", reasons.join("; "))
        };
        Err(if capacity || reasons.is_empty() {
            StartFailure::Retry(why)
        } else {
            StartFailure::GiveUp(why)
        })
    }

    /// What the end of a stopped task was.
    fn end_of(&self, task: &Task) -> RemoteEnd {
        let exit_code = task
            .containers()
            .iter()
            .find(|c| c.name() == Some(self.config.container.as_str()))
            .and_then(|c| c.exit_code());
        let stop_code = task.stop_code();
        let detail = format!(
            "{}: {}",
            stop_code.map_or("Unknown", |c| c.as_str()),
            task.stopped_reason().unwrap_or("")
        );
        let how = match (stop_code, exit_code) {
            (Some(TaskStopCode::UserInitiated), _) => EndHow::Stopped,
            (_, Some(_)) => EndHow::Exited,
            (_, None) => EndHow::Lost,
        };
        RemoteEnd { how, exit_code, detail }
    }

    /// Registers a waiter for `arn`, starting the watcher if none runs.
    fn watch(self: &Arc<Self>, arn: &str) -> oneshot::Receiver<Result<RemoteEnd, LaunchError>> {
        let (tx, rx) = oneshot::channel();
        let mut watch = lock(&self.watch);
        watch
            .tasks
            .entry(arn.to_owned())
            .or_insert_with(|| Watched {
                waiters: Vec::new(),
                missing: 0,
            })
            .waiters
            .push(tx);
        if !watch.running {
            watch.running = true;
            let inner = self.clone();
            tokio::spawn(async move { inner.watcher().await });
        }
        rx
    }

    /// The ARNs to poll now (dropping tasks nobody waits for any more); `None` (and the watcher
    /// marked as ended) when there are none.
    fn to_poll(&self) -> Option<Vec<String>> {
        let mut watch = lock(&self.watch);
        watch.tasks.retain(|_, w| {
            w.waiters.retain(|tx| !tx.is_closed());
            !w.waiters.is_empty()
        });
        if watch.tasks.is_empty() {
            watch.running = false;
            return None;
        }
        let mut arns: Vec<String> = watch.tasks.keys().cloned().collect();
        arns.sort();
        Some(arns)
    }

    /// Ends the wait of `arn` with `result`.
    fn finish(&self, arn: &str, result: Result<RemoteEnd, LaunchError>) {
        if let Some(w) = lock(&self.watch).tasks.remove(arn) {
            for tx in w.waiters {
                // A waiter that went away does not need the answer.
                let _ = tx.send(result.clone());
            }
        }
    }

    /// The shared watcher: every interval, one `DescribeTasks` per 100 watched tasks.
    async fn watcher(self: Arc<Self>) {
        let guard = WatcherGuard {
            inner: self.clone(),
            ended: false,
        };
        self.watch_loop().await;
        let mut guard = guard;
        guard.ended = true;
    }

    async fn watch_loop(&self) {
        let interval = self.config.poll_interval;
        let mut failing_since: Option<Instant> = None;
        let mut failures: u32 = 0;
        loop {
            let delay = if failures == 0 {
                interval
            } else {
                let factor = 1u32
                    .checked_shl(failures.min(10))
                    .unwrap_or(u32::MAX)
                    .min(MAX_BACKOFF_FACTOR);
                jitter_half(interval.saturating_mul(factor))
            };
            tokio::time::sleep(delay).await;
            let Some(arns) = self.to_poll() else {
                tracing::debug!("ecs watcher: nothing to watch; ending");
                return;
            };
            let mut error: Option<String> = None;
            for chunk in arns.chunks(DESCRIBE_BATCH) {
                if let Err(e) = self.poll(chunk).await {
                    error = Some(e);
                }
            }
            match error {
                None => {
                    failures = 0;
                    failing_since = None;
                }
                Some(e) => {
                    failures = failures.saturating_add(1);
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    tracing::warn!(error = %e, failures, "ecs watcher: DescribeTasks failed");
                    if since.elapsed() >= self.config.patience {
                        let why = format!("DescribeTasks kept failing for {:?}: {e}", since.elapsed());
                        let watched: Vec<String> = lock(&self.watch).tasks.keys().cloned().collect();
                        for arn in watched {
                            self.finish(&arn, Err(LaunchError::Api(why.clone())));
                        }
                        failures = 0;
                        failing_since = None;
                    }
                }
            }
        }
    }

    /// One `DescribeTasks` of `arns` (at most 100), ending the waits of the tasks that are over.
    async fn poll(&self, arns: &[String]) -> Result<(), String> {
        let out = self
            .client
            .describe_tasks()
            .cluster(&self.config.cluster)
            .set_tasks(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let mut seen: HashSet<&str> = HashSet::new();
        for task in out.tasks() {
            let Some(arn) = task.task_arn() else { continue };
            seen.insert(arn);
            if task.last_status() == Some("STOPPED") {
                let end = self.end_of(task);
                tracing::debug!(task = arn, how = ?end.how, exit_code = ?end.exit_code, detail = end.detail, "ecs task stopped");
                self.finish(arn, Ok(end));
            } else if let Some(w) = lock(&self.watch).tasks.get_mut(arn) {
                w.missing = 0;
            }
        }
        for failure in out.failures() {
            if let (Some(arn), Some(reason)) = (failure.arn(), failure.reason()) {
                if reason != "MISSING" {
                    tracing::warn!(task = arn, reason, "DescribeTasks failure for a watched task");
                }
            }
        }
        // A task neither described nor listed as failed is as good as missing (ECS says MISSING).
        for arn in arns {
            if seen.contains(arn.as_str()) {
                continue;
            }
            let gone = {
                let mut watch = lock(&self.watch);
                match watch.tasks.get_mut(arn) {
                    Some(w) => {
                        w.missing += 1;
                        w.missing >= MISSING_POLLS
                    }
                    None => false,
                }
            };
            if gone {
                self.finish(
                    arn,
                    Err(LaunchError::Gone(format!(
                        "ECS task {arn} was MISSING on {MISSING_POLLS} polls in a row"
                    ))),
                );
            }
        }
        Ok(())
    }
}

#[async_trait]
impl RemoteLauncher for EcsLauncher {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Ecs
    }

    async fn start(&self, request: LaunchRequest<'_>) -> Result<RemoteTask, LaunchError> {
        let inner = &self.inner;
        let run = request.run;
        let task_definition = inner.task_definition(&request.agent.name, &run.tenant).await?;
        let policy = inner.config.start_retry;
        let mut last = String::new();
        for attempt in 1..=policy.tries() {
            tokio::time::sleep(policy.delay(attempt)).await;
            match inner.run_task(&request, &task_definition).await {
                Ok(arn) => {
                    tracing::info!(run = %run.id, attempt = run.attempts, task = arn, task_definition, tries = attempt, "ecs task started");
                    return Ok(RemoteTask {
                        executor: ExecutorKind::Ecs,
                        id: arn,
                        host: None,
                        attempt: run.attempts,
                    });
                }
                Err(StartFailure::GiveUp(why)) => {
                    tracing::warn!(run = %run.id, reason = why, "ecs task not started");
                    return Err(LaunchError::Unavailable(why));
                }
                Err(StartFailure::Retry(why)) => {
                    tracing::info!(run = %run.id, try_ = attempt, reason = why, "ecs task not started yet; trying again");
                    last = why;
                }
            }
        }
        tracing::warn!(run = %run.id, tries = policy.tries(), reason = last, "ecs task not started; giving up");
        Err(LaunchError::Unavailable(format!(
            "gave up after {} tries: {last}",
            policy.tries()
        )))
    }

    async fn wait(&self, task: &RemoteTask) -> Result<RemoteEnd, LaunchError> {
        if task.executor != ExecutorKind::Ecs {
            return Err(LaunchError::Gone(format!("{} is not an ECS task", task.id)));
        }
        let rx = self.inner.watch(&task.id);
        rx.await
            .unwrap_or_else(|_| Err(LaunchError::Api("the ECS watcher ended without an answer".to_owned())))
    }

    async fn stop(&self, task: &RemoteTask, reason: &str) -> Result<(), LaunchError> {
        let inner = &self.inner;
        stop_request(
            inner.config.start_retry,
            "StopTask",
            "InvalidParameterException",
            || {
                inner
                    .client
                    .stop_task()
                    .cluster(&inner.config.cluster)
                    .task(&task.id)
                    .reason(truncate(reason, MAX_STOP_REASON))
                    .send()
            },
        )
        .await?;
        tracing::info!(task = task.id, "ecs task stop requested");
        Ok(())
    }

    async fn availability(&self, agent: &AgentSpec) -> Availability {
        let inner = &self.inner;
        let family = inner.config.base_family(&agent.name);
        if let Some((at, a)) = lock(&inner.availability).get(&family) {
            if at.elapsed() < inner.config.availability_ttl {
                return a.clone();
            }
        }
        let answer = match inner.describe_definition(&family).await {
            Ok(Some((td, _))) => {
                let status = td.status.as_ref().map_or("UNKNOWN", |s| s.as_str());
                Availability {
                    available: status == "ACTIVE",
                    detail: format!("task definition {family}:{} {status}", td.revision),
                }
            }
            Ok(None) => Availability {
                available: false,
                detail: format!("no task definition {family}"),
            },
            Err((_, why)) => Availability {
                available: false,
                detail: format!("DescribeTaskDefinition {family} failed: {why}"),
            },
        };
        lock(&inner.availability).insert(family, (Instant::now(), answer.clone()));
        answer
    }

    /// The newest running task started for `run` (`startedBy` is its id): one `ListTasks`.
    async fn find(&self, run: &outpost_core::domain::Run) -> Result<Option<RemoteTask>, LaunchError> {
        let inner = &self.inner;
        let page = inner
            .client
            .list_tasks()
            .cluster(&inner.config.cluster)
            .started_by(run.id.as_str())
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await
            .map_err(|e| LaunchError::Api(format!("ListTasks failed: {}", describe(&e))))?;
        Ok(page.task_arns.unwrap_or_default().pop().map(|arn| RemoteTask {
            executor: ExecutorKind::Ecs,
            id: arn,
            host: None,
            attempt: run.attempts.saturating_sub(1),
        }))
    }

    /// The cluster's running tasks tagged `outpost:run`: one `ListTasks` per 100 tasks, one
    /// `DescribeTasks` (with tags) per 100. Other tasks of the cluster are ignored.
    async fn active(&self) -> Result<Vec<ActiveExecution>, LaunchError> {
        let inner = &self.inner;
        let mut arns = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = inner
                .client
                .list_tasks()
                .cluster(&inner.config.cluster)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| LaunchError::Api(format!("ListTasks failed: {}", describe(&e))))?;
            arns.extend(page.task_arns.unwrap_or_default());
            match page.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => break,
            }
        }
        let mut out = Vec::new();
        for chunk in arns.chunks(DESCRIBE_BATCH) {
            let described = inner
                .client
                .describe_tasks()
                .cluster(&inner.config.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(aws_sdk_ecs::types::TaskField::Tags)
                .send()
                .await
                .map_err(|e| LaunchError::Api(format!("DescribeTasks failed: {}", describe(&e))))?;
            for task in described.tasks.unwrap_or_default() {
                let tag = |key: &str| {
                    task.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                        .map(str::to_owned)
                };
                let (Some(arn), Some(run_id)) = (task.task_arn.clone(), tag("outpost:run")) else {
                    continue;
                };
                let attempt = tag("outpost:attempt").and_then(|a| a.parse().ok()).unwrap_or(0);
                out.push(ActiveExecution {
                    run_id,
                    task: RemoteTask {
                        executor: ExecutorKind::Ecs,
                        id: arn,
                        host: None,
                        attempt,
                    },
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_arns() {
        let c = EcsConfig::new("c", vec![], vec![], "outpost-agent-", "/outpost/");
        assert_eq!(c.secrets_prefix, "/outpost");
        assert_eq!(c.base_family("claude"), "outpost-agent-claude");
        let tenant: TenantId = "acme".parse().expect("tenant");
        let f = c.tenant_family("claude", &tenant);
        assert!(
            f.starts_with("outpost-agent-claude-t") && f.len() == "outpost-agent-claude-t".len() + 8,
            "{f}"
        );
        assert_eq!(f, c.tenant_family("claude", &tenant));
        assert_eq!(
            arn_parts("arn:aws:ecs:eu-west-1:123456789012:task-definition/x:1"),
            Some(("aws", "eu-west-1", "123456789012"))
        );
        assert_eq!(arn_parts("not-an-arn"), None);
        assert_eq!(truncate("héllo", 2), "h");
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy {
            max_tries: 5,
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        assert_eq!(p.delay(1), Duration::ZERO);
        for attempt in 2..40 {
            let d = p.delay(attempt);
            assert!(d <= Duration::from_millis(300), "{d:?}");
            assert!(d >= Duration::from_millis(50), "{d:?}");
            assert!(p.full_jitter_delay(attempt) <= Duration::from_millis(300));
        }
    }
}
