//! `outpost-confine` (crate `worker/confine`): the small program between the worker and an agent that applies the layers a
//! process can only apply to itself, then execs the next program. It runs once outside bubblewrap
//! (join the run's cgroup, set rlimits, drop to the run's uid/gid: steps that need the worker's
//! privileges) and once inside it (Landlock, whose rules name paths as the sandbox sees them and
//! which must come after bubblewrap's mounts, since a Landlock domain may not mount). Without
//! bubblewrap one call does all of it.
//!
//! Why a program and not `pre_exec`: the worker forbids `unsafe` code, `pre_exec` runs in a
//! forked copy of a multi-threaded worker (only async-signal-safe calls allowed) and it would
//! push every spawn off posix_spawn onto fork. An exec of this ~1 MB binary costs about 0.3 ms.
//!
//! The command line (built by [`ConfineSpec::to_args`], read by [`ConfineSpec::parse`]):
//! `outpost-confine [--cgroup FILE]… [--rlimit NAME=N]… [--ids UID:GID] [--landlock]
//! [--ro PATH]… [--rw PATH]… [--net all|none|except:P,P…|only:P,P…] [--scope]
//! [--relay 127.0.0.1:PORT=SOCKET] -- PROGRAM ARGS…`.
//!
//! `--relay` (a run with `network = "allow"` in its own network namespace): before Landlock,
//! bind `127.0.0.1:PORT` in this (the sandbox's) network namespace and start a child
//! (`outpost-confine --relay-serve SOCKET`, the listener as its stdin) that carries each
//! connection to the Unix socket SOCKET, the run's egress proxy in the worker, bind-mounted into
//! the sandbox. The relay is outside the agent's Landlock domain, so the agent can neither signal
//! nor trace it; it ends with the sandbox's PID namespace. One thread per direction per
//! connection, 64 KiB buffers: the agent's few HTTPS connections cost a few threads.
//! Every failure prints one line `outpost-confine: …` on stderr and exits [`CONFINE_FAILED`]:
//! nothing runs half-confined.

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Exit code of a confinement that could not be applied (the agent never started).
pub const CONFINE_FAILED: i32 = 125;
/// What the probe prints when every right asked for (ABI 6: files, TCP, scoping) is enforced.
pub const PROBE_FULL: &str = "landlock: full";
/// What it prints when only the file rights of ABI 1 are (a kernel from 5.13 to 6.11).
pub const PROBE_BASIC: &str = "landlock: basic";

/// What TCP the agent may use, through Landlock (UDP is never restricted by Landlock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRule {
    /// Not restricted.
    All,
    /// No TCP connect or bind at all.
    None,
    /// Every port but these (the worker's own), for connect and bind.
    Except(Vec<u16>),
    /// Connect to these ports only (the run's egress proxy), no bind.
    Only(Vec<u16>),
}

/// What one `outpost-confine` call applies, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfineSpec {
    /// Files (`cgroup.procs`) to write this process's pid into: joins the run's cgroups.
    pub cgroups: Vec<PathBuf>,
    /// rlimits (soft = hard) by name: `nproc`, `cpu`, `fsize`, `core`, `nofile`.
    pub rlimits: Vec<(String, u64)>,
    /// uid and gid to drop to, with no supplementary groups.
    pub ids: Option<(u32, u32)>,
    /// Exec with SIGTERM ignored (bubblewrap, which would die at the stop's SIGTERM and take the
    /// agent with it at once, skipping its grace period); otherwise SIGTERM is reset to its
    /// default, so the agent inside gets the polite stop.
    pub ignore_term: bool,
    /// The Landlock domain, if any.
    pub landlock: Option<LandlockSpec>,
    /// A relay from a TCP address in the sandbox to a Unix socket (the run's egress proxy),
    /// started before Landlock.
    pub relay: Option<(std::net::SocketAddr, PathBuf)>,
    /// The program to exec and its arguments.
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// A Landlock domain: read-only and read-write trees, TCP, and scoping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockSpec {
    /// Only the file rights of ABI 1 (and no TCP rules or scoping): for kernels before 6.12.
    pub basic: bool,
    pub ro: Vec<PathBuf>,
    pub rw: Vec<PathBuf>,
    pub net: NetRule,
    /// No signals to and no abstract Unix sockets of processes outside the domain (ABI 6).
    pub scope: bool,
}

/// Why a command line is not a confinement.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ParseError(String);

impl ConfineSpec {
    /// The command line of this spec (without the program name of `outpost-confine` itself).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        for c in &self.cgroups {
            out.push("--cgroup".into());
            out.push(c.into());
        }
        for (name, v) in &self.rlimits {
            out.push("--rlimit".into());
            out.push(format!("{name}={v}").into());
        }
        if let Some((u, g)) = self.ids {
            out.push("--ids".into());
            out.push(format!("{u}:{g}").into());
        }
        if self.ignore_term {
            out.push("--ignore-term".into());
        }
        if let Some(l) = &self.landlock {
            out.push(if l.basic { "--landlock-basic" } else { "--landlock" }.into());
            for p in &l.ro {
                out.push("--ro".into());
                out.push(p.into());
            }
            for p in &l.rw {
                out.push("--rw".into());
                out.push(p.into());
            }
            out.push("--net".into());
            out.push(match &l.net {
                NetRule::All => "all".into(),
                NetRule::None => "none".into(),
                NetRule::Except(ports) => format!("except:{}", port_list(ports)).into(),
                NetRule::Only(ports) => format!("only:{}", port_list(ports)).into(),
            });
            if l.scope {
                out.push("--scope".into());
            }
        }
        if let Some((addr, sock)) = &self.relay {
            let mut v = OsString::from(format!("{addr}="));
            v.push(sock);
            out.push("--relay".into());
            out.push(v);
        }
        out.push("--".into());
        out.push(self.program.clone());
        out.extend(self.args.iter().cloned());
        out
    }

    /// Reads a command line made by [`Self::to_args`].
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, ParseError> {
        let mut spec = Self::default();
        let mut args = args.into_iter();
        let mut landlock: Option<LandlockSpec> = None;
        let value = |args: &mut dyn Iterator<Item = OsString>, flag: &str| {
            args.next().ok_or_else(|| ParseError(format!("{flag} needs a value")))
        };
        loop {
            let Some(a) = args.next() else {
                return Err(ParseError("no program after --".into()));
            };
            let flag = a.to_str().unwrap_or_default().to_owned();
            match flag.as_str() {
                "--" => break,
                "--cgroup" => spec.cgroups.push(value(&mut args, &flag)?.into()),
                "--rlimit" => {
                    let v = value(&mut args, &flag)?;
                    let s = v.to_str().ok_or_else(|| ParseError("--rlimit is not UTF-8".into()))?;
                    let (name, n) = s
                        .split_once('=')
                        .ok_or_else(|| ParseError(format!("--rlimit {s:?} is not NAME=N")))?;
                    let n = n
                        .parse()
                        .map_err(|_| ParseError(format!("--rlimit {s:?}: not a number")))?;
                    resource(name)?;
                    spec.rlimits.push((name.to_owned(), n));
                }
                "--ids" => {
                    let v = value(&mut args, &flag)?;
                    let s = v.to_str().unwrap_or_default();
                    let parsed = s
                        .split_once(':')
                        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
                    spec.ids = Some(parsed.ok_or_else(|| ParseError(format!("--ids {s:?} is not UID:GID")))?);
                }
                "--ignore-term" => spec.ignore_term = true,
                "--relay" => {
                    let v = value(&mut args, &flag)?;
                    let (addr, sock) = v
                        .as_bytes()
                        .iter()
                        .position(|b| *b == b'=')
                        .map(|at| (&v.as_bytes()[..at], &v.as_bytes()[at + 1..]))
                        .ok_or_else(|| ParseError("--relay is not ADDR=SOCKET".into()))?;
                    let addr = std::str::from_utf8(addr)
                        .ok()
                        .and_then(|a| a.parse().ok())
                        .ok_or_else(|| ParseError("--relay: the address is not IP:PORT".into()))?;
                    spec.relay = Some((addr, PathBuf::from(OsStr::from_bytes(sock))));
                }
                "--landlock" | "--landlock-basic" => {
                    landlock = Some(LandlockSpec {
                        basic: flag == "--landlock-basic",
                        ro: Vec::new(),
                        rw: Vec::new(),
                        net: NetRule::All,
                        scope: false,
                    })
                }
                "--ro" | "--rw" | "--net" | "--scope" => {
                    let l = landlock
                        .as_mut()
                        .ok_or_else(|| ParseError(format!("{flag} needs --landlock first")))?;
                    match flag.as_str() {
                        "--ro" => l.ro.push(value(&mut args, &flag)?.into()),
                        "--rw" => l.rw.push(value(&mut args, &flag)?.into()),
                        "--net" => l.net = net_rule(&value(&mut args, &flag)?)?,
                        _ => l.scope = true,
                    }
                }
                _ => return Err(ParseError(format!("unknown argument {a:?}"))),
            }
        }
        spec.program = args.next().ok_or_else(|| ParseError("no program after --".into()))?;
        spec.args = args.collect();
        spec.landlock = landlock;
        Ok(spec)
    }

    /// Applies every layer to this process, then execs the program. Returns only on failure.
    pub fn apply_and_exec(&self) -> ParseError {
        if let Err(e) = self.apply() {
            return e;
        }
        let err = std::process::Command::new(&self.program).args(&self.args).exec();
        ParseError(format!("cannot run {:?}: {err}", self.program))
    }

    /// Applies every layer to this process (see the module docs for the order).
    pub fn apply(&self) -> Result<(), ParseError> {
        let pid = std::process::id().to_string();
        for file in &self.cgroups {
            std::fs::write(file, &pid)
                .map_err(|e| ParseError(format!("cannot join cgroup {}: {e}", file.display())))?;
        }
        for (name, n) in &self.rlimits {
            setrlimit(resource(name)?, *n, *n).map_err(|e| ParseError(format!("cannot set rlimit {name}: {e}")))?;
        }
        if let Some((uid, gid)) = self.ids {
            setgroups(&[]).map_err(|e| ParseError(format!("cannot drop supplementary groups: {e}")))?;
            let gid = Gid::from_raw(gid);
            let uid = Uid::from_raw(uid);
            setresgid(gid, gid, gid).map_err(|e| ParseError(format!("cannot set gid: {e}")))?;
            setresuid(uid, uid, uid).map_err(|e| ParseError(format!("cannot set uid: {e}")))?;
        }
        nix::sys::prctl::set_no_new_privs().map_err(|e| ParseError(format!("cannot set no_new_privs: {e}")))?;
        set_sigterm(self.ignore_term).map_err(|e| ParseError(format!("cannot set SIGTERM's disposition: {e}")))?;
        if let Some((addr, sock)) = &self.relay {
            start_relay(*addr, sock)?;
        }
        if let Some(l) = &self.landlock {
            restrict(l)?;
        }
        Ok(())
    }
}

/// SIGTERM ignored or at its default, as exec passes on.
#[allow(unsafe_code)]
fn set_sigterm(ignore: bool) -> nix::Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    let handler = if ignore { SigHandler::SigIgn } else { SigHandler::SigDfl };
    // SAFETY: SIG_IGN and SIG_DFL are not handler functions, so no code runs in signal context;
    // this process is single-threaded and about to exec.
    unsafe { signal(Signal::SIGTERM, handler) }.map(|_| ())
}

fn port_list(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

fn net_rule(v: &OsStr) -> Result<NetRule, ParseError> {
    let s = std::str::from_utf8(v.as_bytes()).unwrap_or_default();
    let ports = |list: &str| {
        list.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| ParseError(format!("--net: bad port {p:?}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    match s {
        "all" => Ok(NetRule::All),
        "none" => Ok(NetRule::None),
        _ => {
            if let Some(list) = s.strip_prefix("except:") {
                Ok(NetRule::Except(ports(list)?))
            } else if let Some(list) = s.strip_prefix("only:") {
                Ok(NetRule::Only(ports(list)?))
            } else {
                Err(ParseError(format!(
                    "--net {s:?}: all, none, except:PORTS or only:PORTS"
                )))
            }
        }
    }
}

/// Binds `addr` here and starts the relay child with the listener as its stdin (see the module
/// docs); returns once the listener is bound, so the agent's first connection finds it.
fn start_relay(addr: std::net::SocketAddr, sock: &std::path::Path) -> Result<(), ParseError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| ParseError(format!("relay: cannot listen on {addr}: {e}")))?;
    let me = std::env::current_exe().map_err(|e| ParseError(format!("relay: cannot find myself: {e}")))?;
    let mut cmd = std::process::Command::new(me);
    // A binary serving as outpost-confine through its first argument (`__confine`) keeps it.
    if let Some(first) = std::env::args_os().nth(1).filter(|a| a.as_bytes().starts_with(b"__")) {
        cmd.arg(first);
    }
    cmd.arg("--relay-serve")
        .arg(sock)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| ParseError(format!("relay: cannot start: {e}")))?;
    Ok(())
}

/// The relay child: accepts on the listener it got as stdin, carries each connection to `sock`.
/// Runs until its listener fails (the sandbox ends it with its PID namespace).
fn relay_serve(sock: &std::path::Path) -> i32 {
    use std::os::fd::AsFd;
    let listener = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpListener::from(fd),
        Err(_) => return CONFINE_FAILED,
    };
    for conn in listener.incoming() {
        let Ok(client) = conn else {
            continue;
        };
        let sock = sock.to_path_buf();
        std::thread::spawn(move || {
            let Ok(upstream) = std::os::unix::net::UnixStream::connect(&sock) else {
                return;
            };
            let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || {
                let mut client = client;
                let mut upstream = upstream;
                let _ = std::io::copy(&mut client, &mut upstream);
                let _ = upstream.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut u2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
        });
    }
    0
}

fn resource(name: &str) -> Result<Resource, ParseError> {
    Ok(match name {
        "nproc" => Resource::RLIMIT_NPROC,
        "cpu" => Resource::RLIMIT_CPU,
        "fsize" => Resource::RLIMIT_FSIZE,
        "core" => Resource::RLIMIT_CORE,
        "nofile" => Resource::RLIMIT_NOFILE,
        _ => return Err(ParseError(format!("unknown rlimit {name:?}"))),
    })
}

/// Enforces `l` on this process; anything short of a fully enforced domain is an error (the
/// worker asked for Landlock only after its probe found it).
fn restrict(l: &LandlockSpec) -> Result<(), ParseError> {
    let fail = |e: landlock::RulesetError| ParseError(format!("landlock: {e}"));
    let abi = if l.basic { ABI::V1 } else { ABI::V6 };
    if l.basic && (l.scope || l.net != NetRule::All) {
        return Err(ParseError(
            "landlock: TCP rules and scoping need more than ABI 1".into(),
        ));
    }
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?;
    if l.net != NetRule::All {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(fail)?;
    }
    if l.scope {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(fail)?;
    }
    let mut created = ruleset
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(&l.ro, AccessFs::from_read(abi)))
        .map_err(fail)?
        .add_rules(path_beneath_rules(&l.rw, AccessFs::from_all(abi)))
        .map_err(fail)?;
    if let NetRule::Except(blocked) = &l.net {
        // Landlock only allows: every port but the blocked ones gets a rule.
        for port in (1..=u16::MAX).filter(|p| !blocked.contains(p)) {
            created = created
                .add_rule(NetPort::new(port, AccessNet::BindTcp | AccessNet::ConnectTcp))
                .map_err(fail)?;
        }
    }
    if let NetRule::Only(allowed) = &l.net {
        for port in allowed {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(fail)?;
        }
    }
    let status = created.restrict_self().map_err(fail)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        other => Err(ParseError(format!(
            "landlock not fully enforced on this kernel ({other:?}); refusing to run unconfined"
        ))),
    }
}

/// The `main` of `outpost-confine`: `--probe` applies a Landlock domain to itself and prints
/// [`PROBE_FULL`] or [`PROBE_BASIC`] (the worker's startup check; a domain cannot be undone, so
/// the basic try runs in a child); anything else is a [`ConfineSpec`].
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "--relay-serve") {
        args.next();
        return match args.next() {
            Some(sock) => relay_serve(std::path::Path::new(&sock)),
            None => CONFINE_FAILED,
        };
    }
    if args.peek().is_some_and(|a| a == "--probe") || args.peek().is_some_and(|a| a == "--probe-basic") {
        let basic = args.peek().is_some_and(|a| a == "--probe-basic");
        let l = LandlockSpec {
            basic,
            ro: vec!["/".into()],
            rw: Vec::new(),
            net: if basic { NetRule::All } else { NetRule::None },
            scope: !basic,
        };
        return match restrict(&l) {
            Ok(()) => {
                println!("{}", if basic { PROBE_BASIC } else { PROBE_FULL });
                0
            }
            Err(e) => {
                println!("{e}");
                1
            }
        };
    }
    let err = match ConfineSpec::parse(args) {
        Ok(spec) => spec.apply_and_exec(),
        Err(e) => e,
    };
    eprintln!("outpost-confine: {err}");
    CONFINE_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips_through_its_command_line() {
        let spec = ConfineSpec {
            cgroups: vec!["/sys/fs/cgroup/x/cgroup.procs".into()],
            rlimits: vec![("nproc".into(), 64), ("fsize".into(), 1 << 20)],
            ids: Some((100_001, 100_001)),
            ignore_term: true,
            landlock: Some(LandlockSpec {
                basic: false,
                ro: vec!["/usr".into()],
                rw: vec!["/w/run/ws".into(), "/w/run/home".into()],
                net: NetRule::Except(vec![8080, 5432]),
                scope: true,
            }),
            relay: Some(("127.0.0.1:3128".parse().expect("addr"), "/tmp/p=q.sock".into())),
            program: "/usr/bin/env".into(),
            args: vec!["--".into(), "-x".into()],
        };
        let parsed = ConfineSpec::parse(spec.to_args()).expect("parse");
        assert_eq!(parsed, spec);
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let parse = |a: &[&str]| ConfineSpec::parse(a.iter().map(OsString::from)).map_err(|e| e.0);
        assert!(parse(&["--rlimit", "stack=1", "--", "x"])
            .expect_err("an error")
            .contains("unknown rlimit"));
        assert!(parse(&["--ro", "/usr", "--", "x"])
            .expect_err("an error")
            .contains("--landlock first"));
        assert!(parse(&["--ids", "a:b", "--", "x"])
            .expect_err("an error")
            .contains("UID:GID"));
        assert!(parse(&["--"]).expect_err("an error").contains("no program"));
        assert!(parse(&["--landlock", "--net", "except:99999", "--", "x"])
            .expect_err("an error")
            .contains("bad port"));
        assert!(parse(&["--relay", "localhost:1=/s", "--", "x"])
            .expect_err("an error")
            .contains("IP:PORT"));
        let only =
            ConfineSpec::parse(["--landlock", "--net", "only:3128", "--", "x"].map(OsString::from)).expect("only");
        assert_eq!(only.landlock.map(|l| l.net), Some(NetRule::Only(vec![3128])));
    }
}
