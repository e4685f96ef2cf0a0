//! Which backend a process runs on: one selection (`embedded` | `aws`) shared by `outpost dev`,
//! the worker and the API/Lambda, from `--backend` or `OUTPOST_BACKEND`.
//!
//! - `embedded`: SQLite + folders in a data directory ([`outpost_embedded`]).
//! - `aws`: DynamoDB + SQS + S3 + SSM ([`outpost_aws`]), resource names from the environment
//!   ([`outpost_aws::AwsSettings::from_env`]), endpoint/region/credentials from the SDK's chain
//!   (`AWS_ENDPOINT_URL` points every client at an emulator).

use outpost_core::ports::Backend;
use outpost_embedded::{EmbeddedError, EmbeddedOptions};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The two deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// One process, SQLite and local folders.
    #[default]
    Embedded,
    /// DynamoDB, SQS, S3 and Parameter Store.
    Aws,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Aws => "aws",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend name that is neither `embedded` nor `aws`.
#[derive(Debug, thiserror::Error)]
#[error("unknown backend {0:?}: use `embedded` or `aws`")]
pub struct UnknownBackend(String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "embedded" => Ok(BackendKind::Embedded),
            "aws" => Ok(BackendKind::Aws),
            _ => Err(UnknownBackend(s.to_owned())),
        }
    }
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenBackendError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the embedded backend in {path}: {source}")]
    Embedded {
        path: String,
        #[source]
        source: EmbeddedError,
    },
    #[cfg(feature = "aws")]
    #[error("cannot set up the AWS backend: {0}")]
    Aws(#[from] outpost_aws::AwsSetupError),
    #[error("this build has no AWS backend: build it with the `aws` feature (`cargo build -p outpost --features aws`); outpost-worker and ingest-lambda always have it")]
    AwsNotBuilt,
}

/// An open backend and what the API needs to know about it.
pub struct OpenedBackend {
    pub kind: BackendKind,
    pub backend: Backend,
    /// Lifetime of presigned artifact URLs, where the store makes them.
    pub presign_expiry: Option<Duration>,
    /// One line for logs and banners: the data directory, or the AWS resource names.
    pub description: String,
}

/// Opens the backend `kind`: the embedded one in `data_dir` with `embedded`, or the AWS one from
/// the environment (`data_dir` and `embedded` are then unused).
pub async fn open_backend(
    kind: BackendKind,
    data_dir: &Path,
    embedded: EmbeddedOptions,
) -> Result<OpenedBackend, OpenBackendError> {
    match kind {
        BackendKind::Embedded => {
            let backend = outpost_embedded::open(data_dir, embedded).map_err(|source| OpenBackendError::Embedded {
                path: data_dir.display().to_string(),
                source,
            })?;
            Ok(OpenedBackend {
                kind,
                backend,
                presign_expiry: None,
                description: format!("embedded, data in {}", data_dir.display()),
            })
        }
        BackendKind::Aws => open_aws().await,
    }
}

#[cfg(feature = "aws")]
async fn open_aws() -> Result<OpenedBackend, OpenBackendError> {
    let settings = outpost_aws::AwsSettings::from_env()?;
    let clients = outpost_aws::AwsClients::from_env(None).await;
    Ok(OpenedBackend {
        kind: BackendKind::Aws,
        backend: outpost_aws::backend(&clients, &settings),
        presign_expiry: Some(settings.presign_expiry),
        description: format!(
            "aws, table {}, queue {}, bucket {}",
            settings.table, settings.queue_url, settings.bucket
        ),
    })
}

#[cfg(not(feature = "aws"))]
async fn open_aws() -> Result<OpenedBackend, OpenBackendError> {
    Err(OpenBackendError::AwsNotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name() {
        assert_eq!("embedded".parse::<BackendKind>().expect("kind"), BackendKind::Embedded);
        assert_eq!(" AWS ".parse::<BackendKind>().expect("kind"), BackendKind::Aws);
        let err = "sqlite".parse::<BackendKind>().expect_err("unknown");
        assert!(err.to_string().contains("`embedded` or `aws`"), "{err}");
        assert_eq!(BackendKind::default(), BackendKind::Embedded);
    }
}
