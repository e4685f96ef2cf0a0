//! `ArtifactStore` on a local folder: `{root}/{tenant}/{run}/{name}`.
//!
//! - Names are checked with [`check_artifact_name`] (relative, no `.`/`..` parts), and tenant and
//!   run ids are validated types, so no path leaves the run's folder.
//! - `put_file` renames the source into place (atomic, and free on the same file system), or
//!   copies it to a temporary file under `{root}/.outpost-tmp/` and renames that. Either way a
//!   reader sees the old content or the new, never a mix. Files up to 16 KiB are stored on the
//!   calling task (a few quick syscalls); larger ones on tokio's blocking pool.
//! - The content type given to `put_file` is kept in the stored file's extended attribute
//!   `user.outpost.content_type`, so storing a file creates no other file (on this kind of disk a
//!   new inode is the dearest part of storing). On a file system without user xattrs it goes to a
//!   sidecar under `{root}/.outpost-meta/{tenant}/{run}/{sha256 of name}.json` instead (a flat
//!   name, so no artifact name can collide with it). Live logs have none and read as
//!   `text/plain; charset=utf-8`.
//! - `append_log` writes at the given offset; offset 0 starts the log afresh (a new attempt), any
//!   other offset must not be past the end; rewriting already-written bytes (a retry) is fine.
//! - Limits of a file system: a name cannot be both a file and a folder (`a` and `a/b`), and each
//!   `/`-separated part must fit the file system's name length (255 bytes on Linux).

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use outpost_core::domain::Artifact;
use outpost_core::ports::artifacts::{
    check_artifact_name, ArtifactBody, ArtifactError, ArtifactStore, LogChunk, RunKey,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// Content type of a live log (and of any file stored without one).
pub const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

const META_DIR: &str = ".outpost-meta";
/// Extended attribute holding a stored file's content type.
const CONTENT_TYPE_XATTR: &str = "user.outpost.content_type";
const TMP_DIR: &str = ".outpost-tmp";
const COPY_BUFFER: usize = 256 * 1024;
/// Files up to this size are stored on the calling task rather than on the blocking pool.
const INLINE_PUT_MAX: u64 = 16 * 1024;

/// Whether `path` is a regular file of at most `max` bytes (one `stat`).
fn src_len_at_most(path: &Path, max: u64) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() <= max)
}

/// What the sidecar of a stored file records.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    name: String,
    content_type: String,
    size: u64,
    sha256: String,
}

/// Artifacts of all runs in one folder.
#[derive(Debug, Clone)]
pub struct LocalArtifactStore {
    root: PathBuf,
}

fn backend(e: io::Error) -> ArtifactError {
    ArtifactError::Backend(Box::new(e))
}

fn join_error(e: tokio::task::JoinError) -> ArtifactError {
    backend(io::Error::other(e.to_string()))
}

impl LocalArtifactStore {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join(TMP_DIR))?;
        Ok(Self { root })
    }

    /// The folder holding one run's files.
    pub fn run_dir(&self, key: &RunKey) -> PathBuf {
        self.root.join(key.tenant.as_str()).join(key.run.as_str())
    }

    /// Where `name` of a run lives, after checking the name.
    fn file_path(&self, key: &RunKey, name: &str) -> Result<PathBuf, ArtifactError> {
        check_artifact_name(name)?;
        let mut path = self.run_dir(key);
        path.extend(name.split('/'));
        Ok(path)
    }

    fn meta_path(&self, key: &RunKey, name: &str) -> PathBuf {
        self.root
            .join(META_DIR)
            .join(key.tenant.as_str())
            .join(key.run.as_str())
            .join(format!("{}.json", hex::encode(Sha256::digest(name.as_bytes()))))
    }

    /// A fresh temporary path on the same file system as the store.
    fn tmp_path(&self) -> PathBuf {
        self.root.join(TMP_DIR).join(format!("{}.tmp", ulid::Ulid::new()))
    }
}

/// Creates the parent folder of `path`.
fn ensure_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// Size and hex SHA-256 of everything `reader` yields, copying it to `sink` if given.
fn hash_stream(mut reader: impl Read, len_hint: u64, mut sink: Option<&mut File>) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    // Sized to the file (plus one byte to see the end in one read): most artifacts are small, and
    // a large buffer per call costs an mmap, page faults and a memset every time.
    let cap = usize::try_from(len_hint.saturating_add(1))
        .unwrap_or(COPY_BUFFER)
        .clamp(1, COPY_BUFFER);
    let mut buf = vec![0u8; cap];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        if let Some(out) = sink.as_deref_mut() {
            out.write_all(chunk)?;
        }
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Copies `src` to `tmp` (hashing on the way) and renames it to `dest`.
fn copy_into_place(src: &Path, tmp: &Path, dest: &Path) -> io::Result<(u64, String)> {
    let result = (|| {
        let input = File::open(src)?;
        let len = input.metadata()?.len();
        let mut out = File::create(tmp)?;
        let summary = hash_stream(input, len, Some(&mut out))?;
        out.sync_data()?;
        fs::rename(tmp, dest)?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Moves (or copies) `src` to `dest` atomically; the size and SHA-256 of what was stored.
fn store_file(src: &Path, tmp: &Path, dest: &Path) -> io::Result<(u64, String)> {
    ensure_parent(dest)?;
    match fs::rename(src, dest) {
        Ok(()) => {
            let file = File::open(dest)?;
            let len = file.metadata()?.len();
            hash_stream(file, len, None)
        }
        // Another file system (or anything else rename refuses): copy instead.
        Err(_) => copy_into_place(src, tmp, dest),
    }
}

/// Writes `meta` to `path` atomically.
fn write_meta(meta: &Meta, tmp: &Path, path: &Path) -> io::Result<()> {
    ensure_parent(path)?;
    let text = serde_json::to_vec(meta).map_err(io::Error::other)?;
    fs::write(tmp, text)?;
    fs::rename(tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

fn append_at(path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
    ensure_parent(path)?;
    let file = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    let len = file.metadata()?.len();
    if offset > len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("log offset {offset} is past its end ({len} bytes)"),
        ));
    }
    if offset == 0 && len > 0 {
        // A log written from the start again (a new attempt) replaces the old one.
        file.set_len(0)?;
    }
    file.write_all_at(data, offset)
}

fn read_at(path: &Path, offset: u64, max_len: u64) -> io::Result<Option<LogChunk>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let size = meta.len();
    let start = offset.min(size);
    let want = usize::try_from(max_len.min(size - start)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], start + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Some(LogChunk {
        next_offset: start + filled as u64,
        size: size.max(start + filled as u64),
        data: Bytes::from(buf),
    }))
}

#[async_trait]
impl ArtifactStore for LocalArtifactStore {
    async fn put_file(
        &self,
        key: &RunKey,
        name: &str,
        src: &Path,
        content_type: &str,
    ) -> Result<Artifact, ArtifactError> {
        let dest = self.file_path(key, name)?;
        let meta_path = self.meta_path(key, name);
        let (tmp, meta_tmp) = (self.tmp_path(), self.tmp_path());
        // A small file is a handful of quick syscalls: cheaper here than two thread hops to the
        // blocking pool. Anything larger (hashing, maybe copying) goes there.
        let inline = src_len_at_most(src, INLINE_PUT_MAX);
        let src = src.to_owned();
        let (name, content_type) = (name.to_owned(), content_type.to_owned());
        let store = move || {
            let (size, sha256) = store_file(&src, &tmp, &dest).map_err(backend)?;
            let meta = Meta {
                name,
                content_type,
                size,
                sha256,
            };
            if xattr::set(&dest, CONTENT_TYPE_XATTR, meta.content_type.as_bytes()).is_err() {
                write_meta(&meta, &meta_tmp, &meta_path).map_err(backend)?;
            }
            Ok(Artifact {
                name: meta.name,
                size: meta.size,
                sha256: meta.sha256,
                content_type: meta.content_type,
            })
        };
        if inline {
            store()
        } else {
            tokio::task::spawn_blocking(store).await.map_err(join_error)?
        }
    }

    async fn append_log(&self, key: &RunKey, name: &str, offset: u64, data: &[u8]) -> Result<(), ArtifactError> {
        let path = self.file_path(key, name)?;
        let data = data.to_vec();
        tokio::task::spawn_blocking(move || append_at(&path, offset, &data))
            .await
            .map_err(join_error)?
            .map_err(backend)
    }

    async fn read_range(
        &self,
        key: &RunKey,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Option<LogChunk>, ArtifactError> {
        let path = self.file_path(key, name)?;
        tokio::task::spawn_blocking(move || read_at(&path, offset, max_len))
            .await
            .map_err(join_error)?
            .map_err(backend)
    }

    async fn open(&self, key: &RunKey, name: &str) -> Result<Option<ArtifactBody>, ArtifactError> {
        let path = self.file_path(key, name)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let meta = file.metadata().await.map_err(backend)?;
        if !meta.is_file() {
            return Ok(None);
        }
        let size = meta.len();
        let from_xattr = xattr::get(&path, CONTENT_TYPE_XATTR)
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok());
        let content_type = match from_xattr {
            Some(ct) => ct,
            None => match tokio::fs::read(self.meta_path(key, name)).await {
                Ok(bytes) => serde_json::from_slice::<Meta>(&bytes)
                    .map(|m| m.content_type)
                    .unwrap_or_else(|_| LOG_CONTENT_TYPE.to_owned()),
                Err(_) => LOG_CONTENT_TYPE.to_owned(),
            },
        };
        // Only the bytes present now, even if a live log grows while it streams.
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(size), 64 * 1024).boxed();
        Ok(Some(ArtifactBody {
            size,
            content_type,
            stream,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_core::domain::{RunId, TenantId};

    fn key(tenant: &str) -> RunKey {
        RunKey {
            tenant: tenant.parse::<TenantId>().expect("tenant"),
            run: RunId::generate(),
        }
    }

    fn store() -> (tempfile::TempDir, LocalArtifactStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalArtifactStore::new(dir.path().join("artifacts")).expect("store");
        (dir, store)
    }

    /// Every file under `dir`, relative.
    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path.strip_prefix(dir).expect("prefix").to_owned());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn files_stay_inside_their_run_folder() {
        let (dir, store) = store();
        let k = key("acme");
        let src = dir.path().join("src.txt");
        fs::write(&src, b"x").expect("write");
        for bad in ["../escape", "a/../../b", "/etc/passwd", "./a", "a\\..\\b", "", "a//b"] {
            assert!(matches!(
                store.put_file(&k, bad, &src, "text/plain").await,
                Err(ArtifactError::BadName(_))
            ));
            assert!(matches!(
                store.append_log(&k, bad, 0, b"x").await,
                Err(ArtifactError::BadName(_))
            ));
        }
        store
            .put_file(&k, "files/deep/a.txt", &src, "text/plain")
            .await
            .expect("put");
        store.append_log(&k, "output.log", 0, b"log").await.expect("append");
        let root = dir.path().join("artifacts");
        let run_rel = PathBuf::from("acme").join(k.run.as_str());
        let stored: Vec<_> = files_under(&root)
            .into_iter()
            .filter(|p| !p.starts_with(META_DIR) && !p.starts_with(TMP_DIR))
            .collect();
        assert_eq!(
            stored,
            vec![run_rel.join("files/deep/a.txt"), run_rel.join("output.log")]
        );
        // Nothing else was written next to the artifacts folder.
        let mut top: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        top.sort();
        assert_eq!(top, vec!["artifacts"]);
        assert!(files_under(&root.join(TMP_DIR)).is_empty());
    }

    #[tokio::test]
    async fn put_file_moves_the_source() {
        let (dir, store) = store();
        let k = key("acme");
        let src = dir.path().join("diff.patch");
        fs::write(&src, b"patch").expect("write");
        let a = store
            .put_file(&k, "diff.patch", &src, "text/x-diff")
            .await
            .expect("put");
        assert!(!src.exists(), "same file system: the source is moved");
        assert_eq!(a.size, 5);
        assert_eq!(fs::read(store.run_dir(&k).join("diff.patch")).expect("read"), b"patch");
    }

    #[test]
    fn copy_path_hashes_what_it_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, tmp, dest) = (dir.path().join("s"), dir.path().join("t"), dir.path().join("d"));
        let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &content).expect("write");
        let (size, sha) = copy_into_place(&src, &tmp, &dest).expect("copy");
        assert_eq!(size, content.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&content)));
        assert_eq!(fs::read(&dest).expect("read"), content);
        assert!(src.exists() && !tmp.exists());
        // A missing source fails and leaves no temporary file behind.
        assert!(copy_into_place(&dir.path().join("missing"), &tmp, &dest).is_err());
        assert!(!tmp.exists());
    }

    #[tokio::test]
    async fn log_restarted_from_zero_replaces_the_old_one() {
        let (_dir, store) = store();
        let k = key("acme");
        store
            .append_log(&k, "output.log", 0, b"first attempt, long")
            .await
            .expect("a");
        store.append_log(&k, "output.log", 0, b"second").await.expect("b");
        let chunk = store
            .read_range(&k, "output.log", 0, 1024)
            .await
            .expect("read")
            .expect("some");
        assert_eq!(&chunk.data[..], b"second");
        assert_eq!((chunk.next_offset, chunk.size), (6, 6));
        let past = store
            .read_range(&k, "output.log", 100, 10)
            .await
            .expect("read")
            .expect("some");
        assert!(past.data.is_empty());
        assert_eq!(past.next_offset, 6);
    }

    #[tokio::test]
    async fn a_folder_is_not_a_file() {
        let (dir, store) = store();
        let k = key("acme");
        let src = dir.path().join("s");
        fs::write(&src, b"x").expect("write");
        store
            .put_file(&k, "files/a.txt", &src, "text/plain")
            .await
            .expect("put");
        assert!(store.open(&k, "files").await.expect("open").is_none());
        assert!(store.read_range(&k, "files", 0, 10).await.expect("read").is_none());
    }
}
