//! An AWS deployment on the emulator for end-to-end tests: fresh DynamoDB table, SQS queues, S3
//! bucket (and SSM prefix) on moto server, the environment that points Outpost's binaries at them,
//! and the real `outpost-worker --backend aws` and `outpost keys create --backend aws` processes.
//!
//! The emulator comes from `OUTPOST_TEST_AWS_ENDPOINT` (`scripts/test` starts it).

use crate::{find_bin, outpost_bin, KillOnDrop};
use anyhow::Context;
use outpost_aws::{AwsClients, AwsSettings};
use outpost_testkit::aws::{emulator_clients, emulator_endpoint, fresh_settings};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Path of the `outpost-worker` binary.
pub fn worker_bin() -> anyhow::Result<PathBuf> {
    find_bin("OUTPOST_WORKER_BIN", "outpost-worker")
}

/// Fresh AWS resources on the emulator plus a folder for agents files and workspaces.
pub struct AwsDeployment {
    pub endpoint: String,
    pub settings: AwsSettings,
    pub clients: AwsClients,
    /// `agents.toml` registering the fake agent (as `write_agents_file` does).
    pub agents_file: PathBuf,
    pub dir: tempfile::TempDir,
}

impl AwsDeployment {
    /// Provisions a fresh, uniquely named deployment on the emulator.
    pub async fn provision(max_receive_count: u32) -> anyhow::Result<Self> {
        let endpoint = emulator_endpoint();
        let clients = emulator_clients(None).await;
        let settings = fresh_settings(&clients, max_receive_count).await;
        let dir = tempfile::tempdir()?;
        crate::write_agents_file(dir.path())?;
        let agents_file = dir.path().join("agents.toml");
        Ok(Self {
            endpoint,
            settings,
            clients,
            agents_file,
            dir,
        })
    }

    /// The environment that selects this deployment for Outpost's binaries (and the SDK's
    /// endpoint, region and credentials for the emulator).
    pub fn env(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        [
            ("OUTPOST_BACKEND", "aws"),
            ("OUTPOST_TABLE", s.table.as_str()),
            ("OUTPOST_QUEUE_URL", s.queue_url.as_str()),
            ("OUTPOST_DLQ_URL", s.dead_letter_queue_url.as_str()),
            ("OUTPOST_BUCKET", s.bucket.as_str()),
            ("OUTPOST_SSM_PREFIX", s.secrets_prefix.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env())
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("OUTPOST_URL")
            .env_remove("OUTPOST_API_KEY");
        cmd
    }

    /// `outpost keys create --backend aws --tenant T`: the key (last line of stdout).
    pub fn create_key(&self, tenant: &str) -> anyhow::Result<String> {
        let out = self
            .command(outpost_bin()?)
            .args(["keys", "create", "--tenant", tenant])
            .stdin(Stdio::null())
            .output()?;
        crate::key_from_output(out)
    }

    /// Starts `outpost-worker --backend aws` with the fake agent registered.
    pub fn start_worker(&self, slots: usize, lease_secs: u64) -> anyhow::Result<KillOnDrop> {
        let work = self.dir.path().join(format!("work-{}", ulid::Ulid::new()));
        let child = self
            .command(worker_bin()?)
            .arg("--agents")
            .arg(&self.agents_file)
            .arg("--work-dir")
            .arg(&work)
            .args(["--slots", &slots.to_string(), "--lease-secs", &lease_secs.to_string()])
            .args(["--drain-secs", "20", "--log-format", "text"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start outpost-worker")?;
        Ok(KillOnDrop(child))
    }
}
