//! STUB: replaced by the cosmos branch at merge. The Cosmos DB run store is built in another
//! branch; this placeholder only has the contract's names so that `adapter::connect`
//! compiles here. Every operation answers "not built in this branch".

// STUB: replaced by the cosmos branch at merge

use crate::Error;
use crate::azure::cosmos::CosmosClient;
use crate::distributed::ports::{Page, RunPhase, RunStore, StatusRecord, Versioned};
use crate::distributed::state::RunState;
use async_trait::async_trait;

/// STUB: the Cosmos DB run store (replaced by the cosmos branch at merge).
#[derive(Debug)]
pub struct CosmosDbContext {
    _client: CosmosClient,
}

fn not_built() -> Error {
    Error::unexpected("CosmosDbContext is not built in this branch")
}

impl CosmosDbContext {
    /// STUB: keeps the client; the real one checks the names.
    pub fn new(
        client: CosmosClient,
        _database: &str,
        _context_container: &str,
        _status_container: &str,
    ) -> Result<Self, Error> {
        Ok(CosmosDbContext { _client: client })
    }

    /// STUB: always "not built in this branch".
    pub async fn ensure_resources(&self) -> Result<Vec<String>, Error> {
        Err(not_built())
    }
}

#[async_trait]
impl RunStore for CosmosDbContext {
    async fn create_run(&self, _state: &RunState, _status: &StatusRecord) -> Result<bool, Error> {
        Err(not_built())
    }

    async fn load(&self, _run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        Err(not_built())
    }

    async fn commit(&self, _state: &RunState, _etag: &str) -> Result<String, Error> {
        Err(not_built())
    }

    async fn status(&self, _run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        Err(not_built())
    }

    async fn write_status(
        &self,
        _record: &StatusRecord,
        _etag: Option<&str>,
    ) -> Result<String, Error> {
        Err(not_built())
    }

    async fn list_stalled(
        &self,
        _phases: &[RunPhase],
        _older_than: i64,
        _limit: usize,
        _continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        Err(not_built())
    }
}
