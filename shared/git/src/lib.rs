//! Outpost's git: everything that runs the `git` CLI or speaks to a forge.
//!
//! - [`promote`]: a finished run's `diff.patch` → a commit on a pushed branch (and a GitHub pull
//!   request), plus forge URL parsing and token auth scoped to the remote's origin.
//!
//! Depends on `outpost-core` only (and tokio, reqwest for the GitHub REST call).

pub mod promote;
