//! Azure provider modules: credentials and signing, and the Queue Storage and Cosmos DB REST
//! clients. They build requests and parse responses; sending goes through [`crate::wire`].
pub mod auth;
