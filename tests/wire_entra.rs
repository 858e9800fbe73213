//! Entra ID bearer tokens end to end against a local fake token endpoint (hyper on
//! 127.0.0.1): every flow (client secret, managed identity through IMDS and App Service,
//! workload identity, the Azure CLI with a fake `az` script) fetches a token that the Storage
//! and Cosmos signers put in the `Authorization` header; tokens are cached, refreshed when
//! due (an injected clock, no waiting), shared by concurrent requests; failing and malformed
//! endpoints give errors that say what to do; no token reaches a trace.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use flowcraft_azure::Error;
use flowcraft_azure::azure::auth::{
    AzureCliCredential, CachedCredential, ClientSecretCredential, CosmosBearerSigner,
    CredentialKind, ManagedIdentityCredential, StorageBearerSigner, TokenCredential, TokenHttp,
    WorkloadIdentityCredential, credential_from_lookup,
};
use flowcraft_azure::wire::clock::FixedClock;
use flowcraft_azure::wire::pipeline::{Pipeline, Signer};
use flowcraft_azure::wire::record::{Recorder, read_recording};
use flowcraft_azure::wire::redact::Redactor;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use flowcraft_azure::wire::retry::{Idempotency, RetryPolicy};
use flowcraft_azure::wire::transport::{HttpRequest, Transport};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "00000000-0000-0000-0000-00000000c11e";
const SECRET: &str = "SECRET~client+secret/value=";
const STORAGE: &str = "https://storage.azure.com/.default";
const COSMOS: &str = "https://acct.documents.azure.com/.default";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    form: HashMap<String, String>,
}

type Answer = Arc<dyn Fn(usize) -> (u16, String) + Send + Sync>;

/// A token endpoint (every path but `/svc/...`) and a service (`/svc/...`, answers 200).
/// The token answer is `answer(n)` for the n-th token request (1-based).
struct Fake {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    token_hits: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok_token(expires_in: u64) -> Answer {
    Arc::new(move |n| {
        (
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{expires_in},"ext_expires_in":{expires_in},"access_token":"eyJ0eXAi.token-{n}.sig"}}"#
            ),
        )
    })
}

fn decode(text: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

impl Fake {
    async fn start(answer: Answer) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let token_hits = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(answer));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (s, h, a, d) = (
            seen.clone(),
            token_hits.clone(),
            answer.clone(),
            delay_ms.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, h, a, d) = (s.clone(), h.clone(), a.clone(), d.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (s, h, a, d) = (s.clone(), h.clone(), a.clone(), d.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: decode(parts.uri.query().unwrap_or_default()),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.as_str().to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                form: decode(&String::from_utf8_lossy(&body)),
                            };
                            let is_service = seen.path.starts_with("/svc");
                            s.lock().expect("lock").push(seen);
                            let (status, text) = if is_service {
                                (200, "{}".to_string())
                            } else {
                                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                                let wait = d.load(Ordering::SeqCst);
                                if wait > 0 {
                                    tokio::time::sleep(Duration::from_millis(wait)).await;
                                }
                                let answer = a.lock().expect("lock").clone();
                                answer(n)
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(text)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake {
            base: format!("http://127.0.0.1:{port}"),
            seen,
            token_hits,
            answer,
            delay_ms,
            task,
        }
    }

    fn answer_with(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    fn hits(&self) -> usize {
        self.token_hits.load(Ordering::SeqCst)
    }

    fn token_requests(&self) -> Vec<Seen> {
        let seen = self.seen.lock().expect("lock");
        seen.iter()
            .filter(|s| !s.path.starts_with("/svc"))
            .cloned()
            .collect()
    }

    fn service_auth(&self) -> Vec<String> {
        let seen = self.seen.lock().expect("lock");
        seen.iter()
            .filter(|s| s.path.starts_with("/svc"))
            .map(|s| s.headers.get("authorization").cloned().unwrap_or_default())
            .collect()
    }
}

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0)
        .single()
        .expect("date")
}

fn transport() -> Arc<dyn Transport> {
    Arc::new(ReqwestTransport::new(Duration::from_secs(10)).expect("client"))
}

fn token_http(clock: &Arc<FixedClock>) -> TokenHttp {
    TokenHttp::new(transport())
        .with_clock(clock.clone())
        .with_retry(RetryPolicy::no_retries())
}

fn client_secret(fake: &Fake, clock: &Arc<FixedClock>) -> Arc<CachedCredential> {
    let flow = ClientSecretCredential::new(
        token_http(clock),
        TENANT,
        CLIENT,
        flowcraft_azure::azure::auth::Secret::new(SECRET),
    )
    .expect("valid ids")
    .with_authority(&fake.base)
    .expect("loopback authority");
    Arc::new(CachedCredential::new(Arc::new(flow)).with_clock(clock.clone()))
}

/// Sends one request to the fake service signed by `signer`.
async fn call(fake: &Fake, signer: Arc<dyn Signer>, clock: &Arc<FixedClock>) -> Result<(), Error> {
    let pipeline = Pipeline::new(transport(), signer)
        .with_clock(clock.clone())
        .with_retry(RetryPolicy::no_retries());
    let mut request =
        HttpRequest::parse("GET", format!("{}/svc/q/messages", fake.base)).expect("valid request");
    request.set_header("x-ms-version", "2021-12-02");
    let response = pipeline.send(request, Idempotency::Idempotent).await?;
    assert_eq!(response.status, 200);
    Ok(())
}

#[tokio::test]
async fn client_secret_token_is_fetched_and_sent_as_bearer() {
    let fake = Fake::start(ok_token(3600)).await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let credential = client_secret(&fake, &clock);
    let signer = Arc::new(StorageBearerSigner::new(credential.clone()));
    call(&fake, signer.clone(), &clock).await.expect("signed");
    call(&fake, signer, &clock).await.expect("signed");
    assert_eq!(
        fake.service_auth(),
        vec!["Bearer eyJ0eXAi.token-1.sig"; 2],
        "one fetch, the token is cached"
    );
    let requests = fake.token_requests();
    let token = &requests[0];
    assert_eq!(token.method, "POST");
    assert_eq!(token.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(
        token.headers.get("content-type").map(String::as_str),
        Some("application/x-www-form-urlencoded")
    );
    for (name, value) in [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("scope", STORAGE),
    ] {
        assert_eq!(
            token.form.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    let shown = format!("{credential:?}");
    assert!(
        !shown.contains("SECRET") && !shown.contains("token-1"),
        "{shown}"
    );
}

#[tokio::test]
async fn cosmos_gets_its_own_scope_and_the_url_encoded_aad_header() {
    let fake = Fake::start(ok_token(3600)).await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let credential = client_secret(&fake, &clock);
    let cosmos = Arc::new(CosmosBearerSigner::new(credential.clone(), COSMOS).expect("scope"));
    let storage = Arc::new(StorageBearerSigner::new(credential));
    call(&fake, cosmos.clone(), &clock).await.expect("signed");
    call(&fake, storage, &clock).await.expect("signed");
    call(&fake, cosmos, &clock).await.expect("signed");
    assert_eq!(
        fake.service_auth(),
        vec![
            "type%3Daad%26ver%3D1.0%26sig%3DeyJ0eXAi.token-1.sig".to_string(),
            "Bearer eyJ0eXAi.token-2.sig".to_string(),
            "type%3Daad%26ver%3D1.0%26sig%3DeyJ0eXAi.token-1.sig".to_string(),
        ],
        "one token per scope"
    );
    let scopes: Vec<String> = fake
        .token_requests()
        .iter()
        .map(|s| s.form.get("scope").cloned().unwrap_or_default())
        .collect();
    assert_eq!(scopes, vec![COSMOS, STORAGE]);
}

#[tokio::test]
async fn a_token_is_refreshed_when_due_and_the_new_one_is_used() {
    // A 10-minute token is refreshed at half-life (5 minutes), not just before expiry.
    let fake = Fake::start(ok_token(600)).await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let signer = Arc::new(StorageBearerSigner::new(client_secret(&fake, &clock)));
    call(&fake, signer.clone(), &clock).await.expect("signed");
    clock.advance(chrono::Duration::minutes(4));
    call(&fake, signer.clone(), &clock).await.expect("signed");
    assert_eq!(fake.hits(), 1);
    clock.advance(chrono::Duration::minutes(2));
    call(&fake, signer.clone(), &clock).await.expect("signed");
    call(&fake, signer, &clock).await.expect("signed");
    assert_eq!(fake.hits(), 2);
    assert_eq!(
        fake.service_auth(),
        vec![
            "Bearer eyJ0eXAi.token-1.sig",
            "Bearer eyJ0eXAi.token-1.sig",
            "Bearer eyJ0eXAi.token-2.sig",
            "Bearer eyJ0eXAi.token-2.sig",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_one_token_fetch() {
    let fake = Fake::start(ok_token(3600)).await;
    // The fake answers slowly, so the requests overlap the fetch.
    fake.delay_ms.store(100, Ordering::SeqCst);
    let clock = Arc::new(FixedClock::new(start_time()));
    let signer: Arc<dyn Signer> = Arc::new(StorageBearerSigner::new(client_secret(&fake, &clock)));
    let fake = Arc::new(fake);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (fake, signer, clock) = (fake.clone(), signer.clone(), clock.clone());
            tokio::spawn(async move { call(&fake, signer, &clock).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("signed");
    }
    assert_eq!(fake.hits(), 1, "32 concurrent requests, one token request");
    assert_eq!(fake.service_auth().len(), 32);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_valid_token_and_an_expired_one_is_a_clear_error() {
    let fake = Fake::start(ok_token(3600)).await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let signer = Arc::new(StorageBearerSigner::new(client_secret(&fake, &clock)));
    call(&fake, signer.clone(), &clock).await.expect("signed");
    fake.answer_with(Arc::new(|_| {
        (
            400,
            format!(
                r#"{{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided ({SECRET}).","error_codes":[7000215]}}"#
            ),
        )
    }));
    clock.advance(chrono::Duration::minutes(56));
    call(&fake, signer.clone(), &clock)
        .await
        .expect("the old token is still valid");
    assert_eq!(fake.hits(), 2);
    assert_eq!(
        fake.service_auth().last().map(String::as_str),
        Some("Bearer eyJ0eXAi.token-1.sig")
    );
    clock.advance(chrono::Duration::minutes(5));
    let err = call(&fake, signer, &clock).await.expect_err("expired");
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("invalid_client"));
    let text = err.to_string();
    for says in [
        "token endpoint answered 400",
        "AADSTS7000215",
        "AZURE_CLIENT_SECRET",
    ] {
        assert!(text.contains(says), "{says}: {text}");
    }
    assert!(!text.contains("client+secret"), "the secret leaked: {text}");
    assert!(!format!("{err:?}").contains("client+secret"));
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_then_reported() {
    let fake = Fake::start(Arc::new(|_| (500, "oops".to_string()))).await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let http = TokenHttp::new(transport())
        .with_clock(clock.clone())
        .with_retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        });
    let flow = ClientSecretCredential::new(
        http,
        TENANT,
        CLIENT,
        flowcraft_azure::azure::auth::Secret::new(SECRET),
    )
    .expect("ids")
    .with_authority(&fake.base)
    .expect("authority");
    let err = flow.token(STORAGE).await.expect_err("500");
    assert_eq!(fake.hits(), 3, "a 500 is retried");
    assert_eq!(err.status(), Some(500));
    let text = err.to_string();
    assert!(
        text.contains("client secret") && text.contains("answered 500"),
        "{text}"
    );
}

#[tokio::test]
async fn malformed_token_answers_are_errors_that_say_so() {
    for body in [
        "<html>login</html>",
        r#"{"access_token":42,"expires_in":3600}"#,
        r#"{"access_token":"eyJ0eXAi.x.y"}"#,
        r#"{"access_token":"eyJ0eXAi.x.y","expires_in":"an hour"}"#,
        r#"{"access_token":"eyJ0eXAi.x.y","expires_in":-5}"#,
    ] {
        let fake = Fake::start(Arc::new(move |_| (200, body.to_string()))).await;
        let clock = Arc::new(FixedClock::new(start_time()));
        let signer = Arc::new(StorageBearerSigner::new(client_secret(&fake, &clock)));
        let err = call(&fake, signer, &clock).await.expect_err(body);
        let text = err.to_string();
        assert!(
            text.contains("not a usable token") || text.contains("expired"),
            "{body}: {text}"
        );
        assert!(!text.contains("eyJ0eXAi"), "{text}");
        assert!(fake.service_auth().is_empty(), "nothing sent unsigned");
    }
}

#[tokio::test]
async fn imds_managed_identity_sends_resource_client_id_and_metadata_header() {
    let expires_on = (start_time() + chrono::Duration::hours(1)).timestamp();
    let fake = Fake::start(Arc::new(move |n| {
        (
            200,
            format!(
                r#"{{"access_token":"eyJ0eXAi.mi-{n}.sig","client_id":"c","expires_in":"3599","expires_on":"{expires_on}","resource":"https://storage.azure.com","token_type":"Bearer"}}"#
            ),
        )
    }))
    .await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let flow = ManagedIdentityCredential::imds(token_http(&clock))
        .with_imds_endpoint(&format!("{}/metadata/identity/oauth2/token", fake.base))
        .expect("endpoint")
        .with_client_id(CLIENT)
        .expect("id");
    let token = flow.token(STORAGE).await.expect("token");
    assert_eq!(token.token.expose(), "eyJ0eXAi.mi-1.sig");
    assert_eq!(
        token.expires_on,
        start_time() + chrono::Duration::seconds(3599)
    );
    let seen = &fake.token_requests()[0];
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/metadata/identity/oauth2/token")
    );
    assert_eq!(
        seen.headers.get("metadata").map(String::as_str),
        Some("true")
    );
    for (name, value) in [
        ("api-version", "2018-02-01"),
        ("resource", "https://storage.azure.com"),
        ("client_id", CLIENT),
    ] {
        assert_eq!(
            seen.query.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    // An IMDS refusal names what to check.
    fake.answer_with(Arc::new(|_| {
        (
            400,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
        )
    }));
    let err = flow.token(COSMOS).await.expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("Identity not found") && text.contains("AZURE_CLIENT_ID"),
        "{text}"
    );
}

#[tokio::test]
async fn app_service_managed_identity_uses_the_identity_header_and_epoch_expiry() {
    let expires_on = (start_time() + chrono::Duration::hours(2)).timestamp();
    for answer in [
        format!(
            r#"{{"access_token":"eyJ0eXAi.as.sig","expires_on":{expires_on},"token_type":"Bearer"}}"#
        ),
        format!(
            r#"{{"access_token":"eyJ0eXAi.as.sig","expires_on":"{expires_on}","resource":"r"}}"#
        ),
    ] {
        let fake = Fake::start(Arc::new(move |_| (200, answer.clone()))).await;
        let clock = Arc::new(FixedClock::new(start_time()));
        let vars = HashMap::from([
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", fake.base)),
            ("IDENTITY_HEADER", "SECRET-identity-header".to_string()),
        ]);
        let lookup = |name: &str| vars.get(name).cloned();
        let credential =
            credential_from_lookup(CredentialKind::ManagedIdentity, &lookup, token_http(&clock))
                .expect("app service identity");
        assert!(
            !format!("{credential:?}").contains("SECRET"),
            "{credential:?}"
        );
        let cosmos = Arc::new(CosmosBearerSigner::new(credential, COSMOS).expect("scope"));
        call(&fake, cosmos, &clock).await.expect("signed");
        assert_eq!(
            fake.service_auth(),
            vec!["type%3Daad%26ver%3D1.0%26sig%3DeyJ0eXAi.as.sig"]
        );
        let seen = &fake.token_requests()[0];
        assert_eq!(seen.path, "/msi/token");
        assert_eq!(
            seen.headers.get("x-identity-header").map(String::as_str),
            Some("SECRET-identity-header")
        );
        assert_eq!(
            seen.query.get("api-version").map(String::as_str),
            Some("2019-08-01")
        );
        assert_eq!(
            seen.query.get("resource").map(String::as_str),
            Some("https://acct.documents.azure.com")
        );
    }
}

#[tokio::test]
async fn an_unreachable_managed_identity_endpoint_says_where_it_works() {
    // Bind then drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let clock = Arc::new(FixedClock::new(start_time()));
    let flow = ManagedIdentityCredential::imds(token_http(&clock))
        .with_imds_endpoint(&format!(
            "http://127.0.0.1:{port}/metadata/identity/oauth2/token"
        ))
        .expect("endpoint");
    let err = flow.token(STORAGE).await.expect_err("nothing listens");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("running on Azure"), "{err}");
}

/// The settings path: endpoints without keys plus `FLOWCRAFT_AZURE_CREDENTIAL` give
/// connections whose signers send bearer tokens from the (fake) authority.
#[tokio::test]
async fn settings_with_a_credential_kind_sign_both_services_with_tokens() {
    let fake = Fake::start(ok_token(3600)).await;
    let vars = HashMap::from([
        ("AZURE_QUEUE_ENDPOINT", format!("{}/svc/acct", fake.base)),
        ("COSMOS_ENDPOINT", format!("{}/svc", fake.base)),
        ("FLOWCRAFT_COSMOS_SCOPE", COSMOS.to_string()),
        ("FLOWCRAFT_AZURE_CREDENTIAL", "client-secret".to_string()),
        ("AZURE_TENANT_ID", TENANT.to_string()),
        ("AZURE_CLIENT_ID", CLIENT.to_string()),
        ("AZURE_CLIENT_SECRET", SECRET.to_string()),
        ("AZURE_AUTHORITY_HOST", fake.base.clone()),
    ]);
    let settings =
        flowcraft_azure::adapter::settings::Settings::from_lookup(|name| vars.get(name).cloned())
            .expect("settings");
    assert_eq!(
        settings.storage.account, "svc",
        "path-style: the first path segment"
    );
    let clock = Arc::new(FixedClock::new(start_time()));
    call(&fake, settings.storage.signer(), &clock)
        .await
        .expect("signed");
    call(&fake, settings.cosmos.signer(), &clock)
        .await
        .expect("signed");
    call(&fake, settings.storage.signer(), &clock)
        .await
        .expect("signed");
    assert_eq!(
        fake.service_auth(),
        vec![
            "Bearer eyJ0eXAi.token-1.sig".to_string(),
            "type%3Daad%26ver%3D1.0%26sig%3DeyJ0eXAi.token-2.sig".to_string(),
            "Bearer eyJ0eXAi.token-1.sig".to_string(),
        ],
        "one credential, one cached token per scope"
    );
    let shown = format!("{settings:?} {:?} {:?}", settings.storage, settings.cosmos);
    assert!(
        !shown.contains("client+secret") && !shown.contains("token-"),
        "{shown}"
    );
}

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flowcraft-entra-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn workload_identity_sends_the_federated_token_read_on_each_fetch() {
    let fake = Fake::start(ok_token(600)).await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let dir = temp_dir("wi");
    let file = dir.join("token");
    std::fs::write(&file, "federated-assertion-1\n").expect("write");
    let vars = HashMap::from([
        ("AZURE_TENANT_ID", TENANT.to_string()),
        ("AZURE_CLIENT_ID", CLIENT.to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
        ("AZURE_AUTHORITY_HOST", fake.base.clone()),
    ]);
    let lookup = |name: &str| vars.get(name).cloned();
    let credential = credential_from_lookup(
        CredentialKind::WorkloadIdentity,
        &lookup,
        token_http(&clock),
    )
    .expect("workload identity");
    let signer = Arc::new(StorageBearerSigner::new(credential));
    call(&fake, signer.clone(), &clock).await.expect("signed");
    std::fs::write(&file, "federated-assertion-2").expect("rotate");
    clock.advance(chrono::Duration::minutes(6));
    call(&fake, signer.clone(), &clock).await.expect("signed");
    let forms: Vec<HashMap<String, String>> =
        fake.token_requests().into_iter().map(|s| s.form).collect();
    assert_eq!(forms.len(), 2);
    for (form, assertion) in forms
        .iter()
        .zip(["federated-assertion-1", "federated-assertion-2"])
    {
        assert_eq!(
            form.get("client_assertion_type").map(String::as_str),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        assert_eq!(
            form.get("client_assertion").map(String::as_str),
            Some(assertion)
        );
        assert_eq!(form.get("client_id").map(String::as_str), Some(CLIENT));
        assert!(!form.contains_key("client_secret"));
    }
    assert_eq!(
        fake.service_auth(),
        vec!["Bearer eyJ0eXAi.token-1.sig", "Bearer eyJ0eXAi.token-2.sig"]
    );
    // A token file that went away: the error names the variable.
    std::fs::remove_file(&file).expect("remove");
    let flow = WorkloadIdentityCredential::new(token_http(&clock), TENANT, CLIENT, &file)
        .expect("ids")
        .with_authority(&fake.base)
        .expect("authority");
    let err = flow.token(STORAGE).await.expect_err("no file");
    assert!(
        err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
fn script(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("az");
    {
        let mut file = std::fs::File::create(&path).expect("create script");
        file.write_all(format!("#!/bin/sh\n{body}\n").as_bytes())
            .expect("write script");
        file.sync_all().expect("sync");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Runs a credential, retrying only the rare "text file busy" of a script just written
/// while another thread forks.
#[cfg(unix)]
async fn run_cli(flow: &AzureCliCredential, scope: &str) -> Result<String, Error> {
    for _ in 0..5 {
        match flow.token(scope).await {
            Err(e) if e.to_string().contains("busy") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.map(|t| t.token.expose().to_string()),
        }
    }
    flow.token(scope)
        .await
        .map(|t| t.token.expose().to_string())
}

#[cfg(unix)]
#[tokio::test]
async fn azure_cli_token_comes_from_a_fake_az_script() {
    let clock = Arc::new(FixedClock::new(start_time()));
    let dir = temp_dir("az");
    let expires_on = (start_time() + chrono::Duration::hours(1)).timestamp();
    let program = script(
        &dir,
        &format!(
            "echo \"$@\" > \"$(dirname \"$0\")/args\"\n\
             echo '{{\"accessToken\":\"eyJ0eXAi.cli.sig\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":{expires_on},\"tokenType\":\"Bearer\"}}'"
        ),
    );
    let flow = AzureCliCredential::new()
        .with_program(&program)
        .with_clock(clock.clone());
    assert_eq!(
        run_cli(&flow, STORAGE).await.expect("token"),
        "eyJ0eXAi.cli.sig"
    );
    let args = std::fs::read_to_string(dir.join("args")).expect("args written");
    assert_eq!(
        args.trim(),
        format!("account get-access-token --scope {STORAGE} --output json")
    );
    // Through the cache and a signer.
    let fake = Fake::start(ok_token(1)).await;
    let cached = Arc::new(CachedCredential::new(Arc::new(flow)).with_clock(clock.clone()));
    call(&fake, Arc::new(StorageBearerSigner::new(cached)), &clock)
        .await
        .expect("signed");
    assert_eq!(fake.service_auth(), vec!["Bearer eyJ0eXAi.cli.sig"]);

    // Not logged in: the CLI's message and what to do.
    let program = script(
        &dir,
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1",
    );
    let flow = AzureCliCredential::new().with_program(&program);
    let err = run_cli(&flow, STORAGE).await.expect_err("not logged in");
    let text = err.to_string();
    assert!(matches!(err, Error::Auth(_)), "{text}");
    assert!(
        text.contains("Please run 'az login'") && text.contains("run `az login`"),
        "{text}"
    );

    // An answer without a token.
    let program = script(&dir, "echo '{\"expires_on\": 1}'");
    let flow = AzureCliCredential::new().with_program(&program);
    let err = run_cli(&flow, STORAGE).await.expect_err("malformed");
    assert!(err.to_string().contains("accessToken"), "{err}");

    // No CLI at all.
    let flow = AzureCliCredential::new().with_program(dir.join("no-such-az"));
    let err = flow.token(STORAGE).await.expect_err("missing");
    assert!(err.to_string().contains("was not found"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `Write` into a shared buffer.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_reaches_a_trace_and_token_traffic_is_not_recorded() {
    let fake = Fake::start(ok_token(3600)).await;
    let clock = Arc::new(FixedClock::new(start_time()));
    let credential = client_secret(&fake, &clock);
    let buffer = Shared::default();
    let recorder: Arc<dyn Transport> = Arc::new(Recorder::to_writer(
        transport(),
        buffer.clone(),
        Redactor::new(),
    ));
    for signer in [
        Arc::new(StorageBearerSigner::new(credential.clone())) as Arc<dyn Signer>,
        Arc::new(CosmosBearerSigner::new(credential, COSMOS).expect("scope")),
    ] {
        let pipeline = Pipeline::new(recorder.clone(), signer).with_clock(clock.clone());
        let request =
            HttpRequest::parse("GET", format!("{}/svc/dbs", fake.base)).expect("valid request");
        pipeline
            .send(request, Idempotency::Idempotent)
            .await
            .expect("sent");
    }
    let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
    let exchanges = read_recording(&text).expect("valid trace");
    assert_eq!(exchanges.len(), 2, "only the service requests are recorded");
    assert!(exchanges.iter().all(|e| e.url.contains("/svc/")));
    assert!(
        !text.contains("token-1") && !text.contains("token-2"),
        "{text}"
    );
    assert!(!text.contains("client+secret"), "{text}");
    assert_eq!(fake.hits(), 2);
}
