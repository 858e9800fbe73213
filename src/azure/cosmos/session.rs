//! Cosmos DB session tokens, kept per partition-key range as the service issues them
//! (`x-ms-session-token: <pkrangeid>:<token>`, e.g. `0:-1#12` or `0:1#12#3=5`), merged by
//! the highest LSN so that an answer arriving late (from a concurrent request) never replaces
//! a newer token with an older one.
//!
//! A token is `<version>#<global LSN>` followed by `#<region>=<local LSN>` entries (the
//! "vector" form), or a bare LSN (the older form). Merging two tokens of one range keeps the
//! higher version and global LSN and, per region, the higher local LSN, as the SDKs do.
//!
//! Which token is sent: the range's own token when the partition key's range is known (it is
//! learned from earlier answers for that key), otherwise every range's token, comma-separated
//! (what the SDKs send when they cannot resolve the range).

use std::collections::{BTreeMap, HashMap};

/// How many partition key to range mappings are remembered before the map is cleared (it is
/// relearned from the next answers; a cache miss only means sending every range's token).
const MAX_REMEMBERED_KEYS: usize = 10_000;

/// The session tokens of one container, per partition-key range.
#[derive(Debug, Default)]
pub(crate) struct SessionTokens {
    /// Range id to its merged token (as sent: the part after `<pkrangeid>:`). A token that
    /// came without a range id is kept under `""`.
    ranges: BTreeMap<String, String>,
    /// Partition key header value to the range id its answers named.
    key_ranges: HashMap<String, String>,
}

impl SessionTokens {
    /// Takes in an answer's `x-ms-session-token` for a request that named `partition_key` (the
    /// `x-ms-documentdb-partitionkey` header value), merging each range's token.
    pub(crate) fn update(&mut self, header: &str, partition_key: Option<&str>) {
        let mut ranges_seen = Vec::new();
        for part in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (range, token) = match part.split_once(':') {
                Some((range, token)) => (range.trim(), token.trim()),
                None => ("", part),
            };
            if token.is_empty() {
                continue;
            }
            let merged = match self.ranges.get(range) {
                Some(known) => merge(known, token),
                None => token.to_string(),
            };
            self.ranges.insert(range.to_string(), merged);
            ranges_seen.push(range);
        }
        if let (Some(key), [range]) = (partition_key, ranges_seen.as_slice()) {
            if self.key_ranges.len() >= MAX_REMEMBERED_KEYS && !self.key_ranges.contains_key(key) {
                self.key_ranges.clear();
            }
            self.key_ranges
                .insert(key.to_string(), (*range).to_string());
        }
    }

    /// The `x-ms-session-token` to send for a request on `partition_key` (or across
    /// partitions when `None`): that key's range token when known, else all of them.
    pub(crate) fn header_for(&self, partition_key: Option<&str>) -> Option<String> {
        let known_range = partition_key
            .and_then(|key| self.key_ranges.get(key))
            .and_then(|range| self.ranges.get_key_value(range.as_str()));
        match known_range {
            Some((range, token)) => Some(with_range(range, token)),
            None => self.all(),
        }
    }

    /// Every range's token, comma-separated, or `None` before any answer carried one.
    pub(crate) fn all(&self) -> Option<String> {
        if self.ranges.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(range, token)| with_range(range, token))
            .collect();
        Some(parts.join(","))
    }
}

fn with_range(range: &str, token: &str) -> String {
    if range.is_empty() {
        token.to_string()
    } else {
        format!("{range}:{token}")
    }
}

/// One range's token, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// `None` for the bare-LSN form.
    version: Option<i64>,
    global_lsn: i64,
    /// Region id to local LSN.
    regions: BTreeMap<u32, i64>,
}

impl Token {
    fn parse(text: &str) -> Option<Token> {
        let mut parts = text.split('#');
        let first: i64 = parts.next()?.trim().parse().ok()?;
        let Some(global) = parts.next() else {
            return Some(Token {
                version: None,
                global_lsn: first,
                regions: BTreeMap::new(),
            });
        };
        let global_lsn = global.trim().parse().ok()?;
        let mut regions = BTreeMap::new();
        for entry in parts {
            let (region, lsn) = entry.split_once('=')?;
            regions.insert(region.trim().parse().ok()?, lsn.trim().parse().ok()?);
        }
        Some(Token {
            version: Some(first),
            global_lsn,
            regions,
        })
    }

    fn render(&self) -> String {
        match self.version {
            None => self.global_lsn.to_string(),
            Some(version) => {
                let mut text = format!("{version}#{}", self.global_lsn);
                for (region, lsn) in &self.regions {
                    text.push_str(&format!("#{region}={lsn}"));
                }
                text
            }
        }
    }
}

/// Merges two tokens of one range: the higher version and global LSN, and per region the
/// higher local LSN (regions of a lower version that the higher one dropped are dropped).
/// A token that does not parse cannot be compared: the newer answer's token is kept.
fn merge(known: &str, incoming: &str) -> String {
    let (Some(a), Some(b)) = (Token::parse(known), Token::parse(incoming)) else {
        return incoming.to_string();
    };
    let (higher, lower) = if b.version > a.version {
        (&b, &a)
    } else {
        (&a, &b)
    };
    let same_version = a.version == b.version;
    let mut regions = higher.regions.clone();
    for (region, lsn) in &lower.regions {
        match regions.get_mut(region) {
            Some(kept) => *kept = (*kept).max(*lsn),
            None if same_version => {
                regions.insert(*region, *lsn);
            }
            None => {}
        }
    }
    let merged = Token {
        version: higher.version,
        global_lsn: a.global_lsn.max(b.global_lsn),
        regions,
    };
    // Keep the service's own text when it already is the merge result.
    if merged == a {
        known.to_string()
    } else if merged == b {
        incoming.to_string()
    } else {
        merged.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_highest_lsns() {
        assert_eq!(merge("-1#15", "-1#12"), "-1#15");
        assert_eq!(merge("-1#12", "-1#15"), "-1#15");
        assert_eq!(merge("1#12#3=5", "1#11#3=7"), "1#12#3=7");
        assert_eq!(merge("1#12#3=5", "2#10#3=4#4=1"), "2#12#3=5#4=1");
        assert_eq!(merge("2#10#4=1", "1#12#3=9#4=3"), "2#12#4=3");
        assert_eq!(merge("12", "9"), "12");
        assert_eq!(merge("garbage", "1#3"), "1#3");
        assert_eq!(merge("1#3", "garbage"), "garbage");
    }

    #[test]
    fn merging_is_order_independent() {
        let tokens = ["1#12#3=5", "1#11#3=7", "1#13#3=6#4=2", "2#9#3=1"];
        let fold = |order: &[usize]| {
            let mut acc = tokens[order[0]].to_string();
            for &i in &order[1..] {
                acc = merge(&acc, tokens[i]);
            }
            acc
        };
        let expected = fold(&[0, 1, 2, 3]);
        for order in [[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            assert_eq!(fold(&order), expected, "{order:?}");
        }
    }

    #[test]
    fn a_multi_range_header_updates_each_range() {
        let mut tokens = SessionTokens::default();
        tokens.update("0:-1#5,1:-1#9", None);
        tokens.update("1:-1#3", Some(r#"["a"]"#));
        assert_eq!(tokens.all().as_deref(), Some("0:-1#5,1:-1#9"));
        assert_eq!(
            tokens.header_for(Some(r#"["a"]"#)).as_deref(),
            Some("1:-1#9")
        );
        assert_eq!(
            tokens.header_for(Some(r#"["b"]"#)).as_deref(),
            Some("0:-1#5,1:-1#9")
        );
        // A token without a range id is kept and sent as it came.
        let mut bare = SessionTokens::default();
        bare.update("-1#4", Some(r#"["a"]"#));
        assert_eq!(bare.header_for(Some(r#"["a"]"#)).as_deref(), Some("-1#4"));
        assert_eq!(SessionTokens::default().all(), None);
    }
}
