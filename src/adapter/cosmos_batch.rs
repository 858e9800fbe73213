//! Batch worker results and arrival ledgers of [`super::CosmosDbContext`]: the items that let
//! a batch of thousands of workers settle without rewriting the run item once per worker.
//!
//! Both live in the CONTEXT container, in the run's partition (`runId`), next to the run item
//! and its spilled parts (`<runId>:spill:...`), and carry a `kind` so no query ever takes them
//! for a run item:
//! - a **worker result** (`kind` [`RESULT_KIND`], id `<runId>:wr:<batch>:<node>`): the
//!   [`WorkerResult`] fields (`runId`, `batch`, `node`, `activation`, `output`, `action`,
//!   `writes`) as top-level properties, and the `writeId` of the call that wrote it (so a
//!   create retried after its answer was lost recognises its own item). Written once with a
//!   create (409: it exists);
//! - an **arrival ledger** per batch (`kind` [`LEDGER_KIND`], id `<runId>:arrivals:<batch>`):
//!   `{arrived: {<key of node>: 1, ...}}`. An arrival is one PATCH `add /arrived/<key>`,
//!   atomic on the item, and the PATCH answers the new item, whose `arrived` entries are
//!   counted: every arrival sees a distinct count and exactly one sees the batch size. `add`
//!   of an existing key replaces it, so a repeated arrival does not grow the count.
//!
//! Ids: batch and node ids are user data, so in item ids every byte outside
//! `[A-Za-z0-9_.-]` is written `~XX` (hex), which keeps ids free of the characters Cosmos
//! refuses (`/ \ ? #`) and of the `:` separator; an id longer than 255 bytes becomes
//! `wr-<sha256>` / `arrivals-<sha256>` of the long form. The real values stay in the fields.
//! Ledger keys are the node id itself when it is a short `[A-Za-z0-9_-]` name (prefixed `n`,
//! since the emulator refuses PATCH paths starting with `/_`), else `h` + 64 bits of its
//! SHA-256: keys stay short because every arrival's answer carries the whole ledger.
//!
//! The results of a batch are read back with one partition query,
//! `SELECT * FROM c WHERE c.runId = @r AND c.kind = @k AND c.batch = @b`, paged with
//! continuation tokens (the `runId` filter is there because the emulator ignores the
//! partition-key scope of queries). The context container indexes `/kind` and `/batch` for it
//! (see [`super::cosmos_context`]'s indexing policy), so the query seeks instead of scanning
//! the run's partition.

use crate::adapter::cosmos_context::{Blob, Meter};
use crate::azure::cosmos::{
    ContainerClient, MAX_DOCUMENT_BYTES, PartitionKey, PatchOperation, PatchPath, PatchRequest,
    Query, QueryOptions,
};
use crate::distributed::ports::{Page, WorkerResult};
use crate::{Error, ErrorInfo};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use sha2::Digest as _;

/// The `kind` of a worker result item.
pub const RESULT_KIND: &str = "flowcraft.workerResult";

/// The `kind` of an arrival ledger item.
pub const LEDGER_KIND: &str = "flowcraft.batchArrivals";

/// The longest Cosmos item id, in bytes (the service counts characters; bytes are stricter).
const MAX_ID_BYTES: usize = 255;

/// Node ids up to this length are ledger keys as they are (longer ones are hashed).
const MAX_PLAIN_KEY: usize = 16;

/// Results per page of [`worker_results`].
const PAGE_SIZE: u32 = 100;

/// The property of a result item that tells which call wrote it.
const WRITE_ID: &str = "writeId";

/// Attempts of one write whose answer may be lost on the way back.
const WRITE_TRIES: usize = 3;

/// How often an arrival retries the PATCH after losing the race to create the ledger.
const ARRIVAL_TRIES: usize = 4;

/// `part` with every byte outside `[A-Za-z0-9_.-]` written `~XX` (injective, no `:`).
fn escape_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `<runId>:<tag>:<escaped parts joined by :>`, or `<tag>-<sha256 of that>` when too long.
fn item_id(run_id: &str, tag: &str, parts: &[&str]) -> String {
    let mut id = format!("{run_id}:{tag}");
    for part in parts {
        id.push(':');
        id.push_str(&escape_part(part));
    }
    if id.len() <= MAX_ID_BYTES {
        id
    } else {
        format!("{tag}-{}", sha256_hex(&id))
    }
}

/// The id of the result item of `node` in `batch` of `run_id`.
pub fn result_id(run_id: &str, batch: &str, node: &str) -> String {
    item_id(run_id, "wr", &[batch, node])
}

/// The id of the arrival ledger of `batch` of `run_id`.
pub fn ledger_id(run_id: &str, batch: &str) -> String {
    item_id(run_id, "arrivals", &[batch])
}

/// The property of `node` in a ledger's `arrived` object.
pub fn ledger_key(node: &str) -> String {
    let plain = !node.is_empty()
        && node.len() <= MAX_PLAIN_KEY
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if plain {
        format!("n{node}")
    } else {
        format!("h{}", &sha256_hex(node)[..16])
    }
}

fn pk(run_id: &str) -> PartitionKey {
    PartitionKey::from(run_id)
}

/// The item stored for `result`, stamped with `write_id`.
fn result_item(result: &WorkerResult, write_id: &str) -> Result<Value, Error> {
    let fields = serde_json::to_value(result)
        .map_err(|e| Error::unexpected(format!("cannot serialise a batch worker result: {e}")))?;
    let Value::Object(fields) = fields else {
        return Err(Error::unexpected("a batch worker result is not an object"));
    };
    let mut item = Map::new();
    item.insert(
        "id".into(),
        Value::from(result_id(&result.run_id, &result.batch, &result.node)),
    );
    item.insert("kind".into(), Value::from(RESULT_KIND));
    item.insert(WRITE_ID.into(), Value::from(write_id));
    item.extend(fields);
    let item = Value::Object(item);
    let size = serde_json::to_vec(&item).map_or(usize::MAX, |b| b.len());
    if size > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge(Box::new(ErrorInfo::new(format!(
            "run {}: the result of batch worker `{}` is {size} bytes, over Cosmos's \
             {MAX_DOCUMENT_BYTES}-byte item limit; keep large values out of batch worker outputs",
            result.run_id, result.node
        )))));
    }
    Ok(item)
}

/// [`crate::distributed::ports::RunStore::put_worker_result`]: one create, stamped with a
/// random `writeId`. An answer lost on the way back (a dropped connection or a timeout) is
/// retried here; the retry's 409 then reads the stored item, and it is this call's own write
/// (`true`) when it carries this call's `writeId`. Any other 409 is `false`: the first result
/// wins.
pub(crate) async fn put_worker_result(
    contexts: &ContainerClient,
    meter: &Meter,
    result: &WorkerResult,
) -> Result<bool, Error> {
    let write_id = format!("{:016x}", fastrand::u64(..));
    let item = result_item(result, &write_id)?;
    let run_id = result.run_id.as_str();
    let mut lost_answer = false;
    for attempt in 1..=WRITE_TRIES {
        match meter.track(contexts.create(&pk(run_id), &Blob(item.clone())).await) {
            Ok(_) => return Ok(true),
            Err(Error::Conflict(_)) if !lost_answer => return Ok(false),
            Err(Error::Conflict(_)) => {
                let id = result_id(run_id, &result.batch, &result.node);
                return match meter.track(contexts.read::<Value>(&id, &pk(run_id)).await) {
                    Ok(stored) => Ok(stored.value.get(WRITE_ID) == Some(&Value::from(write_id))),
                    Err(Error::NotFound(_)) => Ok(false),
                    Err(e) => Err(e.during("read stored batch worker result")),
                };
            }
            Err(e @ (Error::Transport(_) | Error::Timeout(_))) if attempt < WRITE_TRIES => {
                tracing::debug!(run_id, node = %result.node, error = %e,
                    "batch worker result: the answer was lost; retrying");
                lost_answer = true;
            }
            Err(e) => return Err(e.during("store batch worker result")),
        }
    }
    Err(Error::unexpected(
        "batch worker result: no attempt was made",
    ))
}

/// How many properties an object has, without keeping them.
#[derive(Debug, Default)]
struct KeyCount(u64);

impl<'de> Deserialize<'de> for KeyCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> Visitor<'de> for Counter {
            type Value = KeyCount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyCount, A::Error> {
                let mut n = 0;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(KeyCount(n))
            }
        }
        deserializer.deserialize_map(Counter)
    }
}

/// The part of a ledger item an arrival reads: how many workers arrived.
#[derive(Debug, Deserialize)]
struct Ledger {
    arrived: KeyCount,
}

/// [`crate::distributed::ports::RunStore::record_arrival`]: PATCH `add /arrived/<key>`;
/// when the ledger does not exist yet, create it with this arrival (losing that race to
/// another arrival: PATCH again).
pub(crate) async fn record_arrival(
    contexts: &ContainerClient,
    meter: &Meter,
    run_id: &str,
    batch: &str,
    node: &str,
) -> Result<u64, Error> {
    let id = ledger_id(run_id, batch);
    let key = ledger_key(node);
    let patch = PatchRequest::new(vec![PatchOperation::add(
        PatchPath::from_segments(["arrived", key.as_str()]),
        Value::from(1),
    )])?;
    for attempt in 1..=ARRIVAL_TRIES {
        match meter.track(
            contexts
                .patch::<Ledger>(&id, &pk(run_id), &patch, None)
                .await,
        ) {
            Ok(resp) => return Ok(resp.value.arrived.0),
            Err(Error::NotFound(_)) => {}
            // `add` of a present key replaces it: repeating a PATCH whose answer was lost
            // is safe.
            Err(Error::Transport(_) | Error::Timeout(_)) if attempt < ARRIVAL_TRIES => continue,
            Err(e) => return Err(e.during("record batch arrival")),
        }
        let mut arrived = Map::new();
        arrived.insert(key.clone(), Value::from(1));
        let ledger = serde_json::json!({
            "id": id,
            "runId": run_id,
            "kind": LEDGER_KIND,
            "batch": batch,
            "arrived": arrived,
        });
        match meter.track(contexts.create(&pk(run_id), &Blob(ledger)).await) {
            Ok(_) => return Ok(1),
            // Another arrival created it first, or this create's answer was lost (the next
            // PATCH finds this arrival already there, or the ledger still missing).
            Err(Error::Conflict(_)) => {}
            Err(Error::Transport(_) | Error::Timeout(_)) if attempt < ARRIVAL_TRIES => {}
            Err(e) => return Err(e.during("create batch arrival ledger")),
        }
    }
    Err(Error::Conflict(Box::new(ErrorInfo::new(format!(
        "run {run_id}: the arrival of `{node}` in batch `{batch}` was not recorded in \
         {ARRIVAL_TRIES} tries (lost answers, or a ledger being deleted and recreated); \
         retry later"
    )))))
}

/// [`crate::distributed::ports::RunStore::worker_results`]: one page of the partition query.
pub(crate) async fn worker_results(
    contexts: &ContainerClient,
    meter: &Meter,
    run_id: &str,
    batch: &str,
    continuation: Option<&str>,
) -> Result<Page<WorkerResult>, Error> {
    let query = Query::new("SELECT * FROM c WHERE c.runId = @r AND c.kind = @k AND c.batch = @b")
        .param("@r", run_id)
        .param("@k", RESULT_KIND)
        .param("@b", batch);
    let options = QueryOptions {
        page_size: PAGE_SIZE,
        partition_key: Some(pk(run_id)),
    };
    let page = meter
        .track_page(
            contexts
                .query_page::<Value>(&query, &options, continuation)
                .await,
        )
        .map_err(|e| e.during("read batch worker results"))?;
    let items = page
        .items
        .into_iter()
        .map(|item| parse_result(run_id, item))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        items,
        continuation: page.continuation,
    })
}

/// [`crate::distributed::ports::RunStore::worker_result`]: one point read of the result item.
pub(crate) async fn worker_result(
    contexts: &ContainerClient,
    meter: &Meter,
    run_id: &str,
    batch: &str,
    node: &str,
) -> Result<Option<WorkerResult>, Error> {
    let id = result_id(run_id, batch, node);
    match meter.track(contexts.read::<Value>(&id, &pk(run_id)).await) {
        Ok(stored) => parse_result(run_id, stored.value).map(Some),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e.during("read batch worker result")),
    }
}

/// A stored result item as a [`WorkerResult`]; an unreadable one is an error naming the item.
fn parse_result(run_id: &str, item: Value) -> Result<WorkerResult, Error> {
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    serde_json::from_value::<WorkerResult>(item).map_err(|e| {
        Error::unexpected(format!(
            "run {run_id}: the stored batch worker result `{id}` is unreadable ({e}); \
             delete or repair that item"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_escape_what_cosmos_refuses_and_stay_distinct() {
        assert_eq!(result_id("r1", "g.1", "echo_x_3"), "r1:wr:g.1:echo_x_3");
        let odd = result_id("r1", "a/b?c", "d#e\\f:g~h ü");
        assert_eq!(odd, "r1:wr:a~2Fb~3Fc:d~23e~5Cf~3Ag~7Eh~20~C3~BC");
        assert!(!odd.contains(['/', '\\', '?', '#']));
        // `:` inside a part cannot fake the separator.
        assert_ne!(result_id("r", "a:b", "c"), result_id("r", "a", "b:c"));
        assert_ne!(ledger_id("r", "b"), result_id("r", "b", ""));
        assert_eq!(ledger_id("r", "b 1"), "r:arrivals:b~201");
    }

    #[test]
    fn long_ids_are_hashed_and_still_distinct() {
        let long = "x".repeat(300);
        let a = result_id("run", &long, "n1");
        let b = result_id("run", &long, "n2");
        assert!(a.starts_with("wr-") && a.len() == 67, "{a}");
        assert_ne!(a, b);
        assert!(ledger_id("run", &long).starts_with("arrivals-"));
        let edge = "y".repeat(MAX_ID_BYTES - "run:wr:b:".len());
        assert_eq!(result_id("run", "b", &edge).len(), MAX_ID_BYTES);
    }

    #[test]
    fn ledger_keys_are_safe_property_names() {
        assert_eq!(ledger_key("echo_items_12"), "necho_items_12");
        assert_eq!(ledger_key("_x"), "n_x");
        for odd in ["", "a/b", "~0", "a.b", &"z".repeat(17), "ü"] {
            let key = ledger_key(odd);
            assert!(key.starts_with('h') && key.len() == 17, "{odd}: {key}");
        }
        assert_ne!(ledger_key("a/b"), ledger_key("a/c"));
    }

    #[test]
    fn a_result_item_carries_kind_and_the_real_values() {
        let result = WorkerResult {
            run_id: "r".into(),
            batch: "b/1".into(),
            node: "n#2".into(),
            activation: 3,
            output: Some(json!({"v": 1})),
            action: None,
            writes: Vec::new(),
        };
        let item = result_item(&result, "w1").unwrap();
        assert_eq!(item["id"], json!("r:wr:b~2F1:n~232"));
        assert_eq!(item["kind"], json!(RESULT_KIND));
        assert_eq!(item[WRITE_ID], json!("w1"));
        assert_eq!(
            (item["batch"].clone(), item["node"].clone()),
            (json!("b/1"), json!("n#2"))
        );
        assert_eq!(
            serde_json::from_value::<WorkerResult>(item).unwrap(),
            result
        );
        let huge = WorkerResult {
            output: Some(json!("x".repeat(MAX_DOCUMENT_BYTES))),
            ..result
        };
        assert!(matches!(result_item(&huge, "w"), Err(Error::TooLarge(_))));
    }

    #[test]
    fn an_arrival_answer_is_counted_without_keeping_it() {
        let ledger: Ledger = serde_json::from_value(json!({
            "id": "l", "arrived": {"na": 1, "nb": 1, "hc": 1}, "_etag": "x"
        }))
        .unwrap();
        assert_eq!(ledger.arrived.0, 3);
        assert!(serde_json::from_value::<Ledger>(json!({"arrived": []})).is_err());
        assert!(serde_json::from_value::<Ledger>(json!({"id": "l"})).is_err());
    }
}
