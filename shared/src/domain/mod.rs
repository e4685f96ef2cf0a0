//! Domain types: identifiers, the run and its state machine, agents, validation.

pub mod agent;
pub mod ids;
pub mod run;
pub mod validation;

pub use agent::{AgentRegistry, AgentSpec, AgentsFileError};
pub use ids::{ApiKeyKind, IdError, RunId, TenantId, WorkerId};
pub use run::{Artifact, FailureReason, NewRun, Outcome, RepoSpec, Run, RunStatus, TerminalStatus, TransitionError};
pub use validation::{DispatchLimits, ValidationError};
