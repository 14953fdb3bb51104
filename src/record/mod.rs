//! The records of an export (SPEC §1), in five parts, one job each:
//!
//! - `model.rs`: the kinds, subjects and records, the record key, canonical JSON and custom field
//!   definitions;
//! - `fields.rs`: the table of the named fields of each kind (name, type, required), which
//!   drives both the probe and the database schema;
//! - `probe.rs`: the validating probe, which reads and checks a line, and [`parse_line`];
//! - `time.rs`: timestamps as instants and the orders the SPEC sorts by;
//! - `duplicates.rs`: duplicate record keys and their hashes.
//!
//! The parts are private: everything is used as `crate::record::X`.

mod duplicates;
mod fields;
mod model;
mod probe;
mod time;

pub use duplicates::{DuplicateKeys, SeenKeys};
pub use fields::{fields, Field, Ty, POST};
pub use model::{
    builtin_field, canonical_json, canonical_json_map, FieldDef, Kind, Record, Subject, FIELD_TYPES,
};
pub use probe::{
    from_json_bytes, parse_line, raw_int, raw_object, raw_str, raw_subject, short, Probe,
    RawFields, MAX_DEPTH,
};
pub use time::{earliest_first, instant, instant_str, latest_first};
