//! Golden-vector tests for the Storage SharedKey, SAS and Cosmos master-key signers.
//!
//! Vectors "spec §6" come from the emulator spec (captured from the official JS SDKs). The
//! spec lists the URL, the signature and some headers; the headers it does not list were
//! derived from the string-to-sign rules and confirmed by reproducing the signature:
//! - all three queue vectors send `x-ms-version: 2021-12-02` and nothing else beyond what
//!   is listed (no `x-ms-client-request-id`);
//! - vector 1's `x-ms-meta-owner` value is `ci`;
//! - vector 2's XML body is 72 bytes (the spec says "Content-Length 71"; the signature only
//!   reproduces with 72, e.g. 71 characters with one two-byte UTF-8 character; the signer
//!   counts bytes, as the service does).
//!
//! Vectors marked "own" were computed with an independent Python (stdlib hmac) signer from
//! Microsoft's documented string-to-sign formats.

use chrono::{DateTime, TimeZone, Utc};
use flowcraft_azure::azure::auth::{
    AccountSasOptions, CosmosMasterKeySigner, ServiceSasOptions, SharedKeySigner, account_sas,
    cosmos_resource, master_key_authorization, queue_service_sas, shared_key_string_to_sign,
};
use flowcraft_azure::wire::pipeline::Signer;
use flowcraft_azure::wire::transport::HttpRequest;

/// Azurite's well-known development key (public).
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The key the spec's first three Cosmos vectors use.
const COSMOS_VECTOR_KEY: &str =
    "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxL/nrisQ/cqY6/7gocLA==";
/// Microsoft's documented Cosmos example key (public).
const COSMOS_DOCS_KEY: &str =
    "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxLzR4y+O/0H/t4bQtVNw==";

fn vector_date() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2017, 4, 27, 0, 51, 12)
        .single()
        .expect("valid date")
}

fn own_date() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 21, 9, 10)
        .single()
        .expect("valid date")
}

fn signed(signer: &dyn Signer, mut request: HttpRequest, at: DateTime<Utc>) -> HttpRequest {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a test runtime");
    runtime
        .block_on(signer.sign(&mut request, at))
        .expect("signing succeeds");
    request
}

fn dev_signer() -> SharedKeySigner {
    SharedKeySigner::new("devstoreaccount1", DEV_KEY).expect("valid key")
}

#[test]
fn queue_vector_1_create_queue_with_metadata_on_azure_host() {
    let signer = SharedKeySigner::new("myaccount", DEV_KEY).expect("valid key");
    let mut req = HttpRequest::parse("PUT", "https://myaccount.queue.core.windows.net/myqueue")
        .expect("valid request");
    req.set_header("x-ms-version", "2021-12-02");
    req.set_header("x-ms-meta-owner", "ci");
    let req = signed(&signer, req, vector_date());
    assert_eq!(
        req.header("x-ms-date"),
        Some("Thu, 27 Apr 2017 00:51:12 GMT")
    );
    assert_eq!(
        req.header("authorization"),
        Some("SharedKey myaccount:orBSdRA5auIJessAahDaDxIIQKdjP0emkvAnp4OSjvw=")
    );
}

#[test]
fn queue_vector_2_put_message_with_xml_body_on_path_style_emulator_url() {
    let body = "<QueueMessage><MessageText>aGVsbG8gd29ybGQ=</MessageText></QueueMessage>";
    assert_eq!(body.len(), 72);
    let mut req = HttpRequest::parse(
        "POST",
        "http://127.0.0.1:11001/devstoreaccount1/jobs/messages?visibilitytimeout=0&messagettl=3600",
    )
    .expect("valid request");
    req.set_header("x-ms-version", "2021-12-02");
    req.set_header("Content-Type", "application/xml");
    req.set_body(body.as_bytes().to_vec());
    req.set_header("Content-Length", req.body.len().to_string());
    let req = signed(&dev_signer(), req, vector_date());
    assert_eq!(
        req.header("authorization"),
        Some("SharedKey devstoreaccount1:NnImE1oUg8brrBonbMnPt1MO8OC+C9gR86SlSrKwjLE=")
    );
}

#[test]
fn queue_vector_3_get_messages_signs_doubled_account_and_sorted_query() {
    let mut req = HttpRequest::parse(
        "GET",
        "http://127.0.0.1:11001/devstoreaccount1/jobs/messages?numofmessages=5&visibilitytimeout=30",
    ).expect("valid request");
    req.set_header("x-ms-version", "2021-12-02");
    let req = signed(&dev_signer(), req, vector_date());
    let to_sign = shared_key_string_to_sign("devstoreaccount1", &req).expect("valid URL");
    assert_eq!(
        to_sign,
        "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Thu, 27 Apr 2017 00:51:12 GMT\nx-ms-version:2021-12-02\n\
         /devstoreaccount1/devstoreaccount1/jobs/messages\nnumofmessages:5\nvisibilitytimeout:30"
    );
    assert_eq!(
        req.header("authorization"),
        Some("SharedKey devstoreaccount1:YYI9VC/SVknNP3BnPYPU0v5nc82ocKqEbw7Mt54IhRc=")
    );
}

#[test]
fn own_vector_delete_message_signs_decoded_pop_receipt() {
    let mut req = HttpRequest::parse(
        "DELETE",
        "http://127.0.0.1:11001/devstoreaccount1/jobs/messages/e005114a-c7c2?popreceipt=AgAAAAMAAAAAAAAA%2B1%2Fy",
    ).expect("valid request");
    req.set_header("x-ms-version", "2021-12-02");
    let req = signed(&dev_signer(), req, own_date());
    assert_eq!(
        req.header("authorization"),
        Some("SharedKey devstoreaccount1:jB9qGoUY/1bSvRyQyJmlDE2AX1AcG49aOT93THlVE3U=")
    );
}

#[test]
fn own_vector_list_queues_sorts_query_parameters_by_name() {
    let mut req = HttpRequest::parse(
        "GET",
        "http://127.0.0.1:11001/devstoreaccount1/?prefix=job&comp=list&include=metadata",
    )
    .expect("valid request");
    req.set_header("x-ms-version", "2021-12-02");
    let req = signed(&dev_signer(), req, own_date());
    assert_eq!(
        req.header("authorization"),
        Some("SharedKey devstoreaccount1:IKYXuxYjm6GfIvOGSqZhzNzX7l7ncaK5tRqv6dK1Xbw=")
    );
}

#[test]
fn shared_key_ignores_content_length_header_and_signs_body_bytes() {
    let url = "http://127.0.0.1:11001/devstoreaccount1/jobs/messages";
    let mut with_header = HttpRequest::parse("POST", url).expect("valid request");
    with_header.set_body(b"abc".to_vec());
    with_header.set_header("Content-Length", "999");
    let mut without = HttpRequest::parse("POST", url).expect("valid request");
    without.set_body(b"abc".to_vec());
    let a = shared_key_string_to_sign("devstoreaccount1", &with_header).expect("valid URL");
    let b = shared_key_string_to_sign("devstoreaccount1", &without).expect("valid URL");
    assert_eq!(a, b);
    assert!(a.starts_with("POST\n\n\n3\n"), "{a:?}");
    // An empty body signs an empty Content-Length line.
    let empty = HttpRequest::parse("DELETE", url).expect("valid request");
    let c = shared_key_string_to_sign("devstoreaccount1", &empty).expect("valid URL");
    assert!(c.starts_with("DELETE\n\n\n\n"), "{c:?}");
}

fn cosmos_auth(key: &str, method: &str, url: &str, at: DateTime<Utc>) -> String {
    let signer = CosmosMasterKeySigner::new(key).expect("valid key");
    let req = signed(
        &signer,
        HttpRequest::parse(method, url).expect("valid request"),
        at,
    );
    req.header("authorization")
        .expect("authorization set")
        .to_string()
}

#[test]
fn cosmos_vector_read_document_item_path_is_its_own_link() {
    assert_eq!(
        cosmos_auth(
            COSMOS_VECTOR_KEY,
            "GET",
            "https://acct.documents.azure.com/dbs/db1/colls/c1/docs/d1",
            vector_date()
        ),
        "type%3Dmaster%26ver%3D1.0%26sig%3D3QrKXUt8o51ebJCuaGAZdqzkDyS7tpaW%2FNXtdGhjdyw%3D"
    );
}

#[test]
fn cosmos_vector_create_and_query_on_feed_sign_the_parent_link() {
    let expected =
        "type%3Dmaster%26ver%3D1.0%26sig%3DqnB9iFblYXOOTxIvbKs4gkM4MD3utj%2BK8%2BFYNBYFo0k%3D";
    let url = "http://127.0.0.1:18081/dbs/db1/colls/c1/docs";
    assert_eq!(
        cosmos_auth(COSMOS_VECTOR_KEY, "POST", url, vector_date()),
        expected
    );
    // A query is also a POST on the docs feed: identical token.
    let signer = CosmosMasterKeySigner::new(COSMOS_VECTOR_KEY).expect("valid key");
    let mut query = HttpRequest::parse("POST", url).expect("valid request");
    query.set_header("x-ms-documentdb-isquery", "True");
    query.set_header("Content-Type", "application/query+json");
    let query = signed(&signer, query, vector_date());
    assert_eq!(query.header("authorization"), Some(expected));
}

#[test]
fn cosmos_vector_microsoft_published_example_get_database() {
    assert_eq!(
        cosmos_auth(
            COSMOS_DOCS_KEY,
            "GET",
            "https://acct.documents.azure.com/dbs/ToDoList",
            vector_date()
        ),
        "type%3Dmaster%26ver%3D1.0%26sig%3Dc09PEVJrgp2uQRkr934kFbTqhByc7TVr3OHyqlu%2Bc%2Bc%3D"
    );
    let signer = CosmosMasterKeySigner::new(COSMOS_DOCS_KEY).expect("valid key");
    assert_eq!(
        master_key_authorization(
            &signer,
            "GET",
            "dbs",
            "dbs/ToDoList",
            "Thu, 27 Apr 2017 00:51:12 GMT"
        ),
        "type%3Dmaster%26ver%3D1.0%26sig%3Dc09PEVJrgp2uQRkr934kFbTqhByc7TVr3OHyqlu%2Bc%2Bc%3D"
    );
}

#[test]
fn cosmos_own_vectors_patch_escaped_id_and_pkranges_feed() {
    assert_eq!(
        cosmos_auth(
            COSMOS_DOCS_KEY,
            "PATCH",
            "http://127.0.0.1:18081/dbs/sdkdb/colls/jobs/docs/j1",
            own_date()
        ),
        "type%3Dmaster%26ver%3D1.0%26sig%3DFQ8BOULqYd8aUmZWNFC7oP4g1D2dnU75RxS4ZLDzsEA%3D"
    );
    // The link is the decoded id, as the SDK signs it.
    assert_eq!(
        cosmos_auth(
            COSMOS_DOCS_KEY,
            "GET",
            "http://127.0.0.1:18081/dbs/db1/colls/c1/docs/my%20doc",
            own_date()
        ),
        "type%3Dmaster%26ver%3D1.0%26sig%3D%2BdgbCZFmf2Kjf%2FDafu84nBOPPCRAWEqbqQ7CxM2xdP8%3D"
    );
    assert_eq!(
        cosmos_auth(
            COSMOS_DOCS_KEY,
            "GET",
            "http://127.0.0.1:18081/dbs/db1/colls/c1/pkranges",
            own_date()
        ),
        "type%3Dmaster%26ver%3D1.0%26sig%3Deuoqd9Wq4B7hGEY7XsjS54ky%2FRoNaha17ZuxenwTaIg%3D"
    );
}

#[test]
fn cosmos_resource_derives_type_and_link_from_segment_parity() {
    let r = |p: &str| cosmos_resource(p);
    assert_eq!(r("/dbs"), ("dbs".into(), "".into()));
    assert_eq!(r("/dbs/db1"), ("dbs".into(), "dbs/db1".into()));
    assert_eq!(r("/dbs/db1/colls"), ("colls".into(), "dbs/db1".into()));
    assert_eq!(
        r("/dbs/db1/colls/c1/"),
        ("colls".into(), "dbs/db1/colls/c1".into())
    );
    assert_eq!(r("/"), ("".into(), "".into()));
    assert_eq!(
        r("/dbs/DB/colls/C/docs/Id"),
        ("docs".into(), "dbs/DB/colls/C/docs/Id".into())
    );
}

#[test]
fn account_sas_matches_independent_signer_and_lists_fields() {
    let expiry = Utc
        .with_ymd_and_hms(2026, 11, 27, 0, 0, 0)
        .single()
        .expect("valid date");
    let mut options = AccountSasOptions::queue("raup", expiry);
    options.protocol = Some("https,http".to_string());
    let token = account_sas(&dev_signer(), &options);
    assert_eq!(
        token,
        "sv=2021-12-02&ss=q&srt=sco&sp=raup&se=2026-11-27T00%3A00%3A00Z&spr=https%2Chttp\
         &sig=JiAq8Yk%2B4PIuNmx7uD2jisy9yPkXgi7J0Vyrm9MIQBU%3D"
    );
}

#[test]
fn queue_service_sas_matches_independent_signer() {
    let start = Utc
        .with_ymd_and_hms(2026, 11, 26, 0, 0, 0)
        .single()
        .expect("valid date");
    let expiry = Utc
        .with_ymd_and_hms(2026, 11, 27, 0, 0, 0)
        .single()
        .expect("valid date");
    let mut options = ServiceSasOptions::new("raup", expiry);
    options.start = Some(start);
    let token = queue_service_sas(&dev_signer(), "jobs", &options);
    assert_eq!(
        token,
        "sv=2021-12-02&st=2026-11-26T00%3A00%3A00Z&se=2026-11-27T00%3A00%3A00Z&sp=raup\
         &sig=8LT89gsBFNPcurdMo1rgHjA6%2Fxx02X1yy2Jig%2BziU6A%3D"
    );
}
