//! Agents are data: a registry of built-in agent CLIs plus an operator TOML file that adds or
//! overrides entries.
//!
//! A command is an argv template. `{prompt}` is replaced by the task text as one argument (never
//! through a shell), `{run_id}` by the run's id. Nothing else is interpolated.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use utoipa::ToSchema;

/// One agent CLI Outpost can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentSpec {
    pub name: String,
    /// argv template; `{prompt}` and `{run_id}` are substituted.
    pub command: Vec<String>,
    /// Env var that carries the tenant's (or operator's) API key for this agent's vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Further env vars passed from the worker's environment to the agent, by name.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Timeout used when a dispatch gives none.
    #[serde(default = "default_timeout_secs")]
    pub default_timeout_secs: u32,
    /// vCPU units for a per-run task (ECS; 1024 = 1 vCPU); informational for the process executor.
    #[serde(default = "default_cpu")]
    pub cpu: u32,
    /// Memory in MiB for a per-run task (ECS).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Disabled agents are listed nowhere and refused at dispatch.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub description: String,
}

fn default_timeout_secs() -> u32 {
    1800
}
fn default_cpu() -> u32 {
    1024
}
fn default_memory_mb() -> u32 {
    2048
}
fn default_enabled() -> bool {
    true
}

impl AgentSpec {
    /// The concrete argv for one run.
    pub fn argv(&self, prompt: &str, run_id: &str) -> Vec<String> {
        self.command
            .iter()
            .map(|part| match part.as_str() {
                "{prompt}" => prompt.to_owned(),
                "{run_id}" => run_id.to_owned(),
                other => other.replace("{run_id}", run_id),
            })
            .collect()
    }

    /// Names of every env var the agent may receive from the worker's environment.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.key_env
            .iter()
            .map(String::as_str)
            .chain(self.pass_env.iter().map(String::as_str))
    }

    fn builtin(name: &str, command: &[&str], key_env: Option<&str>, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            key_env: key_env.map(str::to_owned),
            pass_env: Vec::new(),
            default_timeout_secs: default_timeout_secs(),
            cpu: default_cpu(),
            memory_mb: default_memory_mb(),
            enabled: true,
            description: description.to_owned(),
        }
    }
}

/// Why the operator's agents file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentsFileError {
    #[error("cannot read agents file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("agents file {path} is not valid TOML for agents: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("agent {name:?} in {path}: {problem}")]
    Invalid {
        path: String,
        name: String,
        problem: String,
    },
}

#[derive(Deserialize)]
struct AgentsFile {
    #[serde(default)]
    agents: BTreeMap<String, AgentEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    command: Option<Vec<String>>,
    key_env: Option<String>,
    pass_env: Option<Vec<String>>,
    default_timeout_secs: Option<u32>,
    cpu: Option<u32>,
    memory_mb: Option<u32>,
    enabled: Option<bool>,
    description: Option<String>,
}

/// The agents this deployment knows, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRegistry {
    agents: BTreeMap<String, AgentSpec>,
}

impl AgentRegistry {
    /// The built-in agents with their real non-interactive command lines. `shell` (runs the task
    /// as a `sh -c` script) is included only when `allow_shell` is set, as in embedded mode.
    pub fn builtin(allow_shell: bool) -> Self {
        let mut agents = BTreeMap::new();
        let mut add = |a: AgentSpec| {
            agents.insert(a.name.clone(), a);
        };
        add(AgentSpec::builtin(
            "claude",
            &[
                "claude",
                "-p",
                "{prompt}",
                "--output-format",
                "json",
                "--dangerously-skip-permissions",
            ],
            Some("ANTHROPIC_API_KEY"),
            "Anthropic Claude Code in print mode",
        ));
        add(AgentSpec::builtin(
            "codex",
            &["codex", "exec", "--full-auto", "--skip-git-repo-check", "{prompt}"],
            Some("OPENAI_API_KEY"),
            "OpenAI Codex CLI, non-interactive exec",
        ));
        add(AgentSpec::builtin(
            "gemini",
            &["gemini", "--yolo", "-p", "{prompt}"],
            Some("GEMINI_API_KEY"),
            "Google Gemini CLI in prompt mode",
        ));
        add(AgentSpec::builtin(
            "aider",
            &[
                "aider",
                "--model",
                "deepseek/deepseek-chat",
                "--yes-always",
                "--no-pretty",
                "--no-stream",
                "--no-auto-commits",
                "--message",
                "{prompt}",
            ],
            Some("DEEPSEEK_API_KEY"),
            "Aider with DeepSeek, one message then exit",
        ));
        add(AgentSpec::builtin(
            "grok",
            &["grok", "--prompt", "{prompt}"],
            Some("XAI_API_KEY"),
            "Grok CLI in headless prompt mode",
        ));
        let mut shell = AgentSpec::builtin(
            "shell",
            &["sh", "-c", "{prompt}"],
            None,
            "Runs the task text as a sh script (embedded mode)",
        );
        shell.enabled = allow_shell;
        add(shell);
        Self { agents }
    }

    /// Applies an operator TOML file: `[agents.NAME]` tables add agents or override fields of a
    /// built-in one.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), AgentsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentsFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.apply_toml(&text, &path.display().to_string())
    }

    /// Like [`apply_file`](Self::apply_file), from text; `origin` names it in errors.
    pub fn apply_toml(&mut self, text: &str, origin: &str) -> Result<(), AgentsFileError> {
        let file: AgentsFile = toml::from_str(text).map_err(|source| AgentsFileError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        for (name, entry) in file.agents {
            let invalid = |problem: &str| AgentsFileError::Invalid {
                path: origin.to_owned(),
                name: name.clone(),
                problem: problem.to_owned(),
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid("agent names are 1..=64 chars of letters, digits, '-' and '_'"));
            }
            let mut spec = match (self.agents.get(&name), entry.command.clone()) {
                (Some(existing), _) => existing.clone(),
                (None, Some(command)) => AgentSpec::builtin(&name, &[], None, "").with_command(command),
                (None, None) => return Err(invalid("a new agent needs a command")),
            };
            if let Some(c) = entry.command {
                spec.command = c;
            }
            if spec.command.is_empty() || spec.command[0].is_empty() {
                return Err(invalid("command must name a program"));
            }
            if let Some(k) = entry.key_env {
                spec.key_env = Some(k);
            }
            if let Some(p) = entry.pass_env {
                spec.pass_env = p;
            }
            if let Some(t) = entry.default_timeout_secs {
                spec.default_timeout_secs = t;
            }
            if let Some(c) = entry.cpu {
                spec.cpu = c;
            }
            if let Some(m) = entry.memory_mb {
                spec.memory_mb = m;
            }
            if let Some(e) = entry.enabled {
                spec.enabled = e;
            }
            if let Some(d) = entry.description {
                spec.description = d;
            }
            self.agents.insert(name, spec);
        }
        Ok(())
    }

    /// Adds or replaces one agent (tests and embedders).
    pub fn insert(&mut self, spec: AgentSpec) {
        self.agents.insert(spec.name.clone(), spec);
    }

    /// An enabled agent by name.
    pub fn get(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.get(name).filter(|a| a.enabled)
    }

    /// Enabled agents, sorted by name.
    pub fn enabled(&self) -> impl Iterator<Item = &AgentSpec> {
        self.agents.values().filter(|a| a.enabled)
    }

    /// Names of enabled agents, for error messages.
    pub fn enabled_names(&self) -> Vec<&str> {
        self.enabled().map(|a| a.name.as_str()).collect()
    }
}

impl AgentSpec {
    fn with_command(mut self, command: Vec<String>) -> Self {
        self.command = command;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_real_command_lines_and_key_envs() {
        let reg = AgentRegistry::builtin(false);
        let claude = reg.get("claude").expect("claude");
        assert_eq!(
            claude.argv("fix it", "run_x")[..3],
            ["claude".to_owned(), "-p".into(), "fix it".into()]
        );
        assert_eq!(claude.key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
        assert_eq!(
            reg.get("codex").and_then(|a| a.key_env.as_deref()),
            Some("OPENAI_API_KEY")
        );
        assert_eq!(
            reg.get("gemini").and_then(|a| a.key_env.as_deref()),
            Some("GEMINI_API_KEY")
        );
        assert_eq!(
            reg.get("aider").and_then(|a| a.key_env.as_deref()),
            Some("DEEPSEEK_API_KEY")
        );
        assert_eq!(reg.get("grok").and_then(|a| a.key_env.as_deref()), Some("XAI_API_KEY"));
        assert!(reg.get("shell").is_none(), "shell is off unless allowed");
        assert!(AgentRegistry::builtin(true).get("shell").is_some());
    }

    #[test]
    fn prompt_is_one_argument_never_split() {
        let reg = AgentRegistry::builtin(true);
        let argv = reg.get("shell").expect("shell").argv("echo a; echo 'b c'", "run_1");
        assert_eq!(argv, ["sh", "-c", "echo a; echo 'b c'"]);
    }

    #[test]
    fn operator_file_adds_and_overrides() {
        let mut reg = AgentRegistry::builtin(false);
        reg.apply_toml(
            r#"
            [agents.fake]
            command = ["/bin/fake", "--prompt", "{prompt}", "--run", "{run_id}"]
            key_env = "FAKE_KEY"
            pass_env = ["FAKE_MODE"]
            default_timeout_secs = 60

            [agents.claude]
            command = ["/opt/claude", "-p", "{prompt}"]

            [agents.grok]
            enabled = false
            "#,
            "agents.toml",
        )
        .expect("valid file");
        let fake = reg.get("fake").expect("fake added");
        assert_eq!(
            fake.argv("p", "run_9"),
            ["/bin/fake", "--prompt", "p", "--run", "run_9"]
        );
        assert_eq!(fake.env_names().collect::<Vec<_>>(), ["FAKE_KEY", "FAKE_MODE"]);
        let claude = reg.get("claude").expect("claude kept");
        assert_eq!(claude.command[0], "/opt/claude");
        assert_eq!(
            claude.key_env.as_deref(),
            Some("ANTHROPIC_API_KEY"),
            "unset fields keep the built-in value"
        );
        assert!(reg.get("grok").is_none());
    }

    #[test]
    fn bad_operator_files_are_clear_errors() {
        let mut reg = AgentRegistry::builtin(false);
        let err = reg
            .apply_toml("[agents.new]\nkey_env = \"X\"\n", "a.toml")
            .expect_err("no command");
        assert!(err.to_string().contains("needs a command"), "{err}");
        let err = reg
            .apply_toml("[agents.x]\ncomand = [\"a\"]\n", "a.toml")
            .expect_err("typo");
        assert!(err.to_string().contains("a.toml"), "{err}");
        let err = reg
            .apply_toml("[agents.\"a b\"]\ncommand = [\"a\"]\n", "a.toml")
            .expect_err("bad name");
        assert!(err.to_string().contains("agent names"), "{err}");
    }
}
