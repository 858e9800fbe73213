//! The pure flow engine (no I/O): blueprints, expressions, nodes, routing and the in-process
//! runtime.
pub mod blueprint;
pub mod expr;
pub mod graph;
pub mod mermaid;
pub mod builtins;
pub mod context;
pub mod execute;
pub mod node;
pub mod routing;
pub mod joins;
pub mod runtime;
pub mod utility;
