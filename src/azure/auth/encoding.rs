//! Percent-encoding helpers for signing: `encodeURIComponent`-style encoding for
//! Authorization values and SAS query values, and lossless-as-possible decoding of URL path
//! segments.

/// Percent-encodes everything except the characters JavaScript's `encodeURIComponent` keeps
/// (`A-Z a-z 0-9 - _ . ! ~ * ' ( )`), with upper-case hex as the Azure SDKs produce.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_component_matches_encode_uri_component() {
        assert_eq!(
            encode_component("type=master&ver=1.0&sig=a+b/c="),
            "type%3Dmaster%26ver%3D1.0%26sig%3Da%2Bb%2Fc%3D"
        );
        assert_eq!(encode_component("a b~*'()!"), "a%20b~*'()!");
        assert_eq!(encode_component("é"), "%C3%A9");
    }

    #[test]
    fn percent_decode_handles_utf8_and_broken_escapes() {
        assert_eq!(percent_decode("a%20b%C3%A9"), "a bé");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
