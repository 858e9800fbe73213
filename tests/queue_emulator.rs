//! Queue Storage client against Azurite: every operation, its limits and its errors.
//! Switched on by `FLOWCRAFT_EMULATORS=1` (scripts/test.sh); switched on, an unreachable
//! Azurite fails the tests.

mod support;

use std::time::Duration;

use chrono::Datelike;
use flowcraft_azure::Error;
use flowcraft_azure::azure::queue::{
    ListQueuesOptions, MAX_MESSAGE_BYTES, MessageCount, MessageTtl, PutOptions, QueueClient,
};
use support::{emulators_enabled, peek_all, put, queue_client, receive, secs, unique};

/// A fresh, created queue with a unique name.
async fn fresh_queue() -> QueueClient {
    let queue = queue_client(&unique("q"));
    assert!(queue.create_if_not_exists().await.unwrap());
    queue
}

#[tokio::test]
async fn queue_lifecycle_create_twice_metadata_delete() {
    if !emulators_enabled("queue_lifecycle_create_twice_metadata_delete") {
        return;
    }
    let queue = queue_client(&unique("life"));
    assert!(
        queue.create_if_not_exists().await.unwrap(),
        "first create creates"
    );
    assert!(
        !queue.create_if_not_exists().await.unwrap(),
        "second create finds it"
    );
    let props = queue.metadata().await.unwrap();
    assert_eq!(props.approximate_message_count, 0);
    queue.delete().await.unwrap();
    let err = queue.metadata().await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(err.code(), Some("QueueNotFound"));
    assert!(err.info().request_id.is_some(), "request id is filled");
    assert!(matches!(queue.delete().await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn list_queues_pages_through_markers() {
    if !emulators_enabled("list_queues_pages_through_markers") {
        return;
    }
    let prefix = unique("list");
    let first = queue_client(&format!("{prefix}-a"));
    let mut names = Vec::new();
    for suffix in ["a", "b", "c"] {
        let queue = first.queue(&format!("{prefix}-{suffix}")).unwrap();
        queue.create_if_not_exists().await.unwrap();
        names.push(queue.name().to_string());
    }
    let options = ListQueuesOptions {
        prefix: Some(prefix.clone()),
        max_results: Some(1),
    };
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = first
            .list_queues(&options, marker.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(page.queues.len() <= 1);
        seen.extend(page.queues.into_iter().map(|q| q.name));
        match page.next_marker {
            Some(next) => marker = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, names);
    assert!(pages >= 3);
    let all: Vec<String> = first
        .list_all_queues(Some(&prefix))
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(all, names);
    for name in &names {
        first.queue(name).unwrap().delete().await.unwrap();
    }
}

#[tokio::test]
async fn put_get_delete_round_trips_escaped_unicode_text() {
    if !emulators_enabled("put_get_delete_round_trips_escaped_unicode_text") {
        return;
    }
    let queue = fresh_queue().await;
    let text = "<job a=\"1\"> & 'quotes' ü 😀 \t\r\n end";
    let sent = put(&queue, text).await;
    let messages = receive(&queue, MessageCount::MAX, secs(30)).await;
    assert_eq!(messages.len(), 1);
    let msg = &messages[0];
    assert_eq!(msg.id, sent.id);
    assert_eq!(msg.text, text);
    assert_eq!(msg.dequeue_count, 1);
    assert!(msg.next_visible > msg.insertion_time);
    assert!(msg.expiration_time > msg.insertion_time);
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 1);
    queue
        .delete_message(&msg.id, &msg.pop_receipt)
        .await
        .unwrap();
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 0);
    let again = queue
        .delete_message(&msg.id, &msg.pop_receipt)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::NotFound(_)), "{again:?}");
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn pop_receipt_from_put_deletes_directly() {
    if !emulators_enabled("pop_receipt_from_put_deletes_directly") {
        return;
    }
    let queue = fresh_queue().await;
    let sent = put(&queue, "x").await;
    queue
        .delete_message(&sent.id, &sent.pop_receipt)
        .await
        .unwrap();
    assert!(peek_all(&queue).await.is_empty());
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn invisible_message_returns_after_its_timeout_with_higher_dequeue_count() {
    if !emulators_enabled("invisible_message_returns_after_its_timeout_with_higher_dequeue_count") {
        return;
    }
    let queue = fresh_queue().await;
    put(&queue, "again").await;
    let first = receive(&queue, MessageCount::ONE, secs(1)).await;
    assert_eq!(first.len(), 1);
    assert!(
        receive(&queue, MessageCount::ONE, secs(1)).await.is_empty(),
        "hidden while invisible"
    );
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let second = receive(&queue, MessageCount::ONE, secs(30)).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].dequeue_count, 2);
    let stale = queue
        .delete_message(&first[0].id, &first[0].pop_receipt)
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn delayed_message_is_counted_but_not_visible_until_the_delay_passes() {
    if !emulators_enabled("delayed_message_is_counted_but_not_visible_until_the_delay_passes") {
        return;
    }
    let queue = fresh_queue().await;
    let options = PutOptions {
        visibility_delay: Some(secs(4)),
        ttl: Some(MessageTtl::from_secs(60).unwrap()),
    };
    let sent = queue.put_message("later", options).await.unwrap();
    assert!(sent.next_visible > sent.insertion_time);
    assert!(peek_all(&queue).await.is_empty());
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 1);
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let peeked = peek_all(&queue).await;
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].text, "later");
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn ttl_never_and_short_ttl_expiry() {
    if !emulators_enabled("ttl_never_and_short_ttl_expiry") {
        return;
    }
    let queue = fresh_queue().await;
    let forever = queue
        .put_message(
            "forever",
            PutOptions {
                ttl: Some(MessageTtl::Never),
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(forever.expiration_time.year(), 9999);
    queue
        .put_message(
            "short",
            PutOptions {
                ttl: Some(MessageTtl::from_secs(1).unwrap()),
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let left: Vec<String> = peek_all(&queue).await.into_iter().map(|m| m.text).collect();
    assert_eq!(left, ["forever"]);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn update_renews_the_lease_and_replaces_the_text() {
    if !emulators_enabled("update_renews_the_lease_and_replaces_the_text") {
        return;
    }
    let queue = fresh_queue().await;
    put(&queue, "v1").await;
    let taken = receive(&queue, MessageCount::ONE, secs(1)).await;
    let msg = &taken[0];
    let renewed = queue
        .update_message(&msg.id, &msg.pop_receipt, secs(30), Some("v2 & more"))
        .await
        .unwrap();
    assert_ne!(renewed.pop_receipt, msg.pop_receipt);
    assert!(renewed.next_visible > msg.next_visible);
    // The original 1 s lease has passed, but the renewal keeps the message hidden.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(receive(&queue, MessageCount::ONE, secs(1)).await.is_empty());
    let stale = queue
        .update_message(&msg.id, &msg.pop_receipt, secs(0), None)
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    // Release at once with the new receipt: visible again, with the new text.
    queue
        .update_message(&msg.id, &renewed.pop_receipt, secs(0), None)
        .await
        .unwrap();
    let back = receive(&queue, MessageCount::ONE, secs(30)).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].text, "v2 & more");
    assert_eq!(back[0].dequeue_count, 2);
    let missing = queue
        .update_message("00000000-0000-0000-0000-000000000000", "x", secs(1), None)
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn peek_does_not_dequeue() {
    if !emulators_enabled("peek_does_not_dequeue") {
        return;
    }
    let queue = fresh_queue().await;
    put(&queue, "p").await;
    for _ in 0..2 {
        let peeked = peek_all(&queue).await;
        assert_eq!(peeked.len(), 1);
        assert_eq!(peeked[0].dequeue_count, 0);
    }
    assert_eq!(receive(&queue, MessageCount::ONE, secs(30)).await.len(), 1);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn get_returns_at_most_32_and_clear_empties_the_queue() {
    if !emulators_enabled("get_returns_at_most_32_and_clear_empties_the_queue") {
        return;
    }
    let queue = fresh_queue().await;
    for i in 0..33 {
        put(&queue, &format!("m{i}")).await;
    }
    assert_eq!(
        queue.metadata().await.unwrap().approximate_message_count,
        33
    );
    let batch = receive(&queue, MessageCount::MAX, secs(30)).await;
    assert_eq!(batch.len(), 32);
    queue.clear().await.unwrap();
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 0);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn largest_message_is_accepted_and_larger_is_refused_before_sending() {
    if !emulators_enabled("largest_message_is_accepted_and_larger_is_refused_before_sending") {
        return;
    }
    let queue = fresh_queue().await;
    let largest = "z".repeat(MAX_MESSAGE_BYTES);
    put(&queue, &largest).await;
    let got = receive(&queue, MessageCount::ONE, secs(30)).await;
    assert_eq!(got[0].text.len(), MAX_MESSAGE_BYTES);
    let err = queue
        .put_message(&format!("{largest}z"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    assert_eq!(err.status(), None, "refused locally, not by the service");
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn operations_on_a_missing_queue_are_not_found() {
    if !emulators_enabled("operations_on_a_missing_queue_are_not_found") {
        return;
    }
    let queue = queue_client(&unique("missing"));
    let err = queue
        .put_message("x", PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(err.code(), Some("QueueNotFound"));
    assert!(matches!(
        queue.get_messages(MessageCount::ONE, secs(1)).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn wrong_key_is_an_auth_error() {
    if !emulators_enabled("wrong_key_is_an_auth_error") {
        return;
    }
    support::require_reachable("Azurite (queue)", &support::queue_endpoint());
    // A well-formed key that is not the account's.
    let wrong_key =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let pipeline = support::storage_pipeline_with(support::transport(), wrong_key);
    let queue = QueueClient::new(pipeline, &support::queue_endpoint(), &unique("auth")).unwrap();
    let err = queue.create_if_not_exists().await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.code(), Some("AuthenticationFailed"));
    assert!(
        !err.to_string().contains(wrong_key),
        "the key never appears in errors"
    );
}

#[tokio::test]
async fn create_if_not_exists_accepts_a_queue_that_exists_with_other_metadata() {
    if !emulators_enabled("create_if_not_exists_accepts_a_queue_that_exists_with_other_metadata") {
        return;
    }
    use flowcraft_azure::wire::retry::Idempotency;
    use flowcraft_azure::wire::transport::HttpRequest;
    let queue = queue_client(&unique("meta"));
    // Create it with metadata, as another tool might have.
    let mut request = HttpRequest::parse("PUT", queue.url()).expect("valid request");
    request.set_header("x-ms-version", "2021-12-02");
    request.set_header("x-ms-meta-owner", "someone-else");
    let pipeline = support::storage_pipeline_with(support::transport(), &support::storage_key());
    let answer = pipeline
        .send(request, Idempotency::Idempotent)
        .await
        .unwrap();
    assert_eq!(answer.status, 201);
    // The service answers 409 QueueAlreadyExists to a create without that metadata...
    let mut plain = HttpRequest::parse("PUT", queue.url()).expect("valid request");
    plain.set_header("x-ms-version", "2021-12-02");
    let answer = pipeline.send(plain, Idempotency::Idempotent).await.unwrap();
    assert_eq!(answer.status, 409);
    assert_eq!(answer.header("x-ms-error-code"), Some("QueueAlreadyExists"));
    // ...which create_if_not_exists reports as "already there".
    assert!(!queue.create_if_not_exists().await.unwrap());
    queue.delete().await.unwrap();
}
