//! The remote executors' settings (AWS workers; `infra/outpost.yaml` sets the variables on the
//! worker service): part of the one settings tree, as flags, variables, or the settings file's
//! `[remote]` table (the same names in snake case), resolved and checked once into
//! [`RemoteSettings`]. A worker has the ECS executor when a cluster is set and the SSM executor
//! when hosts are (by tag or by ids); values left unset keep the launchers' own defaults
//! (`outpost_aws::ecs::EcsConfig`, `outpost_aws::ssm_exec::SsmConfig`).
//!
//! | setting | flag / variable | default |
//! |---|---|---|
//! | ECS cluster (enables `ecs`) | `--ecs-cluster` / `OUTPOST_ECS_CLUSTER` | none |
//! | agent tasks' subnets, security groups | `--ecs-subnets`, `--ecs-security-groups` / `OUTPOST_ECS_SUBNETS`, `OUTPOST_ECS_SECURITY_GROUPS` (`,`-separated) | none |
//! | public IP for agent tasks | `--ecs-assign-public-ip[=BOOL]` / `OUTPOST_ECS_ASSIGN_PUBLIC_IP` | off |
//! | capacity provider | `--ecs-capacity-provider` / `OUTPOST_ECS_CAPACITY_PROVIDER` | launch type FARGATE |
//! | task definition families | `--ecs-task-family-prefix` / `OUTPOST_ECS_TASK_FAMILY_PREFIX` | `outpost-agent-` |
//! | SSM hosts by tag or ids (enables `ssm`) | `--ssm-host-tag KEY=VALUE`, `--ssm-host-ids` / `OUTPOST_SSM_HOST_TAG`, `OUTPOST_SSM_HOST_IDS` (one of them) | none |
//! | entrypoint on the hosts | `--ssm-entrypoint` / `OUTPOST_SSM_ENTRYPOINT` | `/usr/local/bin/outpost-worker` |
//! | its unprivileged user (never root) | `--ssm-run-as` / `OUTPOST_SSM_RUN_AS` | `outpost` |
//! | hosts' workspace folder | `--ssm-work-dir` / `OUTPOST_SSM_WORK_DIR` | `/var/lib/outpost/runs` |
//! | commands' own output in the bucket | `--ssm-output-prefix` / `OUTPOST_SSM_OUTPUT_PREFIX` | `ssm-output/` |
//! | polls of remote executions | `--remote-poll-ms` / `OUTPOST_REMOTE_POLL_MS` | 5000 |
//! | time beyond a run's timeout to start and upload | `--remote-start-slack-secs` / `OUTPOST_REMOTE_START_SLACK_SECS` | 600 |
//! | reconciliation sweeps | `--remote-sweep-secs` / `OUTPOST_REMOTE_SWEEP_SECS` | 300 (≥ 1) |

use crate::settings::{invalid, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// The remote executors' flags and variables.
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
    /// The unprivileged user the entrypoint runs as on the hosts (never root). Default: outpost
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

/// The settings file's `[remote]` table: [`RemoteArgs`] by their names in snake case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteFile {
    pub ecs_cluster: Option<String>,
    pub ecs_subnets: Option<Vec<String>>,
    pub ecs_security_groups: Option<Vec<String>>,
    pub ecs_assign_public_ip: Option<bool>,
    pub ecs_capacity_provider: Option<String>,
    pub ecs_task_family_prefix: Option<String>,
    pub ssm_host_tag: Option<String>,
    pub ssm_host_ids: Option<Vec<String>>,
    pub ssm_entrypoint: Option<String>,
    pub ssm_run_as: Option<String>,
    pub ssm_work_dir: Option<String>,
    pub ssm_output_prefix: Option<String>,
    pub remote_poll_ms: Option<u64>,
    pub remote_start_slack_secs: Option<u64>,
    pub remote_sweep_secs: Option<u64>,
}

/// The resolved remote executors: `None` for one not configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteSettings {
    pub ecs: Option<EcsSettings>,
    pub ssm: Option<SsmSettings>,
    /// Between polls of remote executions; `None` keeps the launchers' default.
    pub poll: Option<Duration>,
    /// Beyond a run's timeout, to start and store its artifacts; `None` keeps the dispatcher's.
    pub start_slack: Option<Duration>,
    /// Between reconciliation sweeps; `None` keeps the dispatcher's.
    pub sweep: Option<Duration>,
}

/// The `ecs` executor: per-run Fargate tasks in `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSettings {
    pub cluster: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
    pub capacity_provider: Option<String>,
    /// Families `{prefix}{agent}`; `None` keeps the default (`outpost-agent-`).
    pub task_family_prefix: Option<String>,
}

/// The `ssm` executor: commands on EC2 hosts with the SSM agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmSettings {
    pub hosts: SsmHosts,
    pub entrypoint: Option<String>,
    /// Never root (checked).
    pub run_as: Option<String>,
    pub work_dir: Option<String>,
    pub output_prefix: Option<String>,
}

/// Which EC2 instances are agent hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsmHosts {
    /// Every instance with tag `key` = `value`.
    Tag { key: String, value: String },
    /// These instance ids.
    Ids(Vec<String>),
}

impl RemoteSettings {
    /// Whether any remote executor is configured.
    pub fn any(&self) -> bool {
        self.ecs.is_some() || self.ssm.is_some()
    }

    /// Flags and variables (`args`) over the settings file's `[remote]` table, checked.
    pub fn merge(args: &RemoteArgs, file: Option<&RemoteFile>) -> Result<Self, ConfigError> {
        let default = RemoteFile::default();
        let f = file.unwrap_or(&default);
        let text = |a: &Option<String>, f: &Option<String>| {
            a.clone()
                .or_else(|| f.clone())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let list = |a: &Vec<String>, f: &Option<Vec<String>>| -> Vec<String> {
            let v = if a.is_empty() {
                f.clone().unwrap_or_default()
            } else {
                a.clone()
            };
            v.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let ecs = text(&args.ecs_cluster, &f.ecs_cluster).map(|cluster| EcsSettings {
            cluster,
            subnets: list(&args.ecs_subnets, &f.ecs_subnets),
            security_groups: list(&args.ecs_security_groups, &f.ecs_security_groups),
            assign_public_ip: args.ecs_assign_public_ip.or(f.ecs_assign_public_ip).unwrap_or(false),
            capacity_provider: text(&args.ecs_capacity_provider, &f.ecs_capacity_provider),
            task_family_prefix: text(&args.ecs_task_family_prefix, &f.ecs_task_family_prefix),
        });
        if ecs.as_ref().is_some_and(|e| e.subnets.is_empty()) {
            return Err(invalid(
                "--ecs-subnets",
                "must name at least one subnet: ECS agent tasks run in awsvpc mode",
            ));
        }
        let tag = text(&args.ssm_host_tag, &f.ssm_host_tag);
        let ids = list(&args.ssm_host_ids, &f.ssm_host_ids);
        let hosts = match (tag, ids.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "--ssm-host-tag/--ssm-host-ids",
                    "name the SSM hosts by tag or by ids, not both",
                ))
            }
            (Some(tag), true) => match tag.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Some(SsmHosts::Tag {
                    key: k.trim().to_owned(),
                    value: v.trim().to_owned(),
                }),
                _ => return Err(invalid("--ssm-host-tag", format!("must be Key=Value, not {tag:?}"))),
            },
            (None, false) => Some(SsmHosts::Ids(ids)),
            (None, true) => None,
        };
        let run_as = text(&args.ssm_run_as, &f.ssm_run_as);
        if let Some(user) = run_as.as_deref().filter(|u| matches!(*u, "root" | "0")) {
            // The entrypoint and its agent run unprivileged on a host; root would hold the
            // host's credentials and every run's files.
            return Err(invalid(
                "--ssm-run-as",
                format!("must name an unprivileged user, not {user:?}"),
            ));
        }
        let ssm = hosts.map(|hosts| SsmSettings {
            hosts,
            entrypoint: text(&args.ssm_entrypoint, &f.ssm_entrypoint),
            run_as,
            work_dir: text(&args.ssm_work_dir, &f.ssm_work_dir),
            output_prefix: text(&args.ssm_output_prefix, &f.ssm_output_prefix),
        });
        let poll = match args.remote_poll_ms.or(f.remote_poll_ms) {
            Some(0) => return Err(invalid("--remote-poll-ms", "must be at least 1")),
            ms => ms.map(Duration::from_millis),
        };
        let start_slack = args
            .remote_start_slack_secs
            .or(f.remote_start_slack_secs)
            .map(Duration::from_secs);
        let sweep = match args.remote_sweep_secs.or(f.remote_sweep_secs) {
            Some(0) => return Err(invalid("--remote-sweep-secs", "must be at least 1")),
            s => s.map(Duration::from_secs),
        };
        Ok(Self {
            ecs,
            ssm,
            poll,
            start_slack,
            sweep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(args: RemoteArgs, file: &str) -> Result<RemoteSettings, ConfigError> {
        let file: RemoteFile = toml::from_str(file).expect("a [remote] table");
        RemoteSettings::merge(&args, Some(&file))
    }

    #[test]
    fn nothing_set_is_no_remote_executor() {
        let s = RemoteSettings::merge(&RemoteArgs::default(), None).expect("defaults");
        assert_eq!(s, RemoteSettings::default());
        assert!(!s.any());
    }

    #[test]
    fn flags_win_over_the_file_and_blank_values_are_unset() {
        let s = merged(
            RemoteArgs {
                ecs_cluster: Some("from-flag".into()),
                ecs_subnets: vec!["subnet-a".into(), " ".into()],
                ssm_host_ids: vec!["i-1".into()],
                remote_poll_ms: Some(250),
                ..RemoteArgs::default()
            },
            r#"
            ecs_cluster = "from-file"
            ecs_subnets = ["subnet-file"]
            ecs_security_groups = ["sg-1"]
            ecs_capacity_provider = "  "
            ssm_run_as = "agents"
            remote_sweep_secs = 60
            "#,
        )
        .expect("merged");
        let ecs = s.ecs.as_ref().expect("ecs");
        assert_eq!(ecs.cluster, "from-flag");
        assert_eq!(ecs.subnets, ["subnet-a"]);
        assert_eq!(ecs.security_groups, ["sg-1"], "the file's, as the flag is unset");
        assert_eq!(ecs.capacity_provider, None, "blank is unset");
        assert!(!ecs.assign_public_ip);
        let ssm = s.ssm.as_ref().expect("ssm");
        assert_eq!(ssm.hosts, SsmHosts::Ids(vec!["i-1".into()]));
        assert_eq!(ssm.run_as.as_deref(), Some("agents"));
        assert_eq!(s.poll, Some(Duration::from_millis(250)));
        assert_eq!(s.sweep, Some(Duration::from_secs(60)));
        assert_eq!(s.start_slack, None);
        assert!(s.any());
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let cases: [(RemoteArgs, &str, &str); 7] = [
            (
                RemoteArgs {
                    ecs_cluster: Some("agents".into()),
                    ..RemoteArgs::default()
                },
                "",
                "--ecs-subnets must name at least one subnet",
            ),
            (
                RemoteArgs {
                    ssm_host_tag: Some("Role=agents".into()),
                    ssm_host_ids: vec!["i-1".into()],
                    ..RemoteArgs::default()
                },
                "",
                "--ssm-host-tag/--ssm-host-ids name the SSM hosts by tag or by ids, not both",
            ),
            (
                RemoteArgs::default(),
                "ssm_host_tag = \"Role\"",
                "--ssm-host-tag must be Key=Value",
            ),
            (
                RemoteArgs {
                    ssm_host_tag: Some("=x".into()),
                    ..RemoteArgs::default()
                },
                "",
                "--ssm-host-tag must be Key=Value",
            ),
            (
                RemoteArgs {
                    ssm_host_ids: vec!["i-1".into()],
                    ssm_run_as: Some(" root ".into()),
                    ..RemoteArgs::default()
                },
                "",
                "--ssm-run-as must name an unprivileged user, not \"root\"",
            ),
            (
                RemoteArgs::default(),
                "ssm_host_ids = [\"i-1\"]\nssm_run_as = \"0\"",
                "--ssm-run-as must name an unprivileged user",
            ),
            (
                RemoteArgs {
                    remote_sweep_secs: Some(0),
                    ..RemoteArgs::default()
                },
                "",
                "--remote-sweep-secs must be at least 1",
            ),
        ];
        for (args, file, want) in cases {
            let err = merged(args, file).expect_err(want).to_string();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
        let err = toml::from_str::<RemoteFile>("ecs_clustr = \"x\"").expect_err("a typo");
        assert!(err.to_string().contains("ecs_clustr"), "{err}");
    }
}
