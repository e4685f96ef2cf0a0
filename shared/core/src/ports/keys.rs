//! ApiKeyStore: tenants' API keys. Only the SHA-256 of a key is stored; the key itself is shown
//! once, at creation.

use super::BackendError;
use crate::domain::{ApiKeyKind, TenantId};
use async_trait::async_trait;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key backend error: {0}")]
    Backend(#[source] BackendError),
}

/// A key just made: the secret is shown once and never stored.
pub struct CreatedKey {
    pub tenant: TenantId,
    /// `op_live_…` / `op_test_…` with 32 random bytes, hex.
    pub secret: SecretString,
    /// Hex SHA-256 of the secret: what is stored and what identifies the key.
    pub hash: String,
    /// The first characters, safe to display (`op_live_1a2b3c`).
    pub display_prefix: String,
}

impl CreatedKey {
    /// Generates a fresh random key for `tenant`.
    pub fn generate(tenant: TenantId, kind: ApiKeyKind) -> Self {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("{}{}", kind.prefix(), hex::encode(raw));
        let hash = hash_key(&secret);
        let display_prefix = secret[..kind.prefix().len() + 6].to_owned();
        Self {
            tenant,
            secret: SecretString::from(secret),
            hash,
            display_prefix,
        }
    }

    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// Hex SHA-256 of a presented key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    /// Stores a key's hash for its tenant (creating the tenant if new).
    async fn insert_key(&self, key: &CreatedKey) -> Result<(), KeyError>;

    /// The tenant a key hash belongs to, if the key exists and is not revoked.
    async fn tenant_for_key_hash(&self, hash: &str) -> Result<Option<TenantId>, KeyError>;

    /// Whether any key exists for `tenant`.
    async fn tenant_has_keys(&self, tenant: &TenantId) -> Result<bool, KeyError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let t: TenantId = "acme".parse().expect("tenant");
        let a = CreatedKey::generate(t.clone(), ApiKeyKind::Live);
        let b = CreatedKey::generate(t, ApiKeyKind::Test);
        assert!(a.expose().starts_with("op_live_"));
        assert!(b.expose().starts_with("op_test_"));
        assert_eq!(a.expose().len(), "op_live_".len() + 64);
        assert_eq!(a.hash, hash_key(a.expose()));
        assert_ne!(a.hash, b.hash);
        assert!(a.expose().starts_with(&a.display_prefix));
    }
}
