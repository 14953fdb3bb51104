//! `lookmig review BUNDLE -o review.html`: the page to review and sign off a bundle
//! ([`crate::review`]), written beside its target and renamed into place.

use super::{out, out_json};
use crate::output::{AtomicFile, Target};
use anyhow::{Context, Result};
use std::io::Write;

/// Options of `review`.
pub struct Options {
    pub bundle: String,
    pub output: String,
    /// Bytes of group details to embed at most.
    pub details_bytes: u64,
    pub overwrite: bool,
    pub json: bool,
}

/// Runs `review`.
pub fn run(o: &Options) -> Result<()> {
    let target = Target {
        path: o.output.clone().into(),
        overwrite: o.overwrite,
    };
    target.check()?;
    let b = crate::bundle::open(std::path::Path::new(&o.bundle))?;
    let id = b.id()?;
    let file = AtomicFile::create(&target)?;
    let stats = {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file.file());
        let stats = crate::review::write_page(
            &b,
            usize::try_from(o.details_bytes).unwrap_or(usize::MAX),
            &mut w,
        )
        .with_context(|| format!("{}: writing the review page", o.output))?;
        w.flush()
            .with_context(|| format!("{}: writing (is the disk full?)", o.output))?;
        stats
    };
    file.commit()?;
    if o.json {
        return out_json(&serde_json::json!({ "page": o.output, "id": id, "stats": stats }));
    }
    let mut s = format!(
        "wrote {} ({:.1} MB): bundle id {id}\n{} report groups with several versions ({} with details), {} conflicts, {} unresolved reports, {} changes\n",
        o.output,
        stats.bytes as f64 / 1e6,
        stats.groups,
        stats.groups_with_details,
        stats.conflicts,
        stats.unresolved,
        stats.changes
    );
    if stats.groups_with_details < stats.groups {
        s.push_str(&format!(
            "details embedded for {} of {} groups (groups with conflicts first); raise --details-mb for more\n",
            stats.groups_with_details, stats.groups
        ));
    }
    s.push_str(&format!(
        "open it in a browser; decisions made there are saved as decisions.csv for: lookmig migrate EXPORT --decisions decisions.csv -o BUNDLE\nonce signed off: lookmig restore {} --expect {id} …",
        o.bundle
    ));
    out(&s)
}
