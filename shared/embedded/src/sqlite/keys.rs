//! `ApiKeyStore` on SQLite: a tenants table and an api_keys table keyed by the key's SHA-256.
//! The secret itself is never stored or logged.

use super::db::{now_ms, DbError};
use super::SqliteStore;
use async_trait::async_trait;
use outpost_core::domain::TenantId;
use outpost_core::ports::keys::{ApiKeyStore, CreatedKey, KeyError};
use rusqlite::{params, OptionalExtension};

impl From<DbError> for KeyError {
    fn from(e: DbError) -> Self {
        KeyError::Backend(Box::new(e))
    }
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_key(&self, key: &CreatedKey) -> Result<(), KeyError> {
        let (tenant, hash, prefix) = (key.tenant.clone(), key.hash.clone(), key.display_prefix.clone());
        self.db
            .write(move |tx| {
                let now = now_ms();
                tx.prepare_cached("INSERT INTO tenants (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")?
                    .execute(params![tenant.as_str(), now])?;
                tx.prepare_cached(
                    "INSERT INTO api_keys (hash, tenant, display_prefix, created_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (hash) DO NOTHING",
                )?
                .execute(params![hash, tenant.as_str(), prefix, now])?;
                Ok(())
            })
            .await?;
        tracing::info!(tenant = %key.tenant, "API key stored");
        Ok(())
    }

    async fn tenant_for_key_hash(&self, hash: &str) -> Result<Option<TenantId>, KeyError> {
        let hash = hash.to_owned();
        let tenant: Option<String> = self
            .db
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT tenant FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL")?
                        .query_row(params![hash], |row| row.get(0))
                        .optional()?,
                )
            })
            .await?;
        tenant
            .map(|t| {
                t.parse()
                    .map_err(|e| DbError::Corrupt(format!("tenant of a key: {e}")).into())
            })
            .transpose()
    }

    async fn tenant_has_keys(&self, tenant: &TenantId) -> Result<bool, KeyError> {
        let tenant = tenant.clone();
        Ok(self
            .db
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys WHERE tenant = ?1)")?
                        .query_row(params![tenant.as_str()], |row| row.get(0))?,
                )
            })
            .await?)
    }
}
