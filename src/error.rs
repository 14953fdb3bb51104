//! The errors that decide an exit code, in one place (SPEC §8).
//!
//! Every command returns `anyhow::Result`; an error is exit 1 unless it is a [`Failure`], which
//! says its own code. [`exit_code`] is the only place that turns an error into a code:
//!
//! | exit | meaning (SPEC §8)                         | raised as                                   |
//! |------|-------------------------------------------|---------------------------------------------|
//! | 0    | done                                      | `Ok`; also a closed stdout pipe (`head`)    |
//! | 1    | error: bad input, I/O, anything else      | any error that is not a [`Failure`] of 3, and [`Failure::Damaged`] |
//! | 2    | usage: the command line is wrong          | clap, in [`crate::cli::main`]               |
//! | 3    | conflicts, or a failed verification       | [`Failure::Conflicts`], [`Failure::Verification`], [`Failure::NotExpected`] |
//!
//! The message is the same whatever the code: `lookmig: ` and the error with its whole context
//! chain (`{:#}`), printed once by [`crate::cli::main`].

use crate::restore::Summary;

/// An error whose exit code is part of the contract.
#[derive(Debug)]
pub enum Failure {
    /// Conflicts stopped a restore or rollback (onto an export or a database); nothing was
    /// written. The summary lists them (`--json` prints it). Exit 3.
    Conflicts(Box<Summary>),
    /// A bundle whose files disagree with its manifest: refused by every command (exit 1), and
    /// a failed verification for `verify` (which raises [`Failure::Verification`] from it).
    Damaged(String),
    /// `verify` found a rule broken. Exit 3.
    Verification(String),
    /// `--expect ID` and the bundle is another one: not what was signed off. Exit 3.
    NotExpected(String),
}

impl Failure {
    /// The error of conflicts that stopped a restore.
    pub fn conflicts(summary: Summary) -> anyhow::Error {
        Failure::Conflicts(Box::new(summary)).into()
    }

    /// The exit code of SPEC §8.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Damaged(_) => 1,
            Failure::Conflicts(_) | Failure::Verification(_) | Failure::NotExpected(_) => 3,
        }
    }

    /// The summary of the conflicts, when `e` is conflicts that stopped a restore.
    pub fn conflicts_of(e: &anyhow::Error) -> Option<&Summary> {
        match e.downcast_ref::<Failure>() {
            Some(Failure::Conflicts(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether `e` is a bundle that disagrees with its manifest.
    pub fn is_damaged(e: &anyhow::Error) -> bool {
        matches!(e.downcast_ref::<Failure>(), Some(Failure::Damaged(_)))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Conflicts(s) => s.write_conflicts(f),
            Failure::Damaged(m) | Failure::Verification(m) | Failure::NotExpected(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for Failure {}

/// The exit code of a command that failed with `e`: 0 for a closed stdout pipe (the reader, such
/// as `head`, has all it wants), a [`Failure`]'s own code, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if is_broken_pipe(e) {
        return 0;
    }
    e.downcast_ref::<Failure>().map_or(1, Failure::code)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn every_failure_keeps_its_code_through_context_and_others_are_1() {
        let three = [
            Failure::conflicts(Summary::default()),
            Failure::Verification("v".into()).into(),
            Failure::NotExpected("x".into()).into(),
        ];
        for e in three {
            assert_eq!(exit_code(&e), 3, "{e:#}");
            assert_eq!(exit_code(&e.context("while restoring")), 3);
        }
        let damaged: anyhow::Error = Failure::Damaged("d".into()).into();
        assert!(Failure::is_damaged(&damaged));
        assert_eq!(exit_code(&damaged), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("bad input")), 1);
        let pipe = Err::<(), _>(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing stdout")
            .unwrap_err();
        assert_eq!(exit_code(&pipe), 0);
        let other_io = Err::<(), _>(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("reading")
            .unwrap_err();
        assert_eq!(exit_code(&other_io), 1);
        assert!(Failure::conflicts_of(&Failure::conflicts(Summary::default())).is_some());
        assert!(Failure::conflicts_of(&damaged).is_none());
    }
}
