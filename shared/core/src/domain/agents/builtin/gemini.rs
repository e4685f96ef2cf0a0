//! Google Gemini CLI (`@google/gemini-cli`), headless prompt mode with JSONL events.
//!
//! Verified with 0.61.0 against the loopback stand-in (`tests/vendor-standin/gemini.py`), run as
//! the worker runs it (clean env, empty private HOME, stdin `/dev/null`, uid 65534).
//!
//! Sources: `gemini --help` of 0.61.0 for flags; the settings reference
//! (<https://geminicli.com/docs/reference/configuration>, and `SETTINGS_SCHEMA` in the installed
//! bundle) for `settings.json`; the headless reference (<https://geminicli.com/docs/cli/headless>)
//! for the output.
//! - `--prompt=<text>`: "Run in non-interactive (headless) mode with the given prompt", as one
//!   `--opt=value` argument: as two arguments a prompt that starts with `-` (e.g. a Markdown
//!   list) is taken as options by the CLI's parser and the run fails with exit 1 ("Not enough
//!   arguments following: prompt").
//! - `--skip-trust`: "Trust the current workspace for this session" (sets
//!   `GEMINI_CLI_TRUST_WORKSPACE=true`); untrusted, `--yolo` is overridden and every run exits 55.
//! - `--yolo`: "Automatically accept all actions".
//! - `--output-format stream-json`: JSONL events (`init` with `session_id`, `message`, `tool_use`,
//!   `tool_result`, `error`, `result` with `status` and `stats`) as the run goes, so the live log
//!   shows progress; read by `OutputReader::Gemini`.
//! - `GEMINI_API_KEY`: the key, sent as `x-goog-api-key` (a key stored as `GOOGLE_API_KEY`, which
//!   Google's SDKs also read, is passed as `GEMINI_API_KEY`). `GOOGLE_GEMINI_BASE_URL`: the API base
//!   URL; with it set, auth must be selected in settings (`security.auth.selectedType` =
//!   `gemini-api-key`), else the auth validator exits 41.
//! - `TMPDIR={home}`: the CLI writes `gemini-client-error-*.json` reports to the system temp dir
//!   (`os.tmpdir()`) on every API error; this keeps them in the run's HOME.
//! - `settings.json`: `privacy.usageStatisticsEnabled: false` (else it resolves Google's usage
//!   log host on every run), `telemetry.enabled: false`, `general.enableAutoUpdate` and
//!   `general.enableAutoUpdateNotification: false`; `general.retryFetchErrors: false` and
//!   `general.maxAttempts: 3` bound retries: with the defaults a refused connection is retried
//!   for 5 minutes (the model router's 5 attempts, then 10 of the chat model), now it fails in
//!   ~2 s; 429/5xx answers of the chat model are still tried 3 times.
//!
//! State lives in `HOME/.gemini` (`projects.json`, `history/`, `tmp/<project>/chats/*.jsonl`);
//! nothing is written into the workspace, so `ignore` stays empty.

use super::env;
use crate::domain::agents::{AgentSpec, KeyInjection, NetworkPolicy, OutputReader};

/// `~/.gemini/settings.json`: API-key auth, no usage statistics, telemetry or updates, bounded
/// retries (see the module docs).
const SETTINGS: &str = r#"{
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": {
    "enableAutoUpdate": false,
    "enableAutoUpdateNotification": false,
    "retryFetchErrors": false,
    "maxAttempts": 3
  }
}
"#;

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new(
        "gemini",
        &[
            "gemini",
            "--skip-trust",
            "--yolo",
            "--output-format",
            "stream-json",
            "--prompt={prompt}",
        ],
    );
    a.description = "Google Gemini CLI in headless prompt mode".into();
    a.key_env = Some("GEMINI_API_KEY".into());
    a.key_aliases = vec!["GOOGLE_API_KEY".into()];
    a.base_url_env = Some("GOOGLE_GEMINI_BASE_URL".into());
    // The key stays in the worker's proxy (network "allow": the vendor and nothing else).
    a.key_injection = Some(KeyInjection::new(
        "https://generativelanguage.googleapis.com",
        "x-goog-api-key",
        "",
    ));
    a.network = NetworkPolicy::Allow;
    a.env = env(&[("TMPDIR", "{home}")]);
    a.home_files.insert(".gemini/settings.json".into(), SETTINGS.into());
    a.output = OutputReader::Gemini;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("@google/gemini-cli 0.61.0 (0.61.x)".into());
    a
}
