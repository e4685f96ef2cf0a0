//! OpenAI Codex CLI (`@openai/codex`), `codex exec` with JSONL events.
//!
//! Sources: `codex exec --help` of the verified release for the flags; for the `-c` config keys
//! the release's config schema (`codex-rs/core/config.schema.json`) and provider definition
//! (`codex-rs/model-provider-info`), every key accepted by the release under `--strict-config`.
//! - `exec`: non-interactive. `--json`: "Print events to stdout as JSONL" (`thread.started`,
//!   `turn.completed` with `usage`, `turn.failed`/`error`, `item.completed` agent messages).
//! - `--strict-config`: "Error out when config.toml contains fields that are not recognized by
//!   this version" — it checks the `-c` overrides too, so a key a later release drops or renames
//!   fails the run at once (`Error loading config.toml: unknown configuration field …`) instead
//!   of being ignored.
//! - `--skip-git-repo-check`: "Allow running Codex outside a Git repository" (empty workspaces).
//! - `--dangerously-bypass-approvals-and-sandbox`: "Skip all confirmation prompts and execute
//!   commands without sandboxing … Intended solely for running in environments that are
//!   externally sandboxed" (Outpost is the sandbox; codex's own `workspace-write` sandbox cannot
//!   place its helpers under the system temp dir, and then every command fails while the run
//!   exits 0).
//! - `-c model_provider="outpost"` with `model_providers.outpost.*`: a provider of our own,
//!   because the built-in `openai` one cannot be changed (`Built-in providers cannot be
//!   overridden`) and so cannot bound its retries. `name = "OpenAI"` (codex's own checks for an
//!   OpenAI provider go by that name); `env_key = "CODEX_API_KEY"`: the variable the key is
//!   read from, sent as `Authorization: Bearer`; `request_max_retries`/`stream_max_retries`
//!   (defaults 4 and 5) and `stream_idle_timeout_ms` (default 300000) bound a failing vendor;
//!   `supports_websockets` defaults to false, so codex skips the WebSocket attempts (five, with
//!   backoff) its built-in provider makes before HTTPS. No `base_url`: the provider's default,
//!   `https://api.openai.com/v1`.
//! - `{base_url_args}` → `-c model_providers.outpost.base_url={base_url}`: the base URL as codex
//!   takes it, to which it appends `/responses` (OpenAI's is `https://api.openai.com/v1`, so a
//!   gateway's URL ends in `/v1`). Left unquoted on purpose: a value that is not TOML is taken
//!   as a literal string, and a URL never is TOML, while quoting would break on `"` or `\`.
//!   (`OPENAI_BASE_URL` is ignored; `openai_base_url` only applies to the built-in provider.)
//! - `features.unbounded_connection_retries=false`: without it codex retries a refused or
//!   unreachable vendor forever (`Reconnecting... waiting for network`); with it and the
//!   retries above a dead vendor fails the run in about 3 s. (`codex features list`.)
//! - `features.shell_snapshot=false`: no `HOME/.codex/shell_snapshots/` (they held
//!   `declare -x OPENAI_API_KEY=…`). `shell_environment_policy.exclude`: the key is not in the
//!   environment of the commands the model runs.
//! - `analytics.enabled=false`, `feedback.enabled=false`, `check_for_update_on_startup=false`,
//!   `history.persistence="none"`: no analytics, feedback or update checks, no `history.jsonl`.
//! - `--` before the prompt: a task that starts with `-` is the prompt, not an option.
//!
//! Codex writes nothing into the workspace (empty dir or git clone) and nothing outside HOME;
//! its state (`HOME/.codex`: sessions, sqlite state, bundled skills) stays in HOME. Codex
//! reports no cost. It sends the workspace's git `origin` URL (credentials stripped) and HEAD
//! commit to the vendor in its `x-codex-turn-metadata` header.

use crate::domain::agents::{AgentSpec, KeyInjection, NetworkPolicy, OutputReader, BASE_URL_ARGS};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new(
        "codex",
        &[
            "codex",
            "exec",
            "--json",
            "--strict-config",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "-c",
            "model_provider=\"outpost\"",
            "-c",
            "model_providers.outpost.name=\"OpenAI\"",
            "-c",
            "model_providers.outpost.env_key=\"CODEX_API_KEY\"",
            "-c",
            "model_providers.outpost.request_max_retries=2",
            "-c",
            "model_providers.outpost.stream_max_retries=2",
            "-c",
            "model_providers.outpost.stream_idle_timeout_ms=120000",
            "-c",
            "features.unbounded_connection_retries=false",
            "-c",
            "features.shell_snapshot=false",
            "-c",
            "shell_environment_policy.exclude=[\"CODEX_API_KEY\",\"OPENAI_API_KEY\"]",
            "-c",
            "analytics.enabled=false",
            "-c",
            "feedback.enabled=false",
            "-c",
            "check_for_update_on_startup=false",
            "-c",
            "history.persistence=\"none\"",
            BASE_URL_ARGS,
            "--",
            "{prompt}",
        ],
    );
    a.description = "OpenAI Codex CLI, non-interactive exec".into();
    // Must match `model_providers.outpost.env_key` above.
    a.key_env = Some("CODEX_API_KEY".into());
    a.key_aliases = vec!["OPENAI_API_KEY".into()];
    a.base_url_args = vec!["-c".into(), "model_providers.outpost.base_url={base_url}".into()];
    // The key stays in the worker's proxy (network "allow": the vendor and nothing else).
    a.key_injection = Some(KeyInjection::bearer("https://api.openai.com/v1"));
    a.network = NetworkPolicy::Allow;
    a.output = OutputReader::Codex;
    // Codex prints nothing while a vendor that accepted the request never answers.
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("@openai/codex 0.171.0 (0.171.x)".into());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_goes_to_our_provider_before_the_prompt() {
        let mut a = spec();
        let plain = a.argv("-fix it", "run_1");
        assert_eq!(plain[plain.len() - 2..], ["--".to_owned(), "-fix it".into()]);
        assert!(!plain.iter().any(|x| x.contains("base_url")));
        a.base_url = Some("http://127.0.0.1:9/v1".into());
        let argv = a.argv("-fix it", "run_1");
        let at = argv.iter().position(|x| x == "--").expect("--");
        assert_eq!(
            argv[at - 2..],
            [
                "-c".to_owned(),
                "model_providers.outpost.base_url=http://127.0.0.1:9/v1".into(),
                "--".into(),
                "-fix it".into()
            ]
        );
        assert!(
            argv.contains(&format!(
                "model_providers.outpost.env_key=\"{}\"",
                a.key_env.as_deref().unwrap_or("")
            )),
            "the provider reads the key from key_env"
        );
    }
}
