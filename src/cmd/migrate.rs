//! `lookmig migrate EXPORT -o BUNDLE`: the pipeline, written as a bundle.

use super::{out, out_json};
use crate::input::Input;
use crate::output::Target;
use anyhow::Result;

/// Options of `migrate`.
pub struct Options {
    pub export: String,
    pub output: String,
    pub migrate: crate::migrate::Options,
    pub json: bool,
    pub overwrite: bool,
    pub level: i32,
}

/// Runs `migrate`.
pub fn run(o: &Options) -> Result<()> {
    let target = Target {
        path: o.output.clone().into(),
        overwrite: o.overwrite,
    };
    target.check()?;
    let input = Input::new(&o.export)?;
    super::require_records(&input)?;
    let outcome = crate::migrate::run(&input, &o.migrate, o.level)?;
    let changes = outcome
        .changes
        .expect("a migration that is no dry run keeps its changes");
    let n = changes.len();
    crate::bundle::write(
        &target,
        crate::bundle::Contents {
            changes,
            idmap: outcome.idmap,
            report: &outcome.report,
            input_sha256: outcome.input_sha256.clone(),
            options: outcome.options.clone(),
            level: o.level,
            threads: o.migrate.threads,
        },
    )?;
    crate::migrate::timing("bundle");
    let id =
        crate::input::sha256_file(&std::path::Path::new(&o.output).join(crate::bundle::MANIFEST))?;
    if std::env::var_os("LOOKMIG_TIMING").is_some() {
        // How the work was cut up, so a test of the test knobs (README) can see it was.
        eprintln!(
            "timing: {} batches read, {} sort runs spilled",
            crate::input::batches_read(),
            crate::sort::runs_spilled()
        );
    }
    if o.json {
        out_json(
            &serde_json::json!({ "bundle": o.output, "id": id, "report": outcome.report.small() }),
        )
    } else {
        out(&format!(
            "{}wrote bundle {} ({} changes), id {id}\nnext: lookmig verify {} --export {}",
            outcome.report.summary(),
            o.output,
            n,
            o.output,
            o.export
        ))
    }
}
