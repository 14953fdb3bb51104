//! The mention scanner (SPEC §5) held to the html5lib-tests corpus (MIT; `../shared/html5lib-tests`,
//! or `LOOKMIG_HTML5LIB_TESTS`), the conformance suite browsers' parsers share.
//!
//! - **Tokenizer tests** (`tokenizer/*.test`): for every test and initial state, the start tags the
//!   scanner reads, as a bare tokenizer, must be the `StartTag` tokens the test expects, in order.
//! - **Tree-construction tests** (`tree-construction/*.dat`): these need a tree builder, so the
//!   expectation is taken from the expected tree where it can be stated plainly. A mention is
//!   inserted at the start of each text node whose text occurs exactly once in the input, and
//!   after plain characters inside it (up to 16 points a node); it must be rewritten exactly when
//!   the text is in the data state: not when the node's
//!   parent is an HTML raw-text, RCDATA, script or plaintext element, nor inside a CDATA section
//!   of foreign content. Text under `<svg title>`, `<math mi>` … is in the data state.
//! - Every input: no panic, nothing changes when nothing maps, and a mapped mention changes only
//!   its own attribute bytes.
//!
//! Deliberately not modelled, so not counted (see the README):
//! - `xmlViolation.test`: it is about coercing output to XML, not about HTML tokenizing (its
//!   tests live under another key and are not read); in `doubleEscaped` tests a lone surrogate,
//!   which a Rust string cannot hold, is read as U+FFFD;
//! - fragment tests (`#document-fragment`): rich text is read as a document body;
//! - `#script-off` tests: a browser showing rich text runs scripts, so `noscript` is raw text;
//! - `select`, `frameset` and other insertion modes that ignore a raw-text start tag: the scanner
//!   does not model insertion modes (no counted case of the corpus needs them). Every counted case
//!   must agree ([`MIN_AGREEMENT`]).

use lookmig::mentions::{self, TextState};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The agreement below which the test fails, per part: every counted case. What the scanner does
/// not model is left out by rule above, not tolerated by a margin, and a margin would hide real
/// regressions: with foreign content tracking removed the tree-construction part still agrees on
/// 5,981 of 5,986 probes (99.92%), and with noscript and the script escape states removed as well
/// on 5,955 (99.48%). A new corpus case that the scanner reads differently must be fixed or excluded by a
/// named rule.
const MIN_AGREEMENT: f64 = 1.0;

/// The mention inserted into tree-construction inputs, and what it must become.
const MENTION: &str = r#"<a data-otype="bi_report" data-oid="987654" href="/r/987654">"#;
const REWRITTEN: &str = r#"<a data-otype="bi_report" data-oid="7" href="/r/7">"#;

fn map(otype: &str, oid: i64) -> Option<i64> {
    (otype == "bi_report" && oid == 987_654).then_some(7)
}

/// The corpus, or a failure that names where it was looked for.
fn corpus() -> PathBuf {
    let dir = std::env::var_os("LOOKMIG_HTML5LIB_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/html5lib-tests")
        });
    assert!(
        dir.join("tokenizer").is_dir() && dir.join("tree-construction").is_dir(),
        "html5lib-tests corpus missing: expected tokenizer/ and tree-construction/ under {} \
         (set LOOKMIG_HTML5LIB_TESTS to its path)",
        dir.display()
    );
    dir
}

/// The files of `dir` with extension `ext`, sorted.
fn files(dir: PathBuf, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no .{ext} files in {}", dir.display());
    v
}

/// Agreement counts, per category, with the first few disagreements for the message.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, (usize, usize)>,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, category: &str, agreed: bool, detail: impl FnOnce() -> String) {
        let c = self.counts.entry(category.to_owned()).or_default();
        c.1 += 1;
        if agreed {
            c.0 += 1;
        } else {
            self.failures.push(detail());
        }
    }

    fn total(&self) -> (usize, usize) {
        self.counts
            .values()
            .fold((0, 0), |(a, t), (x, y)| (a + x, t + y))
    }

    /// Prints the summary and fails below the threshold.
    fn check(&self, part: &str) {
        let (agreed, total) = self.total();
        let mut s = format!("html5lib {part}: {agreed} / {total} agree\n");
        for (cat, (a, t)) in &self.counts {
            let _ = writeln!(s, "  {cat}: {a} / {t}");
        }
        for f in self.failures.iter().take(40) {
            let _ = writeln!(s, "  differs: {f}");
        }
        println!("{s}");
        assert!(total > 0, "{part}: nothing was checked");
        let rate = agreed as f64 / total as f64;
        assert!(
            rate >= MIN_AGREEMENT,
            "{part}: agreement {rate:.4} below {MIN_AGREEMENT}\n{s}"
        );
    }
}

/// Nothing maps: nothing changes. Every input goes through this (and must not panic).
fn unchanged_when_nothing_maps(input: &str, context: &str) {
    assert_eq!(
        mentions::rewrite(input, |_, _| None),
        None,
        "rewrite changed {context}"
    );
    let _ = mentions::find(input);
    let _ = mentions::start_tags(input);
}

/// Undoes the tokenizer tests' `doubleEscaped` extra escaping (`\uHHHH`); a lone surrogate,
/// which a Rust string cannot hold, becomes U+FFFD.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut units: Vec<u16> = Vec::new();
    let mut rest = s;
    loop {
        let esc = rest
            .strip_prefix("\\u")
            .and_then(|r| r.get(..4))
            .and_then(|h| u16::from_str_radix(h, 16).ok());
        if let Some(u) = esc {
            units.push(u);
            rest = &rest[6..];
            continue;
        }
        out.extend(char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or('\u{FFFD}')));
        let mut chars = rest.chars();
        match chars.next() {
            Some(c) => out.push(c),
            None => return out,
        }
        rest = chars.as_str();
    }
}

fn state_named(name: &str) -> TextState {
    match name {
        "Data state" => TextState::Data,
        "PLAINTEXT state" => TextState::Plaintext,
        "RCDATA state" => TextState::Rcdata,
        "RAWTEXT state" => TextState::Rawtext,
        "Script data state" => TextState::ScriptData,
        "CDATA section state" => TextState::CdataSection,
        other => panic!("unknown initial state {other:?}"),
    }
}

#[test]
fn html5lib_tokenizer_start_tags() {
    let dir = corpus().join("tokenizer");
    let mut tally = Tally::default();
    for path in files(dir, "test") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // xmlViolation.test keeps its tests under another key: it is about XML, not HTML.
        let Some(tests) = json.get("tests").and_then(Value::as_array) else {
            continue;
        };
        for t in tests {
            let double = t.get("doubleEscaped") == Some(&Value::Bool(true));
            let fix = |s: &str| if double { unescape(s) } else { s.to_owned() };
            let input = fix(t["input"].as_str().unwrap());
            let description = t["description"].as_str().unwrap_or("");
            unchanged_when_nothing_maps(&input, &format!("{file}: {description}"));
            let expected: Vec<String> = t["output"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|tok| tok[0] == "StartTag")
                .map(|tok| fix(tok[1].as_str().unwrap()))
                .collect();
            let states = match t.get("initialStates").and_then(Value::as_array) {
                Some(v) => v.iter().map(|s| s.as_str().unwrap()).collect(),
                None => vec!["Data state"],
            };
            let last = t.get("lastStartTag").and_then(Value::as_str);
            for st in states {
                let got: Vec<String> =
                    mentions::tokenizer_start_tags(&input, state_named(st), last)
                        .into_iter()
                        // The tokenizer writes U+FFFD for a NUL in a tag name.
                        .map(|(_, n)| n.replace('\0', "\u{FFFD}"))
                        .collect();
                tally.record(st, got == expected, || {
                    format!("{file}: {description} [{st}]: {input:?}: expected {expected:?}, read {got:?}")
                });
            }
        }
    }
    tally.check("tokenizer tests");
}

/// One tree-construction test.
struct DatTest {
    data: String,
    fragment: bool,
    script_off: bool,
    document: Vec<String>,
}

/// Splits a `.dat` file into its tests.
fn dat_tests(text: &str) -> Vec<DatTest> {
    let mut tests = Vec::new();
    let mut section = "";
    let mut cur: Option<DatTest> = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        if line == "#data" {
            if let Some(t) = cur.take() {
                tests.push(t);
            }
            cur = Some(DatTest {
                data: String::new(),
                fragment: false,
                script_off: false,
                document: Vec::new(),
            });
            data.clear();
            section = "#data";
            continue;
        }
        let Some(t) = cur.as_mut() else { continue };
        if line.starts_with('#') && section != "#document" || line == "#document" {
            if section == "#data" {
                t.data = data.join("\n");
            }
            section = match line {
                "#document-fragment" => {
                    t.fragment = true;
                    line
                }
                "#script-off" => {
                    t.script_off = true;
                    line
                }
                _ => line,
            };
            if line.starts_with('#') {
                continue;
            }
        }
        match section {
            "#data" => data.push(line),
            "#document" => t.document.push(line.to_owned()),
            _ => {}
        }
    }
    tests.extend(cur);
    tests
}

/// A text node of an expected tree: its text and its parent element line (`title`, `svg title`).
struct TextNode {
    text: String,
    parent: String,
}

/// An element of an expected tree: its line (`div`, `svg title`) and its parent's line.
struct ElementNode {
    line: String,
    parent: String,
}

/// The text nodes and elements of an expected `#document` tree. Lines that do not start with
/// `| ` continue the node above (text, comments and attribute values may span lines).
fn tree_nodes(document: &[String]) -> (Vec<TextNode>, Vec<ElementNode>) {
    let mut nodes = Vec::new();
    let mut elements = Vec::new();
    // Element names by depth, for the parent of a text node.
    let mut open: Vec<String> = Vec::new();
    let mut text: Option<(String, String)> = None;
    for line in document {
        let Some(body) = line.strip_prefix("| ") else {
            if let Some((t, _)) = text.as_mut() {
                t.push('\n');
                t.push_str(line);
            }
            continue;
        };
        if let Some((t, parent)) = text.take() {
            nodes.push(TextNode { text: t, parent });
        }
        let item = body.trim_start_matches(' ');
        let depth = (body.len() - item.len()) / 2;
        if let Some(q) = item.strip_prefix('"') {
            let parent = open.get(depth.wrapping_sub(1)).cloned().unwrap_or_default();
            text = Some((q.to_owned(), parent));
        } else if item.starts_with("<!") || item.starts_with("<?") {
            // A comment or a DOCTYPE.
        } else if let Some(name) = item.strip_prefix('<').and_then(|i| i.strip_suffix('>')) {
            elements.push(ElementNode {
                line: name.to_owned(),
                parent: open.get(depth.wrapping_sub(1)).cloned().unwrap_or_default(),
            });
            open.truncate(depth);
            open.push(name.to_owned());
        } else if item == "content" {
            // A template's contents: the template stays the parent.
            open.truncate(depth);
            let template = open.last().cloned().unwrap_or_default();
            open.push(template);
        }
    }
    if let Some((t, parent)) = text.take() {
        nodes.push(TextNode { text: t, parent });
    }
    // The text ran to its closing quote.
    let texts = nodes
        .into_iter()
        .filter_map(|mut n| {
            n.text.pop().filter(|&c| c == '"')?;
            Some(n)
        })
        .collect();
    (texts, elements)
}

/// Where `<name` (followed by whitespace, `/` or `>`) starts in `input`, ASCII case-insensitively,
/// if it occurs exactly once.
fn unique_start_tag(input: &str, name: &str) -> Option<usize> {
    let lower = input.to_ascii_lowercase();
    let needle = format!("<{name}");
    let mut found = lower.match_indices(&needle).map(|(i, _)| i).filter(|&i| {
        lower
            .as_bytes()
            .get(i + needle.len())
            .is_some_and(|&c| matches!(c, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ' | b'/' | b'>'))
    });
    match (found.next(), found.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

/// Inserts the mention at `p` and checks it is rewritten (and nothing else changes) exactly when
/// `expect_tag`.
fn probe(tally: &mut Tally, category: &str, file: &str, data: &str, p: usize, expect_tag: bool) {
    let input = format!("{}{MENTION}{}", &data[..p], &data[p..]);
    let want = format!("{}{REWRITTEN}{}", &data[..p], &data[p..]);
    let got = mentions::rewrite(&input, map);
    let agreed = if expect_tag {
        got.as_deref() == Some(want.as_str())
    } else {
        got.is_none()
    };
    tally.record(category, agreed, || {
        format!(
            "{file}: {input:?}: expected {}",
            if expect_tag { "a mention" } else { "text" }
        )
    });
}

/// HTML elements whose text the tokenizer reads in a state other than data (scripting on).
const TEXT_PARENTS: [&str; 10] = [
    "script",
    "style",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "noscript",
    "textarea",
    "title",
    "plaintext",
];

/// Whether offset `at` of `input` lies inside a `<![CDATA[` … `]]>` section, going by the text.
fn inside_cdata(input: &str, at: usize) -> bool {
    let before = &input[..at];
    match (before.rfind("<![CDATA["), before.rfind("]]>")) {
        (Some(open), Some(close)) => open > close,
        (Some(_), None) => true,
        _ => false,
    }
}

#[test]
fn html5lib_tree_construction_mentions() {
    let dir = corpus().join("tree-construction");
    let mut tally = Tally::default();
    let mut skipped = BTreeMap::<&str, usize>::new();
    for path in files(dir, "dat") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for t in dat_tests(&text) {
            unchanged_when_nothing_maps(&t.data, &format!("{file}: {:?}", t.data));
            if t.fragment {
                *skipped.entry("fragment").or_default() += 1;
                continue;
            }
            if t.script_off {
                *skipped.entry("script-off").or_default() += 1;
                continue;
            }
            let (texts, elements) = tree_nodes(&t.document);
            for node in texts {
                let s = node.text.as_str();
                let mut found = t.data.match_indices(s);
                let (Some((at, _)), None) = (found.next(), found.next()) else {
                    continue;
                };
                let raw_parent = TEXT_PARENTS.contains(&node.parent.as_str());
                let category = if raw_parent {
                    format!("text of <{}>", node.parent)
                } else if node.parent.contains(' ') {
                    "text in svg/math".to_owned()
                } else {
                    "text in html".to_owned()
                };
                // At the start, and after plain characters (up to 16 points per node): after
                // `<`, `</`, `<!`, `&` … the mention would be read as part of that markup.
                let after_plain: Vec<usize> = s
                    .char_indices()
                    .filter(|&(_, c)| c.is_alphanumeric() || c == ' ')
                    .map(|(i, c)| at + i + c.len_utf8())
                    .collect();
                let step = after_plain.len().div_ceil(16).max(1);
                let mut points = vec![at];
                points.extend(after_plain.into_iter().rev().step_by(step));
                for p in points {
                    let expect_tag = !raw_parent && !inside_cdata(&t.data, p);
                    probe(&mut tally, &category, &file, &t.data, p, expect_tag);
                }
            }
            // Every element came from a start tag read in the data state, so a mention right
            // before that tag is one too. Elements the tree builder may create without a start
            // tag of their own are left out.
            for el in elements {
                let name = el.line.rsplit(' ').next().unwrap().to_ascii_lowercase();
                if ["html", "head", "body", "p", "br", "tbody", "tr", "colgroup"]
                    .contains(&name.as_str())
                {
                    continue;
                }
                let Some(at) = unique_start_tag(&t.data, &name) else {
                    continue;
                };
                let category = if el.line.contains(' ') || el.parent.contains(' ') {
                    "start tag in or under svg/math"
                } else {
                    "start tag in html"
                };
                probe(&mut tally, category, &file, &t.data, at, true);
            }
        }
    }
    println!("html5lib tree construction: not modelled, skipped: {skipped:?}");
    tally.check("tree-construction tests");
}

#[test]
fn html5lib_unescape() {
    assert_eq!(unescape("a\\u0041\\uD83D\\uDE00\\uDFFFb"), "aA😀\u{FFFD}b");
}
