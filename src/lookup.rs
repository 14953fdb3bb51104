//! Look-ups by oid in lists sorted by oid, for the tables every line of an export is checked
//! against (versions and their decisions, retired oids and their survivors): millions of
//! entries at 800,000 reports, where a plain binary search is some twenty cache misses a
//! look-up.

/// Where each range of oids starts in a list sorted by oid: the range between the smallest and
/// the largest oid cut into about an eighth as many equal ranges as there are entries (half a
/// byte an entry). A bucket is about two cache lines of entries when oids are dense (as a
/// catalog's sequences make them), and a look-up is never worse than the binary search it
/// narrows. An empty `Buckets` (the default) searches the whole list.
#[derive(Debug, Default, Clone)]
pub struct Buckets {
    min: i64,
    max: i64,
    shift: u32,
    /// The first entry of each range, and one past the last entry.
    starts: Vec<u32>,
}

impl Buckets {
    /// The buckets of `list`, sorted by `oid_of`; built again whenever the list changes.
    pub fn new<T>(list: &[T], oid_of: impl Fn(&T) -> i64) -> Buckets {
        let (Some(first), Some(last)) = (list.first(), list.last()) else {
            return Buckets::default();
        };
        let (min, max) = (oid_of(first), oid_of(last));
        let span = max.abs_diff(min);
        let want = (list.len() as u64 / 8).max(1);
        let mut shift = 0;
        while shift < 63 && (span >> shift) >= want {
            shift += 1;
        }
        let count = (span >> shift) as usize + 1;
        let mut starts = Vec::with_capacity(count + 1);
        let mut i = 0;
        for b in 0..count as u64 {
            while i < list.len() && (oid_of(&list[i]).abs_diff(min) >> shift) < b {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(list.len() as u32);
        Buckets {
            min,
            max,
            shift,
            starts,
        }
    }

    /// The entry of `list` (the list these buckets were built from) whose oid is `oid`.
    pub fn find<'a, T>(
        &self,
        list: &'a [T],
        oid_of: impl Fn(&T) -> i64,
        oid: i64,
    ) -> Option<&'a T> {
        let part = match self.starts.is_empty() {
            true => list,
            false if oid < self.min || oid > self.max => return None,
            false => {
                let b = (oid.abs_diff(self.min) >> self.shift) as usize;
                &list[self.starts[b] as usize..self.starts[b + 1] as usize]
            }
        };
        part.binary_search_by_key(&oid, oid_of)
            .ok()
            .map(|i| &part[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_find_what_a_binary_search_finds() {
        let lists: Vec<Vec<i64>> = vec![
            vec![],
            vec![7],
            (1..=1000).collect(),
            (0..500).map(|i| i * i * 37 - 1_000_000).collect(),
            vec![i64::MIN, -3, 0, 5, i64::MAX],
            vec![i64::MIN, i64::MAX],
            (0..62).map(|i| 1 << i).collect(),
        ];
        for oids in lists {
            let list: Vec<(i64, u64)> = oids.iter().map(|&o| (o, o as u64 ^ 5)).collect();
            let b = Buckets::new(&list, |e| e.0);
            let find = |oid: i64| b.find(&list, |e| e.0, oid).map(|e| e.1);
            for &o in &oids {
                assert_eq!(find(o), Some(o as u64 ^ 5), "{o} in {oids:?}");
                for near in [o.wrapping_sub(1), o.wrapping_add(1), o / 2] {
                    let want = list
                        .binary_search_by_key(&near, |e| e.0)
                        .ok()
                        .map(|i| list[i].1);
                    assert_eq!(find(near), want, "{near} near {o}");
                }
            }
            assert!(b.starts.len() <= list.len() / 8 + 3, "half a byte an entry");
            // Without buckets, the whole list is searched.
            let none = Buckets::default();
            for &o in &oids {
                assert_eq!(
                    none.find(&list, |e| e.0, o).map(|e| e.1),
                    Some(o as u64 ^ 5)
                );
            }
        }
    }
}
