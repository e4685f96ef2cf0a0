//! An AWS deployment on the emulator for end-to-end tests: fresh DynamoDB table, SQS queues, S3
//! bucket (and SSM prefix) on moto server, and the environment that points Outpost's binaries at
//! them. [`crate::TestApp`] ([`crate::AppOptions::aws`]) starts the processes on it: the Lambda
//! function, `outpost-worker --backend aws`, `outpost keys create --backend aws`.
//!
//! The emulator comes from `OUTPOST_TEST_AWS_ENDPOINT` (`scripts/test` starts it).

use crate::{find_bin, reachable};
use outpost_aws::{AwsClients, AwsSettings};
use outpost_testkit::aws::{emulator_clients, emulator_endpoint, fresh_settings};
use std::path::PathBuf;
use std::process::Command;

/// Path of the `outpost-worker` binary, where every user may run it: the SSM tests' hosts start
/// it as `nobody` (without `outpost-confine` beside a copy, it serves the sandbox helper itself).
pub fn worker_bin() -> anyhow::Result<PathBuf> {
    reachable(find_bin("OUTPOST_WORKER_BIN", "outpost-worker")?)
}

/// Fresh AWS resources on the emulator, and the SDK clients to inspect them.
pub struct AwsDeployment {
    pub endpoint: String,
    pub settings: AwsSettings,
    pub clients: AwsClients,
}

impl AwsDeployment {
    /// Provisions a fresh, uniquely named deployment on the emulator.
    pub async fn provision(max_receive_count: u32) -> anyhow::Result<Self> {
        let endpoint = emulator_endpoint();
        let clients = emulator_clients(None).await;
        let settings = fresh_settings(&clients, max_receive_count).await;
        Ok(Self {
            endpoint,
            settings,
            clients,
        })
    }

    /// The environment that selects this deployment for Outpost's binaries (and the SDK's
    /// endpoint, region and credentials for the emulator).
    pub fn env(&self) -> Vec<(String, String)> {
        outpost_testkit::aws::deployment_env(&self.endpoint, &self.settings)
    }

    /// `program` with this deployment's environment and none of the test's AWS profile or
    /// Outpost client settings.
    pub(crate) fn command(&self, program: PathBuf) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env())
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("OUTPOST_URL")
            .env_remove("OUTPOST_API_KEY");
        cmd
    }
}
