//! lookmig: migrate the curation of Looker reports across the connector's report-ID change.
pub mod generate;
pub mod groups;
pub mod input;
pub mod keys;
pub mod mentions;
pub mod merge;
pub mod record;
pub mod refs;
pub mod bundle;
pub mod db;
pub mod migrate;
pub mod output;
pub mod report;
pub mod restore;
pub mod verify;
pub mod cli;
pub mod cmd;
