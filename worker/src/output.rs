//! The output pump: reads the agent's combined stdout+stderr pipe, scrubs secrets, writes the
//! spool file `output.log` and appends batches to the live log in the ArtifactStore so clients
//! can tail it while the run goes on.

use crate::executor::group::Activity;
use crate::scrub::{Scrubber, Secrets};
use outpost_core::domain::run_files::OUTPUT_LOG;
use outpost_core::ports::{ArtifactStore, RunKey};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{Instant, Sleep};

/// A live-log batch is appended when it reaches this size...
pub const FLUSH_BYTES: usize = 64 * 1024;
/// ...or when its oldest byte is this old.
pub const FLUSH_AFTER: Duration = Duration::from_millis(500);

const READ_BUF: usize = 64 * 1024;
/// First size of the read buffer.
const FIRST_READ_BUF: usize = 4 * 1024;

/// Where the live log goes; `None` disables live appends (tests, or the store is failing).
pub struct LiveLog {
    pub store: Arc<dyn ArtifactStore>,
    pub key: RunKey,
}

/// What the pump did.
#[derive(Debug, Default)]
pub struct PumpReport {
    /// Bytes written to the spool (after scrubbing).
    pub bytes: u64,
    /// Secrets replaced.
    pub redactions: u64,
    /// A read or spool write failed (the message; the log is incomplete).
    pub error: Option<String>,
}

/// Makes the read end of the agent's pipe readable by tokio.
pub fn async_reader(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // The read end is O_RDONLY; O_NONBLOCK is the only status flag it needs.
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(std::io::Error::from)?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// Pumps `reader` to EOF into `spool` (and the live log). Cancel-safe in the sense that dropping it
/// leaves the spool holding everything pumped so far.
/// Every read touches `activity` (the idle timeout's clock).
pub async fn pump(
    mut reader: pipe::Receiver,
    spool: &mut File,
    secrets: Secrets,
    live: Option<LiveLog>,
    activity: &Activity,
) -> PumpReport {
    let mut report = PumpReport::default();
    let mut scrubber = Scrubber::new(secrets);
    // Starts small (most agents' output arrives in small writes, and a quiet agent's run should
    // not pay for zeroing 64 KiB) and grows to READ_BUF once a read fills it.
    let mut buf = vec![0u8; FIRST_READ_BUF];
    let mut scrubbed = Vec::new();
    let mut live = live.map(|l| LiveState {
        log: l,
        pending: Vec::new(),
        offset: 0,
        deadline: None,
    });
    loop {
        let deadline = live.as_mut().and_then(|l| l.deadline.as_mut());
        let read = match deadline {
            Some(d) => {
                tokio::select! {
                    r = reader.read(&mut buf) => Some(r),
                    () = d.as_mut() => None,
                }
            }
            None => Some(reader.read(&mut buf).await),
        };
        let n = match read {
            None => {
                if let Some(l) = live.as_mut() {
                    if !l.flush().await {
                        live = None;
                    }
                }
                continue;
            }
            Some(Ok(0)) => break,
            Some(Ok(n)) => {
                activity.touch();
                n
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Some(Err(e)) => {
                report.error = Some(format!("reading agent output: {e}"));
                break;
            }
        };
        let grow = n == buf.len() && buf.len() < READ_BUF;
        if activity.over_output_limit() {
            // Past the cap: keep the pipe drained (so the agent sees no EPIPE before it is
            // stopped) and keep nothing.
            continue;
        }
        let clean = scrubber.push(&buf[..n], &mut scrubbed);
        let room = activity.output_limit().saturating_sub(report.bytes);
        let clean = if clean.len() as u64 > room {
            activity.exceed_output_limit();
            &clean[..usize::try_from(room).unwrap_or(clean.len())]
        } else {
            clean
        };
        if let Err(e) = spool.write_all(clean) {
            report.error = Some(format!("writing output.log: {e}"));
            break;
        }
        report.bytes += clean.len() as u64;
        if let Some(l) = live.as_mut() {
            l.pending.extend_from_slice(clean);
            if l.pending.len() >= FLUSH_BYTES {
                if !l.flush().await {
                    live = None;
                }
            } else if l.deadline.is_none() && !l.pending.is_empty() {
                l.deadline = Some(Box::pin(tokio::time::sleep_until(Instant::now() + FLUSH_AFTER)));
            }
        }
        if grow {
            buf.resize(READ_BUF, 0);
        }
    }
    let tail = scrubber.finish();
    if !tail.is_empty() {
        if let Err(e) = spool.write_all(&tail) {
            report.error.get_or_insert(format!("writing output.log: {e}"));
        } else {
            report.bytes += tail.len() as u64;
        }
    }
    // No final live append: the whole spool is stored as output.log right after this.
    report.redactions = scrubber.replaced();
    report
}

struct LiveState {
    log: LiveLog,
    pending: Vec<u8>,
    offset: u64,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl LiveState {
    /// Appends the pending batch. `false` when the store refused it: live appends stop for this
    /// run (the final output.log upload still has everything; only live tailing suffers).
    async fn flush(&mut self) -> bool {
        self.deadline = None;
        if self.pending.is_empty() {
            return true;
        }
        let res = self
            .log
            .store
            .append_log(&self.log.key, OUTPUT_LOG, self.offset, &self.pending)
            .await;
        match res {
            Ok(()) => {
                self.offset += self.pending.len() as u64;
                self.pending.clear();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "appending to live output.log failed; live tailing stops for this run");
                false
            }
        }
    }
}
