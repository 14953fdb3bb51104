//! Mentions of catalog objects inside rich text, and their repair (SPEC §5).
//!
//! Rich text (RICH_TEXT values, article bodies, conversation posts, trust-flag reasons) links to
//! other catalog objects with `<a data-otype="bi_report" data-oid="42" href="/bi/v2/report/42/">`
//! start tags. When the connector's report-ID change retires a report version, those links must
//! point at the survivor instead. This module finds such mentions and rewrites them in place.
//!
//! The text is never parsed into a tree and re-serialised: a small scanner that follows the
//! HTML tokenizer's rules for comments, tags, attribute quoting and raw-text elements locates the
//! `<a …>` start tags, and only the bytes of the `data-oid` value and of the old oid's path
//! segments in the `href` value are replaced. Every other byte is copied as it was.
//!
//! Decisions, where HTML leaves room:
//! - Attribute values are compared as raw text; character references are not decoded. A
//!   `data-otype` of `bi&#95;report` therefore does not match `bi_report`, and a `data-oid` of
//!   `&#52;2` is not an integer, so that tag is not a mention.
//! - `data-oid` must be exactly an optional `-` and ASCII digits that fit an `i64`; no
//!   whitespace, no `+`. The new value is written in canonical decimal, keeping the original
//!   quotes (or their absence).
//! - As in HTML, when an attribute is repeated the first occurrence counts; later ones are left
//!   alone.
//! - Text inside comments, bogus comments (`<!…>`, `<?…>`), raw-text and RCDATA elements
//!   (`script`, `style`, `textarea`, `title`, `xmp`, `iframe`, `noembed`, `noframes`, and
//!   everything after `plaintext`) and other tags' attribute values holds no mentions.
//! - A tag left unterminated at the end of the text is dropped by HTML, so it holds no mention
//!   and is left unchanged.
//! - In `href`, only the path is considered: the query (`?…`) and fragment (`#…`) are untouched,
//!   and so are a scheme (`https:`) and an authority (`//host:42`). A path segment is replaced
//!   when it equals the old oid's canonical decimal text.

use memchr::{memchr, memchr2, memchr_iter, memmem};

/// A mention found in rich text: the otype and oid of an `<a data-otype data-oid>` start tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// The raw (not entity-decoded) value of the `data-otype` attribute.
    pub otype: String,
    /// The value of the `data-oid` attribute.
    pub oid: i64,
}

/// Rewrites the mentions whose (otype, oid) `lookup` maps to a new oid. Returns None when nothing changed
/// (so the caller can keep the original bytes), else the new text.
///
/// In a rewritten mention the digits of `data-oid` become the new oid, and every path segment of
/// `href` equal to the old oid becomes the new oid; all other bytes are kept.
pub fn rewrite(text: &str, lookup: impl Fn(&str, i64) -> Option<i64>) -> Option<String> {
    if !may_contain_mention(text.as_bytes()) {
        return None;
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    scan(text, |a| {
        let Some(new) = lookup(a.otype, a.oid) else {
            return;
        };
        if new == a.oid {
            return;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
        let old_s = a.oid.to_string();
        let new_s = new.to_string();
        let mut replace = |(s, e): Span| {
            out.push_str(&text[copied..s]);
            out.push_str(&new_s);
            copied = e;
        };
        let href_edits = |replace: &mut dyn FnMut(Span)| {
            if let Some((hs, he)) = a.href {
                for (s, e) in href_path_segments(&text.as_bytes()[hs..he]) {
                    if &text[hs + s..hs + e] == old_s.as_str() {
                        replace((hs + s, hs + e));
                    }
                }
            }
        };
        match a.href {
            Some((hs, _)) if hs < a.oid_span.0 => {
                href_edits(&mut replace);
                replace(a.oid_span);
            }
            _ => {
                replace(a.oid_span);
                href_edits(&mut replace);
            }
        }
    });
    out.map(|mut o| {
        o.push_str(&text[copied..]);
        o
    })
}

/// Every mention in the text, in order (used for counting and verification).
pub fn find(text: &str) -> Vec<Mention> {
    let mut found = Vec::new();
    if may_contain_mention(text.as_bytes()) {
        scan(text, |a| {
            found.push(Mention {
                otype: a.otype.to_owned(),
                oid: a.oid,
            })
        });
    }
    found
}

/// A byte range `(start, end)`.
type Span = (usize, usize);

/// A mention located by [`scan`].
struct Anchor<'a> {
    otype: &'a str,
    oid: i64,
    /// The `data-oid` value's bytes, inside any quotes.
    oid_span: Span,
    /// The `href` value's bytes, inside any quotes.
    href: Option<Span>,
}

/// Elements whose content is text up to their end tag (raw text and RCDATA in HTML).
const TEXT_ELEMENTS: [&[u8]; 8] = [
    b"script",
    b"style",
    b"textarea",
    b"title",
    b"xmp",
    b"iframe",
    b"noembed",
    b"noframes",
];

/// Cheap prefilter: a mention needs a `<` and a `data-oid` (in any case).
fn may_contain_mention(b: &[u8]) -> bool {
    memchr(b'<', b).is_some() && contains_data_oid(b)
}

/// Whether `data-oid` occurs, ASCII case-insensitively. Anchors on the hyphen, which is rarer
/// than letters.
fn contains_data_oid(b: &[u8]) -> bool {
    memchr_iter(b'-', b)
        .any(|i| i >= 4 && i + 4 <= b.len() && b[i - 4..i + 4].eq_ignore_ascii_case(b"data-oid"))
}

/// HTML's ASCII whitespace.
fn is_ws(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | 0x0C | b'\r' | b' ')
}

/// Walks the text the way the HTML tokenizer does and calls `on_mention` for every `<a>` start
/// tag with an integer `data-oid` and a `data-otype`.
fn scan<'a>(text: &'a str, mut on_mention: impl FnMut(Anchor<'a>)) {
    let b = text.as_bytes();
    let mut pos = 0;
    while let Some(off) = memchr(b'<', &b[pos..]) {
        let lt = pos + off;
        let next = match b.get(lt + 1) {
            Some(c) if c.is_ascii_alphabetic() => start_tag(text, lt, &mut on_mention),
            Some(b'/') => match b.get(lt + 2) {
                Some(c) if c.is_ascii_alphabetic() => {
                    // An end tag; its "attributes" still follow the quoting rules.
                    parse_attrs(b, tag_name_end(b, lt + 2), |_, _, _| {})
                }
                Some(b'>') => Some(lt + 3),
                Some(_) => skip_past_gt(b, lt + 2),
                None => None,
            },
            Some(b'!') if b[lt + 2..].starts_with(b"--") => comment_end(b, lt),
            Some(b'!' | b'?') => skip_past_gt(b, lt + 2),
            _ => Some(lt + 1),
        };
        match next {
            Some(p) => pos = p,
            None => return,
        }
    }
}

/// Index just past the next `>` at or after `from` (end of a bogus comment).
fn skip_past_gt(b: &[u8], from: usize) -> Option<usize> {
    memchr(b'>', &b[from..]).map(|i| from + i + 1)
}

/// End of the comment starting with `<!--` at `lt`: past `-->` or `--!>`, accepting the abrupt
/// `<!-->` and `<!--->` as HTML does (but not `<!--!>` or `<!---!>`).
fn comment_end(b: &[u8], lt: usize) -> Option<usize> {
    let body = lt + 2;
    let mut from = body + 2;
    while let Some(off) = memchr(b'>', &b[from..]) {
        let gt = from + off;
        if (gt >= body + 2 && &b[gt - 2..gt] == b"--")
            || (gt >= body + 5 && &b[gt - 3..gt] == b"--!")
        {
            return Some(gt + 1);
        }
        from = gt + 1;
    }
    None
}

/// End of the tag name starting at `start`.
fn tag_name_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() && !is_ws(b[i]) && b[i] != b'/' && b[i] != b'>' {
        i += 1;
    }
    i
}

/// Handles the start tag at `lt`; returns where scanning resumes, or None when the rest of the
/// text holds no tags (unterminated tag, or text element without its end tag).
fn start_tag<'a>(
    text: &'a str,
    lt: usize,
    on_mention: &mut impl FnMut(Anchor<'a>),
) -> Option<usize> {
    let b = text.as_bytes();
    let name_end = tag_name_end(b, lt + 1);
    let name = &b[lt + 1..name_end];
    if name.eq_ignore_ascii_case(b"a") {
        // First occurrence of each attribute wins; `Some(None)` is a value-less attribute.
        let mut oid: Option<Option<Span>> = None;
        let mut otype: Option<Option<Span>> = None;
        let mut href: Option<Option<Span>> = None;
        let end = parse_attrs(b, name_end, |ns, ne, v| {
            let n = &b[ns..ne];
            let slot = if n.eq_ignore_ascii_case(b"data-oid") {
                &mut oid
            } else if n.eq_ignore_ascii_case(b"data-otype") {
                &mut otype
            } else if n.eq_ignore_ascii_case(b"href") {
                &mut href
            } else {
                return;
            };
            if slot.is_none() {
                *slot = Some(v);
            }
        })?;
        if let (Some(Some(oid_span)), Some(otype)) = (oid, otype) {
            if let Some(oid) = parse_oid(&text[oid_span.0..oid_span.1]) {
                let otype = otype.map_or("", |(s, e)| &text[s..e]);
                on_mention(Anchor {
                    otype,
                    oid,
                    oid_span,
                    href: href.flatten(),
                });
            }
        }
        return Some(end);
    }
    let end = parse_attrs(b, name_end, |_, _, _| {})?;
    if name.eq_ignore_ascii_case(b"plaintext") {
        return None;
    }
    if TEXT_ELEMENTS.iter().any(|t| name.eq_ignore_ascii_case(t)) {
        return text_element_end(b, end, name);
    }
    Some(end)
}

/// Position of the end tag `</name` (followed by whitespace, `/` or `>`) at or after `from`.
fn text_element_end(b: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    memmem::find_iter(&b[from..], b"</")
        .map(|i| from + i)
        .find(|&p| {
            let ns = p + 2;
            let ne = ns + name.len();
            ne < b.len()
                && b[ns..ne].eq_ignore_ascii_case(name)
                && (is_ws(b[ne]) || b[ne] == b'/' || b[ne] == b'>')
        })
}

/// Parses a tag's attributes from `i` (just after the tag name) to its closing `>`, calling
/// `on_attr(name_start, name_end, value)` for each (value inside quotes; None when absent).
/// Returns the index just past `>`, or None when the text ends inside the tag.
fn parse_attrs(
    b: &[u8],
    mut i: usize,
    mut on_attr: impl FnMut(usize, usize, Option<Span>),
) -> Option<usize> {
    loop {
        // Before attribute name (a stray `/` is skipped, as in the self-closing state).
        while i < b.len() && (is_ws(b[i]) || b[i] == b'/') {
            i += 1;
        }
        if *b.get(i)? == b'>' {
            return Some(i + 1);
        }
        // Attribute name; its first character may be `=`.
        let ns = i;
        i += 1;
        while i < b.len() && !is_ws(b[i]) && !matches!(b[i], b'/' | b'>' | b'=') {
            i += 1;
        }
        let ne = i;
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if *b.get(i)? != b'=' {
            on_attr(ns, ne, None);
            continue;
        }
        i += 1;
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        match *b.get(i)? {
            q @ (b'"' | b'\'') => {
                let vs = i + 1;
                let ve = vs + memchr(q, &b[vs..])?;
                on_attr(ns, ne, Some((vs, ve)));
                i = ve + 1;
            }
            b'>' => {
                on_attr(ns, ne, Some((i, i)));
                return Some(i + 1);
            }
            _ => {
                let vs = i;
                while i < b.len() && !is_ws(b[i]) && b[i] != b'>' {
                    i += 1;
                }
                on_attr(ns, ne, Some((vs, i)));
            }
        }
    }
}

/// An oid is exactly an optional `-` and ASCII digits that fit an `i64`.
fn parse_oid(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The path segments of an `href` value, as spans relative to it: the part before `?` or `#`,
/// after any scheme (`https:`) and authority (`//host:port`), split at `/`.
fn href_path_segments(v: &[u8]) -> impl Iterator<Item = Span> + '_ {
    let mut end = memchr2(b'?', b'#', v).unwrap_or(v.len());
    while end > 0 && is_ws(v[end - 1]) {
        end -= 1;
    }
    let mut start = 0;
    while start < end && is_ws(v[start]) {
        start += 1;
    }
    if start < end && v[start].is_ascii_alphabetic() {
        let mut j = start + 1;
        while j < end && (v[j].is_ascii_alphanumeric() || matches!(v[j], b'+' | b'-' | b'.')) {
            j += 1;
        }
        if j < end && v[j] == b':' {
            start = j + 1;
        }
    }
    if v[start..end].starts_with(b"//") {
        start = memchr(b'/', &v[start + 2..end]).map_or(end, |i| start + 2 + i);
    }
    let mut seg_start = start;
    memchr_iter(b'/', &v[start..end])
        .map(move |i| start + i)
        .chain(std::iter::once(end))
        .map(move |slash| {
            let seg = (seg_start, slash);
            seg_start = slash + 1;
            seg
        })
        .filter(|&(s, e)| s < e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map42(otype: &str, oid: i64) -> Option<i64> {
        (otype == "bi_report" && oid == 42).then_some(7)
    }

    fn m(otype: &str, oid: i64) -> Mention {
        Mention {
            otype: otype.to_owned(),
            oid,
        }
    }

    /// Asserts that `input` is left unchanged and holds no mentions.
    fn untouched(input: &str) {
        assert_eq!(rewrite(input, map42), None, "{input:?}");
        assert_eq!(find(input), vec![], "{input:?}");
    }

    #[test]
    fn rewrites_double_quoted_mention_and_href() {
        let s =
            r#"<p>See <a data-otype="bi_report" data-oid="42" href="/bi/v2/report/42/">R</a>.</p>"#;
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some(
                r#"<p>See <a data-otype="bi_report" data-oid="7" href="/bi/v2/report/7/">R</a>.</p>"#
            )
        );
        assert_eq!(find(s), vec![m("bi_report", 42)]);
    }

    #[test]
    fn keeps_quoting_style() {
        let s = "<a data-oid='42' data-otype='bi_report' href='/r/42'>x</a>";
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some("<a data-oid='7' data-otype='bi_report' href='/r/7'>x</a>")
        );
        let s = "<a data-oid=42 data-otype=bi_report href=/r/42>x</a>";
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some("<a data-oid=7 data-otype=bi_report href=/r/7>x</a>")
        );
    }

    #[test]
    fn any_attribute_order() {
        let s = r#"<a href="/r/42" data-oid="42" class="m" data-otype="bi_report">"#;
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some(r#"<a href="/r/7" data-oid="7" class="m" data-otype="bi_report">"#)
        );
        let s = r#"<a data-otype="bi_report" href="/r/42" data-oid="42">"#;
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some(r#"<a data-otype="bi_report" href="/r/7" data-oid="7">"#)
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        let s = r#"<A DATA-OID="42" Data-Otype="bi_report" HREF="/r/42">x</A>"#;
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some(r#"<A DATA-OID="7" Data-Otype="bi_report" HREF="/r/7">x</A>"#)
        );
        assert_eq!(find(s), vec![m("bi_report", 42)]);
    }

    #[test]
    fn whitespace_around_equals() {
        let s = "<a\n\tdata-oid =\n'42'\r\ndata-otype\t= bi_report\nhref = \"/r/42\"\n>";
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some("<a\n\tdata-oid =\n'7'\r\ndata-otype\t= bi_report\nhref = \"/r/7\"\n>")
        );
    }

    #[test]
    fn oid_must_be_exact_integer() {
        for v in [
            "\" 42\"",
            "\"42 \"",
            "\"+42\"",
            "\"42abc\"",
            "\"0x2a\"",
            "\"&#52;2\"",
            "\"4 2\"",
            "\"\"",
            "\"-\"",
            "\"99999999999999999999\"",
            "\"42.0\"",
        ] {
            untouched(&format!("<a data-oid={v} data-otype=bi_report href=/r/42>"));
        }
        untouched("<a data-oid data-otype=bi_report>");
        assert_eq!(find("<a data-oid=-3 data-otype=x>"), vec![m("x", -3)]);
        assert_eq!(find("<a data-oid=042 data-otype=x>"), vec![m("x", 42)]);
    }

    #[test]
    fn both_attributes_required() {
        untouched("<a data-oid=42 href=/r/42>x</a>");
        untouched("<a data-otype=bi_report href=/r/42>x</a>");
        // A value-less data-otype is an empty otype.
        assert_eq!(find("<a data-oid=42 data-otype>"), vec![m("", 42)]);
    }

    #[test]
    fn href_segments() {
        let cases = [
            ("/bi/v2/report/42/", "/bi/v2/report/7/"),
            ("/r/142/42abc/42", "/r/142/42abc/7"),
            (
                "https://host/report/42?x=42#42",
                "https://host/report/7?x=42#42",
            ),
            ("http://h:42/x/42", "http://h:42/x/7"),
            ("//42/x/42", "//42/x/7"),
            ("42", "7"),
            ("42/42", "7/7"),
            ("/r/42#/42", "/r/7#/42"),
            ("/r/ 42 ", "/r/ 42 "),
            ("mailto:42", "mailto:7"),
            ("", ""),
            ("/r/43", "/r/43"),
        ];
        for (href, want) in cases {
            let s = format!("<a data-oid=42 data-otype=bi_report href=\"{href}\">");
            let want = format!("<a data-oid=7 data-otype=bi_report href=\"{want}\">");
            assert_eq!(rewrite(&s, map42).unwrap(), want, "{href:?}");
        }
    }

    #[test]
    fn not_mentions_in_comments_scripts_styles_and_attribute_values() {
        untouched("<!-- <a data-oid=42 data-otype=bi_report> -->");
        untouched("<!--!> <a data-oid=42 data-otype=bi_report> -->");
        untouched("<!---!> <a data-oid=42 data-otype=bi_report> -->");
        untouched("<script>var s = '<a data-oid=42 data-otype=bi_report>';</script>");
        untouched("<SCRIPT type=x>'<a data-oid=42 data-otype=bi_report>'</ScRiPt >");
        untouched("<style>/* <a data-oid=42 data-otype=bi_report> */</STYLE>");
        untouched("<textarea><a data-oid=42 data-otype=bi_report></textarea>");
        untouched(r#"<img alt="<a data-oid=42 data-otype=bi_report>">"#);
        untouched("<img alt='<a data-oid=42 data-otype=bi_report>'>");
        untouched("<abbr data-oid=42 data-otype=bi_report>x</abbr>");
        untouched("<area data-oid=42 data-otype=bi_report>");
        untouched("</a data-oid=42 data-otype=bi_report>");
        untouched("<!DOCTYPE <a data-oid=42 data-otype=bi_report>");
        untouched("<? <a data-oid=42 data-otype=bi_report>");
        untouched("</ <a data-oid=42 data-otype=bi_report>");
        untouched("<plaintext><a data-oid=42 data-otype=bi_report>");
    }

    #[test]
    fn mentions_after_comments_and_raw_text_are_found() {
        let s = "<!--> <a data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        let s = "<!---> <a data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        let s = "<!-- x --!><a data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        let s = "<!-- a -- b --> <a data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        let s = "<script></scripts></script><a data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        let s = "<scripts><a data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        let s = "< a <3 a>b <a data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
    }

    #[test]
    fn gt_inside_quoted_value_does_not_end_tag() {
        let s = r#"<a title="x>y" data-oid="42" data-otype="bi_report">"#;
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some(r#"<a title="x>y" data-oid="7" data-otype="bi_report">"#)
        );
        let s = "<a title='\"<a>' data-oid=42 data-otype=bi_report>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
    }

    #[test]
    fn unterminated_at_end() {
        for s in [
            "<a data-oid=42 data-otype=bi_report",
            "<a data-oid=42 data-otype=bi_report ",
            "<a data-oid=\"42\" data-otype=\"bi_report",
            "<a data-oid='42",
            "<a data-oid=",
            "<a data-oid",
            "x <a",
            "x <",
            "<!-- <a data-oid=42 data-otype=bi_report>",
            "<!-- <a data-oid=42 data-otype=bi_report> --",
            "<script><a data-oid=42 data-otype=bi_report></script",
            "<!DOCTYPE data-oid",
            "</a data-oid='",
        ] {
            untouched(s);
        }
        let s = "<a data-oid=42 data-otype=bi_report>x<a data-oid=42";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some("<a data-oid=7 data-otype=bi_report>x<a data-oid=42")
        );
    }

    #[test]
    fn duplicate_attributes_first_wins() {
        let s = "<a data-oid=42 data-oid=43 data-otype=bi_report data-otype=x href=/42 href=/42>";
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some("<a data-oid=7 data-oid=43 data-otype=bi_report data-otype=x href=/7 href=/42>")
        );
        untouched("<a data-oid=x data-oid=42 data-otype=bi_report>");
    }

    #[test]
    fn otype_compared_raw() {
        let s = "<a data-oid=42 data-otype='bi&#95;report'>";
        assert_eq!(find(s), vec![m("bi&#95;report", 42)]);
        assert_eq!(rewrite(s, map42), None);
        assert_eq!(rewrite("<a data-oid=42 data-otype=BI_REPORT>", map42), None);
    }

    #[test]
    fn nothing_changed_returns_none() {
        assert_eq!(rewrite("plain text data-oid=42", map42), None);
        assert_eq!(rewrite("<b>no mentions</b>", map42), None);
        let s = "<a data-oid=42 data-otype=bi_report>";
        assert_eq!(rewrite(s, |_, _| None), None);
        assert_eq!(rewrite(s, |_, o| Some(o)), None);
        assert_eq!(find("no tags"), vec![]);
    }

    #[test]
    fn several_mentions_in_order() {
        let s = "é <a data-oid=42 data-otype=bi_report href=/r/42>ü</a> \
                 <a data-oid=5 data-otype=bi_report_column href=/c/5>x</a> \
                 <a data-oid=42 data-otype=article href=/a/42>y</a> \
                 <a data-otype=bi_report data-oid=42>z</a> 日本";
        assert_eq!(
            find(s),
            vec![
                m("bi_report", 42),
                m("bi_report_column", 5),
                m("article", 42),
                m("bi_report", 42)
            ]
        );
        let map = |t: &str, o: i64| match (t, o) {
            ("bi_report", 42) => Some(1_000_000_000_007),
            ("bi_report_column", 5) => Some(-6),
            _ => None,
        };
        assert_eq!(
            rewrite(s, map).unwrap(),
            "é <a data-oid=1000000000007 data-otype=bi_report href=/r/1000000000007>ü</a> \
             <a data-oid=-6 data-otype=bi_report_column href=/c/-6>x</a> \
             <a data-oid=42 data-otype=article href=/a/42>y</a> \
             <a data-otype=bi_report data-oid=1000000000007>z</a> 日本"
        );
    }

    #[test]
    fn slashes_between_attributes() {
        let s = r#"<a/data-oid="42"/data-otype="bi_report"/>"#;
        assert_eq!(
            rewrite(s, map42).as_deref(),
            Some(r#"<a/data-oid="7"/data-otype="bi_report"/>"#)
        );
        // Attributes may follow a quoted value without whitespace.
        let s = r#"<a data-oid="42"data-otype="bi_report">"#;
        assert_eq!(find(s), vec![m("bi_report", 42)]);
        // An unquoted value runs up to whitespace or `>`.
        untouched("<a data-oid=42/data-otype=bi_report>");
    }

    #[test]
    fn prefilter() {
        assert!(contains_data_oid(b"xx DaTa-OiD"));
        assert!(contains_data_oid(b"data-oid"));
        assert!(!contains_data_oid(b"data_oid data-oi -oid"));
        assert!(!may_contain_mention(b"data-oid=1 data-otype=x"));
    }

    // ---- property tests ----

    /// One piece of generated rich text: the input bytes, the expected output bytes, and the
    /// mentions expected in each.
    #[derive(Debug, Clone)]
    struct Piece {
        input: String,
        output: String,
        found_in: Vec<Mention>,
        found_out: Vec<Mention>,
    }

    const OTYPES: [&str; 5] = [
        "bi_report",
        "bi_report_column",
        "BI_REPORT",
        "article",
        "bi&#95;report",
    ];

    /// The map used by the property tests: old oids in 1..40 for the two Looker otypes, sent
    /// to 1000 + oid (never itself mapped).
    fn prop_map(otype: &str, oid: i64) -> Option<i64> {
        match otype {
            "bi_report" if oid % 2 == 0 && (1..40).contains(&oid) => Some(1000 + oid),
            "bi_report_column" if oid % 3 == 0 && (1..40).contains(&oid) => Some(2000 + oid),
            _ => None,
        }
    }

    fn case(s: &str, upper: bool) -> String {
        if upper {
            s.to_ascii_uppercase()
        } else {
            s.to_owned()
        }
    }

    /// Filler that leaves the tokenizer in the data state.
    fn filler() -> impl Strategy<Value = String> {
        let text = prop::collection::vec(
            prop_oneof![
                Just("x"),
                Just(" "),
                Just("\n"),
                Just(">"),
                Just("\""),
                Just("'"),
                Just("="),
                Just("/"),
                Just("-"),
                Just("&amp;"),
                Just("42"),
                Just("data-oid"),
                Just("DATA-OID=4"),
                Just("< "),
                Just("<3"),
                Just("é"),
                Just("</>"),
            ],
            0..8,
        )
        .prop_map(|v| v.concat());
        let body = "[a-z0-9 =\"'>/<.&;é]{0,12}";
        let decoy = (1i64..40, 0usize..OTYPES.len(), any::<bool>());
        prop_oneof![
            3 => text,
            1 => (body, decoy.clone()).prop_map(|(b, (o, t, u))| {
                let b = b.replace("--", "");
                let d = case(&format!("<a data-oid={o} data-otype={}>", OTYPES[t]), u);
                format!("<!-- {b}{d}{b} -->")
            }),
            1 => (body, decoy.clone(), 0usize..3, any::<bool>()).prop_map(|(b, (o, t, u), el, ue)| {
                let b = b.replace('<', "");
                let el = ["script", "style", "textarea"][el];
                let d = case(&format!("<a data-oid='{o}' data-otype='{}'>", OTYPES[t]), u);
                format!("<{el}>{b}{d}{b}</{}>", case(el, ue))
            }),
            1 => (decoy.clone(), 0usize..5).prop_map(|((o, t, u), k)| {
                let d = format!("<a data-oid={o} data-otype={}>", OTYPES[t]);
                let s = match k {
                    0 => format!("<img alt=\"{d}\">"),
                    1 => format!("<abbr data-oid={o} data-otype={}>", OTYPES[t]),
                    2 => format!("<area data-oid=\"{o}\" data-otype=\"{}\">", OTYPES[t]),
                    3 => format!("</a data-oid={o} data-otype={}>", OTYPES[t]),
                    _ => format!("<a data-oid=\" {o}\" data-otype={} href=/r/{o}>", OTYPES[t]),
                };
                case(&s, u)
            }),
            1 => Just("<p class=\"a>b\">".to_owned()),
            1 => Just("<br/>".to_owned()),
            1 => Just("<!DOCTYPE html>".to_owned()),
        ]
    }

    /// Wraps a value in the given quote style (0 double, 1 single, 2 none).
    fn quoted(v: &str, q: u8) -> String {
        match q {
            0 => format!("\"{v}\""),
            1 => format!("'{v}'"),
            _ => v.to_owned(),
        }
    }

    /// A mention, with its expected rewrite.
    fn mention() -> impl Strategy<Value = Piece> {
        (
            1i64..40,
            0usize..OTYPES.len(),
            (0u8..3, 0u8..3, 0u8..3),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            0usize..7,
            0usize..4,
            0usize..6,
            prop::sample::select(vec!["", " ", "\n", "\t "]),
        )
            .prop_map(
                |(oid, t, (qo, qt, qh), (ut, ua, ub), href_kind, extra, order, ws)| {
                    let otype = OTYPES[t];
                    let new = prop_map(otype, oid).unwrap_or(oid);
                    let href = |o: i64| -> Option<String> {
                        match href_kind {
                            0 => Some(format!("/bi/v2/report/{o}/")),
                            1 => Some(format!("https://host/report/{o}?x={oid}#{oid}")),
                            2 => Some(format!("http://h:{oid}/x/{o}")),
                            3 => Some(format!("/r/1{oid}/{oid}abc/{o}")),
                            4 => Some(format!("{o}")),
                            5 => Some(format!("//{oid}/x/{o}/")),
                            _ => None,
                        }
                    };
                    let tag = |o: i64| {
                        let name = |n: &str| case(n, ua);
                        let mut attrs = vec![
                            format!(
                                "{}{ws}={ws}{}",
                                name("data-oid"),
                                quoted(&o.to_string(), qo)
                            ),
                            format!("{}={}", name("data-otype"), quoted(otype, qt)),
                        ];
                        if let Some(h) = href(o) {
                            attrs.push(format!("{}{ws}={}", name("href"), quoted(&h, qh)));
                        }
                        match extra {
                            0 => attrs.push("title=\"a > b 'c'\"".to_owned()),
                            1 => attrs.push("target".to_owned()),
                            2 => attrs.push("class='x\"<a data-oid=1>'".to_owned()),
                            _ => {}
                        }
                        let n = attrs.len();
                        attrs.rotate_left(order % n);
                        if order % 2 == 1 {
                            attrs.reverse();
                        }
                        let close = if ub { " />" } else { ">" };
                        format!("<{} {}{close}", case("a", ut), attrs.join(" "))
                    };
                    Piece {
                        input: tag(oid),
                        output: tag(new),
                        found_in: vec![m(otype, oid)],
                        found_out: vec![m(otype, new)],
                    }
                },
            )
    }

    fn document() -> impl Strategy<Value = Piece> {
        let piece = prop_oneof![
            2 => filler().prop_map(|s| Piece {
                input: s.clone(),
                output: s,
                found_in: vec![],
                found_out: vec![],
            }),
            1 => mention(),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|ps| {
            let mut doc = Piece {
                input: String::new(),
                output: String::new(),
                found_in: vec![],
                found_out: vec![],
            };
            for p in ps {
                doc.input += &p.input;
                doc.output += &p.output;
                doc.found_in.extend(p.found_in);
                doc.found_out.extend(p.found_out);
            }
            doc
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn prop_rewrite_changes_only_mapped_values(doc in document()) {
            // (a) Nothing maps: nothing changes.
            prop_assert_eq!(rewrite(&doc.input, |_, _| None), None);
            // (b) The result is the input with only the mapped values replaced.
            let got = rewrite(&doc.input, prop_map);
            if doc.output == doc.input {
                prop_assert_eq!(got, None);
            } else {
                prop_assert_eq!(got.as_deref(), Some(doc.output.as_str()));
            }
            // (c) Idempotent: the new oids are not mapped.
            prop_assert_eq!(rewrite(&doc.output, prop_map), None);
            // (d) find() reports the old oids before and the new oids after.
            prop_assert_eq!(find(&doc.input), doc.found_in);
            prop_assert_eq!(find(&doc.output), doc.found_out);
        }

        #[test]
        fn prop_prefixes_never_panic(doc in document()) {
            let s = doc.input.as_str();
            for (i, _) in s.char_indices() {
                let p = &s[..i];
                let found = find(p);
                match rewrite(p, prop_map) {
                    None => {}
                    Some(out) => {
                        prop_assert_ne!(&out, p);
                        prop_assert_eq!(find(&out).len(), found.len());
                    }
                }
            }
        }

        #[test]
        fn prop_arbitrary_text_is_safe(s in "[<>a/!\\-?'\" =dtDAOIYPE0-9_\n]{0,80}") {
            let all = |_: &str, o: i64| Some(o.wrapping_add(1));
            let found = find(&s);
            match rewrite(&s, all) {
                None => prop_assert!(found.is_empty()),
                Some(out) => {
                    let after = find(&out);
                    prop_assert_eq!(after.len(), found.len());
                    for (a, b) in found.iter().zip(&after) {
                        prop_assert_eq!(&a.otype, &b.otype);
                        prop_assert_eq!(a.oid.wrapping_add(1), b.oid);
                    }
                }
            }
        }

        #[test]
        fn prop_find_matches_map_lookups(doc in document()) {
            let calls = std::cell::RefCell::new(Vec::new());
            let _ = rewrite(&doc.input, |t, o| {
                calls.borrow_mut().push(m(t, o));
                None
            });
            prop_assert_eq!(calls.into_inner(), doc.found_in);
        }
    }
}
