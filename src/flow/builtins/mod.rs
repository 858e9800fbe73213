//! The built-in nodes of spec §3: `sleep`, `wait`, `subflow`, `batch-scatter`,
//! `batch-gather` and `loop-controller`. They only use the public node API (context handle,
//! awaiting mark, dynamic nodes), so they behave the same in-process and on distributed
//! workers. (`webhook` is not provided: it needs an HTTP endpoint, which is not this layer's
//! job.)

pub mod batch;
pub mod loop_controller;
pub mod subflow;
pub mod timing;

use super::node::NodeRegistry;

/// Registers every built-in node into `registry`.
pub fn register_builtins(registry: &mut NodeRegistry) {
    registry.register("sleep", timing::sleep);
    registry.register("wait", timing::wait);
    registry.register("subflow", subflow::subflow);
    registry.register("batch-scatter", batch::scatter);
    registry.register("batch-gather", batch::gather);
    registry.register(
        super::graph::LOOP_CONTROLLER,
        loop_controller::loop_controller,
    );
}
