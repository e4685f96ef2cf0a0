//! `outpost`: the command line of Outpost.
//!
//! `outpost dev` runs the whole deployment in one process (API + worker pool, over SQLite and a
//! local folder by default, or over AWS with `--backend aws`); `outpost worker` adds a worker
//! process; `outpost keys` manages API keys; `outpost aws provision` creates AWS resources; every
//! other command is a client of a running API (`--url`/`OUTPOST_URL`,
//! `--api-key`/`OUTPOST_API_KEY`), `outpost mcp` too: it serves the MCP tools on stdio.
//!
//! Errors print one line on stderr and exit non-zero: 1 for failures, 2 for usage errors.

mod client_cmds;
mod dev;
mod format;
mod local;
mod mcp;

use clap::{Args, Parser, Subcommand};
use outpost_config::settings::{AgentArgs, BackendArgs, Context, ServeArgs, SettingsArgs, WorkerArgs};
use outpost_config::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "outpost",
    version,
    about = "Run AI coding agents on a queue-driven worker fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a client command finds the API.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the Outpost API.
    #[arg(long, env = "OUTPOST_URL", default_value = "http://127.0.0.1:7331", global = true)]
    pub url: String,
    /// API key (`op_live_…` / `op_test_…`).
    #[arg(long = "api-key", env = "OUTPOST_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of human tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The settings of the commands that open a backend or run a worker (the same flags,
/// variables, settings file and defaults as `outpost-worker` and `ingest-lambda`).
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub agents: AgentArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run API + worker pool over SQLite and a local folder, in one process.
    Dev {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Run a worker process over an embedded data dir (beside `outpost dev --slots 0`, or more).
    Worker {
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Manage API keys (in the data dir, or on AWS with `--backend aws`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Set, list and delete your tenant's own secrets (BYOK keys handed to your agents).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// AWS deployment helpers.
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
    /// Queue a task for an agent.
    Dispatch {
        /// Agent name (see `outpost fleet`).
        #[arg(long)]
        agent: String,
        /// Git repository to clone into the workspace.
        #[arg(long)]
        repo: Option<String>,
        /// Branch of the repository.
        #[arg(long)]
        branch: Option<String>,
        /// Timeout in seconds (10..=86400; the agent's default when absent).
        #[arg(long)]
        timeout: Option<u64>,
        /// Stop the agent after this many seconds without output (1..=86400, not above
        /// --timeout; the agent's default when absent). The run ends timed_out, reason idle.
        #[arg(long = "idle-timeout", value_name = "SECS")]
        idle_timeout: Option<u64>,
        /// Wait for the run to end, streaming its log; the exit code mirrors the run.
        #[arg(long)]
        wait: bool,
        /// The task prompt; `-` reads it from stdin.
        task: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List, inspect, tail and cancel runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Push a succeeded run's changes to a new branch of its repository (default `outpost/RUN_ID`).
    Promote {
        /// The run.
        id: String,
        /// Branch to create and push.
        #[arg(long)]
        branch: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Agents, queue depth, workers and slots.
    Fleet {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Serve Outpost's MCP tools on stdio (`claude mcp add outpost -- outpost mcp`).
    Mcp {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create an API key for a tenant (created if new); the key is the last line of stdout.
    Create {
        #[arg(long)]
        tenant: String,
        /// Make an `op_test_` key instead of `op_live_`.
        #[arg(long)]
        test: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Subcommand, Debug)]
enum SecretsCommand {
    /// Set a secret; the value is read from stdin (so it stays out of shell history).
    Set {
        /// An environment variable name, e.g. ANTHROPIC_API_KEY.
        name: String,
    },
    /// List secret names and when each was set (never values).
    List,
    /// Delete a secret.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
enum AwsCommand {
    /// Create a deployment's table, queues and bucket through the AWS SDK (for emulators such as
    /// moto, or a quick trial; production uses infra/), then print the variables that select it.
    Provision {
        /// Prefix of the resource names (`{name}-runs`, `{name}-tasks`, `{name}-artifacts`).
        #[arg(long, default_value = "outpost")]
        name: String,
        /// Deliveries of a task before SQS moves it to the dead-letter queue.
        #[arg(long, default_value_t = 5)]
        max_receive_count: u32,
    },
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// Newest runs first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One run: its outcome, the agent's answer, error, usage and session, and its artifacts.
    Get { id: String },
    /// A run's output; `-f` follows it until the run ends.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a queued or running run.
    Cancel { id: String },
    /// Download an artifact to stdout or a file.
    Artifact {
        id: String,
        name: String,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // `outpost __confine …` is the agents' sandbox helper when no outpost-confine is installed.
    outpost_worker::sandbox::serve_confine();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s.replace('\n', " ")
}

/// The process settings from the command's flags (and their variables, and the settings file).
fn settings(local: LocalArgs, serve: ServeArgs) -> anyhow::Result<Settings> {
    let args = SettingsArgs {
        backend: local.backend,
        agents: local.agents,
        serve,
        worker: local.worker,
        // Remote executors are `outpost-worker`'s (AWS builds): `outpost worker` starts none.
        ..SettingsArgs::default()
    };
    Ok(Settings::resolve(&args, Context::default())?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev { serve, local } => dev::run_dev(&settings(local, serve)?).await,
        Command::Worker { local } => dev::run_worker(&settings(local, ServeArgs::default())?).await,
        Command::Keys {
            command: KeysCommand::Create { tenant, test, backend },
        } => {
            let local = LocalArgs {
                backend,
                agents: AgentArgs::default(),
                worker: WorkerArgs::default(),
            };
            local::create_key(&settings(local, ServeArgs::default())?, &tenant, test).await
        }
        Command::Secrets { command, api } => match command {
            SecretsCommand::Set { name } => client_cmds::secret_set(&api, &name).await,
            SecretsCommand::List => client_cmds::secret_list(&api).await,
            SecretsCommand::Delete { name } => client_cmds::secret_delete(&api, &name).await,
        },
        Command::Aws {
            command: AwsCommand::Provision {
                name,
                max_receive_count,
            },
        } => local::aws_provision(&name, max_receive_count).await,
        Command::Dispatch {
            agent,
            repo,
            branch,
            timeout,
            idle_timeout,
            wait,
            task,
            api,
        } => {
            let limits = client_cmds::Timeouts {
                timeout_secs: timeout,
                idle_timeout_secs: idle_timeout,
            };
            client_cmds::dispatch(&api, agent, repo, branch, limits, wait, task).await
        }
        Command::Runs { command, api } => match command {
            RunsCommand::List {
                status,
                agent,
                limit,
                cursor,
            } => client_cmds::list(&api, status, agent, limit, cursor).await,
            RunsCommand::Get { id } => client_cmds::get(&api, &id).await,
            RunsCommand::Logs { id, follow } => client_cmds::logs(&api, &id, follow).await,
            RunsCommand::Cancel { id } => client_cmds::cancel(&api, &id).await,
            RunsCommand::Artifact { id, name, output } => client_cmds::artifact(&api, &id, &name, output).await,
        },
        Command::Promote { id, branch, api } => client_cmds::promote(&api, &id, branch).await,
        Command::Fleet { api } => client_cmds::fleet(&api).await,
        Command::Mcp { api } => mcp::run(&api).await,
    }
}
