//! Shared helpers for the emulator-backed integration tests: the `FLOWCRAFT_EMULATORS=1`
//! switch, clients for Azurite and the Cosmos emulator built from the environment that
//! `scripts/emulators.sh env` exports, and unique resource names so tests run in parallel.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use flowcraft_azure::azure::auth::{CosmosConnection, StorageConnection};
use flowcraft_azure::azure::cosmos::CosmosClient;
use flowcraft_azure::azure::queue::{
    MessageCount, PeekedMessage, PutOptions, QueueClient, QueueMessage, SentMessage,
    VisibilityTimeout,
};
use flowcraft_azure::wire::pipeline::Pipeline;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use flowcraft_azure::wire::transport::Transport;

/// Well-known Azurite development account key (public, spec §0).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Well-known Cosmos emulator key (public, spec §7).
pub const COSMOS_EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

/// True when `FLOWCRAFT_EMULATORS=1`. Otherwise prints why the test does nothing and returns
/// false; the caller returns early.
pub fn emulators_enabled(test: &str) -> bool {
    let on = std::env::var("FLOWCRAFT_EMULATORS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!(
            "{test}: FLOWCRAFT_EMULATORS is not 1, not running against the emulators \
             (scripts/test.sh starts them and sets it)"
        );
    }
    on
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Azurite's queue endpoint, e.g. `http://127.0.0.1:11001/devstoreaccount1`.
pub fn queue_endpoint() -> String {
    env_or(
        "AZURE_QUEUE_ENDPOINT",
        "http://127.0.0.1:11001/devstoreaccount1",
    )
}

/// The storage account name.
pub fn storage_account() -> String {
    env_or("AZURE_STORAGE_ACCOUNT", "devstoreaccount1")
}

/// The Cosmos endpoint, e.g. `http://127.0.0.1:18081`.
pub fn cosmos_endpoint() -> String {
    env_or("COSMOS_ENDPOINT", "http://127.0.0.1:18081")
}

/// Panics with a clear message when nothing listens at `url`'s host and port: switched on,
/// the emulator tests must fail, never skip.
pub fn require_reachable(service: &str, url: &str) {
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let reachable = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok());
    assert!(
        reachable,
        "FLOWCRAFT_EMULATORS=1 but {service} is not reachable at {url}; start the stack with \
         `scripts/emulators.sh start` (or run scripts/test.sh)"
    );
}

/// The real HTTP transport.
pub fn transport() -> Arc<dyn Transport> {
    Arc::new(ReqwestTransport::new(Duration::from_secs(30)).expect("reqwest transport"))
}

/// An Azurite connection string with this key.
pub fn storage_connection_string(key: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={key};QueueEndpoint={};",
        storage_account(),
        queue_endpoint()
    )
}

/// The Azurite connection with this key.
pub fn storage_connection(key: &str) -> StorageConnection {
    StorageConnection::parse(&storage_connection_string(key)).expect("storage connection")
}

/// The Azurite key from the environment (default: the well-known dev key).
pub fn storage_key() -> String {
    env_or("AZURE_STORAGE_KEY", AZURITE_KEY)
}

/// A pipeline signing for Azurite with `key`, over `transport`.
pub fn storage_pipeline_with(transport: Arc<dyn Transport>, key: &str) -> Pipeline {
    Pipeline::new(transport, storage_connection(key).signer())
}

/// A client for queue `name` on Azurite (checks that Azurite is reachable first).
pub fn queue_client(name: &str) -> QueueClient {
    require_reachable("Azurite (queue)", &queue_endpoint());
    QueueClient::new(
        storage_pipeline_with(transport(), &storage_key()),
        &queue_endpoint(),
        name,
    )
    .expect("queue client")
}

/// The Cosmos emulator connection (key from `COSMOS_KEY`, default the emulator key).
pub fn cosmos_connection() -> CosmosConnection {
    let key = env_or("COSMOS_KEY", COSMOS_EMULATOR_KEY);
    CosmosConnection::parse(&format!(
        "AccountEndpoint={}/;AccountKey={key};",
        cosmos_endpoint()
    ))
    .expect("cosmos connection")
}

/// A pipeline signing for the Cosmos emulator, over `transport`.
pub fn cosmos_pipeline_with(transport: Arc<dyn Transport>) -> Pipeline {
    Pipeline::new(transport, cosmos_connection().signer())
}

/// A Cosmos client for the emulator (checks that it is reachable first).
pub fn cosmos_client() -> CosmosClient {
    require_reachable("the Cosmos emulator", &cosmos_endpoint());
    CosmosClient::new(cosmos_pipeline_with(transport()), &cosmos_endpoint()).expect("cosmos client")
}

/// A unique lower-case name with this prefix (valid as a queue, database or document id).
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// A visibility timeout of `n` seconds (`n` at most 7 days).
pub fn secs(n: u32) -> VisibilityTimeout {
    VisibilityTimeout::from_secs(n).expect("a visibility timeout of at most 7 days")
}

/// Puts `text` on `queue` with default options; panics if the service refuses it.
pub async fn put(queue: &QueueClient, text: &str) -> SentMessage {
    queue
        .put_message(text, PutOptions::default())
        .await
        .expect("put message")
}

/// Receives up to `count` messages from `queue`, hidden for `visibility`; panics on error.
pub async fn receive(
    queue: &QueueClient,
    count: MessageCount,
    visibility: VisibilityTimeout,
) -> Vec<QueueMessage> {
    queue
        .get_messages(count, visibility)
        .await
        .expect("get messages")
}

/// Peeks at up to 32 visible messages of `queue`; panics on error.
pub async fn peek_all(queue: &QueueClient) -> Vec<PeekedMessage> {
    queue
        .peek_messages(MessageCount::MAX)
        .await
        .expect("peek messages")
}
