//! Replaying recorded traffic offline: [`Replayer`] is a [`Transport`] that answers each
//! request with a recorded [`Exchange`], after checking that the request is one that was
//! recorded. When traffic diverges it fails with [`Error::InvalidInput`] whose message is a
//! readable diff (expected vs sent).
//!
//! **Concurrent sessions.** Requests are matched on a key, not on arrival order: each
//! (method, account, resource path) has its own queue of recorded exchanges in recorded order, and a
//! request gets the earliest unplayed one of its queue that matches it under the rules below
//! (so two tasks' puts to one queue, told apart by their bodies, each get their own answer,
//! and identical requests get the recorded answers in recorded order). A recording of a
//! worker running many tasks at once therefore replays whatever order the tasks' requests
//! arrive in. In this mode `x-ms-session-token` is not compared (it depends on which answers
//! arrived first). [`Replayer::in_recorded_order`] restores strict arrival order.
//!
//! **Accounts, not hosts.** The key holds the account and the path inside it, taken from the
//! host for production URLs (`acct.queue.core.windows.net`, `acct.documents.azure.com`) and
//! from the first path segment for Azurite's path-style URLs on a loopback address
//! (`127.0.0.1:10001/acct/...`), so a recording made against either endpoint style replays
//! against the other, and two accounts in one recording stay apart. The Cosmos emulator's
//! URLs name no account; such a request matches the one account recorded for its path (and
//! a recording without one matches a request of any single account).
//!
//! Matching rules ([`diff_request`]): same method; same account and resource path; same query parameters
//! (any order; `sig` and recorded `REDACTED` values ignored); same headers except those that
//! change every run (`x-ms-date`, `date`, `authorization`, `x-ms-client-request-id`,
//! `user-agent`, `content-length`, `host`, `accept`, `accept-encoding`, `connection`) and
//! recorded `REDACTED` values; same body (compared as JSON when both sides are JSON,
//! else byte for byte after redaction). The host is ignored so a recording made against one
//! endpoint replays against any other (e.g. [`crate::wire::replay_server`]).
//!
//! **A fleet of workers.** Several workers on one queue interleave differently on every
//! run, so one shared replayer would hand one worker's recorded answers to another. Record
//! one trace per process instead (each worker's `--trace` file) and replay each worker
//! against its own replayer: it then sees exactly the answers it saw live, whatever the
//! others do, and behaves the same provided what it makes up itself is the same (run the
//! engine on [`crate::flow::sources::Sources::deterministic`] when recording and replaying)
//! and it runs one job at a time (two jobs of one worker in flight send identical reads whose
//! answers could swap, and how many messages it asks for depends on its free slots).
//! [`Replayer::remaining`] reaching zero is the signal to stop a replayed worker.
//!
//! Values the client makes up anew on every run (timestamps in documents) can be left out
//! of the body comparison with [`Replayer::ignore_json_path`]; headers with
//! [`Replayer::ignore_header`].
//!
//! Signatures are checked against the recorded `signature_sha256` (see
//! [`crate::wire::record`] for why a hash): directly when the request carries the recorded
//! `x-ms-date` (client on a `FixedClock`) or a SAS `sig`, else by re-signing the request at
//! the recorded date with the signer given to [`Replayer::verify_signatures_with`]. Checked
//! signatures are counted ([`Replayer::verified_signatures`]); [`Replayer::require_signatures`]
//! makes an uncheckable or missing signature a divergence.

use async_trait::async_trait;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorInfo};
use crate::wire::clock::parse_http_date;
use crate::wire::pipeline::Signer;
use crate::wire::record::{Exchange, read_recording, read_recording_file, signature_fingerprint};
use crate::wire::redact::Redactor;
use crate::wire::transport::{HttpRequest, HttpResponse, Transport};

mod diff;
mod key;

pub use diff::diff_request;
use diff::{diff_request_ignoring, path_and_query};
use key::{Resource, resource_of};

/// Headers not compared when requests are matched by key (concurrent replay): their value
/// depends on the order in which earlier answers arrived.
const ORDER_DEPENDENT_HEADERS: [&str; 1] = ["x-ms-session-token"];

/// Serves a recording as a [`Transport`], matching requests by key (see the module docs).
/// Shareable (`Arc`) across tasks.
pub struct Replayer {
    exchanges: Vec<Exchange>,
    state: Mutex<ReplayState>,
    signer: Option<Arc<dyn Signer>>,
    require_signatures: bool,
    in_order: bool,
    ignored_headers: Vec<String>,
    ignored_json_paths: Vec<String>,
}

/// A request's signature fingerprint re-signed at a recorded date (keyed by the recorded
/// `x-ms-date` text), or why it could not be re-signed.
type Resigned = HashMap<String, Result<Option<String>, String>>;

/// (method, account, resource path): the queue a recorded exchange waits in.
type RequestKey = (String, Resource);

#[derive(Debug, Default)]
struct ReplayState {
    played: Vec<bool>,
    played_count: usize,
    /// The lowest index not played yet (everything before it is played).
    cursor: usize,
    /// Unplayed exchange indices per key, in recorded order.
    queues: HashMap<RequestKey, Vec<usize>>,
    verified_signatures: usize,
}

impl ReplayState {
    fn new(exchanges: &[Exchange]) -> Self {
        let mut queues: HashMap<RequestKey, Vec<usize>> = HashMap::new();
        for (index, exchange) in exchanges.iter().enumerate() {
            queues
                .entry(request_key(&exchange.method, &exchange.url))
                .or_default()
                .push(index);
        }
        ReplayState {
            played: vec![false; exchanges.len()],
            queues,
            ..ReplayState::default()
        }
    }

    fn mark_played(&mut self, index: usize, key: &RequestKey) {
        if let Some(queue) = self.queues.get_mut(key) {
            queue.retain(|&i| i != index);
        }
        if let Some(slot) = self.played.get_mut(index) {
            *slot = true;
        }
        self.played_count += 1;
        while self.played.get(self.cursor) == Some(&true) {
            self.cursor += 1;
        }
    }
}

/// The matching key of a request: upper-case method, account and resource path (see
/// [`key`]), so host-style and path-style URLs of one account share a queue.
fn request_key(method: &str, url: &str) -> RequestKey {
    (method.to_ascii_uppercase(), resource_of(url))
}

impl ReplayState {
    /// The unplayed exchanges for `key`. When none were recorded under it and one side names
    /// no account (the Cosmos emulator on a loopback address names none in its URLs), the
    /// queue of the one account recorded for that method and path, if there is exactly one:
    /// a production recording replays against a loopback endpoint and vice versa, while two
    /// named accounts never stand in for each other.
    fn candidates(&self, key: &RequestKey) -> Vec<usize> {
        if let Some(queue) = self.queues.get(key).filter(|q| !q.is_empty()) {
            return queue.clone();
        }
        let (method, resource) = key;
        let mut others = self.queues.iter().filter(|((m, r), queue)| {
            m == method
                && r.path == resource.path
                && !queue.is_empty()
                && (r.account.is_empty() || resource.account.is_empty())
        });
        match (others.next(), others.next()) {
            (Some((_, queue)), None) => queue.clone(),
            _ => Vec::new(),
        }
    }
}

impl fmt::Debug for Replayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayer")
            .field("exchanges", &self.exchanges.len())
            .field("verifies_signatures", &self.signer.is_some())
            .finish()
    }
}

impl Replayer {
    /// A replayer over exchanges in recorded order.
    pub fn new(exchanges: Vec<Exchange>) -> Self {
        Replayer {
            state: Mutex::new(ReplayState::new(&exchanges)),
            exchanges,
            signer: None,
            require_signatures: false,
            in_order: false,
            ignored_headers: Vec::new(),
            ignored_json_paths: Vec::new(),
        }
    }

    /// Serves the exchanges strictly in recorded order (the next request must be the next
    /// recorded one), for single-task scripts whose order is part of what is tested.
    pub fn in_recorded_order(mut self) -> Self {
        self.in_order = true;
        self
    }

    /// Parses a JSON Lines recording.
    pub fn from_jsonl(text: &str) -> Result<Self, Error> {
        Ok(Self::new(read_recording(text)?))
    }

    /// Reads a JSON Lines recording file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self::new(read_recording_file(path)?))
    }

    /// Re-signs requests that do not carry the recorded date with `signer` at the recorded
    /// date and checks the signature hash (use the key the recording was made with).
    pub fn verify_signatures_with(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Makes a signature that cannot be checked a divergence: every recorded signature must
    /// be matched (directly or by re-signing). Without this, unsigned requests (e.g. `curl`
    /// against the replay server) are served and simply not counted as verified.
    pub fn require_signatures(mut self) -> Self {
        self.require_signatures = true;
        self
    }

    /// Also ignores this request header when matching (case-insensitive).
    pub fn ignore_header(mut self, name: impl Into<String>) -> Self {
        self.ignored_headers.push(name.into().to_ascii_lowercase());
        self
    }

    /// Also ignores the JSON body value at this JSON pointer when matching (e.g.
    /// `/lastUpdated`; `*` matches every member or element: `/operations/*/value`), for
    /// values the client makes up anew on every run, such as timestamps.
    pub fn ignore_json_path(mut self, pointer: impl Into<String>) -> Self {
        self.ignored_json_paths.push(pointer.into());
        self
    }

    /// The recorded exchanges.
    pub fn exchanges(&self) -> &[Exchange] {
        &self.exchanges
    }

    /// How many recorded exchanges have not been played yet.
    pub fn remaining(&self) -> usize {
        self.exchanges
            .len()
            .saturating_sub(self.lock().played_count)
    }

    /// How many signatures were checked against the recording and matched.
    pub fn verified_signatures(&self) -> usize {
        self.lock().verified_signatures
    }

    /// Ok if every recorded exchange was played; else an error saying what was not sent.
    pub fn finish(&self) -> Result<(), Error> {
        let state = self.lock();
        match self.exchanges.get(state.cursor) {
            None => Ok(()),
            Some(missing) => Err(replay_error(format!(
                "the client stopped after {} of {} recorded requests; first not sent: exchange {} ({} {})",
                state.played_count,
                self.exchanges.len(),
                missing.seq,
                missing.method,
                path_and_query(&missing.url)
            ))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the recorded exchange for `request` (the earliest unplayed one with its key that
    /// matches; in recorded-order mode only the next one), marks it played and returns its
    /// answer, or the diff against the closest candidate.
    pub async fn play(&self, request: &HttpRequest) -> Result<HttpResponse, Error> {
        let resigned = self.resign_at_recorded_dates(request).await;
        self.play_resigned(request, &resigned)
    }

    /// The unplayed exchanges `request` may match: the next one in recorded-order mode, else
    /// those of its key.
    fn candidates(&self, state: &ReplayState, request: &HttpRequest) -> Vec<usize> {
        if self.in_order {
            vec![state.cursor]
        } else {
            let key = request_key(
                request.method.as_str(),
                &Redactor::new().redact_url(request.url.as_str()),
            );
            state.candidates(&key)
        }
    }

    /// With a signer: `request` re-signed at each recorded date among its candidates (the
    /// signer may be async, so this runs before the state is locked), as the signature
    /// fingerprint per recorded `x-ms-date` text.
    async fn resign_at_recorded_dates(&self, request: &HttpRequest) -> Resigned {
        let mut resigned = Resigned::new();
        let Some(signer) = &self.signer else {
            return resigned;
        };
        let mut dates: Vec<String> = {
            let state = self.lock();
            self.candidates(&state, request)
                .into_iter()
                .filter_map(|index| self.exchanges.get(index))
                .filter(|e| e.signature_sha256.is_some())
                .filter_map(|e| e.request_header("x-ms-date").map(str::to_string))
                .collect()
        };
        dates.sort();
        dates.dedup();
        for text in dates {
            let Some(date) = parse_http_date(&text) else {
                continue;
            };
            let mut again = request.clone();
            again.headers.remove(http::header::AUTHORIZATION);
            let fingerprint = match signer.sign(&mut again, date).await {
                Ok(()) => Ok(signature_fingerprint(&again)),
                Err(e) => Err(format!(
                    "cannot re-sign the request for the recorded date: {e}"
                )),
            };
            resigned.insert(text, fingerprint);
        }
        resigned
    }

    /// [`Replayer::play`] once the re-signed fingerprints are known.
    fn play_resigned(
        &self,
        request: &HttpRequest,
        resigned: &Resigned,
    ) -> Result<HttpResponse, Error> {
        let mut state = self.lock();
        let candidates = self.candidates(&state, request);
        let mut ignored = self.ignored_headers.clone();
        if !self.in_order {
            ignored.extend(ORDER_DEPENDENT_HEADERS.iter().map(|h| h.to_string()));
        }
        let mut closest: Option<(&Exchange, Vec<String>)> = None;
        for index in candidates {
            let Some(expected) = self.exchanges.get(index) else {
                continue;
            };
            let mut diffs =
                diff_request_ignoring(expected, request, &ignored, &self.ignored_json_paths);
            if diffs.is_empty() {
                match self.check_signature(expected, request, resigned) {
                    Ok(verified) => {
                        state.mark_played(index, &request_key(&expected.method, &expected.url));
                        if verified {
                            state.verified_signatures += 1;
                        }
                        return response_of(expected);
                    }
                    Err(diff) => diffs.push(diff),
                }
            }
            if closest.is_none() {
                closest = Some((expected, diffs));
            }
        }
        let closest = closest.or_else(|| {
            let expected = self.exchanges.get(state.cursor)?;
            Some((
                expected,
                diff_request_ignoring(expected, request, &ignored, &self.ignored_json_paths),
            ))
        });
        let Some((expected, diffs)) = closest else {
            return Err(replay_error(format!(
                "the recording has no more exchanges ({} played) but the client sent {} {}",
                self.exchanges.len(),
                request.method,
                path_and_query(&Redactor::new().redact_url(request.url.as_str()))
            )));
        };
        let why = if self.in_order {
            String::new()
        } else {
            " (no unplayed recorded request matches; closest shown)".to_string()
        };
        Err(replay_error(format!(
            "traffic diverges from the recording at exchange {} (expected {} {}){why}:\n  - {}",
            expected.seq,
            expected.method,
            path_and_query(&expected.url),
            diffs.join("\n  - ")
        )))
    }

    /// Ok(true) when the signature was checked and matched, Ok(false) when it could not be
    /// checked (nothing recorded, or no way to reproduce the recorded date), Err(diff) when
    /// it differs.
    fn check_signature(
        &self,
        expected: &Exchange,
        request: &HttpRequest,
        resigned: &Resigned,
    ) -> Result<bool, String> {
        let Some(recorded) = &expected.signature_sha256 else {
            return Ok(false);
        };
        let recorded_date = expected.request_header("x-ms-date");
        let shown_date = recorded_date.unwrap_or("(none)");
        let has_auth = request.header("authorization").is_some();
        let sent = signature_fingerprint(request);
        let is_signed = sent.is_some();
        if self.require_signatures && !is_signed {
            return Err("signature: the recorded request was signed, this one is not".to_string());
        }
        let same_date = recorded_date.is_some() && recorded_date == request.header("x-ms-date");
        let actual = if is_signed && (!has_auth || same_date) {
            // A SAS `sig` does not depend on the date; an Authorization does.
            sent
        } else if let Some(again) = recorded_date.and_then(|d| resigned.get(d)) {
            again.clone()?
        } else if self.require_signatures {
            return Err(format!(
                "signature: cannot check it (sent for another date than the recorded {shown_date}, and no signer to re-sign with)"
            ));
        } else {
            return Ok(false);
        };
        if actual.as_deref() == Some(recorded.as_str()) {
            Ok(true)
        } else {
            Err(format!(
                "signature: the request signed for the recorded date {shown_date} does not match the recorded signature hash (the string-to-sign or the key changed)"
            ))
        }
    }
}

#[async_trait]
impl Transport for Replayer {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        self.play(&request).await
    }
}

fn replay_error(message: String) -> Error {
    Error::InvalidInput(Box::new(ErrorInfo::new(message).with_operation("replay")))
}

/// The recorded answer: the response, or the recorded failure as the same kind of error
/// with the same code (so the pipeline retries it as it did live; recordings without a
/// kind replay as [`Error::Transport`]).
fn response_of(exchange: &Exchange) -> Result<HttpResponse, Error> {
    if let Some(status) = exchange.status {
        return Ok(HttpResponse {
            status,
            headers: exchange.response_headers.clone(),
            body: exchange.response_body.to_bytes()?,
        });
    }
    let mut info = ErrorInfo::new(format!(
        "recorded failure: {}",
        exchange.error.as_deref().unwrap_or("no response")
    ));
    info.code = exchange.error_code.clone();
    let info = Box::new(info);
    Err(match exchange.error_kind.as_deref() {
        None | Some("Transport") => Error::Transport(info),
        Some("Timeout") => Error::Timeout(info),
        Some("InvalidInput") => Error::InvalidInput(info),
        Some("TooLarge") => Error::TooLarge(info),
        Some("Auth") => Error::Auth(info),
        Some(_) => Error::Unexpected(info),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::Body;

    fn exchange(seq: u64, method: &str, url: &str, answer: &str) -> Exchange {
        Exchange {
            seq,
            method: method.to_string(),
            url: url.to_string(),
            request_headers: vec![("x-ms-version".into(), "2021-12-02".into())],
            request_body: Body::default(),
            status: Some(200),
            response_headers: Vec::new(),
            response_body: Body::Text(answer.to_string()),
            error: None,
            error_kind: None,
            error_code: None,
            duration_ms: 1,
            attempt: 1,
            signature_sha256: None,
            payloads_masked: false,
        }
    }

    fn request(method: &str, url: &str) -> HttpRequest {
        let mut request = HttpRequest::parse(method, url).expect("valid request");
        request.set_header("x-ms-version", "2021-12-02");
        request
    }

    /// Plays `request` to completion (the replayer is async; these tests are not).
    fn play_now(replayer: &Replayer, request: &HttpRequest) -> Result<HttpResponse, Error> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(replayer.play(request))
    }

    fn answer(replayer: &Replayer, method: &str, url: &str) -> String {
        let response = play_now(replayer, &request(method, url))
            .unwrap_or_else(|e| panic!("{method} {url} did not replay: {e}"));
        String::from_utf8(response.body).unwrap_or_default()
    }

    #[test]
    fn a_host_style_recording_replays_against_a_path_style_client_and_back() {
        let host_style = Replayer::new(vec![
            exchange(
                1,
                "GET",
                "https://acct.queue.core.windows.net/jobs/messages?numofmessages=1",
                "a",
            ),
            exchange(
                2,
                "DELETE",
                "https://acct.queue.core.windows.net/jobs/messages/m1?popreceipt=p",
                "b",
            ),
        ]);
        assert_eq!(
            answer(
                &host_style,
                "GET",
                "http://127.0.0.1:11001/acct/jobs/messages?numofmessages=1"
            ),
            "a"
        );
        assert_eq!(
            answer(
                &host_style,
                "DELETE",
                "http://127.0.0.1:11001/acct/jobs/messages/m1?popreceipt=p"
            ),
            "b"
        );
        assert!(host_style.finish().is_ok());

        let path_style = Replayer::new(vec![exchange(
            1,
            "GET",
            "http://127.0.0.1:11001/acct/jobs?comp=metadata",
            "c",
        )])
        .in_recorded_order();
        assert_eq!(
            answer(
                &path_style,
                "GET",
                "https://acct.queue.core.windows.net/jobs?comp=metadata"
            ),
            "c"
        );
    }

    #[test]
    fn the_same_recording_replays_whatever_host_serves_it() {
        let recording = || {
            Replayer::new(vec![exchange(
                1,
                "GET",
                "http://127.0.0.1:11001/devstoreaccount1/jobs?comp=metadata",
                "m",
            )])
        };
        for served_from in [
            "http://127.0.0.1:40123/devstoreaccount1",
            "http://azurite:10001/devstoreaccount1",
            "https://devstoreaccount1.queue.core.windows.net",
        ] {
            let replayer = recording();
            assert_eq!(
                answer(
                    &replayer,
                    "GET",
                    &format!("{served_from}/jobs?comp=metadata")
                ),
                "m"
            );
        }
    }

    #[test]
    fn two_accounts_in_one_recording_are_kept_apart() {
        let replayer = Replayer::new(vec![
            exchange(
                1,
                "GET",
                "https://one.queue.core.windows.net/jobs/messages",
                "from one",
            ),
            exchange(
                2,
                "GET",
                "https://two.queue.core.windows.net/jobs/messages",
                "from two",
            ),
        ]);
        // Account two asks first: it gets its own answer, not the first one recorded.
        assert_eq!(
            answer(&replayer, "GET", "http://127.0.0.1:1/two/jobs/messages"),
            "from two"
        );
        let third = play_now(
            &replayer,
            &request("GET", "https://three.queue.core.windows.net/jobs/messages"),
        );
        let diff = third.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(diff.contains("account: expected one, sent three"), "{diff}");
        assert_eq!(
            answer(
                &replayer,
                "GET",
                "https://one.queue.core.windows.net/jobs/messages"
            ),
            "from one"
        );
        assert!(replayer.finish().is_ok());
    }

    #[test]
    fn the_cosmos_emulator_without_an_account_matches_the_one_recorded_account() {
        let docs = "/dbs/d/colls/c/docs/r1";
        let replayer = Replayer::new(vec![exchange(
            1,
            "GET",
            &format!("https://acct.documents.azure.com{docs}"),
            "doc",
        )]);
        assert_eq!(
            answer(&replayer, "GET", &format!("http://127.0.0.1:18081{docs}")),
            "doc"
        );
        let loopback = Replayer::new(vec![exchange(
            1,
            "GET",
            &format!("http://127.0.0.1:18081{docs}"),
            "doc",
        )]);
        assert_eq!(
            answer(
                &loopback,
                "GET",
                &format!("https://acct.documents.azure.com{docs}")
            ),
            "doc"
        );
        let two = Replayer::new(vec![
            exchange(
                1,
                "GET",
                &format!("https://one.documents.azure.com{docs}"),
                "1",
            ),
            exchange(
                2,
                "GET",
                &format!("https://two.documents.azure.com{docs}"),
                "2",
            ),
        ]);
        assert!(
            play_now(
                &two,
                &request("GET", &format!("http://127.0.0.1:18081{docs}"))
            )
            .is_err(),
            "ambiguous: two accounts recorded"
        );
    }
}
