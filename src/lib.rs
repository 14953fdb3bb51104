//! lookmig: migrate the curation of Looker reports across the connector's report-ID change.
pub mod generate;
pub mod mentions;
