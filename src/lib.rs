//! lookmig: migrate the curation of Looker reports across the connector's report-ID change.
pub mod bundle;
pub mod cli;
pub mod cmd;
pub mod generate;
pub mod groups;
pub mod input;
pub mod keys;
pub mod mentions;
pub mod merge;
pub mod migrate;
pub mod output;
pub mod record;
pub mod refs;
pub mod report;
pub mod restore;
pub mod sort;
pub mod verify;
