//! The wire layer: how signed HTTP requests reach Azure and how their traffic is recorded,
//! redacted and replayed. Provider modules in [`crate::azure`] only build requests and parse
//! responses; everything about sending them lives here.

pub mod clock;
pub(crate) mod encoding;
pub mod mask;
pub mod pipeline;
pub mod record;
pub mod redact;
pub mod replay;
pub mod replay_server;
pub mod request;
pub mod reqwest_transport;
pub mod retry;
#[cfg(test)]
pub(crate) mod test_support;
pub mod transport;
