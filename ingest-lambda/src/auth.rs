//! Bearer-key authentication: `Authorization: Bearer <key>` → SHA-256 → tenant.
//!
//! Lookups are cached in memory by key hash (never by the key itself) for a short TTL, so the hot
//! path does no store round-trip for a known key. Only successful lookups are cached: a key
//! created a moment ago works at once; a revoked key may keep working until its entry expires.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use outpost_core::ports::keys::hash_key;
use outpost_core::TenantId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest key accepted before hashing; real keys are 72 characters.
const MAX_KEY_LEN: usize = 256;

/// The authenticated tenant of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub TenantId);

/// Why a request's `Authorization` header does not carry a usable bearer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    Missing,
    Malformed,
}

/// The key of an `Authorization: Bearer <key>` header value (scheme case-insensitive).
pub fn parse_bearer(value: Option<&[u8]>) -> Result<&str, BearerError> {
    let raw = value.ok_or(BearerError::Missing)?;
    let text = std::str::from_utf8(raw).map_err(|_| BearerError::Malformed)?;
    let (scheme, key) = text.trim().split_once(' ').ok_or(BearerError::Malformed)?;
    let key = key.trim_start();
    let key_ok = !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic());
    if scheme.eq_ignore_ascii_case("bearer") && key_ok {
        Ok(key)
    } else {
        Err(BearerError::Malformed)
    }
}

/// A bounded in-memory map of key hash → tenant with a TTL.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (TenantId, Instant)>>,
}

impl KeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached tenant of `hash`, if cached and fresh.
    pub fn get(&self, hash: &str, now: Instant) -> Option<TenantId> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(t, _)| t.clone())
    }

    /// Remembers `hash` → `tenant`. When full, expired entries go first, then everything: a
    /// cold cache only costs one store read per key.
    pub fn insert(&self, hash: String, tenant: TenantId, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&hash) {
            entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(hash, (tenant, now));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = match parse_bearer(parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes())) {
            Ok(key) => key,
            Err(BearerError::Missing) => {
                return Err(ApiError::unauthorized(
                    "an API key is required: send it as 'Authorization: Bearer <key>'",
                ))
            }
            Err(BearerError::Malformed) => {
                return Err(ApiError::unauthorized(
                    "the Authorization header must be 'Bearer <key>'",
                ))
            }
        };
        let hash = hash_key(key);
        let now = Instant::now();
        if let Some(tenant) = state.key_cache().get(&hash, now) {
            return Ok(Tenant(tenant));
        }
        match state.backend().keys.tenant_for_key_hash(&hash).await? {
            Some(tenant) => {
                state.key_cache().insert(hash, tenant.clone(), now);
                Ok(Tenant(tenant))
            }
            None => {
                tracing::debug!("request with an unknown or revoked API key");
                Err(ApiError::unauthorized("the API key is not valid"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers_parse() {
        assert_eq!(parse_bearer(Some(b"Bearer op_test_abc")), Ok("op_test_abc"));
        assert_eq!(parse_bearer(Some(b"bearer   op_test_abc ")), Ok("op_test_abc"));
        assert_eq!(parse_bearer(None), Err(BearerError::Missing));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic dXNlcjpwYXNz",
            b"op_test_abc",
            b"Bearer a b",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(parse_bearer(Some(bad)), Err(BearerError::Malformed), "{bad:?}");
        }
        let long = format!("Bearer {}", "k".repeat(MAX_KEY_LEN + 1));
        assert_eq!(parse_bearer(Some(long.as_bytes())), Err(BearerError::Malformed));
    }

    #[test]
    fn cache_entries_expire() {
        let cache = KeyCache::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let acme: TenantId = "acme".parse().expect("tenant");
        cache.insert("h1".into(), acme.clone(), t0);
        assert_eq!(cache.get("h1", t0 + Duration::from_secs(59)), Some(acme));
        assert_eq!(cache.get("h1", t0 + Duration::from_secs(60)), None);
        assert_eq!(cache.get("h2", t0), None);
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = KeyCache::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let acme: TenantId = "acme".parse().expect("tenant");
        for i in 0..10 {
            cache.insert(format!("h{i}"), acme.clone(), t0);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.get("h9", t0), Some(acme.clone()));
        // Expired entries are dropped first, fresh ones kept.
        let cache = KeyCache::new(Duration::from_secs(60), 2);
        cache.insert("old".into(), acme.clone(), t0);
        cache.insert("new".into(), acme.clone(), t0 + Duration::from_secs(50));
        cache.insert("newer".into(), acme.clone(), t0 + Duration::from_secs(70));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("new", t0 + Duration::from_secs(70)).is_some());
        assert!(!cache.is_empty());
    }
}
