//! Connection-string parsing, the HTTPS-unless-loopback rule, SAS signing of requests, and
//! redaction of every credential-holding type in `Debug` / `Display` / errors.

use chrono::{TimeZone, Utc};
use flowcraft_azure::Error;
use flowcraft_azure::azure::auth::{
    ConnectionOptions, CosmosConnection, CosmosCredential, CosmosMasterKeySigner,
    CosmosResourceTokenSigner, SasSigner, SharedKeySigner, StorageConnection, StorageCredential,
    check_endpoint,
};
use flowcraft_azure::wire::pipeline::Signer;
use flowcraft_azure::wire::transport::HttpRequest;

const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const COSMOS_EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

fn is_invalid_input(result: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::InvalidInput(_)))
}

#[test]
fn use_development_storage_gives_azurite_defaults() {
    let c = StorageConnection::parse("UseDevelopmentStorage=true").expect("parses");
    assert_eq!(c.account, "devstoreaccount1");
    assert_eq!(c.queue_endpoint, "http://127.0.0.1:10001/devstoreaccount1");
    assert!(matches!(c.credential, StorageCredential::SharedKey(_)));
}

#[test]
fn azure_storage_string_builds_https_queue_endpoint_from_suffix() {
    let c = StorageConnection::parse(&format!(
        "DefaultEndpointsProtocol=https;AccountName=myacct;AccountKey={DEV_KEY};EndpointSuffix=core.chinacloudapi.cn"
    ))
    .expect("parses");
    assert_eq!(
        c.queue_endpoint,
        "https://myacct.queue.core.chinacloudapi.cn"
    );
    assert_eq!(c.account, "myacct");
    let c =
        StorageConnection::parse(&format!("AccountName=a1;AccountKey={DEV_KEY}")).expect("parses");
    assert_eq!(c.queue_endpoint, "https://a1.queue.core.windows.net");
}

#[test]
fn explicit_queue_endpoint_wins_and_emulator_account_comes_from_the_path() {
    let c = StorageConnection::parse(
        "QueueEndpoint=http://127.0.0.1:11001/devstoreaccount1/;SharedAccessSignature=sv=2021-12-02&sp=raup&sig=abc%3D",
    )
    .expect("parses");
    assert_eq!(c.queue_endpoint, "http://127.0.0.1:11001/devstoreaccount1");
    assert_eq!(c.account, "devstoreaccount1");
    assert!(matches!(c.credential, StorageCredential::Sas(_)));
    let c = StorageConnection::parse(
        "QueueEndpoint=https://prod1.queue.core.windows.net;SharedAccessSignature=sig=x",
    )
    .expect("parses");
    assert_eq!(c.account, "prod1");
}

#[test]
fn plain_http_is_refused_off_loopback_unless_allowed() {
    let text = format!("DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={DEV_KEY}");
    let refused = StorageConnection::parse(&text);
    assert!(is_invalid_input(&refused));
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("plain http"), "{message}");
    assert!(!message.contains(DEV_KEY), "{message}");
    let allowed = StorageConnection::parse_with(&text, ConnectionOptions { allow_http: true });
    assert!(allowed.is_ok());
    for ok in [
        "http://127.0.0.1:1/x",
        "http://localhost:1",
        "http://[::1]:18081/",
        "https://example.com",
    ] {
        assert!(check_endpoint(ok, false).is_ok(), "{ok}");
    }
    for bad in [
        "http://10.0.0.5:10001",
        "ftp://127.0.0.1",
        "not a url",
        "https://h/?sig=x",
    ] {
        assert!(is_invalid_input(&check_endpoint(bad, false)), "{bad}");
    }
}

#[test]
fn storage_string_errors_name_the_problem_without_values() {
    let missing = StorageConnection::parse("AccountName=acct");
    assert!(is_invalid_input(&missing));
    assert!(
        missing
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("AccountKey")
    );
    let bad_key = StorageConnection::parse("AccountName=acct;AccountKey=SECRET!!notbase64");
    let text = bad_key.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("base64") && !text.contains("SECRET"),
        "{text}"
    );
    assert!(is_invalid_input(&StorageConnection::parse("garbage")));
    assert!(is_invalid_input(&StorageConnection::parse("")));
}

#[test]
fn cosmos_string_parses_key_and_resource_token() {
    let c = CosmosConnection::parse(&format!(
        "AccountEndpoint=http://127.0.0.1:18081/;AccountKey={COSMOS_EMULATOR_KEY};"
    ))
    .expect("parses");
    assert_eq!(c.endpoint, "http://127.0.0.1:18081");
    assert!(matches!(c.credential, CosmosCredential::MasterKey(_)));
    let c = CosmosConnection::parse(
        "AccountEndpoint=https://acct.documents.azure.com:443/;ResourceToken=type=resource&ver=1.0&sig=abc",
    )
    .expect("parses");
    assert!(matches!(c.credential, CosmosCredential::ResourceToken(_)));
    assert!(is_invalid_input(&CosmosConnection::parse("AccountKey=abc")));
    assert!(is_invalid_input(&CosmosConnection::parse(&format!(
        "AccountEndpoint=http://cosmos.internal:8081/;AccountKey={COSMOS_EMULATOR_KEY}"
    ))));
}

#[tokio::test]
async fn sas_signer_appends_token_to_existing_or_missing_query() {
    let signer = SasSigner::new("?sv=2021-12-02&sig=abc%3D").expect("valid token");
    let now = Utc
        .with_ymd_and_hms(2026, 11, 26, 0, 0, 0)
        .single()
        .expect("date");
    let mut with_query =
        HttpRequest::parse("GET", "http://127.0.0.1:1/a/q/messages?numofmessages=1")
            .expect("valid request");
    signer.sign(&mut with_query, now).await.expect("signs");
    assert_eq!(
        with_query.url.as_str(),
        "http://127.0.0.1:1/a/q/messages?numofmessages=1&sv=2021-12-02&sig=abc%3D"
    );
    let mut bare = HttpRequest::parse("PUT", "http://127.0.0.1:1/a/q").expect("valid request");
    signer.sign(&mut bare, now).await.expect("signs");
    assert_eq!(
        bare.url.as_str(),
        "http://127.0.0.1:1/a/q?sv=2021-12-02&sig=abc%3D"
    );
    assert!(bare.header("authorization").is_none());
    assert!(is_invalid_input(&SasSigner::new("sv=2021-12-02&sp=r")));
}

#[tokio::test]
async fn resource_token_is_sent_url_encoded_once() {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 26, 0, 0, 0)
        .single()
        .expect("date");
    for token in [
        "type=resource&ver=1.0&sig=a+b",
        "type%3Dresource%26ver%3D1.0%26sig%3Da%2Bb",
    ] {
        let signer = CosmosResourceTokenSigner::new(token).expect("valid");
        let mut req =
            HttpRequest::parse("GET", "http://127.0.0.1:18081/dbs/d").expect("valid request");
        signer.sign(&mut req, now).await.expect("signs");
        assert_eq!(
            req.header("authorization"),
            Some("type%3Dresource%26ver%3D1.0%26sig%3Da%2Bb")
        );
        assert_eq!(
            req.header("x-ms-date"),
            Some("Thu, 26 Nov 2026 00:00:00 GMT")
        );
    }
}

#[test]
fn every_credential_type_redacts_in_debug() {
    let sas = "sv=2021-12-02&sig=SASSIGVALUE";
    let storage = StorageConnection::parse(&format!("AccountName=acct;AccountKey={DEV_KEY}"))
        .expect("parses");
    let sas_conn = StorageConnection::parse(&format!(
        "QueueEndpoint=https://acct.queue.core.windows.net;SharedAccessSignature={sas}"
    ))
    .expect("parses");
    let cosmos = CosmosConnection::parse(&format!(
        "AccountEndpoint=http://127.0.0.1:18081/;AccountKey={COSMOS_EMULATOR_KEY}"
    ))
    .expect("parses");
    let texts = [
        format!("{storage:?}"),
        format!("{sas_conn:?}"),
        format!("{cosmos:?}"),
        format!("{:?}", storage.signer()),
        format!("{:?}", cosmos.signer()),
        format!(
            "{:?}",
            SharedKeySigner::new("acct", DEV_KEY).expect("valid")
        ),
        format!(
            "{:?}",
            CosmosMasterKeySigner::new(COSMOS_EMULATOR_KEY).expect("valid")
        ),
        format!("{:?}", SasSigner::new(sas).expect("valid")),
        format!(
            "{:?}",
            CosmosResourceTokenSigner::new("type=resource&sig=RESOURCETOKENSIG").expect("valid")
        ),
    ];
    for text in texts {
        assert!(text.contains("REDACTED"), "{text}");
        for secret in [
            DEV_KEY,
            COSMOS_EMULATOR_KEY,
            "SASSIGVALUE",
            "RESOURCETOKENSIG",
            "Eby8vdM0",
            "C2y6yDjf",
        ] {
            assert!(!text.contains(secret), "{text} leaks {secret}");
        }
    }
}

#[test]
fn connection_redactors_scrub_their_own_credentials() {
    let storage = StorageConnection::parse(&format!("AccountName=acct;AccountKey={DEV_KEY}"))
        .expect("parses");
    let text = format!(
        "echo {DEV_KEY} and {}",
        DEV_KEY
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    assert_eq!(
        storage.redactor().redact_text(&text),
        "echo REDACTED and REDACTED"
    );
    let sas = StorageConnection::parse(
        "QueueEndpoint=https://acct.queue.core.windows.net;SharedAccessSignature=sv=1&sig=S1gnatureValue",
    )
    .expect("parses");
    assert_eq!(
        sas.redactor().redact_text("error near S1gnatureValue"),
        "error near REDACTED"
    );
    let cosmos = CosmosConnection::parse(&format!(
        "AccountEndpoint=http://127.0.0.1:18081/;AccountKey={COSMOS_EMULATOR_KEY}"
    ))
    .expect("parses");
    assert_eq!(
        cosmos.redactor().redact_text(COSMOS_EMULATOR_KEY),
        "REDACTED"
    );
}
