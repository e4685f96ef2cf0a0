//! Worker settings and their defaults. Binaries build a [`WorkerConfig`] from the one set of
//! process settings ([`WorkerConfig::from_settings`]); tests and benchmarks set fields directly.

use crate::sandbox::uids::UidRange;
use crate::sandbox::SandboxConfig;
use outpost_config::deployment::BackendKind;
pub use outpost_config::settings::default_slots;
use outpost_config::Settings;
use std::path::PathBuf;
use std::time::Duration;

/// How a worker process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Concurrent runs (default: 2 × available cores).
    pub slots: usize,
    /// Run lease and message visibility (default 30 s); heartbeats every `lease / 3`.
    pub lease: Duration,
    /// Claims before a lost run fails with `worker_lost` (default 3).
    pub max_attempts: u32,
    /// SIGTERM → SIGKILL grace when stopping an agent (default 5 s).
    pub kill_grace: Duration,
    /// Workspaces go to `{work_dir}/{run_id}/`.
    pub work_dir: PathBuf,
    /// Long-poll wait of one receive (default 20 s).
    pub receive_wait: Duration,
    /// On shutdown, how long in-flight runs may finish before they are killed and released
    /// (default 25 s).
    pub drain_timeout: Duration,
    /// How often dead letters are drained (default 5 s).
    pub dead_letter_interval: Duration,
    /// How long a tenant's secrets are reused before they are read again (default 30 s).
    pub secrets_ttl: Duration,
    /// How often the worker reports itself to the fleet registry (default 5 s).
    pub presence_interval: Duration,
    /// The agents' sandbox (see [`crate::sandbox`]).
    pub sandbox: SandboxConfig,
    /// A PEM file of further CAs the runs' egress proxy trusts for vendor APIs.
    pub egress_ca: Option<PathBuf>,
    /// Fixed addresses of host names for the egress proxy (instead of DNS).
    pub egress_resolve: Vec<(String, std::net::IpAddr)>,
}

impl WorkerConfig {
    /// Defaults, with workspaces under `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            work_dir: work_dir.into(),
            ..Self::default()
        }
    }

    /// The worker of a process with `settings`. Workspaces go to `--work-dir` when given, else
    /// (embedded) [`crate::identity::default_work_dir`] of the data dir, else (AWS)
    /// `$TMPDIR/outpost-work`.
    pub fn from_settings(settings: &Settings) -> Self {
        let work_dir = match (&settings.work_dir, settings.backend) {
            (Some(dir), _) => dir.clone(),
            (None, BackendKind::Embedded) => crate::identity::default_work_dir(&settings.data_dir),
            (None, BackendKind::Aws) => std::env::temp_dir().join("outpost-work"),
        };
        let mut hidden = vec![settings.data_dir.clone()];
        hidden.extend(settings.agents_file.clone());
        let protected_ports = match settings.backend {
            // The embedded API (`outpost dev`) listens on this machine.
            BackendKind::Embedded => settings
                .listen
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .into_iter()
                .collect(),
            BackendKind::Aws => Vec::new(),
        };
        let sandbox = SandboxConfig {
            default_mode: settings.sandbox,
            refuse_none: settings.backend == BackendKind::Aws && !settings.allow_unsandboxed,
            uids: UidRange {
                first: settings.agent_uids.0,
                last: settings.agent_uids.1,
            },
            extra_ro: settings.sandbox_ro.clone(),
            extra_rw: settings.sandbox_rw.clone(),
            hidden,
            protected_ports,
            ..SandboxConfig::default()
        };
        Self {
            slots: settings.slots,
            lease: settings.lease,
            max_attempts: settings.max_attempts,
            kill_grace: settings.kill_grace,
            drain_timeout: settings.drain,
            sandbox,
            egress_ca: settings.egress_ca.clone(),
            egress_resolve: settings.egress_resolve.clone(),
            ..Self::new(work_dir)
        }
    }

    /// The egress proxy's settings (reads the CA file).
    pub fn egress(&self) -> Result<crate::egress::EgressConfig, String> {
        let upstream_ca_pem = match &self.egress_ca {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("cannot read --egress-ca {}: {e}", path.display()))?)
            }
            None => None,
        };
        Ok(crate::egress::EgressConfig {
            upstream_ca_pem,
            resolve: self.egress_resolve.clone(),
            ..crate::egress::EgressConfig::default()
        })
    }

    /// Interval between heartbeats: a third of the lease (at least 10 ms).
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(10))
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            slots: default_slots(),
            lease: Duration::from_secs(30),
            max_attempts: 3,
            kill_grace: Duration::from_secs(5),
            work_dir: std::env::temp_dir().join("outpost-work"),
            receive_wait: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(25),
            dead_letter_interval: Duration::from_secs(5),
            secrets_ttl: crate::tenant_secrets::DEFAULT_TTL,
            presence_interval: crate::presence::REPORT_INTERVAL,
            sandbox: SandboxConfig::default(),
            egress_ca: None,
            egress_resolve: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = WorkerConfig::new("/w");
        assert_eq!(c.work_dir, PathBuf::from("/w"));
        assert_eq!(c.slots, default_slots());
        assert!(c.slots >= 2);
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(10));
        assert_eq!((c.max_attempts, c.kill_grace), (3, Duration::from_secs(5)));
        assert_eq!(c.receive_wait, Duration::from_secs(20));
        assert_eq!(c.drain_timeout, Duration::from_secs(25));
        assert_eq!(c.dead_letter_interval, Duration::from_secs(5));
    }
}
