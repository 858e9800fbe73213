//! Percent-encoding shared by the signers, the REST clients and the redactor, over the
//! `percent-encoding` crate with two declared character sets: [`UNRESERVED`] (RFC 3986
//! unreserved kept, for URL path segments and query values) and [`URI_COMPONENT`]
//! (JavaScript's `encodeURIComponent` set, for `Authorization` and SAS values, as the Azure
//! SDKs produce them). Both write upper-case hex. Also the one place URLs are extended:
//! [`push_segments`] and [`append_query`], so no client assembles a URL with `format!`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

use crate::error::Error;

/// Bytes percent-encoded in a path segment or query value: all but RFC 3986 unreserved
/// (`A-Z a-z 0-9 - . _ ~`). Cosmos resource links, Storage canonicalized resources and SAS
/// checks all decode what this encodes, so any stricter set signs the same.
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bytes percent-encoded by JavaScript's `encodeURIComponent`: all but
/// `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
pub(crate) const URI_COMPONENT: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Percent-encodes everything except RFC 3986 unreserved characters, for one URL path
/// segment or one query value (and for spotting a secret inside a URL).
pub(crate) fn encode_unreserved(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// Percent-encodes everything except the characters JavaScript's `encodeURIComponent` keeps
/// (`A-Z a-z 0-9 - _ . ! ~ * ' ( )`), with upper-case hex as the Azure SDKs produce.
pub(crate) fn encode_uri_component(text: &str) -> String {
    utf8_percent_encode(text, URI_COMPONENT).to_string()
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are); the bytes are read as UTF-8
/// with replacement characters for invalid sequences.
pub(crate) fn percent_decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// True when `text`, as one URL path segment, is a dot segment (`.` or `..`) once percent
/// escapes are decoded, however often they were applied (`%2e%2e`, `%252e`). URL parsers
/// remove such segments, and a service that decodes the path may too, so a request built
/// with one would go to another resource.
pub(crate) fn is_dot_segment(text: &str) -> bool {
    let mut current = text.to_string();
    // Each round removes at least one `%`, so the loop ends; 8 rounds cover any real input.
    for _ in 0..8 {
        if current == "." || current == ".." {
            return true;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    current == "." || current == ".."
}

/// Appends `segments` to `url`'s path, each percent-encoded with [`UNRESERVED`] (so a `/`
/// in a name stays inside its segment). A segment that is empty or a dot segment (see
/// [`is_dot_segment`]) is refused with [`Error::InvalidInput`] naming `what`: it would
/// address another resource.
pub(crate) fn push_segments(url: &mut Url, what: &str, segments: &[&str]) -> Result<(), Error> {
    let mut path = url.path().trim_end_matches('/').to_string();
    for segment in segments {
        if segment.is_empty() || is_dot_segment(segment) {
            return Err(Error::invalid_input(format!(
                "the {what} `{segment}` is empty or a `.` / `..` path segment (after URL \
                 decoding); it would address another resource"
            )));
        }
        path.push('/');
        path.extend(utf8_percent_encode(segment, UNRESERVED));
    }
    url.set_path(&path);
    Ok(())
}

/// Appends `name=value` to `url`'s query, the value percent-encoded with [`UNRESERVED`].
pub(crate) fn append_query(url: &mut Url, name: &str, value: &str) {
    let pair = format!("{name}={}", utf8_percent_encode(value, UNRESERVED));
    append_raw_query(url, &pair);
}

/// Appends already-encoded query text (`a=1&b=2`, e.g. a SAS token) to `url`'s query.
pub(crate) fn append_raw_query(url: &mut Url, encoded: &str) {
    let query = match url.query().filter(|q| !q.is_empty()) {
        Some(q) if q.ends_with('&') => format!("{q}{encoded}"),
        Some(q) => format!("{q}&{encoded}"),
        None => encoded.to_string(),
    };
    url.set_query(Some(&query));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_encoding_keeps_only_rfc3986_unreserved() {
        assert_eq!(encode_unreserved("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode_unreserved("AB+/=="), "AB%2B%2F%3D%3D");
        assert_eq!(encode_unreserved("ä !*'()"), "%C3%A4%20%21%2A%27%28%29");
    }

    #[test]
    fn uri_component_encoding_matches_encode_uri_component() {
        assert_eq!(
            encode_uri_component("type=master&ver=1.0&sig=a+b/c="),
            "type%3Dmaster%26ver%3D1.0%26sig%3Da%2Bb%2Fc%3D"
        );
        assert_eq!(encode_uri_component("a b~*'()!"), "a%20b~*'()!");
        assert_eq!(encode_uri_component("é"), "%C3%A9");
    }

    #[test]
    fn percent_decode_handles_utf8_and_broken_escapes() {
        assert_eq!(percent_decode("a%20b%C3%A9"), "a bé");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("si%67"), "sig");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn dot_segments_are_recognised_through_any_number_of_escapes() {
        for dot in [".", "..", "%2e", "%2E%2e", ".%2E", "%252e%252e", "%25252e"] {
            assert!(is_dot_segment(dot), "{dot}");
        }
        for plain in ["", "...", "a.", ".a", "%2e%2e%2e", "%2", "%zz", "a..b"] {
            assert!(!is_dot_segment(plain), "{plain}");
        }
    }

    #[test]
    fn segments_are_encoded_one_by_one_and_dot_segments_refused() {
        let mut url = Url::parse("http://127.0.0.1:1/acct/").expect("url");
        push_segments(&mut url, "id", &["q", "a/b c", "ü+%2e"]).expect("pushed");
        assert_eq!(url.path(), "/acct/q/a%2Fb%20c/%C3%BC%2B%252e");
        for bad in [".", "..", "%2e%2E", ""] {
            let mut url = Url::parse("http://h/acct").expect("url");
            let err = push_segments(&mut url, "document id", &["docs", bad]).expect_err(bad);
            assert!(err.to_string().contains("document id"), "{err}");
            assert_eq!(url.path(), "/acct", "nothing appended for {bad:?}");
        }
    }

    #[test]
    fn query_pairs_are_appended_encoded() {
        let mut url = Url::parse("http://h/q").expect("url");
        append_query(&mut url, "prefix", "a b&c=d");
        append_query(&mut url, "n", "1");
        assert_eq!(url.query(), Some("prefix=a%20b%26c%3Dd&n=1"));
        let mut open = Url::parse("http://h/q?x=1&").expect("url");
        append_raw_query(&mut open, "sv=1&sig=a%2B");
        assert_eq!(open.query(), Some("x=1&sv=1&sig=a%2B"));
    }

    #[test]
    fn decoding_undoes_both_encodings() {
        for text in ["plain", "a+b/c==", "ü & ? # %", "type=master&sig=x"] {
            assert_eq!(percent_decode(&encode_unreserved(text)), text);
            assert_eq!(percent_decode(&encode_uri_component(text)), text);
        }
    }
}
