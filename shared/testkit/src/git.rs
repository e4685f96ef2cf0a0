//! Git in tests: run the `git` program synchronously with a fixed identity, and make the seed
//! repository the tests clone from. Every call starts one `git` process; a failure panics with
//! git's own message (these are test helpers: a broken fixture is a failed test).

use std::path::Path;

/// Runs `git -C dir ARGS` as `Test <test@example.com>` and returns its stdout; panics with git's
/// stderr when it fails.
pub fn git_bytes(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`git_bytes`] as text (lossy UTF-8).
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git_bytes(dir, args)).into_owned()
}

/// Makes `dir` a repository with one commit on `main`: `README.md` (`hello`) and `src/lib.txt`
/// (`one`, `two`, `three`). Returns its `file://` URL.
pub fn seed_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    git_ok(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("README.md"), "hello\n").expect("write");
    std::fs::write(dir.join("src/lib.txt"), "one\ntwo\nthree\n").expect("write");
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "--quiet", "-m", "first"]);
    format!("file://{}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_repo_has_one_commit_on_main() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = seed_repo(dir.path());
        assert_eq!(url, format!("file://{}", dir.path().display()));
        assert_eq!(git_ok(dir.path(), &["rev-list", "--count", "main"]).trim(), "1");
        assert_eq!(
            git_bytes(dir.path(), &["show", "main:src/lib.txt"]),
            b"one\ntwo\nthree\n"
        );
        assert_eq!(git_ok(dir.path(), &["log", "-1", "--format=%an"]).trim(), "Test");
    }

    #[test]
    #[should_panic(expected = "failed")]
    fn a_failing_git_panics_with_its_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        git_ok(dir.path(), &["rev-parse", "--verify", "no-such-ref"]);
    }
}
