//! `CosmosDbContext`: the distributed core's [`RunStore`] on Azure Cosmos DB (SQL API), over
//! this crate's own [`CosmosClient`].
//!
//! Two containers, both partitioned by `/runId`, in the TypeScript adapter's shapes:
//! - the **context container** holds one item per run, `{id: runId, runId, <context keys as
//!   top-level properties>, _flowcraft: <bookkeeping>}`. A commit is ONE replace guarded by
//!   `If-Match` (a 412 is [`Error::PreconditionFailed`], which the core answers by reloading).
//!   A run whose state outgrows the 2 MB item limit keeps the overflow in extra items of its
//!   own partition, written before the commit that references them (see
//!   [`super::cosmos_spill`]); loading such a run is one point read plus one partition query
//!   for the parts this process has not cached yet;
//! - the **status container** holds `{id, runId, status, lastUpdated (epoch seconds),
//!   finalStatus, ...}` ([`StatusRecord`]), created (a 409 when it exists) or replaced with
//!   `If-Match`; the reconciler finds stalled runs with
//!   `SELECT * FROM c WHERE c.status IN (...) AND c.lastUpdated < @t`, paged.
//!
//! Batch worker results and the batches' arrival ledgers are items of the context container
//! too (see [`super::cosmos_batch`]).
//!
//! Every response's request charge (`x-ms-request-charge`) is added to a counter
//! ([`CosmosDbContext::request_charge_total`]) next to a request counter, so a benchmark can
//! report RU and requests per job.

use crate::adapter::cosmos_spill::{self, Entry, MANIFEST_KEY, Manifest, SpillLimits, json_len};
use crate::adapter::{cosmos_batch, cosmos_listing};
use crate::azure::cosmos::{
    ContainerClient, CosmosClient, CosmosResponse, DatabaseClient, MAX_DOCUMENT_BYTES,
    PartitionKey, Query, QueryOptions, QueryPage, ResponseInfo,
};
use crate::distributed::ports::{Page, RunPhase, RunStore, StatusRecord, Versioned, WorkerResult};
use crate::distributed::state::RunState;
use crate::{Error, ErrorInfo};
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The partition key path of both containers.
pub const PARTITION_KEY_PATH: &str = "/runId";

/// A status item larger than this drops the context copy from `finalStatus.payload` (the
/// context stays in the context container) so it always fits in one item.
const STATUS_ITEM_MAX: usize = 1024 * 1024;

/// How many spill buckets are written at once.
const WRITE_CONCURRENCY: usize = 8;

/// How often a load is retried when the spilled parts it needs were replaced meanwhile.
const LOAD_TRIES: usize = 5;

/// Bytes of spilled parts kept in memory per store (they are immutable, so cached by id).
const BUCKET_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Runs whose stored layout is remembered (to rewrite only the parts a commit changed).
const LAYOUT_CACHE_RUNS: usize = 256;

/// The indexing policy of the status container: only what the stalled-run query filters on.
pub(crate) fn status_indexing_policy() -> Value {
    json!({
        "indexingMode": "consistent",
        "automatic": true,
        "includedPaths": [{"path": "/status/?"}, {"path": "/lastUpdated/?"}],
        "excludedPaths": [{"path": "/*"}, {"path": "/\"_etag\"/?"}]
    })
}

/// The indexing policy of the context container: only `/kind` and `/batch` (scalar values),
/// which the batch-result query filters on ([`super::cosmos_batch`]); run items and spilled
/// parts are read by id and carry neither property (a context key of that name costs one
/// index term per commit, and only when its value is a scalar).
pub(crate) fn context_indexing_policy() -> Value {
    json!({
        "indexingMode": "consistent",
        "automatic": true,
        "includedPaths": [{"path": "/kind/?"}, {"path": "/batch/?"}],
        "excludedPaths": [{"path": "/*"}, {"path": "/\"_etag\"/?"}]
    })
}

/// A JSON body sent as is, whose echo in the answer is not parsed (saves parsing large
/// items the service sends back).
pub(crate) struct Blob(pub(crate) Value);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Blob(Value::Null))
    }
}

/// Request units and requests, summed over every answer (failed ones are billed too).
#[derive(Debug, Default)]
pub(crate) struct Meter {
    milli_ru: AtomicU64,
    requests: AtomicU64,
}

impl Meter {
    pub(crate) fn add(&self, charge: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if charge.is_finite() && charge > 0.0 {
            // Rounded to 1/1000 RU; the service reports at most two decimals.
            self.milli_ru
                .fetch_add((charge * 1000.0).round() as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn track<T>(
        &self,
        result: Result<CosmosResponse<T>, Error>,
    ) -> Result<CosmosResponse<T>, Error> {
        match &result {
            Ok(resp) => self.add(resp.info.request_charge),
            Err(e) => self.add_error(e),
        }
        result
    }

    /// [`Meter::track`] for one query page.
    pub(crate) fn track_page<T>(
        &self,
        result: Result<QueryPage<T>, Error>,
    ) -> Result<QueryPage<T>, Error> {
        match &result {
            Ok(page) => self.add(page.info.request_charge),
            Err(e) => self.add_error(e),
        }
        result
    }

    /// Counts a failed request with the charge its answer carried, if any.
    fn add_error(&self, error: &Error) {
        self.add(
            error
                .info()
                .request_charge
                .as_deref()
                .and_then(|c| c.trim().parse::<f64>().ok())
                .unwrap_or(0.0),
        );
    }
}

/// Spilled parts by item id (immutable once written) and, per run, the manifest of the
/// version last seen with its ETag.
#[derive(Default)]
struct Cache {
    buckets: HashMap<String, (Arc<Vec<Entry>>, usize, u64)>,
    bucket_bytes: usize,
    layouts: HashMap<String, (String, Option<Manifest>, u64)>,
    tick: u64,
}

impl Cache {
    fn next(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn bucket(&mut self, id: &str) -> Option<Arc<Vec<Entry>>> {
        let tick = self.next();
        self.buckets.get_mut(id).map(|(entries, _, used)| {
            *used = tick;
            entries.clone()
        })
    }

    fn put_bucket(&mut self, id: String, entries: Arc<Vec<Entry>>) {
        let size = entries.iter().map(Entry::approximate_size).sum::<usize>();
        if size > BUCKET_CACHE_BYTES {
            return;
        }
        let tick = self.next();
        if let Some((_, old, _)) = self.buckets.insert(id, (entries, size, tick)) {
            self.bucket_bytes -= old;
        }
        self.bucket_bytes += size;
        while self.bucket_bytes > BUCKET_CACHE_BYTES {
            let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some((_, size, _)) = self.buckets.remove(&oldest) {
                self.bucket_bytes -= size;
            }
        }
    }

    fn forget_bucket(&mut self, id: &str) {
        if let Some((_, size, _)) = self.buckets.remove(id) {
            self.bucket_bytes -= size;
        }
    }

    /// The manifest of the version of `run_id` tagged `etag`, if that is the one remembered
    /// (`Some(None)`: that version was stored whole).
    fn layout(&self, run_id: &str, etag: &str) -> Option<Option<Manifest>> {
        self.layouts
            .get(run_id)
            .filter(|(tag, _, _)| tag == etag)
            .map(|(_, manifest, _)| manifest.clone())
    }

    fn put_layout(&mut self, run_id: &str, etag: String, manifest: Option<Manifest>) {
        let tick = self.next();
        self.layouts
            .insert(run_id.to_string(), (etag, manifest, tick));
        if self.layouts.len() > LAYOUT_CACHE_RUNS
            && let Some(oldest) = self
                .layouts
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(id, _)| id.clone())
        {
            self.layouts.remove(&oldest);
        }
    }
}

/// The run store on Cosmos DB: a context container (one item per run, plus spilled parts of
/// very large runs) and a status container, both partitioned by `/runId`.
///
/// ```no_run
/// # async fn demo(client: flowcraft_azure::CosmosClient) -> Result<(), flowcraft_azure::Error> {
/// use flowcraft_azure::adapter::cosmos_context::CosmosDbContext;
/// let store = CosmosDbContext::new(client, "flowcraft", "contexts", "statuses")?;
/// for line in store.ensure_resources().await? {
///     println!("{line}");
/// }
/// # Ok(()) }
/// ```
pub struct CosmosDbContext {
    database: DatabaseClient,
    contexts: ContainerClient,
    statuses: ContainerClient,
    limits: SpillLimits,
    meter: Meter,
    cache: Mutex<Cache>,
    /// Set once the service refused the ordered run listing (it needs a query plan).
    ordered_listing_refused: AtomicBool,
}

impl std::fmt::Debug for CosmosDbContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosDbContext")
            .field("database", &self.database.name())
            .field("contexts", &self.contexts.name())
            .field("statuses", &self.statuses.name())
            .finish_non_exhaustive()
    }
}

/// The partition key of a run.
fn pk(run_id: &str) -> PartitionKey {
    PartitionKey::from(run_id)
}

impl CosmosDbContext {
    /// A store over `database` with the two containers (nothing is sent; see
    /// [`CosmosDbContext::ensure_resources`]). Invalid names are [`Error::InvalidInput`].
    pub fn new(
        client: CosmosClient,
        database: &str,
        context_container: &str,
        status_container: &str,
    ) -> Result<Self, Error> {
        let database = client.database(database)?;
        let contexts = database.container(context_container)?;
        let statuses = database.container(status_container)?;
        Ok(CosmosDbContext {
            database,
            contexts,
            statuses,
            limits: SpillLimits::default(),
            meter: Meter::default(),
            cache: Mutex::new(Cache::default()),
            ordered_listing_refused: AtomicBool::new(false),
        })
    }

    /// Uses other spill thresholds (tests use small ones; the defaults suit Cosmos's 2 MB
    /// item limit).
    pub fn with_spill_limits(mut self, limits: SpillLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Creates the database and both containers (partition key `/runId`, indexing policies
    /// that index only what the queries filter on) when they are missing. Returns one line
    /// per resource created; empty when everything existed. An existing container keeps its
    /// own settings.
    pub async fn ensure_resources(&self) -> Result<Vec<String>, Error> {
        let mut created = Vec::new();
        let db = self
            .meter
            .track(self.database.create_if_not_exists().await)?;
        if db.value {
            created.push(format!(
                "created Cosmos database `{}`",
                self.database.name()
            ));
        }
        for (container, policy, what) in [
            (
                &self.contexts,
                context_indexing_policy(),
                "run contexts, /kind and /batch indexed",
            ),
            (
                &self.statuses,
                status_indexing_policy(),
                "run statuses, /status and /lastUpdated indexed",
            ),
        ] {
            let resp = self.meter.track(
                container
                    .create_with_indexing_if_not_exists(PARTITION_KEY_PATH, Some(&policy))
                    .await,
            )?;
            if resp.value {
                created.push(format!(
                    "created Cosmos container `{}/{}` (partition key {PARTITION_KEY_PATH}; {what})",
                    self.database.name(),
                    container.name()
                ));
            }
        }
        Ok(created)
    }

    /// Request units charged so far by every answer this store received (failed requests
    /// included).
    pub fn request_charge_total(&self) -> f64 {
        self.meter.milli_ru.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Requests sent so far (each logical request once; transport retries are not counted).
    pub fn request_count(&self) -> u64 {
        self.meter.requests.load(Ordering::Relaxed)
    }

    /// Runs whose status is in `phases`, updated at or after `since` and before `before`
    /// (epoch seconds), newest first, at most `limit` (up to
    /// [`cosmos_listing::MAX_LISTED`]): one ordered query on the status container. `None`
    /// when the service cannot serve it (a cross-partition `ORDER BY` needs a query plan on
    /// the real gateway; then, and on every later call of this store, list with
    /// [`RunStore::list_stalled`] and sort on the client).
    pub async fn list_recent(
        &self,
        phases: &[RunPhase],
        since: Option<i64>,
        before: i64,
        limit: usize,
    ) -> Result<Option<Vec<StatusRecord>>, Error> {
        if self.ordered_listing_refused.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let rows =
            cosmos_listing::list_recent(&self.statuses, &self.meter, phases, since, before, limit)
                .await?;
        if rows.is_none() {
            tracing::info!(
                "the Cosmos gateway refused the ordered run listing (it needs a query plan); \
                 listing runs unordered and sorting them here"
            );
            self.ordered_listing_refused.store(true, Ordering::Relaxed);
        }
        Ok(rows)
    }

    /// The context container (for tools that inspect the stored items).
    pub fn context_container(&self) -> &ContainerClient {
        &self.contexts
    }

    /// The status container.
    pub fn status_container(&self) -> &ContainerClient {
        &self.statuses
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored run item, with its ETag; `None` when missing.
    async fn read_item(&self, run_id: &str) -> Result<Option<(Map<String, Value>, String)>, Error> {
        match self.meter.track(
            self.contexts
                .read::<Map<String, Value>>(run_id, &pk(run_id))
                .await,
        ) {
            Ok(resp) => {
                let etag = etag_of(&resp.info, resp.value.get("_etag"), "cosmos read run")?;
                Ok(Some((resp.value, etag)))
            }
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e.during("load run")),
        }
    }

    /// Fetches the spilled buckets `ids` not cached yet with one partition query; `None`
    /// when some no longer exist (the run moved on; reload).
    async fn fetch_buckets(
        &self,
        run_id: &str,
        ids: &[String],
    ) -> Result<Option<HashMap<String, Arc<Vec<Entry>>>>, Error> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let mut cache = self.cache();
            for id in ids {
                match cache.bucket(id) {
                    Some(entries) => {
                        found.insert(id.clone(), entries);
                    }
                    None => missing.push(id.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(Some(found));
        }
        let query =
            Query::new("SELECT * FROM c WHERE c.runId = @run AND ARRAY_CONTAINS(@ids, c.id)")
                .param("@run", run_id)
                .param("@ids", Value::from(missing.clone()));
        let options = QueryOptions {
            page_size: 100,
            partition_key: Some(pk(run_id)),
        };
        let pages = self.contexts.query_pages::<Value>(query, options);
        let mut pages = std::pin::pin!(pages);
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.meter.add(0.0);
                e.during("load spilled run state")
            })?;
            self.meter.add(page.info.request_charge);
            for item in page.items {
                let id = item.get("id").and_then(Value::as_str).map(str::to_string);
                let entries = item.get("spill").and_then(Value::as_array);
                let (Some(id), Some(entries)) = (id, entries) else {
                    continue;
                };
                let entries = entries
                    .iter()
                    .cloned()
                    .map(Entry::from_json)
                    .collect::<Result<Vec<_>, _>>()?;
                let entries = Arc::new(entries);
                self.cache().put_bucket(id.clone(), entries.clone());
                found.insert(id, entries);
            }
        }
        Ok(missing
            .iter()
            .all(|id| found.contains_key(id))
            .then_some(found))
    }

    /// Writes one spilled bucket item (a 409 means an earlier attempt of this very write
    /// landed: the id is fresh).
    async fn write_bucket(&self, run_id: &str, id: &str, entries: &[Entry]) -> Result<(), Error> {
        let body = json!({
            "id": id,
            "runId": run_id,
            "spill": entries.iter().map(Entry::to_json).collect::<Vec<_>>(),
        });
        match self
            .meter
            .track(self.contexts.create(&pk(run_id), &Blob(body)).await)
        {
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e.during("write spilled run state")),
        }
    }

    /// Deletes spilled items no version references any more (best effort: an orphan only
    /// costs storage).
    async fn delete_buckets(&self, run_id: &str, ids: Vec<String>) {
        {
            let mut cache = self.cache();
            for id in &ids {
                cache.forget_bucket(id);
            }
        }
        let deletes = stream::iter(ids)
            .map(|id| async move {
                let result = self
                    .meter
                    .track(self.contexts.delete(&id, &pk(run_id), None).await);
                if let Err(e) = result
                    && !matches!(e, Error::NotFound(_))
                {
                    tracing::debug!(run_id, id = %id, error = %e, "could not delete spilled run state");
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY);
        deletes.collect::<Vec<()>>().await;
    }

    /// The run item to store for `state` (whole, or inline part + manifest after writing the
    /// changed buckets). `previous`: the manifest of the version being replaced, when known.
    /// `unverified`: the ETag the write will be conditional on, when it was not just read:
    /// it is checked before any bucket is written, so a commit that already lost its race
    /// writes nothing. Returns the item, its manifest and the ids of buckets written.
    async fn prepare(
        &self,
        state: &RunState,
        previous: Option<&Manifest>,
        unverified: Option<&str>,
    ) -> Result<(Map<String, Value>, Option<Manifest>, Vec<String>), Error> {
        let mut doc = state.to_document()?;
        doc.remove("id");
        doc.remove("runId");
        let min_buckets = previous.map_or(0, |m| m.buckets.len());
        let split = cosmos_spill::split(&doc, &self.limits, min_buckets)?;
        let mut item = Map::new();
        item.insert("id".into(), Value::from(state.run_id.as_str()));
        item.insert("runId".into(), Value::from(state.run_id.as_str()));
        let Some(split) = split else {
            item.extend(doc);
            return Ok((item, None, Vec::new()));
        };
        let count = split.buckets.len();
        let previous_ids: Vec<Option<String>> = match previous {
            Some(m) if m.buckets.len() == count => m.buckets.clone(),
            _ => vec![None; count],
        };
        let mut ids = Vec::with_capacity(count);
        let mut writes = Vec::new();
        let nonce = fastrand::u64(..);
        for (index, (entries, old)) in split.buckets.into_iter().zip(previous_ids).enumerate() {
            if entries.is_empty() {
                ids.push(None);
                continue;
            }
            let unchanged = old.as_ref().and_then(|id| {
                let cached = self.cache().bucket(id)?;
                (*cached == entries).then(|| id.clone())
            });
            match unchanged {
                Some(id) => ids.push(Some(id)),
                None => {
                    let id = format!(
                        "{}:spill:{}.{index}.{nonce:016x}",
                        state.run_id, state.book.revision
                    );
                    ids.push(Some(id.clone()));
                    writes.push((id, entries));
                }
            }
        }
        let written: Vec<String> = writes.iter().map(|(id, _)| id.clone()).collect();
        let run_id = state.run_id.as_str();
        if let Some(etag) = unverified
            && !writes.is_empty()
        {
            self.verify_etag(run_id, etag).await?;
        }
        let result = stream::iter(writes)
            .map(|(id, entries)| async move {
                self.write_bucket(run_id, &id, &entries).await?;
                self.cache().put_bucket(id, Arc::new(entries));
                Ok::<(), Error>(())
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await;
        if let Err(e) = result {
            self.delete_buckets(run_id, written).await;
            return Err(e);
        }
        let manifest = Manifest {
            buckets: ids,
            expanded: split.expanded,
        };
        item.extend(split.inline);
        item.insert(MANIFEST_KEY.into(), manifest.to_json());
        Ok((item, Some(manifest), written))
    }

    /// Checks the run item fits in one Cosmos item.
    fn check_item_size(run_id: &str, item: &Map<String, Value>) -> Result<(), Error> {
        let size = json_len(item);
        if size > MAX_DOCUMENT_BYTES {
            return Err(Error::TooLarge(Box::new(ErrorInfo::new(format!(
                "run {run_id}: the run item would be {size} bytes, over Cosmos's \
                 {MAX_DOCUMENT_BYTES}-byte limit even after spilling; keep large values out \
                 of the context"
            )))));
        }
        Ok(())
    }

    /// After a failed conditional write of the run item: did an earlier attempt of this
    /// same write land (the answer was lost and the retry saw the new ETag)? True when the
    /// stored item references a bucket only this write created.
    async fn landed(&self, run_id: &str, written: &[String]) -> Result<Option<String>, Error> {
        let Some(first) = written.first() else {
            return Ok(None);
        };
        let Some((item, etag)) = self.read_item(run_id).await? else {
            return Ok(None);
        };
        let manifest = match item.get(MANIFEST_KEY) {
            Some(m) => Manifest::from_json(m)?,
            None => return Ok(None),
        };
        Ok(manifest.ids().any(|id| id == first).then_some(etag))
    }

    /// Stores the outcome of a successful write: the new layout, and deletes buckets the
    /// previous version used that the new one does not.
    async fn committed(
        &self,
        run_id: &str,
        etag: &str,
        previous: Option<&Manifest>,
        manifest: Option<Manifest>,
    ) {
        let keep: HashSet<&str> = manifest.iter().flat_map(Manifest::ids).collect();
        let stale: Vec<String> = previous
            .iter()
            .flat_map(|m| m.ids())
            .filter(|id| !keep.contains(id))
            .map(str::to_string)
            .collect();
        self.cache()
            .put_layout(run_id, etag.to_string(), manifest.clone());
        if !stale.is_empty() {
            self.delete_buckets(run_id, stale).await;
        }
    }

    /// Loads the run item and, for a spilled run, its buckets; `None` when the run does not
    /// exist.
    async fn load_state(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        for _ in 0..LOAD_TRIES {
            let Some((mut item, etag)) = self.read_item(run_id).await? else {
                return Ok(None);
            };
            let Some(manifest) = item.remove(MANIFEST_KEY) else {
                self.cache().put_layout(run_id, etag.clone(), None);
                return Ok(Some(Versioned {
                    value: RunState::from_document(item)?,
                    etag,
                }));
            };
            let manifest = Manifest::from_json(&manifest)?;
            let ids: Vec<String> = manifest.ids().map(str::to_string).collect();
            let Some(buckets) = self.fetch_buckets(run_id, &ids).await? else {
                // A newer commit replaced some parts after the read: read again.
                continue;
            };
            let doc = cosmos_spill::join(
                item,
                &manifest.expanded,
                ids.iter().flat_map(|id| buckets[id].iter()),
            )?;
            self.cache()
                .put_layout(run_id, etag.clone(), Some(manifest));
            return Ok(Some(Versioned {
                value: RunState::from_document(doc)?,
                etag,
            }));
        }
        Err(Error::Conflict(Box::new(ErrorInfo::new(format!(
            "run {run_id}: its stored state changed during every one of {LOAD_TRIES} loads; \
             retry later"
        )))))
    }

    /// The manifest of the stored version tagged `etag`, and whether it was just read: from
    /// the cache, else from a read (a read that finds another ETag means the commit would
    /// fail anyway).
    async fn previous_layout(
        &self,
        run_id: &str,
        etag: &str,
    ) -> Result<(Option<Manifest>, bool), Error> {
        if let Some(layout) = self.cache().layout(run_id, etag) {
            return Ok((layout, false));
        }
        let item = self.verify_etag(run_id, etag).await?;
        match item.get(MANIFEST_KEY) {
            Some(m) => Ok((Some(Manifest::from_json(m)?), true)),
            None => Ok((None, true)),
        }
    }

    /// Reads the run item and checks it still has `etag` (`PreconditionFailed` otherwise,
    /// `NotFound` when it is gone).
    async fn verify_etag(&self, run_id: &str, etag: &str) -> Result<Map<String, Value>, Error> {
        match self.read_item(run_id).await? {
            Some((item, tag)) if tag == etag => Ok(item),
            Some(_) => Err(Error::PreconditionFailed(Box::new(ErrorInfo::new(
                format!("run {run_id} changed since it was read"),
            )))),
            None => Err(not_found_run(run_id)),
        }
    }
}

fn missing_etag(operation: &str) -> Error {
    Error::Unexpected(Box::new(
        ErrorInfo::new("the answer carried no ETag").with_operation(operation),
    ))
}

/// The ETag of a read: the `etag` header, else the document's `_etag`.
fn etag_of(
    info: &ResponseInfo,
    body_etag: Option<&Value>,
    operation: &str,
) -> Result<String, Error> {
    info.etag
        .clone()
        .or_else(|| body_etag.and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| missing_etag(operation))
}

fn not_found_run(run_id: &str) -> Error {
    Error::NotFound(Box::new(ErrorInfo::new(format!(
        "run {run_id} does not exist"
    ))))
}

/// The status item to store: the record, without the context copy in
/// `finalStatus.payload` when that would make it too large (the context stays in the
/// context container; `payload.contextStoredWithRun` says so).
fn status_item(record: &StatusRecord) -> Result<Value, Error> {
    let mut item = serde_json::to_value(record)
        .map_err(|e| Error::unexpected(format!("cannot serialise the run status: {e}")))?;
    if json_len(&item) > STATUS_ITEM_MAX
        && let Some(payload) = item
            .pointer_mut("/finalStatus/payload")
            .and_then(Value::as_object_mut)
        && payload.remove("context").is_some()
    {
        payload.insert("contextStoredWithRun".into(), Value::Bool(true));
    }
    Ok(item)
}

/// Parses a status item, also the TypeScript client's (no `runId`, `lastUpdated` as an ISO
/// string).
pub(crate) fn parse_status(mut item: Value) -> Result<StatusRecord, Error> {
    if let Some(obj) = item.as_object_mut() {
        if !obj.contains_key("runId")
            && let Some(id) = obj.get("id").cloned()
        {
            obj.insert("runId".into(), id);
        }
        let last = obj.get("lastUpdated").cloned();
        match last {
            Some(Value::Number(n)) if n.as_i64().is_none() => {
                let secs = n.as_f64().map_or(0, |f| f as i64);
                obj.insert("lastUpdated".into(), Value::from(secs));
            }
            Some(Value::String(s)) => {
                let secs = chrono::DateTime::parse_from_rfc3339(&s).map_or(0, |t| t.timestamp());
                obj.insert("lastUpdated".into(), Value::from(secs));
            }
            None | Some(Value::Null) => {
                obj.insert("lastUpdated".into(), Value::from(0));
            }
            _ => {}
        }
    }
    serde_json::from_value(item)
        .map_err(|e| Error::invalid_input(format!("unreadable run status item: {e}")))
}

#[async_trait]
impl RunStore for CosmosDbContext {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        let run_id = state.run_id.as_str();
        let (item, manifest, written) = self.prepare(state, None, None).await?;
        Self::check_item_size(run_id, &item)?;
        let created = match self.meter.track(
            self.contexts
                .create(&pk(run_id), &Blob(Value::Object(item)))
                .await,
        ) {
            Ok(resp) => {
                let etag = resp.info.etag.ok_or_else(|| missing_etag("create run"))?;
                self.cache().put_layout(run_id, etag, manifest);
                true
            }
            Err(Error::Conflict(_)) => {
                if self.landed(run_id, &written).await?.is_none() {
                    self.delete_buckets(run_id, written).await;
                }
                false
            }
            Err(e) => {
                self.delete_buckets(run_id, written).await;
                return Err(e.during("create run"));
            }
        };
        match self.meter.track(
            self.statuses
                .create(&pk(run_id), &Blob(status_item(status)?))
                .await,
        ) {
            Ok(_) | Err(Error::Conflict(_)) => Ok(created),
            Err(e) => Err(e.during("create run status")),
        }
    }

    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        self.load_state(run_id).await
    }

    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        let run_id = state.run_id.as_str();
        let (previous, verified) = self.previous_layout(run_id, etag).await?;
        let unverified = (!verified).then_some(etag);
        let (item, manifest, written) = self.prepare(state, previous.as_ref(), unverified).await?;
        if let Err(e) = Self::check_item_size(run_id, &item) {
            self.delete_buckets(run_id, written).await;
            return Err(e);
        }
        let result = self.meter.track(
            self.contexts
                .replace(run_id, &pk(run_id), &Blob(Value::Object(item)), Some(etag))
                .await,
        );
        let new_etag = match result {
            Ok(resp) => resp.info.etag.ok_or_else(|| missing_etag("commit run"))?,
            Err(Error::PreconditionFailed(info)) => match self.landed(run_id, &written).await? {
                Some(tag) => tag,
                None => {
                    self.delete_buckets(run_id, written).await;
                    return Err(Error::PreconditionFailed(info));
                }
            },
            Err(e) => {
                if !matches!(e, Error::Transport(_) | Error::Timeout(_)) {
                    self.delete_buckets(run_id, written).await;
                }
                return Err(e.during("commit run"));
            }
        };
        self.committed(run_id, &new_etag, previous.as_ref(), manifest)
            .await;
        Ok(new_etag)
    }

    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        match self
            .meter
            .track(self.statuses.read::<Value>(run_id, &pk(run_id)).await)
        {
            Ok(resp) => {
                let etag = etag_of(&resp.info, resp.value.get("_etag"), "read run status")?;
                Ok(Some(Versioned {
                    value: parse_status(resp.value)?,
                    etag,
                }))
            }
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e.during("read run status")),
        }
    }

    async fn write_status(
        &self,
        record: &StatusRecord,
        etag: Option<&str>,
    ) -> Result<String, Error> {
        let run_id = record.run_id.as_str();
        let item = Blob(status_item(record)?);
        let result = match etag {
            None => self
                .meter
                .track(self.statuses.create(&pk(run_id), &item).await),
            Some(tag) => self.meter.track(
                self.statuses
                    .replace(run_id, &pk(run_id), &item, Some(tag))
                    .await,
            ),
        };
        result
            .map_err(|e| e.during("write run status"))?
            .info
            .etag
            .ok_or_else(|| missing_etag("write run status"))
    }

    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        if phases.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                continuation: None,
            });
        }
        let names: Vec<String> = (0..phases.len()).map(|i| format!("@p{i}")).collect();
        let sql = format!(
            "SELECT * FROM c WHERE c.status IN ({}) AND c.lastUpdated < @t",
            names.join(", ")
        );
        let mut query = Query::new(sql).param("@t", older_than);
        for (name, phase) in names.iter().zip(phases) {
            query = query.param(name.as_str(), phase.as_str());
        }
        let options = QueryOptions {
            page_size: u32::try_from(limit.clamp(1, 1000)).unwrap_or(1000),
            partition_key: None,
        };
        let page = self
            .statuses
            .query_page::<Value>(&query, &options, continuation)
            .await;
        let page = match page {
            Ok(page) => {
                self.meter.add(page.info.request_charge);
                page
            }
            Err(e) => {
                self.meter.add(0.0);
                return Err(e.during("list stalled runs"));
            }
        };
        let mut items = Vec::with_capacity(page.items.len());
        for item in page.items {
            match parse_status(item) {
                Ok(record) => items.push(record),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable status item"),
            }
        }
        Ok(Page {
            items,
            continuation: page.continuation,
        })
    }

    async fn put_worker_result(&self, result: &WorkerResult) -> Result<bool, Error> {
        cosmos_batch::put_worker_result(&self.contexts, &self.meter, result).await
    }

    async fn worker_result(
        &self,
        run_id: &str,
        batch: &str,
        node: &str,
    ) -> Result<Option<WorkerResult>, Error> {
        cosmos_batch::worker_result(&self.contexts, &self.meter, run_id, batch, node).await
    }

    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        cosmos_batch::record_arrival(&self.contexts, &self.meter, run_id, batch, node).await
    }

    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error> {
        cosmos_batch::worker_results(&self.contexts, &self.meter, run_id, batch, continuation).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typescript_status_items_parse() {
        let record = parse_status(json!({
            "id": "r1", "status": "running", "lastUpdated": "2025-06-15T10:00:00.000Z"
        }))
        .unwrap();
        assert_eq!(record.run_id, "r1");
        assert_eq!(record.last_updated, 1_749_981_600);
        let record = parse_status(
            json!({"id": "r2", "runId": "r2", "status": "failed", "lastUpdated": 5.7}),
        )
        .unwrap();
        assert_eq!((record.status, record.last_updated), (RunPhase::Failed, 5));
        assert!(parse_status(json!({"id": "r3", "status": "weird"})).is_err());
    }

    #[test]
    fn a_huge_final_status_keeps_its_shape_without_the_context_copy() {
        let mut record = StatusRecord::running("r1", 10);
        record.status = RunPhase::Completed;
        record.final_status = Some(json!({
            "status": "completed",
            "payload": {"status": "completed", "context": {"big": "x".repeat(STATUS_ITEM_MAX)}, "errors": []}
        }));
        let item = status_item(&record).unwrap();
        assert!(json_len(&item) < 4096);
        assert_eq!(item["finalStatus"]["status"], json!("completed"));
        assert_eq!(
            item["finalStatus"]["payload"]["contextStoredWithRun"],
            json!(true)
        );
        assert_eq!(item["lastUpdated"], json!(10));
        let small = StatusRecord::running("r1", 10);
        assert_eq!(
            status_item(&small).unwrap(),
            serde_json::to_value(&small).unwrap()
        );
    }

    #[test]
    fn blob_bodies_serialise_verbatim_and_skip_parsing_echoes() {
        let blob = Blob(json!({"id": "a", "n": [1, 2]}));
        assert_eq!(
            serde_json::to_value(&blob).unwrap(),
            json!({"id": "a", "n": [1, 2]})
        );
        let back: Blob = serde_json::from_str(r#"{"id":"a","huge":[1,2,3]}"#).unwrap();
        assert_eq!(back.0, Value::Null);
    }

    #[test]
    fn the_meter_sums_charges_of_answers_and_errors() {
        let meter = Meter::default();
        let ok: Result<CosmosResponse<()>, Error> = Ok(CosmosResponse {
            value: (),
            info: crate::azure::cosmos::ResponseInfo {
                request_charge: 1.24,
                ..Default::default()
            },
        });
        let _ = meter.track(ok);
        let mut info = ErrorInfo::new("stale");
        info.request_charge = Some("2.5".into());
        let _ = meter.track::<()>(Err(Error::PreconditionFailed(Box::new(info))));
        assert_eq!(meter.requests.load(Ordering::Relaxed), 2);
        assert_eq!(meter.milli_ru.load(Ordering::Relaxed), 3740);
    }
}
