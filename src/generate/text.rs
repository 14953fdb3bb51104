//! Names and rich text. Rich text is HTML as curators write it, with mentions of catalog objects
//! (`<a data-otype data-oid href>`) in the spellings a real catalog holds: attributes in any
//! order, either quote or none, names in any case, extra attributes, and plain links that are not
//! mentions. It is built as text, never through a DOM, like the rich text the migration repairs.

use super::layout::{pick, Layout};
use super::vocab::{
    FIRST_NAMES, LAST_NAMES, QUALIFIERS, SENTENCE_BY, SENTENCE_HEADS, SUBJECTS, USERS,
};
use fastrand::Rng;
use std::fmt::Write;

/// A report or folder name: a qualifier and a subject, e.g. `Weekly Revenue`.
pub(super) fn title(r: &mut Rng) -> String {
    let qualifier = pick(r, QUALIFIERS);
    format!("{qualifier} {}", pick(r, SUBJECTS))
}

/// The name of user `u`: a first name by id, a last name drawn.
pub(super) fn user_name(r: &mut Rng, u: u64) -> String {
    let first = FIRST_NAMES[(u % FIRST_NAMES.len() as u64) as usize];
    format!("{first} {}", pick(r, LAST_NAMES))
}

/// Appends a number in decimal (writing to a `String` cannot fail).
pub(super) fn push_num(out: &mut String, v: u64) {
    let _ = write!(out, "{v}");
}

impl Layout {
    /// Writes rich text (HTML) into `out`, drawn from `seed`. `mentions` is the chance, in
    /// percent, of a mention after each sentence.
    pub(super) fn rich(
        &self,
        out: &mut String,
        seed: u64,
        shift: u64,
        exclude: Option<u64>,
        mentions: u32,
    ) {
        let mut r = Rng::with_seed(seed);
        out.clear();
        let paras = 1 + r.u32(0..3);
        for p in 0..paras {
            if p > 0 && r.bool() {
                out.push('\n');
            }
            let list = r.u32(0..8) == 0;
            out.push_str(if list { "<ul><li>" } else { "<p>" });
            let sentences = 1 + r.u32(0..2);
            for s in 0..sentences {
                if s > 0 {
                    out.push_str(if list { "</li><li>" } else { " " });
                }
                out.push_str(pick(&mut r, SENTENCE_HEADS));
                out.push(' ');
                let subject = pick(&mut r, SUBJECTS);
                if r.u32(0..6) == 0 {
                    out.push_str("<b>");
                    push_html_text(out, subject);
                    out.push_str("</b>");
                } else {
                    push_html_text(out, subject);
                }
                out.push(' ');
                out.push_str(pick(&mut r, SENTENCE_BY));
                if r.u32(0..10) == 0 {
                    out.push_str(" &amp; targets&nbsp;(FY)");
                }
                out.push('.');
                if r.u32(0..100) < mentions {
                    out.push_str(" See ");
                    self.mention(out, &mut r, exclude, shift);
                    out.push('.');
                }
            }
            out.push_str(if list { "</li></ul>" } else { "</p>" });
        }
    }

    /// One `<a …>` link, mostly a mention of a report version, in one of several spellings.
    fn mention(&self, out: &mut String, r: &mut Rng, exclude: Option<u64>, shift: u64) {
        let (otype, oid, path) = match r.u32(0..20) {
            0..=1 => ("user", 1 + r.u64(0..USERS), "/user/"),
            2 => (
                "bi_report_column",
                self.pick_column(r, exclude),
                "/bi/v2/report_column/",
            ),
            3 if self.tables > 0 => ("table", 1 + r.u64(0..self.tables), "/bi/v2/table/"),
            4 => {
                // A plain link: not a mention.
                out.push_str("<a href=\"https://looker.example.com/dashboards/");
                push_num(out, r.u64(1..5000));
                out.push_str("\" target=\"_blank\">the Looker dashboard</a>");
                return;
            }
            _ => (
                "bi_report",
                self.pick_report(r, exclude, shift),
                "/bi/v2/report/",
            ),
        };
        let label = pick(r, SUBJECTS);
        match r.u32(0..10) {
            // Reversed attribute order, single quotes.
            0 => {
                out.push_str("<a data-otype='");
                out.push_str(otype);
                out.push_str("' data-oid='");
                push_num(out, oid);
                out.push_str("' href='");
                out.push_str(path);
                push_num(out, oid);
                out.push_str("/'>");
            }
            // Upper-case names, unquoted values, absolute href with a query.
            1 => {
                out.push_str("<A HREF=\"https://catalog.example.com");
                out.push_str(path);
                push_num(out, oid);
                out.push_str("/?tab=curation\" DATA-OID=");
                push_num(out, oid);
                out.push_str(" DATA-OTYPE=");
                out.push_str(otype);
                out.push('>');
            }
            // Extra attributes, no trailing slash.
            2 => {
                out.push_str("<a class=\"mention\" href=\"");
                out.push_str(path);
                push_num(out, oid);
                out.push_str("\" data-oid=\"");
                push_num(out, oid);
                out.push_str("\" rel=\"noopener\" data-otype=\"");
                out.push_str(otype);
                out.push_str("\">");
            }
            _ => {
                out.push_str("<a href=\"");
                out.push_str(path);
                push_num(out, oid);
                out.push_str("/\" data-oid=\"");
                push_num(out, oid);
                out.push_str("\" data-otype=\"");
                out.push_str(otype);
                out.push_str("\">");
            }
        }
        if otype == "user" {
            out.push('@');
            out.push_str(FIRST_NAMES[(oid % FIRST_NAMES.len() as u64) as usize]);
        } else {
            push_html_text(out, label);
        }
        out.push_str("</a>");
    }
}

/// Text escaped for HTML content.
pub(super) fn push_html_text(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
}
