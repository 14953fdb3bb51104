//! Curation (SPEC §4) on report and column versions: field values of every type, trust flags,
//! tags and stars, spread over the versions so that they agree, overlap, conflict or are empty;
//! conversations; and records of other kinds that refer to reports (articles, tables with object
//! sets, glossary terms, view events) and so must follow the references (SPEC §5).

use super::layout::{distinct, mix, pick, Shape, Subj, GLOSSARY_AT, GLOSSARY_EVERY, TABLE_EVERY};
use super::text::push_num;
use super::vocab::{
    FieldDef, FieldType, ARTICLE, COLUMNS, CONVERSATION, CUSTOM_FIELD, CUSTOM_FIELDS, DOMAINS,
    FIELD_VALUE, FLAG_TYPES, F_DESCRIPTION, F_DOMAIN, F_RELATED, F_STEWARD, F_TITLE, F_UNDEFINED,
    GLOSSARY_TERM, QUALIFIERS, STAR, SUBJECTS, TABLE, TAG, TAGS, TEXT_VALUES, TRUST_FLAG, USERS,
    VIEW_EVENT,
};
use super::write::{date, ts, Ts};
use super::Gen;
use anyhow::Result;
use fastrand::Rng;
use std::io::Write;

/// One version of a report, as its curation needs it.
pub(super) struct VersionCtx {
    /// The logical report (excluded from its own mentions), None for non-Looker reports.
    pub(super) report: Option<u64>,
    pub(super) subject: Subj,
    pub(super) stamp: i64,
    /// Seed of the report's shared description, so that versions often agree.
    pub(super) desc_seed: u64,
}

impl<W: Write> Gen<W> {
    /// The `custom_field` definitions (SPEC §1), one of each type.
    pub(super) fn custom_fields(&mut self) -> Result<()> {
        for f in CUSTOM_FIELDS {
            self.begin(CUSTOM_FIELD);
            self.num("id", f.id);
            self.str("name", f.name);
            let ty = match f.ty {
                FieldType::Text => "TEXT",
                FieldType::RichText => "RICH_TEXT",
                FieldType::Picker => "PICKER",
                FieldType::MultiPicker => "MULTI_PICKER",
                FieldType::Date => "DATE",
                FieldType::ObjectSet { .. } => "OBJECT_SET",
            };
            self.str("field_type", ty);
            if let FieldType::ObjectSet { multiple } = f.ty {
                self.raw("allow_multiple", if multiple { "true" } else { "false" });
            }
            if !f.options.is_empty() {
                self.key("options");
                self.json(f.options);
            }
            self.end(CUSTOM_FIELD)?;
        }
        Ok(())
    }

    /// The curation of logical report `i` once its versions and columns are written: of its
    /// versions, of its columns, view events and conversations. `stamps` holds the versions'
    /// times, oldest first.
    pub(super) fn report_curation(
        &mut self,
        r: &mut Rng,
        i: u64,
        sh: &Shape,
        stamps: &[i64],
        desc_seed: u64,
    ) -> Result<()> {
        let lay = self.lay;
        let nv = stamps.len();
        // Curation of report versions.
        let curated = r.u32(0..100) < 75;
        for (v, &stamp) in stamps.iter().enumerate() {
            if !curated || r.u32(0..100) >= 85 {
                continue;
            }
            let ctx = VersionCtx {
                report: Some(i),
                subject: Subj::new("bi_report", lay.report_oid(i, sh.slot(v as u64))),
                stamp,
                desc_seed,
            };
            self.curate_version(r, &ctx)?;
        }

        // Curation of columns.
        for c in 0..sh.ncols {
            let col_desc_seed = r.u64(..);
            for (v, &stamp) in stamps.iter().enumerate() {
                if c >= sh.cols(v as u64) {
                    continue;
                }
                let subj = Subj::new("bi_report_column", lay.column_oid(i, sh.slot(v as u64), c));
                self.curate_column(r, i, subj, stamp, col_desc_seed)?;
            }
        }

        // View events: id-less records with a top-level subject. Event `e` gets its own
        // time, so two never coincide; sometimes one view is recorded on two versions at
        // the same time, which collapses once the versions merge.
        let events = r.u32(0..4);
        for e in 0..events {
            let v = r.u32(0..nv as u32) as usize;
            let user = 1 + r.u64(0..USERS);
            let at = stamps[v] + i64::from(e) * 97 + r.i64(0..90);
            let copies = if nv > 1 && r.u32(0..5) == 0 { 2 } else { 1 };
            for k in 0..copies {
                let tv = (v + k) % nv;
                self.begin(VIEW_EVENT);
                self.subject(Subj::new(
                    "bi_report",
                    lay.report_oid(i, sh.slot(tv as u64)),
                ));
                self.num("user_id", user);
                self.ts("at", Ts::utc(at));
                self.end(VIEW_EVENT)?;
            }
        }

        // Conversations about this report (or about nothing).
        if r.u32(0..100) < 7 {
            let v = r.u64(0..sh.nv);
            let subject = match r.u32(0..20) {
                0..=2 => None,
                3..=5 => Some(None),
                6..=7 => Some(Some(Subj::new(
                    "bi_report_column",
                    lay.column_oid(i, sh.slot(v), r.u64(0..sh.cols(v))),
                ))),
                _ => Some(Some(Subj::new("bi_report", lay.report_oid(i, sh.slot(v))))),
            };
            self.conversation(r, Some(i), subject, stamps[v as usize])?;
        }
        Ok(())
    }

    /// Field values, trust flags, tags and stars on one report version.
    pub(super) fn curate_version(&mut self, r: &mut Rng, ctx: &VersionCtx) -> Result<()> {
        let subj = ctx.subject;
        let ex = ctx.report;

        // Title (3).
        if r.u32(0..100) < 12 {
            self.fv_begin(subj, F_TITLE);
            let title = if r.u32(0..10) == 0 {
                ""
            } else {
                pick(r, SUBJECTS)
            };
            self.str("value", title);
            self.fv_end(r, ctx.stamp)?;
        }
        // Description (4): often the report's shared text (mentions may name another
        // version of the same report), sometimes a conflicting one, sometimes empty.
        if r.u32(0..100) < 55 {
            self.fv_begin(subj, F_DESCRIPTION);
            match r.u32(0..100) {
                0..=59 => {
                    let shift = if r.u32(0..3) == 0 { r.u64(1..4) } else { 0 };
                    self.rich_scratch(ctx.desc_seed, shift, ex, 45);
                    self.scratch_field("value");
                }
                60..=86 => {
                    self.rich_scratch(r.u64(..), 0, ex, 45);
                    self.scratch_field("value");
                }
                _ => {
                    let empty = pick(r, &["", "<p></p>", "<p>&nbsp;</p>", "  ", "<p> <br></p>"]);
                    self.str("value", empty);
                }
            }
            self.fv_end(r, ctx.stamp)?;
        }
        // Stewards (8): users, overlapping between versions.
        if r.u32(0..100) < 35 {
            self.fv_begin(subj, F_STEWARD);
            let mut stewards = Vec::new();
            if r.u32(0..20) != 0 {
                let k = 1 + r.u32(0..3) as usize;
                let (users, len) = distinct(r, k, 15);
                stewards.extend(users[..len].iter().map(|u| Subj::new("user", u + 1)));
            }
            self.key("value");
            self.json(&stewards);
            self.fv_end(r, ctx.stamp)?;
        }
        for f in CUSTOM_FIELDS {
            if r.u32(0..100) < f.pct {
                self.fv_begin(subj, f.id);
                self.field_value(r, f, ex);
                self.fv_end(r, ctx.stamp)?;
            }
        }
        // A field without definition: judged by its value.
        if r.u32(0..100) < 2 {
            self.fv_begin(subj, F_UNDEFINED);
            if r.bool() {
                self.raw("value", "[\"alpha\",\"beta\"]");
            } else {
                self.str("value", pick(r, TEXT_VALUES));
            }
            self.fv_end(r, ctx.stamp)?;
        }

        // Trust flags: a small pool of users, so (flag type, user) pairs recur across versions.
        if r.u32(0..100) < 25 {
            let k = 1 + r.u32(0..2) as usize;
            let (types, len) = distinct(r, k, 3);
            for &ft in &types[..len] {
                let user = 1 + r.u64(0..10);
                self.flag(r, subj, FLAG_TYPES[ft as usize], user, ctx.stamp, ex)?;
            }
        }
        // Tags: at most one of a name per version.
        if r.u32(0..100) < 30 {
            let k = 1 + r.u32(0..3) as usize;
            let (names, len) = distinct(r, k, TAGS.len() as u64);
            for &t in &names[..len] {
                self.begin(TAG);
                self.str("name", TAGS[t as usize]);
                self.subject(subj);
                self.end(TAG)?;
            }
        }
        // Stars: at most one per user per version.
        if r.u32(0..100) < 30 {
            let k = 1 + r.u32(0..4) as usize;
            let (users, len) = distinct(r, k, 40);
            for &u in &users[..len] {
                self.star(r, subj, u + 1, ctx.stamp)?;
            }
        }
        Ok(())
    }

    /// Field values, tags, and rarely flags and stars, on one column version.
    fn curate_column(
        &mut self,
        r: &mut Rng,
        i: u64,
        subj: Subj,
        stamp: i64,
        desc_seed: u64,
    ) -> Result<()> {
        if r.u32(0..100) < 15 {
            self.fv_begin(subj, F_DESCRIPTION);
            let seed = if r.u32(0..4) == 0 {
                r.u64(..)
            } else {
                desc_seed
            };
            self.rich_scratch(seed, 0, Some(i), 15);
            self.scratch_field("value");
            self.fv_end(r, stamp)?;
        }
        if r.u32(0..100) < 5 {
            self.fv_begin(subj, F_DOMAIN);
            self.str("value", pick(r, DOMAINS));
            self.fv_end(r, stamp)?;
        }
        if r.u32(0..100) < 6 {
            self.begin(TAG);
            self.str("name", pick(r, TAGS));
            self.subject(subj);
            self.end(TAG)?;
        }
        if r.u32(0..100) < 2 {
            let ft = pick(r, FLAG_TYPES);
            let user = 1 + r.u64(0..10);
            self.flag(r, subj, ft, user, stamp, Some(i))?;
        }
        if r.u32(0..100) < 2 {
            let user = 1 + r.u64(0..40);
            self.star(r, subj, user, stamp)?;
        }
        Ok(())
    }

    /// Starts a field_value line of `field` on `subj`; its `value` follows.
    fn fv_begin(&mut self, subj: Subj, field: u64) {
        self.begin(FIELD_VALUE);
        self.num("field_id", field);
        self.subject(subj);
    }

    /// Ends a field_value line, mostly with a `ts_updated`.
    fn fv_end(&mut self, r: &mut Rng, stamp: i64) -> Result<()> {
        if r.u32(0..100) >= 5 {
            let at = stamp + r.i64(0..2_592_000);
            self.ts("ts_updated", ts(r, at));
        }
        self.end(FIELD_VALUE)
    }

    /// The `value` of a custom field, of the field's type.
    fn field_value(&mut self, r: &mut Rng, f: &FieldDef, ex: Option<u64>) {
        let lay = self.lay;
        match f.ty {
            FieldType::Text => {
                let v = if r.u32(0..20) == 0 {
                    "   "
                } else {
                    pick(r, TEXT_VALUES)
                };
                self.str("value", v);
            }
            FieldType::RichText => {
                self.rich_scratch(r.u64(..), 0, ex, 30);
                self.scratch_field("value");
            }
            FieldType::Picker => {
                let v = pick(r, f.options);
                self.str("value", v);
            }
            FieldType::MultiPicker => {
                let k = if r.u32(0..20) == 0 {
                    0
                } else {
                    1 + r.u32(0..3) as usize
                };
                let (idx, len) = distinct(r, k, f.options.len() as u64);
                let chosen: Vec<&str> = idx[..len].iter().map(|&o| f.options[o as usize]).collect();
                self.key("value");
                self.json(&chosen);
            }
            FieldType::Date => {
                let secs = 1_672_531_200 + r.i64(0..63_072_000);
                self.str("value", &date(secs));
            }
            FieldType::ObjectSet { multiple } => {
                let k = if multiple { 1 + r.u32(0..4) } else { 1 };
                let members: Vec<Subj> = (0..k).map(|_| lay.pick_member(r, ex)).collect();
                self.key("value");
                self.json(&members);
            }
        }
    }

    /// A trust flag, its reason rich text, empty or absent.
    fn flag(
        &mut self,
        r: &mut Rng,
        subj: Subj,
        flag_type: &str,
        user: u64,
        stamp: i64,
        ex: Option<u64>,
    ) -> Result<()> {
        self.begin(TRUST_FLAG);
        self.num("id", self.next_flag);
        self.next_flag += 1;
        self.str("flag_type", flag_type);
        self.subject(subj);
        self.num("user_id", user);
        match r.u32(0..10) {
            0..=4 => {
                self.rich_scratch(r.u64(..), 0, ex, 25);
                self.scratch_field("reason");
            }
            5..=6 => self.str("reason", ""),
            _ => {}
        }
        let at = stamp + r.i64(0..5_184_000);
        self.ts("ts_created", ts(r, at));
        self.end(TRUST_FLAG)
    }

    /// A star of `user`.
    fn star(&mut self, r: &mut Rng, subj: Subj, user: u64, stamp: i64) -> Result<()> {
        self.begin(STAR);
        self.num("user_id", user);
        self.subject(subj);
        let at = stamp + r.i64(0..5_184_000);
        self.ts("ts_created", ts(r, at));
        self.end(STAR)
    }

    /// A conversation of one to three posts; `subject`: None = absent, Some(None) = null.
    fn conversation(
        &mut self,
        r: &mut Rng,
        ex: Option<u64>,
        subject: Option<Option<Subj>>,
        stamp: i64,
    ) -> Result<()> {
        self.begin(CONVERSATION);
        self.num("id", self.next_conversation);
        self.next_conversation += 1;
        match subject {
            None => {}
            Some(None) => self.raw("subject", "null"),
            Some(Some(s)) => self.subject(s),
        }
        self.str("title", pick(r, SUBJECTS));
        self.key("posts");
        self.put("[");
        let posts = 1 + r.u32(0..3);
        let mut at = stamp + r.i64(0..864_000);
        for p in 0..posts {
            if p > 0 {
                self.put(",");
            }
            self.put("{\"id\":");
            let id = self.next_post;
            self.next_post += 1;
            self.json(&id);
            self.put(",\"user_id\":");
            self.json(&(1 + r.u64(0..USERS)));
            self.put(",\"text\":");
            self.rich_scratch(r.u64(..), 0, ex, 35);
            self.scratch_value();
            self.put(",\"ts_created\":");
            self.json(&ts(r, at).rfc3339());
            self.put("}");
            at += r.i64(60..172_800);
        }
        self.put("]");
        self.end(CONVERSATION)
    }

    /// Records that are not Looker objects but refer to them: articles, tables with object
    /// sets, glossary terms and free-standing conversations.
    pub(super) fn extras(&mut self, i: u64) -> Result<()> {
        let lay = self.lay;
        let mut r = Rng::with_seed(mix(lay.seed, i, 4));
        let stamp = 1_600_000_000 + r.i64(0..94_608_000);
        if r.u32(0..100) < 5 {
            self.begin(ARTICLE);
            self.num("id", self.next_article);
            self.next_article += 1;
            self.scratch.clear();
            self.scratch.push_str("How to read the ");
            self.scratch.push_str(pick(&mut r, SUBJECTS));
            self.scratch.push_str(" dashboards");
            self.scratch_field("title");
            self.rich_scratch(r.u64(..), 0, None, 70);
            self.scratch_field("body");
            self.ts("ts_updated", ts(&mut r, stamp));
            self.end(ARTICLE)?;
        }
        if r.u32(0..100) < 2 {
            self.conversation(&mut r, None, None, stamp)?;
        }
        if i.is_multiple_of(TABLE_EVERY) {
            let id = i / TABLE_EVERY + 1;
            self.begin(TABLE);
            self.num("id", id);
            self.scratch.clear();
            self.scratch.push_str("analytics.");
            self.scratch.push_str(pick(&mut r, COLUMNS));
            self.scratch.push_str("_facts_");
            push_num(&mut self.scratch, id);
            self.scratch_field("name");
            self.str("schema", "analytics");
            self.end(TABLE)?;
            let subj = Subj::new("table", id);
            self.fv_begin(subj, F_RELATED);
            let k = 1 + r.u32(0..4);
            let members: Vec<Subj> = (0..k).map(|_| lay.pick_member(&mut r, None)).collect();
            self.key("value");
            self.json(&members);
            self.fv_end(&mut r, stamp)?;
            if r.bool() {
                self.fv_begin(subj, F_DESCRIPTION);
                self.rich_scratch(r.u64(..), 0, None, 50);
                self.scratch_field("value");
                self.fv_end(&mut r, stamp)?;
            }
        }
        if i % GLOSSARY_EVERY == GLOSSARY_AT {
            self.begin(GLOSSARY_TERM);
            self.num("id", i / GLOSSARY_EVERY + 1);
            self.str("term", pick(&mut r, SUBJECTS));
            // Nested values of every JSON type, which the migration must keep as they are.
            self.key("extra");
            self.put("{\"synonyms\":[");
            self.json(pick(&mut r, QUALIFIERS));
            self.put(
                ",\"KPI\"],\"weight\":0.25,\"nested\":{\"a\":[1,2,{\"b\":null}],\"ok\":true}}",
            );
            self.end(GLOSSARY_TERM)?;
        }
        Ok(())
    }
}
