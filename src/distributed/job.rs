//! The job message: what a queue message carries. Wire-compatible with the TypeScript
//! adapter: the text is base64 of the JSON `{runId, blueprintId, nodeId, ...}`; raw JSON is
//! accepted too when decoding (the TypeScript docs' client sends it that way).
//!
//! Our extra fields are optional, so a TypeScript-style job still decodes: `attempt` (1-based),
//! `activation` (which activation of the node this job runs), `kind` (`execute` or `wake`) and
//! `remainingMs` (a long delay chained over several delayed messages), `resumeSeq` (which
//! resume request a sub-run resume carries), `rev` (the run revision that scheduled the job)
//! and `deferredMs` (how long a version mismatch has deferred it so far).

use crate::Error;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// What a job asks the worker to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Run one attempt of the node.
    #[default]
    Execute,
    /// Wake a sleeping node (its timer fired).
    Wake,
    /// Resume an awaiting subflow node's sub-run (requested by a client).
    Resume,
}

fn is_execute(kind: &JobKind) -> bool {
    *kind == JobKind::Execute
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// The run.
    pub run_id: String,
    /// The run's blueprint.
    pub blueprint_id: String,
    /// The node to run.
    pub node_id: String,
    /// The attempt number, from 1 (absent = 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The activation this job runs (absent in TypeScript-style jobs; resolved by the worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<u64>,
    /// What to do.
    #[serde(default, skip_serializing_if = "is_execute")]
    pub kind: JobKind,
    /// For a chained wake-up: how much of the sleep is still left after this message's delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
    /// For a resume job: which resume request of the node it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_seq: Option<u64>,
    /// The run document revision whose commit scheduled this job (absent in older and
    /// TypeScript-style jobs). A worker whose read of the run is older than this has a stale
    /// copy: it gives the job back for a later try instead of dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    /// How long this job has already been deferred because its run is pinned to another
    /// blueprint version (milliseconds, summed over the deferrals); deferral stops after the
    /// worker's `version_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_ms: Option<u64>,
    /// TypeScript's flag; accepted and ignored (retries are queue messages here).
    #[serde(default, skip_serializing)]
    pub is_last_attempt: Option<bool>,
}

impl JobMessage {
    /// An execute job for the first attempt of `node` in `activation`.
    pub fn execute(run_id: &str, blueprint_id: &str, node_id: &str, activation: u64) -> Self {
        JobMessage {
            run_id: run_id.to_string(),
            blueprint_id: blueprint_id.to_string(),
            node_id: node_id.to_string(),
            attempt: None,
            activation: Some(activation),
            kind: JobKind::Execute,
            remaining_ms: None,
            resume_seq: None,
            rev: None,
            deferred_ms: None,
            is_last_attempt: None,
        }
    }

    /// The same job with its scheduling revision (`0` = unknown, left out).
    pub fn at_revision(mut self, rev: u64) -> Self {
        self.rev = (rev > 0).then_some(rev);
        self
    }

    /// The attempt number (1 when absent or zero).
    pub fn attempt(&self) -> u32 {
        self.attempt.unwrap_or(1).max(1)
    }

    /// Encodes as base64 of the JSON (the queue message text).
    pub fn encode(&self) -> Result<String, Error> {
        let json = serde_json::to_vec(self)
            .map_err(|e| Error::unexpected(format!("cannot serialize job message: {e}")))?;
        Ok(STANDARD.encode(json))
    }

    /// Decodes a queue message text: base64 of JSON, or raw JSON.
    pub fn decode(text: &str) -> Result<JobMessage, Error> {
        let trimmed = text.trim();
        let parsed = if trimmed.starts_with('{') {
            serde_json::from_str::<JobMessage>(trimmed)
        } else {
            let bytes = STANDARD.decode(trimmed).map_err(|e| {
                Error::invalid_input(format!(
                    "job message is neither JSON nor base64 of JSON ({e}); it cannot be processed"
                ))
            })?;
            serde_json::from_slice::<JobMessage>(&bytes)
        };
        let job = parsed.map_err(|e| {
            Error::invalid_input(format!(
                "job message is not a job `{{runId, blueprintId, nodeId}}`: {e}"
            ))
        })?;
        if job.run_id.is_empty() || job.blueprint_id.is_empty() {
            return Err(Error::invalid_input(
                "job message has an empty runId or blueprintId",
            ));
        }
        Ok(job)
    }

    /// Best effort: the run id of an undecodable message, to mark the run failed.
    pub fn sniff_run_id(text: &str) -> Option<String> {
        let trimmed = text.trim();
        let bytes = if trimmed.starts_with('{') {
            trimmed.as_bytes().to_vec()
        } else {
            STANDARD.decode(trimmed).ok()?
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        value.get("runId")?.as_str().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_as_base64_json_with_typescript_field_names() {
        let job = JobMessage::execute("r1", "bp", "a", 3);
        let text = job.encode().unwrap();
        let raw = STANDARD.decode(&text).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            value,
            json!({"runId": "r1", "blueprintId": "bp", "nodeId": "a", "activation": 3})
        );
        assert_eq!(JobMessage::decode(&text).unwrap(), job);
    }

    #[test]
    fn decodes_typescript_jobs_raw_and_base64() {
        let raw = r#"{"runId":"r","blueprintId":"b","nodeId":"n","isLastAttempt":false}"#;
        let job = JobMessage::decode(raw).unwrap();
        assert_eq!(job.node_id, "n");
        assert_eq!(job.attempt(), 1);
        assert_eq!(job.activation, None);
        assert_eq!(job.kind, JobKind::Execute);
        let b64 = STANDARD.encode(raw);
        assert_eq!(JobMessage::decode(&b64).unwrap(), job);
    }

    #[test]
    fn the_scheduling_revision_and_deferral_ride_as_optional_camel_case_fields() {
        let mut job = JobMessage::execute("r1", "bp", "a", 3).at_revision(7);
        job.deferred_ms = Some(30_000);
        let raw = STANDARD.decode(job.encode().unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(value["rev"], json!(7));
        assert_eq!(value["deferredMs"], json!(30_000));
        assert_eq!(
            JobMessage::execute("r", "b", "a", 1).at_revision(0).rev,
            None
        );
        let old = JobMessage::decode(r#"{"runId":"r","blueprintId":"b","nodeId":"n"}"#).unwrap();
        assert_eq!((old.rev, old.deferred_ms), (None, None));
    }

    #[test]
    fn garbage_is_an_invalid_input_error_and_never_panics() {
        for text in ["", "%%%", "e30=", "{\"runId\":1}", "bnVsbA==", "{"] {
            let err = JobMessage::decode(text).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{text}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = JobMessage::decode(&text);
            let _ = JobMessage::sniff_run_id(&text);
        }

        #[test]
        fn encode_then_decode_is_the_identity(
            run in "[a-z0-9-]{1,20}",
            node in ".{0,20}",
            attempt in proptest::option::of(1u32..10),
            activation in proptest::option::of(0u64..1000),
        ) {
            let mut job = JobMessage::execute(&run, "bp", &node, 0);
            job.attempt = attempt;
            job.activation = activation;
            let text = job.encode().unwrap();
            proptest::prop_assert_eq!(JobMessage::decode(&text).unwrap(), job);
        }
    }

    #[test]
    fn sniffs_the_run_id_of_a_message_missing_other_fields() {
        let text = STANDARD.encode(r#"{"runId":"r9"}"#);
        assert_eq!(JobMessage::sniff_run_id(&text).as_deref(), Some("r9"));
        assert_eq!(JobMessage::sniff_run_id("%%"), None);
    }
}
