//! Fuzzing on the stable toolchain (issue 5): property tests over arbitrary input for the line
//! reader, the probe (record validation, held both ways to an independent reading of SPEC §1),
//! the key resolver and the mention rewriter. Each target
//! first replays its checked-in corpus, `tests/corpus/<target>/*` (interesting inputs, and every
//! input that ever failed), then runs `LOOKMIG_FUZZ_CASES` generated cases (256 by default, so
//! `cargo test` stays fast; `.ci/run` adds a longer bounded run). A failure found here becomes a
//! file of the corpus, so it is replayed from then on.

use lookmig::input::Input;
use lookmig::keys::{self, IdMap, Rule};
use lookmig::mentions;
use lookmig::record::{parse_line, Probe};
use proptest::prelude::*;
use std::io::Write;
use std::path::PathBuf;

/// How many generated cases each target runs.
fn cases() -> u32 {
    std::env::var("LOOKMIG_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Failures are turned into corpus files by hand; no regression files beside the source.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The corpus files of a target, sorted, with their bytes.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: the corpus is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

// ---- the line reader ----

/// What the reader must return for `bytes` (plain) with the limit `max`: the non-blank lines
/// with their numbers, then either the end or a refusal at a line number.
fn expected_lines(bytes: &[u8], max: usize) -> (Vec<(u64, Vec<u8>)>, Option<u64>) {
    let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        pieces.pop();
    }
    let mut out = vec![];
    for (i, p) in pieces.iter().enumerate() {
        let no = i as u64 + 1;
        if p.len() > max {
            return (out, Some(no));
        }
        if !p.iter().all(|b| b.is_ascii_whitespace()) {
            out.push((no, p.to_vec()));
        }
    }
    (out, None)
}

/// How a test takes lines from the reader.
#[derive(Clone, Copy, Debug)]
enum Take {
    /// A line at a time.
    Lines,
    /// Batches of about that many bytes.
    Batches(usize),
    /// A line, then a batch of about that many bytes, and so on.
    Mixed(usize),
}

/// Reads `file` with the limit `max`, taking lines as `take` says: the lines, then the error
/// message if reading failed.
fn read_all(
    file: &std::path::Path,
    max: usize,
    take: Take,
) -> (Vec<(u64, Vec<u8>)>, Option<String>) {
    let mut input = Input::new(file.to_str().unwrap()).unwrap();
    input.max_line = max;
    let mut lines = match input.lines() {
        Ok(l) => l,
        Err(e) => return (vec![], Some(format!("{e:#}"))),
    };
    let mut out = vec![];
    for turn in 0.. {
        let size = match take {
            Take::Batches(size) => size,
            Take::Mixed(size) if turn % 2 == 1 => size,
            _ => {
                match lines.next_line() {
                    Ok(Some(l)) => out.push((l.no, l.bytes.to_vec())),
                    Ok(None) => return (out, None),
                    Err(e) => return (out, Some(format!("{e:#}"))),
                }
                continue;
            }
        };
        match lines.next_batch(size) {
            Ok(b) if b.is_empty() => return (out, None),
            Ok(b) => out.extend(b.into_iter().map(|l| (l.no, l.bytes.to_vec()))),
            Err(e) => return (out, Some(format!("{e:#}"))),
        }
    }
    unreachable!("the loop returns")
}

fn temp_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

/// The reader's laws on `bytes`: plain and zstd give the same lines, numbered as the model says,
/// refused at the first line over the limit with its number; raw bytes behind the zstd magic
/// never panic.
fn check_lines(bytes: &[u8], max: usize) -> Result<(), TestCaseError> {
    let plain = if bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        // Not plain text: garbage after the zstd magic. Any result but a panic is fine, and
        // line numbers still only grow.
        let (lines, _) = read_all(temp_with(bytes).path(), max, Take::Lines);
        prop_assert!(lines.windows(2).all(|w| w[0].0 < w[1].0));
        return Ok(());
    } else {
        temp_with(bytes)
    };
    let zst = temp_with(&zstd::encode_all(bytes, 1).unwrap());
    let (want, refused_at) = expected_lines(bytes, max);
    // Batches of any size, alone or between lines taken one at a time, read the same lines as
    // a line at a time; a refused line loses the lines of its own batch, so theirs are a
    // beginning of the model's.
    let takes = [
        Take::Lines,
        Take::Batches(1),
        Take::Batches(7),
        Take::Batches(4096),
        Take::Mixed(7),
        Take::Mixed(4096),
    ];
    for (f, take) in [&plain, &zst]
        .into_iter()
        .flat_map(|f| takes.map(|t| (f, t)))
    {
        let (got, err) = read_all(f.path(), max, take);
        if matches!(take, Take::Lines) || err.is_none() {
            prop_assert_eq!(&got, &want);
        } else {
            prop_assert_eq!(&got[..], &want[..got.len().min(want.len())]);
        }
        match (refused_at, err) {
            (None, None) => {}
            (Some(no), Some(e)) => {
                prop_assert!(
                    e.contains(&format!(":{no}: line longer than {max} bytes")),
                    "{}",
                    e
                );
            }
            (a, b) => prop_assert!(false, "expected refusal at {:?}, got {:?}", a, b),
        }
    }
    // Truncated zstd never reads as a shorter file without an error.
    let z = zstd::encode_all(bytes, 1).unwrap();
    if z.len() > 8 {
        let cut = temp_with(&z[..z.len() - 4]);
        for take in [Take::Lines, Take::Batches(4096), Take::Mixed(7)] {
            let (_, err) = read_all(cut.path(), max, take);
            prop_assert!(err.is_some(), "a truncated zstd stream read without error");
        }
    }
    Ok(())
}

#[test]
fn lines_corpus() {
    for (p, bytes) in corpus("lines") {
        for max in [1, 8, 64, 1 << 20] {
            check_lines(&bytes, max)
                .unwrap_or_else(|e| panic!("{} (limit {max}): {e}", p.display()));
        }
    }
}

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..20),
        2 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"  \t\n".to_vec()),
        1 => Just(b"{\"kind\":\"x\"}\n".to_vec()),
        1 => Just(vec![0x28, 0xB5, 0x2F, 0xFD]),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lines_never_panic_and_number_every_line(bytes in line_bytes(), max in 1usize..48) {
        check_lines(&bytes, max)?;
    }
}

// ---- the probe (record validation) ----

/// The probe against SPEC §1, both ways: it accepts a line exactly when [`spec_line`] (an
/// independent reading of §1 on a plain JSON tree) does, and then finds the same kind and key;
/// the full parser agrees with it.
fn check_probe(bytes: &[u8]) -> Result<(), TestCaseError> {
    let probe = Probe::parse(bytes);
    let spec = spec_line(bytes);
    match (&probe, &spec) {
        (Ok(p), Ok((kind, key))) => {
            prop_assert_eq!(p.kind_name.as_ref(), kind.as_str(), "kind");
            prop_assert_eq!(&p.key(), key, "the probe's key is not the key of SPEC §1");
            let r = parse_line(bytes);
            prop_assert!(
                r.is_ok(),
                "parse_line refuses what the probe accepts: {:?}",
                r.err()
            );
            let r = r.unwrap();
            prop_assert_eq!(r.kind, p.kind);
            prop_assert_eq!(&r.key(), key, "parse_line's key is not the key of SPEC §1");
        }
        (Err(e), Err(_)) => prop_assert!(!e.is_empty(), "a refusal without a reason"),
        (Ok(p), Err(why)) => prop_assert!(
            false,
            "the probe accepts ({} {:?}) a line SPEC §1 refuses: {}",
            p.kind_name,
            p.key(),
            why
        ),
        (Err(e), Ok((kind, key))) => prop_assert!(
            false,
            "the probe refuses ({}) a line SPEC §1 accepts as {} {:?}",
            e,
            kind,
            key
        ),
    }
    Ok(())
}

/// A JSON value as written, objects with every field in order, a field given twice included
/// (serde_json's `Value` keeps only the last one, so it cannot tell).
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool,
    /// An integer literal that fits i64 (serde_json reads `-0` as a float).
    Int(i64),
    /// Any other number: a fraction, an exponent, an integer out of the i64 range.
    OtherNumber,
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl<'de> serde::Deserialize<'de> for J {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<J, E> {
                Ok(J::Bool)
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(i64::try_from(n).map_or(J::OtherNumber, J::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<J, E> {
                Ok(J::OtherNumber)
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = vec![];
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = vec![];
                while let Some(e) = a.next_entry::<String, J>()? {
                    v.push(e);
                }
                Ok(J::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The fields of an object; Err when one of `named` is given twice.
fn fields<'a>(
    fields: &'a [(String, J)],
    named: &[&str],
) -> Result<std::collections::HashMap<&'a str, &'a J>, String> {
    let mut m = std::collections::HashMap::new();
    for (k, v) in fields {
        if m.insert(k.as_str(), v).is_some() && named.contains(&k.as_str()) {
            return Err(format!("`{k}` given twice"));
        }
    }
    Ok(m)
}

/// The top-level fields SPEC §1 gives a rule (or the tool reads): one of them given twice is a
/// malformed line, since nothing says which one counts. Another field given twice is kept as
/// serde_json reads it (the last one), like every field not named here.
const NAMED: [&str; 28] = [
    "kind",
    "format",
    "version",
    "id",
    "type",
    "title",
    "uri",
    "oid",
    "server_id",
    "external_id",
    "name",
    "deleted",
    "last_updated",
    "created_at",
    "source_url",
    "report",
    "field_type",
    "allow_multiple",
    "field_id",
    "subject",
    "value",
    "ts_updated",
    "flag_type",
    "user_id",
    "reason",
    "ts_created",
    "body",
    "posts",
];

/// Is `v` a subject `{"otype": string, "oid": integer}` (other fields allowed, each of the two
/// given once)?
fn is_subject(v: &J) -> bool {
    let J::Obj(f) = v else { return false };
    match fields(f, &["otype", "oid"]) {
        Ok(m) => {
            matches!(m.get("otype"), Some(J::Str(_))) && matches!(m.get("oid"), Some(J::Int(_)))
        }
        Err(_) => false,
    }
}

/// SPEC §1 on one line, written out plainly and apart from `src/record/`: Ok with the `kind`
/// and the record key when the line is a valid record, Err with what is wrong otherwise.
///
/// What the line alone cannot decide is not checked here: a field_value's `value` against its
/// field's type (a `custom_field` line elsewhere may define, or redefine, the field), a header
/// that is not the first line, a key met twice.
fn spec_line(bytes: &[u8]) -> Result<(String, String), String> {
    // Valid UTF-8 JSON, nested no deeper than serde_json reads (README: deep nesting).
    let tree: J = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let J::Obj(top) = &tree else {
        return Err("not an object".into());
    };
    let f = fields(top, &NAMED)?;
    let Some(J::Str(kind)) = f.get("kind") else {
        return Err("`kind` missing or not a string".into());
    };
    let get = |name: &str| f.get(name).copied();
    // Required: present, of its type (null is no value of any type).
    let int = |name: &str| match get(name) {
        Some(J::Int(i)) => Ok(*i),
        _ => Err(format!("`{name}` must be an integer")),
    };
    let string = |name: &str| match get(name) {
        Some(J::Str(s)) => Ok(s.clone()),
        _ => Err(format!("`{name}` must be a string")),
    };
    let subject = |name: &str| match get(name) {
        Some(v) if is_subject(v) => Ok(()),
        _ => Err(format!("`{name}` must be a subject")),
    };
    let one_of = |name: &str, allowed: &[&str]| match get(name) {
        Some(J::Str(s)) if allowed.contains(&s.as_str()) => Ok(()),
        _ => Err(format!("`{name}` must be one of {allowed:?}")),
    };
    // Optional: absent, null, or of its type.
    let opt_string = |name: &str| match get(name) {
        None | Some(J::Null) | Some(J::Str(_)) => Ok(()),
        _ => Err(format!("`{name}` must be a string")),
    };
    let opt_bool = |name: &str| match get(name) {
        None | Some(J::Null) | Some(J::Bool) => Ok(()),
        _ => Err(format!("`{name}` must be a boolean")),
    };
    // The key of a subject's curation: `otype:oid:tail`.
    let on_subject = |tail: String| {
        let Some(J::Obj(s)) = get("subject") else {
            unreachable!("checked")
        };
        let m = fields(s, &[]).unwrap();
        match (m["otype"], m["oid"]) {
            (J::Str(t), J::Int(o)) => format!("{t}:{o}:{tail}"),
            _ => unreachable!("checked"),
        }
    };
    let key = match kind.as_str() {
        "header" => {
            match get("format") {
                Some(J::Str(s)) if s == "catalog-export" => {}
                _ => return Err("header `format` must be \"catalog-export\"".into()),
            }
            match get("version") {
                Some(J::Int(1)) => {}
                _ => return Err("header `version` must be 1".into()),
            }
            "header".to_string()
        }
        "bi_server" => {
            let id = int("id")?;
            string("type")?;
            opt_string("title")?;
            opt_string("uri")?;
            id.to_string()
        }
        "bi_folder" | "bi_report" | "bi_report_column" => {
            let oid = int("oid")?;
            int("server_id")?;
            string("external_id")?;
            if kind != "bi_folder" {
                opt_bool("deleted")?;
                // Timestamps are RFC 3339 strings.
                opt_string("created_at")?;
                opt_string("last_updated")?;
            }
            if kind == "bi_report" {
                opt_string("source_url")?;
            }
            if kind == "bi_report_column" {
                string("report")?;
            }
            oid.to_string()
        }
        "custom_field" => {
            let id = int("id")?;
            one_of(
                "field_type",
                &[
                    "TEXT",
                    "RICH_TEXT",
                    "PICKER",
                    "MULTI_PICKER",
                    "DATE",
                    "OBJECT_SET",
                ],
            )?;
            opt_bool("allow_multiple")?;
            id.to_string()
        }
        "field_value" => {
            let field = int("field_id")?;
            subject("subject")?;
            // Present; null is an empty value.
            get("value").ok_or("`value` missing")?;
            opt_string("ts_updated")?;
            on_subject(field.to_string())
        }
        "trust_flag" => {
            let id = int("id")?;
            one_of("flag_type", &["ENDORSEMENT", "WARNING", "DEPRECATION"])?;
            subject("subject")?;
            int("user_id")?;
            opt_string("reason")?;
            opt_string("ts_created")?;
            id.to_string()
        }
        "tag" => {
            let name = string("name")?;
            subject("subject")?;
            on_subject(name)
        }
        "star" => {
            let user = int("user_id")?;
            subject("subject")?;
            opt_string("ts_created")?;
            on_subject(user.to_string())
        }
        "article" => {
            let id = int("id")?;
            string("body")?;
            opt_string("title")?;
            id.to_string()
        }
        "conversation" => {
            let id = int("id")?;
            match get("subject") {
                None | Some(J::Null) => {}
                Some(v) if is_subject(v) => {}
                _ => return Err("`subject` must be a subject or null".into()),
            }
            let Some(J::Arr(posts)) = get("posts") else {
                return Err("`posts` must be a list".into());
            };
            for post in posts {
                let J::Obj(p) = post else {
                    return Err("a post is not an object".into());
                };
                let p = fields(p, &["id", "user_id", "text", "ts_created"])?;
                let ok = matches!(p.get("id"), Some(J::Int(_)))
                    && matches!(p.get("user_id"), Some(J::Int(_)))
                    && matches!(p.get("text"), Some(J::Str(_)))
                    && matches!(p.get("ts_created"), None | Some(J::Null | J::Str(_)));
                if !ok {
                    return Err("a post needs integer id and user_id, string text".into());
                }
            }
            id.to_string()
        }
        // Anything else: `id` if present (an integer or a string, README), else the SHA-256 of
        // the record's canonical JSON.
        _ => match get("id") {
            Some(J::Int(i)) => i.to_string(),
            Some(J::Str(s)) => s.clone(),
            Some(_) => return Err("`id` must be an integer or a string".into()),
            None => {
                let v: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
                crate::util::sha256_hex(crate::util::canonical(&v).as_bytes())
            }
        },
    };
    Ok((kind.clone(), key))
}

#[test]
fn the_spec_model_says_what_section_1_says() {
    // The model itself, on lines whose verdict SPEC §1 states; and the probe on each.
    let ok = |l: &str, key: &str| {
        assert_eq!(
            spec_line(l.as_bytes()).map(|k| k.1),
            Ok(key.to_string()),
            "{l}"
        );
        check_probe(l.as_bytes()).unwrap_or_else(|e| panic!("{l}: {e}"));
    };
    let bad = |l: &str| {
        assert!(spec_line(l.as_bytes()).is_err(), "{l}");
        check_probe(l.as_bytes()).unwrap_or_else(|e| panic!("{l}: {e}"));
    };
    ok(r#"{"kind":"bi_server","id":7,"type":"looker"}"#, "7");
    bad(r#"{"kind":"bi_server","id":7.0,"type":"looker"}"#);
    bad(r#"{"kind":"bi_report","oid":-0,"server_id":1,"external_id":"x"}"#);
    ok(
        r#"{"kind":"tag","name":"n","subject":{"oid":3,"otype":"t"}}"#,
        "t:3:n",
    );
    bad(r#"{"kind":"tag","name":"n","subject":{"oid":3,"otype":"t","oid":4}}"#);
    bad(r#"{"kind":"star","user_id":1,"subject":null}"#);
    ok(
        r#"{"kind":"conversation","id":2,"subject":null,"posts":[]}"#,
        "2",
    );
    bad(r#"{"kind":"header","format":"catalog-export","version":2}"#);
    bad(r#"{"kind":"x","id":null}"#);
    ok(r#"{"kind":"x","a":1,"a":2}"#, &{
        crate::util::sha256_hex(br#"{"a":2,"kind":"x"}"#)
    });
}

#[test]
fn probe_corpus() {
    for (p, bytes) in corpus("probe") {
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            check_probe(line).unwrap_or_else(|e| {
                panic!("{}: {e}\n{}", p.display(), String::from_utf8_lossy(line))
            });
        }
    }
}

/// A JSON value of any type, short.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("1".to_string()),
        Just("-7".to_string()),
        Just("0".to_string()),
        Just("-0".to_string()),
        Just("1.0".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("9223372036854775807".to_string()),
        Just("1.5".to_string()),
        Just("1e3".to_string()),
        Just("9223372036854775808".to_string()),
        Just("\"\"".to_string()),
        Just("\"bi_report\"".to_string()),
        Just("\"TEXT\"".to_string()),
        Just("\"OBJECT_SET\"".to_string()),
        Just("\"2024-01-01T00:00:00Z\"".to_string()),
        "\"[a-z\\\\é\\u{1F600}]{0,6}\"".prop_map(|s| s),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((field_name(), inner), 0..4).prop_map(|v| {
                let f: Vec<String> = v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", f.join(","))
            }),
        ]
    })
}

fn field_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "kind",
        "id",
        "oid",
        "otype",
        "server_id",
        "external_id",
        "report",
        "type",
        "field_id",
        "field_type",
        "allow_multiple",
        "subject",
        "value",
        "flag_type",
        "user_id",
        "name",
        "body",
        "posts",
        "text",
        "reason",
        "deleted",
        "format",
        "version",
        "ts_created",
        "x",
    ])
}

/// Numbers at the edge of "a JSON integer" (SPEC §1: integer fields): `-0` and `1.0` are
/// floats to serde_json, the i64 bounds and one past them.
fn int_edge() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "0",
        "-0",
        "1.0",
        "1e0",
        "-1",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
    ])
}

/// A line that looks like a record: a known kind (or another) and fields of random types.
fn record_line() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "header",
        "bi_server",
        "bi_folder",
        "bi_report",
        "bi_report_column",
        "custom_field",
        "field_value",
        "trust_flag",
        "tag",
        "star",
        "article",
        "conversation",
        "view_event",
    ]);
    let subject = (
        prop::sample::select(vec!["bi_report", "bi_report_column", "x"]),
        -3i64..5,
    )
        .prop_map(|(t, o)| format!("{{\"otype\":\"{t}\",\"oid\":{o}}}"));
    let field = prop_oneof![
        3 => (field_name(), json_value()).prop_map(|(k, v)| format!("\"{k}\":{v}")),
        1 => subject.prop_map(|s| format!("\"subject\":{s}")),
        1 => (field_name(), -3i64..5).prop_map(|(k, v)| format!("\"{k}\":{v}")),
        1 => (field_name(), int_edge()).prop_map(|(k, v)| format!("\"{k}\":{v}")),
    ];
    (kind, prop::collection::vec(field, 0..7)).prop_map(|(k, fields)| {
        let mut all = vec![format!("\"kind\":\"{k}\"")];
        all.extend(fields);
        format!("{{{}}}", all.join(","))
    })
}

/// A valid record of each kind, as (field, JSON) pairs.
fn templates() -> Vec<Vec<(&'static str, &'static str)>> {
    let subject = r#"{"otype":"bi_report","oid":2}"#;
    vec![
        vec![
            ("kind", r#""header""#),
            ("format", r#""catalog-export""#),
            ("version", "1"),
        ],
        vec![
            ("kind", r#""bi_server""#),
            ("id", "1"),
            ("type", r#""looker""#),
            ("title", r#""t""#),
        ],
        vec![
            ("kind", r#""bi_folder""#),
            ("oid", "1"),
            ("server_id", "1"),
            ("external_id", r#""f""#),
            ("parent_folder", r#""g""#),
        ],
        vec![
            ("kind", r#""bi_report""#),
            ("oid", "2"),
            ("server_id", "1"),
            ("external_id", r#""look_1_2""#),
            ("deleted", "false"),
            ("last_updated", r#""2024-01-01T00:00:00Z""#),
            ("source_url", r#""https://h/looks/1""#),
        ],
        vec![
            ("kind", r#""bi_report_column""#),
            ("oid", "3"),
            ("server_id", "1"),
            ("external_id", r#""look_1_2.c""#),
            ("report", r#""look_1_2""#),
            ("deleted", "true"),
        ],
        vec![
            ("kind", r#""custom_field""#),
            ("id", "9"),
            ("field_type", r#""OBJECT_SET""#),
            ("allow_multiple", "true"),
        ],
        vec![
            ("kind", r#""field_value""#),
            ("field_id", "4"),
            ("subject", subject),
            ("value", r#""x""#),
            ("ts_updated", r#""2024-01-01T00:00:00Z""#),
        ],
        vec![
            ("kind", r#""trust_flag""#),
            ("id", "5"),
            ("flag_type", r#""WARNING""#),
            ("subject", subject),
            ("user_id", "7"),
            ("reason", r#""r""#),
        ],
        vec![
            ("kind", r#""tag""#),
            ("name", r#""t""#),
            ("subject", subject),
        ],
        vec![
            ("kind", r#""star""#),
            ("user_id", "7"),
            ("subject", subject),
            ("ts_created", r#""2024-01-01T00:00:00Z""#),
        ],
        vec![
            ("kind", r#""article""#),
            ("id", "6"),
            ("body", r#""<p>b</p>""#),
            ("title", r#""a""#),
        ],
        vec![
            ("kind", r#""conversation""#),
            ("id", "8"),
            ("subject", "null"),
            ("posts", r#"[{"id":1,"user_id":2,"text":"x"}]"#),
        ],
        vec![
            ("kind", r#""view_event""#),
            ("subject", subject),
            ("at", r#""x""#),
        ],
    ]
}

/// A valid record of some kind with up to three edits: a field's value replaced, a field
/// removed, a field given twice, or a field added. Most lines are one edit away from valid, so
/// every rule of SPEC §1 meets lines on both sides of it.
fn near_valid_line() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        2 => json_value(),
        2 => int_edge().prop_map(String::from),
        1 => (prop::sample::select(vec!["bi_report", "x", ""]), int_edge())
            .prop_map(|(t, o)| format!("{{\"otype\":\"{t}\",\"oid\":{o}}}")),
        1 => Just(r#"[{"id":1,"user_id":2,"text":"x","text":"y"}]"#.to_string()),
        1 => Just(r#"[{"id":1,"user_id":2}]"#.to_string()),
    ];
    let edit = (0u8..4, any::<prop::sample::Index>(), field_name(), value);
    (0..templates().len(), prop::collection::vec(edit, 0..4)).prop_map(|(t, edits)| {
        let mut fields: Vec<(String, String)> = templates()[t]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (op, at, name, v) in edits {
            let i = at.index(fields.len().max(1));
            match op {
                0 if !fields.is_empty() => fields[i].1 = v,
                1 if !fields.is_empty() => {
                    fields.remove(i);
                }
                2 if !fields.is_empty() => {
                    let k = fields[i].0.clone();
                    fields.push((k, v));
                }
                _ => fields.push((name.to_string(), v)),
            }
        }
        let f: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", f.join(","))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn probe_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_probe(&bytes)?;
    }

    #[test]
    fn probe_agrees_with_the_parser_on_record_like_lines(line in record_line()) {
        check_probe(line.as_bytes())?;
    }

    #[test]
    fn probe_agrees_with_the_spec_on_nearly_valid_records(line in near_valid_line()) {
        check_probe(line.as_bytes())?;
    }
}

// ---- the key resolver ----

/// The resolver's laws on one external_id and source_url.
fn check_keys(external_id: &str, url: &str) -> Result<(), TestCaseError> {
    let map = IdMap::default();
    let stable_prefix = |s: &str| {
        ["dashboard/", "look/", "lookml_dashboard/"]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
    };
    if let Some(s) = keys::from_legacy(external_id) {
        // A legacy id resolves to a stable id, which then stays as it is (idempotent).
        prop_assert!(
            keys::is_stable(&s),
            "{:?} -> {:?} is not stable",
            external_id,
            s
        );
        prop_assert_eq!(keys::from_legacy(&s), None);
        prop_assert_eq!(
            keys::resolve(&map, 1, &s, Some(url)),
            Some((s.clone(), Rule::Stable))
        );
    }
    if let Some(s) = keys::from_source_url(url) {
        prop_assert!(stable_prefix(&s), "{:?} -> {:?}", url, s);
        let id = s.split_once('/').unwrap().1;
        prop_assert!(!id.contains(['/', '?', '#']), "{:?} -> {:?}", url, s);
    }
    match keys::resolve(&map, 1, external_id, Some(url)) {
        None => {
            prop_assert!(!keys::is_stable(external_id));
            prop_assert_eq!(keys::from_legacy(external_id), None);
            prop_assert_eq!(keys::from_source_url(url), None);
        }
        Some((s, rule)) => {
            prop_assert!(stable_prefix(&s), "{:?} resolved to {:?}", external_id, s);
            match rule {
                Rule::Stable => prop_assert_eq!(&s, external_id),
                Rule::Legacy => prop_assert_eq!(Some(s), keys::from_legacy(external_id)),
                Rule::SourceUrl => prop_assert_eq!(Some(s), keys::from_source_url(url)),
                Rule::IdMap => prop_assert!(false, "an empty id-map gave {:?}", s),
            }
        }
    }
    Ok(())
}

#[test]
fn keys_corpus() {
    for (p, bytes) in corpus("keys") {
        let text = String::from_utf8(bytes).unwrap();
        for line in text.lines() {
            let (id, url) = line.split_once('\t').unwrap_or((line, ""));
            check_keys(id, url).unwrap_or_else(|e| panic!("{}: {line:?}: {e}", p.display()));
        }
    }
}

fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(dashboard|look|lookml_dashboard|Dashboard)[_/][a-z0-9_:\\n]{0,10}(_[0-9]{1,4})?",
        ("(dashboard|look)", 0u64..100_000, 0u64..2_000_000_000)
            .prop_map(|(p, d, t)| format!("{p}_{d}_{t}")),
    ]
}

fn url_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(https://h)?(/[a-z]{0,3})?/(dashboards|dashboards-next|looks|explore)/[a-z0-9:%\\n]{0,8}/?(\\?[a-z=&/]{0,6})?(#[a-z/]{0,6})?",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn keys_never_panic_and_resolve_to_stable_forms(id in id_like(), url in url_like()) {
        check_keys(&id, &url)?;
    }

    #[test]
    fn legacy_round_trip(kind in 0usize..3, middle in "[0-9]{1,9}", model in "[A-Za-z0-9_]{1,8}", name in "[A-Za-z0-9_]{1,8}", stamp in 0u64..u64::MAX) {
        let (legacy, stable) = match kind {
            0 => (format!("dashboard_{middle}_{stamp}"), format!("dashboard/{middle}")),
            1 => (format!("look_{middle}_{stamp}"), format!("look/{middle}")),
            _ => (
                format!("lookml_dashboard_{model}::{name}_{stamp}"),
                format!("lookml_dashboard/{model}::{name}"),
            ),
        };
        prop_assert_eq!(keys::from_legacy(&legacy), Some(stable.clone()));
        prop_assert!(keys::is_stable(&stable));
        prop_assert_eq!(keys::resolve(&IdMap::default(), 1, &legacy, None), Some((stable, Rule::Legacy)));
    }
}

// ---- the mention rewriter ----

/// Far from any oid a short text holds, so a rewritten value never meets one already there.
const SHIFT: i64 = 900_000_000_000_000_000;

/// The rewriter's laws on any text: mapping every mention away and back gives the text again
/// byte for byte (only the changed values differ; a zero-padded `data-oid` comes back without
/// its padding), and the same mentions are found after.
fn check_mentions(text: &str) -> Result<(), TestCaseError> {
    let found = mentions::find(text);
    let there = |_: &str, o: i64| Some(o.wrapping_add(SHIFT));
    let back = |_: &str, o: i64| Some(o.wrapping_sub(SHIFT));
    match mentions::rewrite(text, there) {
        None => prop_assert!(found.is_empty(), "mentions {:?} were not rewritten", found),
        Some(out) => {
            prop_assert_ne!(&out, text);
            let after = mentions::find(&out);
            prop_assert_eq!(after.len(), found.len());
            let again = mentions::rewrite(&out, back);
            let again = again.expect("the mentions map back");
            if again != text {
                // `data-oid=042` is oid 42 and comes back as `42`; nothing else may differ.
                let padded = regex::Regex::new(r#"(?i)data-oid\s*=\s*["']?-?0[0-9]"#).unwrap();
                prop_assert!(
                    padded.is_match(text),
                    "mapping back does not give the text: {:?}",
                    again
                );
            }
            // From the rewritten text on, away and back is exact, byte for byte.
            let back_again = mentions::rewrite(&again, there);
            prop_assert_eq!(back_again.as_deref(), Some(out.as_str()));
        }
    }
    prop_assert_eq!(mentions::rewrite(text, |_, _| None), None);
    Ok(())
}

#[test]
fn mentions_corpus() {
    for (p, bytes) in corpus("mentions") {
        let text = String::from_utf8(bytes).unwrap();
        check_mentions(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

fn html_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        2 => "[<>a/!\\-?'\" =&#;dtDAOIYPEhrefsciptyl0-9_\n]{0,12}",
        1 => (0i64..50, prop::sample::select(vec!["\"", "'", ""]), any::<bool>()).prop_map(|(o, q, up)| {
            let s = format!("<a href={q}/r/{o}/x/{o}{q} data-oid={q}{o}{q} data-otype={q}bi_report{q}>");
            if up { s.to_uppercase() } else { s }
        }),
        1 => prop::sample::select(vec![
            "<!--", "-->", "<script>", "</script>", "<STYLE>", "</style >", "<textarea>",
            "</TEXTAREA>", "<title>", "</title>", "&amp;", "&#x3C;a ", "<img alt=\"<a ", "\">",
            "<a ", "data-oid=", "data-otype=bi_report", "DATA-OID=7", "<![CDATA[", "]]>", "<?", "<!DOCTYPE html>",
        ]).prop_map(String::from),
        // What decides the tokenizer state beyond the tags above: foreign content, integration
        // points, breakout tags, script escapes, noscript, odd comment endings.
        1 => prop::sample::select(vec![
            "<svg>", "</svg>", "<math>", "</MATH>", "<mi>", "<desc>", "<foreignObject>",
            "<annotation-xml encoding=text/html>", "<noscript>", "</noscript>", "<plaintext>",
            "<p>", "</p>", "<font color=1>", "<g/>", "<style/>", "<!--<script>", "<!-->",
            "--!>", "<!--->", "<div>", "</div>",
        ]).prop_map(String::from),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mentions_change_only_the_mapped_values(text in html_like()) {
        check_mentions(&text)?;
    }
}
