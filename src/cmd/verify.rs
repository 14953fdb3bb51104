//! `lookmig verify BUNDLE [--export EXPORT]`: checksums, and the conservation law of SPEC §7.

use super::{out, out_json};
use crate::error::Failure;
use crate::input::Input;
use anyhow::Result;

/// Options of `verify`.
pub struct Options {
    pub bundle: String,
    pub export: Option<String>,
    pub threads: usize,
    pub json: bool,
}

/// Runs `verify`; a broken rule is exit 3.
pub fn run(o: &Options) -> Result<()> {
    let export = o.export.as_deref().map(Input::new).transpose()?;
    let v = match crate::verify::run(std::path::Path::new(&o.bundle), export.as_ref(), o.threads) {
        Err(e) if Failure::is_damaged(&e) => {
            return Err(Failure::Verification(format!("verification failed: {e:#}")).into());
        }
        other => other?,
    };
    if o.json {
        out_json(&v)?;
    } else if v.failures.is_empty() {
        let mut s = format!("bundle {}: {} files match the manifest", o.bundle, v.files);
        if let Some(e) = &o.export {
            s += &format!(
                "\nconservation law holds against {e}: {} curation items on their survivors or reported as conflicts, \
                 {} records checked: none outside the change set differs, restore then rollback gives the export back",
                v.curation_items, v.records
            );
        }
        out(&s)?;
    }
    if v.failures.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "verification failed for {}: {} problem(s)",
        o.bundle,
        v.failures.len()
    );
    for f in v.failures.iter().take(20) {
        msg += &format!("\n  {f}");
    }
    Err(Failure::Verification(msg).into())
}
