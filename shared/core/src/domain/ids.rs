//! Identifiers: run ids (`run_` + ULID, sortable by creation time), tenant names and worker ids.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("run id must look like run_<26-char ULID>, got {0:?}")]
    BadRunId(String),
    #[error("tenant name must be 1..=64 chars of a-z, 0-9, '-' or '_' and start with a letter or digit, got {0:?}")]
    BadTenant(String),
}

/// A run's id: `run_` followed by a ULID, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    pub const PREFIX: &'static str = "run_";

    /// A fresh id for a run created now.
    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, ulid::Ulid::new()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ULID's millisecond timestamp.
    pub fn timestamp_ms(&self) -> u64 {
        ulid::Ulid::from_string(&self.0[Self::PREFIX.len()..])
            .map(|u| u.timestamp_ms())
            .unwrap_or(0)
    }
}

impl FromStr for RunId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(Self::PREFIX) {
            Some(rest) if ulid::Ulid::from_string(rest).is_ok() && rest.len() == 26 => {
                // Normalise to upper case, the canonical ULID spelling.
                Ok(Self(format!("{}{}", Self::PREFIX, rest.to_ascii_uppercase())))
            }
            _ => Err(IdError::BadRunId(s.to_owned())),
        }
    }
}

impl TryFrom<String> for RunId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> Self {
        id.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's name: lower-case slug, used in storage paths and keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && s.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadTenant(s.to_owned()))
        }
    }
}

impl TryFrom<String> for TenantId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A worker process's id (host name + pid + random suffix); owner of leases.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerId(pub String);

impl WorkerId {
    /// A fresh id for this process: `wrk_<ULID>`.
    pub fn generate() -> Self {
        Self(format!("wrk_{}", ulid::Ulid::new()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Live keys serve real traffic; test keys are for CI and sandboxes. Both authenticate the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyKind {
    Live,
    Test,
}

impl ApiKeyKind {
    /// The key's visible prefix, `op_live_` or `op_test_`.
    pub fn prefix(self) -> &'static str {
        match self {
            ApiKeyKind::Live => "op_live_",
            ApiKeyKind::Test => "op_test_",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_round_trip_and_sort_by_time() {
        let a = RunId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RunId::generate();
        assert!(a < b);
        assert_eq!(a.as_str().parse::<RunId>().as_ref(), Ok(&a));
        assert!(a.timestamp_ms() > 0);
    }

    #[test]
    fn bad_run_ids_are_rejected() {
        for bad in [
            "",
            "run_",
            "abc",
            "run_123",
            "job_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "run_01ARZ3NDEKTSV4RRFFQ69G5FAV/x",
        ] {
            assert!(bad.parse::<RunId>().is_err(), "{bad} accepted");
        }
        assert!("run_01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<RunId>().is_ok());
    }

    #[test]
    fn tenant_names_are_slugs() {
        assert!("acme".parse::<TenantId>().is_ok());
        assert!("acme-2_x".parse::<TenantId>().is_ok());
        for bad in ["", "Acme", "-acme", "a/b", "../x", &"a".repeat(65)] {
            assert!(bad.parse::<TenantId>().is_err(), "{bad} accepted");
        }
    }
}
