//! The one integration-test binary of lookmig: it runs the real `lookmig` binary in temporary
//! directories and holds it to SPEC.md. Topic modules live in `tests/it/` (a folder cargo does
//! not turn into test targets of its own), so `cargo test --test tests` runs them all.

#[path = "it/util.rs"]
mod util;

#[path = "it/samples.rs"]
mod samples;

#[path = "it/laws.rs"]
mod laws;

#[path = "it/errors.rs"]
mod errors;

#[path = "it/commands.rs"]
mod commands;

#[path = "it/bad_input.rs"]
mod bad_input;

#[path = "it/faults.rs"]
mod faults;

#[path = "it/fuzz.rs"]
mod fuzz;

#[path = "it/html5lib.rs"]
mod html5lib;

#[path = "it/newer.rs"]
mod newer;

#[path = "it/review.rs"]
mod review;

#[path = "it/browser.rs"]
mod browser;
