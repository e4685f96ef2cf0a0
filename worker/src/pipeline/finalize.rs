//! Step 4 of a run, the same for every executor: store the run's artifacts, artifact-first (the
//! outcome is recorded only after every artifact in its manifest is stored), in the shape of the
//! artifact contract [`outpost_core::domain::run_files`].
//!
//! In order: what the agent changed (repository runs: `git diff --binary` against the base
//! commit into `diff.patch`, [`workspace::diff`]; others: the files it created in its empty
//! workspace), less the agent CLI's own files (its `ignore` patterns); the regular files under
//! `ws/outpost-artifacts/` as `files/...` (capped, [`artifacts::collect`]); every secret of the
//! run scrubbed from those files and the patch in place (a file that cannot be scrubbed is never
//! stored: the run then stores only `output.log` and fails `artifact_upload_failed`); the uploads
//! (`files/...`, `diff.patch`, the agent's whole answer as `result.md`); the worker's notes
//! appended to the spool, which is stored as `output.log`; last `summary.json`. A failed put
//! turns the outcome into `artifact_upload_failed` and is noted.
//!
//! Cost: one store put per artifact; with no repository and no files, two. The diff and the
//! scrubbing run off the async threads; the spool is read back only by the store's put.

use super::{run_key, Attempt, Execution};
use crate::artifacts::{self, Limits, Uploader};
use crate::scrub::scrub_file;
use crate::workspace;
use outpost_core::domain::agents::ignore_matches;
use outpost_core::domain::run_files::{
    manifest_rank, Summary, DIFF_PATCH, DIFF_PATCH_TYPE, FILES_PREFIX, OUTPUT_LOG, OUTPUT_LOG_TYPE, RESULT_MD,
    RESULT_MD_TYPE, SUMMARY_JSON, SUMMARY_JSON_TYPE,
};
use outpost_core::domain::{Artifact, FailureReason, Outcome};
use outpost_core::ports::{ArtifactStore, RunKey};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// Stores `files/...`, `diff.patch`, `result.md`, `output.log` and `summary.json`, then returns
/// the outcome (turned into `artifact_upload_failed` if a put failed) and the manifest.
pub(crate) async fn finalize(
    store: &dyn ArtifactStore,
    limits: Limits,
    mut a: Attempt<'_>,
    mut outcome: Outcome,
) -> Execution {
    let run = a.run;
    let dirs = a.dirs;
    let key = run_key(run);
    let secrets = a.notes.secrets.clone();
    let mut changed: Vec<String> = Vec::new();

    // What the agent changed.
    let patch = dirs.side_file(DIFF_PATCH);
    let mut have_patch = false;
    if run.repo.is_some() && a.ws_ready {
        match workspace::diff(&dirs.ws, a.base.as_deref(), &patch, &a.ignore).await {
            Ok(ch) => {
                changed = ch.files;
                have_patch = ch.has_patch;
            }
            Err(msg) => a.notes.push(format!("could not compute the diff: {msg}")),
        }
    } else if a.ws_ready {
        // The workspace started empty: everything in it is the agent's.
        changed = workspace::list_created_files(&dirs.ws);
        changed.retain(|f| !a.ignore.iter().any(|p| ignore_matches(p, f)));
    }

    // The files it left for the client.
    let mut collected = if a.ws_ready {
        artifacts::collect(&dirs.artifacts, limits)
    } else {
        artifacts::Collected::default()
    };
    if !a.ignore.is_empty() {
        collected.files.retain(|f| {
            let rel = f.name.strip_prefix(FILES_PREFIX).unwrap_or(&f.name);
            let in_ws = format!("{}/{rel}", workspace::ARTIFACTS_DIR);
            !a.ignore.iter().any(|p| ignore_matches(p, &in_ws))
        });
    }
    for n in &collected.notes {
        a.notes.push(n);
    }

    // Scrubbed in place before anything is stored.
    if !secrets.is_empty() && (have_patch || !collected.files.is_empty()) {
        let mut paths: Vec<PathBuf> = collected.files.iter().map(|f| f.path.clone()).collect();
        if have_patch {
            paths.push(patch.clone());
        }
        let s = secrets.clone();
        let scrubbed = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .filter_map(|p| {
                    scrub_file(p, &s)
                        .err()
                        .map(|e| format!("scrubbing {}: {e}", p.display()))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| vec![format!("scrubbing artifacts: {e}")]);
        if !scrubbed.is_empty() {
            // A file that could not be scrubbed must not be stored as it is.
            for msg in scrubbed {
                a.notes.push(msg);
            }
            return finish_failed_scrub(store, a, key).await;
        }
    }

    // The uploads.
    let mut up = Uploader::new(store, &key);
    for f in &collected.files {
        up.put(&f.name, &f.path, artifacts::content_type(&f.name)).await;
    }
    if have_patch {
        up.put(DIFF_PATCH, &patch, DIFF_PATCH_TYPE).await;
    }
    if let Some(result) = &outcome.report.result {
        // The agent's whole final answer (the record keeps a capped copy). It was read from
        // the scrubbed spool, so it holds no secret.
        let path = dirs.side_file(RESULT_MD);
        match std::fs::write(&path, result) {
            Ok(()) => {
                up.put(RESULT_MD, &path, RESULT_MD_TYPE).await;
            }
            Err(e) => a.notes.push(format!("cannot write {RESULT_MD}: {e}")),
        }
    }
    let early_failure = !up.failures.is_empty();
    for msg in std::mem::take(&mut up.failures) {
        a.notes.push(msg);
    }

    write_notes(&mut a.spool, &a.notes.list, a.pump.bytes > 0);
    drop(a.spool);
    let log_ok = up.put(OUTPUT_LOG, &dirs.spool, OUTPUT_LOG_TYPE).await;
    if early_failure || !log_ok {
        outcome = outcome.failed_as(FailureReason::ArtifactUploadFailed);
    }
    let notes: Vec<String> = a
        .notes
        .list
        .iter()
        .cloned()
        .chain(up.failures.iter().cloned())
        .collect();

    let summary = Summary {
        run_id: run.id.as_str().to_owned(),
        agent: run.agent.clone(),
        status: outcome.status,
        exit_code: outcome.exit_code,
        failure_reason: outcome.reason,
        duration_ms: u64::try_from(a.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        attempts: run.attempts,
        changed_files: changed,
        base_commit: a.base.clone(),
        output_bytes: a.pump.bytes,
        redactions: a.pump.redactions,
        notes,
        agent_report: outcome.report.capped(),
        sandbox: a.sandbox.clone(),
        egress: a.egress.clone(),
        artifacts: manifest_order(up.stored.clone()),
    };
    let summary_path = dirs.side_file(SUMMARY_JSON);
    let summary_ok = match serde_json::to_vec_pretty(&summary) {
        Ok(bytes) => match std::fs::write(&summary_path, bytes) {
            Ok(()) => up.put(SUMMARY_JSON, &summary_path, SUMMARY_JSON_TYPE).await,
            Err(e) => {
                tracing::warn!(error = %e, "writing summary.json failed");
                false
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "serialising summary.json failed");
            false
        }
    };
    if !summary_ok {
        outcome = outcome.failed_as(FailureReason::ArtifactUploadFailed);
    }
    Execution::Finished {
        outcome,
        artifacts: manifest_order(up.stored),
    }
}

/// Artifacts could not be scrubbed: store only output.log (which the pump scrubbed) and fail.
async fn finish_failed_scrub(store: &dyn ArtifactStore, mut a: Attempt<'_>, key: RunKey) -> Execution {
    write_notes(&mut a.spool, &a.notes.list, a.pump.bytes > 0);
    drop(a.spool);
    let mut up = Uploader::new(store, &key);
    up.put(OUTPUT_LOG, &a.dirs.spool, OUTPUT_LOG_TYPE).await;
    Execution::Finished {
        outcome: Outcome::failed(FailureReason::ArtifactUploadFailed, None),
        artifacts: up.stored,
    }
}

/// Appends the worker's notes to the spool as `[outpost] ...` lines (after a blank line when the
/// agent wrote something).
fn write_notes(spool: &mut File, notes: &[String], after_output: bool) {
    if notes.is_empty() {
        return;
    }
    let mut text = String::from(if after_output { "\n" } else { "" });
    for n in notes {
        for line in n.lines() {
            text.push_str("[outpost] ");
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Err(e) = spool.write_all(text.as_bytes()) {
        tracing::warn!(error = %e, "writing notes to output.log failed");
    }
}

/// The manifest in the contract's order ([`manifest_rank`]): output.log, summary.json,
/// result.md, diff.patch, then files/... in the order they were stored.
fn manifest_order(mut stored: Vec<Artifact>) -> Vec<Artifact> {
    stored.sort_by_key(|a| manifest_rank(&a.name));
    stored
}

#[cfg(test)]
#[path = "finalize_tests.rs"]
mod tests;
