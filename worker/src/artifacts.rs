//! Artifact collection and upload, for [`crate::pipeline::finalize`]: the files the agent left
//! in `ws/outpost-artifacts/` (regular files only, capped) as `files/...`
//! ([`FILES_PREFIX`]), their content types, and putting each into the ArtifactStore.

use outpost_core::domain::run_files::FILES_PREFIX;
use outpost_core::domain::Artifact;
use outpost_core::ports::artifacts::check_artifact_name;
use outpost_core::ports::{ArtifactStore, RunKey};
use std::path::{Path, PathBuf};
/// Deepest folder nesting under `outpost-artifacts/` that is collected.
const MAX_DEPTH: usize = 32;

/// Caps on agent-written artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_files: usize,
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_files: 1_000,
            max_bytes: 1 << 30,
        }
    }
}

/// One file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArtifact {
    /// `files/<relative path>`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Files found under the artifacts folder, and notes about what was skipped.
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<FileArtifact>,
    pub notes: Vec<String>,
}

/// Collects regular files under `dir` (not following symlinks, nothing outside `dir`), up to
/// `limits`. A missing folder yields nothing.
pub fn collect(dir: &Path, limits: Limits) -> Collected {
    let mut out = Collected::default();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            out.notes
                .push(format!("{} is not a folder; no files were collected", dir.display()));
            return out;
        }
        Err(_) => return out,
    }
    let mut total: u64 = 0;
    let mut skipped_names = 0usize;
    let mut skipped_bytes = 0usize;
    let mut count_capped = false;
    // Depth-first, each folder's entries sorted, so the order (and any cut-off) is stable.
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(dir.to_path_buf(), String::new(), 0)];
    'walk: while let Some((path, rel, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&path) else { continue };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let Ok(ft) = entry.file_type() else { continue };
            let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
                skipped_names += 1;
                continue;
            };
            let rel_name = if rel.is_empty() {
                fname
            } else {
                format!("{rel}/{fname}")
            };
            if ft.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    subdirs.push((entry.path(), rel_name, depth + 1));
                } else {
                    skipped_names += 1;
                }
                continue;
            }
            if !ft.is_file() {
                continue; // symlinks, sockets, fifos, devices
            }
            let name = format!("{FILES_PREFIX}{rel_name}");
            if check_artifact_name(&name).is_err() {
                skipped_names += 1;
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if out.files.len() >= limits.max_files {
                count_capped = true;
                break 'walk;
            }
            if total + meta.len() > limits.max_bytes {
                skipped_bytes += 1;
                continue;
            }
            total += meta.len();
            out.files.push(FileArtifact {
                name,
                path: entry.path(),
                size: meta.len(),
            });
        }
        // Pushed in reverse so the first sub-folder is walked first.
        stack.extend(subdirs.into_iter().rev());
    }
    if count_capped {
        out.notes.push(format!(
            "artifact file limit reached: stored the first {} files of {ARTIFACTS}, skipped the rest",
            limits.max_files,
            ARTIFACTS = crate::workspace::ARTIFACTS_DIR
        ));
    }
    if skipped_bytes > 0 {
        out.notes.push(format!(
            "artifact size limit ({} bytes) reached: skipped {skipped_bytes} file(s)",
            limits.max_bytes
        ));
    }
    if skipped_names > 0 {
        out.notes.push(format!(
            "skipped {skipped_names} artifact file(s) or folder(s) with unusable names or too deep"
        ));
    }
    out
}

/// Content type guessed from a file name's extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        "json" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "patch" | "diff" => "text/x-diff; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Puts files into the store one by one, keeping the manifest of what got stored.
pub struct Uploader<'a> {
    store: &'a dyn ArtifactStore,
    key: &'a RunKey,
    pub stored: Vec<Artifact>,
    /// One message per failed upload.
    pub failures: Vec<String>,
}

impl<'a> Uploader<'a> {
    pub fn new(store: &'a dyn ArtifactStore, key: &'a RunKey) -> Self {
        Self {
            store,
            key,
            stored: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Stores `path` as `name`. `false` (and a recorded failure) if the store refused it.
    pub async fn put(&mut self, name: &str, path: &Path, content_type: &str) -> bool {
        match self.store.put_file(self.key, name, path, content_type).await {
            Ok(a) => {
                self.stored.push(a);
                true
            }
            Err(e) => {
                tracing::warn!(artifact = name, error = %e, "artifact upload failed");
                self.failures.push(format!("storing {name} failed: {e}"));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("files/report.MD"), "text/markdown; charset=utf-8");
        assert_eq!(content_type("files/a.json"), "application/json");
        assert_eq!(content_type("files/blob"), "application/octet-stream");
        assert_eq!(content_type("files/x.tar.gz"), "application/gzip");
    }

    #[test]
    fn collects_regular_files_only_within_limits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("outpost-artifacts");
        std::fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
        std::fs::write(dir.join("a.txt"), "a").expect("write");
        std::fs::write(dir.join("sub/b.bin"), [0u8, 1, 2]).expect("write");
        std::fs::write(dir.join("sub/deeper/c.md"), "ccc").expect("write");
        let outside = tmp.path().join("secret.txt");
        std::fs::write(&outside, "do not take").expect("write");
        std::os::unix::fs::symlink(&outside, dir.join("link.txt")).expect("symlink");
        std::os::unix::fs::symlink(tmp.path(), dir.join("linkdir")).expect("symlink");

        let got = collect(&dir, Limits::default());
        let names: Vec<_> = got.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["files/a.txt", "files/sub/b.bin", "files/sub/deeper/c.md"]);
        assert!(got.notes.is_empty(), "{:?}", got.notes);
        assert_eq!(got.files[1].size, 3);

        let capped = collect(
            &dir,
            Limits {
                max_files: 2,
                max_bytes: 1 << 20,
            },
        );
        assert_eq!(capped.files.len(), 2);
        assert!(capped.notes[0].contains("file limit"), "{:?}", capped.notes);

        let small = collect(
            &dir,
            Limits {
                max_files: 10,
                max_bytes: 4,
            },
        );
        assert_eq!(small.files.iter().map(|f| f.size).sum::<u64>(), 4);
        assert!(small.notes[0].contains("size limit"), "{:?}", small.notes);
    }

    #[test]
    fn a_symlinked_artifacts_folder_is_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("elsewhere");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join("x"), "x").expect("write");
        let link = tmp.path().join("outpost-artifacts");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let got = collect(&link, Limits::default());
        assert!(got.files.is_empty());
        assert_eq!(got.notes.len(), 1);
        assert!(collect(&tmp.path().join("missing"), Limits::default()).files.is_empty());
    }
}
