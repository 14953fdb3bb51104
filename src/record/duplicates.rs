//! Duplicate record keys (SPEC §1: a key occurs once per export): found after a scan without
//! a table of keys ([`DuplicateKeys`]), or refused as they come from a set of key hashes
//! ([`SeenKeys`]).

use super::Probe;

/// The seed of [`DuplicateKeys::hash`] (any fixed number).
const KEY_SEED: u64 = 0x6c6f_6f6b_6d69_6721;

/// Finds duplicate record keys (SPEC §1: a key occurs once per export) without a table of
/// keys: (64-bit key hash, line number) pairs go through an external sort of integers, and
/// equal hashes meet. Lines whose hashes meet are read again and their keys compared, so a
/// collision of two different keys is never taken for a duplicate.
pub struct DuplicateKeys(crate::sort::PairSorter);

impl DuplicateKeys {
    /// A finder that holds at most `memory` bytes before it spills to disk.
    pub fn new(memory: usize) -> DuplicateKeys {
        DuplicateKeys(crate::sort::PairSorter::new(memory))
    }

    /// The 64-bit hash of a (kind, key) pair that [`DuplicateKeys::add_hash`] takes; the same
    /// in every run. foldhash with a fixed seed: several times faster than SipHash on a short
    /// key (it is taken for every line of every read), and a collision costs only a re-read,
    /// since the keys whose hashes meet are compared.
    pub fn hash(kind: &str, key: &str) -> u64 {
        use std::hash::BuildHasher;
        // `str` hashes its bytes and a terminator, so ("ab", "c") and ("a", "bc") differ.
        foldhash::quality::FixedState::with_seed(KEY_SEED).hash_one((kind, key))
    }

    /// Notes the key of a record on a line.
    pub fn add(&mut self, kind: &str, key: &str, line: u64) -> anyhow::Result<()> {
        self.add_hash(Self::hash(kind, key), line)
    }

    /// Notes a key already hashed with [`DuplicateKeys::hash`].
    pub fn add_hash(&mut self, hash: u64, line: u64) -> anyhow::Result<()> {
        self.0.push(hash, line)
    }

    /// Every line whose key an earlier line already had, with the message for it and its bytes
    /// (read again from `input`), in line order.
    pub fn finish(
        self,
        input: &crate::input::Input,
    ) -> anyhow::Result<Vec<(u64, String, Vec<u8>)>> {
        // Lines that share a hash, each run of them in line order.
        let mut meets: Vec<Vec<u64>> = Vec::new();
        let (mut run, mut run_hash) = (Vec::new(), None);
        let mut close = |run: &mut Vec<u64>| {
            if run.len() > 1 {
                meets.push(run.clone());
            }
            run.clear();
        };
        self.0.finish(|hash, line| {
            if run_hash != Some(hash) {
                close(&mut run);
                run_hash = Some(hash);
            }
            run.push(line);
            Ok(())
        })?;
        close(&mut run);
        if meets.is_empty() {
            return Ok(Vec::new());
        }
        let mut wanted: Vec<u64> = meets.iter().flatten().copied().collect();
        wanted.sort_unstable();
        wanted.dedup();
        let texts: std::collections::HashMap<u64, Vec<u8>> = wanted
            .iter()
            .copied()
            .zip(input.lines_at(&wanted)?)
            .collect();
        let mut dups = Vec::new();
        for run in meets {
            let mut seen: Vec<(String, String)> = Vec::new();
            for no in run {
                let Some(bytes) = texts.get(&no) else {
                    continue;
                };
                // Every line here passed the scan's parse, which is deterministic.
                let Ok(p) = Probe::parse(bytes) else { continue };
                let this = (p.kind_name.to_string(), p.key());
                if seen.contains(&this) {
                    let msg = format!(
                        "duplicate record key: {} {:?} occurs on an earlier line",
                        this.0, this.1
                    );
                    dups.push((no, msg, bytes.clone()));
                } else {
                    seen.push(this);
                }
            }
        }
        dups.sort_unstable_by_key(|d| d.0);
        Ok(dups)
    }
}

/// The record keys seen so far, to refuse a duplicate (SPEC §1: a key occurs once per export).
/// Keys are kept as 128-bit hashes so millions of records fit in little memory.
#[derive(Default)]
pub struct SeenKeys(std::collections::HashSet<u128>);

impl SeenKeys {
    /// The 128-bit hash of a (kind, key) pair: the first 16 bytes of the SHA-256 of the kind's
    /// length, the kind and the key, so the same in every run, build and machine. SHA-256 is
    /// what the crate already has (checksums, id-less keys); `sha2` uses the CPU's SHA
    /// instructions where they exist, and there one digest of a short key took 80 ns against
    /// 115 ns for the two SipHash-2-4 passes it replaces (`std::hash::SipHasher` is deprecated,
    /// and std's `DefaultHasher` may change between Rust releases).
    pub fn hash(kind: &str, key: &str) -> u128 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        // The length first, so that ("ab", "c") and ("a", "bc") differ.
        h.update((kind.len() as u64).to_le_bytes());
        h.update(kind);
        h.update(key);
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        u128::from_le_bytes(first)
    }

    /// Adds a key hash; false when it was already there.
    pub fn insert(&mut self, hash: u128) -> bool {
        self.0.insert(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_key_hashes_are_fixed_and_keep_kind_and_key_apart() {
        assert_eq!(
            SeenKeys::hash("tag", "t:1:a"),
            0x29d74cb72d303b029b9e224c540d86b9,
            "the hash of a key changed"
        );
        assert_ne!(SeenKeys::hash("ab", "c"), SeenKeys::hash("a", "bc"));
        let mut seen = SeenKeys::default();
        assert!(seen.insert(SeenKeys::hash("tag", "t:1:a")));
        assert!(!seen.insert(SeenKeys::hash("tag", "t:1:a")));
        assert!(seen.insert(SeenKeys::hash("star", "t:1:a")));
    }

    #[test]
    fn a_hash_collision_of_different_keys_is_no_duplicate() {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let lines = [
            r#"{"kind":"tag","name":"a","subject":{"otype":"t","oid":1}}"#,
            r#"{"kind":"tag","name":"b","subject":{"otype":"t","oid":1}}"#,
            r#"{"kind":"tag","name":"a","subject":{"otype":"t","oid":1}}"#,
            r#"{"kind":"tag","name":"b","subject":{"otype":"t","oid":1}}"#,
        ];
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        let input = crate::input::Input::new(f.path().to_str().unwrap()).unwrap();
        // Every line under one hash, as if the keys collided.
        let mut keys = DuplicateKeys::new(32);
        for no in [3, 1, 4, 2] {
            keys.add_hash(7, no).unwrap();
        }
        keys.add("tag", "t:1:z", 9).unwrap();
        let dups = keys.finish(&input).unwrap();
        let got: Vec<u64> = dups.iter().map(|d| d.0).collect();
        assert_eq!(got, vec![3, 4]);
        assert!(dups[0].1.contains("duplicate record key: tag \"t:1:a\""));
        assert_eq!(dups[1].2, lines[3].as_bytes());
    }
}
