//! The run spec: the agent entrypoint's one input, written by the dispatching worker to
//! `specs/{tenant}/{run}/{attempt}.json` in the artifacts bucket and handed over as a presigned
//! GET URL (ECS: the container override [`SPEC_URL_ENV`]; SSM: `--spec-url` in the script).
//!
//! What it holds is what the execution may have, and nothing more: the run record (its prompt,
//! repository and limits), the agent entry, two presigned POST policies (writes under
//! `runs/{tenant}/{run}/` and `live/{tenant}/{run}/` only, until the run's deadline; see
//! `outpost_aws::s3::post`) and where the tenant's keys come from. No AWS credential, no other
//! tenant's data. The spec URL itself expires [`SPEC_URL_TTL`] after the start; who reads the
//! URL from CloudTrail's record of `RunTask` in that window can read the spec (the prompt and the
//! run's own upload policy), never a key.

use outpost_aws::s3::post::PresignedPost;
use outpost_core::domain::{AgentSpec, Run};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The variable carrying the spec URL into an ECS task.
pub const SPEC_URL_ENV: &str = "OUTPOST_RUN_SPEC_URL";
/// Tenant keys reach an ECS task as `OUTPOST_SECRET_{NAME}`, put there by ECS itself from
/// Parameter Store (the task definition's `secrets`), never by an override value.
pub const SECRET_ENV_PREFIX: &str = "OUTPOST_SECRET_";
/// How long the presigned GET of a spec lives (the entrypoint reads it once, at start).
pub const SPEC_URL_TTL: Duration = Duration::from_secs(15 * 60);
/// The spec format this worker writes and reads.
pub const SPEC_VERSION: u32 = 1;

/// One attempt of one run, for the entrypoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub version: u32,
    pub run: Run,
    /// The agent entry as the dispatching worker resolved it (its `executor` says which remote
    /// executor runs it; the entrypoint runs it as a local process).
    pub agent: AgentSpec,
    /// Uploads under `runs/{tenant}/{run}/`.
    pub artifacts: PresignedPost,
    /// Appends under `live/{tenant}/{run}/` (the live log).
    pub live: PresignedPost,
    pub secrets: SecretsFrom,
}

/// Where the entrypoint finds the tenant's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum SecretsFrom {
    /// None are given.
    None,
    /// `OUTPOST_SECRET_{NAME}` variables of the entrypoint's own environment (ECS task
    /// definition `secrets`); the entrypoint removes them from its environment before anything
    /// else runs.
    Env,
    /// Parameter Store under `{prefix}/{tenant}/`, read with the host's instance role (SSM hosts).
    Ssm { prefix: String },
}

pub use outpost_aws::ssm_exec::{sh_quote, ssm_script, ScriptSpec};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_sources_round_trip() {
        for s in [
            SecretsFrom::None,
            SecretsFrom::Env,
            SecretsFrom::Ssm {
                prefix: "/outpost".into(),
            },
        ] {
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(serde_json::from_str::<SecretsFrom>(&json).expect("back"), s);
        }
    }
}
