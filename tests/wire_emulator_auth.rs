//! Signers against a live Azurite, which really verifies SharedKey, account SAS and service
//! SAS (emulator spec §3.1): the offline golden vectors prove we match the SDKs, this proves
//! the service accepts what we send, and that a bad signature is refused. A recording of
//! SharedKey and SAS traffic against Azurite holds no key and no signature.
//! Switched on by `FLOWCRAFT_EMULATORS=1` (scripts/test.sh, endpoint from
//! `AZURE_QUEUE_ENDPOINT`); switched on, an unreachable Azurite fails the tests.

mod support;

use chrono::{Duration as ChronoDuration, Utc};
use std::sync::Arc;
use std::time::Duration;

use flowcraft_azure::azure::auth::{
    AccountSasOptions, SasSigner, ServiceSasOptions, SharedKeySigner, account_sas,
    queue_service_sas,
};
use flowcraft_azure::wire::pipeline::{Pipeline, Signer};
use flowcraft_azure::wire::record::{Recorder, read_recording};
use flowcraft_azure::wire::redact::{REDACTED, Redactor, find_leaks};
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use flowcraft_azure::wire::retry::{Idempotency, RetryPolicy};
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse};
use support::{emulators_enabled, unique};

/// The queue endpoint when emulator tests are switched on; `None` (test returns) otherwise.
fn endpoint(test: &str) -> Option<String> {
    emulators_enabled(test).then(|| support::queue_endpoint().trim_end_matches('/').to_string())
}

fn key_signer() -> SharedKeySigner {
    SharedKeySigner::new(support::storage_account(), support::storage_key()).expect("valid key")
}

async fn send(signer: Arc<dyn Signer>, method: &str, url: &str, body: &str) -> HttpResponse {
    let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(10)).expect("client"));
    let pipeline = Pipeline::new(transport, signer).with_retry(RetryPolicy::no_retries());
    let mut request = HttpRequest::parse(method, url).expect("valid request");
    request.set_header("x-ms-version", "2021-12-02");
    if !body.is_empty() {
        request.set_header("Content-Type", "application/xml");
        request.set_body(body.as_bytes().to_vec());
    }
    pipeline
        .send(request, Idempotency::Idempotent)
        .await
        .expect("Azurite must be reachable when FLOWCRAFT_EMULATORS=1")
}

const MESSAGE: &str = "<QueueMessage><MessageText>aGVsbG8=</MessageText></QueueMessage>";

#[tokio::test]
async fn azurite_accepts_shared_key_account_sas_and_service_sas() {
    let Some(base) = endpoint("azurite_accepts_shared_key_account_sas_and_service_sas") else {
        return;
    };
    let queue = unique("wireauth");
    let key = key_signer();
    let created = send(Arc::new(key.clone()), "PUT", &format!("{base}/{queue}"), "").await;
    assert_eq!(
        created.status,
        201,
        "SharedKey create: {}",
        String::from_utf8_lossy(&created.body)
    );

    let expiry = Utc::now() + ChronoDuration::hours(1);
    let account = SasSigner::new(account_sas(
        &key,
        &AccountSasOptions::queue("rwdlacup", expiry),
    ))
    .expect("token");
    let put = send(
        Arc::new(account),
        "POST",
        &format!("{base}/{queue}/messages"),
        MESSAGE,
    )
    .await;
    assert_eq!(
        put.status,
        201,
        "account SAS put: {}",
        String::from_utf8_lossy(&put.body)
    );

    let service = SasSigner::new(queue_service_sas(
        &key,
        &queue,
        &ServiceSasOptions::new("raup", expiry),
    ))
    .expect("token");
    let got = send(
        Arc::new(service),
        "GET",
        &format!("{base}/{queue}/messages?numofmessages=1"),
        "",
    )
    .await;
    assert_eq!(
        got.status,
        200,
        "service SAS get: {}",
        String::from_utf8_lossy(&got.body)
    );
    assert!(String::from_utf8_lossy(&got.body).contains("aGVsbG8="));

    let deleted = send(Arc::new(key), "DELETE", &format!("{base}/{queue}"), "").await;
    assert_eq!(deleted.status, 204);
}

#[tokio::test]
async fn azurite_refuses_wrong_key_expired_sas_and_sas_for_another_queue() {
    let Some(base) = endpoint("azurite_refuses_wrong_key_expired_sas_and_sas_for_another_queue")
    else {
        return;
    };
    let queue = unique("wirebad");
    let key = key_signer();
    let wrong = SharedKeySigner::new(
        key.account(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .expect("key");
    let refused = send(Arc::new(wrong), "PUT", &format!("{base}/{queue}"), "").await;
    assert_eq!(refused.status, 403);

    let created = send(Arc::new(key.clone()), "PUT", &format!("{base}/{queue}"), "").await;
    assert_eq!(created.status, 201);
    let expired = Utc::now() - ChronoDuration::hours(1);
    let old = SasSigner::new(account_sas(
        &key,
        &AccountSasOptions::queue("rwdlacup", expired),
    ))
    .expect("token");
    let put = send(
        Arc::new(old),
        "POST",
        &format!("{base}/{queue}/messages"),
        MESSAGE,
    )
    .await;
    assert_eq!(put.status, 403, "expired SAS must be refused");

    let expiry = Utc::now() + ChronoDuration::hours(1);
    let other = SasSigner::new(queue_service_sas(
        &key,
        "some-other-queue",
        &ServiceSasOptions::new("raup", expiry),
    ))
    .expect("token");
    let put = send(
        Arc::new(other),
        "POST",
        &format!("{base}/{queue}/messages"),
        MESSAGE,
    )
    .await;
    assert_eq!(
        put.status, 403,
        "a service SAS for another queue must be refused"
    );
    let _ = send(Arc::new(key), "DELETE", &format!("{base}/{queue}"), "").await;
}

/// One recorded request: signer, method, URL, body and the status Azurite must answer.
type Step = (Arc<dyn Signer>, &'static str, String, &'static str, u16);

/// The `sig` value of a SAS token (as written in the token, URL-encoded).
fn sig_of(token: &str) -> String {
    token
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn recording_against_azurite_holds_no_key_or_signature() {
    let Some(base) = endpoint("recording_against_azurite_holds_no_key_or_signature") else {
        return;
    };
    let queue = unique("wirerec");
    let key = key_signer();
    let expiry = Utc::now() + ChronoDuration::hours(1);
    let account_token = account_sas(&key, &AccountSasOptions::queue("rwdlacup", expiry));
    let service_token = queue_service_sas(&key, &queue, &ServiceSasOptions::new("raup", expiry));
    let path = std::env::temp_dir().join(format!("{queue}.jsonl"));
    let real = Arc::new(ReqwestTransport::new(Duration::from_secs(10)).expect("client"));
    // Only the built-in rules: the recorder is not told the key or the tokens.
    let recorder = Arc::new(Recorder::to_file(real, &path, Redactor::new()).expect("recorder"));
    // (signer, method, URL, body, expected status)
    let steps: [Step; 4] = [
        (
            Arc::new(key.clone()),
            "PUT",
            format!("{base}/{queue}"),
            "",
            201,
        ),
        (
            Arc::new(SasSigner::new(account_token.clone()).expect("token")),
            "POST",
            format!("{base}/{queue}/messages"),
            MESSAGE,
            201,
        ),
        (
            Arc::new(SasSigner::new(service_token.clone()).expect("token")),
            "GET",
            format!("{base}/{queue}/messages?numofmessages=1"),
            "",
            200,
        ),
        (Arc::new(key), "DELETE", format!("{base}/{queue}"), "", 204),
    ];
    for (signer, method, url, body, status) in steps {
        let pipeline =
            Pipeline::new(recorder.clone(), signer).with_retry(RetryPolicy::no_retries());
        let mut request = HttpRequest::parse(method, url).expect("valid request");
        request.set_header("x-ms-version", "2021-12-02");
        request.set_body(body.as_bytes().to_vec());
        let answer = pipeline
            .send(request, Idempotency::Idempotent)
            .await
            .expect("Azurite must be reachable when FLOWCRAFT_EMULATORS=1");
        assert_eq!(answer.status, status, "{method}");
    }
    let text = std::fs::read_to_string(&path).expect("recording written");
    let _ = std::fs::remove_file(&path);
    let exchanges = read_recording(&text).expect("valid recording");
    assert_eq!(exchanges.len(), 4);
    assert!(
        exchanges.iter().all(|e| e.signature_sha256.is_some()),
        "every exchange keeps a signature hash"
    );
    assert_eq!(find_leaks(&text), Vec::<String>::new());
    for (exchange, signed_by_key) in exchanges.iter().zip([true, false, false, true]) {
        let auth = exchange.request_header("authorization");
        assert_eq!(auth.is_some(), signed_by_key, "exchange {}", exchange.seq);
        assert!(
            auth.is_none_or(|a| a == REDACTED),
            "exchange {}",
            exchange.seq
        );
    }
    let key = support::storage_key();
    for secret in [key, sig_of(&account_token), sig_of(&service_token)] {
        assert!(secret.len() >= 20, "a real secret to look for");
        assert!(!text.contains(&secret), "a secret reached the recording");
        let decoded = secret
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=");
        assert!(
            !text.contains(&decoded),
            "a decoded secret reached the recording"
        );
    }
}
