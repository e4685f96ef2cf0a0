//! Google Gemini CLI (`@google/gemini-cli`), prompt mode with JSON output.
//!
//! Sources (`gemini --help` of the verified release unless said otherwise):
//! - `-p`/`--prompt`: non-interactive; `--yolo`: accept every tool call.
//! - `-o stream-json`: JSON events per line (final `result` with `stats`).
//! - `GEMINI_CLI_TRUST_WORKSPACE=true`: without it the folder is "not trusted", `--yolo` is
//!   overridden and every run exits 55.
//! - `GEMINI_API_KEY`, `GOOGLE_GEMINI_BASE_URL`; with a base URL set, auth must be selected as
//!   `gemini-api-key` in `~/.gemini/settings.json` (else exit 41).

use super::env;
use crate::domain::agents::{AgentSpec, OutputReader};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new(
        "gemini",
        &["gemini", "--yolo", "--output-format", "stream-json", "--prompt", "{prompt}"],
    );
    a.description = "Google Gemini CLI in prompt mode".into();
    a.key_env = Some("GEMINI_API_KEY".into());
    a.base_url_env = Some("GOOGLE_GEMINI_BASE_URL".into());
    a.env = env(&[("GEMINI_CLI_TRUST_WORKSPACE", "true")]);
    a.home_files.insert(
        ".gemini/settings.json".into(),
        r#"{"security":{"auth":{"selectedType":"gemini-api-key"}},"privacy":{"usageStatisticsEnabled":false}}"#.into(),
    );
    a.output = OutputReader::Gemini;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("@google/gemini-cli 0.61.0 (0.61.x)".into());
    a
}
