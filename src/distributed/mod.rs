//! The backend-agnostic distributed core: ports (job queue, run store, coordination store),
//! their in-memory implementations, the worker logic and the client API.

pub mod client;
pub mod core;
pub mod events;
pub mod job;
pub mod memory;
pub mod ports;
pub mod reconcile;
pub mod state;
pub mod transition;
pub mod worker;
