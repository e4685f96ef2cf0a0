//! A fake agent CLI for tests and benchmarks. It behaves like a real coding agent's command line:
//! takes a prompt (`--prompt TEXT` or `-p TEXT`, or stdin with `-`), prints a lot, writes files in
//! its working directory and under `$OUTPOST_ARTIFACTS_DIR`, sleeps, can ignore SIGTERM, and
//! exits with a chosen code. No network unless a directive of `egress.rs` asks for it.
//!
//! The prompt is a script of `;`- or newline-separated directives:
//!
//! | directive | effect |
//! | --- | --- |
//! | `print N` | N bytes of numbered lines on stdout (deterministic content) |
//! | `stderr TEXT` | TEXT and a newline on stderr |
//! | `say TEXT` | TEXT and a newline on stdout |
//! | `env NAME` | `NAME=<value>` or `NAME is unset` on stdout |
//! | `write PATH TEXT` | writes TEXT to PATH relative to the working directory |
//! | `binary PATH N` | writes N bytes `0, 1, …, 255, 0, …` (see `outpost_tests::binary_bytes`) to PATH |
//! | `artifact NAME TEXT` | writes TEXT to `$OUTPOST_ARTIFACTS_DIR/NAME` |
//! | `count FILE` | appends one line to FILE (an absolute path): counts executions |
//! | `sleep SECS` | sleeps (fractions allowed) |
//! | `sleep-first FILE SECS` | sleeps only while FILE has at most one line (the first attempt) |
//! | `ignore-term` | from now on SIGTERM is ignored |
//! | `child SECS` | starts a grandchild `sleep SECS` in the background and prints its pid |
//! | `exit N` | exits with code N (default 0 at the end of the script) |
//! | `try-…`, `fork-bomb`, `daemon`, `mem-hog`, `disk-fill` | the hostile reaches of `hostile.rs` |
//! | `http METHOD URL [NAME:VALUE]… [body=JSON]` | one plain HTTP/1.1 request (no proxy; `$NAME` expanded in the URL and headers): prints `HTTP <status>` and the body (`egress.rs`) |
//! | `tunnel HOST:PORT [PATH]` | `CONNECT` through `$HTTPS_PROXY`, then `GET PATH` inside: prints `TUNNEL HOST:PORT: refused (…)`, `open, HTTP <status>` or `no proxy` (`egress.rs`) |
//! | `tls-tunnel HOST:PORT SNI` | `CONNECT`, then a TLS handshake naming SNI: whether the proxy closed the tunnel first (`egress.rs`) |
//! | `proxy-get URL` | plain-HTTP proxying (`GET http://…`) to `$HTTP_PROXY`: prints the proxy's status (`egress.rs`) |
//! | `key-find PART…` | looks for the parts joined in its environment, command line and the files under `$HOME` and the working directory: prints `KEY found in <where>` or `KEY nowhere (…)` (`egress.rs`) |
//!
//! Anything else is echoed as `agent: <line>`, as a chatty agent would.

use std::io::Write;
use std::time::Duration;

#[path = "../egress.rs"]
mod egress;
#[path = "../hostile.rs"]
mod hostile;

fn main() {
    let prompt = match read_prompt() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fake-agent: {e}");
            std::process::exit(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-agent: cannot start runtime: {e}");
            std::process::exit(70);
        }
    };
    let code = rt.block_on(run_script(&prompt));
    std::process::exit(code);
}

fn read_prompt() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--prompt" || a == "-p" {
            let p = args.next().ok_or("--prompt needs a value")?;
            if p == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            return Ok(p);
        }
    }
    Err("usage: fake-agent --prompt SCRIPT".into())
}

async fn run_script(prompt: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    let mut term_guard = None;
    for raw in prompt.split([';', '\n']) {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let (cmd, rest) = line.split_once(' ').map_or((line, ""), |(c, r)| (c, r.trim()));
        let result: Result<(), String> = match cmd {
            "print" => rest
                .parse::<usize>()
                .map_err(|e| format!("print: {e}"))
                .and_then(|n| outpost_tests::write_fake_output(&mut out, n).map_err(|e| e.to_string())),
            "say" => writeln!(out, "{rest}").map_err(|e| e.to_string()),
            "stderr" => {
                let _ = out.flush();
                writeln!(std::io::stderr(), "{rest}").map_err(|e| e.to_string())
            }
            "env" => {
                let v = std::env::var(rest);
                match v {
                    Ok(v) => writeln!(out, "{rest}={v}"),
                    Err(_) => writeln!(out, "{rest} is unset"),
                }
                .map_err(|e| e.to_string())
            }
            "write" => write_file(std::path::Path::new("."), rest),
            "binary" => match rest.split_once(' ').map(|(p, n)| (p, n.trim().parse::<usize>())) {
                Some((path, Ok(n))) => std::path::Path::new(path)
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(path, outpost_tests::binary_bytes(n)))
                    .map_err(|e| format!("binary {path}: {e}")),
                _ => Err("usage: binary PATH N".into()),
            },
            "artifact" => match std::env::var("OUTPOST_ARTIFACTS_DIR") {
                Ok(dir) => write_file(std::path::Path::new(&dir), rest),
                Err(_) => Err("OUTPOST_ARTIFACTS_DIR is unset".into()),
            },
            // Writable by everyone: a retry's agent may run as another uid than the first's.
            "count" => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(rest)
                .and_then(|mut f| {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
                    writeln!(f, "{}", std::process::id())
                })
                .map_err(|e| format!("count {rest}: {e}")),
            "sleep" => match rest.parse::<f64>() {
                Ok(s) if s >= 0.0 => {
                    let _ = out.flush();
                    tokio::time::sleep(Duration::from_secs_f64(s)).await;
                    Ok(())
                }
                _ => Err(format!("sleep: bad seconds {rest:?}")),
            },
            "sleep-first" => {
                let (file, secs) = rest.rsplit_once(' ').unwrap_or((rest, ""));
                let lines = std::fs::read_to_string(file).map(|t| t.lines().count()).unwrap_or(0);
                match secs.parse::<f64>() {
                    Ok(s) if s >= 0.0 => {
                        if lines <= 1 {
                            let _ = out.flush();
                            tokio::time::sleep(Duration::from_secs_f64(s)).await;
                        }
                        Ok(())
                    }
                    _ => Err(format!("sleep-first: bad seconds {secs:?}")),
                }
            }
            "ignore-term" => {
                // Registering a handler replaces the default action (terminate) for SIGTERM.
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => {
                        term_guard = Some(s);
                        writeln!(out, "ignoring SIGTERM").map_err(|e| e.to_string())
                    }
                    Err(e) => Err(format!("ignore-term: {e}")),
                }
            }
            "child" => std::process::Command::new("sleep")
                .arg(rest)
                .spawn()
                .map_err(|e| format!("child: {e}"))
                .and_then(|c| writeln!(out, "child pid {}", c.id()).map_err(|e| e.to_string())),
            "exit" => {
                let _ = out.flush();
                return rest.parse().unwrap_or(1);
            }
            "disk-fill" => {
                // EFBIG instead of death by SIGXFSZ when the file-size cap is hit.
                let xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25)); // SIGXFSZ on Linux
                let _ = out.flush();
                let report = hostile::run(cmd, rest).unwrap_or_default();
                drop(xfsz);
                writeln!(out, "{report}").map_err(|e| e.to_string())
            }
            "http" | "tunnel" | "tls-tunnel" | "proxy-get" | "key-find" => {
                let _ = out.flush();
                let report = egress::run(cmd, rest).unwrap_or_default();
                writeln!(out, "{report}").map_err(|e| e.to_string())
            }
            c if c.starts_with("try-") || ["fork-bomb", "daemon", "mem-hog"].contains(&c) => {
                let _ = out.flush();
                let report = hostile::run(cmd, rest).unwrap_or_default();
                writeln!(out, "{report}").map_err(|e| e.to_string())
            }
            _ => writeln!(out, "agent: {line}").map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            let _ = out.flush();
            eprintln!("fake-agent: {e}");
            return 65;
        }
    }
    drop(term_guard);
    let _ = out.flush();
    0
}

fn write_file(base: &std::path::Path, rest: &str) -> Result<(), String> {
    let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err("write: needs a path".into());
    }
    let full = base.join(path);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("write {path}: {e}"))?;
    }
    std::fs::write(&full, format!("{text}\n")).map_err(|e| format!("write {path}: {e}"))
}
