//! The agent's sandbox on this machine: what the kernel allows (probed once, at start), and for
//! each run the command line that confines its agent, the run's cgroup and the record of which
//! layers were on (`summary.json` `sandbox`). The threat model and what each mode guarantees are
//! in `docs/SECURITY.md`.
//!
//! The layers, outermost first, each on where the machine allows it:
//! 1. **Identity.** A root worker gives each run a uid/gid of its own ([`uids`]); a worker that
//!    is not root runs the agent in an unprivileged user namespace as its own (non-zero) uid.
//! 2. **Namespaces** (bubblewrap): mount (system folders read-only, the run's `ws/` and `home/`
//!    read-write, a private `/tmp`, nothing of the data dir or other runs), PID with its own
//!    `/proc`, IPC, UTS, and network for `network = "none"` (loopback only).
//! 3. **Landlock** ([`confine`]): the same file view as an allow-list that also holds where
//!    namespaces are not available; TCP rules (no TCP at all for `none` without a network
//!    namespace, none of the worker's ports for `open`); no signals or abstract Unix sockets
//!    outside the run.
//! 4. **Limits**: memory and process caps and CPU accounting in a per-run cgroup ([`cgroup`]),
//!    rlimits (CPU seconds, file size, process count where it is per run, no core dumps); disk
//!    and output caps are watched by the executor.
//!
//! The chain a run starts: `outpost-confine` (cgroup, rlimits, uid) → `bwrap` (namespaces) →
//! `outpost-confine` (Landlock) → the agent. Costs, measured by `outpost-bench` ((c'') is this
//! chain alone): an exec costs ~1 ms on the project's machine, so the two confine steps ~2 ms;
//! bubblewrap's namespaces and mounts ~6 ms (the user and mount namespace with its binds ~2.5,
//! the PID namespace ~1, the network namespace ~1 plus its teardown, `--disable-userns` ~0.8,
//! `/proc`, `/dev`, `/tmp` ~0.8); the cgroup's mkdir/rmdir and the uid sweep well under 1 ms.

pub mod cgroup;
pub mod firewall;
pub use outpost_confine as confine;
pub mod uids;

use crate::identity::{self, AgentUser};
use confine::{ConfineSpec, LandlockSpec, NetRule};
use outpost_core::domain::{NetworkPolicy, RunLimits, SandboxMode, SandboxRecord};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use uids::{UidLease, UidPool, UidRange};

/// System folders every sandbox sees read-only (those that exist).
const SYSTEM_DIRS: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];
/// Device files an agent without its own `/dev` may use.
const DEV_FILES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// How the worker's sandbox is set up (one per executor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The mode of entries that name none; `None`: the strongest this machine supports.
    pub default_mode: Option<SandboxMode>,
    /// Refuse entries with `sandbox = "none"` (the AWS backend, unless the operator forces it).
    pub refuse_none: bool,
    /// Refuse `network = "open"` unless the firewall refuses the metadata endpoints for the run:
    /// where credentials behind them are worth more than the run (an SSM host, whose instance
    /// role can read every tenant's keys).
    pub refuse_open_unfirewalled: bool,
    /// The uids of a root worker's agents.
    pub uids: UidRange,
    /// Further read-only trees for agents (where an operator installed the agent CLIs).
    pub extra_ro: Vec<PathBuf>,
    /// Trees every agent may write (a shared cache an operator chose to share between runs;
    /// it weakens run isolation, so none by default).
    pub extra_rw: Vec<PathBuf>,
    /// Trees no agent may see even inside a read-only tree: the data dir, config files.
    pub hidden: Vec<PathBuf>,
    /// The worker's own TCP ports (its API, a database) that agents with `network = "open"`
    /// may not connect to.
    pub protected_ports: Vec<u16>,
    /// `outpost-confine`; found beside this executable or on PATH when unset.
    pub confine: Option<PathBuf>,
    /// `bwrap`; found on PATH when unset.
    pub bwrap: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            default_mode: None,
            refuse_none: false,
            refuse_open_unfirewalled: false,
            uids: UidRange::DEFAULT,
            extra_ro: Vec::new(),
            extra_rw: Vec::new(),
            hidden: Vec::new(),
            protected_ports: Vec::new(),
            confine: None,
            bwrap: None,
        }
    }
}

/// What this machine allows, as probed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    pub root: bool,
    /// `outpost-confine` and how it is started (a path, or this executable with `__confine`).
    pub confine: Option<(PathBuf, Vec<OsString>)>,
    /// bubblewrap, when it can make user, mount, PID, IPC, UTS and network namespaces here.
    pub bwrap: Option<PathBuf>,
    /// Landlock: `Some(true)` every right (ABI 6+), `Some(false)` only ABI 1 file rights.
    pub landlock_full: Option<bool>,
    /// Why a layer is missing, for the start-up log and the runs' records.
    pub missing: Vec<String>,
}

/// The per-machine sandbox: support, uid pool, cgroup parent and firewall state.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    support: Support,
    uids: Option<UidPool>,
    cgroups: Option<cgroup::Hierarchy>,
    /// `Ok` when the firewall of `network = "open"` is installed, else why not.
    firewall: Result<(), String>,
    /// The agents' PATH folders, as read-only trees.
    path_dirs: Vec<PathBuf>,
}

/// What one run asks of the sandbox.
#[derive(Debug)]
pub struct Request<'a> {
    pub mode: Option<SandboxMode>,
    pub network: NetworkPolicy,
    pub limits: RunLimits,
    pub memory_mb: u32,
    /// The run's uid (a root worker), from [`Sandbox::acquire_user`].
    pub user: Option<AgentUser>,
    pub ws: &'a Path,
    pub home: &'a Path,
    /// The resolved program and its arguments.
    pub program: &'a Path,
    pub args: &'a [String],
    /// Names the run's cgroup.
    pub run_name: &'a str,
    /// The run's egress proxy (`network = "allow"`).
    pub egress: Option<&'a EgressPort>,
}

/// Where a run's egress proxy listens, for the sandbox of a run with `network = "allow"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPort {
    /// Its port on the worker's loopback, which a sandbox without a network namespace may
    /// connect to (and no other); inside a network namespace the relay listens on the same port,
    /// so the agent's proxy address is `127.0.0.1:{port}` either way.
    pub port: u16,
    /// Its Unix socket, bind-mounted into a network namespace at [`SANDBOX_EGRESS_SOCKET`].
    pub socket: PathBuf,
}

/// Where the run's egress socket appears inside bubblewrap (under its private `/tmp`; a mount
/// point, so the agent cannot remove it).
pub const SANDBOX_EGRESS_SOCKET: &str = "/tmp/.outpost-egress.sock";

/// One run's confinement, ready to spawn.
#[derive(Debug)]
pub struct Plan {
    /// What to spawn instead of the agent (the agent's own program when nothing wraps it).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Environment the sandbox adds (TMPDIR where `/tmp` is not private).
    pub env: Vec<(String, OsString)>,
    pub cgroup: Option<cgroup::RunCgroup>,
    /// Whether the agent has its own PID namespace (then its end ends all its processes).
    pub pid_namespace: bool,
    pub record: SandboxRecord,
    /// The caps the executor watches.
    pub disk_bytes: u64,
    pub output_bytes: u64,
    pub cpu_usec: u64,
}

impl Sandbox {
    /// Probes this machine (a few short-lived processes) and sets up the uid pool, the cgroup
    /// parent and the firewall. `path` is the agents' PATH.
    pub fn new(config: SandboxConfig, path: &OsStr) -> Self {
        let root = nix::unistd::geteuid().is_root();
        let path_dirs: Vec<PathBuf> = std::env::split_paths(path).filter(|d| d.is_absolute()).collect();
        let mut missing = Vec::new();
        let confine = find_confine(config.confine.as_deref(), path).map(|(p, pre)| {
            if !root {
                return (p, pre);
            }
            match reachable_copy(&p) {
                Ok(copy) => (copy, pre),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot copy outpost-confine where agents can run it");
                    (p, pre)
                }
            }
        });
        if confine.is_none() {
            missing.push("outpost-confine not found (beside this program or on PATH)".to_owned());
        }
        let uids = root.then(|| UidPool::new(config.uids));
        // The probes run as an agent uid held like a run's: a uid is SIGKILLed wholesale when
        // another worker on this host releases it, and an unheld probe killed that way used to
        // read as "bwrap cannot make namespaces" and start this worker one mode weaker. With
        // every uid busy, the first one (and nothing else to do about it).
        let probe_lease = uids.as_ref().and_then(UidPool::acquire);
        let probe_user = root.then(|| {
            probe_lease.as_ref().map_or(
                AgentUser {
                    uid: config.uids.first,
                    gid: config.uids.first,
                },
                UidLease::user,
            )
        });
        let landlock_full = confine
            .as_ref()
            .and_then(|c| probe_landlock(c, probe_user, &mut missing));
        let bwrap = config
            .bwrap
            .clone()
            .or_else(|| identity::find_program(path, "bwrap"))
            .filter(|b| probe_bwrap(b, confine.as_ref(), probe_user, &mut missing));
        if bwrap.is_none() && !missing.iter().any(|m| m.contains("bwrap")) {
            missing.push("no bubblewrap (bwrap) on PATH: no namespaces".to_owned());
        }
        drop(probe_lease);
        let support = Support {
            root,
            confine,
            bwrap,
            landlock_full,
            missing,
        };
        let cgroups = if root {
            cgroup::Hierarchy::detect(&format!("{}", std::process::id()))
        } else {
            None
        };
        let firewall = if root {
            firewall::install(config.uids.first, config.uids.last, &config.protected_ports)
        } else {
            Err("the worker is not root".to_owned())
        };
        let sandbox = Self {
            config,
            support,
            uids,
            cgroups,
            firewall,
            path_dirs,
        };
        tracing::info!(
            strongest = %sandbox.strongest(),
            namespaces = sandbox.support.bwrap.is_some(),
            landlock = ?sandbox.support.landlock_full,
            cgroup = sandbox.cgroups.as_ref().map(cgroup::Hierarchy::describe),
            firewall = sandbox.firewall.is_ok(),
            missing = ?sandbox.support.missing,
            "agent sandbox"
        );
        sandbox
    }

    pub fn support(&self) -> &Support {
        &self.support
    }

    /// The strongest mode this machine supports.
    pub fn strongest(&self) -> SandboxMode {
        match (&self.support.bwrap, self.support.landlock_full) {
            (Some(_), Some(_)) => SandboxMode::Strict,
            (_, Some(_)) => SandboxMode::Standard,
            _ => SandboxMode::None,
        }
    }

    /// A uid of its own for the next run (a root worker); `None` when the worker is not root.
    pub fn acquire_user(&self) -> Option<Result<UidLease, String>> {
        let pool = self.uids.as_ref()?;
        Some(pool.acquire().ok_or_else(|| {
            format!(
                "every agent uid ({}-{}) is in use; raise the range",
                self.config.uids.first, self.config.uids.last
            )
        }))
    }

    /// The first uid of the range (the identity of work that is not a run's, and the default).
    pub fn any_user(&self) -> Option<AgentUser> {
        self.uids.as_ref().map(|_| AgentUser {
            uid: self.config.uids.first,
            gid: self.config.uids.first,
        })
    }

    /// The confinement of one run, or why the run may not start (`sandbox_unavailable`).
    pub fn plan(&self, req: &Request<'_>) -> Result<Plan, String> {
        let strongest = self.strongest();
        let mode = match req.mode.or(self.config.default_mode) {
            Some(m) => m,
            None if strongest == SandboxMode::None => {
                return Err(format!(
                    "this machine supports no sandbox ({}); an entry must say sandbox = \"none\" to run unconfined",
                    self.support.missing.join("; ")
                ))
            }
            None => strongest,
        };
        if mode == SandboxMode::None && self.config.refuse_none {
            return Err(
                "sandbox = \"none\" is refused on this backend; start the worker with --allow-unsandboxed to force it"
                    .to_owned(),
            );
        }
        if req.network == NetworkPolicy::Open && self.config.refuse_open_unfirewalled {
            let unrefused = match (&self.firewall, req.user) {
                (Ok(()), Some(_)) => None,
                (Err(why), _) => Some(why.clone()),
                (Ok(()), None) => Some("no uid of the run's own".to_owned()),
            };
            if let Some(why) = unrefused {
                return Err(format!(
                    "network = \"open\" is refused here: the metadata endpoints cannot be refused ({why}), and the \
                     host's credentials behind them can read every tenant's keys; use network = \"allow\" with the \
                     hosts the agent needs"
                ));
            }
        }
        if mode > strongest {
            return Err(format!(
                "sandbox = \"{mode}\" needs what this machine lacks: {}",
                self.support.missing.join("; ")
            ));
        }
        let mut record = SandboxRecord {
            mode,
            network: req.network,
            layers: Vec::new(),
            not_enforced: Vec::new(),
        };
        let disk_bytes = u64::from(req.limits.disk_mb) << 20;
        let output_bytes = u64::from(req.limits.output_mb) << 20;
        let cpu_usec = u64::from(req.limits.cpu_secs) * 1_000_000;
        record.layers.push(match req.user {
            Some(u) => format!("identity: uid {} gid {}", u.uid, u.gid),
            None if mode == SandboxMode::Strict => {
                format!("identity: user namespace (uid {})", nix::unistd::geteuid())
            }
            None => format!("identity: the worker's own user (uid {})", nix::unistd::geteuid()),
        });
        let egress = match (req.network, req.egress) {
            (NetworkPolicy::Allow, None) => {
                return Err(
                    "network = \"allow\" needs the run's egress proxy, which this worker has not started".to_owned(),
                )
            }
            (NetworkPolicy::Allow, Some(e)) => Some(e),
            _ => None,
        };
        if mode == SandboxMode::None {
            record
                .not_enforced
                .push("namespaces, landlock and limits: sandbox = \"none\"".to_owned());
            if egress.is_some() {
                record.not_enforced.push(
                    "network allow: the proxy is only in the agent's environment (sandbox = \"none\")".to_owned(),
                );
            }
            // Only the uid change, through outpost-confine (without it the executor uses setpriv).
            let uid_change = req.user.and_then(|u| {
                self.confine_cmd(&ConfineSpec {
                    ids: Some((u.uid, u.gid)),
                    program: req.program.as_os_str().to_os_string(),
                    args: req.args.iter().map(OsString::from).collect(),
                    ..Default::default()
                })
                .ok()
            });
            let (program, args) = uid_change
                .unwrap_or_else(|| (req.program.to_path_buf(), req.args.iter().map(OsString::from).collect()));
            return Ok(Plan {
                program,
                args,
                env: Vec::new(),
                cgroup: None,
                pid_namespace: false,
                record,
                disk_bytes,
                output_bytes,
                cpu_usec,
            });
        }
        // Namespaces are strict's: standard is what a Fargate container allows, on every machine.
        let use_ns = mode == SandboxMode::Strict;
        let full = self.support.landlock_full == Some(true);
        let view = self.view(req);

        // Limits: a cgroup where this worker can make one, rlimits always.
        let cgroup = match &self.cgroups {
            Some(h) => match h.create(
                &format!("run-{}", req.run_name),
                u64::from(req.memory_mb) << 20,
                req.limits.max_processes,
            ) {
                Ok(cg) => {
                    record.layers.push(format!("limits: {}", h.describe()));
                    Some(cg)
                }
                Err(e) => {
                    record
                        .not_enforced
                        .push(format!("memory and process caps: cannot make the run's cgroup: {e}"));
                    None
                }
            },
            None => {
                record
                    .not_enforced
                    .push("memory cap and CPU total: no cgroup this worker may create (not root)".to_owned());
                None
            }
        };
        let mut rlimits = vec![
            ("core".to_owned(), 0),
            ("fsize".to_owned(), disk_bytes),
            ("cpu".to_owned(), u64::from(req.limits.cpu_secs)),
        ];
        // RLIMIT_NPROC counts per uid in a user namespace: per run when the run has its own uid
        // or its own user namespace; shared with the worker's user otherwise.
        let nproc = ("nproc".to_owned(), u64::from(req.limits.max_processes));
        if req.user.is_some() {
            rlimits.push(nproc.clone());
        }
        let nproc_here = req.user.is_some() || use_ns;
        record.layers.push(format!(
            "limits: rlimits (cpu, fsize, core{})",
            if nproc_here { ", nproc" } else { "" }
        ));
        if req.user.is_none() && !use_ns {
            record
                .not_enforced
                .push("process cap: no uid or user namespace of the run's own".to_owned());
        }

        let net_rule = match (req.network, use_ns) {
            // An own network namespace: loopback only (and, for allow, the relay on it).
            (NetworkPolicy::None | NetworkPolicy::Allow, true) => NetRule::All,
            (NetworkPolicy::None, false) => NetRule::None,
            (NetworkPolicy::Allow, false) => NetRule::Only(egress.map(|e| e.port).into_iter().collect()),
            (NetworkPolicy::Open, _) if self.config.protected_ports.is_empty() => NetRule::All,
            // A root worker's firewall refuses the worker's ports by address; without it,
            // Landlock refuses them on every address (one rule per other port: ~0.1 s a run).
            (NetworkPolicy::Open, _) if self.firewall.is_ok() && req.user.is_some() => NetRule::All,
            (NetworkPolicy::Open, _) => NetRule::Except(self.config.protected_ports.clone()),
        };
        if !full && net_rule != NetRule::All {
            record
                .not_enforced
                .push("TCP rules: Landlock on this kernel has no network rights (ABI < 4)".to_owned());
        }
        let net_rule = if full { net_rule } else { NetRule::All };
        match req.network {
            NetworkPolicy::None if use_ns => record.layers.push("network: none (own network namespace)".to_owned()),
            NetworkPolicy::None if !full => record
                .not_enforced
                .push("network none: neither a network namespace nor Landlock TCP rules here".to_owned()),
            NetworkPolicy::None => {
                record.layers.push("network: none (Landlock: no TCP)".to_owned());
                record
                    .not_enforced
                    .push("network none: UDP is not restricted without a network namespace".to_owned());
            }
            NetworkPolicy::Allow if use_ns => record.layers.push(
                "network: allow (own network namespace; only the run's egress proxy, through a relay)".to_owned(),
            ),
            NetworkPolicy::Allow if !full => record.not_enforced.push(
                "network allow: neither a network namespace nor Landlock TCP rules here (the proxy is only in the agent's environment)"
                    .to_owned(),
            ),
            NetworkPolicy::Allow => {
                record
                    .layers
                    .push("network: allow (Landlock: TCP only to the run's egress proxy)".to_owned());
                record
                    .not_enforced
                    .push("network allow: UDP (DNS) is not restricted without a network namespace".to_owned());
            }
            NetworkPolicy::Open => {
                if let NetRule::Except(ports) = &net_rule {
                    record
                        .layers
                        .push(format!("network: open, worker ports {ports:?} refused (Landlock)"));
                }
                match (&self.firewall, req.user) {
                    (Ok(()), Some(_)) => record.layers.push(format!(
                        "network: open, metadata and credentials endpoints and worker ports {:?} refused (iptables)",
                        self.config.protected_ports
                    )),
                    (Err(why), _) => record
                        .not_enforced
                        .push(format!("network open: metadata endpoints not refused ({why})")),
                    (Ok(()), None) => record
                        .not_enforced
                        .push("network open: metadata endpoints not refused (no uid of the run's own)".to_owned()),
                }
            }
        }

        let mut ro = view.ro.clone();
        let mut rw = vec![req.ws.to_path_buf(), req.home.to_path_buf()];
        rw.extend(self.config.extra_rw.iter().filter(|p| p.exists()).cloned());
        let mut env = Vec::new();
        if use_ns {
            ro.push("/proc".into());
            rw.push("/tmp".into());
            rw.push("/dev".into());
        } else {
            rw.extend(DEV_FILES.iter().map(PathBuf::from));
            // The host's /tmp is shared: the agent's temporary files go to its HOME.
            env.push(("TMPDIR".to_owned(), req.home.as_os_str().to_os_string()));
            record.not_enforced.push(
                "private /tmp and /proc: no mount namespace (TMPDIR is the run's HOME, /proc is denied)".to_owned(),
            );
        }
        let landlock = LandlockSpec {
            basic: !full,
            ro,
            rw,
            net: net_rule,
            scope: full,
        };
        record.layers.push(if full {
            "landlock: files, TCP, signal and abstract-socket scoping".to_owned()
        } else {
            "landlock: files (ABI 1)".to_owned()
        });
        if !full {
            record
                .not_enforced
                .push("signal scoping: Landlock on this kernel is older than ABI 6".to_owned());
        }

        let outer = ConfineSpec {
            cgroups: cgroup.as_ref().map(cgroup::RunCgroup::procs_files).unwrap_or_default(),
            rlimits: rlimits.clone(),
            ids: req.user.map(|u| (u.uid, u.gid)),
            ignore_term: use_ns,
            ..Default::default()
        };
        let bwrap = if use_ns { self.support.bwrap.as_ref() } else { None };
        let (program, args) = if let Some(bwrap) = bwrap {
            record.layers.push(format!(
                "namespaces: user, mount, pid, ipc, uts{}",
                if req.network != NetworkPolicy::Open {
                    ", net"
                } else {
                    ""
                }
            ));
            let mut inner_limits = Vec::new();
            if req.user.is_none() {
                inner_limits.push(nproc);
            }
            let relay = egress.map(|e| {
                (
                    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, e.port)),
                    PathBuf::from(SANDBOX_EGRESS_SOCKET),
                )
            });
            let (inner, inner_args) = self.confine_cmd(&ConfineSpec {
                rlimits: inner_limits,
                landlock: Some(landlock),
                relay,
                program: req.program.as_os_str().to_os_string(),
                args: req.args.iter().map(OsString::from).collect(),
                ..Default::default()
            })?;
            let mut bargs = bwrap_args(req, &view, &inner);
            for p in self.config.extra_rw.iter().filter(|p| p.exists()) {
                bargs.extend(["--bind".into(), p.clone().into_os_string(), p.clone().into_os_string()]);
            }
            bargs.push("--".into());
            bargs.push(inner.into_os_string());
            bargs.extend(inner_args);
            // outpost-confine (cgroup, rlimits, uid) → bwrap → outpost-confine (Landlock) → agent.
            self.confine_cmd(&ConfineSpec {
                program: bwrap.clone().into_os_string(),
                args: bargs,
                ..outer
            })?
        } else {
            record
                .not_enforced
                .push("namespaces: none in standard mode (Landlock holds the file view)".to_owned());
            if req.user.is_none() {
                record.not_enforced.push(
                    "processes that leave the agent's session outlive the run: no PID namespace, uid or cgroup of the run's own"
                        .to_owned(),
                );
            }
            self.confine_cmd(&ConfineSpec {
                landlock: Some(landlock),
                program: req.program.as_os_str().to_os_string(),
                args: req.args.iter().map(OsString::from).collect(),
                ..outer
            })?
        };
        Ok(Plan {
            program,
            args,
            env,
            cgroup,
            pid_namespace: use_ns,
            record,
            disk_bytes,
            output_bytes,
            cpu_usec,
        })
    }

    /// The command that runs `spec` through outpost-confine: its path and arguments (those
    /// that make this executable serve as one, then the spec's).
    fn confine_cmd(&self, spec: &ConfineSpec) -> Result<(PathBuf, Vec<OsString>), String> {
        let (program, mut args) = self
            .support
            .confine
            .clone()
            .ok_or_else(|| "outpost-confine not found (beside this program or on PATH)".to_owned())?;
        args.extend(spec.to_args());
        Ok((program, args))
    }

    /// The read-only trees an agent sees: system folders, the agents' PATH, the program's own
    /// install prefix and the operator's extras; none that holds or lies in a hidden tree or
    /// that the agent's user could not reach anyway.
    fn view(&self, req: &Request<'_>) -> View {
        let mut wanted: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
        wanted.extend(self.path_dirs.iter().cloned());
        if let Ok(real) = std::fs::canonicalize(req.program) {
            // `{prefix}/bin/x` or `{prefix}/lib/node_modules/…/cli.js`: the prefix; else the
            // program file alone (never a folder such as /tmp that it merely sits in).
            wanted.push(install_prefix(&real));
            if real != req.program {
                // A link into a package (`{prefix}/bin/claude` → `…/node_modules/…`): the
                // install prefix the link sits in too.
                wanted.push(install_prefix(req.program));
            }
        }
        wanted.extend(self.config.extra_ro.iter().cloned());
        let forbidden: Vec<PathBuf> = self
            .config
            .hidden
            .iter()
            .chain([req.ws.parent().and_then(Path::parent).unwrap_or(req.ws).to_path_buf()].iter())
            .filter_map(|p| std::fs::canonicalize(p).ok().or_else(|| Some(p.clone())))
            .collect();
        // Parents first; a path inside a tree already bound is not bound again (bubblewrap
        // cannot make a mount point inside a read-only bind).
        wanted.sort_by_key(|p| p.components().count());
        let mut view = View::default();
        for p in wanted {
            let covered = view
                .ro
                .iter()
                .any(|r| p.starts_with(r) && std::fs::read_link(r).is_err());
            if covered || view.ro.contains(&p) || !p.exists() {
                continue;
            }
            let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            let clash = forbidden.iter().any(|f| canon.starts_with(f) || f.starts_with(&canon));
            if clash && !SYSTEM_DIRS.iter().any(|s| Path::new(s) == p) {
                continue;
            }
            if !reachable(&p, req.user) {
                continue;
            }
            view.ro.push(p);
        }
        view.hidden = forbidden
            .into_iter()
            .filter(|f| f.exists() && view.ro.iter().any(|r| f.starts_with(r)))
            .collect();
        view
    }
}

/// The nearest folder above `program` that has a `bin/` (not `/`), else `program` itself.
fn install_prefix(program: &Path) -> PathBuf {
    program
        .ancestors()
        .skip(1)
        .find(|a| a.join("bin").is_dir() && *a != Path::new("/"))
        .unwrap_or(program)
        .to_path_buf()
}

/// What the agent sees read-only, and what is masked inside it.
#[derive(Debug, Default, Clone)]
struct View {
    ro: Vec<PathBuf>,
    hidden: Vec<PathBuf>,
}

/// bubblewrap's arguments for `req` (up to the command).
fn bwrap_args(req: &Request<'_>, view: &View, confine: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&OsStr]| a.extend(xs.iter().map(|x| x.to_os_string()));
    let (uid, gid) = match req.user {
        Some(u) => (u.uid, u.gid),
        None => (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()),
    };
    let (uid, gid) = (uid.to_string(), gid.to_string());
    push(&[
        "--unshare-user".as_ref(),
        "--uid".as_ref(),
        uid.as_ref(),
        "--gid".as_ref(),
        gid.as_ref(),
        "--disable-userns".as_ref(),
        "--unshare-pid".as_ref(),
        "--unshare-ipc".as_ref(),
        "--unshare-uts".as_ref(),
        "--unshare-cgroup-try".as_ref(),
        "--hostname".as_ref(),
        "outpost-sandbox".as_ref(),
        "--die-with-parent".as_ref(),
    ]);
    if req.network != NetworkPolicy::Open {
        push(&["--unshare-net".as_ref()]);
    }
    // The private /proc, /dev and /tmp first: what the view binds below (an agent program copied
    // under /tmp, say) lands on top of them, not under them.
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
    ]);
    for p in &view.ro {
        match std::fs::read_link(p) {
            // /bin → usr/bin on merged-/usr systems: the same link inside.
            Ok(target) if p.parent() == Some(Path::new("/")) => {
                push(&["--symlink".as_ref(), target.as_os_str(), p.as_os_str()]);
            }
            _ => push(&["--ro-bind".as_ref(), p.as_os_str(), p.as_os_str()]),
        }
    }
    for h in &view.hidden {
        if h.is_dir() {
            push(&["--tmpfs".as_ref(), h.as_os_str()]);
        } else {
            push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), h.as_os_str()]);
        }
    }
    push(&[
        // outpost-confine, which applies Landlock inside (its copy may be under /tmp).
        "--ro-bind".as_ref(),
        confine.as_os_str(),
        confine.as_os_str(),
        "--bind".as_ref(),
        req.ws.as_os_str(),
        req.ws.as_os_str(),
        "--bind".as_ref(),
        req.home.as_os_str(),
        req.home.as_os_str(),
        "--chdir".as_ref(),
        req.ws.as_os_str(),
    ]);
    if let Some(e) = req.egress.filter(|_| req.network == NetworkPolicy::Allow) {
        push(&["--bind".as_ref(), e.socket.as_os_str(), SANDBOX_EGRESS_SOCKET.as_ref()]);
    }
    a
}

/// Whether `user` (this process when `None`) may read and enter `path`: every folder above it
/// searchable and the path itself readable, by its mode bits.
fn reachable(path: &Path, user: Option<AgentUser>) -> bool {
    let Some(user) = user else {
        return nix::unistd::access(path, nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK).is_ok();
    };
    let allowed = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.mode();
        if m.uid() == user.uid {
            mode & (bits << 6) == bits << 6
        } else if m.gid() == user.gid {
            mode & (bits << 3) == bits << 3
        } else {
            mode & bits == bits
        }
    };
    let mut ok = true;
    for anc in path.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(anc) {
            ok &= allowed(&m, 0o1);
        }
    }
    ok && std::fs::metadata(path).is_ok_and(|m| allowed(&m, if m.is_dir() { 0o5 } else { 0o4 }))
}

/// A copy of `program` that every agent uid may run, for a root worker whose own binaries sit
/// where agents cannot reach (a clone under `/root`): `$TMPDIR/outpost-sandbox-{uid}/`, a
/// root-owned 0755 folder, refreshed when size or mtime differ.
fn reachable_copy(program: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("outpost-sandbox-{}", nix::unistd::geteuid()));
    std::fs::create_dir_all(&dir)?;
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(std::io::Error::other(format!(
            "{} is not this user's folder",
            dir.display()
        )));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let name = program.file_name().unwrap_or_else(|| OsStr::new("outpost-confine"));
    let dest = dir.join(name);
    let src = std::fs::metadata(program)?;
    let same = std::fs::metadata(&dest).is_ok_and(|d| d.len() == src.len() && d.mtime() >= src.mtime());
    if !same {
        // Into a new name, then renamed: a running copy is never written over.
        let tmp = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
        std::fs::copy(program, &tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &dest)?;
    }
    Ok(dest)
}

/// `outpost-confine`: the configured one, beside this executable (or one folder up, as for
/// cargo's test binaries in `target/debug/deps/`), on PATH, or this executable itself when its
/// `main` serves `__confine` ([`serve_confine`]).
fn find_confine(configured: Option<&Path>, path: &OsStr) -> Option<(PathBuf, Vec<OsString>)> {
    if let Some(p) = configured {
        return identity::is_executable(p).then(|| (p.to_path_buf(), Vec::new()));
    }
    if let Some(p) = std::env::var_os("OUTPOST_CONFINE").map(PathBuf::from) {
        if identity::is_executable(&p) {
            return Some((p, Vec::new()));
        }
    }
    let exe = std::env::current_exe().ok();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join("outpost-confine");
            if identity::is_executable(&p) {
                return Some((p, Vec::new()));
            }
        }
    }
    if let Some(p) = identity::find_program(path, "outpost-confine") {
        return Some((p, Vec::new()));
    }
    if SERVES_CONFINE.load(std::sync::atomic::Ordering::Relaxed) {
        return exe.map(|e| (e, vec![OsString::from(CONFINE_ARG)]));
    }
    None
}

/// The first argument that makes a binary act as `outpost-confine` (see [`serve_confine`]).
pub const CONFINE_ARG: &str = "__confine";
static SERVES_CONFINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called first in the `main` of a binary that runs agents: with `__confine` as its first
/// argument the process becomes `outpost-confine` (and never returns); otherwise it notes that
/// this executable can serve as one, for installs that have no `outpost-confine` beside it.
pub fn serve_confine() {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == CONFINE_ARG) {
        args.next();
        std::process::exit(confine::main_with(args));
    }
    SERVES_CONFINE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `program args` for a probe, as `user` when given (through `confine`'s uid change, the way
/// runs start), with an empty environment. `None` when `user` is given but there is no confine.
fn probe_command(
    confine: Option<&(PathBuf, Vec<OsString>)>,
    user: Option<AgentUser>,
    program: &OsStr,
    args: Vec<OsString>,
) -> Option<Command> {
    let mut c = match (user, confine) {
        (Some(u), Some((path, pre))) => {
            let mut c = Command::new(path);
            c.args(pre).args(
                ConfineSpec {
                    ids: Some((u.uid, u.gid)),
                    program: program.to_os_string(),
                    args,
                    ..Default::default()
                }
                .to_args(),
            );
            c
        }
        (Some(_), None) => return None,
        (None, _) => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    c.stdin(Stdio::null()).env_clear();
    Some(c)
}

/// Landlock as the agents get it: full, basic, or `None` (recorded in `missing`).
fn probe_landlock(
    confine: &(PathBuf, Vec<OsString>),
    user: Option<AgentUser>,
    missing: &mut Vec<String>,
) -> Option<bool> {
    let try_level = |flag: &str| {
        let mut args = confine.1.clone();
        args.push(flag.into());
        let Some(mut c) = probe_command(Some(confine), user, confine.0.as_os_str(), args) else {
            return "no outpost-confine".to_owned();
        };
        match c.output() {
            Ok(o) => format!(
                "{} {}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            )
            .trim()
            .to_owned(),
            Err(e) => format!("cannot run {}: {e}", confine.0.display()),
        }
    };
    // Twice: a binary copied a moment ago can still be busy (ETXTBSY) in a forked child.
    let full = try_level("--probe");
    if full == confine::PROBE_FULL || try_level("--probe") == confine::PROBE_FULL {
        return Some(true);
    }
    match try_level("--probe-basic") {
        s if s == confine::PROBE_BASIC => {
            missing.push(format!(
                "Landlock below ABI 6 (no TCP rules, no signal scoping): {full}"
            ));
            Some(false)
        }
        other => {
            missing.push(format!("Landlock: {other}"));
            None
        }
    }
}

/// Whether bubblewrap makes every namespace here, as the agents' user.
fn probe_bwrap(
    bwrap: &Path,
    confine: Option<&(PathBuf, Vec<OsString>)>,
    user: Option<AgentUser>,
    missing: &mut Vec<String>,
) -> bool {
    let bargs = [
        "--unshare-user",
        "--disable-userns",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--",
        "/bin/sh",
        "-c",
        "exit 0",
    ];
    // A root worker without outpost-confine cannot drop to the agents' uid first.
    let Some(mut c) = probe_command(confine, user, bwrap.as_os_str(), bargs.map(OsString::from).to_vec()) else {
        return false;
    };
    match c.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let why = match err.trim() {
                "" => o.status.to_string(),
                e => e.to_owned(),
            };
            missing.push(format!("bwrap cannot make namespaces here: {why}"));
            false
        }
        Err(e) => {
            missing.push(format!("bwrap cannot run: {e}"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sandbox with the given support and nothing set up (no probe, no uids, no cgroup).
    fn with_support(config: SandboxConfig, bwrap: bool, landlock: Option<bool>) -> Sandbox {
        Sandbox {
            config,
            support: Support {
                root: false,
                confine: Some((PathBuf::from("/opt/outpost-confine"), Vec::new())),
                bwrap: bwrap.then(|| PathBuf::from("/usr/bin/bwrap")),
                landlock_full: landlock,
                missing: vec!["(test) what is missing".to_owned()],
            },
            uids: None,
            cgroups: None,
            firewall: Err("(test) no firewall".to_owned()),
            path_dirs: Vec::new(),
        }
    }

    fn plan(sb: &Sandbox, mode: Option<SandboxMode>, network: NetworkPolicy) -> Result<Plan, String> {
        plan_with(sb, mode, network, None)
    }

    fn plan_with(
        sb: &Sandbox,
        mode: Option<SandboxMode>,
        network: NetworkPolicy,
        egress: Option<&EgressPort>,
    ) -> Result<Plan, String> {
        let dir = std::env::temp_dir();
        sb.plan(&Request {
            mode,
            network,
            limits: RunLimits::default(),
            memory_mb: 256,
            user: None,
            ws: &dir.join("w/run_x/ws"),
            home: &dir.join("w/run_x/home"),
            program: Path::new("/bin/sh"),
            args: &["-c".to_owned(), "true".to_owned()],
            run_name: "run_x",
            egress,
        })
    }

    #[test]
    fn allow_routes_the_agent_to_its_proxy_only() {
        let sb = with_support(SandboxConfig::default(), true, Some(true));
        let err = plan(&sb, None, NetworkPolicy::Allow).expect_err("no proxy");
        assert!(err.contains("egress proxy"), "{err}");
        let port = EgressPort {
            port: 41234,
            socket: "/w/run_x/egress.sock".into(),
        };
        let strings = |p: &Plan| {
            p.args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        // Strict: an own network namespace, the socket bound in, the relay inside on the same port.
        let strict = plan_with(&sb, None, NetworkPolicy::Allow, Some(&port)).expect("strict");
        let args = strings(&strict);
        assert!(args.contains(&"--unshare-net".to_owned()), "{args:?}");
        assert!(
            args.windows(3)
                .any(|w| w == ["--bind", "/w/run_x/egress.sock", SANDBOX_EGRESS_SOCKET]),
            "{args:?}"
        );
        let relay = format!("127.0.0.1:41234={SANDBOX_EGRESS_SOCKET}");
        assert!(args.windows(2).any(|w| w == ["--relay", relay.as_str()]), "{args:?}");
        assert!(strict.record.layers.iter().any(|l| l.starts_with("network: allow")));
        // Standard: no namespace; Landlock lets TCP reach the proxy's port only.
        let std_plan =
            plan_with(&sb, Some(SandboxMode::Standard), NetworkPolicy::Allow, Some(&port)).expect("standard");
        let args = strings(&std_plan);
        assert!(args.windows(2).any(|w| w == ["--net", "only:41234"]), "{args:?}");
        assert!(!args.iter().any(|a| a == "--relay"));
        assert!(std_plan.record.not_enforced.iter().any(|l| l.contains("UDP")));
        // None: only the environment points at the proxy, and the record says so.
        let none = plan_with(&sb, Some(SandboxMode::None), NetworkPolicy::Allow, Some(&port)).expect("none");
        assert!(none.record.not_enforced.iter().any(|l| l.starts_with("network allow")));
    }

    #[test]
    fn open_is_refused_where_asked_unless_the_firewall_holds_for_the_run() {
        let config = SandboxConfig {
            refuse_open_unfirewalled: true,
            ..SandboxConfig::default()
        };
        let mut sb = with_support(config, false, Some(true));
        for mode in [None, Some(SandboxMode::None)] {
            let err = plan(&sb, mode, NetworkPolicy::Open).expect_err("no firewall");
            assert!(
                err.contains("metadata endpoints cannot be refused ((test) no firewall)") && err.contains("allow"),
                "{err}"
            );
        }
        plan(&sb, None, NetworkPolicy::None).expect("network none still runs");
        // A firewall, but no uid of the run's own to apply it to: still refused.
        sb.firewall = Ok(());
        let err = plan(&sb, None, NetworkPolicy::Open).expect_err("no own uid");
        assert!(err.contains("no uid of the run's own"), "{err}");
        let dir = std::env::temp_dir();
        let with_uid = sb
            .plan(&Request {
                mode: None,
                network: NetworkPolicy::Open,
                limits: RunLimits::default(),
                memory_mb: 256,
                user: Some(AgentUser {
                    uid: 200_001,
                    gid: 200_001,
                }),
                ws: &dir.join("w/run_x/ws"),
                home: &dir.join("w/run_x/home"),
                program: Path::new("/bin/sh"),
                args: &["-c".to_owned(), "true".to_owned()],
                run_name: "run_x",
                egress: None,
            })
            .expect("the firewall holds for the run's uid");
        assert!(
            with_uid.record.layers.iter().any(|l| l.contains("(iptables)")),
            "{:?}",
            with_uid.record
        );
        // Not asked: open runs with the gap recorded, as before.
        let lax = with_support(SandboxConfig::default(), false, Some(true));
        let plan = plan(&lax, None, NetworkPolicy::Open).expect("open");
        assert!(
            plan.record
                .not_enforced
                .iter()
                .any(|n| n.contains("metadata endpoints not refused")),
            "{:?}",
            plan.record
        );
    }

    #[test]
    fn modes_are_refused_where_they_cannot_hold() {
        let none_refused = with_support(
            SandboxConfig {
                refuse_none: true,
                ..SandboxConfig::default()
            },
            true,
            Some(true),
        );
        let err = plan(&none_refused, Some(SandboxMode::None), NetworkPolicy::Open).expect_err("refused");
        assert!(err.contains("--allow-unsandboxed"), "{err}");
        let bare = with_support(SandboxConfig::default(), false, None);
        assert_eq!(bare.strongest(), SandboxMode::None);
        let err = plan(&bare, None, NetworkPolicy::Open).expect_err("nothing to confine with");
        assert!(err.contains("sandbox = \"none\""), "{err}");
        let no_ns = with_support(SandboxConfig::default(), false, Some(true));
        let err = plan(&no_ns, Some(SandboxMode::Strict), NetworkPolicy::None).expect_err("no namespaces");
        assert!(err.contains("needs what this machine lacks"), "{err}");
        // A named none runs where it is not refused, recorded as such.
        let p = plan(&bare, Some(SandboxMode::None), NetworkPolicy::Open).expect("none");
        assert_eq!(p.program, Path::new("/bin/sh"));
        assert!(!p.record.not_enforced.is_empty());
    }

    #[test]
    fn standard_is_landlock_without_namespaces_and_strict_goes_through_bubblewrap() {
        let sb = with_support(SandboxConfig::default(), true, Some(true));
        let std_plan = plan(&sb, Some(SandboxMode::Standard), NetworkPolicy::None).expect("standard");
        let args: Vec<String> = std_plan.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(
            args.contains(&"--landlock".to_owned()) && !args.iter().any(|a| a.ends_with("bwrap")),
            "{args:?}"
        );
        // No network namespace: Landlock refuses all TCP.
        assert!(args.windows(2).any(|w| w == ["--net", "none"]), "{args:?}");
        assert!(!std_plan.pid_namespace);
        assert_eq!(std_plan.env.first().map(|(n, _)| n.as_str()), Some("TMPDIR"));
        let strict = plan(&sb, None, NetworkPolicy::None).expect("strict by default");
        assert_eq!(strict.record.mode, SandboxMode::Strict);
        let args: Vec<String> = strict.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let bwrap = args
            .iter()
            .position(|a| a == "/usr/bin/bwrap")
            .expect("bwrap in the chain");
        let inner = args.iter().rposition(|a| a == "--landlock").expect("landlock inside");
        assert!(bwrap < inner, "Landlock after bubblewrap's mounts: {args:?}");
        // The private /tmp is mounted before the view, so a program copied under /tmp stays seen.
        let tmpfs = args
            .windows(2)
            .position(|w| w == ["--tmpfs", "/tmp"])
            .expect("private /tmp");
        let usr = args
            .windows(2)
            .position(|w| w == ["--ro-bind", "/usr"])
            .expect("/usr bound");
        assert!(tmpfs < usr, "{args:?}");
        assert!(args.contains(&"--unshare-net".to_owned()) && args.contains(&"--ignore-term".to_owned()));
        assert!(strict.pid_namespace);
        assert!(strict.record.layers.iter().any(|l| l.starts_with("namespaces:")));
        let open = plan(&sb, None, NetworkPolicy::Open).expect("open");
        assert!(!open.args.iter().any(|a| a == "--unshare-net"));
        assert!(open
            .record
            .not_enforced
            .iter()
            .any(|n| n.contains("metadata endpoints not refused")));
    }

    #[test]
    fn the_probe_finds_what_this_machine_has() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let sb = Sandbox::new(SandboxConfig::default(), &path);
        eprintln!("{:?}", sb.support());
        // The machine this runs on (CI, a developer's) has Landlock (kernel >= 5.13) and
        // outpost-confine is built beside the tests (`cargo build --workspace --bins`, as
        // scripts/test does); bubblewrap where scripts/test installed it.
        assert!(
            sb.support().confine.is_some(),
            "no outpost-confine: run `cargo build -p outpost-confine` first ({:?})",
            sb.support()
        );
        assert!(sb.support().landlock_full.is_some(), "{:?}", sb.support());
        let want = if sb.support().bwrap.is_some() {
            SandboxMode::Strict
        } else {
            SandboxMode::Standard
        };
        assert_eq!(sb.strongest(), want);
    }

    #[test]
    fn another_workers_release_of_a_uid_cannot_weaken_the_probe() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let undisturbed = Sandbox::new(SandboxConfig::default(), &path).strongest();
        if !nix::unistd::geteuid().is_root() {
            // No uids to share without root: the probes run as this user.
            assert_eq!(undisturbed, Sandbox::new(SandboxConfig::default(), &path).strongest());
            return;
        }
        // "Another worker" holds the first agent uid and keeps releasing it (each release
        // SIGKILLs every process of that uid) while this worker probes.
        let other = UidPool::new(UidRange::DEFAULT);
        let held = other.acquire().expect("a uid for the other worker");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killer = {
            let (stop, uid) = (std::sync::Arc::clone(&stop), held.user().uid);
            std::thread::spawn(move || {
                // Counted: this test's own children running as that uid (the probes start as
                // children of this process); a process the uid's previous holder is still
                // ending is not this test's.
                let me = std::process::id().to_string();
                let mine = |entry: &std::fs::DirEntry| {
                    // `pid (comm) STATE PPID ...`
                    let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                    entry.metadata().is_ok_and(|m| m.uid() == uid)
                        && stat
                            .rsplit_once(')')
                            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                            == Some(me.as_str())
                };
                let mut probes_seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(procs) = std::fs::read_dir("/proc") {
                        probes_seen += procs.flatten().filter(|e| mine(e)).count();
                    }
                    uids::kill_uid(uid);
                }
                probes_seen
            })
        };
        let disturbed = Sandbox::new(SandboxConfig::default(), &path);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            killer.join().expect("killer"),
            0,
            "a probe ran as the other worker's uid"
        );
        assert_eq!(disturbed.strongest(), undisturbed, "{:?}", disturbed.support());
        drop(held);
    }
}
