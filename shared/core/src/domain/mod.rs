//! Domain types: identifiers, the run and its state machine, the claim rule ([`claim`]), agents,
//! validation, and the artifact contract ([`run_files`]).

pub mod agents;
pub mod claim;
pub mod ids;
pub mod remote;
pub mod report;
pub mod run;
pub mod run_files;
pub mod validation;

pub use agents::{
    AgentRegistry, AgentSpec, AgentsFileError, HostRule, KeyInjection, NetworkPolicy, OutputReader, RunLimits,
    SandboxMode,
};
pub use claim::{decide_claim, ClaimDecision};
pub use ids::{ApiKeyKind, IdError, RunId, TenantId, WorkerId};
pub use remote::{EntrypointExit, ExecutorKind, RemoteTask};
pub use report::{AgentReport, Usage};
pub use run::{Artifact, FailureReason, NewRun, Outcome, RepoSpec, Run, RunStatus, TerminalStatus, TransitionError};
pub use run_files::{EgressRecord, MeteredUsage, SandboxRecord, Summary};
pub use validation::{DispatchLimits, ValidationError};
