//! The fake agent's hostile directives: each tries one reach of the sandbox's threat model
//! (docs/SECURITY.md) and prints one line `REACH <what>: blocked (<why>)` or
//! `REACH <what>: REACHED (<what it got>)`. The sandbox tests run them while another tenant's
//! run is live and assert that no line says REACHED.
//!
//! | directive | tries to |
//! | --- | --- |
//! | `try-read PATH` | read a file (another run's workspace, a secret, the database) |
//! | `try-list PATH` | list a folder |
//! | `try-find PATH NAME` | see NAME (another run's folder) in the folder PATH |
//! | `try-write PATH` | create a file outside the run's tree |
//! | `try-environ` | read another process's `/proc/PID/environ` |
//! | `try-cmdline WORD…` | find the words joined by `-` in another process's `/proc/PID/cmdline` (a prompt; given in parts so this agent's own command line does not hold it) |
//! | `try-signal PID` | SIGKILL a process of another run (its host pid) |
//! | `try-connect HOST:PORT` | open a TCP connection |
//! | `fork-bomb N` | start N processes at once |
//! | `daemon MARKER` | leave `sleep MARKER` running in a new session after the agent exits (prints `daemon …: started`; the test checks it is gone after the run) |
//! | `mem-hog MB` | allocate and touch MB MiB |
//! | `disk-fill MB` | write MB MiB into the workspace (SIGXFSZ ignored, so EFBIG is seen) |

use std::io::{Read, Write};
use std::time::Duration;

fn line(what: &str, reached: Result<String, String>) -> String {
    match reached {
        Ok(got) => format!("REACH {what}: REACHED ({got})"),
        Err(why) => format!("REACH {what}: blocked ({why})"),
    }
}

/// Runs one hostile directive; `None` when `cmd` is not one.
pub fn run(cmd: &str, rest: &str) -> Option<String> {
    Some(match cmd {
        "try-read" => line(
            &format!("read {rest}"),
            std::fs::File::open(rest)
                .and_then(|mut f| {
                    let mut buf = Vec::new();
                    f.read_to_end(&mut buf).map(|_| buf.len())
                })
                .map(|n| format!("{n} bytes"))
                .map_err(|e| e.to_string()),
        ),
        "try-list" => line(
            &format!("list {rest}"),
            std::fs::read_dir(rest)
                .map(|rd| format!("{} entries", rd.count()))
                .map_err(|e| e.to_string()),
        ),
        "try-find" => {
            let (dir, name) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            line(
                &format!("find {name} in {dir}"),
                std::fs::read_dir(dir).map_err(|e| e.to_string()).and_then(|rd| {
                    let names: Vec<String> = rd
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    if names.iter().any(|n| n == name) {
                        Ok(format!("listed among {} entries", names.len()))
                    } else {
                        Err(format!("not among the {} entries it sees", names.len()))
                    }
                }),
            )
        }
        "try-write" => line(
            &format!("write {rest}"),
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(rest)
                .and_then(|mut f| f.write_all(b"hostile"))
                .map(|()| "written".to_owned())
                .map_err(|e| e.to_string()),
        ),
        "try-environ" => line("other processes' environ", other_procs("environ", |_| true)),
        "try-cmdline" => {
            let needle = rest.split_whitespace().collect::<Vec<_>>().join("-");
            line(
                &format!("a prompt in other processes' cmdline ({needle})"),
                other_procs("cmdline", |bytes| {
                    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                }),
            )
        }
        "try-signal" => line(
            &format!("SIGKILL to pid {rest}"),
            std::process::Command::new("kill")
                .args(["-9", rest])
                .output()
                .map_err(|e| e.to_string())
                .and_then(|o| {
                    if o.status.success() {
                        Ok("signalled".to_owned())
                    } else {
                        Err(String::from_utf8_lossy(&o.stderr).trim().to_owned())
                    }
                }),
        ),
        "try-connect" => line(&format!("connect {rest}"), connect(rest)),
        "fork-bomb" => line(&format!("fork bomb of {rest}"), fork_bomb(rest.parse().unwrap_or(1000))),
        "daemon" => {
            // `setsid` leaves the agent's process group and session: only the PID namespace (or
            // the run's uid or cgroup) can still end it.
            let started = std::process::Command::new("setsid")
                .args(["-f", "sleep", rest])
                .status();
            match started {
                Ok(s) if s.success() => format!("daemon sleep {rest}: started"),
                Ok(s) => format!("daemon sleep {rest}: setsid {s}"),
                Err(e) => format!("daemon sleep {rest}: {e}"),
            }
        }
        "mem-hog" => {
            let mb: usize = rest.parse().unwrap_or(1024);
            let mut v: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mb {
                // Touched pages, not just reserved ones.
                v.push(vec![1u8; 1 << 20]);
            }
            line(&format!("memory hog of {mb} MiB"), Ok(format!("{} MiB held", v.len())))
        }
        "disk-fill" => {
            let mb: usize = rest.parse().unwrap_or(1024);
            line(&format!("disk fill of {mb} MiB"), disk_fill(mb))
        }
        _ => return None,
    })
}

/// Reads `/proc/PID/{file}` of every process but this one; REACHED when one is readable and
/// `wanted` holds for it.
fn other_procs(file: &str, wanted: impl Fn(&[u8]) -> bool) -> Result<String, String> {
    let me = std::process::id().to_string();
    let rd = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    let mut seen = 0;
    let mut denied = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        match std::fs::read(e.path().join(file)) {
            Ok(bytes) if !bytes.is_empty() && wanted(&bytes) => {
                return Ok(format!("pid {name}: {} bytes", bytes.len()));
            }
            Ok(_) => seen += 1,
            Err(_) => denied += 1,
        }
    }
    Err(format!("{seen} other processes visible without it, {denied} denied"))
}

fn connect(addr: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2))
        .map(|_| "connected".to_owned())
        .map_err(|e| e.to_string())
}

fn fork_bomb(n: usize) -> Result<String, String> {
    let mut children = Vec::new();
    let mut err = None;
    for _ in 0..n {
        match std::process::Command::new("sleep").arg("30").spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    let started = children.len();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    match err {
        None => Ok(format!("{started} processes")),
        Some(e) => Err(format!("stopped after {started} processes: {e}")),
    }
}

fn disk_fill(mb: usize) -> Result<String, String> {
    let chunk = vec![7u8; 1 << 20];
    let mut f = std::fs::File::create("fill.bin").map_err(|e| e.to_string())?;
    for i in 0..mb {
        if let Err(e) = f.write_all(&chunk) {
            return Err(format!("stopped after {i} MiB: {e}"));
        }
    }
    f.sync_all().map_err(|e| e.to_string())?;
    Ok(format!("{mb} MiB written"))
}
