//! Tenants' own secrets (BYOK) as the worker hands them to agents: every secret of the run's
//! tenant becomes an environment variable of the same name, taking precedence over the worker's
//! own value of that name, and is scrubbed from the run's output like an agent key.
//!
//! Reads go through a short-lived per-tenant cache, so a busy tenant costs the secret store one
//! read per [`TenantSecrets::ttl`] per worker rather than one per run; a changed secret reaches
//! new runs within that time. Concurrent runs of one tenant that find the cache cold wait for one
//! read rather than each making their own.

use outpost_core::domain::TenantId;
use outpost_core::ports::{SecretError, SecretName, SecretStore};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a tenant's secrets are reused by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Most tenants cached at once; the oldest entry goes first.
const MAX_TENANTS: usize = 1_024;

/// One tenant's secrets, by name.
pub type SecretSet = Arc<Vec<(SecretName, SecretString)>>;

/// One tenant's cache entry: its secrets and when they were read. The async lock makes the
/// tenant's concurrent misses share one read.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, SecretSet)>>>;

/// A caching reader of tenants' secrets.
pub struct TenantSecrets {
    store: Arc<dyn SecretStore>,
    ttl: Duration,
    cache: Mutex<HashMap<TenantId, (Instant, Slot)>>,
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
        let slot = self.slot(tenant);
        let mut entry = slot.lock().await;
        if let Some((at, set)) = entry.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(Arc::clone(set));
            }
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
        *entry = Some((Instant::now(), Arc::clone(&set)));
        Ok(set)
    }

    /// The cache slot of `tenant`, made if new (the least recently used one goes when full).
    fn slot(&self, tenant: &TenantId) -> Slot {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some((used, slot)) = cache.get_mut(tenant) {
            *used = now;
            return Arc::clone(slot);
        }
        if cache.len() >= MAX_TENANTS {
            if let Some(oldest) = cache.iter().min_by_key(|(_, (used, _))| *used).map(|(t, _)| t.clone()) {
                cache.remove(&oldest);
            }
        }
        let slot = Slot::default();
        cache.insert(tenant.clone(), (now, Arc::clone(&slot)));
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_embedded::LocalSecretStore;
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

    /// Counts list calls of an inner store.
    struct CountingStore {
        inner: LocalSecretStore,
        lists: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SecretStore for CountingStore {
        async fn put_secret(&self, t: &TenantId, n: &SecretName, v: &SecretString) -> Result<(), SecretError> {
            self.inner.put_secret(t, n, v).await
        }
        async fn get_secret(&self, t: &TenantId, n: &SecretName) -> Result<Option<SecretString>, SecretError> {
            self.inner.get_secret(t, n).await
        }
        async fn list_secrets(&self, t: &TenantId) -> Result<Vec<outpost_core::ports::SecretInfo>, SecretError> {
            self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Slow enough that concurrent callers overlap.
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.inner.list_secrets(t).await
        }
        async fn delete_secret(&self, t: &TenantId, n: &SecretName) -> Result<bool, SecretError> {
            self.inner.delete_secret(t, n).await
        }
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_tenant_share_one_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(CountingStore {
            inner: LocalSecretStore::new(dir.path()).expect("store"),
            lists: Default::default(),
        });
        let acme: TenantId = "acme".parse().expect("tenant");
        let other: TenantId = "other".parse().expect("tenant");
        let cached = Arc::new(TenantSecrets::new(store.clone(), Duration::from_secs(3600)));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (cached, tenant) = (Arc::clone(&cached), if i < 6 { acme.clone() } else { other.clone() });
            tasks.push(tokio::spawn(async move {
                cached.for_tenant(&tenant).await.map(|s| s.len())
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("read"), 0);
        }
        // One read per tenant, not one per caller.
        assert_eq!(store.lists.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
