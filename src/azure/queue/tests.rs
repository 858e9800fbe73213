//! Unit tests of the Queue Storage client: request building, XML parsing and error mapping,
//! over a fake transport (no network).

use std::time::Duration;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::wire::test_support::{FakeTransport, block_on, pipeline, response};
use crate::wire::transport::HttpRequest;

const ENDPOINT: &str = "http://127.0.0.1:11001/devstoreaccount1";

const PUT_ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><QueueMessagesList><QueueMessage><MessageId>e005114a-c7c2-4eab-b682-7b2175985b01</MessageId><InsertionTime>Thu, 26 Nov 2026 21:09:10 GMT</InsertionTime><ExpirationTime>Fri, 31 Dec 9999 23:59:59 GMT</ExpirationTime><PopReceipt>MjZOb3YyMDI2MjE6MDk6MTA0MjZj</PopReceipt><TimeNextVisible>Thu, 26 Nov 2026 21:09:40 GMT</TimeNextVisible></QueueMessage></QueueMessagesList>"#;

const GET_ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><QueueMessagesList><QueueMessage><MessageId>m1</MessageId><InsertionTime>Thu, 26 Nov 2026 21:09:10 GMT</InsertionTime><ExpirationTime>Thu, 03 Dec 2026 21:09:10 GMT</ExpirationTime><PopReceipt>a+b/c=</PopReceipt><TimeNextVisible>Thu, 26 Nov 2026 21:09:14 GMT</TimeNextVisible><DequeueCount>1</DequeueCount><MessageText>hello &amp; &lt;bye&gt;</MessageText></QueueMessage><QueueMessage><MessageId>m2</MessageId><InsertionTime>Thu, 26 Nov 2026 21:09:11 GMT</InsertionTime><ExpirationTime>Thu, 03 Dec 2026 21:09:11 GMT</ExpirationTime><PopReceipt>r2</PopReceipt><TimeNextVisible>Thu, 26 Nov 2026 21:09:14 GMT</TimeNextVisible><DequeueCount>3</DequeueCount><MessageText></MessageText></QueueMessage></QueueMessagesList>"#;

fn client(answers: Vec<HttpResponse>) -> (QueueClient, std::sync::Arc<FakeTransport>) {
    let transport = FakeTransport::new(answers);
    let client = QueueClient::new(pipeline(transport.clone()), ENDPOINT, "jobs").unwrap();
    (client, transport)
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Error>\n  <Code>{code}</Code>\n  <Message>{message}\nRequestId:abc\nTime:2026-11-26T21:09:10.028Z</Message>\n</Error>"
    )
}

fn only_request(transport: &FakeTransport) -> HttpRequest {
    let requests = transport.requests();
    assert_eq!(requests.len(), 1, "expected exactly one request");
    requests.into_iter().next().unwrap()
}

#[tokio::test]
async fn put_message_sends_escaped_xml_with_delay_and_never_expiring_ttl() {
    let (queue, transport) = client(vec![response(201, &[], PUT_ANSWER)]);
    let sent = queue
        .put_message(
            "a<b & c>",
            PutOptions {
                visibility_delay: Some(VisibilityTimeout::from_secs(30).unwrap()),
                ttl: Some(MessageTtl::Never),
            },
        )
        .await
        .unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.url.as_str(),
        format!("{ENDPOINT}/jobs/messages?visibilitytimeout=30&messagettl=-1")
    );
    assert_eq!(request.header("x-ms-version"), Some(QUEUE_API_VERSION));
    assert_eq!(request.header("content-type"), Some("application/xml"));
    assert_eq!(request.header("content-encoding"), None);
    assert_eq!(request.header("content-language"), None);
    let body = String::from_utf8(request.body.to_vec()).unwrap();
    assert!(
        body.contains("<MessageText>a&lt;b &amp; c&gt;</MessageText>"),
        "{body}"
    );

    assert_eq!(sent.id, "e005114a-c7c2-4eab-b682-7b2175985b01");
    assert_eq!(sent.pop_receipt, "MjZOb3YyMDI2MjE6MDk6MTA0MjZj");
    assert_eq!(
        sent.insertion_time,
        Utc.with_ymd_and_hms(2026, 11, 26, 21, 9, 10).unwrap()
    );
    assert_eq!(
        sent.expiration_time,
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
    );
    assert_eq!(
        sent.next_visible,
        Utc.with_ymd_and_hms(2026, 11, 26, 21, 9, 40).unwrap()
    );
}

#[tokio::test]
async fn put_message_without_options_sends_no_query() {
    let (queue, transport) = client(vec![response(201, &[], PUT_ANSWER)]);
    queue.put_message("x", PutOptions::default()).await.unwrap();
    assert_eq!(
        only_request(&transport).url.as_str(),
        format!("{ENDPOINT}/jobs/messages")
    );
}

#[tokio::test]
async fn oversized_message_is_refused_before_sending() {
    let (queue, transport) = client(vec![]);
    let err = queue
        .put_message(&"<".repeat(20_000), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("80000 bytes"), "{err}");
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn largest_message_is_sent() {
    let (queue, transport) = client(vec![response(201, &[], PUT_ANSWER)]);
    let text = "a".repeat(MAX_MESSAGE_BYTES);
    queue
        .put_message(&text, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(transport.requests().len(), 1);
}

#[tokio::test]
async fn delay_not_shorter_than_ttl_is_refused_before_sending() {
    let (queue, transport) = client(vec![]);
    let options = PutOptions {
        visibility_delay: Some(VisibilityTimeout::from_secs(10).unwrap()),
        ttl: Some(MessageTtl::from_secs(10).unwrap()),
    };
    let err = queue.put_message("x", options).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
    // Without a TTL the service default (7 days) applies: a 7-day delay is refused too.
    let default_ttl = PutOptions {
        visibility_delay: Some(VisibilityTimeout::MAX),
        ttl: None,
    };
    let err = queue.put_message("x", default_ttl).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn longest_delay_is_accepted_with_a_longer_or_endless_ttl() {
    let sent = response(201, &[], PUT_ANSWER);
    let (queue, transport) = client(vec![sent.clone(), sent]);
    for ttl in [
        MessageTtl::Never,
        MessageTtl::from_secs(8 * 86_400).unwrap(),
    ] {
        let options = PutOptions {
            visibility_delay: Some(VisibilityTimeout::MAX),
            ttl: Some(ttl),
        };
        queue.put_message("x", options).await.unwrap();
    }
    assert_eq!(transport.requests().len(), 2);
}

#[tokio::test]
async fn get_messages_parses_every_field() {
    let (queue, transport) = client(vec![response(200, &[], GET_ANSWER)]);
    let messages = queue
        .get_messages(
            MessageCount::new(2).unwrap(),
            VisibilityTimeout::from_secs(4).unwrap(),
        )
        .await
        .unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.url.as_str(),
        format!("{ENDPOINT}/jobs/messages?numofmessages=2&visibilitytimeout=4")
    );
    assert_eq!(messages.len(), 2);
    let first = &messages[0];
    assert_eq!(first.id, "m1");
    assert_eq!(first.pop_receipt, "a+b/c=");
    assert_eq!(first.dequeue_count, 1);
    assert_eq!(first.text, "hello & <bye>");
    assert_eq!(
        first.next_visible,
        Utc.with_ymd_and_hms(2026, 11, 26, 21, 9, 14).unwrap()
    );
    assert_eq!(
        first.expiration_time,
        Utc.with_ymd_and_hms(2026, 12, 3, 21, 9, 10).unwrap()
    );
    assert_eq!(messages[1].dequeue_count, 3);
    assert_eq!(messages[1].text, "");
}

#[tokio::test]
async fn empty_queue_gives_empty_list() {
    let body = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><QueueMessagesList/>"#;
    let (queue, _) = client(vec![response(200, &[], body)]);
    let messages = queue
        .get_messages(MessageCount::MAX, VisibilityTimeout::from_secs(30).unwrap())
        .await
        .unwrap();
    assert!(messages.is_empty());
}

#[tokio::test]
async fn zero_visibility_for_get_is_refused_before_sending() {
    let (queue, transport) = client(vec![]);
    let err = queue
        .get_messages(MessageCount::ONE, VisibilityTimeout::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn malformed_or_incomplete_answers_are_unexpected_errors() {
    let truncated = &GET_ANSWER[..GET_ANSWER.len() / 2];
    let no_receipt = GET_ANSWER.replace("<PopReceipt>a+b/c=</PopReceipt>", "");
    let bad_date = GET_ANSWER.replace("Thu, 26 Nov 2026 21:09:14 GMT", "tomorrow");
    let bad_count = GET_ANSWER.replace(
        "<DequeueCount>1</DequeueCount>",
        "<DequeueCount>-1</DequeueCount>",
    );
    for (body, expected) in [
        (truncated.to_string(), "could not parse"),
        (no_receipt, "<PopReceipt> is missing"),
        (bad_date, "<TimeNextVisible> is not an RFC 1123 date"),
        (bad_count, "<DequeueCount> is not a number"),
        ("not xml at all".to_string(), "could not parse"),
    ] {
        let (queue, _) = client(vec![response(200, &[("x-ms-request-id", "r-9")], &body)]);
        let err = queue
            .get_messages(MessageCount::ONE, VisibilityTimeout::from_secs(1).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unexpected(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(err.info().request_id.as_deref(), Some("r-9"));
        assert_eq!(err.info().operation.as_deref(), Some("queue get messages"));
    }
}

#[tokio::test]
async fn peek_returns_messages_without_receipts() {
    let body = r#"<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><InsertionTime>Thu, 26 Nov 2026 21:09:10 GMT</InsertionTime><ExpirationTime>Thu, 03 Dec 2026 21:09:10 GMT</ExpirationTime><DequeueCount>0</DequeueCount><MessageText>p</MessageText></QueueMessage></QueueMessagesList>"#;
    let (queue, transport) = client(vec![response(200, &[], body)]);
    let peeked = queue
        .peek_messages(MessageCount::new(5).unwrap())
        .await
        .unwrap();
    assert_eq!(
        only_request(&transport).url.as_str(),
        format!("{ENDPOINT}/jobs/messages?peekonly=true&numofmessages=5")
    );
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].id, "m1");
    assert_eq!(peeked[0].dequeue_count, 0);
    assert_eq!(peeked[0].text, "p");
}

#[tokio::test]
async fn update_message_returns_new_receipt_and_visibility() {
    let headers = [
        ("x-ms-popreceipt", "new+receipt"),
        ("x-ms-time-next-visible", "Thu, 26 Nov 2026 21:10:00 GMT"),
    ];
    let (queue, transport) = client(vec![response(204, &headers, "")]);
    let updated = queue
        .update_message(
            "m 1",
            "old+/=",
            VisibilityTimeout::from_secs(60).unwrap(),
            Some("new & text"),
        )
        .await
        .unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "PUT");
    assert_eq!(
        request.url.as_str(),
        format!("{ENDPOINT}/jobs/messages/m%201?popreceipt=old%2B%2F%3D&visibilitytimeout=60")
    );
    assert!(
        String::from_utf8(request.body.to_vec())
            .unwrap()
            .contains("new &amp; text")
    );
    assert_eq!(updated.pop_receipt, "new+receipt");
    assert_eq!(
        updated.next_visible,
        Utc.with_ymd_and_hms(2026, 11, 26, 21, 10, 0).unwrap()
    );
}

#[tokio::test]
async fn dot_segment_message_ids_and_queue_names_are_refused_before_sending() {
    // `messages/..` would be normalised to the queue itself: a DELETE would delete the queue.
    let (queue, transport) = client(vec![]);
    for id in [".", "..", "%2e%2e", ".%2E", "%2e"] {
        let err = queue.delete_message(id, "r").await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{id}: {err:?}");
        let err = queue
            .update_message(id, "r", VisibilityTimeout::ZERO, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{id}: {err:?}");
        assert!(queue.queue(id).is_err(), "{id}");
    }
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn update_without_text_sends_no_body() {
    let headers = [
        ("x-ms-popreceipt", "r"),
        ("x-ms-time-next-visible", "Thu, 26 Nov 2026 21:10:00 GMT"),
    ];
    let (queue, transport) = client(vec![response(204, &headers, "")]);
    queue
        .update_message("m", "r0", VisibilityTimeout::ZERO, None)
        .await
        .unwrap();
    let request = only_request(&transport);
    assert!(request.body.is_empty());
    assert_eq!(request.header("content-type"), None);
}

#[tokio::test]
async fn update_answer_without_receipt_is_unexpected() {
    let (queue, _) = client(vec![response(204, &[], "")]);
    let err = queue
        .update_message("m", "r", VisibilityTimeout::ZERO, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unexpected(_)));
}

#[tokio::test]
async fn delete_message_needs_id_and_receipt() {
    let (queue, transport) = client(vec![response(204, &[], "")]);
    assert!(matches!(
        queue.delete_message("", "r").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        queue.delete_message("m", "").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(transport.requests().is_empty());
    queue.delete_message("m", "r").await.unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "DELETE");
    assert_eq!(
        request.url.as_str(),
        format!("{ENDPOINT}/jobs/messages/m?popreceipt=r")
    );
}

#[tokio::test]
async fn create_reports_whether_the_queue_was_new() {
    let (queue, transport) = client(vec![response(201, &[], ""), response(204, &[], "")]);
    assert!(queue.create_if_not_exists().await.unwrap());
    assert!(!queue.create_if_not_exists().await.unwrap());
    let requests = transport.requests();
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].url.as_str(), format!("{ENDPOINT}/jobs"));
}

#[tokio::test]
async fn create_of_a_queue_that_exists_with_other_metadata_is_not_a_conflict() {
    // Azure answers 409 QueueAlreadyExists when the existing queue's metadata differs from
    // the (empty) metadata of the create; the queue is there, which is all we asked for.
    let (queue, _) = client(vec![response(
        409,
        &[("x-ms-error-code", "QueueAlreadyExists")],
        &error_xml("QueueAlreadyExists", "The specified queue already exists."),
    )]);
    assert!(!queue.create_if_not_exists().await.unwrap());
    // Another 409 (the queue is being deleted) still is one.
    let (queue, _) = client(vec![response(
        409,
        &[],
        &error_xml("QueueBeingDeleted", "The specified queue is being deleted."),
    )]);
    assert!(matches!(
        queue.create_if_not_exists().await,
        Err(Error::Conflict(_))
    ));
}

#[tokio::test]
async fn a_time_to_live_above_the_service_maximum_is_refused_before_sending() {
    let (queue, transport) = client(vec![]);
    for secs in [MAX_MESSAGE_TTL_SECS + 1, u32::MAX] {
        let options = PutOptions {
            visibility_delay: None,
            ttl: Some(MessageTtl::Seconds(secs)),
        };
        let err = queue.put_message("x", options).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{secs}: {err:?}");
        assert!(MessageTtl::from_secs(secs).is_err(), "{secs}");
    }
    assert!(transport.requests().is_empty());
    // The largest value the service takes is sent as is.
    let (queue, transport) = client(vec![response(201, &[], PUT_ANSWER)]);
    let options = PutOptions {
        visibility_delay: None,
        ttl: Some(MessageTtl::from_secs(MAX_MESSAGE_TTL_SECS).unwrap()),
    };
    queue.put_message("x", options).await.unwrap();
    assert!(
        only_request(&transport)
            .url
            .as_str()
            .ends_with(&format!("messagettl={MAX_MESSAGE_TTL_SECS}"))
    );
}

#[tokio::test]
async fn sub_second_delays_and_visibility_round_up_never_down_to_zero() {
    for (duration, secs) in [
        (Duration::from_nanos(1), 1),
        (Duration::from_millis(999), 1),
        (Duration::from_millis(1_001), 2),
        (Duration::ZERO, 0),
    ] {
        assert_eq!(
            VisibilityTimeout::from_duration(duration)
                .unwrap()
                .as_secs(),
            secs,
            "{duration:?}"
        );
    }
    let headers = [
        ("x-ms-popreceipt", "r"),
        ("x-ms-time-next-visible", "Thu, 26 Nov 2026 21:10:00 GMT"),
    ];
    let (queue, transport) = client(vec![
        response(201, &[], PUT_ANSWER),
        response(204, &headers, ""),
    ]);
    queue
        .put_message(
            "x",
            PutOptions::delayed(Duration::from_millis(300)).unwrap(),
        )
        .await
        .unwrap();
    queue
        .update_message(
            "m",
            "r0",
            VisibilityTimeout::from_duration(Duration::from_millis(10)).unwrap(),
            None,
        )
        .await
        .unwrap();
    let requests = transport.requests();
    assert!(
        requests[0].url.as_str().ends_with("?visibilitytimeout=1"),
        "{}",
        requests[0].url
    );
    assert!(
        requests[1].url.as_str().ends_with("&visibilitytimeout=1"),
        "{}",
        requests[1].url
    );
}

#[tokio::test]
async fn metadata_reads_count_and_user_metadata() {
    let headers = [
        ("x-ms-approximate-messages-count", "5"),
        ("x-ms-meta-purpose", "test"),
    ];
    let (queue, transport) = client(vec![response(200, &headers, "")]);
    let props = queue.metadata().await.unwrap();
    assert_eq!(
        only_request(&transport).url.as_str(),
        format!("{ENDPOINT}/jobs?comp=metadata")
    );
    assert_eq!(props.approximate_message_count, 5);
    assert_eq!(
        props.metadata,
        vec![("purpose".to_string(), "test".to_string())]
    );
}

#[tokio::test]
async fn list_queues_parses_page_and_passes_marker() {
    let body = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:11001/devstoreaccount1"><Prefix>emu</Prefix><MaxResults>2</MaxResults><Queues><Queue><Name>emuq1</Name><Metadata><purpose>test</purpose></Metadata></Queue><Queue><Name>emuq2</Name><Metadata/></Queue></Queues><NextMarker>2</NextMarker></EnumerationResults>"#;
    let last = r#"<EnumerationResults><Queues/><NextMarker/></EnumerationResults>"#;
    let (queue, transport) = client(vec![response(200, &[], body), response(200, &[], last)]);
    let options = ListQueuesOptions {
        prefix: Some("emu".into()),
        max_results: Some(2),
    };
    let page = queue.list_queues(&options, None).await.unwrap();
    assert_eq!(page.queues.len(), 2);
    assert_eq!(page.queues[0].name, "emuq1");
    assert_eq!(
        page.queues[0].metadata,
        vec![("purpose".into(), "test".into())]
    );
    assert!(page.queues[1].metadata.is_empty());
    assert_eq!(page.next_marker.as_deref(), Some("2"));
    let next = queue
        .list_queues(&options, page.next_marker.as_deref())
        .await
        .unwrap();
    assert!(next.queues.is_empty());
    assert_eq!(next.next_marker, None);
    let urls: Vec<String> = transport
        .requests()
        .into_iter()
        .map(|r| r.url.to_string())
        .collect();
    assert_eq!(
        urls,
        [
            format!("{ENDPOINT}/?comp=list&include=metadata&prefix=emu&maxresults=2"),
            format!("{ENDPOINT}/?comp=list&include=metadata&prefix=emu&maxresults=2&marker=2"),
        ]
    );
}

#[tokio::test]
async fn list_all_queues_follows_markers() {
    let page = |names: &[&str], marker: &str| {
        let queues: String = names
            .iter()
            .map(|n| format!("<Queue><Name>{n}</Name></Queue>"))
            .collect();
        format!(
            "<EnumerationResults><Queues>{queues}</Queues><NextMarker>{marker}</NextMarker></EnumerationResults>"
        )
    };
    let (queue, transport) = client(vec![
        response(200, &[], &page(&["a1", "a2"], "m1")),
        response(200, &[], &page(&["a3"], "")),
    ]);
    let all = queue.list_all_queues(Some("a")).await.unwrap();
    let names: Vec<&str> = all.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["a1", "a2", "a3"]);
    assert_eq!(transport.requests().len(), 2);
}

#[tokio::test]
async fn list_markers_going_round_in_a_cycle_stop_with_an_error() {
    let page = |name: &str, marker: &str| {
        format!(
            "<EnumerationResults><Queues><Queue><Name>{name}</Name></Queue></Queues><NextMarker>{marker}</NextMarker></EnumerationResults>"
        )
    };
    let (queue, transport) = client(vec![
        response(200, &[], &page("a1", "m1")),
        response(200, &[], &page("a2", "m2")),
        response(200, &[], &page("a3", "m1")),
        response(200, &[], &page("a4", "")),
    ]);
    let err = queue.list_all_queues(None).await.unwrap_err();
    assert!(matches!(err, Error::Unexpected(_)), "{err:?}");
    assert_eq!(transport.requests().len(), 3);
}

async fn error_for(resp: HttpResponse) -> Error {
    let (queue, _) = client(vec![resp]);
    queue.delete_message("m", "r").await.unwrap_err()
}

#[tokio::test]
async fn errors_map_from_xml_code_header_or_status() {
    let not_found = error_for(response(
        404,
        &[
            ("x-ms-request-id", "req-404"),
            ("x-ms-error-code", "QueueNotFound"),
        ],
        &error_xml("QueueNotFound", "The specified queue does not exist."),
    ))
    .await;
    assert!(matches!(not_found, Error::NotFound(_)));
    assert_eq!(not_found.code(), Some("QueueNotFound"));
    assert_eq!(not_found.info().request_id.as_deref(), Some("req-404"));
    assert_eq!(
        not_found.info().message,
        "The specified queue does not exist."
    );
    assert_eq!(
        not_found.info().operation.as_deref(),
        Some("queue delete message")
    );

    let mismatch = error_for(response(
        400,
        &[],
        &error_xml(
            "PopReceiptMismatch",
            "The specified pop receipt did not match.",
        ),
    ))
    .await;
    assert!(matches!(mismatch, Error::PreconditionFailed(_)));

    let header_only = error_for(response(
        400,
        &[("x-ms-error-code", "PopReceiptMismatch")],
        "",
    ))
    .await;
    assert!(matches!(header_only, Error::PreconditionFailed(_)));

    let empty_400 = error_for(response(400, &[], "")).await;
    assert!(matches!(empty_400, Error::InvalidInput(_)));
    assert_eq!(empty_400.code(), None);

    let auth = error_for(response(
        403,
        &[],
        &error_xml(
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
        ),
    ))
    .await;
    assert!(matches!(auth, Error::Auth(_)));
    assert_eq!(auth.code(), Some("AuthenticationFailed"));

    let too_large = error_for(response(
        413,
        &[],
        &error_xml("RequestBodyTooLarge", "too large"),
    ))
    .await;
    assert!(matches!(too_large, Error::TooLarge(_)));

    let conflict = error_for(response(
        409,
        &[],
        &error_xml("QueueAlreadyExists", "exists"),
    ))
    .await;
    assert!(matches!(conflict, Error::Conflict(_)));

    let busy = error_for(response(
        503,
        &[("retry-after", "2")],
        &error_xml("ServerBusy", "busy"),
    ))
    .await;
    let Error::Throttled { retry_after, .. } = &busy else {
        panic!("expected throttled, got {busy:?}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(2)));

    let garbage = error_for(response(500, &[], "<Error><Code>")).await;
    assert!(matches!(garbage, Error::Unexpected(_)));
}

#[test]
fn bad_endpoint_or_queue_name_is_refused_at_construction() {
    let transport = FakeTransport::new(vec![]);
    assert!(QueueClient::new(pipeline(transport.clone()), ENDPOINT, "Bad_Name").is_err());
    assert!(
        QueueClient::new(
            pipeline(transport.clone()),
            "http://example.com/acct",
            "jobs"
        )
        .is_err()
    );
    let ok = QueueClient::new(pipeline(transport), &format!("{ENDPOINT}/"), "jobs").unwrap();
    assert_eq!(ok.url().as_str(), format!("{ENDPOINT}/jobs"));
    assert!(ok.queue("UPPER").is_err());
    assert_eq!(ok.queue("other").unwrap().name(), "other");
}

proptest! {
    #[test]
    fn arbitrary_answers_never_panic(status in prop_oneof![Just(200u16), Just(201), 400u16..600], body in ".{0,300}") {
        let (queue, _) = client(vec![response(status, &[], &body)]);
        let _ = block_on(queue.get_messages(MessageCount::MAX, VisibilityTimeout::from_secs(1).unwrap()));
        let (queue, _) = client(vec![response(status, &[], &body)]);
        let _ = block_on(queue.list_queues(&ListQueuesOptions::default(), None));
    }

    #[test]
    fn arbitrary_xml_like_answers_never_panic(body in "(<[/]?(QueueMessagesList|QueueMessage|MessageId|PopReceipt|DequeueCount|MessageText|InsertionTime)/?>|[a-z0-9 ,:]{0,10}|&amp;|&#[0-9]{1,7};){0,40}") {
        let (queue, _) = client(vec![response(200, &[], &body)]);
        let _ = block_on(queue.get_messages(MessageCount::MAX, VisibilityTimeout::from_secs(1).unwrap()));
    }
}
