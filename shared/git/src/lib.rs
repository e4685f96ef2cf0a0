//! Outpost's git: everything that runs the `git` CLI or speaks to a forge.
//!
//! - [`runner`]: the one hardened way to run git ([`runner::Git`]): hooks, fsmonitor, `ext::`
//!   and prompts off, token auth scoped to the remote's origin, messages scrubbed; and the
//!   operations the worker (clone, base commit, workspace diff) and promote need.
//! - [`promote`]: a finished run's `diff.patch` → a commit on a pushed branch (and a GitHub pull
//!   request), plus forge URL parsing.
//!
//! Depends on `outpost-core` only (and tokio, reqwest for the GitHub REST call).

pub mod promote;
pub mod runner;
