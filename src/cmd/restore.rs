//! `lookmig restore|rollback BUNDLE --onto EXPORT -o OUT`: apply (or undo) a bundle onto a copy
//! of an export, guarded by SPEC §7.

use super::{out, out_json};
use crate::cli::RestoreArgs;
use crate::input::Input;
use crate::output::Target;
use crate::restore::Direction;
use anyhow::Result;

/// Options of `restore` and `rollback`.
pub struct Options {
    pub bundle: String,
    pub onto: String,
    pub output: String,
    pub json: bool,
    pub overwrite: bool,
    pub restore: crate::restore::Options,
}

impl Options {
    /// From the parsed command line.
    pub fn from_args(a: RestoreArgs, direction: Direction) -> Options {
        Options {
            bundle: a.bundle,
            onto: a.onto,
            output: a.output,
            json: a.common.json,
            overwrite: a.write.overwrite,
            restore: crate::restore::Options {
                direction,
                force: a.force,
                threads: a.common.threads,
                progress: true,
                level: a.write.level,
                max_errors: a.max_errors,
            },
        }
    }
}

/// Runs `restore` or `rollback`; conflicts are exit 3 and nothing is written.
pub fn run(o: &Options) -> Result<()> {
    let target = Target {
        path: o.output.clone().into(),
        overwrite: o.overwrite,
    };
    target.check()?;
    let b = crate::bundle::open(std::path::Path::new(&o.bundle))?;
    let input = Input::new(&o.onto)?;
    let summary = match crate::restore::run(b.changes()?, &input, &target, &o.restore) {
        Err(e) if o.json => {
            if let Some(c) = e.downcast_ref::<crate::restore::Conflicts>() {
                out_json(&c.0)?;
            }
            return Err(e);
        }
        other => other?,
    };
    if o.json {
        return out_json(&summary);
    }
    let verb = if o.restore.direction == Direction::Restore {
        "restored"
    } else {
        "rolled back"
    };
    let mut s = format!(
        "{verb} {} onto {}: {} changes, {} applied, {} already applied, {} lines written to {}",
        o.bundle,
        o.onto,
        summary.changes,
        summary.applied,
        summary.already_applied,
        summary.lines_written,
        o.output
    );
    if summary.forced > 0 {
        s += &format!(
            "\n{} conflicting changes applied anyway (--force)",
            summary.forced
        );
    }
    out(&s)
}
