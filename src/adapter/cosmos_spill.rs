//! How a run document that outgrows one Cosmos item is laid out over several items of the
//! run's partition (pure: no I/O). Cosmos refuses items over 2 MB, but a run's state (every
//! node output, the commit records, a batch's gathered array) can be far larger.
//!
//! Below [`SpillLimits::spill_above`] bytes the run item is the whole document, exactly the
//! TypeScript adapter's shape. Above it the document is *split*:
//! - objects larger than [`SpillLimits::expand_above`] (the bookkeeping, its commit records,
//!   big user objects) are split into their properties, recursively (a few levels);
//! - the resulting leaves larger than [`SpillLimits::piece_bytes`] (e.g. a gathered array) are
//!   cut into pieces of their JSON text;
//! - small fields of the bookkeeping (revision, status, ... which change on every commit) and
//!   then small top-level context keys stay in the run item (up to
//!   [`SpillLimits::inline_budget`]), so `blueprintId` and small outputs remain readable there;
//! - everything else is hashed by its path into a power-of-two number of *buckets*; each
//!   bucket is one item (`<runId>:spill:...`) written BEFORE the commit that references it.
//!
//! The run item then lists the bucket item ids and the split objects under [`MANIFEST_KEY`],
//! so the commit stays ONE conditional replace of the run item: buckets of a commit that lost
//! its race are never referenced, hence harmless. A bucket whose content did not change keeps
//! its item (and id), so a job rewrites only the buckets its changes hash into.

use crate::Error;
use crate::distributed::state::BOOKKEEPING_KEY;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;

/// The run item property that lists the spilled parts of the document.
pub const MANIFEST_KEY: &str = "_flowcraftSpill";

/// The most buckets one run may use (with the default limits: about 1 GB of state).
const MAX_BUCKETS: usize = 4096;

/// How deep objects are split into their properties.
const MAX_EXPAND_DEPTH: usize = 4;

/// Size thresholds of the layout (bytes of JSON). The defaults keep every item well under
/// Cosmos's 2 MB limit; tests use small values to exercise spilling cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillLimits {
    /// A document up to this size is stored whole in the run item (default 1,500,000).
    pub spill_above: usize,
    /// When spilling, objects larger than this are split into their properties (16 KiB).
    pub expand_above: usize,
    /// When spilling, values larger than this are cut into pieces of this size (128 KiB).
    pub piece_bytes: usize,
    /// Aimed-for bucket size; the bucket count is a power of two of about total / this
    /// (256 KiB).
    pub bucket_target: usize,
    /// No bucket item may exceed this; the bucket count doubles until none does (1,500,000).
    pub bucket_max: usize,
    /// When spilling, bookkeeping fields and top-level context keys up to `inline_entry_max`
    /// bytes stay in the run item while they add up to at most this (256 KiB).
    pub inline_budget: usize,
    /// See `inline_budget` (1 KiB).
    pub inline_entry_max: usize,
}

impl Default for SpillLimits {
    fn default() -> Self {
        SpillLimits {
            spill_above: 1_500_000,
            expand_above: 16 * 1024,
            piece_bytes: 128 * 1024,
            bucket_target: 256 * 1024,
            bucket_max: 1_500_000,
            inline_budget: 256 * 1024,
            inline_entry_max: 1024,
        }
    }
}

/// A property path from the document root.
pub type Path = Vec<String>;

/// One spilled part of a document: a whole value at `path`, or piece `index` of `count` of
/// its JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// The value at a path.
    Whole {
        /// Where it goes.
        path: Path,
        /// The value.
        value: Value,
    },
    /// A slice of the JSON text of the value at a path.
    Piece {
        /// Where the reassembled value goes.
        path: Path,
        /// Which piece (0-based).
        index: u32,
        /// How many pieces the value has.
        count: u32,
        /// This piece's text.
        text: String,
    },
}

impl Entry {
    fn path(&self) -> &Path {
        match self {
            Entry::Whole { path, .. } | Entry::Piece { path, .. } => path,
        }
    }

    /// About how many bytes the entry takes as JSON.
    pub fn approximate_size(&self) -> usize {
        let path: usize = self.path().iter().map(|s| s.len() + 3).sum();
        path + match self {
            Entry::Whole { value, .. } => json_len(value),
            Entry::Piece { text, .. } => text.len(),
        }
    }

    fn sort_key(&self) -> (&Path, u32) {
        match self {
            Entry::Whole { path, .. } => (path, 0),
            Entry::Piece { path, index, .. } => (path, *index),
        }
    }

    /// The stored form: `{"p": path, "v": value}` or `{"p", "i", "n", "t"}`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("p".into(), Value::from(self.path().clone()));
        match self {
            Entry::Whole { value, .. } => {
                out.insert("v".into(), value.clone());
            }
            Entry::Piece {
                index, count, text, ..
            } => {
                out.insert("i".into(), Value::from(*index));
                out.insert("n".into(), Value::from(*count));
                out.insert("t".into(), Value::from(text.as_str()));
            }
        }
        Value::Object(out)
    }

    /// Parses the stored form.
    pub fn from_json(mut value: Value) -> Result<Entry, Error> {
        let bad = || inconsistent("a spilled entry is malformed");
        let obj = value.as_object_mut().ok_or_else(bad)?;
        let path = path_from(obj.get("p")).ok_or_else(bad)?;
        if let Some(v) = obj.remove("v") {
            return Ok(Entry::Whole { path, value: v });
        }
        let num = |k: &str| {
            obj.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let (index, count) = (num("i").ok_or_else(bad)?, num("n").ok_or_else(bad)?);
        match obj.remove("t") {
            Some(Value::String(text)) => Ok(Entry::Piece {
                path,
                index,
                count,
                text,
            }),
            _ => Err(bad()),
        }
    }
}

fn path_from(value: Option<&Value>) -> Option<Path> {
    value?
        .as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn inconsistent(what: &str) -> Error {
    Error::unexpected(format!(
        "the stored run state is inconsistent: {what}; it was not written by this adapter or \
         was edited by hand"
    ))
}

/// The parts of a split document.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// What stays in the run item (besides `id`, `runId` and the manifest).
    pub inline: Map<String, Value>,
    /// Objects split into their properties, parents first.
    pub expanded: Vec<Path>,
    /// The buckets (a power of two of them), entries sorted by path; some may be empty.
    pub buckets: Vec<Vec<Entry>>,
}

/// The manifest stored in the run item: one item id per bucket (`None` = empty) and the
/// split objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Item id per bucket.
    pub buckets: Vec<Option<String>>,
    /// Split objects, parents first.
    pub expanded: Vec<Path>,
}

impl Manifest {
    /// The stored form.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("v".into(), Value::from(1));
        out.insert(
            "buckets".into(),
            Value::Array(
                self.buckets
                    .iter()
                    .map(|b| b.clone().map_or(Value::Null, Value::String))
                    .collect(),
            ),
        );
        out.insert(
            "expanded".into(),
            Value::Array(self.expanded.iter().cloned().map(Value::from).collect()),
        );
        Value::Object(out)
    }

    /// Parses the stored form.
    pub fn from_json(value: &Value) -> Result<Manifest, Error> {
        let bad = || inconsistent("the spill manifest is malformed");
        let buckets = value
            .get("buckets")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|b| match b {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expanded = value
            .get("expanded")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|p| path_from(Some(p)).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Manifest { buckets, expanded })
    }

    /// The ids of the non-empty buckets.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.buckets.iter().flatten().map(String::as_str)
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `value` as compact JSON, without building the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// A stable 64-bit FNV-1a hash of a path and piece index (bucket choice only; no security
/// role: a bad spread only makes buckets uneven, and oversized buckets double the count).
fn bucket_hash(path: &Path, index: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for segment in path {
        eat(segment.as_bytes());
        eat(&[0]);
    }
    eat(&index.to_le_bytes());
    h
}

/// A leaf of the flattened document, with its size.
struct Leaf<'a> {
    path: Path,
    value: &'a Value,
    size: usize,
}

fn flatten<'a>(
    path: &mut Path,
    value: &'a Value,
    size: usize,
    limits: &SpillLimits,
    leaves: &mut Vec<Leaf<'a>>,
    expanded: &mut Vec<Path>,
) {
    match value {
        Value::Object(map)
            if size > limits.expand_above && !map.is_empty() && path.len() < MAX_EXPAND_DEPTH =>
        {
            expanded.push(path.clone());
            for (key, child) in map {
                path.push(key.clone());
                flatten(path, child, json_len(child), limits, leaves, expanded);
                path.pop();
            }
        }
        _ => leaves.push(Leaf {
            path: path.clone(),
            value,
            size,
        }),
    }
}

/// Cuts `text` into pieces of at most `max` bytes (at character boundaries).
fn cut(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        pieces.push(head);
        rest = tail;
    }
    pieces
}

/// Splits `doc` (the run item without `id` and `runId`) when it is larger than
/// `limits.spill_above`; `None` when it fits in the run item whole. `min_buckets` keeps the
/// bucket count from shrinking below what the stored version used (fewer rewrites).
/// `TooLarge` when even the largest bucket count cannot hold it.
pub fn split(
    doc: &Map<String, Value>,
    limits: &SpillLimits,
    min_buckets: usize,
) -> Result<Option<Split>, Error> {
    let total = json_len(doc);
    if total <= limits.spill_above {
        return Ok(None);
    }
    let mut leaves = Vec::new();
    let mut expanded = Vec::new();
    for (key, value) in doc {
        let mut path = vec![key.clone()];
        let size = json_len(value);
        flatten(&mut path, value, size, limits, &mut leaves, &mut expanded);
    }
    // Small fields of the bookkeeping change on every commit (revision, status, ...): they
    // go inline first, so a commit does not rewrite a bucket for them; then small top-level
    // context keys, in document order.
    let bookkeeping_field =
        |leaf: &Leaf<'_>| leaf.path.len() == 2 && leaf.path[0] == BOOKKEEPING_KEY;
    let mut inline_budget = limits.inline_budget;
    let mut inline_paths = std::collections::HashSet::new();
    for pass in [2, 1] {
        for leaf in &leaves {
            let candidate = if pass == 2 {
                bookkeeping_field(leaf)
            } else {
                leaf.path.len() == 1
            };
            // The property name counts too (`"name":` and a comma).
            let cost = leaf.size + leaf.path.last().map_or(0, String::len) + 4;
            if candidate && leaf.size <= limits.inline_entry_max && cost <= inline_budget {
                inline_budget -= cost;
                inline_paths.insert(leaf.path.clone());
            }
        }
    }
    let mut inline = Map::new();
    let mut entries: Vec<(Entry, usize)> = Vec::new();
    for leaf in leaves {
        if inline_paths.contains(&leaf.path) {
            if let [key] = leaf.path.as_slice() {
                inline.insert(key.clone(), leaf.value.clone());
            } else if let [parent, key] = leaf.path.as_slice() {
                let object = inline
                    .entry(parent.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(object) = object {
                    object.insert(key.clone(), leaf.value.clone());
                }
            }
        } else if leaf.size > limits.piece_bytes {
            let text = serde_json::to_string(leaf.value)
                .map_err(|e| Error::unexpected(format!("cannot serialise run state: {e}")))?;
            let pieces = cut(&text, limits.piece_bytes);
            let count = u32::try_from(pieces.len())
                .map_err(|_| Error::unexpected("a run state value has too many pieces"))?;
            for (index, piece) in (0u32..).zip(pieces) {
                let entry = Entry::Piece {
                    path: leaf.path.clone(),
                    index,
                    count,
                    text: piece.to_string(),
                };
                let size = json_len(&Value::from(piece)) + 64;
                entries.push((entry, size));
            }
        } else {
            let size = leaf.size + json_len(&leaf.path) + 16;
            entries.push((
                Entry::Whole {
                    path: leaf.path,
                    value: leaf.value.clone(),
                },
                size,
            ));
        }
    }
    let spilled: usize = entries.iter().map(|(_, size)| size).sum();
    let mut count = spilled
        .div_ceil(limits.bucket_target.max(1))
        .max(min_buckets)
        .max(1)
        .next_power_of_two();
    let hashes: Vec<u64> = entries
        .iter()
        .map(|(e, _)| match e {
            Entry::Whole { path, .. } => bucket_hash(path, 0),
            Entry::Piece { path, index, .. } => bucket_hash(path, *index),
        })
        .collect();
    loop {
        if count > MAX_BUCKETS {
            return Err(Error::TooLarge(Box::new(crate::ErrorInfo::new(format!(
                "the run state ({total} bytes of JSON) cannot be spread over {MAX_BUCKETS} \
                 items of at most {} bytes; keep large values out of the context",
                limits.bucket_max
            )))));
        }
        let mut sizes = vec![0usize; count];
        for ((_, size), hash) in entries.iter().zip(&hashes) {
            sizes[bucket_of(*hash, count)] += size;
        }
        if sizes.iter().all(|s| *s <= limits.bucket_max) {
            break;
        }
        count *= 2;
    }
    let mut buckets: Vec<Vec<Entry>> = vec![Vec::new(); count];
    for ((entry, _), hash) in entries.into_iter().zip(hashes) {
        buckets[bucket_of(hash, count)].push(entry);
    }
    for bucket in &mut buckets {
        bucket.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }
    Ok(Some(Split {
        inline,
        expanded,
        buckets,
    }))
}

fn bucket_of(hash: u64, count: usize) -> usize {
    // `count` is a power of two no larger than MAX_BUCKETS, so the mask fits.
    (hash as usize) & (count - 1)
}

/// Rebuilds the document from the run item's inline properties, the split objects and the
/// bucket entries. Fails when a piece is missing or a path has no parent.
pub fn join<'a>(
    mut doc: Map<String, Value>,
    expanded: &[Path],
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<Map<String, Value>, Error> {
    for path in expanded {
        // The run item may already hold part of a split object (inline fields).
        if !matches!(get_at(&doc, path), Some(Value::Object(_))) {
            set_at(&mut doc, path, Value::Object(Map::new()))?;
        }
    }
    let mut pieces: BTreeMap<&Path, Vec<(u32, u32, &str)>> = BTreeMap::new();
    for entry in entries {
        match entry {
            Entry::Whole { path, value } => set_at(&mut doc, path, value.clone())?,
            Entry::Piece {
                path,
                index,
                count,
                text,
            } => pieces
                .entry(path)
                .or_default()
                .push((*index, *count, text.as_str())),
        }
    }
    for (path, mut parts) in pieces {
        parts.sort_by_key(|(index, _, _)| *index);
        let count = parts[0].1;
        let complete = parts.len() == count as usize
            && parts
                .iter()
                .enumerate()
                .all(|(i, (index, n, _))| *index as usize == i && *n == count);
        if !complete {
            return Err(inconsistent(&format!(
                "pieces of `{}` are missing",
                path.join(".")
            )));
        }
        let text: String = parts.iter().map(|(_, _, t)| *t).collect();
        let value = serde_json::from_str(&text).map_err(|_| {
            inconsistent(&format!("the pieces of `{}` do not parse", path.join(".")))
        })?;
        set_at(&mut doc, path, value)?;
    }
    Ok(doc)
}

fn get_at<'a>(doc: &'a Map<String, Value>, path: &Path) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(doc.get(first)?, |value, segment| value.get(segment))
}

fn set_at(doc: &mut Map<String, Value>, path: &Path, value: Value) -> Result<(), Error> {
    let Some((last, parents)) = path.split_last() else {
        return Err(inconsistent("a spilled entry has an empty path"));
    };
    let mut map = doc;
    for segment in parents {
        map = match map.get_mut(segment) {
            Some(Value::Object(child)) => child,
            _ => {
                return Err(inconsistent(&format!(
                    "`{}` has no parent object",
                    path.join(".")
                )));
            }
        };
    }
    map.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn small() -> SpillLimits {
        SpillLimits {
            spill_above: 2_000,
            expand_above: 300,
            piece_bytes: 200,
            bucket_target: 1_000,
            bucket_max: 3_000,
            inline_budget: 100,
            inline_entry_max: 40,
        }
    }

    fn doc() -> Map<String, Value> {
        let mut doc = Map::new();
        doc.insert("blueprintId".into(), json!("bp"));
        for i in 0..40 {
            doc.insert(
                format!("_outputs.n{i}"),
                json!(format!("{i}:{}", "x".repeat(60))),
            );
        }
        doc.insert(
            "big".into(),
            json!((0..100).map(|i| format!("é{i}")).collect::<Vec<_>>()),
        );
        let commits: Map<String, Value> = (0..30)
            .map(|i| {
                (
                    format!("{i}:n{i}"),
                    json!({"node": format!("n{i}"), "output": "y".repeat(30)}),
                )
            })
            .collect();
        doc.insert(
            "_flowcraft".into(),
            json!({"status": "running", "commits": commits}),
        );
        doc
    }

    #[test]
    fn small_documents_are_not_split() {
        let mut d = Map::new();
        d.insert("a".into(), json!(1));
        assert_eq!(split(&d, &small(), 0).unwrap(), None);
    }

    #[test]
    fn a_split_document_joins_back_to_the_same_document() {
        let d = doc();
        let s = split(&d, &small(), 0).unwrap().expect("split");
        assert!(s.buckets.len().is_power_of_two() && s.buckets.len() > 1);
        assert_eq!(s.inline["blueprintId"], json!("bp"));
        assert_eq!(s.inline["_flowcraft"], json!({"status": "running"}));
        assert!(s.expanded.contains(&vec!["_flowcraft".to_string()]));
        assert!(
            s.expanded
                .contains(&vec!["_flowcraft".to_string(), "commits".to_string()])
        );
        let pieces = s
            .buckets
            .iter()
            .flatten()
            .filter(|e| matches!(e, Entry::Piece { .. }))
            .count();
        assert!(pieces > 1, "the big array is cut into pieces");
        for bucket in &s.buckets {
            let size: usize = bucket.iter().map(|e| json_len(&e.to_json())).sum();
            assert!(size <= small().bucket_max, "bucket of {size} bytes");
        }
        // Through the stored forms, in any bucket order.
        let stored: Vec<Entry> = s
            .buckets
            .iter()
            .rev()
            .flatten()
            .map(|e| Entry::from_json(e.to_json()).unwrap())
            .collect();
        let manifest = Manifest {
            buckets: vec![None; s.buckets.len()],
            expanded: s.expanded.clone(),
        };
        let manifest = Manifest::from_json(&manifest.to_json()).unwrap();
        let back = join(s.inline.clone(), &manifest.expanded, &stored).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn one_changed_value_changes_one_bucket() {
        let d = doc();
        let before = split(&d, &small(), 0).unwrap().unwrap();
        let mut changed = d.clone();
        changed.insert("_outputs.n7".into(), json!("changed".repeat(10)));
        let after = split(&changed, &small(), before.buckets.len())
            .unwrap()
            .unwrap();
        assert_eq!(after.buckets.len(), before.buckets.len());
        let differing = before
            .buckets
            .iter()
            .zip(&after.buckets)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);
    }

    #[test]
    fn missing_pieces_and_orphan_paths_are_reported() {
        let d = doc();
        let s = split(&d, &small(), 0).unwrap().unwrap();
        let mut entries: Vec<Entry> = s.buckets.iter().flatten().cloned().collect();
        let piece = entries
            .iter()
            .position(|e| matches!(e, Entry::Piece { .. }))
            .unwrap();
        entries.remove(piece);
        let err = join(s.inline.clone(), &s.expanded, &entries).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let orphan = Entry::Whole {
            path: vec!["nope".into(), "x".into()],
            value: json!(1),
        };
        assert!(join(Map::new(), &[], [&orphan]).is_err());
        assert!(Entry::from_json(json!({"p": "x"})).is_err());
        assert!(Manifest::from_json(&json!({"buckets": [1]})).is_err());
    }

    #[test]
    fn pieces_cut_at_character_boundaries() {
        let text = "ééééé";
        let pieces = cut(text, 5);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| p.len() <= 5));
    }
}
