//! The address-level half of `network = "open"`: when the worker is root and the machine has
//! `iptables` (nft or legacy), one chain `OUTPOST-AGENTS` in the filter table's OUTPUT rejects,
//! for packets of the agents' uid range, the cloud metadata and credentials endpoints and the
//! worker's own loopback ports. Installed once at start, so it costs a run nothing. Rules are
//! only ever added, each once (`-C` before `-A`): several workers on one host (each with its own
//! API port) share the chain without undoing each other's rules; a port of a worker that has
//! gone stays refused to agents until the chain is flushed by hand. Landlock cannot do this (it knows ports, not addresses); where the firewall
//! cannot be installed (not root, no iptables, no NET_ADMIN as on Fargate) the run's record
//! says so.

use std::process::{Command, Stdio};

/// The chain this worker owns.
pub const CHAIN: &str = "OUTPOST-AGENTS";

/// Addresses no agent may reach: EC2 instance metadata (IMDS), the ECS/Fargate task
/// credentials and metadata endpoint, and the EKS pod identity agent.
pub const METADATA_ADDRESSES: [&str; 3] = ["169.254.169.254", "169.254.170.2", "169.254.170.23"];

/// Installs the chain for agents with uids `first..=last`: rejects the metadata addresses and
/// TCP to `ports` on loopback. Returns why it could not.
pub fn install(first: u32, last: u32, ports: &[u16]) -> Result<(), String> {
    let ipt = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("no iptables on this machine")?;
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(ipt)
            .args(["-w", "5"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run iptables: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    // A fresh, empty chain, jumped to once from OUTPUT.
    if run(&["-N", CHAIN]).is_err() {
        run(&["-F", CHAIN])?;
    }
    if run(&["-C", "OUTPUT", "-j", CHAIN]).is_err() {
        run(&["-I", "OUTPUT", "1", "-j", CHAIN])?;
    }
    let owner = format!("{first}-{last}");
    for addr in METADATA_ADDRESSES {
        run(&[
            "-A",
            CHAIN,
            "-m",
            "owner",
            "--uid-owner",
            &owner,
            "-d",
            addr,
            "-j",
            "REJECT",
        ])?;
    }
    for port in ports {
        let port = port.to_string();
        run(&[
            "-A",
            CHAIN,
            "-o",
            "lo",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-m",
            "owner",
            "--uid-owner",
            &owner,
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ])?;
    }
    Ok(())
}
