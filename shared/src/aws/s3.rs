//! ArtifactStore on S3 (skeleton: being written).

use super::AwsSetupError;
use crate::domain::Artifact;
use crate::ports::{ArtifactBody, ArtifactError, ArtifactStore, LogChunk, RunKey};
use async_trait::async_trait;
use std::path::Path;
use std::time::Duration;

/// Artifacts under `runs/{tenant}/{run}/{name}` in `bucket`.
#[derive(Debug, Clone)]
pub struct S3ArtifactStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    presign_expiry: Duration,
}

impl S3ArtifactStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: String, presign_expiry: Duration) -> Self {
        Self {
            client,
            bucket,
            presign_expiry,
        }
    }
}

/// Creates the bucket (for tests, emulators and `outpost aws provision`).
pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), AwsSetupError> {
    let _ = (client, bucket);
    Err(AwsSetupError::MissingSetting("s3::create_bucket is not written yet"))
}

fn pending() -> ArtifactError {
    ArtifactError::Backend("S3ArtifactStore is not written yet".into())
}

#[async_trait]
impl ArtifactStore for S3ArtifactStore {
    async fn put_file(&self, _key: &RunKey, _name: &str, _src: &Path, _content_type: &str) -> Result<Artifact, ArtifactError> {
        let _ = (&self.client, &self.bucket, self.presign_expiry);
        Err(pending())
    }
    async fn append_log(&self, _key: &RunKey, _name: &str, _offset: u64, _data: &[u8]) -> Result<(), ArtifactError> {
        Err(pending())
    }
    async fn read_range(
        &self,
        _key: &RunKey,
        _name: &str,
        _offset: u64,
        _max_len: u64,
    ) -> Result<Option<LogChunk>, ArtifactError> {
        Err(pending())
    }
    async fn open(&self, _key: &RunKey, _name: &str) -> Result<Option<ArtifactBody>, ArtifactError> {
        Err(pending())
    }
}
