//! `lookmig generate`: a synthetic export of any size, deterministic per seed.

use super::{out, out_json};
use crate::output::{AtomicFile, Target};
use anyhow::{Context, Result};

/// Options of `generate`.
pub struct Options {
    pub gen: crate::generate::GenerateOptions,
    pub output: String,
    pub json: bool,
    pub overwrite: bool,
    pub level: i32,
}

/// Runs `generate`.
pub fn run(o: &Options) -> Result<()> {
    let stats = if o.output == "-" {
        crate::generate::generate(&o.gen, std::io::stdout().lock())?
    } else {
        let target = Target {
            path: o.output.clone().into(),
            overwrite: o.overwrite,
        };
        let file = AtomicFile::create(&target)?;
        let stats = if o.output.ends_with(".zst") {
            let mut enc = zstd::stream::write::Encoder::new(file.file(), o.level)?;
            enc.multithread(crate::output::workers(0) as u32)?;
            let stats = crate::generate::generate(&o.gen, &mut enc)?;
            enc.finish()
                .with_context(|| format!("{}: writing (is the disk full?)", o.output))?;
            stats
        } else {
            crate::generate::generate(&o.gen, file.file())?
        };
        file.commit()?;
        stats
    };
    if o.output == "-" {
        return Ok(());
    }
    if o.json {
        out_json(&stats)
    } else {
        out(&format!("wrote {} lines to {}", stats.lines, o.output))
    }
}
