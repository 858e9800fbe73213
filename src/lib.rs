//! # flowcraft-azure
//!
//! Run [Flowcraft](https://github.com/gorango/flowcraft) workflow blueprints (JSON graphs of
//! nodes and edges) in-process or as a fleet of workers on Azure: Queue Storage carries the
//! jobs, Cosmos DB holds each run's state, Redis does the atomic coordination. There is no
//! Azure SDK: [`wire`] and [`azure`] speak the REST protocols directly, so every byte on the
//! wire can be audited, recorded and replayed offline.
//!
//! Layers (dependencies point down only):
//! - [`cli`]: the `flowcraft-azure` command;
//! - [`adapter`]: the distributed core's ports on Azure (Cosmos DB run store, ...);
//! - [`distributed`]: the backend-agnostic worker core and its ports (queue, run store,
//!   coordination store), with in-memory backends;
//! - [`flow`]: the pure engine: blueprints, expressions, nodes, routing, in-process runtime;
//! - [`azure`] over [`wire`]: signed REST clients for Queue Storage and Cosmos DB.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapter;
pub mod azure;
pub mod cli;
pub mod distributed;
pub mod error;
pub mod flow;
pub mod wire;

pub use adapter::CosmosDbContext;
pub use azure::cosmos::CosmosClient;
pub use azure::queue::QueueClient;
pub use error::{Error, ErrorInfo};
pub use flow::blueprint::Blueprint;
pub use flow::node::{NodeContext, NodeError, NodeRegistry, NodeResult};
pub use flow::runtime::{FlowRuntime, RunStatus, WorkflowResult};
