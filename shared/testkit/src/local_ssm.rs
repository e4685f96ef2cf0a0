//! A stand-in for SSM Run Command that runs its commands for real, for the SSM executor's
//! end-to-end tests.
//!
//! moto (5.2.5) accepts `SendCommand` but runs nothing: every invocation answers `Success`
//! (ResponseCode 0, empty output) at once; `DescribeInstanceInformation` answers HTTP 500 (it
//! knows no managed instance), `CancelCommand` is not implemented, and `ListCommands` ignores its
//! `Filters` (every command, always `Success`). [`LocalSsm`] puts the project's fault layer
//! ([`crate::aws_faults::FaultLayer`]) between the workers and moto and:
//!
//! - serves `DescribeInstanceInformation` with the hosts it was given (`PingStatus` `Online` or
//!   `ConnectionLost`), honoring the `InstanceIds` and `PingStatus` filters (hosts have no tags: a
//!   `tag:` filter matches none);
//! - answers `SendCommand` for an instance it does not know with `InvalidInstanceId` (as SSM
//!   does), and otherwise lets moto take the command, then, for each of its instances that is
//!   online, runs what the SSM agent would on the host: `sh -c "<commands joined by \n>"` as a
//!   local process in its own process group, with a clean environment (`PATH`, the host's
//!   instance-role stand-in `AWS_*` pointing at the layer, `AWS_SSM_INSTANCE_ID`,
//!   `AWS_SSM_REGION_NAME`, plus the caller's variables); its stdout and stderr are kept (the
//!   first 24,000 and 8,000 characters, as SSM keeps them) and stderr is also copied to the test's;
//! - serves `GetCommandInvocation` from that process: the first 2 calls for a new invocation
//!   answer 400 `InvocationDoesNotExist` (as SSM does for a second or two), then `InProgress`
//!   while it runs, then `Success` (ResponseCode 0) or `Failed` (ResponseCode = its exit code,
//!   `-1` when a signal ended it); past its `executionTimeout` the process group is SIGKILLed
//!   and the invocation is `TimedOut` / `ExecutionTimedOut`; on an offline host it stays
//!   `Pending` until the command's `TimeoutSeconds`, then `TimedOut` / `DeliveryTimedOut`;
//! - serves `CancelCommand`: SIGTERM to the process group of each running invocation (an unknown
//!   command answers `InvalidCommandId`); the invocation is `Cancelling` until the process ended,
//!   then `Cancelled`;
//! - rewrites `ListCommands`: only the commands sent through this layer, with the status of
//!   their invocations, filtered by the request's `Status` filter.
//!
//! Everything else (command ids, the command record, Parameter Store for the hosts' reads of
//! tenants' secrets, S3) is moto's. The processes are the test's children, not the workers': a
//! worker that is SIGKILLed leaves its commands running, as on EC2. They are SIGKILLed (whole
//! process group) when the [`LocalSsm`] is dropped.

use crate::aws_faults::{FaultLayer, Reply, StandInError};
use crate::lock;
use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `GetCommandInvocation` calls of a new invocation answered `InvocationDoesNotExist`.
pub const NOT_YET_CALLS: u32 = 2;
/// What SSM keeps of a command's stdout (characters).
pub const MAX_STDOUT_CHARS: usize = 24_000;
/// What SSM keeps of a command's stderr (characters).
pub const MAX_STDERR_CHARS: usize = 8_000;
/// The region the hosts are in.
const REGION: &str = "us-east-1";
const PLUGIN: &str = "aws:runShellScript";

/// One `SendCommand` request as the layer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    /// The id moto gave it.
    pub command_id: String,
    pub instance_ids: Vec<String>,
    pub document_name: String,
    /// `Parameters.commands`.
    pub commands: Vec<String>,
    /// `Parameters.executionTimeout` (seconds, as sent).
    pub execution_timeout: Option<String>,
    /// `TimeoutSeconds` (delivery).
    pub timeout_seconds: Option<i64>,
    pub output_bucket: Option<String>,
    pub output_key_prefix: Option<String>,
    pub comment: Option<String>,
}

/// How an invocation's process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Still running (or, on an offline host, not delivered).
    Open,
    /// Exited by itself, or was killed by a signal nobody here sent (`-1`).
    Exited(i32),
}

/// One command on one host.
struct Invocation {
    command_id: String,
    instance_id: String,
    comment: String,
    document_name: String,
    /// `None` on an offline host (nothing runs).
    pid: Option<u32>,
    ending: Ending,
    /// `CancelCommand` was asked for it while it ran.
    cancelled: bool,
    /// Its `executionTimeout` passed and the process group was killed.
    timed_out: bool,
    /// `GetCommandInvocation` calls seen.
    polls: u32,
    started: Instant,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    execution_timeout: Option<Duration>,
    delivery_timeout: Duration,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Invocation {
    /// Applies the execution and delivery timeouts (lazily, when asked about).
    fn refresh(&mut self) {
        if self.ending != Ending::Open || self.cancelled || self.timed_out {
            return;
        }
        match (self.pid, self.execution_timeout) {
            (Some(pid), Some(limit)) if self.started.elapsed() > limit => {
                self.timed_out = true;
                signal_group(pid, Signal::SIGKILL);
            }
            (None, _) if self.started.elapsed() > self.delivery_timeout => {
                self.timed_out = true;
                self.ended_at = Some(Utc::now());
            }
            _ => {}
        }
    }

    /// (Status, StatusDetails, ResponseCode) as SSM reports them.
    fn status(&self) -> (&'static str, &'static str, i32) {
        let ended = self.ending != Ending::Open || (self.pid.is_none() && self.timed_out);
        match (self.pid, self.ending) {
            (None, _) if self.timed_out => ("TimedOut", "DeliveryTimedOut", -1),
            (None, _) => ("Pending", "Pending", -1),
            _ if self.cancelled && ended => ("Cancelled", "Cancelled", -1),
            _ if self.cancelled => ("Cancelling", "Cancelling", -1),
            _ if self.timed_out && ended => ("TimedOut", "ExecutionTimedOut", -1),
            (_, Ending::Open) => ("InProgress", "InProgress", -1),
            (_, Ending::Exited(0)) => ("Success", "Success", 0),
            (_, Ending::Exited(code)) => ("Failed", "Failed", code),
        }
    }

    fn answer(&self) -> Value {
        let (status, details, code) = self.status();
        let start = self.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (end, elapsed) = match self.ended_at {
            Some(at) => (
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                format!("PT{:.3}S", (at - self.started_at).num_milliseconds() as f64 / 1000.0),
            ),
            None => (String::new(), String::new()),
        };
        json!({
            "CommandId": self.command_id,
            "InstanceId": self.instance_id,
            "Comment": self.comment,
            "DocumentName": self.document_name,
            "DocumentVersion": "$DEFAULT",
            "PluginName": PLUGIN,
            "ResponseCode": code,
            "ExecutionStartDateTime": if self.pid.is_some() { start } else { String::new() },
            "ExecutionElapsedTime": elapsed,
            "ExecutionEndDateTime": end,
            "Status": status,
            "StatusDetails": details,
            "StandardOutputContent": lock(&self.stdout).clone(),
            "StandardOutputUrl": "",
            "StandardErrorContent": lock(&self.stderr).clone(),
            "StandardErrorUrl": "",
            "CloudWatchOutputConfig": { "CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false },
        })
    }
}

#[derive(Default)]
struct State {
    /// Instance id → online.
    hosts: Mutex<Vec<(String, bool)>>,
    invocations: Mutex<Vec<Invocation>>,
    sent: Mutex<Vec<SentCommand>>,
    /// The command of every `CancelCommand` request for a command sent here, in order.
    cancels: Mutex<Vec<String>>,
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// SSM Run Command on moto, with its commands run as local processes (see the module docs).
pub struct LocalSsm {
    pub layer: FaultLayer,
    state: Arc<State>,
}

impl LocalSsm {
    /// The fault layer in front of `moto` with `hosts` (instance id, online) as SSM's managed
    /// instances; commands run with `env_for_commands` on top of the host's base environment.
    pub async fn start(
        moto: &str,
        hosts: &[(&str, bool)],
        env_for_commands: Vec<(String, String)>,
    ) -> Result<Self, StandInError> {
        let layer = FaultLayer::start(moto).await.map_err(StandInError::of)?;
        let state = Arc::new(State::default());
        *lock(&state.hosts) = hosts.iter().map(|(id, online)| ((*id).to_owned(), *online)).collect();
        // The host's environment as the SSM agent gives it, with its instance role stand-in.
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("AWS_ENDPOINT_URL".into(), layer.endpoint()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_SSM_REGION_NAME".into(), REGION.into()),
        ];
        env.extend(env_for_commands);
        install(&layer, &state, env);
        Ok(Self { layer, state })
    }

    /// The worker environment that gives it this SSM (through the fault layer) with every host.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        let ids: Vec<String> = lock(&self.state.hosts).iter().map(|(id, _)| id.clone()).collect();
        vec![
            ("AWS_ENDPOINT_URL".to_owned(), self.layer.endpoint()),
            ("OUTPOST_SSM_HOST_IDS".to_owned(), ids.join(",")),
            ("OUTPOST_REMOTE_POLL_MS".to_owned(), "100".to_owned()),
        ]
    }

    /// Calls of `op` seen by the layer (e.g. "ssm:SendCommand").
    pub fn calls(&self, op: &str) -> u64 {
        self.layer.calls(op)
    }

    /// Every `SendCommand` moto accepted, in order.
    pub fn sent_commands(&self) -> Vec<SentCommand> {
        lock(&self.state.sent).clone()
    }

    /// The commands (sent here) `CancelCommand` was asked for, in order.
    pub fn cancel_requests(&self) -> Vec<String> {
        lock(&self.state.cancels).clone()
    }

    /// Invocations whose process is still running.
    pub fn running(&self) -> usize {
        lock(&self.state.invocations)
            .iter()
            .filter(|i| i.pid.is_some() && i.ending == Ending::Open)
            .count()
    }

    /// The exit code of `command`'s process on `instance` once it ended (`-1`: a signal).
    pub fn exit_code(&self, command: &str, instance: &str) -> Option<i32> {
        lock(&self.state.invocations)
            .iter()
            .find(|i| i.command_id == command && i.instance_id == instance)
            .and_then(|i| match i.ending {
                Ending::Exited(code) => Some(code),
                Ending::Open => None,
            })
    }

    /// What `command`'s process on `instance` printed on stdout (SSM's first 24,000 characters).
    pub fn stdout(&self, command: &str, instance: &str) -> Option<String> {
        lock(&self.state.invocations)
            .iter()
            .find(|i| i.command_id == command && i.instance_id == instance)
            .map(|i| lock(&i.stdout).clone())
    }

    /// Marks a host online or offline (workers see it when their host cache expires).
    pub fn set_online(&self, instance: &str, online: bool) {
        for (id, on) in lock(&self.state.hosts).iter_mut() {
            if id == instance {
                *on = online;
            }
        }
    }
}

impl Drop for LocalSsm {
    fn drop(&mut self) {
        for i in lock(&self.state.invocations).iter() {
            if let (Some(pid), Ending::Open) = (i.pid, i.ending) {
                signal_group(pid, Signal::SIGKILL);
            }
        }
    }
}

/// Copies `from` into `into` (its first `max` characters) until EOF; with `echo`, also to the
/// test's stderr.
fn keep(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>, max: usize, echo: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if echo {
                use std::io::Write;
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
            let mut kept = lock(&into);
            if kept.chars().count() >= max {
                continue; // keep draining
            }
            pending.extend_from_slice(&buf[..n]);
            // Whole UTF-8 sequences only (a character may straddle two reads).
            let valid = match std::str::from_utf8(&pending) {
                Ok(s) => s.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            let text = String::from_utf8_lossy(&pending[..valid]).into_owned();
            pending.drain(..valid);
            let room = max - kept.chars().count();
            kept.extend(text.chars().take(room));
        }
    });
}

/// Starts the process of one invocation; its pid (`None` if it could not start).
fn spawn(script: &str, env: &[(String, String)], instance: &str, inv: &Invocation, state: &Arc<State>) -> Option<u32> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_SSM_INSTANCE_ID", instance)
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    if let Some(out) = child.stdout.take() {
        keep(out, inv.stdout.clone(), MAX_STDOUT_CHARS, false);
    }
    if let Some(err) = child.stderr.take() {
        keep(err, inv.stderr.clone(), MAX_STDERR_CHARS, true);
    }
    let pid = child.id();
    let (state, command, instance) = (state.clone(), inv.command_id.clone(), instance.to_owned());
    std::thread::spawn(move || {
        let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
        if let Some(i) = lock(&state.invocations)
            .iter_mut()
            .find(|i| i.command_id == command && i.instance_id == instance)
        {
            i.ending = Ending::Exited(code);
            i.ended_at = Some(Utc::now());
        }
    });
    Some(pid)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The servers and rewrites (see the module docs).
fn install(layer: &FaultLayer, state: &Arc<State>, env: Vec<(String, String)>) {
    let s = state.clone();
    layer.serve("ssm:DescribeInstanceInformation", move |req| {
        let mut hosts = lock(&s.hosts).clone();
        let filters = req["Filters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| (&f["Key"], &f["Values"]));
        let old = req["InstanceInformationFilterList"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| (&f["key"], &f["valueSet"]));
        for (key, values) in filters.chain(old) {
            let values = strings(values);
            match key.as_str().unwrap_or_default() {
                "InstanceIds" => hosts.retain(|(id, _)| values.contains(id)),
                "PingStatus" => hosts.retain(|(_, online)| {
                    values
                        .iter()
                        .any(|v| v == if *online { "Online" } else { "ConnectionLost" })
                }),
                k if k.starts_with("tag:") || k == "tag-key" => hosts.clear(),
                _ => {}
            }
        }
        let now = Utc::now().timestamp() as f64;
        let list: Vec<Value> = hosts
            .iter()
            .enumerate()
            .map(|(n, (id, online))| {
                json!({
                    "InstanceId": id,
                    "PingStatus": if *online { "Online" } else { "ConnectionLost" },
                    "LastPingDateTime": if *online { now } else { now - 3600.0 },
                    "AgentVersion": "3.3.0.0",
                    "IsLatestVersion": true,
                    "PlatformType": "Linux",
                    "PlatformName": "Amazon Linux",
                    "PlatformVersion": "2023",
                    "ResourceType": "EC2Instance",
                    "ComputerName": format!("ip-10-9-1-{}.ec2.internal", n + 10),
                    "IPAddress": format!("10.9.1.{}", n + 10),
                })
            })
            .collect();
        Some(Reply::ok(json!({ "InstanceInformationList": list })))
    });

    let s = state.clone();
    layer.serve("ssm:SendCommand", move |req| {
        let hosts = lock(&s.hosts);
        let unknown: Vec<String> = strings(&req["InstanceIds"])
            .into_iter()
            .filter(|id| !hosts.iter().any(|(h, _)| h == id))
            .collect();
        (!unknown.is_empty()).then(|| {
            Reply::error(
                400,
                "InvalidInstanceId",
                &format!("Instances {unknown:?} not in a valid state for account"),
            )
        })
    });
    let s = state.clone();
    layer.rewrite("ssm:SendCommand", move |req, resp| {
        let Some(command_id) = resp["Command"]["CommandId"].as_str().map(str::to_owned) else {
            return resp;
        };
        if lock(&s.sent).iter().any(|c| c.command_id == command_id) {
            return resp;
        }
        let params = &req["Parameters"];
        let sent = SentCommand {
            command_id: command_id.clone(),
            instance_ids: strings(&req["InstanceIds"]),
            document_name: req["DocumentName"].as_str().unwrap_or_default().to_owned(),
            commands: strings(&params["commands"]),
            execution_timeout: strings(&params["executionTimeout"]).into_iter().next(),
            timeout_seconds: req["TimeoutSeconds"].as_i64(),
            output_bucket: req["OutputS3BucketName"].as_str().map(str::to_owned),
            output_key_prefix: req["OutputS3KeyPrefix"].as_str().map(str::to_owned),
            comment: req["Comment"].as_str().map(str::to_owned),
        };
        lock(&s.sent).push(sent.clone());
        let script = sent.commands.join("\n");
        let online: HashMap<String, bool> = lock(&s.hosts).iter().cloned().collect();
        for instance in &sent.instance_ids {
            let mut inv = Invocation {
                command_id: command_id.clone(),
                instance_id: instance.clone(),
                comment: sent.comment.clone().unwrap_or_default(),
                document_name: sent.document_name.clone(),
                pid: None,
                ending: Ending::Open,
                cancelled: false,
                timed_out: false,
                polls: 0,
                started: Instant::now(),
                started_at: Utc::now(),
                ended_at: None,
                execution_timeout: sent
                    .execution_timeout
                    .as_deref()
                    .and_then(|t| t.parse().ok())
                    .map(Duration::from_secs),
                delivery_timeout: Duration::from_secs(sent.timeout_seconds.unwrap_or(600).max(0).unsigned_abs()),
                stdout: Arc::default(),
                stderr: Arc::default(),
            };
            // The invocation is listed before its process can end and look for it.
            let mut invocations = lock(&s.invocations);
            if online.get(instance).copied().unwrap_or(false) {
                inv.pid = spawn(&script, &env, instance, &inv, &s);
                if inv.pid.is_none() {
                    inv.ending = Ending::Exited(-1);
                    inv.ended_at = Some(Utc::now());
                }
            }
            invocations.push(inv);
        }
        resp
    });

    let s = state.clone();
    layer.serve("ssm:GetCommandInvocation", move |req| {
        let command = req["CommandId"].as_str().unwrap_or_default();
        let instance = req["InstanceId"].as_str().unwrap_or_default();
        let not_there = || {
            Reply::error(
                400,
                "InvocationDoesNotExist",
                "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation",
            )
        };
        let mut invocations = lock(&s.invocations);
        let Some(inv) = invocations
            .iter_mut()
            .find(|i| i.command_id == command && i.instance_id == instance)
        else {
            return Some(not_there());
        };
        if req["PluginName"].as_str().is_some_and(|p| p != PLUGIN) {
            return Some(not_there());
        }
        inv.polls += 1;
        if inv.polls <= NOT_YET_CALLS {
            return Some(not_there());
        }
        inv.refresh();
        Some(Reply::ok(inv.answer()))
    });

    let s = state.clone();
    layer.serve("ssm:CancelCommand", move |req| {
        let command = req["CommandId"].as_str().unwrap_or_default();
        let only = strings(&req["InstanceIds"]);
        let mut invocations = lock(&s.invocations);
        let mut known = false;
        for inv in invocations.iter_mut().filter(|i| i.command_id == command) {
            known = true;
            if !only.is_empty() && !only.contains(&inv.instance_id) {
                continue;
            }
            inv.refresh();
            if inv.ending == Ending::Open && !inv.timed_out && !inv.cancelled {
                inv.cancelled = true;
                match inv.pid {
                    Some(pid) => signal_group(pid, Signal::SIGTERM),
                    None => {
                        // Never delivered: cancelled at once.
                        inv.ending = Ending::Exited(-1);
                        inv.ended_at = Some(Utc::now());
                    }
                }
            }
        }
        if !known {
            return Some(Reply::error(400, "InvalidCommandId", "Invalid command id."));
        }
        lock(&s.cancels).push(command.to_owned());
        Some(Reply::ok(json!({})))
    });

    let s = state.clone();
    layer.rewrite("ssm:ListCommands", move |req, mut resp| {
        let wanted: Vec<String> = req["Filters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["key"] == "Status" || f["Key"] == "Status")
            .flat_map(|f| {
                strings(&f["value"])
                    .into_iter()
                    .chain(f["value"].as_str().map(str::to_owned))
            })
            .collect();
        let mut invocations = lock(&s.invocations);
        let Some(commands) = resp["Commands"].as_array_mut() else {
            return resp;
        };
        commands.retain_mut(|c| {
            let id = c["CommandId"].as_str().unwrap_or_default().to_owned();
            let mut statuses: Vec<&'static str> = Vec::new();
            for inv in invocations.iter_mut().filter(|i| i.command_id == id) {
                inv.refresh();
                statuses.push(inv.status().0);
            }
            // One host per command here: the command's status is its invocation's.
            let Some(status) = statuses.first().copied() else {
                return false; // not sent through this layer
            };
            c["Status"] = status.into();
            c["StatusDetails"] = status.into();
            wanted.is_empty() || wanted.iter().any(|w| w == status)
        });
        resp
    });
}
