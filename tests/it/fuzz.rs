//! Fuzzing on the stable toolchain (issue 5): property tests over arbitrary input for the line
//! reader, the probe (record validation), the key resolver and the mention rewriter. Each target
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

/// Reads `file` with the limit `max`: the lines, then the error message if reading failed.
fn read_all(file: &std::path::Path, max: usize) -> (Vec<(u64, Vec<u8>)>, Option<String>) {
    let mut input = Input::new(file.to_str().unwrap()).unwrap();
    input.max_line = max;
    let mut lines = match input.lines() {
        Ok(l) => l,
        Err(e) => return (vec![], Some(format!("{e:#}"))),
    };
    let mut out = vec![];
    loop {
        match lines.next_line() {
            Ok(Some(l)) => out.push((l.no, l.bytes)),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(format!("{e:#}"))),
        }
    }
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
        let (lines, _) = read_all(temp_with(bytes).path(), max);
        prop_assert!(lines.windows(2).all(|w| w[0].0 < w[1].0));
        return Ok(());
    } else {
        temp_with(bytes)
    };
    let zst = temp_with(&zstd::encode_all(bytes, 1).unwrap());
    let (want, refused_at) = expected_lines(bytes, max);
    for f in [&plain, &zst] {
        let (got, err) = read_all(f.path(), max);
        prop_assert_eq!(&got, &want);
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
        let (_, err) = read_all(cut.path(), max);
        prop_assert!(err.is_some(), "a truncated zstd stream read without error");
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

/// The probe never panics; what it accepts the full parser accepts, with the same key.
fn check_probe(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Probe::parse(bytes) {
        Ok(p) => {
            let key = p.key();
            let r = parse_line(bytes);
            prop_assert!(
                r.is_ok(),
                "the probe accepted what parse_line refuses: {:?}",
                r.err()
            );
            prop_assert_eq!(key, r.unwrap().key());
        }
        Err(e) => {
            prop_assert!(!e.is_empty());
            prop_assert!(parse_line(bytes).is_err());
        }
    }
    Ok(())
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
    ];
    (kind, prop::collection::vec(field, 0..7)).prop_map(|(k, fields)| {
        let mut all = vec![format!("\"kind\":\"{k}\"")];
        all.extend(fields);
        format!("{{{}}}", all.join(","))
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
