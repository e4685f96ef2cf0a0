//! OpenAI Codex CLI (`@openai/codex`), `codex exec` with JSONL events.
//!
//! Sources (`codex exec --help` of the verified release unless said otherwise):
//! - `exec`: non-interactive; `--json`: JSONL events on stdout (`thread.started`,
//!   `turn.completed` with `usage`, `turn.failed`/`error`, `item.completed` agent messages).
//! - `--skip-git-repo-check`: run outside a git repository.
//! - `--dangerously-bypass-approvals-and-sandbox`: no approvals and no Codex sandbox (its
//!   `workspace-write` sandbox cannot place helpers under the system temp dir, where workspaces
//!   live, and then every command fails while the run exits 0).
//! - `-c openai_base_url=…`: the base URL (`OPENAI_BASE_URL` is ignored by `exec`).
//! - `CODEX_API_KEY`: the key `exec` sends (with `OPENAI_API_KEY` alone it sends none).

use crate::domain::agents::{AgentSpec, OutputReader, BASE_URL_ARGS};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new(
        "codex",
        &[
            "codex",
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            BASE_URL_ARGS,
            "{prompt}",
        ],
    );
    a.description = "OpenAI Codex CLI, non-interactive exec".into();
    a.key_env = Some("CODEX_API_KEY".into());
    a.key_aliases = vec!["OPENAI_API_KEY".into()];
    a.base_url_args = vec!["-c".into(), "openai_base_url={base_url}".into()];
    a.output = OutputReader::Codex;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("@openai/codex 0.171.0 (0.171.x)".into());
    a
}
