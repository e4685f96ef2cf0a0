//! The items of the table: attribute names, the time format, and conversions between domain
//! values and items. Decoding never panics: an item that does not hold what it should is a
//! [`MalformedItem`] naming the item and the attribute.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use outpost_core::domain::{AgentReport, Artifact, FailureReason, RemoteTask, RepoSpec, Run, RunStatus, WorkerId};
use outpost_core::ports::workers::{cap_agent_loads, AgentLoad};
use outpost_core::ports::{KeyError, StoreError, WorkerInfo};
use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// One item as the SDK hands it over.
pub(super) type Item = HashMap<String, AttributeValue>;

/// How long a terminal run is kept before TTL deletes it (from `finished_at`).
pub const RUN_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a worker's report is kept before TTL deletes it (from `last_seen`).
pub const WORKER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// `strftime` format of stored times: fixed width, so string order is time order.
pub(super) const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// Value of `running` while a run is running (the hash key of the sparse `running` index).
pub(super) const RUNNING_MARKER: &str = "1";
/// Value of `fleet` on every worker item (the hash key of the `fleet` index).
pub(super) const FLEET_MARKER: &str = "workers";

/// Attribute names.
pub(super) mod attr {
    pub const PK: &str = "pk";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const CREATED_AT: &str = "created_at";

    // Runs.
    pub const TENANT_ID: &str = "tenant_id";
    pub const AGENT: &str = "agent";
    pub const TASK: &str = "task";
    pub const REPO: &str = "repo";
    pub const TIMEOUT_SECS: &str = "timeout_secs";
    pub const IDLE_TIMEOUT_SECS: &str = "idle_timeout_secs";
    pub const STATUS: &str = "status";
    pub const ATTEMPTS: &str = "attempts";
    pub const STARTED_AT: &str = "started_at";
    pub const FINISHED_AT: &str = "finished_at";
    pub const EXIT_CODE: &str = "exit_code";
    pub const FAILURE_REASON: &str = "failure_reason";
    pub const ARTIFACTS: &str = "artifacts";
    pub const WORKER_ID: &str = "worker_id";
    pub const LEASE_EXPIRES_AT: &str = "lease_expires_at";
    pub const LEASE_EXPIRES_MS: &str = "lease_expires_ms";
    pub const CANCEL_REQUESTED: &str = "cancel_requested";
    pub const RUNNING: &str = "running";
    /// The agent's report, JSON (`AgentReport`); absent when it reported nothing.
    pub const REPORT: &str = "report";
    /// The run's remote task, JSON (`RemoteTask`); absent when none was started.
    pub const REMOTE: &str = "remote";

    // Inside `repo` and `artifacts`.
    pub const URL: &str = "url";
    pub const BRANCH: &str = "branch";
    pub const NAME: &str = "name";
    pub const SIZE: &str = "size";
    pub const SHA256: &str = "sha256";
    pub const CONTENT_TYPE: &str = "content_type";

    // API keys.
    pub const KEY_TENANT: &str = "key_tenant";
    pub const DISPLAY_PREFIX: &str = "display_prefix";
    pub const REVOKED_AT: &str = "revoked_at";

    // Workers (also `worker_id`, `started_at`).
    pub const HOSTNAME: &str = "hostname";
    pub const SLOTS: &str = "slots";
    pub const BUSY: &str = "busy";
    pub const LAST_SEEN: &str = "last_seen";
    pub const FLEET: &str = "fleet";
    /// The worker's agent loads, JSON `[AgentLoad]` (absent in reports stored before it: none).
    pub const AGENT_LOADS: &str = "agents";
}

/// `pk` of an API key item.
pub(super) fn key_pk(hash: &str) -> String {
    format!("key#{hash}")
}

/// `pk` of a tenant item.
pub(super) fn tenant_pk(tenant: &str) -> String {
    format!("tenant#{tenant}")
}

/// `pk` of a worker item.
pub(super) fn worker_pk(id: &WorkerId) -> String {
    format!("worker#{}", id.as_str())
}

/// An item that does not hold what it should.
#[derive(Debug, thiserror::Error)]
#[error("malformed DynamoDB item {pk:?}: {message}")]
pub struct MalformedItem {
    pk: String,
    message: String,
}

impl From<MalformedItem> for StoreError {
    fn from(e: MalformedItem) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<MalformedItem> for KeyError {
    fn from(e: MalformedItem) -> Self {
        KeyError::Backend(Box::new(e))
    }
}

/// Now, to the millisecond (what is stored).
pub(super) fn now_ms() -> DateTime<Utc> {
    truncate_ms(Utc::now())
}

/// `t` truncated to the millisecond.
pub(super) fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `t` plus `d`, saturating at the latest representable time.
pub(super) fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(super) fn format_time(t: DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn time(t: DateTime<Utc>) -> AttributeValue {
    s(format_time(t))
}

/// Epoch milliseconds of `t`, as a number.
pub(super) fn time_ms(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis())
}

/// The TTL value (epoch seconds) of an item to delete `keep` after `from`.
pub(super) fn expiry(from: DateTime<Utc>, keep: Duration) -> AttributeValue {
    n(plus(from, keep).timestamp())
}

pub(super) fn repo_value(repo: &RepoSpec) -> AttributeValue {
    let mut map = HashMap::from([(attr::URL.to_owned(), s(&repo.url))]);
    if let Some(branch) = &repo.branch {
        map.insert(attr::BRANCH.to_owned(), s(branch));
    }
    AttributeValue::M(map)
}

pub(super) fn artifacts_value(artifacts: &[Artifact]) -> AttributeValue {
    AttributeValue::L(
        artifacts
            .iter()
            .map(|a| {
                AttributeValue::M(HashMap::from([
                    (attr::NAME.to_owned(), s(&a.name)),
                    (attr::SIZE.to_owned(), n(a.size)),
                    (attr::SHA256.to_owned(), s(&a.sha256)),
                    (attr::CONTENT_TYPE.to_owned(), s(&a.content_type)),
                ]))
            })
            .collect(),
    )
}

/// The `report` attribute of a report: its JSON, or `None` (no attribute) when the agent reported
/// nothing. Serialising these plain fields cannot fail; if it ever did, the report is dropped
/// (and logged) rather than the run's state change.
pub(super) fn report_value(report: &AgentReport) -> Option<AttributeValue> {
    match report.to_stored_json() {
        Ok(json) => json.map(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise an agent report; storing none");
            None
        }
    }
}

/// The whole item of `run`, with the `running` marker while it runs and its TTL once terminal.
pub(super) fn run_item(run: &Run) -> Item {
    let mut item = Item::new();
    let mut put = |name: &str, value: AttributeValue| {
        item.insert(name.to_owned(), value);
    };
    put(attr::PK, s(run.id.as_str()));
    put(attr::TENANT_ID, s(run.tenant.as_str()));
    put(attr::AGENT, s(&run.agent));
    put(attr::TASK, s(&run.task));
    if let Some(repo) = &run.repo {
        put(attr::REPO, repo_value(repo));
    }
    put(attr::TIMEOUT_SECS, n(run.timeout_secs));
    if let Some(secs) = run.idle_timeout_secs {
        put(attr::IDLE_TIMEOUT_SECS, n(secs));
    }
    put(attr::STATUS, s(run.status.as_str()));
    put(attr::ATTEMPTS, n(run.attempts));
    put(attr::CREATED_AT, time(run.created_at));
    if let Some(t) = run.started_at {
        put(attr::STARTED_AT, time(t));
    }
    if let Some(t) = run.finished_at {
        put(attr::FINISHED_AT, time(t));
        if run.status.is_terminal() {
            put(attr::EXPIRES_AT, expiry(t, RUN_RETENTION));
        }
    }
    if let Some(code) = run.exit_code {
        put(attr::EXIT_CODE, n(code));
    }
    if let Some(reason) = run.failure_reason {
        put(attr::FAILURE_REASON, s(reason.as_str()));
    }
    put(attr::ARTIFACTS, artifacts_value(&run.artifacts));
    if let Some(w) = &run.worker_id {
        put(attr::WORKER_ID, s(w.as_str()));
    }
    if let Some(t) = run.lease_expires_at {
        put(attr::LEASE_EXPIRES_AT, time(t));
        put(attr::LEASE_EXPIRES_MS, time_ms(t));
    }
    put(attr::CANCEL_REQUESTED, AttributeValue::Bool(run.cancel_requested));
    if run.status == RunStatus::Running {
        put(attr::RUNNING, s(RUNNING_MARKER));
    }
    if let Some(report) = report_value(&run.report) {
        put(attr::REPORT, report);
    }
    if let Some(remote) = run.remote.as_ref().and_then(remote_value) {
        put(attr::REMOTE, remote);
    }
    item
}

/// The `remote` attribute of a remote task: its JSON (plain fields: serialising cannot fail; if
/// it ever did, `None`).
pub(super) fn remote_value(remote: &RemoteTask) -> Option<AttributeValue> {
    serde_json::to_string(remote).ok().map(s)
}

/// The run an item holds.
pub(super) fn run_from_item(item: &Item) -> Result<Run, MalformedItem> {
    let r = ItemReader::new(item);
    let repo = match r.opt_map(attr::REPO)? {
        None => None,
        Some(map) => {
            let m = r.nested(attr::REPO, map);
            Some(RepoSpec {
                url: m.string(attr::URL)?.to_owned(),
                branch: m.opt_string(attr::BRANCH)?.map(str::to_owned),
            })
        }
    };
    let artifacts = r
        .list(attr::ARTIFACTS)?
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let context = format!("{}[{i}]", attr::ARTIFACTS);
            let AttributeValue::M(map) = value else {
                return Err(r.malformed(format!("{context} is not a map")));
            };
            let m = r.nested(&context, map);
            Ok(Artifact {
                name: m.string(attr::NAME)?.to_owned(),
                size: m.number(attr::SIZE)?,
                sha256: m.string(attr::SHA256)?.to_owned(),
                content_type: m.string(attr::CONTENT_TYPE)?.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let report = r
        .opt_string(attr::REPORT)?
        .map(|json| {
            serde_json::from_str::<AgentReport>(json)
                .map_err(|e| r.malformed(format!("{} is not an agent report: {e}", attr::REPORT)))
        })
        .transpose()?
        .unwrap_or_default();
    let remote = r
        .opt_string(attr::REMOTE)?
        .map(|json| {
            serde_json::from_str::<RemoteTask>(json)
                .map_err(|e| r.malformed(format!("{} is not a remote task: {e}", attr::REMOTE)))
        })
        .transpose()?;
    Ok(Run {
        id: r.parse(attr::PK)?,
        tenant: r.parse(attr::TENANT_ID)?,
        agent: r.string(attr::AGENT)?.to_owned(),
        task: r.string(attr::TASK)?.to_owned(),
        repo,
        timeout_secs: r.number(attr::TIMEOUT_SECS)?,
        status: r.parse::<RunStatus>(attr::STATUS)?,
        attempts: r.number(attr::ATTEMPTS)?,
        created_at: r.time(attr::CREATED_AT)?,
        started_at: r.opt_time(attr::STARTED_AT)?,
        finished_at: r.opt_time(attr::FINISHED_AT)?,
        exit_code: r.opt_number(attr::EXIT_CODE)?,
        failure_reason: r.opt_parse::<FailureReason>(attr::FAILURE_REASON)?,
        artifacts,
        worker_id: r.opt_string(attr::WORKER_ID)?.map(|w| WorkerId(w.to_owned())),
        lease_expires_at: r.opt_time(attr::LEASE_EXPIRES_AT)?,
        cancel_requested: r.boolean(attr::CANCEL_REQUESTED)?,
        idle_timeout_secs: r.opt_number(attr::IDLE_TIMEOUT_SECS)?,
        report,
        remote,
    })
}

/// The whole item of a worker's report (its agent loads as [`cap_agent_loads`] keeps them).
pub(super) fn worker_item(info: &WorkerInfo) -> Item {
    let mut item = Item::from([
        (attr::PK.to_owned(), s(worker_pk(&info.id))),
        (attr::WORKER_ID.to_owned(), s(info.id.as_str())),
        (attr::HOSTNAME.to_owned(), s(&info.hostname)),
        (attr::SLOTS.to_owned(), n(info.slots)),
        (attr::BUSY.to_owned(), n(info.busy)),
        (attr::STARTED_AT.to_owned(), time(info.started_at)),
        (attr::LAST_SEEN.to_owned(), time(info.last_seen)),
        (attr::FLEET.to_owned(), s(FLEET_MARKER)),
        (attr::EXPIRES_AT.to_owned(), expiry(info.last_seen, WORKER_RETENTION)),
    ]);
    let loads = cap_agent_loads(&info.agents);
    // Plain fields: serialising cannot fail; if it ever did, the report goes without its loads.
    if let Some(json) = (!loads.is_empty())
        .then(|| serde_json::to_string(&loads).ok())
        .flatten()
    {
        item.insert(attr::AGENT_LOADS.to_owned(), s(json));
    }
    item
}

/// The worker report an item holds.
pub(super) fn worker_from_item(item: &Item) -> Result<WorkerInfo, MalformedItem> {
    let r = ItemReader::new(item);
    Ok(WorkerInfo {
        id: WorkerId(r.string(attr::WORKER_ID)?.to_owned()),
        hostname: r.string(attr::HOSTNAME)?.to_owned(),
        slots: r.number(attr::SLOTS)?,
        busy: r.number(attr::BUSY)?,
        started_at: r.time(attr::STARTED_AT)?,
        last_seen: r.time(attr::LAST_SEEN)?,
        agents: r
            .opt_string(attr::AGENT_LOADS)?
            .map(|json| {
                serde_json::from_str::<Vec<AgentLoad>>(json)
                    .map_err(|e| r.malformed(format!("{} is not a list of agent loads: {e}", attr::AGENT_LOADS)))
            })
            .transpose()?
            .unwrap_or_default(),
    })
}

/// Typed reads of one item's attributes (or of a map inside it, named by `context`).
pub(super) struct ItemReader<'a> {
    item: &'a Item,
    pk: &'a str,
    context: String,
}

impl<'a> ItemReader<'a> {
    pub(super) fn new(item: &'a Item) -> Self {
        let pk = match item.get(attr::PK) {
            Some(AttributeValue::S(pk)) => pk.as_str(),
            _ => "<no pk>",
        };
        Self {
            item,
            pk,
            context: String::new(),
        }
    }

    /// A reader of `map`, the attribute `name` of this item.
    fn nested(&self, name: &str, map: &'a Item) -> ItemReader<'a> {
        ItemReader {
            item: map,
            pk: self.pk,
            context: format!("{}{name}.", self.context),
        }
    }

    pub(super) fn malformed(&self, message: impl Into<String>) -> MalformedItem {
        MalformedItem {
            pk: self.pk.to_owned(),
            message: message.into(),
        }
    }

    fn wrong_type(&self, name: &str, expected: &str) -> MalformedItem {
        self.malformed(format!("{}{name} is not {expected}", self.context))
    }

    fn missing(&self, name: &str) -> MalformedItem {
        self.malformed(format!("{}{name} is missing", self.context))
    }

    fn present(&self, name: &str) -> Option<&'a AttributeValue> {
        self.item.get(name).filter(|v| !matches!(v, AttributeValue::Null(_)))
    }

    pub(super) fn opt_string(&self, name: &str) -> Result<Option<&'a str>, MalformedItem> {
        match self.present(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
            Some(_) => Err(self.wrong_type(name, "a string")),
        }
    }

    pub(super) fn string(&self, name: &str) -> Result<&'a str, MalformedItem> {
        self.opt_string(name)?.ok_or_else(|| self.missing(name))
    }

    pub(super) fn opt_parse<T>(&self, name: &str) -> Result<Option<T>, MalformedItem>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_string(name)?
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| self.malformed(format!("{}{name}: {e}", self.context)))
            })
            .transpose()
    }

    pub(super) fn parse<T>(&self, name: &str) -> Result<T, MalformedItem>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_parse(name)?.ok_or_else(|| self.missing(name))
    }

    pub(super) fn opt_number<T>(&self, name: &str) -> Result<Option<T>, MalformedItem>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.present(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse::<T>()
                .map(Some)
                .map_err(|e| self.malformed(format!("{}{name} = {v}: {e}", self.context))),
            Some(_) => Err(self.wrong_type(name, "a number")),
        }
    }

    pub(super) fn number<T>(&self, name: &str) -> Result<T, MalformedItem>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_number(name)?.ok_or_else(|| self.missing(name))
    }

    pub(super) fn boolean(&self, name: &str) -> Result<bool, MalformedItem> {
        match self.present(name) {
            None => Err(self.missing(name)),
            Some(AttributeValue::Bool(v)) => Ok(*v),
            Some(_) => Err(self.wrong_type(name, "a boolean")),
        }
    }

    pub(super) fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, MalformedItem> {
        self.opt_string(name)?
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| self.malformed(format!("{}{name} = {v:?} is not a time: {e}", self.context)))
            })
            .transpose()
    }

    pub(super) fn time(&self, name: &str) -> Result<DateTime<Utc>, MalformedItem> {
        self.opt_time(name)?.ok_or_else(|| self.missing(name))
    }

    fn opt_map(&self, name: &str) -> Result<Option<&'a Item>, MalformedItem> {
        match self.present(name) {
            None => Ok(None),
            Some(AttributeValue::M(v)) => Ok(Some(v)),
            Some(_) => Err(self.wrong_type(name, "a map")),
        }
    }

    fn list(&self, name: &str) -> Result<&'a [AttributeValue], MalformedItem> {
        match self.present(name) {
            None => Ok(&[]),
            Some(AttributeValue::L(v)) => Ok(v.as_slice()),
            Some(_) => Err(self.wrong_type(name, "a list")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_core::domain::{NewRun, RunId, Usage};

    fn queued_run() -> Run {
        Run::queued(NewRun {
            id: RunId::generate(),
            tenant: "acme".parse().expect("tenant"),
            agent: "claude".into(),
            task: "Fix the flaky test — ünïcödé ✓".into(),
            repo: None,
            timeout_secs: 900,
            idle_timeout_secs: None,
            created_at: now_ms(),
        })
    }

    fn finished_run() -> Run {
        let now = now_ms();
        Run {
            repo: Some(RepoSpec {
                url: "https://example.com/acme/repo.git".into(),
                branch: Some("main".into()),
            }),
            status: RunStatus::Failed,
            attempts: 2,
            started_at: Some(now),
            finished_at: Some(plus(now, Duration::from_millis(1_234))),
            exit_code: Some(-3),
            failure_reason: Some(FailureReason::NonZeroExit),
            artifacts: vec![
                Artifact {
                    name: "output.log".into(),
                    size: 6,
                    sha256: "ab".repeat(32),
                    content_type: "text/plain".into(),
                },
                Artifact {
                    name: "files/report.md".into(),
                    size: u64::MAX,
                    sha256: "cd".repeat(32),
                    content_type: "text/markdown".into(),
                },
            ],
            worker_id: Some(WorkerId("wrk_1".into())),
            cancel_requested: true,
            idle_timeout_secs: Some(120),
            report: AgentReport {
                result: Some("Done — ünïcödé ✓".into()),
                error: Some("401 invalid x-api-key".into()),
                usage: Some(Usage {
                    input_tokens: Some(1_200),
                    cached_input_tokens: Some(1_000),
                    output_tokens: Some(34),
                    cost_usd: Some(0.0123),
                    source: "claude result.total_cost_usd".into(),
                }),
                session_id: Some("0b1c-session".into()),
            },
            ..queued_run()
        }
    }

    #[test]
    fn runs_round_trip_through_items() {
        let now = now_ms();
        let running = Run {
            status: RunStatus::Running,
            attempts: 1,
            started_at: Some(now),
            worker_id: Some(WorkerId("wrk_1".into())),
            lease_expires_at: Some(plus(now, Duration::from_secs(60))),
            repo: Some(RepoSpec {
                url: "git@example.com:acme/repo.git".into(),
                branch: None,
            }),
            ..queued_run()
        };
        for run in [queued_run(), running, finished_run()] {
            let item = run_item(&run);
            assert_eq!(run_from_item(&item).expect("decodes"), run);
        }
        // Absent values are absent attributes, not empty ones.
        let queued = run_item(&queued_run());
        assert!(!queued.contains_key(attr::IDLE_TIMEOUT_SECS) && !queued.contains_key(attr::REPORT));
        let done = run_item(&finished_run());
        assert_eq!(done.get(attr::IDLE_TIMEOUT_SECS), Some(&n(120)));
        assert!(matches!(done.get(attr::REPORT), Some(AttributeValue::S(json)) if json.contains("total_cost_usd")));
    }

    #[test]
    fn markers_follow_the_status() {
        let queued = run_item(&queued_run());
        assert!(!queued.contains_key(attr::RUNNING) && !queued.contains_key(attr::EXPIRES_AT));
        let running = run_item(&Run {
            status: RunStatus::Running,
            ..queued_run()
        });
        assert_eq!(running.get(attr::RUNNING), Some(&s(RUNNING_MARKER)));
        let done = finished_run();
        let item = run_item(&done);
        assert!(!item.contains_key(attr::RUNNING));
        let finished = done.finished_at.expect("finished");
        let ttl = finished.timestamp() + i64::try_from(RUN_RETENTION.as_secs()).expect("fits");
        assert_eq!(item.get(attr::EXPIRES_AT), Some(&n(ttl)));
    }

    #[test]
    fn times_are_fixed_width_and_sort_as_strings() {
        let a = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).expect("time");
        assert_eq!(format_time(a), "2023-11-14T22:13:20.000Z");
        let b = plus(a, Duration::from_millis(5));
        let c = plus(a, Duration::from_secs(3_600 * 24 * 400));
        assert!(format_time(a) < format_time(b) && format_time(b) < format_time(c));
        assert_eq!(format_time(b).len(), format_time(c).len());
    }

    #[test]
    fn malformed_items_are_errors_that_name_the_attribute() {
        let good = run_item(&finished_run());
        let cases: [(&str, Option<AttributeValue>, &str); 8] = [
            (attr::REPORT, Some(s("{not json")), "report is not an agent report"),
            (attr::IDLE_TIMEOUT_SECS, Some(n("-5")), "idle_timeout_secs = -5"),
            (attr::STATUS, Some(s("done")), "status"),
            (attr::ATTEMPTS, Some(s("1")), "attempts is not a number"),
            (attr::ATTEMPTS, Some(n("-1")), "attempts = -1"),
            (attr::CREATED_AT, Some(s("yesterday")), "created_at"),
            (attr::TENANT_ID, None, "tenant_id is missing"),
            (
                attr::ARTIFACTS,
                Some(AttributeValue::L(vec![s("x")])),
                "artifacts[0] is not a map",
            ),
        ];
        for (name, value, expected) in cases {
            let mut item = good.clone();
            match value {
                Some(v) => item.insert(name.to_owned(), v),
                None => item.remove(name),
            };
            let err = run_from_item(&item).expect_err(name).to_string();
            assert!(err.contains(expected), "{err:?} does not mention {expected:?}");
            assert!(err.contains("run_"), "{err:?} does not name the item");
        }
        let mut item = good;
        if let Some(AttributeValue::L(list)) = item.get_mut(attr::ARTIFACTS) {
            list[1] = AttributeValue::M(HashMap::new());
        }
        let err = run_from_item(&item).expect_err("artifact").to_string();
        assert!(err.contains("artifacts[1].name is missing"), "{err}");
    }

    #[test]
    fn workers_round_trip_through_items() {
        let now = now_ms();
        let info = WorkerInfo {
            id: WorkerId("wrk_01".into()),
            hostname: "host-a".into(),
            slots: 4,
            busy: 1,
            started_at: plus(now, Duration::ZERO) - chrono::Duration::hours(1),
            last_seen: now,
            agents: Vec::new(),
        };
        let item = worker_item(&info);
        assert_eq!(item.get(attr::PK), Some(&s("worker#wrk_01")));
        assert!(!item.contains_key(attr::TENANT_ID), "workers stay out of by_tenant");
        assert!(
            !item.contains_key(attr::AGENT_LOADS),
            "no loads, no attribute (as in older items)"
        );
        assert_eq!(worker_from_item(&item).expect("decodes"), info);

        let loaded = WorkerInfo {
            agents: vec![AgentLoad {
                agent: "claude".into(),
                executor: outpost_core::domain::ExecutorKind::Ssm,
                in_flight: 3,
                available: Some(true),
                detail: Some("2 of 3 hosts online".into()),
            }],
            ..info
        };
        let item = worker_item(&loaded);
        assert!(matches!(item.get(attr::AGENT_LOADS), Some(AttributeValue::S(json)) if json.contains("\"ssm\"")));
        assert_eq!(worker_from_item(&item).expect("decodes"), loaded);
        let mut spoiled = item;
        spoiled.insert(attr::AGENT_LOADS.to_owned(), s("[{oops"));
        let err = worker_from_item(&spoiled).expect_err("bad loads").to_string();
        assert!(
            err.contains("agents is not a list of agent loads") && err.contains("worker#wrk_01"),
            "{err}"
        );
    }
}
