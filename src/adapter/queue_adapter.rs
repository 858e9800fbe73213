//! The job queue on Azure Queue Storage, and the worker process built on it.
//!
//! - [`AzureJobQueue`]: the distributed core's [`JobQueue`] port over our [`QueueClient`]:
//!   receives in batches of up to 32, renews a lease with Update Message (a stale pop receipt
//!   is [`Error::PreconditionFailed`], the lease is lost), completes with Delete Message (a
//!   404 on a retried delete means an earlier attempt deleted it: success), releases by
//!   changing the visibility, and moves poison messages to `<queue>-poison` as a JSON
//!   envelope `{reason, id, dequeueCount, at, queue, text}`. Delays are whole seconds on the
//!   wire: a sub-second delay rounds UP (a requested delay never becomes "at once").
//!   Optional wake-ups ([`WakeSignal`], e.g. Redis) let an idle worker sleep for seconds yet
//!   start a newly sent job at once.
//! - [`AzureQueueAdapter`]: the worker process (the TypeScript adapter's name): the core's
//!   [`Worker`] polling that queue, plus (configurable) the stalled-run reconciler, and
//!   [`AzureQueueAdapter::handle_message`] for serverless hosts (an Azure Functions queue
//!   trigger hands over the message text).
//!
//! The message text is what the core sends: base64 of the JSON job, the TypeScript
//! adapter's format and what Azure Functions queue triggers expect (see
//! [`crate::distributed::job`]); it goes over the wire unchanged unless
//! [`MessageEncoding::Raw`] asks for the JSON itself (readable in the portal, 25 % smaller).
//! Received texts are decoded in either form.

use crate::Error;
use crate::adapter::AzureBackends;
use crate::adapter::reconciler::ReconcilerLoop;
use crate::adapter::redis_store::RedisCoordinationStore;
use crate::adapter::settings::Settings;
use crate::azure::queue::{MessageCount, MessageTtl, PutOptions, QueueClient, VisibilityTimeout};
use crate::distributed::core::Backends;
use crate::distributed::job::JobMessage;
use crate::distributed::ports::{JobQueue, QueueMessage};
use crate::distributed::worker::{Disposition, Worker};
use crate::flow::execute::Environment;
use async_trait::async_trait;
use base64::Engine as _;
use serde_json::json;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The suffix of the poison queue's name.
pub const POISON_SUFFIX: &str = "-poison";

/// How much of a poisoned message's text the envelope keeps when the whole text would make
/// the envelope too large for one message.
const POISON_TEXT_KEEP: usize = 48 * 1024;

/// Wake-up notifications between the processes sharing a queue: a sender says "work was
/// sent", an idle worker waits for that (or for its poll pause to end). Best effort: a lost
/// signal only means the worker finds the work at its next poll.
#[async_trait]
pub trait WakeSignal: Send + Sync + fmt::Debug {
    /// Says that a message that can be received now was sent to `queue`. Never fails: a
    /// signal that cannot be delivered is dropped (and logged by the implementation).
    async fn notify(&self, queue: &str);

    /// Waits for a notification about `queue`, at most about `max`. True when woken by one;
    /// false on timeout or when the signal is unavailable.
    async fn wait(&self, queue: &str, max: Duration) -> bool;
}

/// In-process wake-ups (a [`Notify`] per queue): for a client and workers in one process,
/// and for tests. A notification while nobody waits is kept for the next waiter.
#[derive(Debug, Default)]
pub struct LocalWakeups {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    sent: std::sync::atomic::AtomicU64,
}

impl LocalWakeups {
    /// No queues yet.
    pub fn new() -> Self {
        LocalWakeups::default()
    }

    /// Notifications sent so far.
    pub fn notifications(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn notify_for(&self, queue: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.entry(queue.to_string()).or_default().clone()
    }
}

#[async_trait]
impl WakeSignal for LocalWakeups {
    async fn notify(&self, queue: &str) {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.notify_for(queue).notify_one();
    }

    async fn wait(&self, queue: &str, max: Duration) -> bool {
        let notify = self.notify_for(queue);
        tokio::time::timeout(max, notify.notified()).await.is_ok()
    }
}

/// How job texts are written to the queue (reading accepts both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MessageEncoding {
    /// Base64 of the JSON job, as the core makes it: what Azure Functions queue triggers and
    /// the TypeScript adapter expect.
    #[default]
    Base64,
    /// The JSON job itself.
    Raw,
}

impl MessageEncoding {
    /// Parses `base64` or `raw` (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "base64" => Some(MessageEncoding::Base64),
            "raw" => Some(MessageEncoding::Raw),
            _ => None,
        }
    }

    /// The text to put on the queue for a job text of the core (base64 of JSON). In raw
    /// mode that is the JSON; a text that is not base64 of a JSON object is sent as it is.
    pub fn wire_text(self, text: &str) -> Cow<'_, str> {
        if self == MessageEncoding::Base64 {
            return Cow::Borrowed(text);
        }
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|json| json.trim_start().starts_with('{'))
            .map_or(Cow::Borrowed(text), Cow::Owned)
    }
}

/// The [`JobQueue`] port over Azure Queue Storage (see the module documentation).
#[derive(Clone)]
pub struct AzureJobQueue {
    queue: QueueClient,
    poison: QueueClient,
    wake: Option<Arc<dyn WakeSignal>>,
    encoding: MessageEncoding,
}

impl fmt::Debug for AzureJobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureJobQueue")
            .field("queue", &self.queue.name())
            .field("poison", &self.poison.name())
            .field("wakeups", &self.wake.is_some())
            .field("encoding", &self.encoding)
            .finish()
    }
}

impl AzureJobQueue {
    /// The port over `queue`; its poison queue is `<name>-poison` in the same account.
    /// Errors when that name is not a valid queue name (the queue name is over 56
    /// characters).
    pub fn new(queue: QueueClient) -> Result<Self, Error> {
        let poison_name = format!("{}{POISON_SUFFIX}", queue.name());
        let poison = queue.queue(&poison_name).map_err(|e| {
            e.during(format!(
                "name the poison queue of '{}' (keep queue names at most 56 characters)",
                queue.name()
            ))
        })?;
        Ok(AzureJobQueue {
            queue,
            poison,
            wake: None,
            encoding: MessageEncoding::default(),
        })
    }

    /// Writes job texts in this encoding (default [`MessageEncoding::Base64`]).
    pub fn with_message_encoding(mut self, encoding: MessageEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Signals `wake` after each send of a message visible at once, and waits on it in
    /// [`JobQueue::wait_for_work`], so an idle worker starts new work without polling.
    pub fn with_wakeups(mut self, wake: Arc<dyn WakeSignal>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// The job queue's client.
    pub fn client(&self) -> &QueueClient {
        &self.queue
    }

    /// The poison queue's client.
    pub fn poison_client(&self) -> &QueueClient {
        &self.poison
    }

    /// Creates the job queue and the poison queue when missing; returns what it created
    /// (empty when both existed). Safe to call from every worker at start.
    pub async fn ensure_resources(&self) -> Result<Vec<String>, Error> {
        let mut created = Vec::new();
        for queue in [&self.queue, &self.poison] {
            if queue
                .create_if_not_exists()
                .await
                .map_err(|e| e.during(format!("create queue '{}'", queue.name())))?
            {
                created.push(format!("created queue '{}'", queue.name()));
            }
        }
        Ok(created)
    }
}

/// A delay or visibility as whole seconds, rounded UP (so 1 ms is 1 s, never 0 unless zero).
fn whole_seconds(duration: Duration, what: &str) -> Result<VisibilityTimeout, Error> {
    VisibilityTimeout::from_duration(duration).map_err(|e| e.during(what.to_string()))
}

/// A stale or unknown pop receipt: the lease on the message is lost.
fn lost_lease(e: Error, id: &str) -> Error {
    match e {
        Error::NotFound(info) if info.code.as_deref() != Some("QueueNotFound") => {
            let mut info = info;
            info.message = format!(
                "message {id} is gone or was received by someone else (lease lost): {}",
                info.message
            );
            Error::PreconditionFailed(info)
        }
        other => other,
    }
}

#[async_trait]
impl JobQueue for AzureJobQueue {
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error> {
        let delay_secs = whole_seconds(delay, "queue send")?;
        let options = PutOptions {
            visibility_delay: (delay_secs.as_secs() > 0).then_some(delay_secs),
            // Jobs live until processed: a workflow may sleep for the 7-day maximum delay,
            // which the default 7-day time to live would not allow.
            ttl: Some(MessageTtl::Never),
        };
        self.queue
            .put_message(&self.encoding.wire_text(text), options)
            .await?;
        if delay.is_zero()
            && let Some(wake) = &self.wake
        {
            let (wake, name) = (wake.clone(), self.queue.name().to_string());
            // Fire and forget: a slow or absent Redis never slows a send down.
            tokio::spawn(async move { wake.notify(&name).await });
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        let count = MessageCount::new(u32::try_from(max).unwrap_or(u32::MAX))?;
        let visibility = whole_seconds(visibility, "queue receive")?;
        let messages = self.queue.get_messages(count, visibility).await?;
        Ok(messages
            .into_iter()
            .map(|m| QueueMessage {
                id: m.id,
                receipt: m.pop_receipt,
                text: m.text,
                dequeue_count: m.dequeue_count,
            })
            .collect())
    }

    async fn renew(&self, id: &str, receipt: &str, visibility: Duration) -> Result<String, Error> {
        let visibility = whole_seconds(visibility, "queue renew lease")?;
        self.queue
            .update_message(id, receipt, visibility, None)
            .await
            .map(|updated| updated.pop_receipt)
            .map_err(|e| lost_lease(e, id))
    }

    async fn send_leased(&self, text: &str, lease: Duration) -> Result<QueueMessage, Error> {
        let options = PutOptions {
            // Hidden for the lease: no wake-up, nobody else can receive it meanwhile.
            visibility_delay: Some(whole_seconds(lease, "queue send leased")?),
            ttl: Some(MessageTtl::Never),
        };
        let sent = self
            .queue
            .put_message(&self.encoding.wire_text(text), options)
            .await?;
        Ok(QueueMessage {
            id: sent.id,
            receipt: sent.pop_receipt,
            text: text.to_string(),
            dequeue_count: 1,
        })
    }

    async fn rewrite(
        &self,
        id: &str,
        receipt: &str,
        text: &str,
        visibility: Duration,
    ) -> Result<String, Error> {
        let visibility = whole_seconds(visibility, "queue rewrite message")?;
        self.queue
            .update_message(
                id,
                receipt,
                visibility,
                Some(&self.encoding.wire_text(text)),
            )
            .await
            .map(|updated| updated.pop_receipt)
            .map_err(|e| lost_lease(e, id))
    }

    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error> {
        match self.queue.delete_message(id, receipt).await {
            // Gone already: an earlier attempt whose answer was lost deleted it.
            Err(Error::NotFound(info)) if info.code.as_deref() != Some("QueueNotFound") => Ok(()),
            other => other,
        }
    }

    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error> {
        let delay = whole_seconds(delay, "queue release")?;
        self.queue
            .update_message(id, receipt, delay, None)
            .await
            .map(drop)
            .map_err(|e| lost_lease(e, id))
    }

    async fn move_to_poison(&self, message: &QueueMessage, reason: &str) -> Result<(), Error> {
        let envelope = poison_envelope(self.queue.name(), message, reason, false);
        let sent = match self.poison.put_message(&envelope, never_expires()).await {
            Err(Error::TooLarge(_)) => {
                let shorter = poison_envelope(self.queue.name(), message, reason, true);
                self.poison.put_message(&shorter, never_expires()).await
            }
            other => other,
        };
        sent.map_err(|e| e.during("queue move to poison"))?;
        self.complete(&message.id, &message.receipt)
            .await
            .map_err(|e| lost_lease(e, &message.id))
    }

    async fn wait_for_work(&self, max: Duration) {
        let Some(wake) = &self.wake else {
            tokio::time::sleep(max).await;
            return;
        };
        let until = tokio::time::Instant::now() + max;
        if !wake.wait(self.queue.name(), max).await {
            // Whatever the signal did (an outage answers at once), never wait less than
            // asked without a wake-up: no hot loop.
            tokio::time::sleep_until(until).await;
        }
    }
}

fn never_expires() -> PutOptions {
    PutOptions {
        visibility_delay: None,
        ttl: Some(MessageTtl::Never),
    }
}

/// The poison envelope: `{reason, id, dequeueCount, at, queue, text}` (with `truncated` and
/// `textLength` when the text had to be cut to fit one message).
fn poison_envelope(queue: &str, message: &QueueMessage, reason: &str, cut: bool) -> String {
    let mut text = message.text.as_str();
    if cut {
        let mut end = POISON_TEXT_KEEP.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    let reason: String = reason.chars().take(4096).collect();
    let mut value = json!({
        "reason": reason,
        "id": message.id,
        "dequeueCount": message.dequeue_count,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "queue": queue,
        "text": text,
    });
    if cut {
        value["truncated"] = json!(true);
        value["textLength"] = json!(message.text.len());
    }
    value.to_string()
}

/// The worker process on Azure: the core's [`Worker`] polling an [`AzureJobQueue`] (batches,
/// bounded concurrency, idle backoff with jitter and wake-ups, lease renewal, poison queue,
/// graceful shutdown), plus the stalled-run reconciler when the settings say so.
#[derive(Debug)]
pub struct AzureQueueAdapter {
    worker: Arc<Worker>,
    reconciler: Option<ReconcilerLoop>,
}

impl AzureQueueAdapter {
    /// The worker for `env` (its node registry, and its blueprint registry: the blueprints
    /// this worker runs) over the Azure backends, configured by `settings`.
    pub fn new(env: Environment, backends: AzureBackends, settings: &Settings) -> Self {
        Self::from_parts(env, backends.backends, backends.redis, settings)
    }

    /// Like [`AzureQueueAdapter::new`] over any backends (e.g. an in-memory run store in
    /// tests); `redis`, when given, holds the reconciler's leader lease.
    pub fn from_parts(
        env: Environment,
        backends: Backends,
        redis: Option<Arc<RedisCoordinationStore>>,
        settings: &Settings,
    ) -> Self {
        let reconciler = settings.reconciler.then(|| {
            ReconcilerLoop::new(
                backends.clone(),
                env.blueprints.clone(),
                settings.reconciler_config(),
                redis,
            )
            .with_lease_name(format!(
                "{}:{}/{}",
                crate::adapter::reconciler::LEASE_NAME,
                settings.database,
                settings.status_container
            ))
        });
        let worker = Arc::new(Worker::new(env, backends, settings.worker_config()));
        AzureQueueAdapter { worker, reconciler }
    }

    /// The core worker (its events, its configuration).
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Polls the queue (and runs the reconciler, if configured) until `shutdown` fires, then
    /// lets the jobs in flight finish within the grace period and releases the rest.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let reconciler = self
            .reconciler
            .map(|r| tokio::spawn(r.run(shutdown.clone())));
        self.worker.clone().run(shutdown).await;
        if let Some(handle) = reconciler {
            handle
                .await
                .map_err(|e| Error::unexpected(format!("the reconciler task failed: {e}")))?;
        }
        Ok(())
    }

    /// Processes one message text for a serverless host (e.g. an Azure Functions queue
    /// trigger, which hands over the text already base64-decoded): base64 JSON and raw JSON
    /// are both accepted. Returns what to do with the message ([`Disposition::Release`]:
    /// let the host redeliver it later, e.g. by failing the invocation). A malformed text is
    /// [`Error::InvalidInput`] saying why; infrastructure errors are returned as they are.
    pub async fn handle_message(&self, text: &str) -> Result<Disposition, Error> {
        self.handle_message_delivery(text, 1).await
    }

    /// [`AzureQueueAdapter::handle_message`] for the `dequeue_count`-th delivery (Functions
    /// passes it as `dequeueCount`), so retries and the poison limit apply.
    pub async fn handle_message_delivery(
        &self,
        text: &str,
        dequeue_count: u32,
    ) -> Result<Disposition, Error> {
        let job = JobMessage::decode(text).map_err(|e| e.during("decode queue message"))?;
        let handled = self.worker.handle_job(&job, dequeue_count.max(1)).await?;
        Ok(handled.disposition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pipeline::{NoAuth, Pipeline};
    use crate::wire::transport::{HttpRequest, HttpResponse, Transport};

    #[test]
    fn raw_encoding_sends_the_json_of_a_base64_job_and_leaves_other_text_alone() {
        let job = r#"{"runId":"r1","blueprintId":"b","nodeId":"n"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(job);
        assert_eq!(MessageEncoding::Base64.wire_text(&b64), b64.as_str());
        assert_eq!(MessageEncoding::Raw.wire_text(&b64), job);
        for other in [job, "not base64 !!", "aGVsbG8="] {
            assert_eq!(MessageEncoding::Raw.wire_text(other), other);
        }
        assert_eq!(MessageEncoding::parse(" Raw "), Some(MessageEncoding::Raw));
        assert_eq!(MessageEncoding::parse("json"), None);
    }

    /// Answers every request like an empty Azurite queue would, recording what was asked.
    #[derive(Debug, Default)]
    struct EmptyQueue {
        requests: Mutex<Vec<(String, String)>>,
    }

    impl EmptyQueue {
        fn count(&self, method: &str) -> usize {
            let requests = self.requests.lock().unwrap();
            requests.iter().filter(|(m, _)| m == method).count()
        }

        fn urls(&self) -> Vec<String> {
            let requests = self.requests.lock().unwrap();
            requests.iter().map(|(_, u)| u.clone()).collect()
        }
    }

    #[async_trait]
    impl Transport for EmptyQueue {
        async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
            self.requests
                .lock()
                .unwrap()
                .push((request.method.to_string(), request.url.to_string()));
            let body = match request.method.as_str() {
                "GET" => b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><QueueMessagesList/>".to_vec(),
                "POST" => b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><QueueMessagesList><QueueMessage><MessageId>m1</MessageId><InsertionTime>Thu, 26 Nov 2026 21:09:10 GMT</InsertionTime><ExpirationTime>Fri, 31 Dec 9999 23:59:59 GMT</ExpirationTime><PopReceipt>r1</PopReceipt><TimeNextVisible>Thu, 26 Nov 2026 21:09:10 GMT</TimeNextVisible></QueueMessage></QueueMessagesList>".to_vec(),
                _ => Vec::new(),
            };
            let status = match request.method.as_str() {
                "POST" => 201,
                "GET" => 200,
                _ => 204,
            };
            let headers = if request.method == "PUT" {
                vec![
                    ("x-ms-popreceipt".into(), "r2".into()),
                    (
                        "x-ms-time-next-visible".into(),
                        "Thu, 26 Nov 2026 21:09:14 GMT".into(),
                    ),
                ]
            } else {
                Vec::new()
            };
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        }
    }

    fn queue_over(transport: Arc<EmptyQueue>) -> AzureJobQueue {
        let pipeline = Pipeline::new(transport, Arc::new(NoAuth));
        let client =
            QueueClient::new(pipeline, "http://127.0.0.1:1/devstoreaccount1", "jobs").unwrap();
        AzureJobQueue::new(client).unwrap()
    }

    #[tokio::test]
    async fn sub_second_delays_round_up_and_zero_stays_zero() {
        let transport = Arc::new(EmptyQueue::default());
        let queue = queue_over(transport.clone());
        queue.send("a", Duration::ZERO).await.unwrap();
        queue.send("b", Duration::from_millis(1)).await.unwrap();
        queue.send("c", Duration::from_millis(1500)).await.unwrap();
        let urls = transport.urls();
        assert!(!urls[0].contains("visibilitytimeout"), "{}", urls[0]);
        assert!(urls[1].contains("visibilitytimeout=1&"), "{}", urls[1]);
        assert!(urls[2].contains("visibilitytimeout=2&"), "{}", urls[2]);
        assert!(urls.iter().all(|u| u.contains("messagettl=-1")));
        queue
            .release("m1", "r1", Duration::from_millis(10))
            .await
            .unwrap();
        assert!(transport.urls()[3].ends_with("visibilitytimeout=1"));
    }

    #[test]
    fn a_queue_name_without_room_for_the_poison_suffix_is_refused() {
        let pipeline = Pipeline::new(Arc::new(EmptyQueue::default()), Arc::new(NoAuth));
        let client =
            QueueClient::new(pipeline, "http://127.0.0.1:1/acct", &"q".repeat(60)).unwrap();
        let err = AzureJobQueue::new(client).unwrap_err().to_string();
        assert!(err.contains("56"), "{err}");
    }

    #[test]
    fn the_poison_envelope_carries_reason_text_id_and_count_and_fits_when_cut() {
        let message = QueueMessage {
            id: "m1".into(),
            receipt: "r".into(),
            text: "é".repeat(40_000),
            dequeue_count: 6,
        };
        let full: serde_json::Value =
            serde_json::from_str(&poison_envelope("jobs", &message, "why", false)).unwrap();
        assert_eq!(full["reason"], "why");
        assert_eq!(full["id"], "m1");
        assert_eq!(full["dequeueCount"], 6);
        assert_eq!(full["text"].as_str().unwrap(), message.text);
        assert!(full.get("truncated").is_none());
        let cut = poison_envelope("jobs", &message, "why", true);
        assert!(cut.len() < 64 * 1024);
        let cut: serde_json::Value = serde_json::from_str(&cut).unwrap();
        assert_eq!(cut["truncated"], true);
        assert_eq!(cut["textLength"], message.text.len());
    }

    /// An idle worker over the Azure queue (an empty queue answering at once, time paused)
    /// with the idle pause of the settings without Redis: counted exactly, it stays within
    /// 0.5 queue requests per second.
    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_polls_at_most_every_two_seconds() {
        let transport = Arc::new(EmptyQueue::default());
        let queue: Arc<dyn JobQueue> = Arc::new(queue_over(transport.clone()));
        let backends = Backends::new(
            queue,
            Arc::new(crate::distributed::memory::MemoryRunStore::new()),
            Arc::new(crate::distributed::memory::MemoryCoordinationStore::new()),
        );
        let config = crate::distributed::worker::WorkerConfig {
            idle_backoff_max: crate::adapter::settings::DEFAULT_POLL_MAX_WITHOUT_REDIS,
            ..Default::default()
        };
        let worker = Arc::new(Worker::new(
            Environment::new(crate::flow::node::NodeRegistry::with_builtins()),
            backends,
            config,
        ));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let minutes = 10;
        tokio::time::sleep(Duration::from_secs(60 * minutes)).await;
        shutdown.cancel();
        running.await.unwrap();
        let receives = transport.count("GET");
        let limit = 60 * minutes as usize / 2;
        assert!(receives > 0, "the worker never polled");
        assert!(
            receives <= limit,
            "{receives} receives in {minutes} min, over {limit}"
        );
        assert_eq!(transport.count("POST") + transport.count("PUT"), 0);
    }

    /// A signal that is unavailable (it answers "not woken" at once).
    #[derive(Debug)]
    struct Broken;

    #[async_trait]
    impl WakeSignal for Broken {
        async fn notify(&self, _queue: &str) {}
        async fn wait(&self, _queue: &str, _max: Duration) -> bool {
            false
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_wake_signal_still_waits_the_whole_pause() {
        let queue = queue_over(Arc::new(EmptyQueue::default())).with_wakeups(Arc::new(Broken));
        let start = tokio::time::Instant::now();
        queue.wait_for_work(Duration::from_secs(9)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }

    /// An adapter over in-memory backends (reconciler off) and a client for blueprint
    /// `srv` (a -> b).
    fn adapter_in_memory() -> (
        AzureQueueAdapter,
        Backends,
        crate::distributed::client::Client,
    ) {
        let bp = crate::flow::blueprint::Blueprint::from_json(
            r#"{"id":"srv","nodes":[{"id":"a","uses":"set","params":{"values":{"x":1}}},
                {"id":"b","uses":"echo"}],"edges":[{"source":"a","target":"b"}]}"#,
        )
        .unwrap();
        let mut blueprints = crate::flow::execute::BlueprintRegistry::new();
        blueprints.insert(bp);
        let env = Environment::new(crate::flow::node::NodeRegistry::with_builtins())
            .with_blueprints(blueprints);
        let backends = Backends::in_memory();
        let settings = Settings::from_lookup(|name| match name {
            "AZURE_STORAGE_CONNECTION_STRING" => Some("UseDevelopmentStorage=true".into()),
            "COSMOS_CONNECTION_STRING" => {
                Some("AccountEndpoint=http://127.0.0.1:18081/;AccountKey=a2V5;".into())
            }
            "FLOWCRAFT_RECONCILER" => Some("off".into()),
            _ => None,
        })
        .unwrap();
        let client =
            crate::distributed::client::Client::new(backends.clone(), env.blueprints.clone());
        let adapter = AzureQueueAdapter::from_parts(env, backends.clone(), None, &settings);
        (adapter, backends, client)
    }

    #[tokio::test]
    async fn handle_message_takes_base64_and_raw_json_and_refuses_garbage_clearly() {
        let (adapter, backends, client) = adapter_in_memory();
        let run_id = client
            .start_run("srv", serde_json::Map::new())
            .await
            .unwrap();
        // The start job as a Functions trigger hands it over: already decoded, raw JSON.
        let start = backends
            .queue
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap();
        let job = JobMessage::decode(&start[0].text).unwrap();
        let raw = serde_json::to_string(&job).unwrap();
        assert_eq!(
            adapter.handle_message(&raw).await.unwrap(),
            Disposition::Complete
        );
        // Its successor as base64 JSON (the queue text itself).
        let next = backends
            .queue
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            adapter.handle_message(&next[0].text).await.unwrap(),
            Disposition::Complete
        );
        let status = client.status(&run_id).await.unwrap().unwrap();
        assert_eq!(status.status, crate::flow::runtime::RunStatus::Completed);
        for garbage in ["", "not base64 !!", "{\"runId\": 1}", "e30="] {
            let err = adapter.handle_message(garbage).await.unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{garbage}: {err:?}");
            assert!(err.to_string().contains("job message"), "{err}");
        }
    }

    /// With wake-ups, an idle worker whose pause has grown to the maximum still receives
    /// right after a send: the wait ends on the signal, not on the timer.
    #[tokio::test(start_paused = true)]
    async fn a_wake_up_ends_the_idle_pause_at_once() {
        let transport = Arc::new(EmptyQueue::default());
        let wake = Arc::new(LocalWakeups::new());
        let queue = Arc::new(queue_over(transport.clone()).with_wakeups(wake.clone()));
        let start = tokio::time::Instant::now();
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.wait_for_work(Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        queue.send("job", Duration::ZERO).await.unwrap();
        waiter.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(wake.notifications(), 1);
        // A delayed message is not receivable now: no wake-up.
        queue.send("later", Duration::from_secs(3)).await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(wake.notifications(), 1);
        // Without a signal the wait lasts the whole pause.
        let start = tokio::time::Instant::now();
        queue.wait_for_work(Duration::from_secs(7)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }
}
