//! SecretStore on SSM Parameter Store (skeleton: being written).

use crate::domain::TenantId;
use crate::ports::{SecretError, SecretInfo, SecretName, SecretStore};
use async_trait::async_trait;
use secrecy::SecretString;

/// Secrets as SecureString parameters `{prefix}/{tenant}/{name}`.
#[derive(Debug, Clone)]
pub struct SsmSecretStore {
    client: aws_sdk_ssm::Client,
    prefix: String,
}

impl SsmSecretStore {
    pub fn new(client: aws_sdk_ssm::Client, prefix: String) -> Self {
        Self { client, prefix }
    }
}

fn pending() -> SecretError {
    SecretError::Backend("SsmSecretStore is not written yet".into())
}

#[async_trait]
impl SecretStore for SsmSecretStore {
    async fn put_secret(&self, _tenant: &TenantId, _name: &SecretName, _value: &SecretString) -> Result<(), SecretError> {
        let _ = (&self.client, &self.prefix);
        Err(pending())
    }
    async fn get_secret(&self, _tenant: &TenantId, _name: &SecretName) -> Result<Option<SecretString>, SecretError> {
        Err(pending())
    }
    async fn list_secrets(&self, _tenant: &TenantId) -> Result<Vec<SecretInfo>, SecretError> {
        Err(pending())
    }
    async fn delete_secret(&self, _tenant: &TenantId, _name: &SecretName) -> Result<bool, SecretError> {
        Err(pending())
    }
}
