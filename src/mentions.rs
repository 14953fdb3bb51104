//! Mentions of catalog objects inside rich text, and their repair (SPEC §5).
//!
//! Rich text (RICH_TEXT values, article bodies, conversation posts, trust-flag reasons) links to
//! other catalog objects with `<a data-otype="bi_report" data-oid="42" href="/bi/v2/report/42/">`
//! start tags. When the connector's report-ID change retires a report version, those links must
//! point at the survivor instead. This module finds such mentions and rewrites them in place.
//!
//! The text is never parsed into a tree and re-serialised: a byte-level scanner that follows the
//! WHATWG HTML tokenizer locates the `<a …>` start tags, and only the bytes of the `data-oid`
//! value and of the old oid's path segments in the `href` value are replaced. Every other byte is
//! copied as it was. Which tokenizer state text is in depends on the tree builder, so a small
//! model of it (`Tree`) rides along: it knows the raw-text elements, `svg` and `math` subtrees
//! (foreign content), their integration points and the HTML tags that break out of them, but
//! builds no DOM. `tests/it/html5lib.rs` holds the scanner to the html5lib-tests corpus.
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
//! - The text is read as a document body by a browser with scripting on. Text inside comments
//!   (including `<!-->`, `<!--->` and `--!>` endings), bogus comments (`<!…>`, `<?…>`),
//!   DOCTYPEs, RCDATA and raw-text elements (`title`, `textarea`, `style`, `xmp`, `iframe`,
//!   `noembed`, `noframes`, `noscript`), script data (with its `<!--` escaped and
//!   `<!--<script>` double-escaped states), everything after `plaintext`, CDATA sections in
//!   foreign content, and other tags' attribute values holds no mentions.
//! - In `svg` and `math` those element names are ordinary, so a mention inside
//!   `<svg><title>…</title></svg>` is a mention; `foreignObject`, `desc`, `title` in SVG and
//!   `mi`, `mo`, `mn`, `ms`, `mtext` and `annotation-xml encoding=text/html` in MathML switch
//!   back to the HTML rules, and so do breakout tags such as `<p>` or `<div>`.
//! - HTML elements are tracked only roughly (of the implied end tags only `<p>a<p>b`-style
//!   siblings; no insertion modes such as `select` or `frameset`; no fragment contexts; at most
//!   512 open elements, the outermost forgotten first): the model needs them only to know when
//!   an end tag closes an `svg` or `math` subtree.
//! - A tag left unterminated at the end of the text is dropped by HTML, so it holds no mention
//!   and is left unchanged.
//! - In `href`, only the path is considered: the query (`?…`) and fragment (`#…`) are untouched,
//!   and so are a scheme (`https:`) and an authority (`//host:42`). A path segment is replaced
//!   when it equals the old oid's canonical decimal text.

use memchr::{memchr, memchr2, memchr_iter, memmem};
use std::collections::VecDeque;

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

/// The tokenizer state the text between tags is read in: the states the HTML tree builder (or a
/// test) can put the tokenizer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextState {
    /// Ordinary markup.
    Data,
    /// Text up to the appropriate end tag, entities decoded (`title`, `textarea`).
    Rcdata,
    /// Text up to the appropriate end tag (`style`, `xmp`, `iframe`, `noembed`, `noframes`,
    /// `noscript` with scripting on).
    Rawtext,
    /// `script` content, with its escaped (`<!--`) and double-escaped (`<!--<script>`) states.
    ScriptData,
    /// Everything to the end of the text (after `<plaintext>`).
    Plaintext,
    /// A `<![CDATA[` section in foreign content, up to `]]>`.
    CdataSection,
}

/// Every start tag the scanner reads in `text`, as (offset of its `<`, tag name in ASCII lower
/// case), in order. The text is read as a document body with scripting on: start tags of
/// raw-text elements, `svg` and `math` switch states as the tree builder would. For tests and
/// diagnostics; [`rewrite`] and [`find`] see exactly these tags.
pub fn start_tags(text: &str) -> Vec<(usize, String)> {
    let mut tags = Vec::new();
    scan_tags(text, TextState::Data, None, true, |t| {
        tags.push(t.summary())
    });
    tags
}

/// Like [`start_tags`], but as a bare tokenizer with no tree builder behind it: the text state
/// changes only at the end of the `initial` one, as in the html5lib tokenizer tests.
/// `last_start_tag` names the element whose end tag ends RCDATA, RAWTEXT and script data.
pub fn tokenizer_start_tags(
    text: &str,
    initial: TextState,
    last_start_tag: Option<&str>,
) -> Vec<(usize, String)> {
    let mut tags = Vec::new();
    let last = last_start_tag.map(str::as_bytes);
    scan_tags(text, initial, last, false, |t| tags.push(t.summary()));
    tags
}

/// Walks the text the way a browser does and calls `on_mention` for every `<a>` start tag with
/// an integer `data-oid` and a `data-otype`.
fn scan<'a>(text: &'a str, mut on_mention: impl FnMut(Anchor<'a>)) {
    scan_tags(text, TextState::Data, None, true, |t| {
        if !t.name.eq_ignore_ascii_case(b"a") {
            return;
        }
        if let (Some(Some(oid_span)), Some(otype)) = (t.attrs.oid, t.attrs.otype) {
            if let Some(oid) = parse_oid(&text[oid_span.0..oid_span.1]) {
                on_mention(Anchor {
                    otype: otype.map_or("", |(s, e)| &text[s..e]),
                    oid,
                    oid_span,
                    href: t.attrs.href.flatten(),
                });
            }
        }
    });
}

/// A start tag read by [`scan_tags`].
struct Tag<'a> {
    /// Offset of the `<`.
    lt: usize,
    /// The name as written.
    name: &'a [u8],
    self_closing: bool,
    attrs: Attrs,
}

impl Tag<'_> {
    fn summary(&self) -> (usize, String) {
        let name = String::from_utf8_lossy(self.name).to_ascii_lowercase();
        (self.lt, name)
    }
}

/// The attributes the scanner cares about, first occurrence of each (`Some(None)`: no value).
#[derive(Default)]
struct Attrs {
    oid: Option<Option<Span>>,
    otype: Option<Option<Span>>,
    href: Option<Option<Span>>,
    /// `encoding`, which makes a MathML `annotation-xml` an HTML integration point.
    encoding: Option<Option<Span>>,
    /// `color`, `face` or `size`: a `<font>` with one leaves foreign content.
    font_attr: bool,
}

/// The tokenizer loop. `tree` puts the small tree model (`Tree`) behind it, which switches
/// text states as the HTML tree builder does; without it the state changes only back to Data.
fn scan_tags<'a>(
    text: &'a str,
    mut state: TextState,
    last_start_tag: Option<&[u8]>,
    tree: bool,
    mut on_tag: impl FnMut(&Tag<'a>),
) {
    let b = text.as_bytes();
    let mut model = Tree::default();
    // The name whose end tag ends RCDATA, RAWTEXT and script data ("appropriate end tag").
    let mut end_name: &[u8] = last_start_tag.unwrap_or(b"");
    let mut pos = 0;
    loop {
        let next = match state {
            TextState::Data => {
                let Some(off) = memchr(b'<', &b[pos..]) else {
                    return;
                };
                let lt = pos + off;
                match b.get(lt + 1) {
                    Some(c) if c.is_ascii_alphabetic() => {
                        let name_end = tag_name_end(b, lt + 1);
                        let mut attrs = Attrs::default();
                        let Some((end, self_closing)) =
                            parse_attrs(b, name_end, |ns, ne, v| attrs.note(&b[ns..ne], v))
                        else {
                            return;
                        };
                        let tag = Tag {
                            lt,
                            name: &b[lt + 1..name_end],
                            self_closing,
                            attrs,
                        };
                        on_tag(&tag);
                        if tree {
                            state = model.start_tag(b, &tag);
                            end_name = tag.name;
                        }
                        Some(end)
                    }
                    Some(b'/') => match b.get(lt + 2) {
                        Some(c) if c.is_ascii_alphabetic() => {
                            // An end tag; its "attributes" still follow the quoting rules.
                            let name_end = tag_name_end(b, lt + 2);
                            let end = parse_attrs(b, name_end, |_, _, _| {});
                            if tree && end.is_some() {
                                model.end_tag(&b[lt + 2..name_end]);
                            }
                            end.map(|(e, _)| e)
                        }
                        Some(b'>') => Some(lt + 3),
                        Some(_) => skip_past_gt(b, lt + 2),
                        None => None,
                    },
                    Some(b'!') => {
                        let rest = &b[lt + 2..];
                        if rest.starts_with(b"--") {
                            comment_end(b, lt)
                        } else if rest.starts_with(b"[CDATA[") && model.in_foreign_content() {
                            state = TextState::CdataSection;
                            Some(lt + 9)
                        } else {
                            // DOCTYPE and bogus comments both end at the first `>`.
                            skip_past_gt(b, lt + 2)
                        }
                    }
                    Some(b'?') => skip_past_gt(b, lt + 2),
                    _ => Some(lt + 1),
                }
            }
            TextState::Rcdata | TextState::Rawtext => {
                state = TextState::Data;
                text_element_end(b, pos, end_name)
            }
            TextState::ScriptData => {
                state = TextState::Data;
                script_data_end(b, pos, end_name)
            }
            TextState::CdataSection => {
                state = TextState::Data;
                memmem::find(&b[pos..], b"]]>").map(|i| pos + i + 3)
            }
            TextState::Plaintext => None,
        };
        match next {
            Some(p) => pos = p,
            None => return,
        }
    }
}

impl Attrs {
    /// Records the attribute `name` if it is one the scanner needs.
    fn note(&mut self, name: &[u8], value: Option<Span>) {
        let slot = match name.len() {
            8 if name.eq_ignore_ascii_case(b"data-oid") => &mut self.oid,
            10 if name.eq_ignore_ascii_case(b"data-otype") => &mut self.otype,
            4 if name.eq_ignore_ascii_case(b"href") => &mut self.href,
            8 if name.eq_ignore_ascii_case(b"encoding") => &mut self.encoding,
            4 | 5 => {
                self.font_attr |= [&b"color"[..], b"face", b"size"]
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n));
                return;
            }
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
}

/// Index just past the next `>` at or after `from` (end of a bogus comment or a DOCTYPE).
fn skip_past_gt(b: &[u8], from: usize) -> Option<usize> {
    memchr(b'>', b.get(from..)?).map(|i| from + i + 1)
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

/// Whether an appropriate end tag for `name` starts at `i`: `</name` followed by whitespace,
/// `/` or `>`. Only ASCII letters can make up the name (the end tag name state's rule); with no
/// name (no start tag seen) no end tag is appropriate.
fn is_end_tag_of(b: &[u8], i: usize, name: &[u8]) -> bool {
    let ns = i + 2;
    let ne = ns + name.len();
    !name.is_empty()
        && name.iter().all(u8::is_ascii_alphabetic)
        && ne < b.len()
        && b[i..ns] == *b"</"
        && b[ns..ne].eq_ignore_ascii_case(name)
        && (is_ws(b[ne]) || b[ne] == b'/' || b[ne] == b'>')
}

/// Position of the end tag `</name` ending RCDATA or RAWTEXT, at or after `from`.
fn text_element_end(b: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    memmem::find_iter(&b[from..], b"</")
        .map(|i| from + i)
        .find(|&p| is_end_tag_of(b, p, name))
}

/// Position of the end tag ending script data at or after `from`, following the script data
/// states: after `<!--` the text is *escaped*, where `<script` makes it *double escaped* until
/// `</script`; an end tag ends the script only in the unescaped and escaped states, and `-->`
/// goes back to unescaped. So `<script><!--<script></script>x</script>` is one script.
fn script_data_end(b: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Plain,
        Escaped,
        EscapedDash,
        EscapedDashDash,
        Double,
        DoubleDash,
        DoubleDashDash,
    }
    /// The ASCII letters from `i`, and the byte after them (None at the end of the text).
    fn letters(b: &[u8], i: usize) -> (usize, Option<u8>) {
        let mut j = i;
        while j < b.len() && b[j].is_ascii_alphabetic() {
            j += 1;
        }
        (j, b.get(j).copied())
    }
    let ends_buffer = |c: u8| is_ws(c) || c == b'/' || c == b'>';
    let mut s = S::Plain;
    let mut i = from;
    while i < b.len() {
        match s {
            S::Plain => {
                i += memchr(b'<', &b[i..])?;
                if is_end_tag_of(b, i, name) {
                    return Some(i);
                }
                if b[i + 1..].starts_with(b"!--") {
                    s = S::EscapedDashDash;
                    i += 4;
                } else {
                    i += 1;
                }
                continue;
            }
            S::Escaped | S::Double => {
                i += memchr2(b'-', b'<', &b[i..])?;
                if b[i] == b'-' {
                    s = if s == S::Escaped {
                        S::EscapedDash
                    } else {
                        S::DoubleDash
                    };
                    i += 1;
                    continue;
                }
            }
            S::EscapedDash | S::EscapedDashDash | S::DoubleDash | S::DoubleDashDash => {
                let escaped = matches!(s, S::EscapedDash | S::EscapedDashDash);
                match b[i] {
                    b'-' => {
                        s = if escaped {
                            S::EscapedDashDash
                        } else {
                            S::DoubleDashDash
                        };
                        i += 1;
                        continue;
                    }
                    b'<' => {}
                    b'>' if matches!(s, S::EscapedDashDash | S::DoubleDashDash) => {
                        s = S::Plain;
                        i += 1;
                        continue;
                    }
                    _ => {
                        s = if escaped { S::Escaped } else { S::Double };
                        i += 1;
                        continue;
                    }
                }
            }
        }
        // At a `<` in an escaped or double-escaped state.
        let escaped = matches!(s, S::Escaped | S::EscapedDash | S::EscapedDashDash);
        if escaped {
            if is_end_tag_of(b, i, name) {
                return Some(i);
            }
            s = S::Escaped;
            if b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
                // Script data double escape start.
                let (j, after) = letters(b, i + 1);
                match after {
                    Some(c) if ends_buffer(c) => {
                        if b[i + 1..j].eq_ignore_ascii_case(b"script") {
                            s = S::Double;
                        }
                        i = j + 1;
                    }
                    Some(_) => i = j,
                    None => return None,
                }
            } else {
                i += 1;
            }
        } else {
            s = S::Double;
            if b.get(i + 1) == Some(&b'/') {
                // Script data double escape end.
                let (j, after) = letters(b, i + 2);
                match after {
                    Some(c) if ends_buffer(c) => {
                        if b[i + 2..j].eq_ignore_ascii_case(b"script") {
                            s = S::Escaped;
                        }
                        i = j + 1;
                    }
                    Some(_) => i = j,
                    None => return None,
                }
            } else {
                i += 1;
            }
        }
    }
    None
}

/// Parses a tag's attributes from `i` (just after the tag name) to its closing `>`, calling
/// `on_attr(name_start, name_end, value)` for each (value inside quotes; None when absent).
/// Returns the index just past `>` and whether the tag is self-closing (`/>`), or None when the
/// text ends inside the tag.
fn parse_attrs(
    b: &[u8],
    mut i: usize,
    mut on_attr: impl FnMut(usize, usize, Option<Span>),
) -> Option<(usize, bool)> {
    loop {
        // Before attribute name (a stray `/` is skipped, as in the self-closing state; one right
        // before `>` makes the tag self-closing).
        let mut slash = false;
        while i < b.len() && (is_ws(b[i]) || b[i] == b'/') {
            slash = b[i] == b'/';
            i += 1;
        }
        if *b.get(i)? == b'>' {
            return Some((i + 1, slash));
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
                return Some((i + 1, false));
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

/// Namespaces of elements in the tree model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Html,
    Svg,
    MathMl,
}

/// An element name in ASCII lower case; names longer than the buffer keep their first bytes
/// and their length (no element the model cares about is that long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Name {
    len: usize,
    bytes: [u8; 16],
}

impl Name {
    fn new(raw: &[u8]) -> Name {
        let mut bytes = [0; 16];
        for (d, s) in bytes.iter_mut().zip(raw) {
            *d = s.to_ascii_lowercase();
        }
        Name {
            len: raw.len(),
            bytes,
        }
    }

    /// The name's bytes (the first 16 of a longer name, which matches none the model knows).
    fn key(&self) -> &[u8] {
        &self.bytes[..self.len.min(16)]
    }

    fn is(&self, s: &[u8]) -> bool {
        self.len == s.len() && self.bytes[..s.len().min(16)] == s[..s.len().min(16)]
    }

    fn is_any(&self, names: &[&[u8]]) -> bool {
        names.iter().any(|n| self.is(n))
    }
}

/// An open element of the tree model.
#[derive(Debug, Clone, Copy)]
struct Frame {
    ns: Ns,
    name: Name,
    /// An HTML integration point: SVG `foreignObject`, `desc`, `title`; MathML `annotation-xml`
    /// with an HTML encoding. Start tags there follow the HTML rules.
    html_point: bool,
    /// A MathML text integration point (`mi`, `mo`, `mn`, `ms`, `mtext`).
    text_point: bool,
}

impl Frame {
    /// Where an end tag's search for its element stops (the scope markers that matter here).
    fn is_scope_marker(&self) -> bool {
        self.html_point
            || self.text_point
            || (self.ns == Ns::MathMl && self.name.is(b"annotation-xml"))
            || (self.ns == Ns::Html
                && self.name.is_any(&[
                    b"applet",
                    b"caption",
                    b"marquee",
                    b"object",
                    b"table",
                    b"td",
                    b"template",
                    b"th",
                ]))
    }
}

/// Deepest stack the model keeps: past it the outermost element is forgotten, so no input can
/// make it grow without bound or make end tags slow, and a deep `svg` is still tracked.
const MAX_DEPTH: usize = 512;

/// HTML start tags that end foreign content ("in foreign content" in the tree builder).
const BREAKOUT: [&[u8]; 44] = [
    b"b",
    b"big",
    b"blockquote",
    b"body",
    b"br",
    b"center",
    b"code",
    b"dd",
    b"div",
    b"dl",
    b"dt",
    b"em",
    b"embed",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"head",
    b"hr",
    b"i",
    b"img",
    b"li",
    b"listing",
    b"menu",
    b"meta",
    b"nobr",
    b"ol",
    b"p",
    b"pre",
    b"ruby",
    b"s",
    b"small",
    b"span",
    b"strong",
    b"strike",
    b"sub",
    b"sup",
    b"table",
    b"tt",
    b"u",
    b"ul",
    b"var",
];

/// HTML elements with no content: their start tags open nothing.
const VOID: [&[u8]; 19] = [
    b"area",
    b"base",
    b"basefont",
    b"bgsound",
    b"br",
    b"col",
    b"embed",
    b"frame",
    b"hr",
    b"image",
    b"img",
    b"input",
    b"keygen",
    b"link",
    b"meta",
    b"param",
    b"source",
    b"track",
    b"wbr",
];

/// The part of the HTML tree builder that decides the tokenizer's text state: a stack of open
/// elements, exact about `svg` and `math` subtrees (foreign content, where `title`, `style`,
/// `script`, `textarea` and `plaintext` are ordinary elements and `<x/>` closes itself), their
/// integration points and breakout tags, and approximate about HTML elements (no implied end
/// tags, no insertion modes). Scripting is on, so `noscript` is raw text.
#[derive(Default)]
struct Tree {
    stack: VecDeque<Frame>,
}

impl Tree {
    /// Whether the adjusted current node is an SVG or MathML element (`<![CDATA[` is a CDATA
    /// section there and a bogus comment elsewhere).
    fn in_foreign_content(&self) -> bool {
        self.stack.back().is_some_and(|f| f.ns != Ns::Html)
    }

    fn push(&mut self, ns: Ns, name: Name, b: &[u8], attrs: &Attrs) {
        if self.stack.len() >= MAX_DEPTH {
            self.stack.pop_front();
        }
        let html_point = match ns {
            Ns::Svg => name.is_any(&[b"foreignobject", b"desc", b"title"]),
            Ns::MathMl if name.is(b"annotation-xml") => {
                attrs.encoding.flatten().is_some_and(|(s, e)| {
                    let v = &b[s..e];
                    v.eq_ignore_ascii_case(b"text/html")
                        || v.eq_ignore_ascii_case(b"application/xhtml+xml")
                })
            }
            _ => false,
        };
        let text_point = ns == Ns::MathMl && name.is_any(&[b"mi", b"mo", b"mn", b"ms", b"mtext"]);
        self.stack.push_back(Frame {
            ns,
            name,
            html_point,
            text_point,
        });
    }

    /// Pops foreign elements until an HTML element or an integration point is current.
    fn pop_to_html(&mut self) {
        while let Some(f) = self.stack.back() {
            if f.ns == Ns::Html || f.html_point || f.text_point {
                break;
            }
            self.stack.pop_back();
        }
    }

    /// Takes in a start tag; returns the text state that follows it.
    fn start_tag(&mut self, b: &[u8], tag: &Tag) -> TextState {
        let name = Name::new(tag.name);
        let html_rules = match self.stack.back() {
            None => true,
            Some(f) => {
                f.ns == Ns::Html
                    || f.html_point
                    || (f.text_point && !name.is_any(&[b"mglyph", b"malignmark"]))
                    || (f.ns == Ns::MathMl && f.name.is(b"annotation-xml") && name.is(b"svg"))
            }
        };
        if !html_rules {
            let breakout = name.is_any(&BREAKOUT) || (name.is(b"font") && tag.attrs.font_attr);
            if !breakout {
                // A foreign element, in its parent's namespace; raw-text names mean nothing here.
                if !tag.self_closing {
                    let ns = self.stack.back().map_or(Ns::Html, |f| f.ns);
                    self.push(ns, name, b, &tag.attrs);
                }
                return TextState::Data;
            }
            self.pop_to_html();
        }
        // One `match` on the name (a length switch, then compares) keeps common tags cheap.
        let state = match name.key() {
            b"title" | b"textarea" => TextState::Rcdata,
            b"style" | b"xmp" | b"iframe" | b"noembed" | b"noframes" | b"noscript" => {
                TextState::Rawtext
            }
            b"script" => TextState::ScriptData,
            b"plaintext" => TextState::Plaintext,
            _ => TextState::Data,
        };
        match name.key() {
            b"svg" | b"math" if !tag.self_closing => {
                let ns = if name.is(b"svg") { Ns::Svg } else { Ns::MathMl };
                self.push(ns, name, b, &tag.attrs);
            }
            b"svg" | b"math" | b"html" | b"head" | b"body" => {}
            key if VOID.contains(&key) => {}
            key => {
                // The commonest implied end tag: `<p>a<p>b`, `<li>a<li>b` are siblings.
                if matches!(key, b"p" | b"li" | b"dd" | b"dt" | b"option")
                    && self
                        .stack
                        .back()
                        .is_some_and(|f| f.ns == Ns::Html && f.name == name)
                {
                    self.stack.pop_back();
                }
                self.push(Ns::Html, name, b, &tag.attrs)
            }
        }
        state
    }

    /// Takes in an end tag.
    fn end_tag(&mut self, raw: &[u8]) {
        let name = Name::new(raw);
        if self.in_foreign_content() {
            if name.is(b"p") || name.is(b"br") {
                self.pop_to_html();
            } else {
                // Close the nearest foreign element of that name above the nearest HTML one.
                for i in (0..self.stack.len()).rev() {
                    let f = self.stack[i];
                    if f.name == name {
                        self.stack.truncate(i);
                        return;
                    }
                    if i > 0 && self.stack[i - 1].ns == Ns::Html {
                        break;
                    }
                }
            }
        }
        // The HTML rules, roughly: close the nearest open HTML element of that name in scope.
        if name.is_any(&[b"html", b"head", b"body", b"br"]) {
            return;
        }
        for i in (0..self.stack.len()).rev() {
            let f = self.stack[i];
            if f.ns == Ns::Html && f.name == name {
                self.stack.truncate(i);
                return;
            }
            if f.is_scope_marker() {
                return;
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

    /// The mention the browser-difference tests insert.
    const M: &str = "<a data-otype=bi_report data-oid=42 href=/r/42>";

    /// Asserts that the single `M` in `template` is read as a mention and rewritten.
    fn mentioned(template: &str) {
        let s = template.replace('M', M);
        let want = template.replace('M', "<a data-otype=bi_report data-oid=7 href=/r/7>");
        assert_eq!(find(&s), vec![m("bi_report", 42)], "{template:?}");
        assert_eq!(
            rewrite(&s, map42).as_deref(),
            Some(want.as_str()),
            "{template:?}"
        );
    }

    /// Asserts that the `M`s in `template` are text, not mentions.
    fn text(template: &str) {
        untouched(&template.replace('M', M));
    }

    #[test]
    fn script_escaped_and_double_escaped_states() {
        // `<!--<script>` makes the script double escaped: `</script>` does not end it.
        text("<script><!--<script></script>M");
        text("<script><!--<script></script>M</script>");
        text("<SCRIPT><!--<Script >x</script>M</script>");
        // Back to escaped after the inner `</script>`; the next `</script>` ends the script.
        mentioned("<script><!--<script></script></script>M");
        // `-->` ends the escape, and an end tag ends an escaped script.
        mentioned("<script><!--<script>--></script>M");
        mentioned("<script><!--</script>M");
        mentioned("<script><!--<scripts></script>M");
        mentioned("<script><!--><script></script>M");
    }

    #[test]
    fn noscript_is_raw_text_with_scripting_on() {
        text("<noscript>M</noscript>");
        text("<noscript><p>M</p></noscript>");
        mentioned("<noscript></noscript>M");
    }

    #[test]
    fn raw_text_names_are_ordinary_in_svg_and_math() {
        mentioned("<svg><title>M</title></svg>");
        mentioned("<svg><style/></svg>M");
        mentioned("<svg><style>M</style></svg>");
        mentioned("<svg><plaintext></plaintext></svg>M");
        mentioned("<math><script>M</script></math>");
        mentioned("<svg><textarea>M</textarea></svg>");
        mentioned("<math><annotation-xml><script>M</script></annotation-xml></math>");
        mentioned("<svg><font><style>M</style></font></svg>");
        // After the foreign subtree ends, HTML rules are back.
        text("<svg></svg><style>M</style>");
        text("<svg><g/></svg><title>M</title>");
        text("<div><svg><g></div><title>M</title>");
        text("<svg/><script>M</script>");
        text("<math><mi></mi></math><noscript>M</noscript>");
    }

    #[test]
    fn integration_points_and_breakout_tags_switch_back_to_html() {
        text("<svg><desc><title>M</title></desc></svg>");
        text("<svg><foreignObject><textarea>M</textarea></foreignObject></svg>");
        text("<svg><foreignobject><script>M</script></svg>");
        text("<math><mi><style>M</style></mi></math>");
        text("<math><annotation-xml encoding='Text/Html'><script>M</script>");
        text("<svg><p><style>M</style>");
        text("<svg><g><b><xmp>M</xmp>");
        text("<svg><font size=2><style>M</style>");
        text("<svg></p><style>M</style>");
        // Inside an integration point, foreign content can start again.
        mentioned("<svg><desc><svg><style>M</style></svg></desc></svg>");
        mentioned("<math><mi><svg><title>M</title></svg></mi></math>");
    }

    #[test]
    fn cdata_sections_only_in_foreign_content() {
        text("<svg><![CDATA[>M]]></svg>");
        text("<math><![CDATA[M]]>");
        mentioned("<svg><![CDATA[x]]>M</svg>");
        // In HTML, `<![CDATA[` opens a bogus comment that ends at the first `>`.
        mentioned("<![CDATA[>M]]>");
        mentioned("<svg><foreignObject><div><![CDATA[>M]]>");
    }

    #[test]
    fn deep_or_long_markup_keeps_foreign_content() {
        mentioned(&format!(
            "{}<svg><title>M</title></svg>",
            "<b>".repeat(2000)
        ));
        mentioned(&format!(
            "{}<svg><title>M</title></svg>",
            "<p>x".repeat(2000)
        ));
        text(&format!(
            "{}<svg></svg><title>M</title>",
            "<div>".repeat(600)
        ));
        mentioned(&format!("{}</svg><title>M</title>", "<svg><g>".repeat(600)));
        // End tags that close nothing stay cheap however deep the markup.
        let s = format!("{}{}", "<i>".repeat(20_000), "</x>".repeat(20_000));
        assert_eq!(start_tags(&s).len(), 20_000);
    }

    #[test]
    fn start_tags_reports_positions_and_names() {
        assert_eq!(
            start_tags("<P>x<svg><Title><b/></title><!-- <i> -->"),
            vec![
                (0, "p".to_owned()),
                (4, "svg".to_owned()),
                (9, "title".to_owned()),
                (16, "b".to_owned()),
            ]
        );
        assert_eq!(
            tokenizer_start_tags("<b></xmp><i>", TextState::Rawtext, Some("xmp")),
            vec![(9, "i".to_owned())]
        );
        assert_eq!(tokenizer_start_tags("<b>", TextState::Rcdata, None), vec![]);
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
