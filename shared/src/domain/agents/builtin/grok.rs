//! Grok CLI (`@vibe-kit/grok-cli`), headless prompt mode.
//!
//! Sources (`grok --help` of the verified release unless said otherwise):
//! - `--prompt`: headless, one prompt then exit.
//! - `GROK_API_KEY` (not `XAI_API_KEY`), `GROK_BASE_URL`.
//! - It writes `.grok/settings.json` into the workspace: ignored as the tool's own file.

use crate::domain::agents::{AgentSpec, OutputReader};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new("grok", &["grok", "--prompt", "{prompt}"]);
    a.description = "Grok CLI in headless prompt mode".into();
    a.key_env = Some("GROK_API_KEY".into());
    a.key_aliases = vec!["XAI_API_KEY".into()];
    a.base_url_env = Some("GROK_BASE_URL".into());
    a.ignore = vec![".grok/".into()];
    a.output = OutputReader::Grok;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("@vibe-kit/grok-cli 0.0.34 (0.0.34)".into());
    a
}
