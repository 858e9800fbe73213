//! Counting what went over the wire: reads the workers' `--trace` files (every HTTP attempt,
//! retries included) and names each exchange by service and operation, with the RU charge
//! Cosmos reported and the conflicts (412) it answered.

use crate::wire::record::Exchange;
use std::collections::BTreeMap;
use std::path::Path;

/// Counts by operation name (`queue.receive`, `cosmos.replace`, ...), plus totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    /// Requests by operation, setup included.
    pub by_operation: BTreeMap<String, u64>,
    /// Sum of `x-ms-request-charge` over all Cosmos answers.
    pub request_units: f64,
    /// Cosmos answers with status 412 (a conditional write lost a race).
    pub conflicts: u64,
}

/// Operations that create the deployment (queues, database, containers); a worker does them
/// once at start, so they are left out of the per-node figures.
pub fn is_setup(operation: &str) -> bool {
    operation.ends_with(".setup")
}

impl Traffic {
    /// Adds every complete exchange of a trace file (a worker that is still writing may
    /// have left half a line at the end; it is skipped).
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the trace {}: {e}", path.display()))?;
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for (i, line) in complete
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let exchange = Exchange::from_json_line(line, i + 1)
                .map_err(|e| format!("trace {}: {e}", path.display()))?;
            self.add(&exchange);
        }
        Ok(())
    }

    /// Adds one exchange.
    pub fn add(&mut self, exchange: &Exchange) {
        *self
            .by_operation
            .entry(operation(exchange).to_string())
            .or_default() += 1;
        if let Some(charge) = response_header(exchange, "x-ms-request-charge")
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            self.request_units += charge;
        }
        if exchange.status == Some(412) {
            self.conflicts += 1;
        }
    }

    /// All requests except setup.
    pub fn requests(&self) -> u64 {
        self.by_operation
            .iter()
            .filter(|(op, _)| !is_setup(op))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests to one service (`queue` or `cosmos`), setup excluded.
    pub fn service_requests(&self, service: &str) -> u64 {
        self.by_operation
            .iter()
            .filter(|(op, _)| !is_setup(op) && op.split('.').next() == Some(service))
            .map(|(_, n)| n)
            .sum()
    }
}

fn response_header<'a>(exchange: &'a Exchange, name: &str) -> Option<&'a str> {
    exchange
        .response_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The operation an exchange performed, from its method, path and headers.
pub fn operation(exchange: &Exchange) -> &'static str {
    let (path, query) = split_url(&exchange.url);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = exchange.method.as_str();
    if let Some(docs) = segments.iter().position(|s| *s == "docs") {
        let is_query = exchange
            .request_header("x-ms-documentdb-isquery")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let has_id = segments.len() > docs + 1;
        return match (method, has_id) {
            ("GET", true) => "cosmos.read",
            ("PUT", true) => "cosmos.replace",
            ("PATCH", true) => "cosmos.patch",
            ("DELETE", true) => "cosmos.delete",
            ("POST", false) if is_query => "cosmos.query",
            ("POST", false) => "cosmos.create",
            _ => "cosmos.other",
        };
    }
    if segments.first() == Some(&"dbs") || segments.is_empty() && query.is_empty() {
        return "cosmos.setup";
    }
    if segments.last() == Some(&"messages") {
        return match method {
            "GET" if query.contains("peekonly=true") => "queue.peek",
            "GET" => "queue.receive",
            "POST" => "queue.send",
            "DELETE" => "queue.clear",
            _ => "queue.other",
        };
    }
    if segments.len() >= 2 && segments[segments.len() - 2] == "messages" {
        return match method {
            "DELETE" => "queue.delete",
            "PUT" => "queue.update",
            _ => "queue.other",
        };
    }
    match method {
        "PUT" | "DELETE" => "queue.setup",
        "GET" if query.contains("comp=metadata") => "queue.metadata",
        _ => "queue.other",
    }
}

fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::Body;

    fn exchange(method: &str, url: &str, headers: &[(&str, &str)]) -> Exchange {
        Exchange {
            seq: 1,
            method: method.into(),
            url: url.into(),
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            request_body: Body::default(),
            status: Some(200),
            response_headers: vec![("x-ms-request-charge".into(), "2.5".into())],
            response_body: Body::default(),
            error: None,
            error_kind: None,
            error_code: None,
            payloads_masked: false,
            duration_ms: 1,
            attempt: 1,
            signature_sha256: None,
        }
    }

    #[test]
    fn names_queue_and_cosmos_operations_from_method_path_and_headers() {
        let q = "http://127.0.0.1:11001/devstoreaccount1/jobs";
        let c = "http://127.0.0.1:18081/dbs/d/colls/c/docs";
        let cases = [
            (
                exchange(
                    "GET",
                    &format!("{q}/messages?numofmessages=32&visibilitytimeout=30"),
                    &[],
                ),
                "queue.receive",
            ),
            (
                exchange("GET", &format!("{q}/messages?peekonly=true"), &[]),
                "queue.peek",
            ),
            (
                exchange("POST", &format!("{q}/messages"), &[]),
                "queue.send",
            ),
            (
                exchange("DELETE", &format!("{q}/messages/abc?popreceipt=x"), &[]),
                "queue.delete",
            ),
            (
                exchange(
                    "PUT",
                    &format!("{q}/messages/abc?popreceipt=x&visibilitytimeout=5"),
                    &[],
                ),
                "queue.update",
            ),
            (exchange("PUT", q, &[]), "queue.setup"),
            (exchange("GET", &format!("{c}/run-1"), &[]), "cosmos.read"),
            (
                exchange("PUT", &format!("{c}/run-1"), &[]),
                "cosmos.replace",
            ),
            (
                exchange("POST", c, &[("x-ms-documentdb-isquery", "True")]),
                "cosmos.query",
            ),
            (exchange("POST", c, &[]), "cosmos.create"),
            (
                exchange("POST", "http://127.0.0.1:18081/dbs", &[]),
                "cosmos.setup",
            ),
            (
                exchange("POST", "http://127.0.0.1:18081/dbs/d/colls", &[]),
                "cosmos.setup",
            ),
        ];
        for (exchange, want) in cases {
            assert_eq!(
                operation(&exchange),
                want,
                "{} {}",
                exchange.method,
                exchange.url
            );
        }
    }

    #[test]
    fn totals_leave_setup_out_and_add_charges_and_conflicts() {
        let mut traffic = Traffic::default();
        traffic.add(&exchange("PUT", "http://h/acct/jobs", &[]));
        traffic.add(&exchange("GET", "http://h/dbs/d/colls/c/docs/r", &[]));
        let mut lost = exchange("PUT", "http://h/dbs/d/colls/c/docs/r", &[]);
        lost.status = Some(412);
        traffic.add(&lost);
        assert_eq!(traffic.requests(), 2);
        assert_eq!(traffic.service_requests("cosmos"), 2);
        assert_eq!(traffic.service_requests("queue"), 0);
        assert_eq!(traffic.conflicts, 1);
        assert!((traffic.request_units - 7.5).abs() < 1e-9);
    }
}
