//! Tenants' secrets (BYOK) for the embedded backend: one file per secret,
//! `{data}/secrets/{tenant}/{name}`, readable only by the user running Outpost (folders 0700,
//! files 0600). Values are stored as given: protect the data directory like a key file.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outpost_core::domain::TenantId;
use outpost_core::ports::secrets::{check_secret_value, SecretError, SecretInfo, SecretName, SecretStore};
use secrecy::{ExposeSecret, SecretString};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Secrets in a folder of the data directory.
#[derive(Debug, Clone)]
pub struct LocalSecretStore {
    root: PathBuf,
}

fn backend(e: std::io::Error) -> SecretError {
    SecretError::Backend(Box::new(e))
}

fn make_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

impl LocalSecretStore {
    /// Uses (creating if needed) the folder `root`.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        make_private_dir(root)?;
        Ok(Self { root: root.to_owned() })
    }

    fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.root.join(tenant.as_str())
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
    ) -> Result<T, SecretError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| SecretError::Backend(Box::new(e)))?
    }
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    async fn put_secret(&self, tenant: &TenantId, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        check_secret_value(value.expose_secret())?;
        let dir = self.tenant_dir(tenant);
        let path = dir.join(name.as_str());
        let tmp = dir.join(format!(".{}.{}.tmp", name.as_str(), ulid::Ulid::new()));
        let value = value.clone();
        Self::blocking(move || {
            make_private_dir(&dir).map_err(backend)?;
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(value.expose_secret().as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                backend(e)
            })
        })
        .await
    }

    async fn get_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<Option<SecretString>, SecretError> {
        let path = self.tenant_dir(tenant).join(name.as_str());
        Self::blocking(move || match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(SecretString::from(v))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(e)),
        })
        .await
    }

    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<SecretInfo>, SecretError> {
        let dir = self.tenant_dir(tenant);
        Self::blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(backend(e)),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(backend)?;
                // Temporary files start with a dot, which no secret name does.
                let Some(name) = entry.file_name().to_str().and_then(|n| n.parse::<SecretName>().ok()) else {
                    continue;
                };
                let modified = entry.metadata().and_then(|m| m.modified()).map_err(backend)?;
                out.push(SecretInfo {
                    name,
                    updated_at: DateTime::<Utc>::from(modified),
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn delete_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<bool, SecretError> {
        let path = self.tenant_dir(tenant).join(name.as_str());
        Self::blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(backend(e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn files_are_private_to_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalSecretStore::new(&dir.path().join("secrets")).expect("store");
        let tenant: TenantId = "acme".parse().expect("tenant");
        let name: SecretName = "KEY".parse().expect("name");
        store
            .put_secret(&tenant, &name, &SecretString::from("v1".to_owned()))
            .await
            .expect("put");
        let file = dir.path().join("secrets/acme/KEY");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(file.parent().expect("parent"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
    }
}
