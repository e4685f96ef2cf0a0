//! How an agent entry is confined: the sandbox mode, the network policy and the per-run limits.
//! The worker turns these into layers (see `outpost_worker::sandbox`); what each mode guarantees
//! is in `docs/SECURITY.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How strongly an agent's runs are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Only the unprivileged identity and the clean environment. Must be named explicitly; the
    /// AWS backend refuses it unless the operator forces it.
    None,
    /// Identity, Landlock and limits, no namespaces: what a Fargate container allows, the same
    /// on every machine (and cheaper than strict). A machine without Landlock refuses the run
    /// (`sandbox_unavailable`).
    Standard,
    /// Every layer: identity, namespaces (mount, PID, IPC, UTS, network per policy), Landlock
    /// and limits. A run on a machine without one of them fails (`sandbox_unavailable`).
    Strict,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::None => "none",
            SandboxMode::Standard => "standard",
            SandboxMode::Strict => "strict",
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "standard" => Ok(Self::Standard),
            "strict" => Ok(Self::Strict),
            _ => Err(format!("unknown sandbox mode {s:?} (strict, standard or none)")),
        }
    }
}

/// What the agent may reach on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// Loopback only, in its own network namespace (with no namespaces: no TCP connect at all,
    /// through Landlock).
    None,
    /// Only through the run's egress proxy in the worker, to the entry's `allow_hosts` (HTTPS
    /// by `CONNECT`, the TLS server name checked) and, for an entry with `key_injection`, its
    /// vendor API with the key held by the proxy. Raw IP addresses, names that resolve to
    /// loopback, link-local (metadata and credentials endpoints) or private addresses are
    /// refused whatever the list says; every refusal is a note of the run.
    Allow,
    /// The worker's network, without the cloud metadata and credentials endpoints and the
    /// worker's own ports where the mode can enforce it (the run's notes say where not).
    Open,
}

impl NetworkPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkPolicy::None => "none",
            NetworkPolicy::Allow => "allow",
            NetworkPolicy::Open => "open",
        }
    }
}

/// Per-run resource limits of an agent entry. Exceeding memory, disk or output fails the run
/// with `memory_limit`, `disk_limit` or `output_limit` (artifacts kept); the process cap makes
/// further forks fail; the CPU cap is total CPU seconds of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunLimits {
    /// Processes (and threads) the run may have at once.
    pub max_processes: u32,
    /// CPU seconds the run may use in all.
    pub cpu_secs: u32,
    /// Size of the workspace and HOME together, MiB.
    pub disk_mb: u32,
    /// Bytes of output (stdout and stderr) kept, MiB.
    pub output_mb: u32,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_processes: 512,
            cpu_secs: 4 * 3600,
            disk_mb: 10 * 1024,
            output_mb: 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_order_by_strength_and_parse_back() {
        assert!(SandboxMode::Strict > SandboxMode::Standard && SandboxMode::Standard > SandboxMode::None);
        for m in [SandboxMode::None, SandboxMode::Standard, SandboxMode::Strict] {
            assert_eq!(m.as_str().parse::<SandboxMode>(), Ok(m));
        }
        assert!("loose"
            .parse::<SandboxMode>()
            .expect_err("an error")
            .contains("strict, standard or none"));
    }
}
