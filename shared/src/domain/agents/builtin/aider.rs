//! Aider (`aider-chat` on PyPI) with DeepSeek, one message then exit.
//!
//! Sources (`aider --help` of the verified release unless said otherwise):
//! - `--message`: one message, then exit; `--yes-always`: confirm everything.
//! - `--no-pretty`, `--no-stream`: plain text output.
//! - `--no-git`: aider neither `git init`s an empty workspace nor stages or commits anything
//!   (the worker computes the change itself); `--no-gitignore`: no `.gitignore` edits.
//! - `--no-check-update`, `--analytics-disable`: no PyPI update check, no analytics.
//! - `AIDER_CHAT_HISTORY_FILE`, `AIDER_INPUT_HISTORY_FILE`: history files in HOME.
//! - `DEEPSEEK_API_KEY`, `DEEPSEEK_API_BASE`: litellm's DeepSeek provider.

use super::env;
use crate::domain::agents::{AgentSpec, OutputReader};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new(
        "aider",
        &[
            "aider",
            "--model",
            "deepseek/deepseek-chat",
            "--yes-always",
            "--no-pretty",
            "--no-stream",
            "--no-git",
            "--no-gitignore",
            "--no-check-update",
            "--analytics-disable",
            "--message",
            "{prompt}",
        ],
    );
    a.description = "Aider with DeepSeek, one message then exit".into();
    a.key_env = Some("DEEPSEEK_API_KEY".into());
    a.base_url_env = Some("DEEPSEEK_API_BASE".into());
    a.env = env(&[
        ("AIDER_CHAT_HISTORY_FILE", "{home}/.aider.chat.history.md"),
        ("AIDER_INPUT_HISTORY_FILE", "{home}/.aider.input.history"),
    ]);
    a.ignore = vec![".aider*".into()];
    a.output = OutputReader::Aider;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("aider-chat 0.86.2 (0.86.x)".into());
    a
}
