//! `lookmig plan EXPORT`: the dry run. Runs the whole pipeline and prints the report; writes
//! nothing.

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
    let outcome = crate::migrate::run(&input, &o.migrate)?;
    if o.json {
        out_json(&outcome.report)
    } else {
        out(&format!(
            "plan for {} (nothing written)\n{}",
            input.name,
            outcome.report.summary()
        ))
    }
}
