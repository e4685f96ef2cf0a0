//! AWS backends on an emulator (moto server) for tests and benchmarks: SDK configuration for a
//! local endpoint, and a fresh set of resources per call so cases never share state.
//!
//! The emulator's address comes from `OUTPOST_TEST_AWS_ENDPOINT` (set by `scripts/test`, which
//! installs and starts moto). Without it, these helpers panic with a message saying so: the AWS
//! cases are part of the suite, not optional.

use crate::contract::{ContractConfig, Fixture};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use outpost_aws::provision::{provision, ProvisionOptions};
use outpost_aws::{backend, AwsClients, AwsSettings, RequestCounter};
use outpost_core::ports::Backend;

/// The variable naming the emulator's endpoint, e.g. `http://127.0.0.1:5123`.
pub const ENDPOINT_VAR: &str = "OUTPOST_TEST_AWS_ENDPOINT";

/// The emulator endpoint. Panics (with how to start one) when `OUTPOST_TEST_AWS_ENDPOINT` is unset.
pub fn emulator_endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the AWS tests need moto server. Run ./scripts/test, or start one with \
             `scripts/moto start` and export {ENDPOINT_VAR}=http://127.0.0.1:<port>"
        ),
    }
}

/// SDK configuration for `endpoint` with fixed test credentials and region `us-east-1`.
pub async fn emulator_sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "outpost-emulator",
        ))
        .load()
        .await
}

/// Clients for the emulator, optionally counting requests.
pub async fn emulator_clients(counter: Option<&RequestCounter>) -> AwsClients {
    AwsClients::new(&emulator_sdk_config(&emulator_endpoint()).await, counter)
}

/// An S3 artifact store on a fresh bucket of the emulator (named `t{ulid}-{suffix}`), its
/// clients and the counter of their requests (reset after the setup).
pub async fn fresh_s3_store(suffix: &str) -> (outpost_aws::s3::S3ArtifactStore, AwsClients, RequestCounter) {
    let counter = RequestCounter::new();
    let clients = emulator_clients(Some(&counter)).await;
    let bucket = format!("t{}-{suffix}", ulid::Ulid::new().to_string().to_lowercase());
    outpost_aws::s3::create_bucket(&clients.s3, &bucket)
        .await
        .unwrap_or_else(|e| panic!("creating a bucket on the emulator failed: {e}"));
    counter.reset();
    let store = outpost_aws::s3::S3ArtifactStore::new(clients.s3.clone(), bucket, std::time::Duration::from_secs(900));
    (store, clients, counter)
}

/// A fresh, uniquely named set of resources on the emulator.
pub async fn fresh_settings(clients: &AwsClients, max_receive_count: u32) -> AwsSettings {
    let name = format!("t{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut settings = provision(
        clients,
        &ProvisionOptions {
            name,
            max_receive_count,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("provisioning on the emulator failed: {e}"));
    // Each case also gets its own secrets prefix.
    settings.secrets_prefix = format!("/{}", settings.table);
    settings
}

/// A fresh AWS backend on the emulator, with its settings.
pub async fn fresh_backend(max_receive_count: u32) -> (Backend, AwsSettings, AwsClients) {
    let clients = emulator_clients(None).await;
    let settings = fresh_settings(&clients, max_receive_count).await;
    (backend(&clients, &settings), settings, clients)
}

/// A contract-suite factory: a fresh AWS backend per case.
pub async fn contract_fixture(config: ContractConfig) -> Fixture {
    let (backend, _, _) = fresh_backend(config.max_receive_count).await;
    Fixture::new(backend)
}

/// The environment that selects the deployment `settings` on the emulator at `endpoint` for
/// Outpost's binaries: the `OUTPOST_*` names and the SDK's endpoint, region and test credentials.
pub fn deployment_env(endpoint: &str, settings: &AwsSettings) -> Vec<(String, String)> {
    let s = settings;
    [
        ("OUTPOST_BACKEND", "aws"),
        ("OUTPOST_TABLE", s.table.as_str()),
        ("OUTPOST_QUEUE_URL", s.queue_url.as_str()),
        ("OUTPOST_DLQ_URL", s.dead_letter_queue_url.as_str()),
        ("OUTPOST_BUCKET", s.bucket.as_str()),
        ("OUTPOST_SSM_PREFIX", s.secrets_prefix.as_str()),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
