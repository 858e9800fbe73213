//! The run listing of `runs` (and `GET /runs`) on the status container: newest first, in
//! one query,
//! `SELECT TOP n * FROM c WHERE c.status IN (...) AND c.lastUpdated >= @since AND
//! c.lastUpdated < @before ORDER BY c.lastUpdated DESC`, served by the `/lastUpdated` index
//! instead of paging every matching status item to sort them on the client.
//!
//! The query spans partitions (one per run). The Cosmos gateway serves a cross-partition
//! `ORDER BY` / `TOP` only with a query plan, which this client does not build: it answers
//! 400 / sub-status 1004 ([`ErrorInfo::needs_query_plan`](crate::ErrorInfo::needs_query_plan)).
//! [`CosmosDbContext::list_recent`](super::CosmosDbContext::list_recent) then answers `None`
//! and the caller falls back to the unordered stalled-run query with a sort on the client
//! ([`crate::cli::ops::Ops::list`]).

use crate::Error;
use crate::adapter::cosmos_context::{Meter, parse_status};
use crate::azure::cosmos::{ContainerClient, Query, QueryOptions};
use crate::distributed::ports::{RunPhase, StatusRecord};
use serde_json::Value;

/// The most runs one listing returns.
pub const MAX_LISTED: usize = 10_000;

/// Status items per page of the listing query.
const PAGE_SIZE: usize = 1000;

/// The listing query for `phases` (not empty) and at most `limit` rows.
fn listing_query(phases: &[RunPhase], since: Option<i64>, before: i64, limit: usize) -> Query {
    let names: Vec<String> = (0..phases.len()).map(|i| format!("@p{i}")).collect();
    let since_clause = if since.is_some() {
        " AND c.lastUpdated >= @since"
    } else {
        ""
    };
    let sql = format!(
        "SELECT TOP {limit} * FROM c WHERE c.status IN ({}){since_clause} \
         AND c.lastUpdated < @before ORDER BY c.lastUpdated DESC",
        names.join(", ")
    );
    let mut query = Query::new(sql).param("@before", before);
    if let Some(since) = since {
        query = query.param("@since", since);
    }
    for (name, phase) in names.iter().zip(phases) {
        query = query.param(name.as_str(), phase.as_str());
    }
    query
}

/// Status items in `phases` updated at or after `since` and before `before`, newest first
/// (ties by run id), at most `limit` (1 to [`MAX_LISTED`]). `None` when the service cannot
/// serve the ordered query (see the module docs).
pub(crate) async fn list_recent(
    statuses: &ContainerClient,
    meter: &Meter,
    phases: &[RunPhase],
    since: Option<i64>,
    before: i64,
    limit: usize,
) -> Result<Option<Vec<StatusRecord>>, Error> {
    if phases.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let limit = limit.clamp(1, MAX_LISTED);
    let query = listing_query(phases, since, before, limit);
    let options = QueryOptions {
        page_size: u32::try_from(limit.min(PAGE_SIZE)).unwrap_or(1000),
        partition_key: None,
    };
    let mut rows = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let page = meter.track_page(
            statuses
                .query_page::<Value>(&query, &options, continuation.as_deref())
                .await,
        );
        let page = match page {
            Ok(page) => page,
            Err(e) if e.info().needs_query_plan() => return Ok(None),
            Err(e) => return Err(e.during("list runs")),
        };
        for item in page.items {
            match parse_status(item) {
                Ok(record) => rows.push(record),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable status item"),
            }
        }
        match page.continuation {
            Some(next) if rows.len() < limit => continuation = Some(next),
            _ => break,
        }
    }
    sort_newest_first(&mut rows);
    rows.truncate(limit);
    Ok(Some(rows))
}

/// Newest `lastUpdated` first, ties by run id (the order `runs` shows).
pub fn sort_newest_first(rows: &mut [StatusRecord]) {
    rows.sort_by(|a, b| {
        b.last_updated
            .cmp(&a.last_updated)
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_filters_orders_and_limits() {
        let query = listing_query(&[RunPhase::Running, RunPhase::Failed], Some(5), 9, 20);
        let body = query.to_body().unwrap();
        assert_eq!(
            body["query"],
            "SELECT TOP 20 * FROM c WHERE c.status IN (@p0, @p1) AND c.lastUpdated >= @since \
             AND c.lastUpdated < @before ORDER BY c.lastUpdated DESC"
        );
        let params = body["parameters"].to_string();
        for expected in [
            r#""@before","value":9"#,
            r#""@since","value":5"#,
            r#""@p0","value":"running""#,
            r#""@p1","value":"failed""#,
        ] {
            assert!(params.contains(expected), "{params}");
        }
        let open = listing_query(&[RunPhase::Running], None, 9, 1)
            .to_body()
            .unwrap();
        assert!(!open["query"].as_str().unwrap().contains("@since"));
    }

    #[test]
    fn rows_sort_newest_first_then_by_run_id() {
        let mut rows = vec![
            StatusRecord::running("b", 5),
            StatusRecord::running("c", 9),
            StatusRecord::running("a", 5),
        ];
        sort_newest_first(&mut rows);
        let order: Vec<&str> = rows.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"]);
    }
}
