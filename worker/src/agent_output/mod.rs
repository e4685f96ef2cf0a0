//! Reads an agent's own account of its run from its output, once it has exited: its final
//! answer, the error it reported (a CLI that exits 0 after its vendor refused the key still
//! failed), token usage and cost, and its session id. One small reader per agent CLI, chosen by
//! the registry entry's `output` ([`OutputReader`]).
//!
//! Input is the run's `output.log` spool as the agent wrote it (stdout and stderr interleaved on
//! one pipe, already scrubbed of secrets), before the worker's own notes are appended. Readers
//! are pure functions of that text and never fail: what they cannot read stays `None`.
//! Cost: one read of the spool, capped at [`MAX_READ`] (head and tail of a larger one).

use outpost_core::domain::{AgentReport, OutputReader, Usage};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

mod aider;
mod claude;
mod codex;
mod gemini;
mod grok;

/// Most bytes of the spool read: a larger spool is read as its first [`HEAD`] bytes and its last
/// `MAX_READ - HEAD` bytes (session ids come first, results and usage last).
pub const MAX_READ: u64 = 16 * 1024 * 1024;
const HEAD: u64 = 1024 * 1024;

/// The report of an agent whose output is `text`.
pub fn read_text(reader: OutputReader, text: &str) -> AgentReport {
    match reader {
        OutputReader::None => AgentReport::default(),
        OutputReader::Claude => claude::read(text),
        OutputReader::Codex => codex::read(text),
        OutputReader::Gemini => gemini::read(text),
        OutputReader::Aider => aider::read(text),
        OutputReader::Grok => grok::read(text),
    }
}

/// The report read from the spool at `path` (empty when it cannot be read).
pub fn read_spool(reader: OutputReader, path: &Path) -> AgentReport {
    if reader == OutputReader::None {
        return AgentReport::default();
    }
    match spool_text(path) {
        Ok(text) => read_text(reader, &text),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the output spool for the agent's report");
            AgentReport::default()
        }
    }
}

fn spool_text(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut bytes = Vec::new();
    if len <= MAX_READ {
        f.read_to_end(&mut bytes)?;
    } else {
        let mut head = vec![0; HEAD as usize];
        f.read_exact(&mut head)?;
        f.seek(SeekFrom::Start(len - (MAX_READ - HEAD)))?;
        bytes = head;
        bytes.push(b'\n');
        f.read_to_end(&mut bytes)?;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Lines of `text` that parse as JSON objects (JSONL event streams mixed with stderr text).
pub(crate) fn json_lines(text: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    text.lines().filter_map(|l| {
        let l = l.trim();
        if l.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.is_object())
        } else {
            None
        }
    })
}

/// A string field of `v`, trimmed, when it is not empty.
pub(crate) fn str_field(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Token counts summed over a run's model calls; a count no call reported stays unknown.
#[derive(Debug, Default)]
pub(crate) struct TokenSum {
    /// How many calls were added.
    pub calls: usize,
    input: Option<u64>,
    cached: Option<u64>,
    output: Option<u64>,
}

impl TokenSum {
    /// Adds one call's figures (saturating).
    pub fn add(&mut self, input: Option<u64>, cached: Option<u64>, output: Option<u64>) {
        fn plus(acc: &mut Option<u64>, v: Option<u64>) {
            if let Some(v) = v {
                *acc = Some(acc.unwrap_or(0).saturating_add(v));
            }
        }
        self.calls += 1;
        plus(&mut self.input, input);
        plus(&mut self.cached, cached);
        plus(&mut self.output, output);
    }

    /// Whether any call reported any figure.
    pub fn any(&self) -> bool {
        self.input.is_some() || self.cached.is_some() || self.output.is_some()
    }

    /// The sums as usage without a cost, from `source`.
    pub fn usage(self, source: &str) -> Usage {
        Usage {
            input_tokens: self.input,
            cached_input_tokens: self.cached,
            output_tokens: self.output,
            cost_usd: None,
            source: source.to_owned(),
        }
    }
}
