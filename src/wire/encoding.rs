//! Percent-encoding shared by the signers, the REST clients and the redactor: one encoder
//! with two character sets (RFC 3986 unreserved for URL parts, JavaScript's
//! `encodeURIComponent` set for Authorization and SAS values, as the Azure SDKs produce) and
//! a decoder that never fails.

/// True for RFC 3986 unreserved bytes: `A-Z a-z 0-9 - . _ ~`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// True for the bytes `encodeURIComponent` keeps: unreserved plus `! * ' ( )`.
fn is_uri_component_safe(byte: u8) -> bool {
    is_unreserved(byte) || matches!(byte, b'!' | b'*' | b'\'' | b'(' | b')')
}

/// Percent-encodes (upper-case hex) every byte for which `keep` is false.
fn encode_except(text: &str, keep: fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes everything except RFC 3986 unreserved characters, for one URL path
/// segment or one query value (and for spotting a secret inside a URL).
pub(crate) fn encode_unreserved(text: &str) -> String {
    encode_except(text, is_unreserved)
}

/// Percent-encodes everything except the characters JavaScript's `encodeURIComponent` keeps
/// (`A-Z a-z 0-9 - _ . ! ~ * ' ( )`), with upper-case hex as the Azure SDKs produce.
pub(crate) fn encode_uri_component(text: &str) -> String {
    encode_except(text, is_uri_component_safe)
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are); the bytes are read as UTF-8
/// with replacement characters for invalid sequences.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.extend(bytes.get(i).copied());
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `text`, as one URL path segment, is a dot segment (`.` or `..`) once percent
/// escapes are decoded, however often they were applied (`%2e%2e`, `%252e`). URL parsers
/// remove such segments, so a request built with one would go to another resource.
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

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
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
    fn decoding_undoes_both_encodings() {
        for text in ["plain", "a+b/c==", "ü & ? # %", "type=master&sig=x"] {
            assert_eq!(percent_decode(&encode_unreserved(text)), text);
            assert_eq!(percent_decode(&encode_uri_component(text)), text);
        }
    }
}
