//! AWS adapters of the ports: runs, API keys and workers in one DynamoDB table
//! ([`dynamo::DynamoStore`]), the task queue on SQS with a dead-letter queue
//! ([`sqs::SqsQueue`]), artifacts in S3 ([`s3::S3ArtifactStore`]) and tenants' secrets in SSM
//! Parameter Store ([`ssm::SsmSecretStore`]).
//!
//! One [`AwsClients`] set is made per process (at Lambda init, at worker start) and shared by
//! every adapter. Endpoints, region and credentials come from the SDK's usual sources
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, the ECS/Lambda role), resource names from
//! [`AwsSettings::from_env`].

pub mod dynamo;
pub mod ecs;
pub mod metrics;
pub mod provision;
pub mod s3;
pub mod sqs;
pub mod ssm;
pub mod ssm_exec;

pub use metrics::RequestCounter;

use aws_config::{BehaviorVersion, SdkConfig};
use outpost_core::ports::{Backend, BackendError};
use std::sync::Arc;
use std::time::Duration;

/// Default expiry of presigned artifact URLs.
pub const DEFAULT_PRESIGN_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Default prefix of tenants' secrets in Parameter Store (`/outpost/{tenant}/{name}`).
pub const DEFAULT_SECRETS_PREFIX: &str = "/outpost";

/// Names of the AWS resources one deployment uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// DynamoDB table of runs, API keys and workers (`OUTPOST_TABLE`).
    pub table: String,
    /// SQS task queue URL (`OUTPOST_QUEUE_URL`).
    pub queue_url: String,
    /// SQS dead-letter queue URL, the task queue's redrive target (`OUTPOST_DLQ_URL`).
    pub dead_letter_queue_url: String,
    /// S3 bucket of artifacts (`OUTPOST_BUCKET`).
    pub bucket: String,
    /// Parameter Store prefix of secrets (`OUTPOST_SSM_PREFIX`, default `/outpost`).
    pub secrets_prefix: String,
    /// Lifetime of presigned artifact URLs (`OUTPOST_PRESIGN_SECONDS`, default 900).
    pub presign_expiry: Duration,
}

/// Why the AWS backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error("{0} is not set (the AWS backend needs it)")]
    MissingSetting(&'static str),
    #[error("{name} must be {expected}, got {value:?}")]
    BadSetting {
        name: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error("{what}: {source}")]
    Call {
        what: String,
        #[source]
        source: BackendError,
    },
}

impl AwsSettings {
    /// Reads the settings from the environment (see the field docs for the variable names).
    pub fn from_env() -> Result<Self, AwsSetupError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, AwsSetupError> {
        let need = |k: &'static str| {
            get(k)
                .filter(|v| !v.trim().is_empty())
                .ok_or(AwsSetupError::MissingSetting(k))
        };
        let presign_expiry = match get("OUTPOST_PRESIGN_SECONDS") {
            None => DEFAULT_PRESIGN_EXPIRY,
            Some(v) => match v.trim().parse::<u64>() {
                // SigV4 presigned URLs live at most 7 days.
                Ok(s) if (1..=604_800).contains(&s) => Duration::from_secs(s),
                _ => {
                    return Err(AwsSetupError::BadSetting {
                        name: "OUTPOST_PRESIGN_SECONDS",
                        expected: "a whole number of seconds from 1 to 604800",
                        value: v,
                    })
                }
            },
        };
        Ok(Self {
            table: need("OUTPOST_TABLE")?,
            queue_url: need("OUTPOST_QUEUE_URL")?,
            dead_letter_queue_url: need("OUTPOST_DLQ_URL")?,
            bucket: need("OUTPOST_BUCKET")?,
            secrets_prefix: get("OUTPOST_SSM_PREFIX")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_SECRETS_PREFIX.to_owned()),
            presign_expiry,
        })
    }
}

/// The SDK clients of one process, sharing one configuration (and one HTTP connection pool each).
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl AwsClients {
    /// Clients from the SDK's default configuration chain (environment, profile, container or
    /// Lambda role; `AWS_ENDPOINT_URL` for an emulator).
    pub async fn from_env(counter: Option<&RequestCounter>) -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::new(&sdk, counter)
    }

    /// Clients from `sdk`. With `counter`, every HTTP request they send is counted by operation.
    /// S3 uses path-style addressing when an endpoint override is set (emulators serve
    /// `http://host:port/bucket/key`, not `bucket.host`).
    pub fn new(sdk: &SdkConfig, counter: Option<&RequestCounter>) -> Self {
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk);
        let mut sqs = aws_sdk_sqs::config::Builder::from(sdk);
        let mut s3 = aws_sdk_s3::config::Builder::from(sdk).force_path_style(sdk.endpoint_url().is_some());
        let mut ssm = aws_sdk_ssm::config::Builder::from(sdk);
        if let Some(c) = counter {
            dynamodb = dynamodb.interceptor(c.clone());
            sqs = sqs.interceptor(c.clone());
            s3 = s3.interceptor(c.clone());
            ssm = ssm.interceptor(c.clone());
        }
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
        }
    }
}

/// All six ports on AWS, over `clients`, for the resources named in `settings`.
pub fn backend(clients: &AwsClients, settings: &AwsSettings) -> Backend {
    let store = Arc::new(dynamo::DynamoStore::new(
        clients.dynamodb.clone(),
        settings.table.clone(),
    ));
    Backend {
        runs: store.clone(),
        queue: Arc::new(sqs::SqsQueue::new(
            clients.sqs.clone(),
            settings.queue_url.clone(),
            settings.dead_letter_queue_url.clone(),
        )),
        artifacts: Arc::new(s3::S3ArtifactStore::new(
            clients.s3.clone(),
            settings.bucket.clone(),
            settings.presign_expiry,
        )),
        keys: store.clone(),
        workers: store,
        secrets: Arc::new(ssm::SsmSecretStore::new(
            clients.ssm.clone(),
            settings.secrets_prefix.clone(),
        )),
    }
}

/// Turns an SDK error into a [`BackendError`] whose message carries the whole cause chain (the
/// SDK's own `Display` says only "service error").
pub(crate) fn sdk_error<E>(err: E) -> BackendError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let message = aws_smithy_types::error::display::DisplayErrorContext(&err).to_string();
    Box::new(SdkCallError {
        message,
        source: Box::new(err),
    })
}

/// An SDK error with its full message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SdkCallError {
    message: String,
    #[source]
    source: BackendError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<AwsSettings, AwsSetupError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AwsSettings::from_lookup(|k| map.get(k).cloned())
    }

    const ALL: [(&str, &str); 4] = [
        ("OUTPOST_TABLE", "outpost"),
        ("OUTPOST_QUEUE_URL", "https://sqs/q"),
        ("OUTPOST_DLQ_URL", "https://sqs/dlq"),
        ("OUTPOST_BUCKET", "b"),
    ];

    #[test]
    fn settings_need_every_name_and_default_the_rest() {
        let s = settings(&ALL).expect("settings");
        assert_eq!(s.table, "outpost");
        assert_eq!(s.secrets_prefix, DEFAULT_SECRETS_PREFIX);
        assert_eq!(s.presign_expiry, DEFAULT_PRESIGN_EXPIRY);
        for (skip, (missing, _)) in ALL.iter().enumerate() {
            let partial: Vec<_> = ALL
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            match settings(&partial) {
                Err(AwsSetupError::MissingSetting(name)) => assert_eq!(name, *missing),
                other => panic!("expected a missing {missing}, got {other:?}"),
            }
        }
    }

    #[test]
    fn presign_expiry_is_checked() {
        let mut pairs = ALL.to_vec();
        pairs.push(("OUTPOST_PRESIGN_SECONDS", "60"));
        assert_eq!(settings(&pairs).expect("ok").presign_expiry, Duration::from_secs(60));
        for bad in ["0", "604801", "soon"] {
            let mut pairs = ALL.to_vec();
            pairs.push(("OUTPOST_PRESIGN_SECONDS", bad));
            assert!(
                matches!(settings(&pairs), Err(AwsSetupError::BadSetting { .. })),
                "{bad}"
            );
        }
    }
}
