//! Creates the AWS resources of one deployment through the same SDK clients: the DynamoDB table,
//! the SQS queue and its dead-letter queue, the S3 bucket. For emulators, tests and
//! `outpost aws provision`; production deployments create them with the template in `infra/`,
//! which declares the same shapes.

use super::{dynamo, s3, sqs, AwsClients, AwsSettings, AwsSetupError, DEFAULT_PRESIGN_EXPIRY, DEFAULT_SECRETS_PREFIX};

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionOptions {
    /// Prefix of every resource name: table `{name}-runs`, queues `{name}-tasks` and
    /// `{name}-tasks-dlq`, bucket `{name}-artifacts`. Lowercase letters, digits and `-`.
    pub name: String,
    /// Deliveries of a task before SQS moves it to the dead-letter queue.
    pub max_receive_count: u32,
}

/// Creates every resource named by `opts` and returns the settings that point at them.
pub async fn provision(clients: &AwsClients, opts: &ProvisionOptions) -> Result<AwsSettings, AwsSetupError> {
    let name = opts.name.as_str();
    let name_ok = (3..=40).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !name_ok {
        return Err(AwsSetupError::BadSetting {
            name: "name",
            expected: "3-40 lowercase letters, digits and inner dashes",
            value: name.to_owned(),
        });
    }
    if !(1..=1000).contains(&opts.max_receive_count) {
        return Err(AwsSetupError::BadSetting {
            name: "max_receive_count",
            expected: "1 to 1000 (the SQS limits of maxReceiveCount)",
            value: opts.max_receive_count.to_string(),
        });
    }
    let table = format!("{name}-runs");
    let bucket = format!("{name}-artifacts");
    let queue = format!("{name}-tasks");
    let (table_res, queues_res, bucket_res) = tokio::join!(
        dynamo::create_table(&clients.dynamodb, &table),
        sqs::create_queues(&clients.sqs, &queue, opts.max_receive_count),
        s3::create_bucket(&clients.s3, &bucket),
    );
    table_res?;
    bucket_res?;
    let (queue_url, dead_letter_queue_url) = queues_res?;
    Ok(AwsSettings {
        table,
        queue_url,
        dead_letter_queue_url,
        bucket,
        secrets_prefix: DEFAULT_SECRETS_PREFIX.to_owned(),
        presign_expiry: DEFAULT_PRESIGN_EXPIRY,
    })
}
