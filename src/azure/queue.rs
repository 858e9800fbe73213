//! Azure Queue Storage REST client (`x-ms-version: 2021-12-02`): queues (create, delete, list,
//! metadata, clear) and messages (put, get, peek, delete, update). It builds requests and
//! parses the XML answers; signing, retries and sending are the [`Pipeline`]'s job.
//!
//! ```no_run
//! # async fn demo(pipeline: flowcraft_azure::wire::pipeline::Pipeline) -> Result<(), flowcraft_azure::Error> {
//! use flowcraft_azure::azure::queue::{MessageCount, PutOptions, QueueClient, VisibilityTimeout};
//! let queue = QueueClient::new(pipeline, "http://127.0.0.1:11001/devstoreaccount1", "jobs")?;
//! queue.create_if_not_exists().await?;
//! queue.put_message("hello", PutOptions::default()).await?;
//! for msg in queue.get_messages(MessageCount::MAX, VisibilityTimeout::from_secs(30)?).await? {
//!     queue.delete_message(&msg.id, &msg.pop_receipt).await?;
//! }
//! # Ok(()) }
//! ```

mod types;
mod xml;

pub use types::{
    MAX_MESSAGE_TTL_SECS, MAX_VISIBILITY_SECS, MessageCount, MessageTtl, PeekedMessage, PutOptions,
    QueueItem, QueueListPage, QueueMessage, QueueProperties, SentMessage, UpdatedMessage,
    VisibilityTimeout,
};

use chrono::{DateTime, Utc};
use url::Url;

use crate::azure::auth::endpoint_url;
use crate::azure::response::{error_from_response, unparseable};
use crate::error::{Error, ErrorInfo};
use crate::wire::clock::parse_http_date;
use crate::wire::encoding::{append_query, push_segments};
use crate::wire::pipeline::Pipeline;
use crate::wire::request::{Method, RequestBuilder};
use crate::wire::transport::HttpResponse;
use types::validate_queue_name;
use xml::{Element, TextError};

/// The Queue Storage REST version this client speaks.
pub const QUEUE_API_VERSION: &str = "2021-12-02";

/// The largest message text (after XML escaping) the service accepts: 64 KiB.
pub const MAX_MESSAGE_BYTES: usize = xml::MAX_MESSAGE_BYTES;

/// A client for one queue (and, through [`QueueClient::list_queues`], its account).
/// Cheap to clone; clones share the pipeline.
#[derive(Debug, Clone)]
pub struct QueueClient {
    pipeline: Pipeline,
    endpoint: Url,
    queue: String,
    /// `<endpoint>/<queue>`, built once.
    queue_url: Url,
}

/// Options for [`QueueClient::list_queues`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQueuesOptions {
    /// Only queues whose name starts with this.
    pub prefix: Option<String>,
    /// At most this many queues per page (the service caps it at 5000).
    pub max_results: Option<u32>,
}

/// Builds a [`QueueClient`]: `QueueClient::builder(pipeline, endpoint, queue)`, then
/// options, then [`QueueClientBuilder::build`].
#[derive(Debug, Clone)]
#[must_use = "call `build` to get the client"]
pub struct QueueClientBuilder {
    pipeline: Pipeline,
    endpoint: String,
    queue: String,
    allow_http: bool,
}

impl QueueClientBuilder {
    /// Also accepts plain HTTP to a non-loopback host (an emulator in another container).
    /// Traffic, including signatures, is then unencrypted. Off by default.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Checks the endpoint (HTTPS unless loopback or allowed) and the queue name.
    pub fn build(self) -> Result<QueueClient, Error> {
        let endpoint = endpoint_url(&self.endpoint, self.allow_http)?;
        validate_queue_name(&self.queue)?;
        QueueClient::at(self.pipeline, endpoint, &self.queue)
    }
}

impl QueueClient {
    /// A builder for a client of `queue` at `queue_endpoint` (e.g.
    /// `https://acct.queue.core.windows.net` or `http://127.0.0.1:11001/devstoreaccount1`).
    pub fn builder(pipeline: Pipeline, queue_endpoint: &str, queue: &str) -> QueueClientBuilder {
        QueueClientBuilder {
            pipeline,
            endpoint: queue_endpoint.to_string(),
            queue: queue.to_string(),
            allow_http: false,
        }
    }

    /// A client for `queue` at `queue_endpoint` with the default options: plain HTTP is
    /// accepted for loopback hosts only; the queue name must follow the service rules.
    pub fn new(pipeline: Pipeline, queue_endpoint: &str, queue: &str) -> Result<Self, Error> {
        Self::builder(pipeline, queue_endpoint, queue).build()
    }

    fn at(pipeline: Pipeline, endpoint: Url, queue: &str) -> Result<Self, Error> {
        let mut queue_url = endpoint.clone();
        push_segments(&mut queue_url, "queue name", &[queue])?;
        Ok(QueueClient {
            pipeline,
            endpoint,
            queue: queue.to_string(),
            queue_url,
        })
    }

    /// A client for another queue of the same account, sharing the pipeline.
    pub fn queue(&self, queue: &str) -> Result<QueueClient, Error> {
        validate_queue_name(queue)?;
        QueueClient::at(self.pipeline.clone(), self.endpoint.clone(), queue)
    }

    /// The queue name.
    pub fn name(&self) -> &str {
        &self.queue
    }

    /// The queue's URL.
    pub fn url(&self) -> &Url {
        &self.queue_url
    }

    /// `<queue url>/messages` plus `segments`.
    fn messages_url(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self.queue_url.clone();
        push_segments(&mut url, "message id", &[&["messages"], segments].concat())?;
        Ok(url)
    }

    /// A request to this queue's service: API version set, failures mapped by
    /// [`response_error`].
    fn request(&self, method: Method, url: Url, operation: &str) -> RequestBuilder<'_> {
        self.pipeline
            .request(method, url)
            .operation(operation)
            .header("x-ms-version", QUEUE_API_VERSION)
            .map_errors(response_error)
    }

    /// Creates the queue if it does not exist. Returns `true` when it was created, `false`
    /// when it already existed (also when it exists with other metadata, which the service
    /// answers with 409 `QueueAlreadyExists`).
    pub async fn create_if_not_exists(&self) -> Result<bool, Error> {
        let created = self
            .request(Method::PUT, self.queue_url.clone(), "queue create")
            .idempotent(true)
            .send()
            .await;
        match created {
            Ok(resp) => Ok(resp.status == 201),
            Err(Error::Conflict(info)) if info.code.as_deref() == Some("QueueAlreadyExists") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the queue and its messages. A missing queue is [`Error::NotFound`].
    pub async fn delete(&self) -> Result<(), Error> {
        self.request(Method::DELETE, self.queue_url.clone(), "queue delete")
            .idempotent(true)
            .send()
            .await
            .map(drop)
    }

    /// One page of the account's queues (with metadata). Pass the previous page's
    /// `next_marker` to get the next page; the marker is opaque.
    pub async fn list_queues(
        &self,
        options: &ListQueuesOptions,
        marker: Option<&str>,
    ) -> Result<QueueListPage, Error> {
        const OP: &str = "queue list";
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // The account itself: `<endpoint>/`.
            path.pop_if_empty().push("");
        }
        append_query(&mut url, "comp", "list");
        append_query(&mut url, "include", "metadata");
        if let Some(prefix) = &options.prefix {
            append_query(&mut url, "prefix", prefix);
        }
        if let Some(max) = options.max_results {
            if max == 0 {
                return Err(Error::invalid_input("max_results must be at least 1").during(OP));
            }
            append_query(&mut url, "maxresults", &max.to_string());
        }
        if let Some(marker) = marker.filter(|m| !m.is_empty()) {
            append_query(&mut url, "marker", marker);
        }
        let resp = self
            .request(Method::GET, url, OP)
            .idempotent(true)
            .send()
            .await?;
        let root = parse_body(&resp, OP)?;
        let queues = root
            .child("Queues")
            .map(|q| {
                q.children_named("Queue")
                    .map(|queue| QueueItem {
                        name: queue.child_text("Name").unwrap_or_default().to_string(),
                        metadata: queue
                            .child("Metadata")
                            .map(|m| {
                                m.children
                                    .iter()
                                    .map(|e| (e.name.clone(), e.text.clone()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if queues.iter().any(|q| q.name.is_empty()) {
            return Err(unparseable(&resp, OP, "a <Queue> without a <Name>"));
        }
        let next_marker = root
            .child_text("NextMarker")
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        Ok(QueueListPage {
            queues,
            next_marker,
        })
    }

    /// Every queue of the account whose name starts with `prefix`, following all pages. A
    /// marker the service already returned is [`Error::Unexpected`] (paging would never end).
    pub async fn list_all_queues(&self, prefix: Option<&str>) -> Result<Vec<QueueItem>, Error> {
        let options = ListQueuesOptions {
            prefix: prefix.map(str::to_string),
            max_results: None,
        };
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self.list_queues(&options, marker.as_deref()).await?;
            all.extend(page.queues);
            let Some(next) = page.next_marker else {
                return Ok(all);
            };
            if !seen.insert(next.clone()) {
                return Err(Error::Unexpected(Box::new(
                    ErrorInfo::new(
                        "the service returned a list marker it had already returned; \
                         listing would never end",
                    )
                    .with_operation("queue list"),
                )));
            }
            marker = Some(next);
        }
    }

    /// The queue's approximate message count (invisible messages included) and metadata.
    pub async fn metadata(&self) -> Result<QueueProperties, Error> {
        const OP: &str = "queue get metadata";
        let mut url = self.queue_url.clone();
        append_query(&mut url, "comp", "metadata");
        let resp = self
            .request(Method::GET, url, OP)
            .idempotent(true)
            .send()
            .await?;
        let count = resp
            .header("x-ms-approximate-messages-count")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                unparseable(
                    &resp,
                    OP,
                    "missing or invalid x-ms-approximate-messages-count",
                )
            })?;
        let metadata = resp
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                lower
                    .strip_prefix("x-ms-meta-")
                    .map(|key| (key.to_string(), value.clone()))
            })
            .collect();
        Ok(QueueProperties {
            approximate_message_count: count,
            metadata,
        })
    }

    /// Puts a message. The text is sent as is (XML-escaped); one whose escaped form is over
    /// 64 KiB is refused before sending with [`Error::TooLarge`].
    pub async fn put_message(&self, text: &str, options: PutOptions) -> Result<SentMessage, Error> {
        const OP: &str = "queue put message";
        options.validate().map_err(|e| e.during(OP))?;
        let body = message_body(text, OP)?;
        let mut url = self.messages_url(&[])?;
        if let Some(delay) = options.visibility_delay {
            append_query(&mut url, "visibilitytimeout", &delay.as_secs().to_string());
        }
        if let Some(ttl) = options.ttl {
            append_query(&mut url, "messagettl", &ttl.query_value());
        }
        let resp = self
            .request(Method::POST, url, OP)
            .body("application/xml", body)
            .send()
            .await?;
        let root = parse_body(&resp, OP)?;
        let message = root
            .child("QueueMessage")
            .ok_or_else(|| unparseable(&resp, OP, "no <QueueMessage> in the answer"))?;
        let fields = MessageFields::new(message);
        let sent = (|| {
            Ok::<_, String>(SentMessage {
                id: fields.text("MessageId")?,
                pop_receipt: fields.text("PopReceipt")?,
                insertion_time: fields.date("InsertionTime")?,
                expiration_time: fields.date("ExpirationTime")?,
                next_visible: fields.date("TimeNextVisible")?,
            })
        })();
        sent.map_err(|what| unparseable(&resp, OP, &what))
    }

    /// Receives up to `count` messages and hides them for `visibility` (at least 1 second).
    /// An empty queue gives an empty list.
    pub async fn get_messages(
        &self,
        count: MessageCount,
        visibility: VisibilityTimeout,
    ) -> Result<Vec<QueueMessage>, Error> {
        const OP: &str = "queue get messages";
        if visibility.as_secs() == 0 {
            return Err(Error::invalid_input(
                "the visibility timeout for received messages must be at least 1 second",
            )
            .during(OP));
        }
        let mut url = self.messages_url(&[])?;
        append_query(&mut url, "numofmessages", &count.get().to_string());
        append_query(
            &mut url,
            "visibilitytimeout",
            &visibility.as_secs().to_string(),
        );
        let resp = self.request(Method::GET, url, OP).send().await?;
        let root = parse_body(&resp, OP)?;
        root.children_named("QueueMessage")
            .map(|message| {
                let fields = MessageFields::new(message);
                Ok::<_, String>(QueueMessage {
                    id: fields.text("MessageId")?,
                    pop_receipt: fields.text("PopReceipt")?,
                    dequeue_count: fields.number("DequeueCount")?,
                    text: fields.raw_text("MessageText")?,
                    insertion_time: fields.date("InsertionTime")?,
                    expiration_time: fields.date("ExpirationTime")?,
                    next_visible: fields.date("TimeNextVisible")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|what| unparseable(&resp, OP, &what))
    }

    /// Looks at up to `count` visible messages without dequeuing them.
    pub async fn peek_messages(&self, count: MessageCount) -> Result<Vec<PeekedMessage>, Error> {
        const OP: &str = "queue peek messages";
        let mut url = self.messages_url(&[])?;
        append_query(&mut url, "peekonly", "true");
        append_query(&mut url, "numofmessages", &count.get().to_string());
        let resp = self
            .request(Method::GET, url, OP)
            .idempotent(true)
            .send()
            .await?;
        let root = parse_body(&resp, OP)?;
        root.children_named("QueueMessage")
            .map(|message| {
                let fields = MessageFields::new(message);
                Ok::<_, String>(PeekedMessage {
                    id: fields.text("MessageId")?,
                    dequeue_count: fields.number("DequeueCount")?,
                    text: fields.raw_text("MessageText")?,
                    insertion_time: fields.date("InsertionTime")?,
                    expiration_time: fields.date("ExpirationTime")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|what| unparseable(&resp, OP, &what))
    }

    /// Deletes a received message. A stale pop receipt is [`Error::PreconditionFailed`], an
    /// unknown message [`Error::NotFound`]. The delete is retried after a dropped connection,
    /// so `NotFound` can also mean an earlier attempt already deleted it.
    pub async fn delete_message(&self, id: &str, pop_receipt: &str) -> Result<(), Error> {
        const OP: &str = "queue delete message";
        let url = self
            .message_url(id, pop_receipt)
            .map_err(|e| e.during(OP))?;
        self.request(Method::DELETE, url, OP)
            .idempotent(true)
            .send()
            .await
            .map(drop)
    }

    /// Changes a received message's visibility (and, with `text`, its content). Returns the
    /// new pop receipt and visibility time; the old receipt stops working. Renewing the lease
    /// of a long-running job is `update_message(id, receipt, timeout, None)`.
    pub async fn update_message(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: VisibilityTimeout,
        text: Option<&str>,
    ) -> Result<UpdatedMessage, Error> {
        const OP: &str = "queue update message";
        let body = text.map(|t| message_body(t, OP)).transpose()?;
        let mut url = self
            .message_url(id, pop_receipt)
            .map_err(|e| e.during(OP))?;
        append_query(
            &mut url,
            "visibilitytimeout",
            &visibility.as_secs().to_string(),
        );
        let mut request = self.request(Method::PUT, url, OP);
        if let Some(body) = body {
            request = request.body("application/xml", body);
        }
        let resp = request.send().await?;
        let pop_receipt = resp
            .header("x-ms-popreceipt")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| unparseable(&resp, OP, "no x-ms-popreceipt header"))?
            .to_string();
        let next_visible = resp
            .header("x-ms-time-next-visible")
            .and_then(parse_http_date)
            .ok_or_else(|| unparseable(&resp, OP, "missing or invalid x-ms-time-next-visible"))?;
        Ok(UpdatedMessage {
            pop_receipt,
            next_visible,
        })
    }

    /// Deletes every message in the queue.
    pub async fn clear(&self) -> Result<(), Error> {
        let url = self.messages_url(&[])?;
        self.request(Method::DELETE, url, "queue clear")
            .idempotent(true)
            .send()
            .await
            .map(drop)
    }

    /// `<queue url>/messages/<id>?popreceipt=<receipt>`. A message id that is a dot segment
    /// (also percent-encoded) is refused: it would address the queue, not a message.
    fn message_url(&self, id: &str, pop_receipt: &str) -> Result<Url, Error> {
        if id.is_empty() || pop_receipt.is_empty() {
            return Err(Error::invalid_input(
                "a message id and its pop receipt are required",
            ));
        }
        let mut url = self.messages_url(&[id]).map_err(|_| {
            Error::invalid_input(format!(
                "the message id `{id}` is a `.` or `..` path segment (after URL decoding); it \
                 would address the queue instead of a message. Use the id the service returned"
            ))
        })?;
        append_query(&mut url, "popreceipt", pop_receipt);
        Ok(url)
    }
}

/// Builds the `<QueueMessage>` body or the error that stops it being sent.
fn message_body(text: &str, operation: &str) -> Result<Vec<u8>, Error> {
    xml::message_body(text).map_err(|e| match e {
        TextError::TooLarge(len) => Error::TooLarge(Box::new(
            ErrorInfo::new(format!(
                "the message text is {len} bytes once XML-escaped, over the {MAX_MESSAGE_BYTES}-byte \
                 limit; store the payload elsewhere and enqueue a reference"
            ))
            .with_operation(operation),
        )),
        TextError::InvalidChar(c) => Error::invalid_input(format!(
            "the message text contains U+{:04X}, which XML cannot carry; base64-encode the payload",
            u32::from(c)
        ))
        .during(operation),
    })
}

/// A failed Queue Storage answer as an [`Error`], the way this client maps it: the code from
/// the XML `<Code>`, else the `x-ms-error-code` header, else none (Azurite sends empty 400
/// bodies); the variant is decided by status (and `PopReceiptMismatch`). Useful for requests
/// sent through the same [`Pipeline`] that this client does not wrap.
pub fn response_error(resp: &HttpResponse, operation: &str) -> Error {
    let parsed = xml::parse(&resp.body)
        .ok()
        .filter(|root| root.name == "Error");
    let code = parsed
        .as_ref()
        .and_then(|root| root.child_text("Code"))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .or_else(|| resp.header("x-ms-error-code"))
        .map(str::to_string);
    let message = parsed
        .as_ref()
        .and_then(|root| root.child_text("Message"))
        .and_then(|m| m.lines().next())
        .unwrap_or_default();
    error_from_response(resp, operation, code, message)
}

/// Parses a 2xx XML body; malformed XML is [`Error::Unexpected`].
fn parse_body(resp: &HttpResponse, operation: &str) -> Result<Element, Error> {
    xml::parse(&resp.body).map_err(|e| unparseable(resp, operation, &e.0))
}

/// Typed access to the children of one `<QueueMessage>`; errors name the missing field.
struct MessageFields<'a>(&'a Element);

impl<'a> MessageFields<'a> {
    fn new(element: &'a Element) -> Self {
        MessageFields(element)
    }

    fn raw_text(&self, name: &str) -> Result<String, String> {
        self.0
            .child_text(name)
            .map(str::to_string)
            .ok_or_else(|| format!("<{name}> is missing"))
    }

    fn text(&self, name: &str) -> Result<String, String> {
        let value = self.raw_text(name)?.trim().to_string();
        if value.is_empty() {
            return Err(format!("<{name}> is empty"));
        }
        Ok(value)
    }

    fn number(&self, name: &str) -> Result<u32, String> {
        self.text(name)?
            .parse()
            .map_err(|_| format!("<{name}> is not a number"))
    }

    fn date(&self, name: &str) -> Result<DateTime<Utc>, String> {
        parse_http_date(&self.text(name)?)
            .ok_or_else(|| format!("<{name}> is not an RFC 1123 date"))
    }
}

#[cfg(test)]
mod tests;
