//! The pure flow engine (no I/O): blueprints, expressions, nodes, routing and the in-process
//! runtime.
pub mod blueprint;
pub mod builtins;
pub mod context;
pub mod execute;
pub mod expr;
pub mod graph;
pub mod joins;
pub mod mermaid;
pub mod node;
pub mod routing;
pub mod run_view;
pub mod runtime;
pub mod sources;
pub mod utility;
