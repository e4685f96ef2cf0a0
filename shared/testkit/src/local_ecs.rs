//! A stand-in for ECS that runs its tasks for real, for the remote executor's end-to-end tests
//! and the bench.
//!
//! moto (5.2.5) accepts `RunTask` but never runs a container: its tasks stay `RUNNING` until
//! `StopTask`, then show `STOPPED` at once without an exit code. [`LocalEcs`] puts the project's
//! fault layer ([`outpost_testkit::aws_faults::FaultLayer`]) between the workers and moto and,
//! for every task moto accepted, runs what the task's container would: `outpost-worker
//! agent-run` as a local process with the task's one override (`OUTPOST_RUN_SPEC_URL`) and
//! nothing of the worker's environment. It rewrites moto's `DescribeTasks` answers to what ECS
//! would say of that process (`RUNNING` while it lives, `STOPPED` with its exit code and
//! `EssentialContainerExited` after), and turns `StopTask` into SIGTERM to it. Everything else
//! (the cluster, task definitions, ARNs, `RunTask`'s own bookkeeping) is moto's.
//!
//! The processes are the test's children, not the workers': a worker that is SIGKILLed leaves
//! its tasks running, as on ECS.

use crate::aws_faults::{FaultLayer, StandInError};
use crate::lock;
use outpost_aws::s3::xml_tag;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// One task's local process.
#[derive(Debug, Clone, Default)]
struct Task {
    pid: u32,
    /// Its exit code once it ended (`-1`: killed by a signal).
    exit: Option<i32>,
    /// `StopTask` was asked for it.
    stopped: bool,
}

type Tasks = Arc<Mutex<HashMap<String, Task>>>;

/// ECS on moto, with its tasks run as local processes (see the module docs).
pub struct LocalEcs {
    pub layer: FaultLayer,
    pub cluster: String,
    pub subnet: String,
    pub security_group: String,
    tasks: Tasks,
    /// The task of every `StopTask` request, in order.
    stops: Arc<Mutex<Vec<String>>>,
    /// ECS on moto directly (not through the layer).
    ecs: aws_sdk_ecs::Client,
    _work: tempfile::TempDir,
}

impl LocalEcs {
    /// The fault layer in front of `moto`, a cluster, a VPC (DNS hostnames on: moto's `RunTask`
    /// with awsvpc needs it) with a subnet and a security group, and a task definition
    /// `{family_prefix}{agent}` (container `agent`, with `memory`, which moto also needs) for
    /// each of `agents`; tasks run `entrypoint agent-run` (the built `outpost-worker`).
    pub async fn start(
        moto: &str,
        family_prefix: &str,
        agents: &[&str],
        entrypoint: PathBuf,
    ) -> Result<Self, StandInError> {
        let layer = FaultLayer::start(moto).await.map_err(StandInError::of)?;
        let sdk = crate::aws::emulator_sdk_config(moto).await;
        let ecs = aws_sdk_ecs::Client::new(&sdk);
        let cluster = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
        ecs.create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .map_err(StandInError::of)?;
        let vpc = ec2_query(moto, &[("Action", "CreateVpc"), ("CidrBlock", "10.9.0.0/16")]).await?;
        let vpc_id = xml_tag(&vpc, "vpcId")
            .map(str::to_owned)
            .ok_or_else(|| StandInError(format!("CreateVpc: no vpcId in {vpc}")))?;
        ec2_query(
            moto,
            &[
                ("Action", "ModifyVpcAttribute"),
                ("VpcId", &vpc_id),
                ("EnableDnsHostnames.Value", "true"),
            ],
        )
        .await?;
        let subnet = ec2_query(
            moto,
            &[
                ("Action", "CreateSubnet"),
                ("VpcId", &vpc_id),
                ("CidrBlock", "10.9.1.0/24"),
            ],
        )
        .await?;
        let subnet = xml_tag(&subnet, "subnetId")
            .map(str::to_owned)
            .ok_or_else(|| StandInError("CreateSubnet: no subnetId".into()))?;
        let sg = ec2_query(
            moto,
            &[
                ("Action", "CreateSecurityGroup"),
                ("GroupName", &format!("g{}", ulid::Ulid::new())),
                ("GroupDescription", "agents"),
                ("VpcId", &vpc_id),
            ],
        )
        .await?;
        let security_group = xml_tag(&sg, "groupId")
            .map(str::to_owned)
            .ok_or_else(|| StandInError("CreateSecurityGroup: no groupId".into()))?;
        for agent in agents {
            ecs.register_task_definition()
                .family(format!("{family_prefix}{agent}"))
                .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
                .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
                .cpu("256")
                .memory("512")
                .execution_role_arn("arn:aws:iam::123456789012:role/outpost-agent-execution")
                .container_definitions(
                    aws_sdk_ecs::types::ContainerDefinition::builder()
                        .name("agent")
                        .image("outpost-agent:test")
                        .memory(512)
                        .essential(true)
                        .build(),
                )
                .send()
                .await
                .map_err(StandInError::of)?;
        }
        let work = tempfile::tempdir().map_err(StandInError::of)?;
        let tasks: Tasks = Arc::default();
        let stops: Arc<Mutex<Vec<String>>> = Arc::default();
        install(&layer, &tasks, &stops, entrypoint, work.path().to_path_buf());
        Ok(Self {
            layer,
            cluster,
            subnet,
            security_group,
            tasks,
            stops,
            ecs,
            _work: work,
        })
    }

    /// The worker environment that gives it this ECS (through the fault layer).
    pub fn worker_env(&self, family_prefix: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.layer.endpoint()),
            ("OUTPOST_ECS_CLUSTER", self.cluster.clone()),
            ("OUTPOST_ECS_SUBNETS", self.subnet.clone()),
            ("OUTPOST_ECS_SECURITY_GROUPS", self.security_group.clone()),
            ("OUTPOST_ECS_TASK_FAMILY_PREFIX", family_prefix.to_owned()),
            ("OUTPOST_REMOTE_POLL_MS", "100".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Tasks started so far (local processes run).
    pub fn started(&self) -> usize {
        lock(&self.tasks).len()
    }

    /// Starts a task of `family` straight on moto, past the layer (so nothing runs it: a task
    /// some other process started, or one whose worker never recorded it), tagged `tags`;
    /// returns its ARN.
    pub async fn run_untracked(&self, family: &str, tags: &[(&str, &str)]) -> Result<String, StandInError> {
        let network = aws_sdk_ecs::types::NetworkConfiguration::builder()
            .awsvpc_configuration(
                aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                    .subnets(&self.subnet)
                    .security_groups(&self.security_group)
                    .build()
                    .map_err(StandInError::of)?,
            )
            .build();
        let mut req = self
            .ecs
            .run_task()
            .cluster(&self.cluster)
            .task_definition(family)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .network_configuration(network);
        for (k, v) in tags {
            req = req.tags(aws_sdk_ecs::types::Tag::builder().key(*k).value(*v).build());
        }
        let out = req.send().await.map_err(StandInError::of)?;
        out.tasks()
            .first()
            .and_then(|t| t.task_arn().map(str::to_owned))
            .ok_or_else(|| StandInError(format!("RunTask started nothing: {:?}", out.failures())))
    }

    /// SIGKILLs every running task's process (its container dies: nothing is stored after).
    pub fn kill_running(&self) -> usize {
        let running: Vec<u32> = lock(&self.tasks)
            .values()
            .filter(|t| t.exit.is_none())
            .map(|t| t.pid)
            .collect();
        for pid in &running {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        running.len()
    }

    /// The tasks `StopTask` was asked for, in order.
    pub fn stop_requests(&self) -> Vec<String> {
        lock(&self.stops).clone()
    }

    /// Tasks whose process is still running.
    pub fn running(&self) -> usize {
        lock(&self.tasks).values().filter(|t| t.exit.is_none()).count()
    }
}

impl Drop for LocalEcs {
    fn drop(&mut self) {
        for t in lock(&self.tasks).values().filter(|t| t.exit.is_none()) {
            let _ = Command::new("kill").args(["-KILL", &t.pid.to_string()]).status();
        }
    }
}

/// The rewrites that run the tasks (see the module docs).
fn install(layer: &FaultLayer, tasks: &Tasks, stops: &Arc<Mutex<Vec<String>>>, entrypoint: PathBuf, work: PathBuf) {
    let started = tasks.clone();
    layer.rewrite("ecs:RunTask", move |req, resp| {
        let url = req["overrides"]["containerOverrides"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["environment"].as_array().into_iter().flatten())
            .find(|e| e["name"] == "OUTPOST_RUN_SPEC_URL")
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned);
        for task in resp["tasks"].as_array().into_iter().flatten() {
            let (Some(arn), Some(url)) = (task["taskArn"].as_str(), url.as_deref()) else {
                continue;
            };
            if lock(&started).contains_key(arn) {
                continue; // the same clientToken answered again
            }
            let dir = work.join(arn.rsplit('/').next().unwrap_or("task"));
            let _ = std::fs::create_dir_all(&dir);
            // A container's environment: the task's override and nothing of the worker's.
            let child = Command::new(&entrypoint)
                .args(["agent-run", "--work-dir"])
                .arg(&dir)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", &dir)
                .env("OUTPOST_RUN_SPEC_URL", url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn();
            let Ok(mut child) = child else { continue };
            lock(&started).insert(
                arn.to_owned(),
                Task {
                    pid: child.id(),
                    exit: None,
                    stopped: false,
                },
            );
            let (done, arn) = (started.clone(), arn.to_owned());
            std::thread::spawn(move || {
                let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
                if let Some(t) = lock(&done).get_mut(&arn) {
                    t.exit = Some(code);
                }
            });
        }
        resp
    });
    let seen = tasks.clone();
    layer.rewrite("ecs:DescribeTasks", move |_req, mut resp| {
        let known = lock(&seen).clone();
        for task in resp["tasks"].as_array_mut().into_iter().flatten() {
            let Some(local) = task["taskArn"].as_str().and_then(|a| known.get(a)) else {
                continue;
            };
            match local.exit {
                None => {
                    task["lastStatus"] = "RUNNING".into();
                    for c in task["containers"].as_array_mut().into_iter().flatten() {
                        c["lastStatus"] = "RUNNING".into();
                        // moto reports exit code 0 from the start.
                        if let Some(c) = c.as_object_mut() {
                            c.remove("exitCode");
                        }
                    }
                }
                Some(code) => {
                    task["lastStatus"] = "STOPPED".into();
                    task["desiredStatus"] = "STOPPED".into();
                    if local.stopped {
                        task["stopCode"] = "UserInitiated".into();
                        task["stoppedReason"] = "Task stopped by user".into();
                    } else {
                        task["stopCode"] = "EssentialContainerExited".into();
                        task["stoppedReason"] = "Essential container in task exited".into();
                    }
                    for c in task["containers"].as_array_mut().into_iter().flatten() {
                        c["lastStatus"] = "STOPPED".into();
                        c["exitCode"] = code.into();
                    }
                }
            }
        }
        resp
    });
    let (stopping, asked) = (tasks.clone(), stops.clone());
    layer.rewrite("ecs:StopTask", move |req, resp| {
        let arn = req["task"].as_str().unwrap_or_default();
        lock(&asked).push(arn.to_owned());
        let mut known = lock(&stopping);
        let found = known
            .iter_mut()
            .find(|(a, _)| a.as_str() == arn || a.ends_with(&format!("/{arn}")));
        if let Some((_, t)) = found {
            t.stopped = true;
            if t.exit.is_none() {
                let _ = Command::new("kill").args(["-TERM", &t.pid.to_string()]).status();
            }
        }
        resp
    });
}

/// One EC2 Query API call to moto (which does not check signatures); the XML answer.
async fn ec2_query(endpoint: &str, params: &[(&str, &str)]) -> Result<String, StandInError> {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.push(("Version", "2016-11-15"));
    let resp = reqwest::Client::new()
        .post(format!("{}/", endpoint.trim_end_matches('/')))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&form)
        .send()
        .await
        .map_err(StandInError::of)?;
    let status = resp.status();
    let text = resp.text().await.map_err(StandInError::of)?;
    if !status.is_success() {
        return Err(StandInError(format!("EC2 {:?}: HTTP {status}: {text}", params.first())));
    }
    Ok(text)
}
