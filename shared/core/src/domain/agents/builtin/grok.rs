//! Grok CLI (`@vibe-kit/grok-cli` on npm; `grok --version` prints 1.0.1), headless prompt mode.
//!
//! Sources: `grok --help` of @vibe-kit/grok-cli 0.0.34 and its `dist/` code.
//! - `-p, --prompt <prompt>`: "process a single prompt and exit (headless mode)": every
//!   operation is auto-approved (`confirmationService.setSessionFlag("allOperations", true)`),
//!   no terminal UI; the conversation is printed as JSON lines when it ends.
//! - `GROK_API_KEY` ("Grok API key (or set GROK_API_KEY env var)"); `XAI_API_KEY` is not read
//!   (exit 1 `❌ Error: API key required`), so it is only an alias the worker maps onto
//!   `GROK_API_KEY`. Sent as `Authorization: Bearer` by the `openai` SDK.
//! - `GROK_BASE_URL` ("Grok API base URL (or set GROK_BASE_URL env var)"): the SDK posts to
//!   `{base}/chat/completions`, so xAI's is `https://api.x.ai/v1` (the default).
//! - The model is grok-cli's default (`grok-code-fast-1`), or `GROK_MODEL` / `--model`.
//!
//! Files: grok writes `.grok/settings.json` (`{"model": …}`) into the cwd at every start when it
//! is missing (`SettingsManager.loadProjectSettings`, path fixed to `process.cwd()`; `--directory`
//! only changes the cwd), so it is ignored as the tool's own file. `~/.grok/user-settings.json`
//! is only written with `--api-key`/`--base-url` (not used). No telemetry or update check (only
//! the stand-in was contacted, seen with strace).
//!
//! Failures: grok exits 0 after a 401 or a connection failure, its last message being `Sorry, I
//! encountered an error: Grok API error: …` (the reader makes that `agent_error`). Retries: the
//! `openai` SDK's default 2 (3 calls, about 3 s for a refused connection) with its timeout set to
//! 360 s by grok-cli. `idle_timeout_secs` is unset: headless grok prints nothing until it exits,
//! so silence says nothing; a vendor that never answers ends grok after 3 × 360 s, and the run's
//! timeout bounds the rest.
//!
//! Repository files still configure grok: `.env` (fills unset variables, e.g. `GROK_BASE_URL`
//! when no base URL is set), `.grok/settings.json` (model, MCP servers it starts) and
//! `.grok/GROK.md` (instructions).

use crate::domain::agents::{AgentSpec, KeyInjection, NetworkPolicy, OutputReader};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new("grok", &["grok", "--prompt={prompt}"]);
    a.description = "Grok CLI in headless prompt mode".into();
    a.key_env = Some("GROK_API_KEY".into());
    a.key_aliases = vec!["XAI_API_KEY".into()];
    a.base_url_env = Some("GROK_BASE_URL".into());
    // The key stays in the worker's proxy (network "allow": the vendor and nothing else).
    a.key_injection = Some(KeyInjection::bearer("https://api.x.ai/v1"));
    a.network = NetworkPolicy::Allow;
    a.ignore = vec![".grok/settings.json".into()];
    a.output = OutputReader::Grok;
    a.idle_timeout_secs = None;
    a.verified_with = Some("@vibe-kit/grok-cli 0.0.34 (0.0.34; `grok --version` 1.0.1)".into());
    a
}
