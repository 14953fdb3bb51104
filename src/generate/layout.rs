//! Deterministic layout: oids and report shapes are pure functions of the indexes, so that a
//! mention or an object-set member can point at any report version of the export, written
//! before or after it, without the generator remembering anything.

use super::vocab::{COLUMN_SLOTS, TAB_COLUMNS, VERSION_SLOTS};
use super::GenerateOptions;
use fastrand::Rng;

/// SplitMix64's finaliser: spreads seeds that differ in one bit.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed of the random generator of item `i` for one purpose (`salt`).
pub(super) fn mix(seed: u64, i: u64, salt: u64) -> u64 {
    splitmix(seed ^ splitmix(i.wrapping_mul(8).wrapping_add(salt)))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Form {
    /// `dashboard_<digits>_<stamp>`
    Dashboard,
    /// `look_<digits>_<stamp>`
    Look,
    /// `lookml_dashboard_<model>::<name>_<stamp>`
    LookmlDashboard,
    /// Newest version already `dashboard/<digits>` or `look/<digits>`; older ones legacy.
    Stable,
    /// Unparseable external_id, stable id only in `source_url`.
    UrlOnly,
    /// Neither pattern nor usable `source_url`.
    Unresolvable,
}

/// The shape of logical report `i`, drawn from its own generator so it can be recomputed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// How its external_ids are spelled.
    pub(super) form: Form,
    /// Number of versions (1–4).
    pub(super) nv: u64,
    /// Number of columns of the newest versions.
    pub(super) ncols: u64,
    /// The oldest version lacks the last column.
    oldest_lacks_last: bool,
    /// Oids assigned newest-first (so the oldest version has the highest oid).
    reversed: bool,
}

impl Shape {
    /// The oid slot of version `v` (0 = oldest).
    pub(super) fn slot(&self, v: u64) -> u64 {
        if self.reversed {
            self.nv - 1 - v
        } else {
            v
        }
    }

    /// The number of columns of version `v`.
    pub(super) fn cols(&self, v: u64) -> u64 {
        if v == 0 && self.oldest_lacks_last {
            self.ncols - 1
        } else {
            self.ncols
        }
    }
}

/// The shape of logical report `i`.
pub(super) fn shape(seed: u64, i: u64) -> Shape {
    let mut r = Rng::with_seed(mix(seed, i, 1));
    let form = match r.u32(0..100) {
        0..=44 => Form::Dashboard,
        45..=72 => Form::Look,
        73..=84 => Form::LookmlDashboard,
        85..=88 => Form::Stable,
        89..=95 => Form::UrlOnly,
        _ => Form::Unresolvable,
    };
    let nv = match form {
        Form::Unresolvable => 1 + r.u64(0..2),
        Form::Stable => 1 + u64::from(r.u32(0..10) < 3),
        _ => match r.u32(0..100) {
            0..=29 => 1,
            30..=64 => 2,
            65..=84 => 3,
            _ => 4,
        },
    };
    let ncols = r.u64(2..=5);
    let oldest_lacks_last = nv > 1 && ncols >= 3 && r.u32(0..10) == 0;
    let reversed = nv > 1 && r.u32(0..12) == 0;
    Shape {
        form,
        nv,
        ncols,
        oldest_lacks_last,
        reversed,
    }
}

/// Where everything of one export is: counts, and oids as functions of indexes.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) seed: u64,
    /// Number of logical Looker reports.
    pub(super) n: u64,
    /// Number of Looker servers (ids `1..=servers`; the non-Looker one follows).
    pub(super) servers: u64,
    /// Number of logical reports of the non-Looker server.
    pub(super) tab_reports: u64,
    /// Number of `table` records (ids `1..=tables`).
    pub(super) tables: u64,
}

/// A `table` record every this many logical reports.
pub(super) const TABLE_EVERY: u64 = 50;
/// A `glossary_term` record at logical reports `i % GLOSSARY_EVERY == GLOSSARY_AT`.
pub(super) const GLOSSARY_EVERY: u64 = 40;
pub(super) const GLOSSARY_AT: u64 = 7;

impl Layout {
    /// The layout of the export `o` describes.
    pub(super) fn new(o: &GenerateOptions) -> Layout {
        let n = o.reports;
        Layout {
            seed: o.seed,
            n,
            servers: u64::from(o.servers),
            tab_reports: 3 + n / 100,
            tables: n.div_ceil(TABLE_EVERY),
        }
    }

    /// The id of the non-Looker server (after the Looker ones).
    pub(super) fn tab_server(&self) -> u64 {
        self.servers + 1
    }

    /// The oid of logical report `i`'s version in oid slot `slot` (see [`Shape::slot`]).
    pub(super) fn report_oid(&self, i: u64, slot: u64) -> u64 {
        1 + i * VERSION_SLOTS + slot
    }

    /// The oid of column `c` of that version.
    pub(super) fn column_oid(&self, i: u64, slot: u64, c: u64) -> u64 {
        1 + (i * VERSION_SLOTS + slot) * COLUMN_SLOTS + c
    }

    /// Number of versions of non-Looker report `k` (1 or 2).
    pub(super) fn tab_versions(&self, k: u64) -> u64 {
        1 + k % 2
    }

    /// Non-Looker reports and their columns take the oids after all the Looker ones.
    pub(super) fn tab_report_oid(&self, k: u64, v: u64) -> u64 {
        1 + self.n * VERSION_SLOTS + k * 2 + v
    }

    /// The oid of column `c` of non-Looker report `k`, version `v`.
    pub(super) fn tab_column_oid(&self, k: u64, v: u64, c: u64) -> u64 {
        1 + self.n * VERSION_SLOTS * COLUMN_SLOTS + (k * 2 + v) * COLUMN_SLOTS + c
    }

    /// Folders of each server: a few, plus one per 40 reports of a server.
    pub(super) fn folders_per_server(&self) -> u64 {
        3 + self.n / (self.servers * 40)
    }

    /// A report version other than those of report `exclude`. `shift` moves the version
    /// chosen for the same random draw (to make values that differ only in a version's oid).
    pub(super) fn pick_report(&self, r: &mut Rng, exclude: Option<u64>, shift: u64) -> u64 {
        let looker = self.n > 1 || (self.n == 1 && exclude.is_none());
        if !looker || r.u32(0..100) < 3 {
            let k = r.u64(0..self.tab_reports);
            let v = (r.u64(0..2) + shift) % self.tab_versions(k);
            return self.tab_report_oid(k, v);
        }
        let j = loop {
            let j = r.u64(0..self.n);
            if Some(j) != exclude {
                break j;
            }
        };
        let sh = shape(self.seed, j);
        let v = (r.u64(0..4) + shift) % sh.nv;
        self.report_oid(j, sh.slot(v))
    }

    /// A column of a report version other than those of report `exclude`.
    pub(super) fn pick_column(&self, r: &mut Rng, exclude: Option<u64>) -> u64 {
        let looker = self.n > 1 || (self.n == 1 && exclude.is_none());
        if !looker || r.u32(0..100) < 3 {
            let k = r.u64(0..self.tab_reports);
            let v = r.u64(0..self.tab_versions(k));
            return self.tab_column_oid(k, v, r.u64(0..TAB_COLUMNS));
        }
        let j = loop {
            let j = r.u64(0..self.n);
            if Some(j) != exclude {
                break j;
            }
        };
        let sh = shape(self.seed, j);
        let v = r.u64(0..sh.nv);
        self.column_oid(j, sh.slot(v), r.u64(0..sh.cols(v)))
    }

    /// An object-set member: mostly report versions, sometimes columns or tables.
    pub(super) fn pick_member(&self, r: &mut Rng, exclude: Option<u64>) -> Subj {
        match r.u32(0..10) {
            0 if self.tables > 0 => Subj::new("table", 1 + r.u64(0..self.tables)),
            1 => Subj::new("bi_report_column", self.pick_column(r, exclude)),
            _ => Subj::new("bi_report", self.pick_report(r, exclude, 0)),
        }
    }
}

/// A reference to a catalog object, written as `{"otype":…,"oid":…}` (fields in that order).
#[derive(Clone, Copy, serde::Serialize)]
pub(super) struct Subj {
    pub(super) otype: &'static str,
    pub(super) oid: u64,
}

impl Subj {
    pub(super) fn new(otype: &'static str, oid: u64) -> Subj {
        Subj { otype, oid }
    }
}

/// One of `items`.
pub(super) fn pick<'a>(r: &mut Rng, items: &[&'a str]) -> &'a str {
    items[r.u32(0..items.len() as u32) as usize]
}

/// Up to 8 distinct indexes in `0..n` (`k` is capped at `n` and 8).
pub(super) fn distinct(r: &mut Rng, k: usize, n: u64) -> ([u64; 8], usize) {
    let k = k.min(8).min(n as usize);
    let mut out = [0u64; 8];
    let mut len = 0;
    while len < k {
        let x = r.u64(0..n);
        if !out[..len].contains(&x) {
            out[len] = x;
            len += 1;
        }
    }
    (out, len)
}
