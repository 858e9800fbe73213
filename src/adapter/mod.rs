//! The glue that puts the distributed core on Azure: the ports implemented over our REST
//! clients and Redis, and what a worker process needs to start.
//!
//! - [`queue_adapter`]: [`AzureJobQueue`] (the job queue on Queue Storage) and
//!   [`AzureQueueAdapter`] (the worker process: polling loop, reconciler, serverless entry);
//! - [`cosmos_context`]: [`CosmosDbContext`] (run state and status on Cosmos DB), with
//!   [`cosmos_spill`] laying out run states larger than one Cosmos item and [`cosmos_batch`]
//!   keeping batch worker results and arrival ledgers beside the run item;
//! - [`redis_store`]: [`RedisCoordinationStore`] (coordination, leader lease, wake-ups);
//! - [`reconciler`]: the periodic stalled-run reconciler under the leader lease;
//! - [`settings`]: [`Settings`] from the environment;
//! - [`provisioning`]: reading and adjusting the container definitions for `setup`;
//! - [`cosmos_listing`]: the newest-first run listing of `runs` on the status container;
//!
//! [`connect`] builds all backends from [`Settings`] over one HTTP [`Transport`] (so a
//! `--trace` recorder can wrap it), and [`AzureBackends::ensure_resources`] creates the
//! queues, the database and the containers when missing.
//!
//! A worker process, as a library user writes it:
//!
//! ```no_run
//! use flowcraft_azure::adapter::{self, AzureQueueAdapter, Settings};
//! use flowcraft_azure::distributed::polling::shutdown_on_signals;
//! use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
//! use flowcraft_azure::flow::node::NodeRegistry;
//! use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
//! use std::{sync::Arc, time::Duration};
//!
//! # async fn worker(blueprints: BlueprintRegistry) -> Result<(), flowcraft_azure::Error> {
//! let settings = Settings::from_env()?;
//! let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
//! let backends = adapter::connect(&settings, transport).await?;
//! for line in backends.ensure_resources().await? {
//!     println!("{line}");
//! }
//! let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(blueprints);
//! let worker = AzureQueueAdapter::new(env, backends, &settings);
//! worker.run(shutdown_on_signals()?).await
//! # }
//! ```

pub mod cosmos_batch;
pub mod cosmos_context;
pub mod cosmos_listing;
pub mod cosmos_spill;
pub mod provisioning;
pub mod queue_adapter;
pub mod reconciler;
pub mod redis_store;
pub mod settings;

pub use cosmos_context::CosmosDbContext;
pub use queue_adapter::{AzureJobQueue, AzureQueueAdapter, LocalWakeups, WakeSignal};
pub use redis_store::{RedisCoordinationStore, WithLocalFallback};
pub use settings::Settings;

use crate::Error;
use crate::azure::cosmos::CosmosClient;
use crate::azure::queue::QueueClient;
use crate::distributed::core::Backends;
use crate::distributed::memory::MemoryCoordinationStore;
use crate::distributed::ports::CoordinationStore;
use crate::wire::pipeline::Pipeline;
use crate::wire::transport::Transport;
use std::sync::Arc;

/// Everything a process needs, built by [`connect`]: the core's ports, and the concrete
/// Azure and Redis parts behind them.
#[derive(Debug, Clone)]
pub struct AzureBackends {
    /// The three ports for the distributed core (worker, client, reconciler).
    pub backends: Backends,
    /// The job queue (Queue Storage).
    pub queue: Arc<AzureJobQueue>,
    /// The run store (Cosmos DB).
    pub store: Arc<CosmosDbContext>,
    /// Redis, when configured (the coordination port falls back to process-local state
    /// while it is unreachable).
    pub redis: Option<Arc<RedisCoordinationStore>>,
}

impl AzureBackends {
    /// Creates what is missing: the job queue and its poison queue, the database and both
    /// containers. Returns one line per thing created (empty when everything existed).
    pub async fn ensure_resources(&self) -> Result<Vec<String>, Error> {
        let mut created = self.queue.ensure_resources().await?;
        created.extend(self.store.ensure_resources().await?);
        Ok(created)
    }
}

/// Builds the backends from `settings`; the queue and Cosmos clients share `transport`.
/// With `REDIS_URL`, Redis carries coordination (with a process-local fallback while it is
/// down), the reconciler's lease and the queue's wake-ups. Sends nothing to Azure (call
/// [`AzureBackends::ensure_resources`] for that); only Redis is pinged.
pub async fn connect(
    settings: &Settings,
    transport: Arc<dyn Transport>,
) -> Result<AzureBackends, Error> {
    let queue_pipeline = Pipeline::new(transport.clone(), settings.storage.signer());
    let queue_client = QueueClient::new(
        queue_pipeline,
        &settings.storage.queue_endpoint,
        &settings.queue,
    )?;
    let mut queue =
        AzureJobQueue::new(queue_client)?.with_message_encoding(settings.queue_message_encoding);
    let cosmos_pipeline = Pipeline::new(transport, settings.cosmos.signer());
    let cosmos = CosmosClient::new(cosmos_pipeline, &settings.cosmos.endpoint)?;
    let store = Arc::new(CosmosDbContext::new(
        cosmos,
        &settings.database,
        &settings.context_container,
        &settings.status_container,
    )?);
    let redis = match &settings.redis_url {
        Some(url) => Some(Arc::new(
            RedisCoordinationStore::connect(url.expose()).await?,
        )),
        None => None,
    };
    let coordination: Arc<dyn CoordinationStore> = match &redis {
        Some(redis) => {
            queue = queue.with_wakeups(redis.clone());
            Arc::new(WithLocalFallback::new(redis.clone()))
        }
        None => Arc::new(MemoryCoordinationStore::new()),
    };
    let queue = Arc::new(queue);
    Ok(AzureBackends {
        backends: Backends::new(queue.clone(), store.clone(), coordination),
        queue,
        store,
        redis,
    })
}
