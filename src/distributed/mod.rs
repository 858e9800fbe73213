//! The backend-agnostic distributed core: ports (job queue, run store, coordination store),
//! their in-memory implementations, the worker logic and the client API.
