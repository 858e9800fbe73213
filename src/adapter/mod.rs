//! The glue between the backend-agnostic distributed core ([`crate::distributed`]) and the
//! Azure REST clients ([`crate::azure`]): the core's ports implemented on Azure services.
//!
//! - [`cosmos_context`]: [`CosmosDbContext`], the run store on Cosmos DB, with
//!   [`cosmos_spill`] laying out run states larger than one Cosmos item.

pub mod cosmos_context;
pub mod cosmos_spill;

pub use cosmos_context::CosmosDbContext;
