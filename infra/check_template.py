#!/usr/bin/env python3
"""Deploys infra/outpost.yaml to moto's CloudFormation and checks what it created.

Usage: OUTPOST_TEST_AWS_ENDPOINT=http://127.0.0.1:5055 python3 infra/check_template.py

Phase 1 deploys the template text as it is with DeployCompute=false (the data plane: table,
queues, bucket) and checks the created resources through the service APIs. Phase 2 deploys it with
DeployCompute=true and DeployAgentTasks=true, minus the resource types moto's CloudFormation does
not implement (and what refers to them), and checks the Lambda, the ECS task definitions/service,
the agents' task definitions (no task role, non-root) and the IAM policies (iam:PassRole only on
the agents' execution role, ecs:RunTask only on the agents' families in the cluster, SSM reads
only under the secrets prefix, SendCommand only on tagged hosts). The static part also evaluates
the template's Conditions for several parameter sets and checks infra/agent.Dockerfile as text.
Where moto's CloudFormation accepts a property but does not apply it (see MOTO_IGNORES), the
property is checked in the template instead, and the report says so. Every name is unique per
run, and both stacks (and the retained table and bucket) are deleted at the end.

Exits 1 with the list of failures, 2 when it cannot run at all.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import sys
import time
import uuid
import zipfile
from pathlib import Path

import yaml

try:
    import boto3
    import botocore.exceptions
    from botocore.config import Config
except ImportError as e:  # pragma: no cover
    print(f"check_template: boto3 is needed ({e})", file=sys.stderr)
    sys.exit(2)

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "outpost.yaml"
AGENT_DOCKERFILE = HERE / "agent.Dockerfile"
AGENT_CLIS = HERE.parent / "scripts/agent-clis"
DYNAMO_SOURCES = [
    HERE.parent / "shared/aws/src/dynamo/mod.rs",
    HERE.parent / "shared/src/aws/dynamo/mod.rs",
    HERE.parent / "shared/src/aws/dynamo.rs",
]
REGION = "us-east-1"

# The table the Rust adapter creates and queries (shared/src/aws/dynamo/mod.rs, `table_shape`).
TABLE_KEY = [("pk", "HASH")]
GSIS = {
    "by_tenant": ([("tenant_id", "HASH"), ("pk", "RANGE")], "ALL"),
    "running": ([("running", "HASH")], "KEYS_ONLY"),
    "fleet": ([("fleet", "HASH"), ("last_seen", "RANGE")], "ALL"),
}
TTL_ATTRIBUTE = "expires_at"
MAX_RECEIVE_COUNT = 7  # not the default (5), so the check sees the parameter arrive
RUNS_RETENTION_DAYS = 45
SECRETS_PREFIX = "/outpost"
ACCOUNT = "123456789012"  # moto's account
AGENT_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/outpost-agent"
# The built-in agents that get a task definition each (`{Name}-agent-{agent}`; the template
# declares them one by one since CloudFormation cannot loop), with their logical ids.
AGENTS = {"claude": "AgentTaskDefinitionClaude", "codex": "AgentTaskDefinitionCodex", "gemini": "AgentTaskDefinitionGemini",
          "aider": "AgentTaskDefinitionAider", "grok": "AgentTaskDefinitionGrok"}
AGENT_UID = "10001"
AGENT_HOST_TAG = ("outpost:agent-host", "true")  # the template's defaults
# Worker actions that IAM cannot scope to a resource (Resource "*"), and only these.
WORKER_UNSCOPED = {
    "ecs:ListTasks",  # conditioned on ecs:cluster
    "ecs:RegisterTaskDefinition",
    "ecs:DescribeTaskDefinition",
    "ssm:GetCommandInvocation",
    "ssm:ListCommandInvocations",
    "ssm:ListCommands",
    "ssm:CancelCommand",
    "ssm:DescribeInstanceInformation",
}

# moto 5.2.5's CloudFormation has no model for some resource types (it skips them with a warning
# and fails the stack on a GetAtt of one; see `moto_unsupported`), and accepts some properties it
# does not apply (TTL, PITR, bucket lifecycle and public access block, ...). Those are checked in
# the template instead (`check_static` and the fallbacks in `check_data_plane`); the report says so.

failures: list[str] = []
notes: list[str] = []


def check(ok: bool, what: str) -> bool:
    if not ok:
        failures.append(what)
    return ok


def eq(got, want, what: str) -> bool:
    return check(got == want, f"{what}: expected {want!r}, got {got!r}")


# ------------------------------------------------------------------ template reading


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node):
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template() -> dict:
    return yaml.load(TEMPLATE.read_text(), _CfnLoader)


def referenced(node) -> set[str]:
    """Logical ids a template fragment refers to (Ref, GetAtt, Sub)."""
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                out.add(v)
            elif k == "Fn::GetAtt":
                out.add(v[0] if isinstance(v, list) else v.split(".")[0])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                out |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                if not isinstance(v, str):
                    out |= referenced(v[1])
            else:
                out |= referenced(v)
    elif isinstance(node, list):
        for x in node:
            out |= referenced(x)
    return out


def resolve(node, params: dict, conditions: dict):
    """Resolves Ref to parameters, Fn::If and AWS::NoValue (enough for the static checks)."""
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in params:
            return params[node["Ref"]]
        if set(node) == {"Fn::If"}:
            cond, yes, no = node["Fn::If"]
            return resolve(yes if conditions[cond] else no, params, conditions)
        out = {}
        for k, v in node.items():
            r = resolve(v, params, conditions)
            if r is not _NO_VALUE:
                out[k] = r
        return out
    if isinstance(node, list):
        return [r for r in (resolve(x, params, conditions) for x in node) if r is not _NO_VALUE]
    return node


_NO_VALUE = object()


def resolve_novalue(node, params, conditions):
    params = dict(params, **{"AWS::NoValue": _NO_VALUE})
    return resolve(node, params, conditions)


def parameters_of(template: dict, given: dict) -> dict:
    """Parameter values as a stack would see them: defaults, then `given`; lists as lists."""
    out = {}
    for k, spec in template["Parameters"].items():
        v = str(given[k]) if k in given else str(spec.get("Default", ""))
        out[k] = v.split(",") if spec["Type"] == "CommaDelimitedList" else v
    return out


def evaluate(node, params: dict, definitions: dict, memo: dict):
    """Evaluates a Conditions expression (Equals/Not/And/Or/Condition over Ref/Join/Split/Select)."""
    if isinstance(node, (str, int, float, bool)):
        return str(node).lower() if isinstance(node, bool) else str(node)
    if isinstance(node, list):
        return [evaluate(x, params, definitions, memo) for x in node]
    (fn, arg), = node.items()
    ev = lambda x: evaluate(x, params, definitions, memo)  # noqa: E731
    if fn == "Ref":
        return params[arg]
    if fn == "Condition":
        if arg not in memo:
            memo[arg] = ev(definitions[arg])
        return memo[arg]
    if fn == "Fn::Equals":
        a, b = ev(arg[0]), ev(arg[1])
        return a == b
    if fn == "Fn::Not":
        return not ev(arg[0])
    if fn == "Fn::And":
        return all(ev(x) for x in arg)
    if fn == "Fn::Or":
        return any(ev(x) for x in arg)
    if fn == "Fn::Join":
        return arg[0].join(ev(arg[1]))
    if fn == "Fn::Split":
        return ev(arg[1]).split(arg[0])
    if fn == "Fn::Select":
        return ev(arg[1])[int(ev(arg[0]))]
    raise ValueError(f"cannot evaluate {fn} in a condition")


def conditions_of(template: dict, given: dict) -> dict[str, bool]:
    """Every condition of the template for the parameters `given` (defaults for the rest)."""
    params = parameters_of(template, given)
    definitions = template.get("Conditions", {})
    memo: dict = {}
    return {k: evaluate({"Condition": k}, params, definitions, memo) for k in definitions}


def moto_unsupported(template: dict) -> dict[str, str]:
    try:
        from moto.cloudformation.parsing import resource_class_from_type
    except ImportError:
        # moto only as a server elsewhere: fall back to the list this check was written against.
        known = {
            "AWS::S3::BucketPolicy",
            "AWS::ApiGatewayV2::Api",
            "AWS::ApiGatewayV2::Integration",
            "AWS::ApiGatewayV2::Route",
            "AWS::ApiGatewayV2::Stage",
            "AWS::ApplicationAutoScaling::ScalableTarget",
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            "AWS::CloudWatch::Alarm",
        }
        return {k: r["Type"] for k, r in template["Resources"].items() if r["Type"] in known}
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return {k: r["Type"] for k, r in template["Resources"].items() if not resource_class_from_type(r["Type"])}


def without(template: dict, drop_ids: set[str]) -> tuple[dict, set[str]]:
    """The template minus `drop_ids` and every resource/output that refers to them."""
    t = json.loads(json.dumps(template))
    drop = set(drop_ids)
    changed = True
    while changed:
        changed = False
        for k, r in t["Resources"].items():
            if k not in drop and referenced(r) & drop:
                drop.add(k)
                changed = True
    for k in drop:
        t["Resources"].pop(k, None)
    for k in [k for k, o in t.get("Outputs", {}).items() if referenced(o) & drop]:
        del t["Outputs"][k]
    return t, drop


# ------------------------------------------------------------------ the Rust side


def rust_gsis() -> dict | None:
    """The GSI table of the DynamoDB module's doc comment, or None if it cannot be read."""
    for path in DYNAMO_SOURCES:
        if not path.exists():
            continue
        found = {}
        row = re.compile(
            r"^//!\s*\|\s*`(\w+)`\s*\|\s*`(\w+)` \(S\)\s*\|\s*(?:`(\w+)` \(S\)|—|-)\s*\|\s*(ALL|KEYS_ONLY|INCLUDE)\s*\|"
        )
        for line in path.read_text().splitlines():
            m = row.match(line)
            if m:
                name, hash_key, range_key, projection = m.groups()
                keys = [(hash_key, "HASH")] + ([(range_key, "RANGE")] if range_key else [])
                found[name] = (keys, projection)
        if found:
            return found
    return None


# ------------------------------------------------------------------ AWS


def clients(endpoint: str):
    cfg = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    kw = dict(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=cfg,
    )
    names = ["cloudformation", "dynamodb", "sqs", "s3", "lambda", "ecs", "iam", "ec2"]
    return {n: boto3.client(n, **kw) for n in names}


def deploy(c, stack: str, body: str, params: dict) -> dict:
    c["cloudformation"].create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    deadline = time.time() + 20
    while True:
        s = c["cloudformation"].describe_stacks(StackName=stack)["Stacks"][0]
        if not s["StackStatus"].endswith("IN_PROGRESS") or time.time() > deadline:
            break
        time.sleep(0.2)
    if s["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"stack {stack} is {s['StackStatus']}: {s.get('StackStatusReason')}")
    resources = {
        r["LogicalResourceId"]: r
        for r in c["cloudformation"].list_stack_resources(StackName=stack)["StackResourceSummaries"]
        if r.get("LogicalResourceId")
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])}
    return {"resources": resources, "outputs": outputs}


def cleanup(c, stack: str, name: str):
    """Deletes the stack, then the table and bucket it retains (DeletionPolicy: Retain)."""
    try:
        c["cloudformation"].delete_stack(StackName=stack)
    except botocore.exceptions.ClientError as e:
        notes.append(f"deleting stack {stack}: {e}")
    try:
        c["dynamodb"].delete_table(TableName=f"{name}-runs")
    except botocore.exceptions.ClientError:
        pass
    for bucket in (f"{name}-artifacts-123456789012", f"{name}-code"):
        try:
            for o in c["s3"].list_objects_v2(Bucket=bucket).get("Contents", []):
                c["s3"].delete_object(Bucket=bucket, Key=o["Key"])
            c["s3"].delete_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError:
            pass


def keys_of(schema) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


# ------------------------------------------------------------------ phase 1: data plane


def check_data_plane(c, template: dict, name: str, deployed: dict, params: dict, conditions: dict):
    res = template["Resources"]
    created = set(deployed["resources"])
    eq(created, {"RunsTable", "TaskDeadLetterQueue", "TaskQueue", "ArtifactsBucket"}, "resources of a DeployCompute=false stack")
    out = deployed["outputs"]
    table, bucket = f"{name}-runs", f"{name}-artifacts-123456789012"
    eq(out.get("TableName"), table, "output TableName")
    eq(out.get("BucketName"), bucket, "output BucketName")
    eq(out.get("SecretsPrefix"), SECRETS_PREFIX, "output SecretsPrefix")
    check("ApiUrl" not in out, "output ApiUrl must be absent without compute")

    # DynamoDB
    t = c["dynamodb"].describe_table(TableName=table)["Table"]
    eq(keys_of(t["KeySchema"]), TABLE_KEY, "table key schema")
    eq(t.get("BillingModeSummary", {}).get("BillingMode"), "PAY_PER_REQUEST", "table billing mode")
    eq(
        {a["AttributeName"]: a["AttributeType"] for a in t["AttributeDefinitions"]},
        {"pk": "S", "tenant_id": "S", "running": "S", "fleet": "S", "last_seen": "S"},
        "table attribute definitions",
    )
    got = {g["IndexName"]: (keys_of(g["KeySchema"]), g["Projection"]["ProjectionType"]) for g in t.get("GlobalSecondaryIndexes", [])}
    eq(got, GSIS, "global secondary indexes (name: keys, projection)")
    rust = rust_gsis()
    if rust is None:
        notes.append("could not read the GSI table of shared/src/aws/dynamo/mod.rs; checked against this script's copy")
    else:
        eq(rust, GSIS, "GSIs documented in shared/src/aws/dynamo/mod.rs vs this check")
    if "SSEDescription" in t:
        check(t["SSEDescription"].get("Status") in ("ENABLED", "ENABLING"), f"table SSE: got {t['SSEDescription']!r}")
    else:
        notes.append("moto reports no SSEDescription for the table: SSESpecification checked in the template")
        eq(res["RunsTable"]["Properties"].get("SSESpecification"), {"SSEEnabled": True}, "template table SSE")
    ttl = c["dynamodb"].describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        eq(ttl.get("AttributeName"), TTL_ATTRIBUTE, "table TTL attribute")
    else:
        notes.append("moto did not apply TimeToLiveSpecification (status %s): checked in the template" % ttl.get("TimeToLiveStatus"))
        eq(res["RunsTable"]["Properties"].get("TimeToLiveSpecification"), {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}, "template TTL")
    pitr = c["dynamodb"].describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    if pitr.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") != "ENABLED":
        notes.append("moto did not apply PointInTimeRecoverySpecification: checked in the template")
        eq(res["RunsTable"]["Properties"].get("PointInTimeRecoverySpecification"), {"PointInTimeRecoveryEnabled": True}, "template PITR")

    # SQS
    sqs = c["sqs"]
    q_url = sqs.get_queue_url(QueueName=f"{name}-tasks")["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=f"{name}-tasks-dlq")["QueueUrl"]
    # moto's CloudFormation builds queue URLs on the real SQS host, its SQS API on the endpoint's.
    eq(out.get("QueueUrl", "").split("/")[-2:], q_url.split("/")[-2:], "output QueueUrl (account/name)")
    eq(out.get("DeadLetterQueueUrl", "").split("/")[-2:], dlq_url.split("/")[-2:], "output DeadLetterQueueUrl (account/name)")
    q = sqs.get_queue_attributes(QueueUrl=q_url, AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(q.get("RedrivePolicy", "{}"))
    eq(redrive.get("deadLetterTargetArn"), dlq["QueueArn"], "task queue RedrivePolicy target")
    eq(int(redrive.get("maxReceiveCount", -1)), MAX_RECEIVE_COUNT, "task queue RedrivePolicy maxReceiveCount")
    eq(q.get("VisibilityTimeout"), "60", "task queue VisibilityTimeout")
    eq(q.get("ReceiveMessageWaitTimeSeconds"), "20", "task queue ReceiveMessageWaitTimeSeconds")
    eq(dlq.get("MessageRetentionPeriod"), "1209600", "DLQ MessageRetentionPeriod (14 days)")
    for label, attrs in (("task queue", q), ("DLQ", dlq)):
        if "SqsManagedSseEnabled" in attrs:
            eq(attrs["SqsManagedSseEnabled"], "true", f"{label} SqsManagedSseEnabled")
        else:
            notes.append(f"moto reports no SqsManagedSseEnabled on the {label}: checked in the template")
            eq(res["TaskQueue" if label == "task queue" else "TaskDeadLetterQueue"]["Properties"].get("SqsManagedSseEnabled"), True, f"template {label} SSE-SQS")

    # S3
    s3 = c["s3"]
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    eq([r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in enc], ["AES256"], "bucket default encryption")
    want_rules = {
        "expire-live-log-chunks": {"prefix": "live/", "expire_days": 2, "abort_days": None},
        "abort-incomplete-multipart-uploads": {"prefix": "", "expire_days": None, "abort_days": 1},
        "expire-ssm-output": {"prefix": "ssm-output/", "expire_days": 7, "abort_days": None},
        "expire-run-specs": {"prefix": "specs/", "expire_days": 2, "abort_days": None},
        "expire-runs": {"prefix": "runs/", "expire_days": RUNS_RETENTION_DAYS, "abort_days": None},
    }
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        got = {
            r["ID"]: {
                "prefix": r.get("Filter", {}).get("Prefix", r.get("Prefix", "")),
                "expire_days": r.get("Expiration", {}).get("Days"),
                "abort_days": r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"),
            }
            for r in rules
        }
        eq(got, want_rules, "bucket lifecycle rules")
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != "NoSuchLifecycleConfiguration":
            raise
        notes.append("moto did not apply LifecycleConfiguration: checked in the template (resolved with the stack's parameters)")
        lc = resolve_novalue(res["ArtifactsBucket"]["Properties"]["LifecycleConfiguration"], params, conditions)
        got = {
            r["Id"]: {
                "prefix": r.get("Prefix", ""),
                "expire_days": int(r["ExpirationInDays"]) if "ExpirationInDays" in r else None,
                "abort_days": r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"),
            }
            for r in lc["Rules"]
            if r.get("Status") == "Enabled"
        }
        eq(got, want_rules, "template bucket lifecycle rules (RunsRetentionDays=%d)" % RUNS_RETENTION_DAYS)
        lc0 = resolve_novalue(res["ArtifactsBucket"]["Properties"]["LifecycleConfiguration"], dict(params, RunsRetentionDays=0), dict(conditions, ExpireRuns=False))
        eq(sorted(r["Id"] for r in lc0["Rules"]), sorted(["expire-live-log-chunks", "abort-incomplete-multipart-uploads", "expire-ssm-output", "expire-run-specs"]), "template lifecycle rules with RunsRetentionDays=0")
    try:
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        eq(pab, {k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")}, "bucket public access block")
    except botocore.exceptions.ClientError:
        notes.append("moto did not apply PublicAccessBlockConfiguration: checked in the template")
        eq(
            res["ArtifactsBucket"]["Properties"].get("PublicAccessBlockConfiguration"),
            {k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")},
            "template public access block",
        )


# ------------------------------------------------------------------ phase 2: compute


def expected_env(name: str, q_url: str, dlq_url: str) -> dict[str, str]:
    return {
        "OUTPOST_BACKEND": "aws",
        "OUTPOST_TABLE": f"{name}-runs",
        "OUTPOST_QUEUE_URL": q_url,
        "OUTPOST_DLQ_URL": dlq_url,
        "OUTPOST_BUCKET": f"{name}-artifacts-123456789012",
        "OUTPOST_SSM_PREFIX": SECRETS_PREFIX,
        "OUTPOST_PRESIGN_SECONDS": "900",
        "OUTPOST_LOG": "info",
    }


def statements(c, role_logical: str, deployed: dict) -> list[dict]:
    role = deployed["resources"][role_logical]["PhysicalResourceId"].split("/")[-1]
    out = []
    for p in c["iam"].list_role_policies(RoleName=role)["PolicyNames"]:
        doc = c["iam"].get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"]
        if isinstance(doc, str):
            # moto returns a policy that CloudFormation gave it as the Python repr of the dict.
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError:
                doc = ast.literal_eval(doc)
        st = doc["Statement"]
        out += st if isinstance(st, list) else [st]
    return out


def allowed(stmts: list[dict], action: str, resource: str) -> bool:
    def as_list(x):
        return x if isinstance(x, list) else [x]

    def match(pattern: str, value: str) -> bool:
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), value) is not None

    return any(
        s["Effect"] == "Allow"
        and any(match(a, action) for a in as_list(s["Action"]))
        and any(match(r, resource) for r in as_list(s["Resource"]))
        for s in stmts
    )


def check_compute(c, name: str, deployed: dict, dropped: set[str]):
    out = deployed["outputs"]
    q_url, dlq_url = out["QueueUrl"], out["DeadLetterQueueUrl"]
    env = expected_env(name, q_url, dlq_url)

    fn = c["lambda"].get_function_configuration(FunctionName=f"{name}-ingest-lambda")
    eq(fn["Runtime"], "provided.al2023", "Lambda runtime")
    eq(fn["Handler"], "bootstrap", "Lambda handler")
    eq(fn["MemorySize"], 512, "Lambda memory")
    eq(fn["Timeout"], 29, "Lambda timeout")
    eq({k: str(v) for k, v in fn.get("Environment", {}).get("Variables", {}).items()}, env, "Lambda environment")
    eq(fn["Role"].split("/")[-1], deployed["resources"]["IngestRole"]["PhysicalResourceId"].split("/")[-1], "Lambda role")

    td = c["ecs"].describe_task_definition(taskDefinition=f"{name}-worker")["taskDefinition"]
    (ctr,) = td["containerDefinitions"]
    eq(ctr.get("stopTimeout"), 120, "worker stopTimeout")
    cluster_arn = c["ecs"].describe_clusters(clusters=[f"{name}-workers"])["clusters"][0]["clusterArn"]
    worker_env = dict(
        env,
        OUTPOST_SLOTS="4",
        OUTPOST_DRAIN_SECS="100",
        OUTPOST_WORK_DIR="/home/outpost/work",
        # DeployAgentTasks=true: the `ecs` executor
        OUTPOST_ECS_CLUSTER=cluster_arn,
        OUTPOST_ECS_SUBNETS="subnet-0123456789abcdef0,subnet-0123456789abcdef1",
        OUTPOST_ECS_SECURITY_GROUPS=out.get("AgentTaskSecurityGroupId", "<output AgentTaskSecurityGroupId>"),
        OUTPOST_ECS_ASSIGN_PUBLIC_IP="false",
        OUTPOST_ECS_TASK_FAMILY_PREFIX=f"{name}-agent-",
        OUTPOST_ECS_EXECUTION_ROLE_ARN=out.get("AgentExecutionRoleArn", "<output AgentExecutionRoleArn>"),
        # the default AgentHostTagKey: the `ssm` executor
        OUTPOST_SSM_HOST_TAG="=".join(AGENT_HOST_TAG),
        OUTPOST_SSM_ENTRYPOINT="/usr/local/bin/outpost-worker",
        OUTPOST_SSM_RUN_AS="outpost",
        OUTPOST_SSM_OUTPUT_PREFIX="ssm-output/",
    )
    # (moto keeps an `!If [..., ..., !Ref AWS::NoValue]` list item as null; here every such item
    # is on, and the template check resolves the off cases.)
    eq({e["name"]: e["value"] for e in ctr.get("environment", []) if e}, worker_env, "worker environment")
    eq(ctr.get("logConfiguration", {}).get("logDriver"), "awslogs", "worker log driver")
    eq(ctr["logConfiguration"]["options"].get("awslogs-group"), f"/outpost/{name}/worker", "worker log group")
    svc = c["ecs"].describe_services(cluster=f"{name}-workers", services=[f"{name}-worker"])["services"]
    check(len(svc) == 1 and svc[0]["status"] == "ACTIVE", f"worker service in cluster {name}-workers: {svc!r}")
    eq(out.get("ClusterName"), f"{name}-workers", "output ClusterName")
    eq(out.get("ServiceName"), f"{name}-worker", "output ServiceName")

    table_arn = c["dynamodb"].describe_table(TableName=f"{name}-runs")["Table"]["TableArn"]
    q_arn = c["sqs"].get_queue_attributes(QueueUrl=q_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dlq_arn = c["sqs"].get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bucket_arn = f"arn:aws:s3:::{name}-artifacts-123456789012"
    param_arn = f"arn:aws:ssm:{REGION}:123456789012:parameter{SECRETS_PREFIX}/acme/GITHUB_TOKEN"
    api, worker = statements(c, "IngestRole", deployed), statements(c, "WorkerTaskRole", deployed)
    grants = [
        # (who, action, resource, should be allowed)
        ("api", "dynamodb:UpdateItem", table_arn, True),
        ("api", "dynamodb:Query", f"{table_arn}/index/by_tenant", True),
        ("api", "dynamodb:DeleteItem", table_arn, False),
        ("api", "dynamodb:Scan", table_arn, False),
        ("api", "sqs:SendMessage", q_arn, True),
        ("api", "sqs:GetQueueAttributes", dlq_arn, True),
        ("api", "sqs:ReceiveMessage", q_arn, False),
        ("api", "sqs:SendMessage", dlq_arn, False),
        ("api", "s3:GetObject", f"{bucket_arn}/runs/acme/run_1/diff.patch", True),
        ("api", "s3:GetObject", f"{bucket_arn}/live/acme/run_1/output.log/0", True),
        ("api", "s3:PutObject", f"{bucket_arn}/runs/acme/run_1/diff.patch", False),
        ("api", "ssm:PutParameter", param_arn, True),
        ("api", "ssm:DeleteParameter", param_arn, True),
        ("api", "ssm:PutParameter", f"arn:aws:ssm:{REGION}:123456789012:parameter/other/x", False),
        ("worker", "dynamodb:UpdateItem", table_arn, True),
        ("worker", "dynamodb:DeleteItem", table_arn, True),
        ("worker", "dynamodb:Query", f"{table_arn}/index/fleet", True),
        ("worker", "sqs:ReceiveMessage", q_arn, True),
        ("worker", "sqs:ReceiveMessage", dlq_arn, True),
        ("worker", "sqs:DeleteMessage", dlq_arn, True),
        ("worker", "sqs:ChangeMessageVisibility", q_arn, True),
        ("worker", "sqs:SendMessage", q_arn, False),
        ("worker", "s3:PutObject", f"{bucket_arn}/runs/acme/run_1/diff.patch", True),
        ("worker", "s3:AbortMultipartUpload", f"{bucket_arn}/runs/acme/run_1/diff.patch", True),
        ("worker", "s3:PutObject", f"{bucket_arn}/elsewhere", False),
        ("worker", "s3:DeleteObject", f"{bucket_arn}/runs/acme/run_1/diff.patch", False),
        ("worker", "ssm:GetParametersByPath", f"arn:aws:ssm:{REGION}:123456789012:parameter{SECRETS_PREFIX}/acme", True),
        ("worker", "ssm:GetParameter", param_arn, True),
        ("worker", "ssm:PutParameter", param_arn, False),
    ]
    for who, action, resource, want in grants:
        got = allowed(api if who == "api" else worker, action, resource)
        check(got == want, f"IAM: {who} {'should' if want else 'should not'} be allowed {action} on {resource}")
    check(
        any(s.get("Condition", {}).get("StringLike", {}).get("s3:prefix") == "live/*" for s in api if "s3:ListBucket" in s["Action"]),
        "IAM: api s3:ListBucket limited to prefix live/",
    )


def role_arn(c, logical: str, deployed: dict) -> str:
    return c["iam"].get_role(RoleName=deployed["resources"][logical]["PhysicalResourceId"].split("/")[-1])["Role"]["Arn"]


def as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def check_agents(c, template: dict, name: str, deployed: dict):
    """The per-run agent tasks (ecs executor) and the SSM hosts' role, as deployed."""
    out = deployed["outputs"]
    arn = lambda svc, rest: f"arn:aws:{svc}:{REGION}:{ACCOUNT}:{rest}"  # noqa: E731
    exec_arn = role_arn(c, "AgentExecutionRole", deployed)
    eq(out.get("AgentExecutionRoleArn"), exec_arn, "output AgentExecutionRoleArn")
    check(out.get("AgentTaskSecurityGroupId", "").startswith("sg-"), f"output AgentTaskSecurityGroupId: {out.get('AgentTaskSecurityGroupId')!r}")
    check(":instance-profile/" in out.get("AgentHostInstanceProfileArn", ""), f"output AgentHostInstanceProfileArn: {out.get('AgentHostInstanceProfileArn')!r}")
    cluster_arn = c["ecs"].describe_clusters(clusters=[f"{name}-workers"])["clusters"][0]["clusterArn"]

    # The agents' task definitions: no task role, non-root, the agents' log group.
    for agent in AGENTS:
        td = c["ecs"].describe_task_definition(taskDefinition=f"{name}-agent-{agent}")["taskDefinition"]
        check(not td.get("taskRoleArn"), f"agent {agent}: the task definition must have no task role, got {td.get('taskRoleArn')!r}")
        if td.get("executionRoleArn"):
            eq(td["executionRoleArn"], exec_arn, f"agent {agent}: execution role")
        elif agent == "claude":
            notes.append("moto reports no executionRoleArn for the agents' task definitions: ExecutionRoleArn checked in the template")
        eq([d["name"] for d in td["containerDefinitions"]], ["agent"], f"agent {agent}: containers")
        (ctr,) = td["containerDefinitions"][:1] or [{}]
        eq(ctr.get("image"), f"{AGENT_IMAGE}:{agent}", f"agent {agent}: image")
        eq(ctr.get("user"), AGENT_UID, f"agent {agent}: container user")
        eq(ctr.get("readonlyRootFilesystem"), False, f"agent {agent}: readonlyRootFilesystem")
        eq(ctr.get("stopTimeout"), 120, f"agent {agent}: stopTimeout")
        eq(ctr.get("linuxParameters", {}).get("initProcessEnabled"), True, f"agent {agent}: initProcessEnabled")
        check(not ctr.get("secrets") and not [e for e in ctr.get("environment", []) if e], f"agent {agent}: the base family carries no environment or secrets: {ctr.get('environment')!r} {ctr.get('secrets')!r}")
        eq(ctr.get("logConfiguration", {}).get("options", {}).get("awslogs-group"), f"/outpost/{name}/agents", f"agent {agent}: log group")
        eq(ctr.get("logConfiguration", {}).get("options", {}).get("awslogs-stream-prefix"), agent, f"agent {agent}: log stream prefix")
        eq(td.get("memory"), "2048", f"agent {agent}: memory (AgentMemory)")

    worker, api = statements(c, "WorkerTaskRole", deployed), statements(c, "IngestRole", deployed)
    execution, host = statements(c, "AgentExecutionRole", deployed), statements(c, "AgentHostRole", deployed)
    roles = {"worker": worker, "api": api, "agent execution": execution, "agent host": host}
    bucket_arn = f"arn:aws:s3:::{name}-artifacts-123456789012"
    td_arn = lambda family: arn("ecs", f"task-definition/{family}:1")  # noqa: E731
    param = arn("ssm", f"parameter{SECRETS_PREFIX}/acme/ANTHROPIC_API_KEY")
    grants = [
        ("worker", "ecs:RunTask", td_arn(f"{name}-agent-claude"), True),
        ("worker", "ecs:RunTask", td_arn(f"{name}-agent-claude-t0a1b2c3d"), True),
        ("worker", "ecs:RunTask", td_arn(f"{name}-worker"), False),
        ("worker", "ecs:RunTask", td_arn("other-agent-claude"), False),
        ("worker", "ecs:StopTask", arn("ecs", f"task/{name}-workers/0123456789abcdef"), True),
        ("worker", "ecs:StopTask", arn("ecs", "task/other-cluster/0123456789abcdef"), False),
        ("worker", "ecs:DescribeTasks", arn("ecs", f"task/{name}-workers/0123456789abcdef"), True),
        ("worker", "ecs:TagResource", arn("ecs", f"task/{name}-workers/0123456789abcdef"), True),
        ("worker", "ecs:TagResource", arn("ecs", f"cluster/{name}-workers"), False),
        ("worker", "ecs:RegisterTaskDefinition", "*", True),
        ("worker", "ecs:DeregisterTaskDefinition", "*", False),
        ("worker", "ecs:UpdateService", arn("ecs", f"service/{name}-workers/{name}-worker"), False),
        ("worker", "iam:PassRole", exec_arn, True),
        ("worker", "iam:PassRole", role_arn(c, "WorkerTaskRole", deployed), False),
        ("worker", "iam:PassRole", role_arn(c, "AgentHostRole", deployed), False),
        ("worker", "ssm:SendCommand", f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript", True),
        ("worker", "ssm:SendCommand", f"arn:aws:ssm:{REGION}::document/AWS-RunPowerShellScript", False),
        ("worker", "ssm:SendCommand", arn("ec2", "instance/i-0123456789abcdef0"), True),  # + the tag condition, below
        ("worker", "ssm:GetCommandInvocation", "*", True),
        ("worker", "ssm:StartSession", arn("ec2", "instance/i-0123456789abcdef0"), False),
        ("worker", "s3:GetObject", f"{bucket_arn}/ssm-output/cmd/i-0/stdout", True),
        ("worker", "s3:PutObject", f"{bucket_arn}/ssm-output/cmd/i-0/stdout", False),
        ("agent execution", "ssm:GetParameters", param, True),
        ("agent execution", "ssm:GetParameters", arn("ssm", "parameter/other/x"), False),
        ("agent execution", "ssm:GetParametersByPath", arn("ssm", f"parameter{SECRETS_PREFIX}/acme"), False),
        ("agent execution", "ssm:PutParameter", param, False),
        ("agent execution", "kms:Decrypt", arn("kms", "key/0000"), True),  # + ViaService/context, below
        ("agent execution", "ecr:BatchGetImage", arn("ecr", "repository/outpost-agent"), True),
        ("agent execution", "s3:GetObject", f"{bucket_arn}/runs/acme/run_1/diff.patch", False),
        ("agent execution", "dynamodb:GetItem", arn("dynamodb", f"table/{name}-runs"), False),
        ("agent host", "ssm:GetParameter", param, True),
        ("agent host", "ssm:GetParametersByPath", arn("ssm", f"parameter{SECRETS_PREFIX}/acme"), True),
        ("agent host", "ssm:PutParameter", param, False),
        ("agent host", "s3:PutObject", f"{bucket_arn}/ssm-output/cmd/i-0/stdout", True),
        ("agent host", "s3:PutObject", f"{bucket_arn}/runs/acme/run_1/diff.patch", False),
        ("agent host", "s3:GetObject", f"{bucket_arn}/runs/acme/run_1/diff.patch", False),
        ("agent host", "dynamodb:GetItem", arn("dynamodb", f"table/{name}-runs"), False),
    ]
    for who, action, resource, want in grants:
        got = allowed(roles[who], action, resource)
        check(got == want, f"IAM: {who} {'should' if want else 'should not'} be allowed {action} on {resource}")
    # A log group's GetAtt Arn ends in ":*" on AWS (so it covers its streams), not on moto.
    for group, want in ((f"/outpost/{name}/agents", True), (f"/outpost/{name}/worker", False)):
        got = any(allowed(execution, "logs:PutLogEvents", arn("logs", f"log-group:{group}{tail}")) for tail in (":log-stream:claude/agent/x", ""))
        check(got == want, f"IAM: agent execution {'should' if want else 'should not'} be allowed logs:PutLogEvents to {group}")

    def with_action(stmts, action):
        return [s for s in stmts if s["Effect"] == "Allow" and any(re.fullmatch(re.escape(a).replace(r"\*", ".*"), action) for a in as_list(s["Action"]))]

    # iam:PassRole: only the worker, only the agents' execution role, only to ECS tasks.
    for who, stmts in roles.items():
        for st in with_action(stmts, "iam:PassRole"):
            ok = (
                who == "worker"
                and as_list(st["Action"]) == ["iam:PassRole"]
                and as_list(st["Resource"]) == [exec_arn]
                and st.get("Condition") == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
            )
            check(ok, f"IAM: iam:PassRole only for the worker, only on the agent execution role, with iam:PassedToService ecs-tasks.amazonaws.com: {who}: {st!r}")
    check(with_action(worker, "iam:PassRole") != [], "IAM: the worker can pass the agent execution role")
    # ecs:RunTask: the {Name}-agent-* families, in the workers' cluster.
    run_task = with_action(worker, "ecs:RunTask")
    check(run_task != [], "IAM: the worker may ecs:RunTask")
    for st in run_task:
        check(
            as_list(st["Resource"]) == [arn("ecs", f"task-definition/{name}-agent-*")],
            f"IAM: ecs:RunTask only on task-definition/{name}-agent-*: {st['Resource']!r}",
        )
        eq(st.get("Condition"), {"ArnEquals": {"ecs:cluster": cluster_arn}}, "IAM: ecs:RunTask condition (the workers' cluster)")
    for action in ("ecs:StopTask", "ecs:DescribeTasks", "ecs:ListTasks"):
        for st in with_action(worker, action):
            eq(st.get("Condition"), {"ArnEquals": {"ecs:cluster": cluster_arn}}, f"IAM: {action} condition (the workers' cluster)")
    for st in with_action(worker, "ecs:TagResource"):
        create = st.get("Condition", {}).get("StringEquals", {}).get("ecs:CreateAction")
        check(create in ("RunTask", "RegisterTaskDefinition"), f"IAM: ecs:TagResource only at RunTask/RegisterTaskDefinition: {st!r}")
    # ssm:SendCommand on instances only with the agent-host tag.
    for st in with_action(worker, "ssm:SendCommand"):
        if any(":instance/" in r for r in as_list(st["Resource"])):
            eq(
                st.get("Condition"),
                {"StringEquals": {f"ssm:resourceTag/{AGENT_HOST_TAG[0]}": AGENT_HOST_TAG[1]}},
                "IAM: ssm:SendCommand on instances only on tagged agent hosts",
            )
        else:
            eq(as_list(st["Resource"]), [f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"], "IAM: ssm:SendCommand documents")
    # Resource "*" only where IAM cannot scope.
    for st in worker:
        if "*" in as_list(st["Resource"]):
            extra = set(as_list(st["Action"])) - WORKER_UNSCOPED
            check(not extra, f"IAM: worker actions on Resource '*' beyond those IAM cannot scope: {sorted(extra)}")
    # The execution role reads the secrets prefix only, and decrypts only through SSM.
    for st in with_action(execution, "ssm:GetParameters"):
        eq(as_list(st["Resource"]), [arn("ssm", f"parameter{SECRETS_PREFIX}/*")], "IAM: agent execution role ssm:GetParameters resource")
    for st in with_action(execution, "kms:Decrypt"):
        cond = st.get("Condition", {})
        eq(cond.get("StringEquals", {}).get("kms:ViaService"), f"ssm.{REGION}.amazonaws.com", "IAM: agent execution role kms:Decrypt only via SSM")
        eq(
            cond.get("StringLike", {}).get("kms:EncryptionContext:PARAMETER_ARN"),
            arn("ssm", f"parameter{SECRETS_PREFIX}/*"),
            "IAM: agent execution role kms:Decrypt only for the secrets prefix's parameters",
        )
    # The hosts' managed policy: moto accepts ManagedPolicyArns but attaches nothing.
    host_role = deployed["resources"]["AgentHostRole"]["PhysicalResourceId"].split("/")[-1]
    attached = [a["PolicyArn"] for a in c["iam"].list_attached_role_policies(RoleName=host_role)["AttachedPolicies"]]
    if attached:
        eq(attached, ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"], "agent host role managed policies")
    else:
        notes.append("moto did not attach the agent host role's ManagedPolicyArns: checked in the template")
        eq(
            template["Resources"]["AgentHostRole"]["Properties"].get("ManagedPolicyArns"),
            [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}],
            "template agent host role managed policies",
        )
    profile = c["iam"].get_instance_profile(InstanceProfileName=out.get("AgentHostInstanceProfileArn", "/x").split("/")[-1])["InstanceProfile"]
    eq([r["RoleName"] for r in profile["Roles"]], [host_role], "agent host instance profile role")
    # The agents' security group: no inbound, outbound 443 only.
    sg = c["ec2"].describe_security_groups(GroupIds=[out["AgentTaskSecurityGroupId"]])["SecurityGroups"][0]
    eq(sg.get("IpPermissions"), [], "agent task security group inbound rules")
    egress = [(r.get("IpProtocol"), r.get("FromPort"), r.get("ToPort")) for r in sg.get("IpPermissionsEgress", [])]
    if egress:
        eq(egress, [("tcp", 443, 443)], "agent task security group outbound rules")
    else:
        notes.append("moto did not apply the agent security group's SecurityGroupEgress: checked in the template")
        eq(
            [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIp"]) for r in template["Resources"]["AgentTaskSecurityGroup"]["Properties"]["SecurityGroupEgress"]],
            [("tcp", 443, 443, "0.0.0.0/0")],
            "template agent task security group outbound rules",
        )
        check("SecurityGroupIngress" not in template["Resources"]["AgentTaskSecurityGroup"]["Properties"], "template agent task security group has no inbound rule")


# ------------------------------------------------------------------ static: what moto cannot create


def check_static(template: dict):
    """Checks, in the template text, the resources moto cannot create."""
    r = template["Resources"]
    p = lambda k: r[k]["Properties"]  # noqa: E731
    eq(p("HttpApi").get("ProtocolType"), "HTTP", "HTTP API protocol")
    eq(
        {k: p("HttpApiIntegration").get(k) for k in ("IntegrationType", "PayloadFormatVersion")},
        {"IntegrationType": "AWS_PROXY", "PayloadFormatVersion": "2.0"},
        "HTTP API integration",
    )
    eq(p("HttpApiIntegration").get("IntegrationUri"), {"Fn::GetAtt": ["IngestFunction", "Arn"]}, "HTTP API integration target")
    eq(p("HttpApiDefaultRoute").get("RouteKey"), "$default", "HTTP API route")
    eq((p("HttpApiStage").get("StageName"), p("HttpApiStage").get("AutoDeploy")), ("$default", True), "HTTP API stage")
    eq(p("IngestInvokePermission").get("Principal"), "apigateway.amazonaws.com", "Lambda permission principal")
    eq(p("IngestFunction").get("Architectures"), ["arm64"], "Lambda architectures")
    td = p("WorkerTaskDefinition")
    eq(td.get("EphemeralStorage"), {"SizeInGiB": 50}, "worker ephemeral storage")
    eq((td.get("NetworkMode"), td.get("RequiresCompatibilities")), ("awsvpc", ["FARGATE"]), "worker task on Fargate")
    eq(
        p("WorkerCluster").get("ClusterSettings"),
        [{"Name": "containerInsights", "Value": "enabled"}],
        "Container Insights on the cluster (RunningTaskCount)",
    )
    st = p("WorkerScalableTarget")
    eq((st.get("ServiceNamespace"), st.get("ScalableDimension")), ("ecs", "ecs:service:DesiredCount"), "scalable target")
    eq((st.get("MinCapacity"), st.get("MaxCapacity")), ({"Ref": "WorkerMinCount"}, {"Ref": "WorkerMaxCount"}), "scalable target bounds")
    tt = p("WorkerBacklogPerTaskPolicy")
    eq(tt.get("PolicyType"), "TargetTrackingScaling", "backlog policy type")
    cfg = tt["TargetTrackingScalingPolicyConfiguration"]
    eq(cfg.get("TargetValue"), {"Ref": "BacklogPerTaskTarget"}, "backlog policy target")
    metrics = {m["Id"]: m for m in cfg["CustomizedMetricSpecification"]["Metrics"]}
    def metric(i):
        m = metrics.get(i, {}).get("MetricStat", {}).get("Metric", {})
        return (m.get("Namespace"), m.get("MetricName"))
    eq(metric("visible"), ("AWS/SQS", "ApproximateNumberOfMessagesVisible"), "metric 'visible'")
    eq(metric("inflight"), ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible"), "metric 'inflight'")
    eq(metric("running"), ("ECS/ContainerInsights", "RunningTaskCount"), "metric 'running'")
    returned = [i for i, m in metrics.items() if m.get("ReturnData")]
    eq(returned, ["backlog_per_task"], "the one returned series")
    expr = metrics.get("backlog_per_task", {}).get("Expression", "")
    check(all(x in expr for x in ("visible", "inflight", "running", "/")), f"backlog expression divides the queue by running tasks: {expr!r}")
    eq(p("WorkerScaleFromZeroAlarm").get("AlarmActions"), [{"Ref": "WorkerScaleFromZeroPolicy"}], "scale-from-zero alarm action")
    check_agents_static(template)


def check_agents_static(template: dict):
    """The agents' task definitions and the conditions around them, in the template text."""
    r = template["Resources"]
    for k, res in r.items():
        if res["Type"] == "AWS::ECS::TaskDefinition" and k != "WorkerTaskDefinition":
            check("TaskRoleArn" not in res["Properties"], f"{k}: an agent task definition must have no TaskRoleArn")
    for agent, k in AGENTS.items():
        if not check(k in r and r[k]["Type"] == "AWS::ECS::TaskDefinition", f"{k}: the task definition of {agent}"):
            continue
        td = r[k]["Properties"]
        eq(r[k].get("Condition"), f"Agent{agent.capitalize()}", f"{k}: condition")
        eq(td.get("Family"), {"Fn::Sub": f"${{Name}}-agent-{agent}"}, f"{k}: family")
        eq((td.get("NetworkMode"), td.get("RequiresCompatibilities")), ("awsvpc", ["FARGATE"]), f"{k}: Fargate, awsvpc")
        eq((td.get("Cpu"), td.get("Memory")), ({"Ref": "AgentCpu"}, {"Ref": "AgentMemory"}), f"{k}: AgentCpu/AgentMemory")
        eq(td.get("EphemeralStorage"), {"SizeInGiB": 30}, f"{k}: ephemeral storage")
        eq(td.get("RuntimePlatform", {}).get("CpuArchitecture"), {"Ref": "WorkerArchitecture"}, f"{k}: architecture")
        eq(td.get("ExecutionRoleArn"), {"Fn::GetAtt": ["AgentExecutionRole", "Arn"]}, f"{k}: execution role")
        ctrs = td.get("ContainerDefinitions", [])
        eq([x.get("Name") for x in ctrs], ["agent"], f"{k}: containers")
        for ctr in ctrs:
            user = str(ctr.get("User", ""))
            check(user not in ("", "0", "root") and not user.split(":")[0] in ("0", "root"), f"{k}: the container must run as a non-root user, got User={user!r}")
            eq(user, AGENT_UID, f"{k}: container user")
            eq(ctr.get("Image"), {"Fn::Sub": f"${{AgentImage}}:{agent}"}, f"{k}: image")
            eq(ctr.get("ReadonlyRootFilesystem"), False, f"{k}: ReadonlyRootFilesystem")
            eq(ctr.get("StopTimeout"), 120, f"{k}: StopTimeout")
            eq(ctr.get("LinuxParameters"), {"InitProcessEnabled": True}, f"{k}: LinuxParameters")
            check("Environment" not in ctr and "Secrets" not in ctr, f"{k}: the base family carries no environment and no secrets")
            eq(ctr.get("LogConfiguration", {}).get("Options", {}).get("awslogs-group"), {"Ref": "AgentLogGroup"}, f"{k}: log group")

    # Which agents' task definitions exist for which parameters (the AgentNames membership test
    # is string arithmetic in Conditions; moto deploys the default, all five).
    base = {"DeployCompute": "true", "DeployAgentTasks": "true"}
    cases = [
        ({}, set(AGENTS)),
        ({"AgentNames": "claude,grok"}, {"claude", "grok"}),
        ({"AgentNames": "codex"}, {"codex"}),
        ({"AgentNames": "aider,gemini"}, {"aider", "gemini"}),
        ({"AgentNames": ""}, set()),
        ({"DeployAgentTasks": "false"}, set()),
        ({"DeployCompute": "false"}, set()),
    ]
    for given, want in cases:
        cond = conditions_of(template, dict(base, **given))
        got = {a for a, k in AGENTS.items() if k in r and cond[r[k]["Condition"]]}
        eq(got, want, f"agents' task definitions created with {given or 'the defaults'}")
    # The worker's executor variables, resolved for each combination.
    env = r["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]
    ecs_vars = {
        "OUTPOST_ECS_CLUSTER", "OUTPOST_ECS_SUBNETS", "OUTPOST_ECS_SECURITY_GROUPS", "OUTPOST_ECS_ASSIGN_PUBLIC_IP",
        "OUTPOST_ECS_TASK_FAMILY_PREFIX", "OUTPOST_ECS_EXECUTION_ROLE_ARN",
    }
    ssm_vars = {"OUTPOST_SSM_HOST_TAG", "OUTPOST_SSM_ENTRYPOINT", "OUTPOST_SSM_RUN_AS", "OUTPOST_SSM_OUTPUT_PREFIX"}
    for given, want in [
        ({"DeployAgentTasks": "false"}, ssm_vars),
        ({"DeployAgentTasks": "false", "AgentHostTagKey": ""}, set()),
        ({"DeployAgentTasks": "true", "AgentHostTagKey": ""}, ecs_vars),
        ({"DeployAgentTasks": "true"}, ecs_vars | ssm_vars),
    ]:
        params = dict(base, **given)
        resolved = resolve_novalue(env, parameters_of(template, params), conditions_of(template, params))
        got = {e["Name"] for e in resolved if e["Name"].startswith(("OUTPOST_ECS_", "OUTPOST_SSM_"))} - {"OUTPOST_SSM_PREFIX"}
        eq(got, want, f"worker executor variables with {given}")
    for public, want in (("ENABLED", "true"), ("DISABLED", "false")):
        params = dict(base, AssignPublicIp=public)
        resolved = resolve_novalue(env, parameters_of(template, params), conditions_of(template, params))
        eq({e["Name"]: e["Value"] for e in resolved}.get("OUTPOST_ECS_ASSIGN_PUBLIC_IP"), want, f"OUTPOST_ECS_ASSIGN_PUBLIC_IP with AssignPublicIp={public}")
    # The worker's policies and the hosts' role exist with their features only.
    policies = r["WorkerTaskRole"]["Properties"]["Policies"]
    for given, want in [
        ({"DeployAgentTasks": "false", "AgentHostTagKey": ""}, {"outpost-worker"}),
        ({"DeployAgentTasks": "true", "AgentHostTagKey": ""}, {"outpost-worker", "outpost-agent-tasks"}),
        ({"DeployAgentTasks": "false"}, {"outpost-worker", "outpost-agent-hosts"}),
    ]:
        params = dict(base, **given)
        cond = conditions_of(template, params)
        got = {x["PolicyName"] for x in resolve_novalue(policies, parameters_of(template, params), cond)}
        eq(got, want, f"worker policies with {given}")
    cond = conditions_of(template, dict(base, AgentHostTagKey=""))
    check(not cond[r["AgentHostRole"]["Condition"]] and not cond[r["AgentHostInstanceProfile"]["Condition"]], "no agent host role without AgentHostTagKey")


def check_agent_dockerfile():
    """infra/agent.Dockerfile: a target per agent, user 10001, no keys, the pins of scripts/agent-clis."""
    text = AGENT_DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, re.M | re.I)
    check(set(AGENTS) | {"base"} <= set(stages), f"agent.Dockerfile: stages {stages} lack some of base + {sorted(AGENTS)}")
    body = {}
    for part in re.split(r"^(?=FROM\s)", text, flags=re.M)[1:]:
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", part, re.I)
        if m:
            body[m.group(2)] = (m.group(1), part)
    for agent in AGENTS:
        parent, part = body.get(agent, ("", ""))
        users = re.findall(r"^USER\s+(\S+)", part, re.M)
        check(users[-1:] == [AGENT_UID] if users else parent in ("base", "node-base"), f"agent.Dockerfile: stage {agent} must end as USER {AGENT_UID}: {users}")
    base = body.get("base", ("", ""))[1]
    check('ENTRYPOINT ["/usr/local/bin/outpost-worker", "agent-run"]' in base, "agent.Dockerfile: base's entrypoint is outpost-worker agent-run")
    check(re.search(r"useradd[^\n]*--uid 10001[^\n]*outpost", base) is not None, "agent.Dockerfile: base creates the user outpost with uid 10001")
    check(re.findall(r"^USER\s+(\S+)", base, re.M)[-1:] == [AGENT_UID], "agent.Dockerfile: base ends as USER 10001")
    for line in re.findall(r"^(?:ENV|ARG)\s+(.*)$", text, re.M):
        check(not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)", line.split("=")[0], re.I), f"agent.Dockerfile: no key in ENV/ARG: {line!r}")
    if not AGENT_CLIS.exists():
        notes.append("scripts/agent-clis not found: agent.Dockerfile pins not compared")
        return
    pins = dict(re.findall(r'"(@[^"@]+)@([^"]+)"', AGENT_CLIS.read_text()))
    pins.update(re.findall(r'PIP_PIN="([^"=]+)==([^"]+)"', AGENT_CLIS.read_text()))
    args = dict(re.findall(r"^ARG\s+(\w+_VERSION)=(\S+)", text, re.M))
    for package, arg in (
        ("@anthropic-ai/claude-code", "CLAUDE_CODE_VERSION"),
        ("@openai/codex", "CODEX_VERSION"),
        ("@google/gemini-cli", "GEMINI_CLI_VERSION"),
        ("@vibe-kit/grok-cli", "GROK_CLI_VERSION"),
        ("aider-chat", "AIDER_VERSION"),
    ):
        eq(args.get(arg), pins.get(package), f"agent.Dockerfile {arg} vs the pin of {package} in scripts/agent-clis")
        check(f"${{{arg}}}" in text, f"agent.Dockerfile installs {package} at ${{{arg}}}")


# ------------------------------------------------------------------ main


def main() -> int:
    endpoint = os.environ.get("OUTPOST_TEST_AWS_ENDPOINT")
    if not endpoint:
        print("check_template: set OUTPOST_TEST_AWS_ENDPOINT to a moto server (e.g. http://127.0.0.1:5055)", file=sys.stderr)
        return 2
    started = time.time()
    template = load_template()
    body = TEMPLATE.read_text()
    c = clients(endpoint)
    try:
        c["cloudformation"].list_stacks()
    except Exception as e:
        print(f"check_template: cannot reach {endpoint}: {e}", file=sys.stderr)
        return 2

    check_static(template)
    check_agent_dockerfile()
    run = uuid.uuid4().hex[:10]
    unsupported = moto_unsupported(template)

    # Phase 1: the template as it is, data plane only.
    name1 = f"oc1-{run}"
    params1 = {"Name": name1, "DeployCompute": "false", "MaxReceiveCount": MAX_RECEIVE_COUNT, "RunsRetentionDays": RUNS_RETENTION_DAYS}
    conditions1 = conditions_of(template, params1)
    try:
        deployed = deploy(c, name1, body, params1)
        check_data_plane(c, template, name1, deployed, dict(params1, RunsRetentionDays=RUNS_RETENTION_DAYS), conditions1)
    except Exception as e:
        failures.append(f"phase 1 (DeployCompute=false): {type(e).__name__}: {e}")
    finally:
        cleanup(c, name1, name1)

    # Phase 2: compute too, minus what moto cannot create.
    name2 = f"oc2-{run}"
    pruned, dropped = without(template, set(unsupported))
    try:
        zbuf = io.BytesIO()
        with zipfile.ZipFile(zbuf, "w") as z:
            z.writestr(zipfile.ZipInfo("bootstrap"), "#!/bin/sh\necho stand-in\n")
        c["s3"].create_bucket(Bucket=f"{name2}-code")
        c["s3"].put_object(Bucket=f"{name2}-code", Key="ingest-lambda.zip", Body=zbuf.getvalue())
        params2 = {
            "Name": name2,
            "DeployCompute": "true",
            "LambdaCodeBucket": f"{name2}-code",
            "LambdaCodeKey": "ingest-lambda.zip",
            "VpcId": "vpc-0123456789abcdef0",
            "SubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
            "WorkerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/outpost-worker:check",
            "DeployAgentTasks": "true",
            "AgentImage": AGENT_IMAGE,
            # The default, given explicitly: moto splits a CommaDelimitedList it is given, but
            # not a default (it would see one string, and no agent's condition would hold).
            "AgentNames": ",".join(AGENTS),
        }
        conditions2 = conditions_of(template, params2)
        deployed = deploy(c, name2, json.dumps(pruned), params2)
        want = {k for k, r in pruned["Resources"].items() if conditions2.get(r.get("Condition"), True) and k not in dropped}
        check(all(k in want for k in AGENTS.values()), f"all five agents' task definitions with the default AgentNames: {sorted(want)}")
        eq(set(deployed["resources"]), want, "resources moto created with DeployCompute=true, DeployAgentTasks=true")
        check_compute(c, name2, deployed, dropped)
        check_agents(c, template, name2, deployed)
    except Exception as e:
        failures.append(f"phase 2 (DeployCompute=true, DeployAgentTasks=true): {type(e).__name__}: {e}")
        if os.environ.get("OUTPOST_CHECK_DEBUG"):
            import traceback

            traceback.print_exc()
    finally:
        cleanup(c, name2, name2)

    print(f"moto could not create ({len(unsupported)}): " + ", ".join(f"{k} ({t})" for k, t in sorted(unsupported.items())))
    refs_only = sorted(dropped - set(unsupported))
    if refs_only:
        print("left out of phase 2 as they refer to those: " + ", ".join(refs_only))
    for n in notes:
        print(f"note: {n}")
    took = time.time() - started
    if failures:
        print(f"FAILED ({len(failures)} problems, {took:.1f}s):", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"template deployed to moto and checked ({took:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
