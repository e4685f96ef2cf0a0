//! SecretStore: each tenant's own keys (BYOK), e.g. its `ANTHROPIC_API_KEY` or a git token.
//!
//! A secret is written by its tenant and read only by workers, which hand it to that tenant's
//! agents as an environment variable of the same name. The API lists names and times, never a
//! value. Embedded: files readable only by the owner; AWS: SSM Parameter Store SecureString
//! parameters `/outpost/{tenant}/{name}`.

use super::BackendError;
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Largest secret value accepted, in bytes (SSM standard parameters hold 4 KiB).
pub const MAX_SECRET_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("invalid secret name {0:?}: use 1-128 letters, digits and underscores, not starting with a digit")]
    BadName(String),
    #[error("secret value must be 1 to {MAX_SECRET_BYTES} bytes")]
    BadValue,
    #[error("secret backend error: {0}")]
    Backend(#[source] BackendError),
}

/// A secret's name: an environment variable name (`[A-Za-z_][A-Za-z0-9_]{0,127}`), because that is
/// how agents receive it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

impl SecretName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretName {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if first_ok && rest_ok && s.len() <= 128 {
            Ok(Self(s.to_owned()))
        } else {
            Err(SecretError::BadName(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SecretName {
    type Error = SecretError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SecretName> for String {
    fn from(n: SecretName) -> Self {
        n.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a value before it is stored: 1..=[`MAX_SECRET_BYTES`] bytes.
pub fn check_secret_value(value: &str) -> Result<(), SecretError> {
    if value.is_empty() || value.len() > MAX_SECRET_BYTES {
        Err(SecretError::BadValue)
    } else {
        Ok(())
    }
}

/// What may be shown about a stored secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: SecretName,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Creates or replaces `tenant`'s secret `name`. Adapters check the value with
    /// [`check_secret_value`].
    async fn put_secret(&self, tenant: &TenantId, name: &SecretName, value: &SecretString) -> Result<(), SecretError>;

    /// The value of `tenant`'s secret `name`, if set (for workers only).
    async fn get_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<Option<SecretString>, SecretError>;

    /// `tenant`'s secrets by name, sorted by name.
    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<SecretInfo>, SecretError>;

    /// Deletes `tenant`'s secret `name`; `false` if it was not set.
    async fn delete_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<bool, SecretError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_env_var_names() {
        for ok in ["ANTHROPIC_API_KEY", "_x", "a1", &"A".repeat(128)] {
            assert!(ok.parse::<SecretName>().is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "a/b", "ü", &"A".repeat(129)] {
            assert!(
                matches!(bad.parse::<SecretName>(), Err(SecretError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn values_are_bounded() {
        assert!(check_secret_value("k").is_ok());
        assert!(check_secret_value(&"k".repeat(MAX_SECRET_BYTES)).is_ok());
        assert!(check_secret_value("").is_err());
        assert!(check_secret_value(&"k".repeat(MAX_SECRET_BYTES + 1)).is_err());
    }
}
