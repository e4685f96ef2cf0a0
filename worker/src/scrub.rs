//! Secret scrubbing: replaces every occurrence of known secret values (the agent's API key, a
//! token in the repository URL) with `[REDACTED]` in a byte stream, also when a secret is split
//! across two reads.

use std::io::{Read, Write};
use std::path::Path;

/// What a secret is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Secrets shorter than this are not scrubbed (they would match ordinary text).
pub const MIN_SECRET_LEN: usize = 4;

/// The set of secret values of one run. Cheap to clone; empty for most runs.
#[derive(Clone)]
pub struct Secrets {
    values: Vec<Vec<u8>>,
    /// `first[b]` is true when some secret starts with byte `b`.
    first: [bool; 256],
    max_len: usize,
}

impl Default for Secrets {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            first: [false; 256],
            max_len: 0,
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the values themselves.
        f.debug_struct("Secrets").field("count", &self.values.len()).finish()
    }
}

impl Secrets {
    /// Builds the set from candidate values, keeping those at least [`MIN_SECRET_LEN`] long.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut out = Self::default();
        for v in values {
            let v = v.as_ref();
            if v.len() >= MIN_SECRET_LEN && !out.values.iter().any(|x| x == v) {
                out.first[usize::from(v[0])] = true;
                out.max_len = out.max_len.max(v.len());
                out.values.push(v.to_vec());
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The longest secret that matches `buf` at its start, if any.
    fn match_at(&self, buf: &[u8]) -> Option<usize> {
        self.values.iter().filter(|s| buf.starts_with(s)).map(Vec::len).max()
    }

    /// Whether `tail` (shorter than the longest secret) is the start of some longer secret.
    fn partial_at(&self, tail: &[u8]) -> bool {
        self.values.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
    }

    /// Whether `data` contains any secret.
    pub fn found_in(&self, data: &[u8]) -> bool {
        (0..data.len()).any(|i| self.first[usize::from(data[i])] && self.match_at(&data[i..]).is_some())
    }
}

/// A streaming scrubber: feed chunks with [`push`](Self::push), then [`finish`](Self::finish).
pub struct Scrubber {
    secrets: Secrets,
    /// Bytes held back because they may be the start of a secret that the next chunk completes.
    carry: Vec<u8>,
    replaced: u64,
}

impl Scrubber {
    pub fn new(secrets: Secrets) -> Self {
        Self {
            secrets,
            carry: Vec::new(),
            replaced: 0,
        }
    }

    /// How many secrets were replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Scrubs `chunk` and returns the bytes that are safe to write now. When there are no secrets
    /// the chunk is returned as it is, without copying.
    pub fn push<'a>(&mut self, chunk: &'a [u8], out: &'a mut Vec<u8>) -> &'a [u8] {
        if self.secrets.is_empty() {
            return chunk;
        }
        out.clear();
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        self.scan(&buf, false, out);
        out
    }

    /// The bytes still held back, scrubbed. Call once at end of stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.carry);
        let mut out = Vec::with_capacity(buf.len());
        self.scan(&buf, true, &mut out);
        out
    }

    fn scan(&mut self, buf: &[u8], eof: bool, out: &mut Vec<u8>) {
        let s = &self.secrets;
        let mut plain_from = 0;
        let mut p = 0;
        while p < buf.len() {
            if !s.first[usize::from(buf[p])] {
                p += 1;
                continue;
            }
            if let Some(len) = s.match_at(&buf[p..]) {
                out.extend_from_slice(&buf[plain_from..p]);
                out.extend_from_slice(REDACTED);
                self.replaced += 1;
                p += len;
                plain_from = p;
                continue;
            }
            if !eof && buf.len() - p < s.max_len && s.partial_at(&buf[p..]) {
                // May be completed by the next chunk: hold the rest back.
                out.extend_from_slice(&buf[plain_from..p]);
                self.carry = buf[p..].to_vec();
                return;
            }
            p += 1;
        }
        out.extend_from_slice(&buf[plain_from..]);
    }
}

/// Scrubs a file in place (through a temporary sibling). Returns how many secrets were replaced;
/// the file is rewritten only when that is more than zero.
pub fn scrub_file(path: &Path, secrets: &Secrets) -> std::io::Result<u64> {
    if secrets.is_empty() {
        return Ok(0);
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".scrub");
    let tmp = std::path::PathBuf::from(tmp_name);
    let result = (|| {
        let mut src = std::fs::File::open(path)?;
        let mut dst = std::fs::File::create(&tmp)?;
        let mut scrubber = Scrubber::new(secrets.clone());
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let clean = scrubber.push(&buf[..n], &mut out);
            dst.write_all(clean)?;
        }
        dst.write_all(&scrubber.finish())?;
        Ok(scrubber.replaced())
    })();
    match result {
        Ok(0) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(0)
        }
        Ok(n) => {
            std::fs::rename(&tmp, path)?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub_in_chunks(secrets: &Secrets, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut s = Scrubber::new(secrets.clone());
        let mut all = Vec::new();
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            let clean = s.push(c, &mut out);
            all.extend_from_slice(clean);
        }
        all.extend_from_slice(&s.finish());
        all
    }

    #[test]
    fn replaces_secrets_at_every_chunk_size() {
        let secrets = Secrets::new(["sk-SECRET-123", "abc"]);
        let data = b"key=sk-SECRET-123; again sk-SECRET-123 and sk-SECRET-12 partial abc";
        let want = b"key=[REDACTED]; again [REDACTED] and sk-SECRET-12 partial abc".to_vec();
        for chunk in 1..=data.len() {
            assert_eq!(scrub_in_chunks(&secrets, data, chunk), want, "chunk size {chunk}");
        }
    }

    #[test]
    fn overlapping_and_nested_secrets() {
        let secrets = Secrets::new(["abcdef", "bcdx"]);
        for chunk in 1..=12 {
            assert_eq!(scrub_in_chunks(&secrets, b"zzabcdbcdx", chunk), b"zzabcd[REDACTED]");
            assert_eq!(scrub_in_chunks(&secrets, b"abcdefabcd", chunk), b"[REDACTED]abcd");
        }
    }

    #[test]
    fn no_secrets_is_a_pass_through() {
        let secrets = Secrets::new(["", "ab"]);
        assert!(secrets.is_empty(), "short values are not secrets");
        let mut s = Scrubber::new(secrets);
        let mut out = Vec::new();
        assert_eq!(s.push(b"hello ab", &mut out), b"hello ab");
        assert!(s.finish().is_empty());
    }

    #[test]
    fn debug_does_not_print_values() {
        let secrets = Secrets::new(["hunter2-password"]);
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert!(secrets.found_in(b"xx hunter2-password yy"));
        assert!(!secrets.found_in(b"xx hunter2-passwor"));
    }

    #[test]
    fn files_are_scrubbed_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.txt");
        let mut content = vec![b'x'; 100_000];
        content.extend_from_slice(b"TOKEN1234");
        content.extend_from_slice(&[b'y'; 70_000]);
        std::fs::write(&f, &content).expect("write");
        let secrets = Secrets::new(["TOKEN1234"]);
        assert_eq!(scrub_file(&f, &secrets).expect("scrub"), 1);
        let got = std::fs::read(&f).expect("read");
        assert_eq!(got.len(), content.len() - 9 + REDACTED.len());
        assert!(!secrets.found_in(&got));
        let clean = dir.path().join("b.txt");
        std::fs::write(&clean, b"nothing here").expect("write");
        assert_eq!(scrub_file(&clean, &secrets).expect("scrub"), 0);
        assert_eq!(std::fs::read(&clean).expect("read"), b"nothing here");
    }
}
