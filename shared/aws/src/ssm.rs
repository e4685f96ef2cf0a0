//! SecretStore on SSM Parameter Store: each secret is a SecureString parameter
//! `{prefix}/{tenant}/{name}` (prefix like `/outpost`), encrypted with the account's default SSM key.
//!
//! Requests: `put_secret` one PutParameter (Overwrite), `get_secret` one GetParameter (decrypted),
//! `delete_secret` one DeleteParameter, `list_secrets` one GetParametersByPath per page of 10
//! (not recursive, not decrypted: the listing needs names and times only).
//!
//! A secret's value is never logged nor put into an error: a PutParameter error whose message
//! quotes the value is reported without that message.

use super::sdk_error;
use async_trait::async_trait;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::operation::delete_parameter::DeleteParameterError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::types::ParameterType;
use chrono::{DateTime, Utc};
use outpost_core::domain::TenantId;
use outpost_core::ports::secrets::check_secret_value;
use outpost_core::ports::{SecretError, SecretInfo, SecretName, SecretStore};
use secrecy::{ExposeSecret, SecretString};

/// Most parameters one GetParametersByPath returns (the SSM limit).
const PAGE_SIZE: i32 = 10;
/// Most pages one listing reads (a tenant has far fewer secrets; this only stops a runaway loop).
const MAX_PAGES: usize = 1_000;

/// Secrets as SecureString parameters `{prefix}/{tenant}/{name}`.
#[derive(Debug, Clone)]
pub struct SsmSecretStore {
    client: aws_sdk_ssm::Client,
    prefix: String,
}

impl SsmSecretStore {
    /// `prefix` starts with `/` and has no trailing slash (one is dropped if given).
    pub fn new(client: aws_sdk_ssm::Client, prefix: String) -> Self {
        let prefix = prefix.trim_end_matches('/').to_owned();
        Self { client, prefix }
    }

    /// The folder of `tenant`'s secrets, with its trailing slash.
    fn folder(&self, tenant: &TenantId) -> String {
        format!("{}/{}/", self.prefix, tenant.as_str())
    }

    fn parameter_name(&self, tenant: &TenantId, name: &SecretName) -> String {
        format!("{}{}", self.folder(tenant), name.as_str())
    }
}

/// A PutParameter failure, described without the value.
#[derive(Debug, thiserror::Error)]
#[error("PutParameter {parameter} failed: {detail}")]
struct PutFailed {
    parameter: String,
    detail: String,
}

fn put_error<E, R>(err: SdkError<E, R>, parameter: String, value: &str) -> SecretError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let Some(code) = err.code().map(str::to_owned) else {
        // Not a service answer (timeout, connection, signing): nothing quotes the request body.
        return SecretError::Backend(sdk_error(err));
    };
    let message = match err.message() {
        Some(m) if m.contains(value) => "(message withheld: it quotes the value)".to_owned(),
        Some(m) => m.to_owned(),
        None => "no message".to_owned(),
    };
    SecretError::Backend(Box::new(PutFailed {
        parameter,
        detail: format!("{code}: {message}"),
    }))
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())
}

#[async_trait]
impl SecretStore for SsmSecretStore {
    async fn put_secret(&self, tenant: &TenantId, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        let value = value.expose_secret();
        check_secret_value(value)?;
        let parameter = self.parameter_name(tenant, name);
        self.client
            .put_parameter()
            .name(&parameter)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| put_error(e, parameter, value))?;
        Ok(())
    }

    async fn get_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<Option<SecretString>, SecretError> {
        let result = self
            .client
            .get_parameter()
            .name(self.parameter_name(tenant, name))
            .with_decryption(true)
            .send()
            .await;
        match result {
            Ok(output) => match output.parameter.and_then(|p| p.value) {
                Some(value) => Ok(Some(SecretString::from(value))),
                None => Err(SecretError::Backend("GetParameter returned no value".into())),
            },
            Err(e) if matches!(e.as_service_error(), Some(GetParameterError::ParameterNotFound(_))) => Ok(None),
            Err(e) => Err(SecretError::Backend(sdk_error(e))),
        }
    }

    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<SecretInfo>, SecretError> {
        let folder = self.folder(tenant);
        let mut secrets = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .client
                .get_parameters_by_path()
                .path(&folder)
                .recursive(false)
                .with_decryption(false)
                .max_results(PAGE_SIZE)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| SecretError::Backend(sdk_error(e)))?;
            for p in page.parameters() {
                let Some(full) = p.name() else { continue };
                let Some(name) = full.strip_prefix(&folder).and_then(|n| n.parse::<SecretName>().ok()) else {
                    tracing::warn!(
                        parameter = full,
                        "parameter under the secrets folder is not a secret name; skipping it"
                    );
                    continue;
                };
                let updated_at = p.last_modified_date().and_then(to_chrono).unwrap_or_else(|| {
                    tracing::warn!(parameter = full, "parameter has no LastModifiedDate");
                    DateTime::<Utc>::UNIX_EPOCH
                });
                secrets.push(SecretInfo { name, updated_at });
            }
            next_token = page.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                secrets.sort_by(|a, b| a.name.cmp(&b.name));
                return Ok(secrets);
            }
        }
        Err(SecretError::Backend(
            format!("GetParametersByPath {folder} did not end after {MAX_PAGES} pages").into(),
        ))
    }

    async fn delete_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<bool, SecretError> {
        let result = self
            .client
            .delete_parameter()
            .name(self.parameter_name(tenant, name))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.as_service_error(), Some(DeleteParameterError::ParameterNotFound(_))) => Ok(false),
            Err(e) => Err(SecretError::Backend(sdk_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_with_their_fraction() {
        let t = aws_smithy_types::DateTime::from_secs_and_nanos(1_700_000_000, 250_000_000);
        let c = to_chrono(&t).expect("in range");
        assert_eq!(c.timestamp(), 1_700_000_000);
        assert_eq!(c.timestamp_subsec_millis(), 250);
    }
}
