//! Tenants' own secrets (BYOK) as the worker hands them to agents: every secret of the run's
//! tenant becomes an environment variable of the same name, taking precedence over the worker's
//! own value of that name, and is scrubbed from the run's output like an agent key.
//!
//! Reads go through a short-lived per-tenant cache, so a busy tenant costs the secret store one
//! read per [`TenantSecrets::ttl`] per worker rather than one per run; a changed secret reaches
//! new runs within that time.

use outpost_shared::domain::TenantId;
use outpost_shared::ports::{SecretError, SecretName, SecretStore};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a tenant's secrets are reused by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Most tenants cached at once; the oldest entry goes first.
const MAX_TENANTS: usize = 1_024;

/// One tenant's secrets, by name.
pub type SecretSet = Arc<Vec<(SecretName, SecretString)>>;

/// A caching reader of tenants' secrets.
pub struct TenantSecrets {
    store: Arc<dyn SecretStore>,
    ttl: Duration,
    cache: Mutex<HashMap<TenantId, (Instant, SecretSet)>>,
}

impl TenantSecrets {
    pub fn new(store: Arc<dyn SecretStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Every secret of `tenant` with its value (from the cache when fresh).
    pub async fn for_tenant(&self, tenant: &TenantId) -> Result<SecretSet, SecretError> {
        if let Some(set) = self.cached(tenant) {
            return Ok(set);
        }
        let names = self.store.list_secrets(tenant).await?;
        let mut values = Vec::with_capacity(names.len());
        for info in names {
            // Deleted between the list and the read: skip it.
            if let Some(v) = self.store.get_secret(tenant, &info.name).await? {
                values.push((info.name, v));
            }
        }
        let set: SecretSet = Arc::new(values);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_TENANTS {
                if let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(t, _)| t.clone()) {
                    cache.remove(&oldest);
                }
            }
            cache.insert(tenant.clone(), (Instant::now(), Arc::clone(&set)));
        }
        Ok(set)
    }

    fn cached(&self, tenant: &TenantId) -> Option<SecretSet> {
        let cache = self.cache.lock().ok()?;
        let (at, set) = cache.get(tenant)?;
        (at.elapsed() < self.ttl).then(|| Arc::clone(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::embedded::LocalSecretStore;
    use secrecy::ExposeSecret;

    fn name(s: &str) -> SecretName {
        s.parse().expect("name")
    }

    #[tokio::test]
    async fn reads_every_secret_and_reuses_them_until_the_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn SecretStore> = Arc::new(LocalSecretStore::new(dir.path()).expect("store"));
        let acme: TenantId = "acme".parse().expect("tenant");
        let other: TenantId = "other".parse().expect("tenant");
        store
            .put_secret(&acme, &name("A_KEY"), &SecretString::from("one".to_owned()))
            .await
            .expect("put");
        store
            .put_secret(&other, &name("B_KEY"), &SecretString::from("two".to_owned()))
            .await
            .expect("put");

        let cached = TenantSecrets::new(Arc::clone(&store), Duration::from_secs(3600));
        let set = cached.for_tenant(&acme).await.expect("read");
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].0.as_str(), "A_KEY");
        assert_eq!(set[0].1.expose_secret(), "one");

        // A change is not seen while the entry is fresh...
        store
            .put_secret(&acme, &name("C_KEY"), &SecretString::from("three".to_owned()))
            .await
            .expect("put");
        assert_eq!(cached.for_tenant(&acme).await.expect("read").len(), 1);
        // ...and is seen by a reader whose entries have expired.
        let fresh = TenantSecrets::new(store, Duration::ZERO);
        let set = fresh.for_tenant(&acme).await.expect("read");
        let names: Vec<&str> = set.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["A_KEY", "C_KEY"]);
    }
}
