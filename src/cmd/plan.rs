//! `lookmig plan EXPORT`: the dry run. Runs the whole pipeline and prints the report; writes
//! nothing, and keeps no change line ([`crate::migrate::plan`]).

use super::{out, out_json};
use crate::input::Input;
use anyhow::Result;

/// Options of `plan`.
pub struct Options {
    pub export: String,
    pub migrate: crate::migrate::Options,
    pub json: bool,
}

/// Runs `plan`.
pub fn run(o: &Options) -> Result<()> {
    let input = Input::new(&o.export)?;
    super::require_records(&input)?;
    let report = crate::migrate::plan(&input, &o.migrate)?;
    if o.json {
        out_json(&report)
    } else {
        out(&format!(
            "plan for {} (nothing written)\n{}",
            input.name,
            report.summary()
        ))
    }
}
