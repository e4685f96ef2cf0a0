//! Creating the artifacts bucket (for tests, emulators and `outpost aws provision`): the bucket in
//! the client's region, default encryption SSE-S3 (AES256), a lifecycle that expires live-log
//! chunks (`live/`) after two days and aborts multipart uploads left incomplete for a day, and
//! every public access blocked.

use super::live::LIVE_PREFIX;
use crate::{sdk_error, AwsSetupError};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};

/// Days a live-log chunk is kept (the final `output.log` replaces it long before).
pub const LIVE_CHUNK_DAYS: i32 = 2;
/// Days before an incomplete multipart upload is aborted.
pub const ABORT_INCOMPLETE_UPLOAD_DAYS: i32 = 1;

fn call(what: String) -> impl FnOnce(outpost_core::ports::BackendError) -> AwsSetupError {
    move |source| AwsSetupError::Call { what, source }
}

/// Creates the bucket (tolerating one this account already owns) and configures it.
pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), AwsSetupError> {
    let region = client.config().region().map(|r| r.as_ref().to_owned());
    let mut create = client.create_bucket().bucket(bucket);
    if let Some(region) = region.filter(|r| r != "us-east-1") {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => tracing::info!(bucket, "bucket created"),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => {
            tracing::info!(bucket, "bucket already exists");
        }
        Err(e) => return Err(call(format!("creating bucket {bucket}"))(sdk_error(e))),
    }

    let what = || format!("setting the default encryption of bucket {bucket}");
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(|e| call(what())(Box::new(e)))?;
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(by_default)
                .build(),
        )
        .build()
        .map_err(|e| call(what())(Box::new(e)))?;
    client
        .put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .map_err(|e| call(what())(sdk_error(e)))?;

    let what = || format!("setting the lifecycle of bucket {bucket}");
    let expire_live = LifecycleRule::builder()
        .id("expire-live-log-chunks")
        .filter(LifecycleRuleFilter::builder().prefix(LIVE_PREFIX).build())
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(LIVE_CHUNK_DAYS).build())
        .build()
        .map_err(|e| call(what())(Box::new(e)))?;
    let abort_uploads = LifecycleRule::builder()
        .id("abort-incomplete-multipart-uploads")
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .status(ExpirationStatus::Enabled)
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(ABORT_INCOMPLETE_UPLOAD_DAYS)
                .build(),
        )
        .build()
        .map_err(|e| call(what())(Box::new(e)))?;
    let lifecycle = BucketLifecycleConfiguration::builder()
        .rules(expire_live)
        .rules(abort_uploads)
        .build()
        .map_err(|e| call(what())(Box::new(e)))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
        .map_err(|e| call(what())(sdk_error(e)))?;

    client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| call(format!("blocking public access to bucket {bucket}"))(sdk_error(e)))?;
    Ok(())
}
