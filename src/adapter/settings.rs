//! Worker settings as data: where the queue, Cosmos DB and (optionally) Redis are, the
//! resource names, and the worker's tunables, read from environment variables
//! ([`Settings::from_env`]) or any lookup function ([`Settings::from_lookup`], for tests and
//! hosts with their own configuration).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `AZURE_STORAGE_CONNECTION_STRING` | Storage connection string (or the three below) | required |
//! | `AZURE_QUEUE_ENDPOINT`, `AZURE_STORAGE_ACCOUNT`, `AZURE_STORAGE_KEY` | queue endpoint, account, key | |
//! | `COSMOS_CONNECTION_STRING` | Cosmos DB connection string (or the two below) | required |
//! | `COSMOS_ENDPOINT`, `COSMOS_KEY` | Cosmos DB endpoint and master key | |
//! | `FLOWCRAFT_AZURE_CREDENTIAL` | Entra ID for an endpoint given without a key: `client-secret`, `managed-identity`, `workload-identity` or `azure-cli` | none |
//! | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` | the app (client secret, workload identity; `AZURE_CLIENT_ID` also picks a user-assigned managed identity) | |
//! | `AZURE_FEDERATED_TOKEN_FILE` | workload identity's token file (read on each fetch) | |
//! | `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` | App Service / Functions managed identity (else IMDS) | |
//! | `AZURE_AUTHORITY_HOST` | Entra ID authority | `https://login.microsoftonline.com` |
//! | `FLOWCRAFT_COSMOS_SCOPE` | token scope for a Cosmos endpoint that is not `<account>.documents.azure.com` (an emulator) | from the endpoint |
//! | `FLOWCRAFT_CA_CERT` | PEM file of extra root certificates to trust (HTTPS emulator, TLS-inspecting proxy) | none |
//! | `FLOWCRAFT_QUEUE_MESSAGE_ENCODING` | job message text on the queue: `base64` (Azure Functions triggers, the TypeScript adapter) or `raw` JSON | `base64` |
//! | `REDIS_URL` | `redis://` or `rediss://` (TLS) URL; wake-ups and the reconciler lease | none |
//! | `FLOWCRAFT_QUEUE` | job queue (the poison queue is `<queue>-poison`) | `flowcraft-jobs` |
//! | `FLOWCRAFT_DATABASE` | Cosmos database | `flowcraft` |
//! | `FLOWCRAFT_CONTEXT_CONTAINER` | run (context) container | `contexts` |
//! | `FLOWCRAFT_STATUS_CONTAINER` | status container | `statuses` |
//! | `FLOWCRAFT_CONCURRENCY` | jobs one worker runs at once | 32 |
//! | `FLOWCRAFT_VISIBILITY_SECS` | lease per received message (renewed at half) | 30 |
//! | `FLOWCRAFT_MAX_DEQUEUE` | deliveries before a message goes to the poison queue | 5 |
//! | `FLOWCRAFT_POLL_MIN_MS` | first idle pause | 20 |
//! | `FLOWCRAFT_POLL_MAX_MS` | longest idle pause (jittered to 50-100 %) | 10000 with Redis, 4000 without |
//! | `FLOWCRAFT_RECONCILER` | run the stalled-run reconciler in this worker (`on`/`off`) | `on` |
//! | `FLOWCRAFT_STALLED_AFTER_SECS` | a running run untouched this long is reconciled | 300 |
//! | `FLOWCRAFT_VERSION_DEFER_SECS` | first delay of a job for another blueprint version (grows to 10 min) | 30 |
//! | `FLOWCRAFT_VERSION_WINDOW_SECS` | how long such a job is deferred before its run fails | 3600 |
//!
//! Credentials: a connection string, or an endpoint with its key, is used as given; an
//! endpoint without a key needs `FLOWCRAFT_AZURE_CREDENTIAL` (one Entra ID identity, its
//! tokens cached and shared by the queue and Cosmos DB). Token requests use their own HTTP
//! client (never the `--trace` recorder).
//!
//! A missing or malformed value is an [`Error::InvalidInput`] that names the variable and
//! never shows a key, a connection string or a Redis URL (they can carry passwords); `Debug`
//! redacts them too.

use crate::Error;
use crate::adapter::queue_adapter::MessageEncoding;
use crate::azure::auth::{
    CachedCredential, CosmosBearerSigner, CosmosConnection, CosmosCredential,
    CosmosMasterKeySigner, CredentialKind, REDACTED, Secret, SharedKeySigner, StorageBearerSigner,
    StorageConnection, StorageCredential, TokenHttp, account_from_endpoint, check_endpoint,
    cosmos_scope, credential_from_lookup,
};
use crate::distributed::reconcile::ReconcilerConfig;
use crate::distributed::worker::WorkerConfig;
use crate::wire::reqwest_transport::{ReqwestTransport, RootCertificates};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Default job queue name.
pub const DEFAULT_QUEUE: &str = "flowcraft-jobs";
/// Default Cosmos database name.
pub const DEFAULT_DATABASE: &str = "flowcraft";
/// Default run (context) container name.
pub const DEFAULT_CONTEXT_CONTAINER: &str = "contexts";
/// Default status container name.
pub const DEFAULT_STATUS_CONTAINER: &str = "statuses";
/// How long one token request may take.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest idle pause with Redis wake-ups: an idle worker polls every 5-10 s (at most 0.2
/// queue requests per second) and still starts new work at once when woken.
pub const DEFAULT_POLL_MAX_WITH_REDIS: Duration = Duration::from_secs(10);
/// Longest idle pause without Redis: 2-4 s, at most 0.5 queue requests per second while
/// idle; new work waits at most that long.
pub const DEFAULT_POLL_MAX_WITHOUT_REDIS: Duration = Duration::from_secs(4);

/// Everything a worker process needs to know. Build it with [`Settings::new`] (defaults for
/// all but the connections), [`Settings::from_env`] or [`Settings::from_lookup`].
#[derive(Clone)]
pub struct Settings {
    /// The Storage account holding the job queue.
    pub storage: StorageConnection,
    /// The Cosmos DB account holding run state and status.
    pub cosmos: CosmosConnection,
    /// The Redis URL (may carry a password; never shown). `None`: no Redis, workers poll.
    pub redis_url: Option<Secret>,
    /// The job queue; the poison queue is `<queue>-poison`.
    pub queue: String,
    /// The Cosmos database.
    pub database: String,
    /// The run (context) container.
    pub context_container: String,
    /// The status container.
    pub status_container: String,
    /// Jobs one worker runs at once.
    pub concurrency: usize,
    /// Lease per received message (renewed at half while the job runs).
    pub visibility: Duration,
    /// Deliveries before a message goes to the poison queue.
    pub max_dequeue: u32,
    /// First idle pause between receives.
    pub poll_min: Duration,
    /// Longest idle pause; `None`: [`DEFAULT_POLL_MAX_WITH_REDIS`] or
    /// [`DEFAULT_POLL_MAX_WITHOUT_REDIS`].
    pub poll_max: Option<Duration>,
    /// Whether this worker also runs the stalled-run reconciler (under the Redis leader
    /// lease when Redis is configured).
    pub reconciler: bool,
    /// A running run whose status is older than this is reconciled.
    pub stalled_after: Duration,
    /// First delay of a job for another blueprint version (a rolling deploy); it grows.
    pub version_defer: Duration,
    /// How long a job for another blueprint version is deferred before its run fails.
    pub version_window: Duration,
    /// Extra root certificates every HTTP client trusts (`FLOWCRAFT_CA_CERT`).
    pub ca_cert: Option<RootCertificates>,
    /// How job texts are written to the queue.
    pub queue_message_encoding: MessageEncoding,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("queue_endpoint", &self.storage.queue_endpoint)
            .field("storage_account", &self.storage.account)
            .field("cosmos_endpoint", &self.cosmos.endpoint)
            .field("redis_url", &self.redis_url.as_ref().map(|_| REDACTED))
            .field("queue", &self.queue)
            .field("database", &self.database)
            .field("context_container", &self.context_container)
            .field("status_container", &self.status_container)
            .field("concurrency", &self.concurrency)
            .field("visibility", &self.visibility)
            .field("max_dequeue", &self.max_dequeue)
            .field("poll_min", &self.poll_min)
            .field("poll_max", &self.poll_max)
            .field("reconciler", &self.reconciler)
            .field("stalled_after", &self.stalled_after)
            .field("version_defer", &self.version_defer)
            .field("version_window", &self.version_window)
            .field("ca_cert", &self.ca_cert)
            .field("queue_message_encoding", &self.queue_message_encoding)
            .finish()
    }
}

impl Settings {
    /// Settings for these connections, everything else at its default.
    pub fn new(storage: StorageConnection, cosmos: CosmosConnection) -> Self {
        let worker = WorkerConfig::default();
        Settings {
            storage,
            cosmos,
            redis_url: None,
            queue: DEFAULT_QUEUE.to_string(),
            database: DEFAULT_DATABASE.to_string(),
            context_container: DEFAULT_CONTEXT_CONTAINER.to_string(),
            status_container: DEFAULT_STATUS_CONTAINER.to_string(),
            concurrency: worker.concurrency,
            visibility: worker.visibility,
            max_dequeue: worker.max_dequeue,
            poll_min: worker.idle_backoff_min,
            poll_max: None,
            reconciler: true,
            stalled_after: ReconcilerConfig::default().stalled_after,
            version_defer: worker.defer_delay,
            version_window: worker.version_window,
            ca_cert: None,
            queue_message_encoding: MessageEncoding::default(),
        }
    }

    /// Reads the settings from the process environment (see the module table).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (variable name to value; empty counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let env = Lookup(&lookup);
        let ca_cert = env
            .get("FLOWCRAFT_CA_CERT")
            .map(|path| {
                RootCertificates::from_pem_file(path).map_err(|e| naming("FLOWCRAFT_CA_CERT", e))
            })
            .transpose()?;
        let mut tokens = Tokens::new(&env, ca_cert.as_ref())?;
        let storage = storage_from(&env, &mut tokens)?;
        let cosmos = cosmos_from(&env, &mut tokens)?;
        let mut settings = Settings::new(storage, cosmos);
        settings.ca_cert = ca_cert;
        if let Some(text) = env.get("FLOWCRAFT_QUEUE_MESSAGE_ENCODING") {
            settings.queue_message_encoding = MessageEncoding::parse(&text).ok_or_else(|| {
                Error::invalid_input(format!(
                    "FLOWCRAFT_QUEUE_MESSAGE_ENCODING must be `base64` or `raw` (got `{}`)",
                    shorten(&text)
                ))
            })?;
        }
        settings.redis_url = env
            .get("REDIS_URL")
            .map(|url| redis_url(&url))
            .transpose()?;
        if let Some(queue) = env.get("FLOWCRAFT_QUEUE") {
            settings.queue = queue_name("FLOWCRAFT_QUEUE", &queue)?;
        }
        for (name, field) in [
            ("FLOWCRAFT_DATABASE", &mut settings.database),
            (
                "FLOWCRAFT_CONTEXT_CONTAINER",
                &mut settings.context_container,
            ),
            ("FLOWCRAFT_STATUS_CONTAINER", &mut settings.status_container),
        ] {
            if let Some(value) = env.get(name) {
                *field = cosmos_id(name, &value)?;
            }
        }
        if let Some(n) = env.number("FLOWCRAFT_CONCURRENCY", 1, 1024)? {
            settings.concurrency = usize::try_from(n).unwrap_or(1024);
        }
        if let Some(secs) = env.number("FLOWCRAFT_VISIBILITY_SECS", 1, 7 * 24 * 3600)? {
            settings.visibility = Duration::from_secs(secs);
        }
        if let Some(n) = env.number("FLOWCRAFT_MAX_DEQUEUE", 1, 1000)? {
            settings.max_dequeue = u32::try_from(n).unwrap_or(1000);
        }
        if let Some(ms) = env.number("FLOWCRAFT_POLL_MIN_MS", 1, 3_600_000)? {
            settings.poll_min = Duration::from_millis(ms);
        }
        if let Some(ms) = env.number("FLOWCRAFT_POLL_MAX_MS", 1, 3_600_000)? {
            settings.poll_max = Some(Duration::from_millis(ms));
        }
        if let Some(max) = settings.poll_max
            && max < settings.poll_min
        {
            return Err(Error::invalid_input(format!(
                "FLOWCRAFT_POLL_MAX_MS ({} ms) must not be below FLOWCRAFT_POLL_MIN_MS ({} ms)",
                max.as_millis(),
                settings.poll_min.as_millis()
            )));
        }
        if let Some(on) = env.switch("FLOWCRAFT_RECONCILER")? {
            settings.reconciler = on;
        }
        if let Some(secs) = env.number("FLOWCRAFT_STALLED_AFTER_SECS", 1, 30 * 24 * 3600)? {
            settings.stalled_after = Duration::from_secs(secs);
        }
        if let Some(secs) = env.number("FLOWCRAFT_VERSION_DEFER_SECS", 1, 7 * 24 * 3600)? {
            settings.version_defer = Duration::from_secs(secs);
        }
        if let Some(secs) = env.number("FLOWCRAFT_VERSION_WINDOW_SECS", 1, 30 * 24 * 3600)? {
            settings.version_window = Duration::from_secs(secs);
        }
        Ok(settings)
    }

    /// An HTTP transport whose requests time out after `timeout`, trusting the extra root
    /// certificates of `FLOWCRAFT_CA_CERT` when set.
    pub fn http_transport(&self, timeout: Duration) -> Result<ReqwestTransport, Error> {
        ReqwestTransport::with_roots(timeout, self.ca_cert.as_ref())
    }

    /// The longest idle pause in effect (explicit, else the default for with or without Redis).
    pub fn effective_poll_max(&self) -> Duration {
        let default = if self.redis_url.is_some() {
            DEFAULT_POLL_MAX_WITH_REDIS
        } else {
            DEFAULT_POLL_MAX_WITHOUT_REDIS
        };
        self.poll_max.unwrap_or(default).max(self.poll_min)
    }

    /// The worker configuration these settings describe.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            concurrency: self.concurrency.max(1),
            batch_size: 32,
            visibility: self.visibility,
            idle_backoff_min: self.poll_min,
            idle_backoff_max: self.effective_poll_max(),
            max_dequeue: self.max_dequeue.max(1),
            defer_delay: self.version_defer,
            version_window: self.version_window,
            ..WorkerConfig::default()
        }
    }

    /// The reconciler configuration these settings describe.
    pub fn reconciler_config(&self) -> ReconcilerConfig {
        ReconcilerConfig {
            stalled_after: self.stalled_after,
            ..ReconcilerConfig::default()
        }
    }
}

/// Environment access with "empty = unset" and errors that name the variable.
struct Lookup<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Lookup<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A whole number in `min..=max` (the value is shown in the error: numbers are not secret).
    fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, Error> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(Error::invalid_input(format!(
                "{name} must be a whole number from {min} to {max} (got `{}`)",
                shorten(&text)
            ))),
        }
    }

    fn switch(&self, name: &str) -> Result<Option<bool>, Error> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(Some(true)),
            "off" | "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(Error::invalid_input(format!(
                "{name} must be `on` or `off` (got `{}`)",
                shorten(&text)
            ))),
        }
    }

    fn required(&self, name: &str, hint: &str) -> Result<String, Error> {
        self.get(name)
            .ok_or_else(|| Error::invalid_input(format!("{name} is not set; {hint}")))
    }
}

/// A non-secret value cut to a readable length for an error message.
fn shorten(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

/// Prefixes an error's message with the variable it came from (the message itself never
/// holds the value of a key: the connection parsers do not echo secrets).
fn naming(name: &str, e: Error) -> Error {
    let mut e = e;
    let info = e.info_mut();
    info.message = format!("{name}: {}", info.message);
    e
}

/// The Entra ID credential of `FLOWCRAFT_AZURE_CREDENTIAL`, built once for both services
/// when the first endpoint without a key needs it.
struct Tokens<'a> {
    /// The kind asked for (and its text, for messages), checked even when no endpoint
    /// ends up needing it.
    kind: Option<(CredentialKind, String)>,
    ca_cert: Option<&'a RootCertificates>,
    built: Option<Arc<CachedCredential>>,
}

const CREDENTIAL_KIND: &str = "FLOWCRAFT_AZURE_CREDENTIAL";

impl<'a> Tokens<'a> {
    fn new(env: &Lookup<'_>, ca_cert: Option<&'a RootCertificates>) -> Result<Self, Error> {
        let kind = match env.get(CREDENTIAL_KIND) {
            None => None,
            Some(text) => {
                let kind = CredentialKind::parse(&text).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "{CREDENTIAL_KIND} must be one of {} (got `{}`)",
                        CredentialKind::NAMES,
                        shorten(&text)
                    ))
                })?;
                Some((kind, text))
            }
        };
        Ok(Tokens {
            kind,
            ca_cert,
            built: None,
        })
    }

    /// The credential, when `FLOWCRAFT_AZURE_CREDENTIAL` is set.
    fn get(&mut self, env: &Lookup<'_>) -> Result<Option<Arc<CachedCredential>>, Error> {
        const KIND: &str = CREDENTIAL_KIND;
        if let Some(built) = &self.built {
            return Ok(Some(built.clone()));
        }
        let Some((kind, text)) = self.kind.clone() else {
            return Ok(None);
        };
        let transport = ReqwestTransport::with_roots(TOKEN_REQUEST_TIMEOUT, self.ca_cert)?;
        let lookup = |name: &str| env.get(name);
        let credential = credential_from_lookup(kind, &lookup, TokenHttp::new(Arc::new(transport)))
            .map_err(|e| naming(&format!("{KIND}={text}"), e))?;
        self.built = Some(credential.clone());
        Ok(Some(credential))
    }
}

fn storage_from(env: &Lookup<'_>, tokens: &mut Tokens<'_>) -> Result<StorageConnection, Error> {
    const CS: &str = "AZURE_STORAGE_CONNECTION_STRING";
    if let Some(conn) = env.get(CS) {
        return StorageConnection::parse(&conn).map_err(|e| naming(CS, e));
    }
    let hint = "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_QUEUE_ENDPOINT + \
                AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY, or AZURE_QUEUE_ENDPOINT + \
                FLOWCRAFT_AZURE_CREDENTIAL (Entra ID)";
    let endpoint = env.required("AZURE_QUEUE_ENDPOINT", hint)?;
    let queue_endpoint =
        check_endpoint(&endpoint, false).map_err(|e| naming("AZURE_QUEUE_ENDPOINT", e))?;
    if env.get("AZURE_STORAGE_KEY").is_none()
        && let Some(credential) = tokens.get(env)?
    {
        let account = match env.get("AZURE_STORAGE_ACCOUNT") {
            Some(account) => account,
            None => account_from_endpoint(&queue_endpoint)
                .map_err(|e| naming("AZURE_STORAGE_ACCOUNT", e))?,
        };
        return Ok(StorageConnection {
            queue_endpoint,
            account,
            credential: StorageCredential::Token(StorageBearerSigner::new(credential)),
        });
    }
    let account = env.required("AZURE_STORAGE_ACCOUNT", hint)?;
    let key = env.required("AZURE_STORAGE_KEY", hint)?;
    let signer =
        SharedKeySigner::new(account.clone(), &key).map_err(|e| naming("AZURE_STORAGE_KEY", e))?;
    Ok(StorageConnection {
        queue_endpoint,
        account,
        credential: StorageCredential::SharedKey(signer),
    })
}

fn cosmos_from(env: &Lookup<'_>, tokens: &mut Tokens<'_>) -> Result<CosmosConnection, Error> {
    const CS: &str = "COSMOS_CONNECTION_STRING";
    if let Some(conn) = env.get(CS) {
        return CosmosConnection::parse(&conn).map_err(|e| naming(CS, e));
    }
    let hint = "set COSMOS_CONNECTION_STRING, or COSMOS_ENDPOINT + COSMOS_KEY, or \
                COSMOS_ENDPOINT + FLOWCRAFT_AZURE_CREDENTIAL (Entra ID)";
    let endpoint = env.required("COSMOS_ENDPOINT", hint)?;
    let endpoint = check_endpoint(&endpoint, false).map_err(|e| naming("COSMOS_ENDPOINT", e))?;
    if env.get("COSMOS_KEY").is_none()
        && let Some(credential) = tokens.get(env)?
    {
        const SCOPE: &str = "FLOWCRAFT_COSMOS_SCOPE";
        let scope = env
            .get(SCOPE)
            .or_else(|| cosmos_scope(&endpoint))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "{SCOPE} is not set; the Cosmos DB endpoint is not an \
                     <account>.documents.azure.com host, so give the token scope \
                     (e.g. https://<account>.documents.azure.com/.default)"
                ))
            })?;
        let signer = CosmosBearerSigner::new(credential, &scope).map_err(|e| naming(SCOPE, e))?;
        return Ok(CosmosConnection {
            endpoint,
            credential: CosmosCredential::Token(signer),
        });
    }
    let key = env.required("COSMOS_KEY", hint)?;
    let signer = CosmosMasterKeySigner::new(&key).map_err(|e| naming("COSMOS_KEY", e))?;
    Ok(CosmosConnection {
        endpoint,
        credential: CosmosCredential::MasterKey(signer),
    })
}

/// Checks a Redis URL's shape without ever showing it (it may carry a password).
fn redis_url(url: &str) -> Result<Secret, Error> {
    let bad = |why: &str| {
        Error::invalid_input(format!(
            "REDIS_URL {why}; expected redis://[:password@]host[:port][/db] or rediss://... for TLS \
             (the value is not shown: it may contain a password)"
        ))
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("is not a valid URL"))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(bad("has another scheme than redis or rediss"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(Secret::new(url))
}

/// A queue name that leaves room for the `-poison` suffix.
fn queue_name(name: &str, value: &str) -> Result<String, Error> {
    let ok = (3..=56).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok {
        Ok(value.to_string())
    } else {
        Err(Error::invalid_input(format!(
            "{name} `{}` is not a valid queue name: use 3-56 lower-case letters, digits and \
             single hyphens, starting and ending with a letter or digit (56 leaves room for \
             the `-poison` queue)",
            shorten(value)
        )))
    }
}

/// A Cosmos database or container id.
fn cosmos_id(name: &str, value: &str) -> Result<String, Error> {
    let ok = value.len() <= 255
        && !value.ends_with(' ')
        && !value.chars().any(|c| matches!(c, '/' | '\\' | '?' | '#'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(Error::invalid_input(format!(
            "{name} `{}` is not a valid Cosmos DB id: at most 255 characters, without / \\ ? #",
            shorten(value)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                format!(
                    "AccountName=devstoreaccount1;AccountKey={KEY};QueueEndpoint=http://127.0.0.1:11001/devstoreaccount1"
                ),
            ),
            (
                "COSMOS_CONNECTION_STRING",
                format!("AccountEndpoint=http://127.0.0.1:18081/;AccountKey={KEY};"),
            ),
        ])
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<Settings, Error> {
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    fn error_of(vars: &HashMap<&'static str, String>) -> String {
        parse(vars).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply_when_only_the_connections_are_set() {
        let s = parse(&base()).unwrap();
        assert_eq!(s.queue, "flowcraft-jobs");
        assert_eq!(s.database, "flowcraft");
        assert_eq!(
            (s.context_container.as_str(), s.status_container.as_str()),
            ("contexts", "statuses")
        );
        assert_eq!(s.concurrency, 32);
        assert_eq!(s.visibility, Duration::from_secs(30));
        assert!(s.reconciler && s.redis_url.is_none());
        assert_eq!(s.effective_poll_max(), DEFAULT_POLL_MAX_WITHOUT_REDIS);
        assert_eq!(s.storage.account, "devstoreaccount1");
    }

    #[test]
    fn every_variable_is_read() {
        let mut v = base();
        for (k, val) in [
            ("REDIS_URL", "redis://:pw@127.0.0.1:16379/0"),
            ("FLOWCRAFT_QUEUE", "jobs-a"),
            ("FLOWCRAFT_DATABASE", "db"),
            ("FLOWCRAFT_CONTEXT_CONTAINER", "ctx"),
            ("FLOWCRAFT_STATUS_CONTAINER", "st"),
            ("FLOWCRAFT_CONCURRENCY", "4"),
            ("FLOWCRAFT_VISIBILITY_SECS", "45"),
            ("FLOWCRAFT_MAX_DEQUEUE", "3"),
            ("FLOWCRAFT_POLL_MIN_MS", "10"),
            ("FLOWCRAFT_POLL_MAX_MS", "20000"),
            ("FLOWCRAFT_RECONCILER", "off"),
            ("FLOWCRAFT_STALLED_AFTER_SECS", "60"),
        ] {
            v.insert(k, val.to_string());
        }
        let s = parse(&v).unwrap();
        assert!(s.redis_url.is_some());
        assert_eq!(s.queue, "jobs-a");
        assert_eq!(
            (
                s.database.as_str(),
                s.context_container.as_str(),
                s.status_container.as_str()
            ),
            ("db", "ctx", "st")
        );
        let w = s.worker_config();
        assert_eq!(w.concurrency, 4);
        assert_eq!(w.visibility, Duration::from_secs(45));
        assert_eq!(w.max_dequeue, 3);
        assert_eq!(w.idle_backoff_min, Duration::from_millis(10));
        assert_eq!(w.idle_backoff_max, Duration::from_secs(20));
        assert!(!s.reconciler);
        assert_eq!(s.reconciler_config().stalled_after, Duration::from_secs(60));
    }

    #[test]
    fn with_redis_the_idle_pause_grows_longer() {
        let mut v = base();
        v.insert("REDIS_URL", "rediss://cache.example:6380".into());
        let s = parse(&v).unwrap();
        assert_eq!(s.effective_poll_max(), DEFAULT_POLL_MAX_WITH_REDIS);
    }

    #[test]
    fn the_split_variables_work_instead_of_connection_strings() {
        let v = HashMap::from([
            (
                "AZURE_QUEUE_ENDPOINT",
                "http://127.0.0.1:11001/devstoreaccount1".to_string(),
            ),
            ("AZURE_STORAGE_ACCOUNT", "devstoreaccount1".to_string()),
            ("AZURE_STORAGE_KEY", KEY.to_string()),
            ("COSMOS_ENDPOINT", "http://127.0.0.1:18081".to_string()),
            ("COSMOS_KEY", KEY.to_string()),
        ]);
        let s = parse(&v).unwrap();
        assert_eq!(
            s.storage.queue_endpoint,
            "http://127.0.0.1:11001/devstoreaccount1"
        );
        assert_eq!(s.cosmos.endpoint, "http://127.0.0.1:18081");
    }

    #[test]
    fn missing_connections_name_the_variables() {
        let err = error_of(&HashMap::new());
        assert!(err.contains("AZURE_QUEUE_ENDPOINT is not set"), "{err}");
        assert!(err.contains("AZURE_STORAGE_CONNECTION_STRING"), "{err}");
        let mut v = base();
        v.remove("COSMOS_CONNECTION_STRING");
        let err = error_of(&v);
        assert!(err.contains("COSMOS_ENDPOINT is not set"), "{err}");
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (name, value) in [
            ("FLOWCRAFT_CONCURRENCY", "lots"),
            ("FLOWCRAFT_CONCURRENCY", "0"),
            ("FLOWCRAFT_VISIBILITY_SECS", "604801"),
            ("FLOWCRAFT_MAX_DEQUEUE", "-1"),
            ("FLOWCRAFT_POLL_MIN_MS", "1.5"),
            ("FLOWCRAFT_RECONCILER", "maybe"),
            ("FLOWCRAFT_STALLED_AFTER_SECS", "x"),
            ("FLOWCRAFT_QUEUE", "Bad_Name"),
            ("FLOWCRAFT_QUEUE", &"q".repeat(57)),
            ("FLOWCRAFT_DATABASE", "a/b"),
        ] {
            let mut v = base();
            v.insert(name, value.to_string());
            let err = error_of(&v);
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        let mut v = base();
        v.insert("FLOWCRAFT_POLL_MIN_MS", "500".into());
        v.insert("FLOWCRAFT_POLL_MAX_MS", "100".into());
        let err = error_of(&v);
        assert!(err.contains("FLOWCRAFT_POLL_MAX_MS"), "{err}");
    }

    fn endpoints_without_keys() -> HashMap<&'static str, String> {
        HashMap::from([
            (
                "AZURE_QUEUE_ENDPOINT",
                "https://acct.queue.core.windows.net".to_string(),
            ),
            (
                "COSMOS_ENDPOINT",
                "https://acct.documents.azure.com:443/".to_string(),
            ),
        ])
    }

    #[test]
    fn endpoints_without_keys_use_one_entra_credential() {
        let mut v = endpoints_without_keys();
        v.insert("FLOWCRAFT_AZURE_CREDENTIAL", "client-secret".into());
        v.insert("AZURE_TENANT_ID", "contoso.onmicrosoft.com".into());
        v.insert(
            "AZURE_CLIENT_ID",
            "00000000-0000-0000-0000-000000000001".into(),
        );
        v.insert("AZURE_CLIENT_SECRET", "SECRETVALUE~1".into());
        let s = parse(&v).unwrap();
        assert_eq!(s.storage.account, "acct");
        let StorageCredential::Token(storage) = &s.storage.credential else {
            panic!("expected a token credential: {:?}", s.storage.credential);
        };
        assert_eq!(storage.scope(), "https://storage.azure.com/.default");
        let CosmosCredential::Token(cosmos) = &s.cosmos.credential else {
            panic!("expected a token credential: {:?}", s.cosmos.credential);
        };
        assert_eq!(cosmos.scope(), "https://acct.documents.azure.com/.default");
        let shown = format!("{s:?} {:?} {:?}", s.storage, s.cosmos);
        assert!(!shown.contains("SECRETVALUE"), "{shown}");
        // A key wins over the credential kind.
        v.insert("AZURE_STORAGE_ACCOUNT", "acct".into());
        v.insert("AZURE_STORAGE_KEY", KEY.into());
        let s = parse(&v).unwrap();
        assert!(matches!(
            s.storage.credential,
            StorageCredential::SharedKey(_)
        ));
    }

    #[test]
    fn entra_settings_errors_name_the_missing_piece_without_secrets() {
        let cases: Vec<(Vec<(&'static str, &'static str)>, &str)> = vec![
            (vec![], "AZURE_STORAGE_KEY"),
            (vec![], "FLOWCRAFT_AZURE_CREDENTIAL"),
            (
                vec![("FLOWCRAFT_AZURE_CREDENTIAL", "password")],
                "FLOWCRAFT_AZURE_CREDENTIAL must be one of",
            ),
            (
                vec![
                    ("FLOWCRAFT_AZURE_CREDENTIAL", "manged-identity"),
                    ("AZURE_STORAGE_ACCOUNT", "acct"),
                    ("AZURE_STORAGE_KEY", KEY),
                    ("COSMOS_KEY", KEY),
                ],
                "FLOWCRAFT_AZURE_CREDENTIAL must be one of",
            ),
            (
                vec![
                    ("FLOWCRAFT_AZURE_CREDENTIAL", "client-secret"),
                    ("AZURE_TENANT_ID", "t"),
                    ("AZURE_CLIENT_ID", "c"),
                ],
                "AZURE_CLIENT_SECRET is not set",
            ),
            (
                vec![
                    ("FLOWCRAFT_AZURE_CREDENTIAL", "workload-identity"),
                    ("AZURE_TENANT_ID", "t"),
                    ("AZURE_CLIENT_ID", "c"),
                ],
                "AZURE_FEDERATED_TOKEN_FILE is not set",
            ),
            (
                vec![
                    ("FLOWCRAFT_AZURE_CREDENTIAL", "managed-identity"),
                    ("COSMOS_ENDPOINT", "http://127.0.0.1:18081"),
                ],
                "FLOWCRAFT_COSMOS_SCOPE is not set",
            ),
            (
                vec![
                    ("FLOWCRAFT_AZURE_CREDENTIAL", "client-secret"),
                    ("AZURE_TENANT_ID", "t/../x"),
                    ("AZURE_CLIENT_ID", "c"),
                    ("AZURE_CLIENT_SECRET", "SECRETVALUE"),
                ],
                "AZURE_TENANT_ID",
            ),
        ];
        for (extra, named) in cases {
            let mut v = endpoints_without_keys();
            for (name, value) in extra {
                v.insert(name, value.to_string());
            }
            let err = error_of(&v);
            assert!(err.contains(named), "{named}: {err}");
            assert!(!err.contains("SECRETVALUE"), "{err}");
        }
        // The emulator gets an explicit scope.
        let mut v = endpoints_without_keys();
        v.insert("COSMOS_ENDPOINT", "http://127.0.0.1:18081".into());
        v.insert("FLOWCRAFT_AZURE_CREDENTIAL", "azure-cli".into());
        v.insert(
            "FLOWCRAFT_COSMOS_SCOPE",
            "https://localhost/.default".into(),
        );
        let s = parse(&v).unwrap();
        assert!(matches!(s.cosmos.credential, CosmosCredential::Token(_)));
    }

    #[test]
    fn ca_cert_and_message_encoding_are_read_and_checked() {
        let mut v = base();
        assert_eq!(
            parse(&v).unwrap().queue_message_encoding,
            MessageEncoding::Base64
        );
        v.insert("FLOWCRAFT_QUEUE_MESSAGE_ENCODING", "RAW".into());
        v.insert(
            "FLOWCRAFT_CA_CERT",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/test-root-ca.pem").into(),
        );
        let s = parse(&v).unwrap();
        assert_eq!(s.queue_message_encoding, MessageEncoding::Raw);
        assert_eq!(s.ca_cert.as_ref().map(|c| c.len()), Some(1));
        assert!(s.http_transport(Duration::from_secs(5)).is_ok());
        for (name, value, says) in [
            (
                "FLOWCRAFT_QUEUE_MESSAGE_ENCODING",
                "utf16",
                "`base64` or `raw`",
            ),
            ("FLOWCRAFT_CA_CERT", "/nonexistent/ca.pem", "cannot read"),
            ("FLOWCRAFT_CA_CERT", file!(), "no certificate"),
        ] {
            let mut v = base();
            v.insert(name, value.to_string());
            let err = error_of(&v);
            assert!(err.contains(name) && err.contains(says), "{err}");
        }
    }

    #[test]
    fn errors_and_debug_never_contain_a_key_or_password() {
        let secret = "SECRETKEYVALUE";
        let cases: Vec<(&'static str, String)> = vec![
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                format!("AccountName=a;AccountKey={secret}*;QueueEndpoint=https://a.example"),
            ),
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                format!("AccountName=a;AccountKey{secret}"),
            ),
            (
                "COSMOS_CONNECTION_STRING",
                format!("AccountEndpoint=https://c.example/;AccountKey={secret}*"),
            ),
            ("REDIS_URL", format!("redis://:{secret}@")),
            ("REDIS_URL", format!("http://:{secret}@host")),
            ("REDIS_URL", format!("not a url {secret}")),
        ];
        for (name, value) in cases {
            let mut v = base();
            v.insert(name, value);
            let err = error_of(&v);
            assert!(err.contains(name), "{err}");
            assert!(!err.contains(secret), "{name} leaked: {err}");
        }
        let split = HashMap::from([
            ("AZURE_QUEUE_ENDPOINT", "https://a.example".to_string()),
            ("AZURE_STORAGE_ACCOUNT", "a".to_string()),
            ("AZURE_STORAGE_KEY", format!("{secret}*")),
        ]);
        let err = error_of(&split);
        assert!(
            err.contains("AZURE_STORAGE_KEY") && !err.contains(secret),
            "{err}"
        );

        let mut v = base();
        v.insert("REDIS_URL", format!("redis://:{secret}@127.0.0.1:6379"));
        let s = parse(&v).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains(KEY), "{shown}");
    }
}
