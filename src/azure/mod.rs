//! Azure provider modules: credentials and signing, and the Queue Storage and Cosmos DB REST
//! clients. They build requests and parse responses; sending goes through [`crate::wire`].
pub mod auth;
pub mod cosmos;
pub mod queue;
pub(crate) mod response;
