//! `ApiKeyStore` on DynamoDB: an item per key (`key#<sha256>`, its tenant in `key_tenant` so keys
//! stay out of the `by_tenant` index) and an item per tenant (`tenant#<slug>`) written with its
//! first key. Only the hash is stored; the secret is never stored or logged.

use super::expr::{Placeholders, UpdateExpression};
use super::item::{attr, format_time, key_pk, now_ms, s, tenant_pk, ItemReader};
use super::DynamoStore;
use crate::sdk_error;
use async_trait::async_trait;
use outpost_core::domain::TenantId;
use outpost_core::ports::{ApiKeyStore, CreatedKey, KeyError};

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> KeyError {
    KeyError::Backend(sdk_error(e))
}

impl DynamoStore {
    /// Writes the attributes of item `pk` that it does not have yet (`if_not_exists`), so writing
    /// twice changes nothing and needs no condition.
    async fn put_if_absent(&self, pk: String, attrs: &[(&str, String)]) -> Result<(), KeyError> {
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        for (name, value) in attrs {
            let placeholder = p.name(name);
            let value = p.value(name, s(value.as_str()));
            u.set_clause(format!("{placeholder} = if_not_exists({placeholder}, {value})"));
        }
        let (names, values) = p.into_maps();
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(pk))
            .update_expression(u.render())
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ApiKeyStore for DynamoStore {
    async fn insert_key(&self, key: &CreatedKey) -> Result<(), KeyError> {
        let created_at = format_time(now_ms());
        // The key first: a tenant item then always means the tenant has a key.
        self.put_if_absent(
            key_pk(&key.hash),
            &[
                (attr::KEY_TENANT, key.tenant.as_str().to_owned()),
                (attr::DISPLAY_PREFIX, key.display_prefix.clone()),
                (attr::CREATED_AT, created_at.clone()),
            ],
        )
        .await?;
        self.put_if_absent(tenant_pk(key.tenant.as_str()), &[(attr::CREATED_AT, created_at)])
            .await?;
        tracing::info!(tenant = %key.tenant, prefix = %key.display_prefix, "API key stored");
        Ok(())
    }

    async fn tenant_for_key_hash(&self, hash: &str) -> Result<Option<TenantId>, KeyError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(key_pk(hash)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let r = ItemReader::new(item);
        if r.opt_string(attr::REVOKED_AT)?.is_some() {
            return Ok(None);
        }
        Ok(Some(r.parse::<TenantId>(attr::KEY_TENANT)?))
    }

    async fn tenant_has_keys(&self, tenant: &TenantId) -> Result<bool, KeyError> {
        let mut p = Placeholders::default();
        let projection = p.name(attr::PK);
        let (names, _) = p.into_maps();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(tenant_pk(tenant.as_str())))
            .projection_expression(projection)
            .set_expression_attribute_names(names)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_tenant_items_have_their_own_key_spaces() {
        assert_eq!(key_pk("ab12"), "key#ab12");
        assert_eq!(tenant_pk("acme"), "tenant#acme");
    }
}
