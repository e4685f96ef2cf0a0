//! Aider (`aider-chat` on PyPI) with DeepSeek through litellm, one message then exit.
//!
//! Sources: `aider --help` of aider-chat 0.86.2 unless said otherwise.
//! - `--model deepseek/deepseek-chat`: "Specify the model to use for the main chat"; aider's
//!   `resources/model-settings.yml` gives it the `diff` edit format (SEARCH/REPLACE blocks).
//! - `--message`: "Specify a single message to send the LLM, process reply then exit";
//!   `--yes-always`: "Always say yes to every confirmation" (shell commands the model suggests
//!   still need an explicit yes, so they are never run: `confirm_ask(explicit_yes_required)`).
//! - `--no-pretty`: "Enable/disable pretty, colorized output"; `--no-stream`: "Enable/disable
//!   streaming responses" — a whole reply carries the vendor's `usage`, so the `Tokens:` line
//!   holds the vendor's counts (streamed, aider estimates them itself).
//! - `--no-git` (only without a repository, `without_repo_args`): "Enable/disable looking for a
//!   git repo": no `git init` of an empty workspace. On a clone aider uses git, so it sees the
//!   repository's files and map; it then stages files, writes `user.name`/`user.email` into
//!   `.git/config` and keeps `.aider.tags.cache.v4/` in the workspace — none of it is the change
//!   (the worker diffs against the base commit; `.aider*` is ignored). `--no-gitignore`:
//!   "Enable/disable adding .aider* to .gitignore"; `--no-auto-commits`, `--no-dirty-commits`:
//!   aider commits nothing.
//! - `--no-check-update`: "Check for new aider versions on launch" (a PyPI request, seen with
//!   strace without it); `--no-show-release-notes`: no first-run offer to open the release notes
//!   in a browser; `--analytics-disable`: "Permanently disable analytics" (state in
//!   `HOME/.aider/`); `--disable-playwright`: "Never prompt for or attempt to install Playwright
//!   for web scraping" (URLs in a prompt are still fetched, without a browser).
//! - env `AIDER_CHAT_HISTORY_FILE`, `AIDER_INPUT_HISTORY_FILE` ("[env var: …]" of
//!   `--chat-history-file`, `--input-history-file`): the history files in HOME, not the cwd.
//! - env `LITELLM_LOCAL_MODEL_COST_MAP=True` (litellm 1.81 `get_model_cost_map.py`): litellm
//!   uses its bundled price table instead of fetching it from GitHub at import.
//! - env `COLUMNS=4000` (rich's `Console` width when not a terminal): lines are not wrapped at 80
//!   columns, so errors and `Tokens:` lines stay whole for the reader.
//! - `DEEPSEEK_API_KEY`, `DEEPSEEK_API_BASE`: litellm's DeepSeek provider
//!   (`llms/deepseek/chat/transformation.py`; `{base}/chat/completions`, default
//!   `https://api.deepseek.com/beta`). Sent as `Authorization: Bearer`.
//!
//! Failures: aider exits 0 after an authentication or connection failure (the reader turns its
//! `litellm.…Error` lines into `agent_error`). Retries: aider's own backoff (0.25 s doubling while
//! ≤ 60 s, aider `models.RETRY_TIMEOUT`): 9 calls in about 64 s, then it gives up; each call
//! waits up to aider's 600 s request timeout, and a non-streamed reply prints nothing while it is
//! generated, so `idle_timeout_secs` (300 s) is what stops a vendor that never answers.
//!
//! Repository files still configure aider: `.env` (loaded over the environment),
//! `.aider.conf.yml` and `.aider.model.settings.yml` in the workspace.

use super::env;
use crate::domain::agents::{AgentSpec, KeyInjection, NetworkPolicy, OutputReader, WITHOUT_REPO_ARGS};

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
            WITHOUT_REPO_ARGS,
            "--no-gitignore",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-check-update",
            "--no-show-release-notes",
            "--analytics-disable",
            "--disable-playwright",
            "--message={prompt}",
        ],
    );
    a.without_repo_args = vec!["--no-git".into()];
    a.description = "Aider with DeepSeek, one message then exit".into();
    a.key_env = Some("DEEPSEEK_API_KEY".into());
    a.base_url_env = Some("DEEPSEEK_API_BASE".into());
    // The key stays in the worker's proxy (network "allow": the vendor and nothing else).
    a.key_injection = Some(KeyInjection::bearer("https://api.deepseek.com/beta"));
    a.network = NetworkPolicy::Allow;
    a.env = env(&[
        ("AIDER_CHAT_HISTORY_FILE", "{home}/.aider.chat.history.md"),
        ("AIDER_INPUT_HISTORY_FILE", "{home}/.aider.input.history"),
        ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ("COLUMNS", "4000"),
    ]);
    // On a clone aider keeps its repository map cache (`.aider.tags.cache.v4/`) in the
    // workspace; never the agent's change.
    a.ignore = vec![".aider*".into()];
    a.output = OutputReader::Aider;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("aider-chat 0.86.2 (0.86.x; litellm 1.81.10)".into());
    a
}
