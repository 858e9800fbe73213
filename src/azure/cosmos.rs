//! Azure Cosmos DB SQL REST client (`x-ms-version: 2020-07-15`): databases and containers
//! (create if not exists), documents (read, create, upsert, replace with `If-Match`, delete,
//! PATCH) and parameterised queries paged over `x-ms-continuation`. Every answer exposes the
//! request charge, ETag, session token and activity id. Signing, retries and sending are the
//! [`Pipeline`]'s job; errors are decided by HTTP status, never by the (inconsistent) body.
//!
//! ```no_run
//! # async fn demo(pipeline: flowcraft_azure::wire::pipeline::Pipeline) -> Result<(), flowcraft_azure::Error> {
//! use flowcraft_azure::azure::cosmos::{CosmosClient, PartitionKey, Query, QueryOptions};
//! use serde_json::{json, Value};
//! let db = CosmosClient::new(pipeline, "http://127.0.0.1:18081")?.database("flowcraft")?;
//! db.create_if_not_exists().await?;
//! let runs = db.container("runs")?;
//! runs.create_if_not_exists("/runId").await?;
//! let created = runs.create(&PartitionKey::from("r1"), &json!({"id": "r1", "runId": "r1"})).await?;
//! let etag = created.info.etag.clone();
//! let failed: Vec<Value> = runs
//!     .query_all(&Query::new("SELECT * FROM c WHERE c.status = @s").param("@s", "failed"), &QueryOptions::default())
//!     .await?;
//! # let _ = (etag, failed); Ok(()) }
//! ```

mod keys;
mod patch;
mod query;
mod session;

pub use keys::PartitionKey;
pub use patch::{MAX_PATCH_OPERATIONS, PatchOperation, PatchPath, PatchRequest};
pub use query::{Query, QueryOptions};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use url::Url;

use crate::azure::auth::endpoint_url;
use crate::azure::response::{error_from_response, unparseable};
use crate::error::{Error, ErrorInfo};
use crate::wire::encoding::push_segments;
use crate::wire::pipeline::Pipeline;
use crate::wire::request::{Method, RequestBuilder};
use crate::wire::transport::HttpResponse;
use keys::{validate_document_id, validate_partition_key_path, validate_resource_name};
use session::SessionTokens;

/// The Cosmos DB REST version this client speaks.
pub const COSMOS_API_VERSION: &str = "2020-07-15";

/// The largest document Cosmos DB stores: 2 MB of JSON.
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;

/// What every Cosmos answer says about itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseInfo {
    /// The HTTP status.
    pub status: u16,
    /// Request units consumed (`x-ms-request-charge`), 0 if not sent.
    pub request_charge: f64,
    /// The resource's ETag (opaque; echo it verbatim in `If-Match`).
    pub etag: Option<String>,
    /// `x-ms-session-token`, for session consistency.
    pub session_token: Option<String>,
    /// `x-ms-activity-id`, for support requests.
    pub activity_id: Option<String>,
}

impl ResponseInfo {
    fn from_response(resp: &HttpResponse) -> Self {
        let text = |name: &str| {
            resp.header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        ResponseInfo {
            status: resp.status,
            request_charge: resp
                .header("x-ms-request-charge")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|c| c.is_finite())
                .unwrap_or(0.0),
            etag: text("etag"),
            session_token: text("x-ms-session-token"),
            activity_id: text("x-ms-activity-id"),
        }
    }
}

/// A value returned by Cosmos DB with the answer's [`ResponseInfo`].
#[derive(Debug, Clone, PartialEq)]
pub struct CosmosResponse<T> {
    /// The value (the stored document, for document operations).
    pub value: T,
    /// Charge, ETag, session token, activity id.
    pub info: ResponseInfo,
}

impl CosmosResponse<()> {
    /// An answer without a value (deletes): only its info.
    fn unit(resp: &HttpResponse) -> Self {
        CosmosResponse {
            value: (),
            info: ResponseInfo::from_response(resp),
        }
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// Opaque token for the next page; `None` on the last page.
    pub continuation: Option<String>,
    /// Charge, session token, activity id of this page's request.
    pub info: ResponseInfo,
}

/// A client for one Cosmos DB account. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CosmosClient {
    pipeline: Pipeline,
    endpoint: Url,
}

/// Builds a [`CosmosClient`]: `CosmosClient::builder(pipeline, endpoint)`, then options,
/// then [`CosmosClientBuilder::build`].
#[derive(Debug, Clone)]
#[must_use = "call `build` to get the client"]
pub struct CosmosClientBuilder {
    pipeline: Pipeline,
    endpoint: String,
    allow_http: bool,
}

impl CosmosClientBuilder {
    /// Also accepts plain HTTP to a non-loopback host (an emulator in another container).
    /// Traffic, including signatures, is then unencrypted. Off by default.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Checks the endpoint (HTTPS unless loopback or allowed).
    pub fn build(self) -> Result<CosmosClient, Error> {
        Ok(CosmosClient {
            pipeline: self.pipeline,
            endpoint: endpoint_url(&self.endpoint, self.allow_http)?,
        })
    }
}

impl CosmosClient {
    /// A builder for a client of the account at `endpoint` (e.g.
    /// `https://acct.documents.azure.com`, or `http://127.0.0.1:18081` for the emulator).
    pub fn builder(pipeline: Pipeline, endpoint: &str) -> CosmosClientBuilder {
        CosmosClientBuilder {
            pipeline,
            endpoint: endpoint.to_string(),
            allow_http: false,
        }
    }

    /// A client for the account at `endpoint` with the default options (plain HTTP only
    /// for loopback hosts).
    pub fn new(pipeline: Pipeline, endpoint: &str) -> Result<Self, Error> {
        Self::builder(pipeline, endpoint).build()
    }

    /// A handle for a database (nothing is sent).
    pub fn database(&self, name: &str) -> Result<DatabaseClient, Error> {
        validate_resource_name("database name", name)?;
        let mut url = self.endpoint.clone();
        push_segments(&mut url, "database name", &["dbs", name])?;
        Ok(DatabaseClient {
            client: self.clone(),
            name: name.to_string(),
            url,
        })
    }

    /// The account endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// A request to this account, for calls this client does not wrap (container
    /// definitions, offers): API version and `Accept` set, failures mapped by
    /// [`response_error`]. Signed and retried by the client's pipeline.
    pub fn request(&self, method: Method, url: Url, operation: &str) -> RequestBuilder<'_> {
        self.pipeline
            .request(method, url)
            .operation(operation)
            .header("x-ms-version", COSMOS_API_VERSION)
            .header("accept", "application/json")
            .map_errors(response_error)
    }
}

/// A handle for one database.
#[derive(Debug, Clone)]
pub struct DatabaseClient {
    client: CosmosClient,
    name: String,
    /// `<endpoint>/dbs/<name>`.
    url: Url,
}

impl DatabaseClient {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account client this handle belongs to.
    pub fn client(&self) -> &CosmosClient {
        &self.client
    }

    /// The database's URL (`<endpoint>/dbs/<name>`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Creates the database unless it exists. The value is `true` when it was created,
    /// `false` when it already existed (the info is then that of the 409 answer).
    pub async fn create_if_not_exists(&self) -> Result<CosmosResponse<bool>, Error> {
        let mut url = self.client.endpoint.clone();
        push_segments(&mut url, "path", &["dbs"])?;
        let body = json!({ "id": self.name });
        create_if_absent(&self.client, "cosmos create database", url, &body).await
    }

    /// Deletes the database and everything in it.
    pub async fn delete(&self) -> Result<CosmosResponse<()>, Error> {
        let resp = self
            .client
            .request(Method::DELETE, self.url.clone(), "cosmos delete database")
            .idempotent(true)
            .send()
            .await?;
        Ok(CosmosResponse::unit(&resp))
    }

    /// A handle for a container of this database (nothing is sent).
    pub fn container(&self, name: &str) -> Result<ContainerClient, Error> {
        validate_resource_name("container name", name)?;
        let mut url = self.url.clone();
        push_segments(&mut url, "container name", &["colls", name])?;
        Ok(ContainerClient {
            database: self.clone(),
            name: name.to_string(),
            url,
            session: Arc::new(Mutex::new(SessionTokens::default())),
        })
    }
}

/// POSTs a database or container definition; 409 (already exists) is `false`.
async fn create_if_absent(
    client: &CosmosClient,
    operation: &str,
    url: Url,
    body: &Value,
) -> Result<CosmosResponse<bool>, Error> {
    let resp = client
        .request(Method::POST, url, operation)
        .body("application/json", body.to_string())
        .idempotent(true)
        .send_any_status()
        .await?;
    let created = resp.status != 409;
    if created && !resp.is_success() {
        return Err(response_error(&resp, operation));
    }
    Ok(CosmosResponse {
        value: created,
        info: ResponseInfo::from_response(&resp),
    })
}

/// A handle for one container: documents and queries. Clones share the session tokens
/// (kept per partition-key range, merged by the highest LSN).
#[derive(Debug, Clone)]
pub struct ContainerClient {
    database: DatabaseClient,
    name: String,
    /// `<endpoint>/dbs/<db>/colls/<name>`.
    url: Url,
    /// The `x-ms-session-token`s seen, per range, sent back on later requests.
    session: Arc<Mutex<SessionTokens>>,
}

impl ContainerClient {
    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's URL (`<endpoint>/dbs/<db>/colls/<name>`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `<container url>/docs`.
    fn docs_url(&self) -> Result<Url, Error> {
        let mut url = self.url.clone();
        push_segments(&mut url, "path", &["docs"])?;
        Ok(url)
    }

    /// `<container url>/docs/<id>`; an invalid id (a dot segment among them) is refused.
    fn doc_url(&self, id: &str) -> Result<Url, Error> {
        validate_document_id(id)?;
        let mut url = self.url.clone();
        push_segments(&mut url, "document id", &["docs", id])?;
        Ok(url)
    }

    /// Creates the container with a hash partition key on `partition_key_path` (e.g.
    /// `/runId`) unless it exists. The value is `true` when it was created, `false` when it
    /// already existed (an existing container keeps its own partition key).
    pub async fn create_if_not_exists(
        &self,
        partition_key_path: &str,
    ) -> Result<CosmosResponse<bool>, Error> {
        self.create_with_indexing_if_not_exists(partition_key_path, None)
            .await
    }

    /// Like [`ContainerClient::create_if_not_exists`], with an indexing policy for a new
    /// container (the `indexingPolicy` JSON object of the container definition, e.g.
    /// `{"indexingMode": "consistent", "includedPaths": [{"path": "/status/?"}],
    /// "excludedPaths": [{"path": "/*"}]}`). An existing container keeps its own policy.
    pub async fn create_with_indexing_if_not_exists(
        &self,
        partition_key_path: &str,
        indexing_policy: Option<&Value>,
    ) -> Result<CosmosResponse<bool>, Error> {
        validate_partition_key_path(partition_key_path)?;
        let mut url = self.database.url.clone();
        push_segments(&mut url, "path", &["colls"])?;
        let mut body = json!({
            "id": self.name,
            "partitionKey": { "paths": [partition_key_path], "kind": "Hash", "version": 2 }
        });
        if let Some(policy) = indexing_policy {
            body["indexingPolicy"] = policy.clone();
        }
        create_if_absent(&self.database.client, "cosmos create container", url, &body).await
    }

    /// Deletes the container and its documents.
    pub async fn delete_container(&self) -> Result<CosmosResponse<()>, Error> {
        let resp = self
            .database
            .client
            .request(Method::DELETE, self.url.clone(), "cosmos delete container")
            .idempotent(true)
            .send()
            .await?;
        Ok(CosmosResponse::unit(&resp))
    }

    /// Reads one document. A missing document is [`Error::NotFound`].
    pub async fn read<T: DeserializeOwned>(
        &self,
        id: &str,
        partition_key: &PartitionKey,
    ) -> Result<CosmosResponse<T>, Error> {
        const OP: &str = "cosmos read document";
        let url = self.doc_url(id).map_err(|e| e.during(OP))?;
        let request = self
            .document_request(Method::GET, url, partition_key, OP)
            .header("x-ms-documentdb-query-enablecrosspartition", "True")
            .idempotent(true);
        let resp = self.send(request).await?;
        typed_response(&resp, OP)
    }

    /// Creates a document (an object with a string `id`). An existing id is
    /// [`Error::Conflict`]. Returns the stored document.
    pub async fn create<T: Serialize + DeserializeOwned>(
        &self,
        partition_key: &PartitionKey,
        document: &T,
    ) -> Result<CosmosResponse<T>, Error> {
        const OP: &str = "cosmos create document";
        let (_, body) = document_body(document).map_err(|e| e.during(OP))?;
        let url = self.docs_url().map_err(|e| e.during(OP))?;
        let request = self.document_request(Method::POST, url, partition_key, OP);
        self.write_document(request, body, None).await
    }

    /// Creates or replaces a document; with `if_match`, only if the stored ETag matches
    /// (else [`Error::PreconditionFailed`]).
    pub async fn upsert<T: Serialize + DeserializeOwned>(
        &self,
        partition_key: &PartitionKey,
        document: &T,
        if_match: Option<&str>,
    ) -> Result<CosmosResponse<T>, Error> {
        const OP: &str = "cosmos upsert document";
        let (_, body) = document_body(document).map_err(|e| e.during(OP))?;
        let url = self.docs_url().map_err(|e| e.during(OP))?;
        let request = self
            .document_request(Method::POST, url, partition_key, OP)
            .header("x-ms-documentdb-is-upsert", "True");
        self.write_document(request, body, if_match).await
    }

    /// Replaces document `id`; with `if_match`, only if the stored ETag matches (else
    /// [`Error::PreconditionFailed`]). The document's own `id` must equal `id`. Retried after
    /// a dropped connection: if the lost attempt had succeeded, the retry reports
    /// `PreconditionFailed` (the ETag moved on); re-read to see which write won.
    pub async fn replace<T: Serialize + DeserializeOwned>(
        &self,
        id: &str,
        partition_key: &PartitionKey,
        document: &T,
        if_match: Option<&str>,
    ) -> Result<CosmosResponse<T>, Error> {
        const OP: &str = "cosmos replace document";
        let url = self.doc_url(id).map_err(|e| e.during(OP))?;
        let (body_id, body) = document_body(document).map_err(|e| e.during(OP))?;
        if body_id != id {
            return Err(Error::invalid_input(format!(
                "the document's id `{body_id}` differs from the id `{id}` being replaced"
            ))
            .during(OP));
        }
        let request = self
            .document_request(Method::PUT, url, partition_key, OP)
            .idempotent(true);
        self.write_document(request, body, if_match).await
    }

    /// Deletes document `id`; with `if_match`, only if the stored ETag matches.
    pub async fn delete(
        &self,
        id: &str,
        partition_key: &PartitionKey,
        if_match: Option<&str>,
    ) -> Result<CosmosResponse<()>, Error> {
        const OP: &str = "cosmos delete document";
        let url = self.doc_url(id).map_err(|e| e.during(OP))?;
        let request = self
            .document_request(Method::DELETE, url, partition_key, OP)
            .header_opt("if-match", if_match)
            .idempotent(true);
        let resp = self.send(request).await?;
        Ok(CosmosResponse::unit(&resp))
    }

    /// Applies a partial update (1 to 10 operations, optional condition) to document `id`;
    /// with `if_match`, only if the stored ETag matches. Returns the updated document.
    /// A false condition or a stale ETag is [`Error::PreconditionFailed`].
    pub async fn patch<T: DeserializeOwned>(
        &self,
        id: &str,
        partition_key: &PartitionKey,
        patch: &PatchRequest,
        if_match: Option<&str>,
    ) -> Result<CosmosResponse<T>, Error> {
        const OP: &str = "cosmos patch document";
        let url = self.doc_url(id).map_err(|e| e.during(OP))?;
        let request = self
            .document_request(Method::PATCH, url, partition_key, OP)
            .header_opt("if-match", if_match)
            .body("application/json_patch+json", patch.to_body().to_string());
        let resp = self.send(request).await?;
        typed_response(&resp, OP)
    }

    /// One page of a query. Pass the previous page's `continuation` for the next page.
    pub async fn query_page<T: DeserializeOwned>(
        &self,
        query: &Query,
        options: &QueryOptions,
        continuation: Option<&str>,
    ) -> Result<QueryPage<T>, Error> {
        const OP: &str = "cosmos query";
        let body = query.to_body().map_err(|e| e.during(OP))?;
        if options.page_size == 0 {
            return Err(Error::invalid_input("the query page size must be at least 1").during(OP));
        }
        let url = self.docs_url().map_err(|e| e.during(OP))?;
        let request = self
            .database
            .client
            .request(Method::POST, url, OP)
            .header_opt(
                "x-ms-documentdb-partitionkey",
                options
                    .partition_key
                    .as_ref()
                    .map(PartitionKey::header_value),
            )
            .header("x-ms-documentdb-isquery", "True")
            .header("x-ms-documentdb-query-enablecrosspartition", "True")
            .header("x-ms-max-item-count", options.page_size.to_string())
            .header_opt("x-ms-continuation", continuation.filter(|t| !t.is_empty()))
            .body("application/query+json", body.to_string())
            .idempotent(true);
        let resp = self.send(request).await?;
        #[derive(serde::Deserialize)]
        struct Page<T> {
            #[serde(rename = "Documents")]
            documents: Vec<T>,
        }
        let page: Page<T> = serde_json::from_slice(&resp.body)
            .map_err(|e| unparseable(&resp, OP, "query page").with_source(e))?;
        let next = resp
            .header("x-ms-continuation")
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if next.is_some() && next.as_deref() == continuation {
            return Err(unparseable(
                &resp,
                OP,
                "the service returned the same continuation token again",
            ));
        }
        Ok(QueryPage {
            items: page.documents,
            continuation: next,
            info: ResponseInfo::from_response(&resp),
        })
    }

    /// All pages of a query as a stream, fetched one page at a time as it is consumed. A
    /// continuation token the service already returned for this query ends the stream with
    /// [`Error::Unexpected`] (a paging loop would never finish).
    pub fn query_pages<T: DeserializeOwned>(
        &self,
        query: Query,
        options: QueryOptions,
    ) -> impl Stream<Item = Result<QueryPage<T>, Error>> + '_ {
        // State: Some(token) = fetch next with that token (None token = first page);
        // None = finished. `seen` holds every token returned so far.
        let start = (Some(None::<String>), HashSet::<String>::new());
        stream::try_unfold(start, move |(state, mut seen)| {
            let (query, options) = (query.clone(), options.clone());
            async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let page = self.query_page(&query, &options, token.as_deref()).await?;
                if let Some(next) = &page.continuation
                    && !seen.insert(next.clone())
                {
                    return Err(Error::Unexpected(Box::new(
                        ErrorInfo::new(
                            "the service returned a continuation token it had already returned; \
                             the query would page forever",
                        )
                        .with_operation("cosmos query")
                        .with_status(page.info.status),
                    )));
                }
                let next = page.continuation.clone().map(Some);
                Ok(Some((page, (next, seen))))
            }
        })
    }

    /// All items of a query as a stream, across pages.
    pub fn query_items<T: DeserializeOwned>(
        &self,
        query: Query,
        options: QueryOptions,
    ) -> impl Stream<Item = Result<T, Error>> + '_ {
        self.query_pages(query, options)
            .map_ok(|page| stream::iter(page.items.into_iter().map(Ok)))
            .try_flatten()
    }

    /// Every item of a query, following all continuations.
    pub async fn query_all<T: DeserializeOwned>(
        &self,
        query: &Query,
        options: &QueryOptions,
    ) -> Result<Vec<T>, Error> {
        self.query_items(query.clone(), options.clone())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Sends a JSON document body (create, upsert, replace), optionally guarded by an ETag,
    /// and parses the stored document from the answer.
    async fn write_document<T: DeserializeOwned>(
        &self,
        request: RequestBuilder<'_>,
        body: Vec<u8>,
        if_match: Option<&str>,
    ) -> Result<CosmosResponse<T>, Error> {
        let request = request
            .header_opt("if-match", if_match)
            .body("application/json", body);
        let operation = request.operation_name().to_string();
        let resp = self.send(request).await?;
        typed_response(&resp, &operation)
    }

    /// A request for a document operation, with its partition key header (the session token
    /// is added when it is sent).
    fn document_request(
        &self,
        method: Method,
        url: Url,
        pk: &PartitionKey,
        operation: &str,
    ) -> RequestBuilder<'_> {
        self.database
            .client
            .request(method, url, operation)
            .header("x-ms-documentdb-partitionkey", pk.header_value())
    }

    /// Sends with the session token for the request's partition key (all ranges' tokens when
    /// its range is not known) and merges the one the answer carries (error answers carry one
    /// too: a 404 or 412 still tells what the session has seen).
    async fn send(&self, request: RequestBuilder<'_>) -> Result<HttpResponse, Error> {
        let partition_key = request
            .request()
            .header("x-ms-documentdb-partitionkey")
            .map(str::to_string);
        let token = self.sessions().header_for(partition_key.as_deref());
        request
            .header_opt("x-ms-session-token", token)
            .send_observing(|resp| {
                if let Some(token) = resp.header("x-ms-session-token") {
                    self.sessions().update(token, partition_key.as_deref());
                }
            })
            .await
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, SessionTokens> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every session token this container handle has seen, merged per partition-key range
    /// and comma-separated (`0:-1#12,1:-1#7`): what a request whose range is unknown sends.
    pub fn session_token(&self) -> Option<String> {
        self.sessions().all()
    }

    /// Merges a session token obtained elsewhere (e.g. carried in a queue message by the
    /// worker that wrote, so this handle reads at least that write). The same merge as for
    /// answers: a token older than the one kept changes nothing. Give `partition_key` when
    /// the token is for that key's range, so later requests on it send only that range.
    pub fn merge_session_token(&self, token: &str, partition_key: Option<&PartitionKey>) {
        let key = partition_key.map(PartitionKey::header_value);
        self.sessions().update(token, key.as_deref());
    }

    /// The session token sent with a request on `partition_key`: its range's token once an
    /// answer for that key named the range, else [`ContainerClient::session_token`].
    pub fn session_token_for(&self, partition_key: &PartitionKey) -> Option<String> {
        self.sessions()
            .header_for(Some(partition_key.header_value().as_str()))
    }
}

/// Serialises a document, checking it is an object with a valid string `id` and at most
/// 2 MB. Returns the id and the body.
fn document_body<T: Serialize>(document: &T) -> Result<(String, Vec<u8>), Error> {
    let value = serde_json::to_value(document)
        .map_err(|e| Error::invalid_input("the document cannot be serialised").with_source(e))?;
    let id = value
        .as_object()
        .ok_or_else(|| Error::invalid_input("a Cosmos document must be a JSON object"))?
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_input("a Cosmos document needs a string `id` property"))?
        .to_string();
    validate_document_id(&id)?;
    let body = value.to_string().into_bytes();
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge(Box::new(ErrorInfo::new(format!(
            "the document is {} bytes of JSON, over the {MAX_DOCUMENT_BYTES}-byte item limit; \
             keep large payloads elsewhere and store a reference",
            body.len()
        )))));
    }
    Ok((id, body))
}

/// Parses a document answer into `T` with the response info.
fn typed_response<T: DeserializeOwned>(
    resp: &HttpResponse,
    operation: &str,
) -> Result<CosmosResponse<T>, Error> {
    let value = serde_json::from_slice(&resp.body)
        .map_err(|e| unparseable(resp, operation, "document").with_source(e))?;
    Ok(CosmosResponse {
        value,
        info: ResponseInfo::from_response(resp),
    })
}

/// A failed Cosmos answer as an [`Error`], the way this client maps it: by HTTP status (the
/// bodies are inconsistent), keeping the body's `code` and first message line for context.
/// Useful for requests sent through the same [`Pipeline`] that this client does not wrap.
pub fn response_error(resp: &HttpResponse, operation: &str) -> Error {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let field = |name: &str| {
        body.as_ref()
            .and_then(|b| b.get(name))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let code = field("code").map(str::to_string);
    let message: String = field("message")
        .and_then(|m| m.lines().next())
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    error_from_response(resp, operation, code, &message)
}

#[cfg(test)]
mod tests;
