//! Talks to Azure Queue Storage with the signed REST client and records the traffic
//! (secrets redacted) to a JSON Lines trace file.
//!
//! ```sh
//! eval "$(scripts/emulators.sh start >&2 && scripts/emulators.sh env)"  # local Azurite
//! cargo run --example queue_roundtrip -- trace.jsonl
//! ```
//!
//! The connection string comes from `AZURE_STORAGE_CONNECTION_STRING` (any real account's
//! works too; `UseDevelopmentStorage=true` means Azurite on its standard port 10001).

use std::sync::Arc;
use std::time::Duration;

use flowcraft_azure::QueueClient;
use flowcraft_azure::azure::auth::StorageConnection;
use flowcraft_azure::azure::queue::{MessageCount, PutOptions, VisibilityTimeout};
use flowcraft_azure::wire::pipeline::Pipeline;
use flowcraft_azure::wire::record::Recorder;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let connection = std::env::var("AZURE_STORAGE_CONNECTION_STRING")
        .unwrap_or_else(|_| "UseDevelopmentStorage=true".to_string());
    let trace = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "queue-trace.jsonl".to_string());

    let connection = StorageConnection::parse(&connection)?;
    let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
    let recorder = Arc::new(Recorder::to_file(transport, &trace, connection.redactor())?);
    let pipeline = Pipeline::new(recorder, connection.signer());
    let queue = QueueClient::new(pipeline, &connection.queue_endpoint, "flowcraft-example")?;

    queue.create_if_not_exists().await?;
    queue.put_message("hello", PutOptions::default()).await?;
    let visibility = VisibilityTimeout::from_secs(30)?;
    for message in queue.get_messages(MessageCount::MAX, visibility).await? {
        println!("{} (dequeued {}x)", message.text, message.dequeue_count);
        queue
            .delete_message(&message.id, &message.pop_receipt)
            .await?;
    }
    queue.delete().await?;
    println!("wire trace (secrets redacted): {trace}");
    Ok(())
}
