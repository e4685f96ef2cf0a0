//! RemoteLauncher on EC2 hosts with the SSM agent: each run attempt is one SSM Run Command
//! (`AWS-RunShellScript`) on the least loaded online host, whose script ([`ssm_script`]) starts
//! the agent entrypoint as an unprivileged user.
//!
//! Requests:
//! - hosts: one `DescribeInstanceInformation` (per page) per [`SsmConfig::host_cache_ttl`],
//!   filtered by instance ids or by tag;
//! - `start`: one `SendCommand` (throttling and 5xx answers are tried again, bounded; a connection
//!   that broke is not, since SendCommand has no idempotency token and the command may run);
//! - `wait`: `GetCommandInvocation` until the invocation is over: first with the
//!   [`SsmConfig::not_found_retry`] backoff while SSM does not know it yet
//!   (`InvocationDoesNotExist` is normal for a second or two after `SendCommand`), then one per
//!   [`SsmConfig::poll_interval`];
//! - `stop`: one `CancelCommand`;
//! - `availability`: the cached host list.
//!
//! The SDK's own retries are turned off on the client this launcher uses (the backoff here is
//! the only one). The command's output goes to S3 under `{output_prefix}{tenant}/{run}/`; it is
//! never read for the outcome (the run's `summary.json` is), and the launcher's detail comes from
//! `StatusDetails`. The spec URL is in the command's parameters (the one value the execution
//! gets) and is never logged.

use crate::ecs::{classify, describe, jitter_half, lock, stop_request, truncate, Transience};
use async_trait::async_trait;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::InstanceInformationStringFilter;
use aws_smithy_types::retry::RetryConfig;
use outpost_core::domain::{AgentSpec, ExecutorKind, RemoteTask};
use outpost_core::ports::{
    ActiveExecution, Availability, EndHow, LaunchError, LaunchRequest, RemoteEnd, RemoteLauncher,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::ecs::RetryPolicy;

/// The SSM document that runs the script.
pub const DOCUMENT: &str = "AWS-RunShellScript";
/// SSM's bounds of `executionTimeout` (seconds).
const EXECUTION_TIMEOUT_RANGE: (u64, u64) = (1, 172_800);
/// SSM's bounds of a command's delivery timeout `TimeoutSeconds`.
const DELIVERY_TIMEOUT_RANGE: (u64, u64) = (30, 2_592_000);
/// A command's comment names its run: `outpost run {id}` (what the sweep reads back).
const COMMENT_PREFIX: &str = "outpost run ";
/// Longest `Comment` SSM takes.
const MAX_COMMENT: usize = 100;
/// Most pages of `DescribeInstanceInformation` one refresh reads.
const MAX_HOST_PAGES: usize = 100;
/// How much longer than the poll interval a wait waits at most after failed polls.
const MAX_BACKOFF_FACTOR: u32 = 8;

/// What the SSM executor's script starts, on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec<'a> {
    /// The installed entrypoint binary, e.g. `/usr/local/bin/outpost-worker`.
    pub entrypoint: &'a str,
    /// The unprivileged user it runs as (`runuser -u`).
    pub run_as: &'a str,
    /// The presigned GET URL of the run spec.
    pub spec_url: &'a str,
    /// The host's folder for run workspaces (owned by `run_as`).
    pub work_dir: &'a str,
}

/// The `AWS-RunShellScript` commands of an SSM run: they only start the entrypoint as
/// `run_as`, whose stdout is one short JSON line (the outcome is read from S3, never from the
/// command's output). Every value is single-quoted for `sh`.
///
/// `setpriv` (util-linux) changes the uid, gid and groups and then execs the entrypoint, so a
/// signal sent to the command reaches the entrypoint itself: `runuser` would stay in between as
/// a parent that SIGKILLs its child 2 s after a SIGTERM, less than the entrypoint needs to stop
/// its agent and store what it has. No capability survives the change (`--inh-caps=-all`).
pub fn ssm_script(s: &ScriptSpec<'_>) -> Vec<String> {
    vec![
        "set -eu".to_owned(),
        format!("u={}", sh_quote(s.run_as)),
        format!(
            "exec setpriv --reuid=\"$(id -u \"$u\")\" --regid=\"$(id -g \"$u\")\" --init-groups --inh-caps=-all -- {} agent-run --spec-url {} --work-dir {} --secrets ssm",
            sh_quote(s.entrypoint),
            sh_quote(s.spec_url),
            sh_quote(s.work_dir)
        ),
    ]
}

/// `value` as one `sh` word.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Which EC2 instances may run agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSource {
    /// These instances.
    Ids(Vec<String>),
    /// The managed instances with tag `key` = `value` (`OUTPOST_SSM_HOST_TAG` `Key=Value`).
    Tag { key: String, value: String },
}

/// What the SSM launcher needs to know of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmConfig {
    pub hosts: HostSource,
    /// The entrypoint binary on the hosts (`OUTPOST_SSM_ENTRYPOINT`).
    pub entrypoint: String,
    /// The user the entrypoint runs as (`OUTPOST_SSM_RUN_AS`).
    pub run_as: String,
    /// The hosts' folder of run workspaces.
    pub work_dir: String,
    /// The bucket of the commands' own output (the artifacts bucket).
    pub output_bucket: String,
    /// The key prefix of that output, with its trailing slash (`OUTPOST_SSM_OUTPUT_PREFIX`).
    pub output_prefix: String,
    /// How often a wait asks for the invocation once SSM knows it.
    pub poll_interval: Duration,
    /// How `GetCommandInvocation` is tried while it answers `InvocationDoesNotExist` (full
    /// jitter); after the last try the command is gone.
    pub not_found_retry: RetryPolicy,
    /// How `SendCommand` and `CancelCommand` are tried again when throttled or on a 5xx.
    pub api_retry: RetryPolicy,
    /// How long the host list is kept.
    pub host_cache_ttl: Duration,
    /// How long SSM may take to deliver a command to its host (`TimeoutSeconds`).
    pub delivery_timeout: Duration,
    /// How long `GetCommandInvocation` may keep failing before a wait answers
    /// [`LaunchError::Api`].
    pub patience: Duration,
}

impl SsmConfig {
    /// A configuration with the defaults: entrypoint `/usr/local/bin/outpost-worker`, user
    /// `outpost`, work dir `/var/lib/outpost/runs`, output prefix `ssm-output/`, poll every 5 s,
    /// `InvocationDoesNotExist` tried 8 times from 100 ms (doubling, full jitter), hosts kept
    /// 30 s, delivery timeout 600 s, 10 minutes of patience.
    pub fn new(hosts: HostSource, output_bucket: impl Into<String>) -> Self {
        Self {
            hosts,
            entrypoint: "/usr/local/bin/outpost-worker".to_owned(),
            run_as: "outpost".to_owned(),
            work_dir: "/var/lib/outpost/runs".to_owned(),
            output_bucket: output_bucket.into(),
            output_prefix: "ssm-output/".to_owned(),
            poll_interval: Duration::from_secs(5),
            not_found_retry: RetryPolicy {
                max_tries: 8,
                base: Duration::from_millis(100),
                max_delay: Duration::from_secs(10),
            },
            api_retry: RetryPolicy {
                max_tries: 5,
                base: Duration::from_millis(500),
                max_delay: Duration::from_secs(10),
            },
            host_cache_ttl: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(600),
            patience: Duration::from_secs(10 * 60),
        }
    }
}

/// A managed instance as `DescribeInstanceInformation` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    id: String,
    online: bool,
}

struct Inner {
    client: aws_sdk_ssm::Client,
    config: SsmConfig,
    hosts: tokio::sync::Mutex<Option<(Instant, Vec<Host>)>>,
    /// Commands this launcher is running per host (started here, not yet waited to their end).
    in_flight: Mutex<HashMap<String, u32>>,
    /// The host of each command started here whose wait has not ended.
    started: Mutex<HashMap<String, String>>,
}

/// Runs on EC2 hosts through SSM Run Command (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct SsmLauncher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SsmLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsmLauncher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Gives a host's in-flight slot back when a start fails or a wait ends (or is dropped).
struct Slot<'a> {
    inner: &'a Inner,
    command: Option<String>,
    host: Option<String>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let host = match (self.command.take(), self.host.take()) {
            (Some(command), _) => lock(&self.inner.started).remove(&command),
            (None, host) => host,
        };
        if let Some(host) = host {
            let mut in_flight = lock(&self.inner.in_flight);
            if let Some(n) = in_flight.get_mut(&host) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    in_flight.remove(&host);
                }
            }
        }
    }
}

/// How an invocation stands.
enum Seen {
    Over(RemoteEnd),
    Running,
}

/// The end (or not) of an invocation from its `Status`, `StatusDetails` and `ResponseCode`.
fn judge(status: &str, details: &str, code: i32) -> Seen {
    let exit_code = (code >= 0).then_some(code);
    let detail = if details.is_empty() || details == status {
        status.to_owned()
    } else {
        format!("{status}: {details}")
    };
    let end = |how, exit_code| {
        Seen::Over(RemoteEnd {
            how,
            exit_code,
            detail: detail.clone(),
        })
    };
    let word = |w: &str| status == w || details == w;
    if word("Undeliverable") || word("Terminated") {
        return end(EndHow::Lost, None);
    }
    if word("DeliveryTimedOut") || word("ExecutionTimedOut") || status == "TimedOut" {
        return end(EndHow::TimedOut, exit_code);
    }
    match status {
        "Success" => end(EndHow::Exited, Some(code)),
        "Failed" if code >= 0 => end(EndHow::Exited, Some(code)),
        "Failed" => end(EndHow::Lost, None),
        "Cancelled" => end(EndHow::Stopped, exit_code),
        "Pending" | "InProgress" | "Delayed" | "Cancelling" => Seen::Running,
        other => {
            tracing::warn!(status = other, "unknown SSM invocation status; still waiting");
            Seen::Running
        }
    }
}

impl SsmLauncher {
    /// A launcher on `client` (its SDK retries are turned off; see the module docs).
    pub fn new(client: aws_sdk_ssm::Client, config: SsmConfig) -> Self {
        let client = aws_sdk_ssm::Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Self {
            inner: Arc::new(Inner {
                client,
                config,
                hosts: tokio::sync::Mutex::new(None),
                in_flight: Mutex::default(),
                started: Mutex::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SsmConfig {
        &self.inner.config
    }

    /// Commands started by this launcher and not yet waited to their end, by host.
    pub fn in_flight(&self) -> HashMap<String, u32> {
        lock(&self.inner.in_flight).clone()
    }
}

impl Inner {
    /// The hosts, from the cache or from SSM.
    async fn hosts(&self) -> Result<Vec<Host>, String> {
        let mut cache = self.hosts.lock().await;
        if let Some((at, hosts)) = cache.as_ref() {
            if at.elapsed() < self.config.host_cache_ttl {
                return Ok(hosts.clone());
            }
        }
        let filter = match &self.config.hosts {
            HostSource::Ids(ids) => InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(ids.clone())),
            HostSource::Tag { key, value } => InstanceInformationStringFilter::builder()
                .key(format!("tag:{key}"))
                .values(value),
        }
        .build()
        .map_err(|e| format!("bad host filter: {e}"))?;
        let mut hosts = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_HOST_PAGES {
            let page = self
                .client
                .describe_instance_information()
                .filters(filter.clone())
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| format!("DescribeInstanceInformation failed: {}", describe(&e)))?;
            for info in page.instance_information_list() {
                let Some(id) = info.instance_id() else { continue };
                let online = info.ping_status().is_some_and(|p| p.as_str() == "Online");
                hosts.push(Host {
                    id: id.to_owned(),
                    online,
                });
            }
            next = page.next_token.filter(|t| !t.is_empty());
            if next.is_none() {
                break;
            }
        }
        if let HostSource::Ids(ids) = &self.config.hosts {
            // Only the listed ones, even if a filter was ignored.
            hosts.retain(|h| ids.contains(&h.id));
        }
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        hosts.dedup_by(|a, b| a.id == b.id);
        *cache = Some((Instant::now(), hosts.clone()));
        Ok(hosts)
    }

    /// Takes a slot on the least loaded online host.
    async fn pick(&self) -> Result<Slot<'_>, LaunchError> {
        let hosts = self.hosts().await.map_err(LaunchError::Unavailable)?;
        let mut in_flight = lock(&self.in_flight);
        let best = hosts
            .iter()
            .filter(|h| h.online)
            .min_by_key(|h| in_flight.get(&h.id).copied().unwrap_or(0))
            .ok_or_else(|| LaunchError::Unavailable(format!("0 of {} hosts online", hosts.len())))?;
        *in_flight.entry(best.id.clone()).or_default() += 1;
        Ok(Slot {
            inner: self,
            command: None,
            host: Some(best.id.clone()),
        })
    }

    /// One `SendCommand` per try; the command id.
    async fn send(&self, request: &LaunchRequest<'_>, host: &str) -> Result<String, LaunchError> {
        let config = &self.config;
        let run = request.run;
        let commands = ssm_script(&ScriptSpec {
            entrypoint: &config.entrypoint,
            run_as: &config.run_as,
            spec_url: request.spec_url,
            work_dir: &config.work_dir,
        });
        let execution = request
            .max_duration
            .as_secs()
            .clamp(EXECUTION_TIMEOUT_RANGE.0, EXECUTION_TIMEOUT_RANGE.1);
        let delivery = config
            .delivery_timeout
            .as_secs()
            .clamp(DELIVERY_TIMEOUT_RANGE.0, DELIVERY_TIMEOUT_RANGE.1);
        let prefix = format!("{}{}/{}/", config.output_prefix, run.tenant.as_str(), run.id.as_str());
        let comment = format!("{COMMENT_PREFIX}{}", run.id.as_str());
        let policy = config.api_retry;
        let mut last = String::new();
        for attempt in 1..=policy.tries() {
            tokio::time::sleep(policy.delay(attempt)).await;
            let result = self
                .client
                .send_command()
                .document_name(DOCUMENT)
                .instance_ids(host)
                .parameters("commands", commands.clone())
                .parameters("executionTimeout", vec![execution.to_string()])
                .timeout_seconds(i32::try_from(delivery).unwrap_or(i32::MAX))
                .output_s3_bucket_name(&config.output_bucket)
                .output_s3_key_prefix(&prefix)
                .comment(truncate(&comment, MAX_COMMENT))
                .send()
                .await;
            match result {
                Ok(out) => {
                    return out
                        .command
                        .and_then(|c| c.command_id)
                        .ok_or_else(|| LaunchError::Unavailable("SendCommand returned no command id".to_owned()))
                }
                Err(e) => {
                    let why = format!("SendCommand failed: {}", describe(&e));
                    // Only an answer says the command was not taken; a lost one may have run it.
                    let answered = e.raw_response().is_some();
                    if classify(&e) == Transience::Transient && answered {
                        tracing::info!(run = %run.id, host, try_ = attempt, reason = why, "ssm command not sent yet; trying again");
                        last = why;
                        continue;
                    }
                    return Err(LaunchError::Unavailable(why));
                }
            }
        }
        Err(LaunchError::Unavailable(format!(
            "gave up after {} tries: {last}",
            policy.tries()
        )))
    }
}

#[async_trait]
impl RemoteLauncher for SsmLauncher {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Ssm
    }

    async fn start(&self, request: LaunchRequest<'_>) -> Result<RemoteTask, LaunchError> {
        let inner = &*self.inner;
        let mut slot = inner.pick().await?;
        let host = slot.host.clone().unwrap_or_default();
        // On error the slot drops here and gives the host's count back.
        let command = inner.send(&request, &host).await?;
        lock(&inner.started).insert(command.clone(), host.clone());
        // The slot now belongs to the wait of this command.
        slot.host = None;
        drop(slot);
        tracing::info!(run = %request.run.id, attempt = request.run.attempts, host, command, "ssm command sent");
        Ok(RemoteTask {
            executor: ExecutorKind::Ssm,
            id: command,
            host: Some(host),
            attempt: request.run.attempts,
        })
    }

    async fn wait(&self, task: &RemoteTask) -> Result<RemoteEnd, LaunchError> {
        let inner = &*self.inner;
        let _slot = Slot {
            inner,
            command: Some(task.id.clone()),
            host: None,
        };
        let Some(host) = task.host.as_deref() else {
            return Err(LaunchError::Gone(format!("SSM command {} names no host", task.id)));
        };
        if task.executor != ExecutorKind::Ssm {
            return Err(LaunchError::Gone(format!("{} is not an SSM command", task.id)));
        }
        let config = &inner.config;
        let not_found = config.not_found_retry;
        let mut known = false;
        let mut not_found_tries: u32 = 0;
        let mut failures: u32 = 0;
        let mut failing_since: Option<Instant> = None;
        loop {
            let result = inner
                .client
                .get_command_invocation()
                .command_id(&task.id)
                .instance_id(host)
                .send()
                .await;
            let delay = match result {
                Ok(out) => {
                    known = true;
                    failures = 0;
                    failing_since = None;
                    let status = out.status.as_ref().map_or("", |s| s.as_str());
                    let details = out.status_details.as_deref().unwrap_or("");
                    match judge(status, details, out.response_code) {
                        Seen::Over(end) => {
                            tracing::debug!(command = task.id, host, how = ?end.how, exit_code = ?end.exit_code, detail = end.detail, "ssm command over");
                            return Ok(end);
                        }
                        Seen::Running => config.poll_interval,
                    }
                }
                Err(e) if e.code() == Some("InvocationDoesNotExist") => {
                    if known {
                        return Err(LaunchError::Gone(format!(
                            "SSM invocation {} on {host} does not exist any more",
                            task.id
                        )));
                    }
                    not_found_tries += 1;
                    if not_found_tries >= not_found.tries() {
                        return Err(LaunchError::Gone(format!(
                            "SSM invocation {} on {host} does not exist (asked {not_found_tries} times)",
                            task.id
                        )));
                    }
                    not_found.full_jitter_delay(not_found_tries + 1)
                }
                Err(e) => {
                    let why = describe(&e);
                    if classify(&e) == Transience::Permanent {
                        return Err(LaunchError::Api(format!("GetCommandInvocation failed: {why}")));
                    }
                    failures = failures.saturating_add(1);
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= config.patience {
                        return Err(LaunchError::Api(format!(
                            "GetCommandInvocation kept failing for {:?}: {why}",
                            since.elapsed()
                        )));
                    }
                    tracing::warn!(
                        command = task.id,
                        host,
                        failures,
                        error = why,
                        "GetCommandInvocation failed"
                    );
                    let factor = 1u32
                        .checked_shl(failures.min(10))
                        .unwrap_or(u32::MAX)
                        .min(MAX_BACKOFF_FACTOR);
                    jitter_half(config.poll_interval.saturating_mul(factor))
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    async fn stop(&self, task: &RemoteTask, reason: &str) -> Result<(), LaunchError> {
        let inner = &*self.inner;
        stop_request(inner.config.api_retry, "CancelCommand", "InvalidCommandId", || {
            inner
                .client
                .cancel_command()
                .command_id(&task.id)
                .set_instance_ids(task.host.clone().map(|h| vec![h]))
                .send()
        })
        .await?;
        tracing::info!(command = task.id, reason, "ssm command cancel requested");
        Ok(())
    }

    async fn availability(&self, _agent: &AgentSpec) -> Availability {
        match self.inner.hosts().await {
            Ok(hosts) => {
                let online = hosts.iter().filter(|h| h.online).count();
                Availability {
                    available: online > 0,
                    detail: format!("{online} of {} hosts online", hosts.len()),
                }
            }
            Err(why) => Availability {
                available: false,
                detail: why,
            },
        }
    }

    /// The commands still pending or in progress whose comment names a run (`outpost run
    /// {id}`): one `ListCommands` per 50 commands.
    async fn active(&self) -> Result<Vec<ActiveExecution>, LaunchError> {
        let client = &self.inner.client;
        let mut out = Vec::new();
        for status in ["Pending", "InProgress"] {
            let mut next: Option<String> = None;
            loop {
                let filter = aws_sdk_ssm::types::CommandFilter::builder()
                    .key(aws_sdk_ssm::types::CommandFilterKey::Status)
                    .value(status)
                    .build()
                    .map_err(|e| LaunchError::Api(e.to_string()))?;
                let page = client
                    .list_commands()
                    .filters(filter)
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|e| LaunchError::Api(format!("ListCommands failed: {}", describe(&e))))?;
                for c in page.commands.unwrap_or_default() {
                    let run = c.comment().and_then(|m| m.strip_prefix(COMMENT_PREFIX));
                    let (Some(run_id), Some(id)) = (run, c.command_id()) else {
                        continue;
                    };
                    for host in c.instance_ids() {
                        out.push(ActiveExecution {
                            run_id: run_id.to_owned(),
                            task: RemoteTask {
                                executor: ExecutorKind::Ssm,
                                id: id.to_owned(),
                                host: Some(host.clone()),
                                attempt: 0,
                            },
                        });
                    }
                }
                match page.next_token {
                    Some(t) if !t.is_empty() => next = Some(t),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_quotes_every_value_for_sh() {
        let lines = ssm_script(&ScriptSpec {
            entrypoint: "/usr/local/bin/outpost-worker",
            run_as: "outpost",
            spec_url: "https://b.s3/specs/t/r/1.json?X-Amz-Signature=ab&x='; rm -rf /",
            work_dir: "/var/lib/outpost/runs",
        });
        assert_eq!(lines[0], "set -eu");
        assert_eq!(lines[1], "u='outpost'");
        assert!(lines[2].starts_with(
            "exec setpriv --reuid=\"$(id -u \"$u\")\" --regid=\"$(id -g \"$u\")\" --init-groups --inh-caps=-all -- '/usr/local/bin/outpost-worker' agent-run"
        ));
        assert!(lines[2].contains(r"'https://b.s3/specs/t/r/1.json?X-Amz-Signature=ab&x='\''; rm -rf /'"));
    }

    #[test]
    fn statuses_map_to_ends() {
        let how = |s: &str, d: &str, c: i32| match judge(s, d, c) {
            Seen::Over(end) => Some((end.how, end.exit_code)),
            Seen::Running => None,
        };
        assert_eq!(how("Success", "Success", 0), Some((EndHow::Exited, Some(0))));
        assert_eq!(how("Failed", "Failed", 10), Some((EndHow::Exited, Some(10))));
        assert_eq!(how("Failed", "Failed", -1), Some((EndHow::Lost, None)));
        assert_eq!(how("TimedOut", "ExecutionTimedOut", -1), Some((EndHow::TimedOut, None)));
        assert_eq!(how("TimedOut", "DeliveryTimedOut", -1), Some((EndHow::TimedOut, None)));
        assert_eq!(how("Cancelled", "Cancelled", -1), Some((EndHow::Stopped, None)));
        assert_eq!(how("Failed", "Undeliverable", -1), Some((EndHow::Lost, None)));
        assert_eq!(how("Undeliverable", "", -1), Some((EndHow::Lost, None)));
        assert_eq!(how("Failed", "Terminated", -1), Some((EndHow::Lost, None)));
        for running in ["Pending", "InProgress", "Delayed", "Cancelling"] {
            assert_eq!(how(running, running, -1), None);
        }
    }
}
