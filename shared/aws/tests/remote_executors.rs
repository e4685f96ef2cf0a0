//! The remote executors ([`EcsLauncher`], [`SsmLauncher`]) through the real SDK to moto server,
//! with the fault layer (`outpost_testkit::aws_faults::FaultLayer`) in between: every case
//! checks the end state and how many requests of each operation it took (`layer.calls(op)`).
//! Needs `OUTPOST_TEST_AWS_ENDPOINT` (see `scripts/test`).
//!
//! Where moto 5.2.5 falls short (measured), and what the layer does about it:
//!
//! - ECS `RunTask` with `awsvpc` answers HTTP 500 unless the subnet's VPC has
//!   `EnableDnsHostnames`, the call names security groups, and every container definition has
//!   `memory`: each case creates a VPC, subnet and security group through moto's EC2 query API
//!   ([`network`], plain HTTP straight to moto, not through the layer) and registers the base
//!   definition with `memory`.
//! - Moto's tasks never run: each `DescribeTasks` moves `lastStatus` one step (`RUNNING`,
//!   `DEACTIVATING`, `STOPPING`, `DEPROVISIONING`, `STOPPED`) with `desiredStatus` still
//!   `RUNNING`, and every container shows `exitCode: 0` from the start. The layer rewrites every
//!   `DescribeTasks` answer ([`TaskScript`]): a task is `RUNNING` with no exit code until the
//!   case "finishes" it (from the Nth `DescribeTasks` on), then `STOPPED` with the case's exit
//!   code, `stopCode` and reason.
//! - After `StopTask`, moto answers `STOPPED` (and `desiredStatus: STOPPED`) but without a
//!   `stopCode`: the rewrite adds `UserInitiated` and exit code 143, as ECS reports a stopped
//!   task's SIGTERM.
//! - `DescribeTasks` leaves an unknown ARN out of both `tasks` and `failures` (ECS lists it in
//!   `failures` with reason `MISSING`): the MISSING case's rewrite does what ECS does.
//! - `RunTask` ignores `clientToken` (two calls with one token start two tasks): idempotency
//!   cannot be checked here, only that the token is sent (`{run}-{attempt}`).
//! - `RunTask` never answers `failures[]` for capacity: the layer serves `RESOURCE:MEMORY`.
//! - `DescribeTaskDefinition` with `include: [TAGS]` answers `tags: []` (fine).
//! - SSM `SendCommand`/`GetCommandInvocation` answer `Success` (ResponseCode 0, empty output) at
//!   once and never `InvocationDoesNotExist` for a command just sent (a real race of a second or
//!   two): the layer injects that error; the other statuses (`Failed`, `TimedOut`, `Cancelled`,
//!   `Undeliverable`, `InProgress`) are served by the layer.
//! - SSM `CancelCommand` (not implemented) and `DescribeInstanceInformation` answer 500: the
//!   layer serves both.

use aws_sdk_ecs::types::{ContainerDefinition, NetworkMode};
use outpost_aws::ecs::{EcsConfig, EcsLauncher, RetryPolicy};
use outpost_aws::ssm::SsmSecretStore;
use outpost_aws::ssm_exec::{ssm_script, HostSource, ScriptSpec, SsmConfig, SsmLauncher};
use outpost_core::domain::{AgentSpec, NewRun, RemoteTask, Run, RunId, TenantId};
use outpost_core::ports::{EndHow, LaunchError, LaunchRequest, RemoteLauncher, SecretName, SecretStore};
use outpost_testkit::aws::{emulator_endpoint, emulator_sdk_config};
use outpost_testkit::aws_faults::{Fault, FaultLayer, Reply, Rule};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SPEC_URL: &str = "https://bucket.s3.amazonaws.com/specs/t/r/1.json?X-Amz-Signature=abc";
const ACCOUNT: &str = "123456789012";
const POLL: Duration = Duration::from_millis(20);
/// Every wait of a case ends well within this (or the case fails instead of hanging).
const CASE_LIMIT: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn tenant(name: &str) -> TenantId {
    name.parse().expect("tenant")
}

fn run_of(tenant_name: &str) -> Run {
    let mut run = Run::queued(NewRun {
        id: RunId::generate(),
        tenant: tenant(tenant_name),
        agent: "claude".into(),
        task: "fix it".into(),
        repo: None,
        timeout_secs: 600,
        idle_timeout_secs: None,
        created_at: chrono::Utc::now(),
    });
    run.attempts = 1;
    run
}

fn request<'a>(run: &'a Run, agent: &'a AgentSpec) -> LaunchRequest<'a> {
    LaunchRequest {
        run,
        agent,
        spec_url: SPEC_URL,
        max_duration: Duration::from_secs(3600),
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CASE_LIMIT, f)
        .await
        .expect("the case took too long")
}

/// A request recorder for a served op (its handler returns `None`: the call goes on to moto).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Value>>>);

impl Recorder {
    fn on(layer: &FaultLayer, op: &str) -> Self {
        let r = Recorder::default();
        let inner = r.clone();
        layer.serve(op, move |req| {
            inner.0.lock().expect("lock").push(req.clone());
            None
        });
        r
    }

    fn all(&self) -> Vec<Value> {
        self.0.lock().expect("lock").clone()
    }
}

// ------------------------------------------------------------------------------------------ ECS

/// Moto's EC2 query API, straight to moto: one value of an XML answer.
async fn ec2(http: &reqwest::Client, endpoint: &str, params: &[(&str, &str)], tag: &str) -> String {
    let mut form: Vec<(&str, &str)> = vec![("Version", "2016-11-15")];
    form.extend_from_slice(params);
    let body = http
        .post(endpoint)
        // Moto routes by the credential scope's service (it checks no signature).
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&form)
        .send()
        .await
        .expect("ec2 call")
        .error_for_status()
        .expect("ec2 status")
        .text()
        .await
        .expect("ec2 body");
    if tag.is_empty() {
        return String::new();
    }
    let open = format!("<{tag}>");
    let start = body.find(&open).unwrap_or_else(|| panic!("no {tag} in {body}")) + open.len();
    let end = body[start..].find('<').expect("closing tag") + start;
    body[start..end].to_owned()
}

/// A VPC (with DNS hostnames, which moto's RunTask needs), a subnet and a security group.
async fn network() -> (String, String) {
    let endpoint = emulator_endpoint();
    let http = reqwest::Client::new();
    let vpc = ec2(
        &http,
        &endpoint,
        &[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16")],
        "vpcId",
    )
    .await;
    ec2(
        &http,
        &endpoint,
        &[
            ("Action", "ModifyVpcAttribute"),
            ("VpcId", &vpc),
            ("EnableDnsHostnames.Value", "true"),
        ],
        "",
    )
    .await;
    let subnet = ec2(
        &http,
        &endpoint,
        &[
            ("Action", "CreateSubnet"),
            ("VpcId", &vpc),
            ("CidrBlock", "10.0.1.0/24"),
        ],
        "subnetId",
    )
    .await;
    let group = ec2(
        &http,
        &endpoint,
        &[
            ("Action", "CreateSecurityGroup"),
            ("GroupName", &unique("g")),
            ("GroupDescription", "agents"),
            ("VpcId", &vpc),
        ],
        "groupId",
    )
    .await;
    (subnet, group)
}

/// How the layer makes moto's tasks look (see the module docs).
#[derive(Clone)]
struct TaskScript {
    /// From this `DescribeTasks` on (counted by this rewriter, 1-based), tasks are stopped.
    finish_from: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    exit_code: Option<i32>,
    stop_code: &'static str,
    reason: &'static str,
    /// Tasks are MISSING instead (as ECS says of an ARN it does not know).
    missing: bool,
}

impl TaskScript {
    fn new(finish_from: u64, exit_code: Option<i32>, stop_code: &'static str) -> Self {
        Self {
            finish_from: Arc::new(AtomicU64::new(finish_from)),
            seen: Arc::new(AtomicU64::new(0)),
            exit_code,
            stop_code,
            reason: "Essential container in task exited",
            missing: false,
        }
    }

    fn never() -> Self {
        Self::new(u64::MAX, None, "")
    }

    fn install(&self, layer: &FaultLayer) {
        let script = self.clone();
        layer.rewrite("ecs:DescribeTasks", move |_req, mut answer| {
            let n = script.seen.fetch_add(1, Ordering::SeqCst) + 1;
            let finished = n >= script.finish_from.load(Ordering::SeqCst);
            let tasks = answer["tasks"].as_array().cloned().unwrap_or_default();
            if script.missing {
                let failures: Vec<Value> = tasks
                    .iter()
                    .map(|t| json!({"arn": t["taskArn"], "reason": "MISSING"}))
                    .collect();
                answer["tasks"] = json!([]);
                answer["failures"] = Value::Array(failures);
                return answer;
            }
            let mut out = Vec::new();
            for mut task in tasks {
                let user_stopped = task["desiredStatus"] == "STOPPED";
                let containers = task["containers"]
                    .as_array_mut()
                    .map(std::mem::take)
                    .unwrap_or_default();
                let mut fixed = Vec::new();
                for mut c in containers {
                    if let Some(obj) = c.as_object_mut() {
                        obj.remove("exitCode");
                        if user_stopped {
                            obj.insert("exitCode".into(), json!(143));
                        } else if finished {
                            if let Some(code) = script.exit_code {
                                obj.insert("exitCode".into(), json!(code));
                            }
                        }
                    }
                    fixed.push(c);
                }
                task["containers"] = Value::Array(fixed);
                if user_stopped {
                    task["lastStatus"] = json!("STOPPED");
                    task["stopCode"] = json!("UserInitiated");
                } else if finished {
                    task["lastStatus"] = json!("STOPPED");
                    task["stopCode"] = json!(script.stop_code);
                    task["stoppedReason"] = json!(script.reason);
                } else {
                    task["lastStatus"] = json!("RUNNING");
                }
                out.push(task);
            }
            answer["tasks"] = Value::Array(out);
            answer
        });
    }
}

struct EcsCase {
    layer: FaultLayer,
    launcher: EcsLauncher,
    agent: AgentSpec,
    prefix: String,
    secrets_prefix: String,
    secrets: Arc<SsmSecretStore>,
}

fn start_retry(max_tries: u32) -> RetryPolicy {
    RetryPolicy {
        max_tries,
        base: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

/// A fresh cluster, network and base task definition `{prefix}claude`, and a launcher on them
/// through a fresh fault layer.
async fn ecs_case(tweak: impl FnOnce(&mut EcsConfig)) -> EcsCase {
    let layer = FaultLayer::start(&emulator_endpoint()).await.expect("layer");
    let sdk = emulator_sdk_config(&layer.endpoint()).await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let (subnet, group) = network().await;
    let cluster = unique("c");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("cluster");
    let prefix = format!("{}-agent-", unique("o"));
    ecs.register_task_definition()
        .family(format!("{prefix}claude"))
        .execution_role_arn(format!("arn:aws:iam::{ACCOUNT}:role/agent-exec"))
        .task_role_arn(format!("arn:aws:iam::{ACCOUNT}:role/agent-task"))
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("1024")
        .memory("2048")
        .container_definitions(
            ContainerDefinition::builder()
                .name("agent")
                .image("outpost-agent:claude")
                .memory(2048)
                .essential(true)
                .build(),
        )
        .send()
        .await
        .expect("base task definition");
    // The secrets live in moto directly (not through the layer): only ECS calls are counted.
    let moto_sdk = emulator_sdk_config(&emulator_endpoint()).await;
    let secrets_prefix = format!("/{}", unique("s"));
    let secrets = Arc::new(SsmSecretStore::new(
        aws_sdk_ssm::Client::new(&moto_sdk),
        secrets_prefix.clone(),
    ));
    let mut config = EcsConfig::new(&cluster, vec![subnet], vec![group], &prefix, &secrets_prefix);
    config.poll_interval = POLL;
    config.start_retry = start_retry(4);
    tweak(&mut config);
    let launcher = EcsLauncher::new(ecs, secrets.clone(), config);
    EcsCase {
        layer,
        launcher,
        agent: AgentSpec::new("claude", &["claude", "{prompt}"]),
        prefix,
        secrets_prefix,
        secrets,
    }
}

#[tokio::test]
async fn ecs_happy_path_runs_one_task_and_reports_its_exit() {
    let case = ecs_case(|_| {}).await;
    TaskScript::new(2, Some(0), "EssentialContainerExited").install(&case.layer);
    let runs = Recorder::on(&case.layer, "ecs:RunTask");
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    assert_eq!(task.executor, outpost_core::domain::ExecutorKind::Ecs);
    assert_eq!(task.attempt, 1);
    assert!(task.host.is_none());
    assert!(task.id.starts_with("arn:aws:ecs:"), "{}", task.id);
    let end = bounded(case.launcher.wait(&task)).await.expect("wait");
    assert_eq!(end.how, EndHow::Exited);
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(
        end.detail,
        "EssentialContainerExited: Essential container in task exited"
    );
    assert_eq!(case.layer.calls("ecs:RunTask"), 1);
    assert_eq!(
        case.layer.calls("ecs:DescribeTasks"),
        2,
        "one per poll until it stopped"
    );
    assert_eq!(
        case.layer.calls("ecs:RegisterTaskDefinition"),
        1,
        "only the case's base"
    );

    let body = &runs.all()[0];
    assert_eq!(body["taskDefinition"], format!("{}claude", case.prefix));
    assert_eq!(body["count"], 1);
    assert_eq!(body["launchType"], "FARGATE");
    assert_eq!(body["clientToken"], format!("{}-1", run.id));
    assert_eq!(body["startedBy"], run.id.as_str());
    assert_eq!(
        body["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
        "DISABLED"
    );
    let tags: Vec<(String, String)> = body["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or("").to_owned(),
                t["value"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(tags.contains(&("outpost:run".into(), run.id.to_string())));
    assert!(tags.contains(&("outpost:tenant".into(), "acme".into())));
    assert!(tags.contains(&("outpost:attempt".into(), "1".into())));
    // The watcher ends when nothing is watched.
    assert_eq!(case.launcher.watched(), 0);
}

/// Serves `RESOURCE:MEMORY` for the first `n` RunTask calls (`u64::MAX`: always).
fn no_capacity(layer: &FaultLayer, n: u64) {
    let seen = AtomicU64::new(0);
    layer.serve("ecs:RunTask", move |_| {
        (seen.fetch_add(1, Ordering::SeqCst) < n).then(|| {
            Reply::ok(json!({
                "tasks": [],
                "failures": [{"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x", "reason": "RESOURCE:MEMORY"}]
            }))
        })
    });
}

#[tokio::test]
async fn ecs_start_retries_capacity_answers_then_starts() {
    let case = ecs_case(|_| {}).await;
    no_capacity(&case.layer, 2);
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    assert!(task.id.starts_with("arn:aws:ecs:"));
    assert_eq!(case.layer.calls("ecs:RunTask"), 3);
}

#[tokio::test]
async fn ecs_start_gives_up_after_max_tries_without_capacity() {
    let case = ecs_case(|_| {}).await;
    no_capacity(&case.layer, u64::MAX);
    let run = run_of("acme");
    match case.launcher.start(request(&run, &case.agent)).await {
        Err(LaunchError::Unavailable(why)) => assert!(why.contains("RESOURCE:MEMORY"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(case.layer.calls("ecs:RunTask"), 4, "exactly max_tries");
}

#[tokio::test]
async fn ecs_start_gives_up_at_once_on_a_client_error_and_retries_throttling() {
    let case = ecs_case(|_| {}).await;
    case.layer.inject(
        "ecs:RunTask",
        Rule::First {
            n: 1,
            fault: Fault::error(400, "ClientException", "TaskDefinition is inactive"),
        },
    );
    let run = run_of("acme");
    match case.launcher.start(request(&run, &case.agent)).await {
        Err(LaunchError::Unavailable(why)) => assert!(why.contains("ClientException"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(case.layer.calls("ecs:RunTask"), 1);

    case.layer.clear("ecs:RunTask");
    case.layer.inject(
        "ecs:RunTask",
        Rule::First {
            n: 2,
            fault: Fault::throttling(),
        },
    );
    case.launcher.start(request(&run, &case.agent)).await.expect("start");
    assert_eq!(case.layer.calls("ecs:RunTask"), 1 + 3);
}

#[tokio::test]
async fn ecs_wait_rides_out_throttled_and_dropped_polls() {
    let case = ecs_case(|_| {}).await;
    // Every 2nd DescribeTasks is throttled; the rewriter sees only the ones that pass, and the
    // third of those shows the task stopped: calls ok, throttled, ok, throttled, ok.
    case.layer.inject(
        "ecs:DescribeTasks",
        Rule::Every {
            nth: 2,
            fault: Fault::throttling(),
        },
    );
    TaskScript::new(3, Some(10), "EssentialContainerExited").install(&case.layer);
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    let end = bounded(case.launcher.wait(&task)).await.expect("wait");
    assert_eq!((end.how, end.exit_code), (EndHow::Exited, Some(10)));
    assert_eq!(case.layer.calls("ecs:DescribeTasks"), 5);

    // A lost answer: the poll is forwarded, its answer thrown away; the next poll ends the wait.
    let case = ecs_case(|_| {}).await;
    case.layer.inject(
        "ecs:DescribeTasks",
        Rule::First {
            n: 1,
            fault: Fault::Drop,
        },
    );
    TaskScript::new(2, Some(0), "EssentialContainerExited").install(&case.layer);
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    let end = bounded(case.launcher.wait(&task)).await.expect("wait");
    assert_eq!((end.how, end.exit_code), (EndHow::Exited, Some(0)));
    // The dropped call went through the rewriter (1), the next one (2) shows it stopped.
    assert_eq!(case.layer.calls("ecs:DescribeTasks"), 2);
}

#[tokio::test]
async fn ecs_wait_gives_up_after_its_patience() {
    let case = ecs_case(|c| c.patience = Duration::from_millis(150)).await;
    case.layer.inject(
        "ecs:DescribeTasks",
        Rule::Every {
            nth: 1,
            fault: Fault::server_error(),
        },
    );
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    match bounded(case.launcher.wait(&task)).await {
        Err(LaunchError::Api(why)) => assert!(why.contains("InternalServerError"), "{why}"),
        other => panic!("expected Api, got {other:?}"),
    }
    // Backing off up to 8 × 20 ms: 150 ms of patience is a handful of polls.
    let calls = case.layer.calls("ecs:DescribeTasks");
    assert!((2..=12).contains(&calls), "{calls}");
    assert_eq!(case.launcher.watched(), 0);
}

#[tokio::test]
async fn ecs_watcher_batches_every_watched_task_into_one_describe_per_poll() {
    let case = ecs_case(|_| {}).await;
    let describes = Recorder::on(&case.layer, "ecs:DescribeTasks");
    TaskScript::new(3, Some(0), "EssentialContainerExited").install(&case.layer);
    let mut tasks: Vec<RemoteTask> = Vec::new();
    for _ in 0..3 {
        let run = run_of("acme");
        tasks.push(case.launcher.start(request(&run, &case.agent)).await.expect("start"));
    }
    let ends = bounded(futures_util::future::join_all(
        tasks.iter().map(|t| case.launcher.wait(t)),
    ))
    .await;
    for end in ends {
        assert_eq!(end.expect("wait").how, EndHow::Exited);
    }
    assert_eq!(
        case.layer.calls("ecs:DescribeTasks"),
        3,
        "one per poll for all three tasks"
    );
    let mut want: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    want.sort();
    for body in describes.all() {
        let mut got: Vec<String> = body["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        got.sort();
        assert_eq!(got, want, "every poll carries every watched ARN");
    }
}

#[tokio::test]
async fn ecs_stop_ends_the_wait_as_stopped() {
    let case = ecs_case(|_| {}).await;
    TaskScript::never().install(&case.layer);
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    let long_reason = "r".repeat(400);
    case.launcher.stop(&task, &long_reason).await.expect("stop");
    let end = bounded(case.launcher.wait(&task)).await.expect("wait");
    assert_eq!(end.how, EndHow::Stopped);
    assert_eq!(end.exit_code, Some(143));
    assert!(end.detail.starts_with("UserInitiated: "), "{}", end.detail);
    assert_eq!(case.layer.calls("ecs:StopTask"), 1);
    assert_eq!(case.layer.calls("ecs:DescribeTasks"), 1);
}

#[tokio::test]
async fn ecs_missing_three_polls_in_a_row_is_gone() {
    let case = ecs_case(|_| {}).await;
    let mut script = TaskScript::never();
    script.missing = true;
    script.install(&case.layer);
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    match bounded(case.launcher.wait(&task)).await {
        Err(LaunchError::Gone(why)) => assert!(why.contains("MISSING"), "{why}"),
        other => panic!("expected Gone, got {other:?}"),
    }
    assert_eq!(case.layer.calls("ecs:DescribeTasks"), 3);
}

#[tokio::test]
async fn ecs_a_tenant_with_secrets_gets_its_own_task_definition_once() {
    let case = ecs_case(|_| {}).await;
    TaskScript::new(1, Some(0), "EssentialContainerExited").install(&case.layer);
    let registers = Recorder::on(&case.layer, "ecs:RegisterTaskDefinition");
    let runs = Recorder::on(&case.layer, "ecs:RunTask");
    let acme = tenant("acme");
    let name: SecretName = "X".parse().expect("name");
    case.secrets
        .put_secret(&acme, &name, &SecretString::from("the-value-never-sent"))
        .await
        .expect("secret");
    let before = case.layer.calls("ecs:RegisterTaskDefinition");
    for _ in 0..2 {
        let run = run_of("acme");
        let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
        bounded(case.launcher.wait(&task)).await.expect("wait");
    }
    assert_eq!(
        case.layer.calls("ecs:RegisterTaskDefinition") - before,
        1,
        "registered once"
    );
    assert_eq!(case.layer.calls("ecs:RunTask"), 2);
    let family = case.launcher.config().tenant_family("claude", &acme);
    let register = registers.all().last().cloned().expect("a registration");
    assert_eq!(register["family"], family);
    assert_eq!(
        register["executionRoleArn"],
        format!("arn:aws:iam::{ACCOUNT}:role/agent-exec")
    );
    let agent = register["containerDefinitions"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "agent")
        .cloned()
        .expect("agent container");
    assert_eq!(
        agent["secrets"],
        json!([{
            "name": "OUTPOST_SECRET_X",
            "valueFrom": format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{}/acme/X", case.secrets_prefix)
        }])
    );
    assert_eq!(agent["memory"], 2048);
    for body in runs.all() {
        let td = body["taskDefinition"].as_str().unwrap_or("");
        assert!(td.contains(&format!("task-definition/{family}:")), "{td}");
        assert_eq!(
            body["overrides"],
            json!({"containerOverrides": [{
                "name": "agent",
                "environment": [{"name": "OUTPOST_RUN_SPEC_URL", "value": SPEC_URL}]
            }]}),
            "only the spec URL is overridden"
        );
        assert!(!body.to_string().contains("the-value-never-sent"));
    }
}

#[tokio::test]
async fn ecs_availability_is_the_base_definition_and_is_cached() {
    let case = ecs_case(|_| {}).await;
    let a = case.launcher.availability(&case.agent).await;
    assert!(a.available, "{a:?}");
    assert_eq!(a.detail, format!("task definition {}claude:1 ACTIVE", case.prefix));
    assert_eq!(case.launcher.availability(&case.agent).await, a);
    assert_eq!(case.layer.calls("ecs:DescribeTaskDefinition"), 1, "cached");
    let other = AgentSpec::new("codex", &["codex"]);
    let b = case.launcher.availability(&other).await;
    assert!(
        !b.available && b.detail.contains(&format!("{}codex", case.prefix)),
        "{b:?}"
    );
}

// ------------------------------------------------------------------------------------------ SSM

struct SsmCase {
    layer: FaultLayer,
    launcher: SsmLauncher,
    agent: AgentSpec,
}

fn host(id: &str, ping: &str) -> Value {
    json!({"InstanceId": id, "PingStatus": ping, "PlatformType": "Linux"})
}

/// Serves `DescribeInstanceInformation` with `hosts`.
fn serve_hosts(layer: &FaultLayer, hosts: Vec<Value>) {
    layer.serve("ssm:DescribeInstanceInformation", move |_| {
        Some(Reply::ok(json!({ "InstanceInformationList": hosts })))
    });
}

async fn ssm_case(hosts: Vec<Value>, tweak: impl FnOnce(&mut SsmConfig)) -> SsmCase {
    let layer = FaultLayer::start(&emulator_endpoint()).await.expect("layer");
    serve_hosts(&layer, hosts);
    let sdk = emulator_sdk_config(&layer.endpoint()).await;
    let mut config = SsmConfig::new(
        HostSource::Tag {
            key: "outpost:agent-host".into(),
            value: "true".into(),
        },
        "outpost-artifacts",
    );
    config.poll_interval = POLL;
    config.not_found_retry = RetryPolicy {
        max_tries: 8,
        base: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
    };
    config.api_retry = start_retry(3);
    tweak(&mut config);
    SsmCase {
        layer,
        launcher: SsmLauncher::new(aws_sdk_ssm::Client::new(&sdk), config),
        agent: AgentSpec::new("claude", &["claude"]),
    }
}

fn two_online_one_offline() -> Vec<Value> {
    vec![
        host("i-0aaa", "Online"),
        host("i-0bbb", "Online"),
        host("i-0ccc", "ConnectionLost"),
    ]
}

#[tokio::test]
async fn ssm_send_command_carries_the_script_timeout_and_output_location() {
    let case = ssm_case(two_online_one_offline(), |_| {}).await;
    let sends = Recorder::on(&case.layer, "ssm:SendCommand");
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    assert_eq!(task.executor, outpost_core::domain::ExecutorKind::Ssm);
    assert_eq!(task.host.as_deref(), Some("i-0aaa"));
    let body = &sends.all()[0];
    let lines = ssm_script(&ScriptSpec {
        entrypoint: "/usr/local/bin/outpost-worker",
        run_as: "outpost",
        spec_url: SPEC_URL,
        work_dir: "/var/lib/outpost/runs",
    });
    assert_eq!(body["DocumentName"], "AWS-RunShellScript");
    assert_eq!(body["InstanceIds"], json!(["i-0aaa"]));
    assert_eq!(body["Parameters"]["commands"], json!(lines));
    assert_eq!(body["Parameters"]["executionTimeout"], json!(["3600"]));
    assert_eq!(body["TimeoutSeconds"], 600);
    assert_eq!(body["OutputS3BucketName"], "outpost-artifacts");
    assert_eq!(body["OutputS3KeyPrefix"], format!("ssm-output/acme/{}/", run.id));
    assert_eq!(body["Comment"], format!("outpost run {}", run.id));
    assert_eq!(case.layer.calls("ssm:SendCommand"), 1);
    // Moto answers Success at once.
    let end = bounded(case.launcher.wait(&task)).await.expect("wait");
    assert_eq!((end.how, end.exit_code), (EndHow::Exited, Some(0)));
    assert_eq!(case.layer.calls("ssm:GetCommandInvocation"), 1);
    assert!(case.launcher.in_flight().is_empty());
}

#[tokio::test]
async fn ssm_wait_rides_out_invocation_does_not_exist() {
    let case = ssm_case(two_online_one_offline(), |_| {}).await;
    case.layer.inject(
        "ssm:GetCommandInvocation",
        Rule::First {
            n: 3,
            fault: Fault::error(400, "InvocationDoesNotExist", "no such invocation"),
        },
    );
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    let end = bounded(case.launcher.wait(&task)).await.expect("wait");
    assert_eq!((end.how, end.exit_code), (EndHow::Exited, Some(0)));
    assert_eq!(
        case.layer.calls("ssm:GetCommandInvocation"),
        3 + 1,
        "K not-yet answers + one poll"
    );
}

#[tokio::test]
async fn ssm_invocation_that_never_exists_is_gone_after_max_tries() {
    let case = ssm_case(two_online_one_offline(), |_| {}).await;
    case.layer.inject(
        "ssm:GetCommandInvocation",
        Rule::Every {
            nth: 1,
            fault: Fault::error(400, "InvocationDoesNotExist", "no such invocation"),
        },
    );
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    match bounded(case.launcher.wait(&task)).await {
        Err(LaunchError::Gone(_)) => {}
        other => panic!("expected Gone, got {other:?}"),
    }
    assert_eq!(case.layer.calls("ssm:GetCommandInvocation"), 8, "exactly max tries");
    assert!(case.launcher.in_flight().is_empty(), "the host's slot is given back");
}

/// Serves GetCommandInvocation: `InProgress` for the first `running` calls, then `status`.
fn serve_invocation(layer: &FaultLayer, running: u64, status: &'static str, details: &'static str, code: i32) {
    layer.clear("ssm:GetCommandInvocation");
    let seen = AtomicU64::new(0);
    layer.serve("ssm:GetCommandInvocation", move |req| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let (status, details, code) = if n < running {
            ("InProgress", "InProgress", -1)
        } else {
            (status, details, code)
        };
        Some(Reply::ok(json!({
            "CommandId": req["CommandId"],
            "InstanceId": req["InstanceId"],
            "Status": status,
            "StatusDetails": details,
            "ResponseCode": code,
            "StandardOutputContent": "{\"ignored\": true}"
        })))
    });
}

#[tokio::test]
async fn ssm_statuses_map_to_their_ends() {
    let case = ssm_case(two_online_one_offline(), |_| {}).await;
    let cases: [(&str, &str, i32, EndHow, Option<i32>); 6] = [
        ("Failed", "Failed", 10, EndHow::Exited, Some(10)),
        ("Failed", "Failed", -1, EndHow::Lost, None),
        ("TimedOut", "ExecutionTimedOut", -1, EndHow::TimedOut, None),
        ("TimedOut", "DeliveryTimedOut", -1, EndHow::TimedOut, None),
        ("Cancelled", "Cancelled", -1, EndHow::Stopped, None),
        ("Failed", "Undeliverable", -1, EndHow::Lost, None),
    ];
    let mut before = 0;
    for (status, details, code, how, exit_code) in cases {
        serve_invocation(&case.layer, 2, status, details, code);
        let run = run_of("acme");
        let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
        let end = bounded(case.launcher.wait(&task)).await.expect("wait");
        assert_eq!((end.how, end.exit_code), (how, exit_code), "{status}/{details}");
        assert!(end.detail.contains(details), "{}", end.detail);
        let calls = case.layer.calls("ssm:GetCommandInvocation");
        assert_eq!(calls - before, 3, "two InProgress polls and the end");
        before = calls;
    }
    // Status `Undeliverable` itself (older agents) and `Terminated` are lost too.
    for (status, details) in [("Undeliverable", "Undeliverable"), ("Failed", "Terminated")] {
        serve_invocation(&case.layer, 0, status, details, -1);
        let run = run_of("acme");
        let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
        let end = bounded(case.launcher.wait(&task)).await.expect("wait");
        assert_eq!((end.how, end.exit_code), (EndHow::Lost, None), "{status}/{details}");
    }
    assert_eq!(
        case.layer.calls("ssm:DescribeInstanceInformation"),
        1,
        "hosts are cached"
    );
}

#[tokio::test]
async fn ssm_picks_the_least_loaded_online_host() {
    let case = ssm_case(two_online_one_offline(), |_| {}).await;
    let sends = Recorder::on(&case.layer, "ssm:SendCommand");
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let run = run_of("acme");
        tasks.push(case.launcher.start(request(&run, &case.agent)).await.expect("start"));
    }
    let hosts: Vec<&str> = tasks.iter().map(|t| t.host.as_deref().unwrap_or("")).collect();
    assert_eq!(hosts, ["i-0aaa", "i-0bbb", "i-0aaa"]);
    let in_flight = case.launcher.in_flight();
    assert_eq!((in_flight.get("i-0aaa"), in_flight.get("i-0bbb")), (Some(&2), Some(&1)));
    // Ending the waits of i-0aaa's two commands makes it the least loaded again.
    bounded(case.launcher.wait(&tasks[0])).await.expect("wait");
    bounded(case.launcher.wait(&tasks[2])).await.expect("wait");
    let run = run_of("acme");
    let next = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    assert_eq!(next.host.as_deref(), Some("i-0aaa"));
    for body in sends.all() {
        assert_ne!(
            body["InstanceIds"],
            json!(["i-0ccc"]),
            "an offline host is never chosen"
        );
    }
    assert_eq!(case.layer.calls("ssm:SendCommand"), 4);
    assert_eq!(
        case.layer.calls("ssm:DescribeInstanceInformation"),
        1,
        "hosts are cached"
    );
    let a = case.launcher.availability(&case.agent).await;
    assert!(a.available);
    assert_eq!(a.detail, "2 of 3 hosts online");
}

#[tokio::test]
async fn ssm_without_an_online_host_is_unavailable() {
    let case = ssm_case(
        vec![host("i-0aaa", "ConnectionLost"), host("i-0bbb", "Inactive")],
        |_| {},
    )
    .await;
    let run = run_of("acme");
    match case.launcher.start(request(&run, &case.agent)).await {
        Err(LaunchError::Unavailable(why)) => assert!(why.contains("0 of 2 hosts online"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(case.layer.calls("ssm:SendCommand"), 0);
    assert_eq!(case.layer.calls("ssm:DescribeInstanceInformation"), 1);
    let a = case.launcher.availability(&case.agent).await;
    assert!(!a.available);
    assert_eq!(a.detail, "0 of 2 hosts online");
}

#[tokio::test]
async fn ssm_stop_cancels_the_command() {
    let case = ssm_case(two_online_one_offline(), |_| {}).await;
    let cancels = Arc::new(Mutex::new(Vec::new()));
    let seen = cancels.clone();
    case.layer.serve("ssm:CancelCommand", move |req| {
        seen.lock().expect("lock").push(req.clone());
        Some(Reply::ok(json!({})))
    });
    let run = run_of("acme");
    let task = case.launcher.start(request(&run, &case.agent)).await.expect("start");
    serve_invocation(&case.layer, 1, "Cancelled", "Cancelled", -1);
    case.launcher.stop(&task, "cancelled by the user").await.expect("stop");
    assert_eq!(case.layer.calls("ssm:CancelCommand"), 1);
    let body = cancels.lock().expect("lock")[0].clone();
    assert_eq!(body["CommandId"], task.id);
    assert_eq!(body["InstanceIds"], json!([task.host.clone().unwrap_or_default()]));
    let end = bounded(case.launcher.wait(&task)).await.expect("wait");
    assert_eq!(end.how, EndHow::Stopped);
    assert_eq!(case.layer.calls("ssm:GetCommandInvocation"), 2);
}

#[tokio::test]
async fn ssm_send_command_retries_throttling_bounded() {
    let case = ssm_case(two_online_one_offline(), |_| {}).await;
    case.layer.inject(
        "ssm:SendCommand",
        Rule::First {
            n: 2,
            fault: Fault::throttling(),
        },
    );
    let run = run_of("acme");
    case.launcher.start(request(&run, &case.agent)).await.expect("start");
    assert_eq!(case.layer.calls("ssm:SendCommand"), 3);

    case.layer.clear("ssm:SendCommand");
    case.layer.inject(
        "ssm:SendCommand",
        Rule::Every {
            nth: 1,
            fault: Fault::throttling(),
        },
    );
    let before = case.launcher.in_flight();
    match case.launcher.start(request(&run, &case.agent)).await {
        Err(LaunchError::Unavailable(why)) => assert!(why.contains("ThrottlingException"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(case.layer.calls("ssm:SendCommand"), 3 + 3, "exactly max tries");
    assert_eq!(case.launcher.in_flight(), before, "a failed start gives its slot back");
}
