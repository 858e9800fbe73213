//! The pure flow engine (no I/O): blueprints, expressions, nodes, routing and the in-process
//! runtime.
