//! What `setup` needs beyond [`super::AzureBackends::ensure_resources`]: reading the
//! container definitions (partition key, indexing policy, default TTL) to verify a
//! deployment without changing it, setting a default TTL, and creating containers with a
//! throughput offer (manual or autoscale) on real Azure.
//!
//! The requests are signed Cosmos REST calls over the same pipeline as the run store:
//! `GET dbs/{db}/colls/{coll}` and `PUT` of the same definition.

use super::Settings;
use super::cosmos_context::{PARTITION_KEY_PATH, context_indexing_policy, status_indexing_policy};
use crate::Error;
use crate::azure::cosmos::{CosmosClient, DatabaseClient};
use crate::wire::encoding::push_segments;
use crate::wire::pipeline::Pipeline;
use crate::wire::request::{Method, RequestBuilder};
use crate::wire::transport::Transport;
use serde_json::{Value, json};
use std::sync::Arc;

/// A throughput offer for containers that `setup` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Manual request units per second (`x-ms-offer-throughput`).
    Manual(u32),
    /// Autoscale up to this many RU/s (`x-ms-cosmos-offer-autopilot-settings`).
    Autoscale(u32),
}

/// Reads and adjusts the Cosmos database and containers of a deployment.
#[derive(Debug, Clone)]
pub struct Provisioner {
    db: DatabaseClient,
    database: String,
    /// `(container name, wanted indexing policy, paths the queries filter on)`.
    containers: Vec<(String, Value, Vec<&'static str>)>,
}

impl Provisioner {
    /// A provisioner for the database and containers named in `settings`.
    pub fn new(settings: &Settings, transport: Arc<dyn Transport>) -> Result<Self, Error> {
        let pipeline = Pipeline::new(transport, settings.cosmos.signer());
        // Validates the endpoint and the names the same way the run store does.
        let db =
            CosmosClient::new(pipeline, &settings.cosmos.endpoint)?.database(&settings.database)?;
        db.container(&settings.context_container)?;
        db.container(&settings.status_container)?;
        Ok(Provisioner {
            db,
            database: settings.database.clone(),
            containers: vec![
                (
                    settings.context_container.clone(),
                    context_indexing_policy(),
                    vec!["/kind", "/batch"],
                ),
                (
                    settings.status_container.clone(),
                    status_indexing_policy(),
                    vec!["/status", "/lastUpdated"],
                ),
            ],
        })
    }

    /// A request on the database's Cosmos account to `url` plus `segments`.
    fn request(
        &self,
        method: Method,
        url: &url::Url,
        segments: &[&str],
        operation: &str,
    ) -> Result<RequestBuilder<'_>, Error> {
        let mut url = url.clone();
        push_segments(&mut url, "name", segments)?;
        Ok(self.db.client().request(method, url, operation))
    }

    /// Sends; a 404 is `None`, another 2xx its JSON body.
    async fn send(request: RequestBuilder<'_>) -> Result<Option<Value>, Error> {
        let operation = request.operation_name().to_string();
        let resp = match request.send().await {
            Err(Error::NotFound(_)) => return Ok(None),
            other => other?,
        };
        serde_json::from_slice(&resp.body).map(Some).map_err(|e| {
            Error::unexpected("the answer is not JSON")
                .during(operation)
                .with_source(e)
        })
    }

    /// The container's definition; `None` when it (or the database) does not exist.
    pub async fn container_definition(&self, name: &str) -> Result<Option<Value>, Error> {
        let url = self.db.url();
        let read = self.request(Method::GET, url, &["colls", name], "cosmos read container")?;
        Self::send(read.idempotent(true)).await
    }

    /// Verifies the deployment without changing it: the database and both containers exist,
    /// partitioned by `/runId`, each indexing what its queries filter on (the status container
    /// `/status` and `/lastUpdated`, the context container `/kind` and `/batch`). Returns one line per problem (empty when all is well) and one line
    /// per fact checked.
    pub async fn check(&self) -> Result<(Vec<String>, Vec<String>), Error> {
        let mut problems = Vec::new();
        let mut facts = Vec::new();
        let db = self.read_database().await?;
        if db.is_none() {
            problems.push(format!(
                "Cosmos database `{}` is missing (run `setup`)",
                self.database
            ));
            return Ok((problems, facts));
        }
        facts.push(format!("Cosmos database `{}` exists", self.database));
        for (name, _, filtered) in &self.containers {
            match self.container_definition(name).await? {
                None => problems.push(format!(
                    "container `{}/{name}` is missing (run `setup`)",
                    self.database
                )),
                Some(def) => {
                    let found = container_problems(&def, filtered);
                    if found.is_empty() {
                        facts.push(format!(
                            "container `{}/{name}`: partition key {PARTITION_KEY_PATH}, indexing ok{}",
                            self.database,
                            match def.get("defaultTtl").and_then(Value::as_i64) {
                                Some(ttl) if ttl > 0 => format!(", default TTL {ttl} s"),
                                _ => String::new(),
                            }
                        ));
                    }
                    problems.extend(
                        found
                            .into_iter()
                            .map(|p| format!("container `{}/{name}`: {p}", self.database)),
                    );
                }
            }
        }
        Ok((problems, facts))
    }

    /// The database's definition; `None` when it does not exist.
    async fn read_database(&self) -> Result<Option<Value>, Error> {
        let url = self.db.url();
        let read = self.request(Method::GET, url, &[], "cosmos read database")?;
        Self::send(read.idempotent(true)).await
    }

    /// Creates the database when it is missing; returns what it created.
    pub async fn ensure_database(&self) -> Result<Vec<String>, Error> {
        if self.read_database().await?.is_some() {
            return Ok(Vec::new());
        }
        let endpoint = self.db.client().endpoint();
        let create = self
            .request(Method::POST, endpoint, &["dbs"], "cosmos create database")?
            .body(
                "application/json",
                json!({ "id": self.database }).to_string(),
            )
            .idempotent(true);
        match Self::send(create).await {
            Ok(_) => Ok(vec![format!("created Cosmos database `{}`", self.database)]),
            Err(Error::Conflict(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Creates the containers that are missing with `offer` (the database must exist).
    /// Returns one line per container created.
    pub async fn create_with_offer(&self, offer: Offer) -> Result<Vec<String>, Error> {
        let mut created = Vec::new();
        for (name, policy, _) in &self.containers {
            if self.container_definition(name).await?.is_some() {
                continue;
            }
            let request = self.request(
                Method::POST,
                self.db.url(),
                &["colls"],
                "cosmos create container",
            )?;
            let request = match offer {
                Offer::Manual(ru) => request.header("x-ms-offer-throughput", ru.to_string()),
                Offer::Autoscale(max) => request.header(
                    "x-ms-cosmos-offer-autopilot-settings",
                    json!({"maxThroughput": max}).to_string(),
                ),
            };
            let definition = json!({
                "id": name,
                "partitionKey": {"paths": [PARTITION_KEY_PATH], "kind": "Hash", "version": 2},
                "indexingPolicy": policy,
            });
            let request = request
                .body("application/json", definition.to_string())
                .idempotent(true);
            Self::send(request).await?;
            let throughput = match offer {
                Offer::Manual(ru) => format!("{ru} RU/s"),
                Offer::Autoscale(max) => format!("autoscale up to {max} RU/s"),
            };
            created.push(format!(
                "created Cosmos container `{}/{name}` (partition key {PARTITION_KEY_PATH}, {throughput})",
                self.database
            ));
        }
        Ok(created)
    }

    /// Sets both containers' default TTL (`None`: items never expire). Returns one line per
    /// container changed (empty when they already had it).
    pub async fn set_default_ttl(&self, ttl_secs: Option<u32>) -> Result<Vec<String>, Error> {
        let mut changed = Vec::new();
        for (name, _, _) in &self.containers {
            let Some(mut def) = self.container_definition(name).await? else {
                return Err(Error::invalid_input(format!(
                    "container `{}/{name}` is missing; run `setup` first",
                    self.database
                )));
            };
            let current = def.get("defaultTtl").and_then(Value::as_i64);
            if current == ttl_secs.map(i64::from) {
                continue;
            }
            let Some(obj) = def.as_object_mut() else {
                return Err(Error::unexpected(
                    "the container definition is not an object",
                ));
            };
            match ttl_secs {
                Some(ttl) => obj.insert("defaultTtl".into(), json!(ttl)),
                None => obj.remove("defaultTtl"),
            };
            let url = self.db.url();
            let request = self
                .request(
                    Method::PUT,
                    url,
                    &["colls", name],
                    "cosmos replace container",
                )?
                .body("application/json", def.to_string())
                .idempotent(true);
            Self::send(request).await?;
            changed.push(match ttl_secs {
                Some(ttl) => format!(
                    "set the default TTL of `{}/{name}` to {ttl} s",
                    self.database
                ),
                None => format!("removed the default TTL of `{}/{name}`", self.database),
            });
        }
        Ok(changed)
    }
}

/// What is wrong with a container definition: its partition key, and whether each of
/// `filtered` (property paths such as `/status`) is indexed.
pub fn container_problems(def: &Value, filtered: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let paths: Vec<&str> = def["partitionKey"]["paths"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if paths != [PARTITION_KEY_PATH] {
        problems.push(format!(
            "partition key is {paths:?}, not [\"{PARTITION_KEY_PATH}\"] (recreate the container; \
             a partition key cannot be changed)"
        ));
    }
    let policy = &def["indexingPolicy"];
    let mode = policy["indexingMode"].as_str().unwrap_or("consistent");
    let listed = |key: &str| -> Vec<String> {
        policy[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["path"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let included = listed("includedPaths");
    let excluded = listed("excludedPaths");
    for path in filtered {
        let exact = [format!("{path}/?"), format!("{path}/*")];
        let explicitly = included.iter().any(|p| exact.contains(p));
        let by_default =
            included.iter().any(|p| p == "/*") && !excluded.iter().any(|p| exact.contains(p));
        // A definition without includedPaths indexes everything by default.
        let default_policy = policy.get("includedPaths").is_none()
            && !excluded.iter().any(|p| exact.contains(p) || p == "/*");
        if mode == "none" || !(explicitly || by_default || default_policy) {
            problems.push(format!(
                "`{path}` is not indexed (the stalled-run, `runs` or batch-result queries filter on it); \
                 include `{path}/?` in the indexing policy"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wanted_status_definition_has_no_problems() {
        let def = json!({"partitionKey": {"paths": ["/runId"]}, "indexingPolicy": status_indexing_policy()});
        assert!(container_problems(&def, &["/status", "/lastUpdated"]).is_empty());
    }

    #[test]
    fn a_wrong_partition_key_and_missing_index_are_reported() {
        let def = json!({"partitionKey": {"paths": ["/id"]},
            "indexingPolicy": {"indexingMode": "consistent", "includedPaths": [{"path": "/status/?"}],
                               "excludedPaths": [{"path": "/*"}]}});
        let problems = container_problems(&def, &["/status", "/lastUpdated"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("partition key"));
        assert!(problems[1].contains("/lastUpdated"));
    }

    #[test]
    fn index_everything_covers_the_filtered_paths() {
        let def = json!({"partitionKey": {"paths": ["/runId"]},
            "indexingPolicy": {"indexingMode": "consistent", "includedPaths": [{"path": "/*"}]}});
        assert!(container_problems(&def, &["/status"]).is_empty());
        let none = json!({"partitionKey": {"paths": ["/runId"]},
            "indexingPolicy": {"indexingMode": "none"}});
        assert_eq!(container_problems(&none, &["/status"]).len(), 1);
    }
}
