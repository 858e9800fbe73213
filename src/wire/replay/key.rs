//! Where a request goes, independent of the endpoint style: the storage or Cosmos account
//! and the resource path inside it. Azure addresses an account by host
//! (`https://acct.queue.core.windows.net/jobs/messages`, `https://acct.documents.azure.com/dbs/d`)
//! while Azurite on a loopback address puts it first in the path
//! (`http://127.0.0.1:10001/acct/jobs/messages`); both name the same resource
//! (`acct`, `/jobs/messages`), so a recording made one way replays the other way.

/// Top-level Cosmos DB resources: a path-style URL starting with one of these is a Cosmos
/// request without an account in its path (the emulator on a loopback address).
const COSMOS_ROOTS: [&str; 5] = ["dbs", "offers", "media", "addresses", "partitions"];

/// The account and resource path a URL addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Resource {
    /// The account name (lower-case); empty when the URL names none (the Cosmos emulator on a
    /// loopback address, or an endpoint whose host is not `<account>.<service domain>`).
    pub account: String,
    /// The path inside the account, from `/` (percent-encoded as sent).
    pub path: String,
}

/// The account and resource path of `url` (see the module docs):
/// - a host that is an IP address, `localhost` or a single label (a container name such as
///   `azurite`) is path-style: the first path segment is the account, unless it is a Cosmos
///   top-level resource (`dbs`, `offers`, ...) or the path is `/` (Cosmos account reads),
///   in which case the account is empty;
/// - any other host is host-style: its first label is the account (`acct.queue.core.windows.net`,
///   `acct.documents.azure.com`, `acct.queue.localhost`).
///
/// A URL that does not parse is taken whole (query removed) as the path, with no account.
pub(crate) fn resource_of(url: &str) -> Resource {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Resource {
            account: String::new(),
            path: url.split('?').next().unwrap_or_default().to_string(),
        };
    };
    let path = parsed.path();
    // `domain()` is `None` for an IP address (or no host at all).
    let path_style = match parsed.domain() {
        Some(host) => host.eq_ignore_ascii_case("localhost") || !host.contains('.'),
        None => true,
    };
    if !path_style {
        let host = parsed.host_str().unwrap_or_default();
        let account = host.split('.').next().unwrap_or_default();
        return Resource {
            account: account.to_ascii_lowercase(),
            path: path.to_string(),
        };
    }
    let trimmed = path.trim_start_matches('/');
    let (first, rest) = match trimmed.split_once('/') {
        Some((first, rest)) => (first, format!("/{rest}")),
        None => (trimmed, "/".to_string()),
    };
    if first.is_empty() || COSMOS_ROOTS.iter().any(|r| first.eq_ignore_ascii_case(r)) {
        return Resource {
            account: String::new(),
            path: path.to_string(),
        };
    }
    Resource {
        account: first.to_ascii_lowercase(),
        path: rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(url: &str) -> (String, String) {
        let r = resource_of(url);
        (r.account, r.path)
    }

    fn pair(account: &str, path: &str) -> (String, String) {
        (account.to_string(), path.to_string())
    }

    #[test]
    fn host_style_and_path_style_queue_urls_name_the_same_resource() {
        let host = of("https://acct.queue.core.windows.net/jobs/messages?numofmessages=1");
        let path = of("http://127.0.0.1:11001/acct/jobs/messages?numofmessages=1");
        assert_eq!(host, pair("acct", "/jobs/messages"));
        assert_eq!(host, path);
        assert_eq!(of("http://azurite:10001/acct/jobs"), pair("acct", "/jobs"));
        assert_eq!(of("http://[::1]:10001/acct/jobs"), pair("acct", "/jobs"));
        assert_eq!(
            of("https://acct.queue.localhost:10001/jobs"),
            pair("acct", "/jobs")
        );
        assert_eq!(
            of("http://localhost:10001/acct?comp=list"),
            pair("acct", "/")
        );
    }

    #[test]
    fn cosmos_urls_take_the_account_from_the_host_or_have_none_on_loopback() {
        assert_eq!(
            of("https://acct.documents.azure.com/dbs/d/colls/c/docs/r1"),
            pair("acct", "/dbs/d/colls/c/docs/r1")
        );
        assert_eq!(
            of("http://127.0.0.1:18081/dbs/d/colls/c/docs/r1"),
            pair("", "/dbs/d/colls/c/docs/r1")
        );
        assert_eq!(of("http://127.0.0.1:18081/"), pair("", "/"));
        assert_eq!(of("https://ACCT.documents.azure.com/"), pair("acct", "/"));
    }

    #[test]
    fn unparsable_urls_keep_their_path_without_query() {
        assert_eq!(of("not a url?x=1"), pair("", "not a url"));
    }
}
