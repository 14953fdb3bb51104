//! The catalog's objects: users, BI servers, folders, reports and their columns, in the forms
//! of SPEC §2 — legacy ids with several versions, ids already stable, ids only in `source_url`,
//! ids that cannot be resolved, deleted versions — and a non-Looker server whose reports look
//! like Looker ones on purpose.

use super::curation::VersionCtx;
use super::layout::{distinct, mix, pick, shape, Form, Layout, Subj};
use super::text::{push_num, title, user_name};
use super::vocab::{
    BI_FOLDER, BI_REPORT, BI_REPORT_COLUMN, BI_SERVER, COLUMNS, DATA_TYPES, MODELS, TAB_COLUMNS,
    USER, USERS,
};
use super::write::{ts, Ts};
use super::Gen;
use anyhow::Result;
use fastrand::Rng;
use std::io::Write;

impl<W: Write> Gen<W> {
    /// A dashboard's URL, in the old or the new (`dashboards-next`) form.
    fn dashboard_url(r: &mut Rng, uri: &str, ident: u64) -> String {
        let page = if r.u32(0..4) == 0 {
            "dashboards-next"
        } else {
            "dashboards"
        };
        format!("{uri}/{page}/{ident}")
    }

    /// The `user` records: ids `1..=USERS`, which stewards, flags, stars and posts refer to.
    pub(super) fn users(&mut self) -> Result<()> {
        let mut r = Rng::with_seed(mix(self.lay.seed, u64::MAX, 0));
        for u in 1..=USERS {
            self.begin(USER);
            self.num("id", u);
            self.scratch.clear();
            self.scratch.push_str(&user_name(&mut r, u));
            self.scratch_field("name");
            self.scratch.clear();
            self.scratch.push_str("user");
            push_num(&mut self.scratch, u);
            self.scratch.push_str("@example.com");
            self.scratch_field("email");
            self.end(USER)?;
        }
        Ok(())
    }

    /// The Looker servers, then one Tableau server whose reports must be left alone.
    pub(super) fn servers(&mut self) -> Result<()> {
        let lay = self.lay;
        for s in 1..=lay.servers {
            self.begin(BI_SERVER);
            self.num("id", s);
            self.str("type", "looker");
            let title = match s {
                1 => "Looker production".to_string(),
                2 => "Looker staging".to_string(),
                _ => format!("Looker instance {s}"),
            };
            self.str("title", &title);
            self.str("uri", &looker_uri(s));
            self.end(BI_SERVER)?;
        }
        self.begin(BI_SERVER);
        self.num("id", lay.tab_server());
        self.str("type", "tableau");
        self.str("title", "Tableau Server");
        self.str("uri", "https://tableau.example.com");
        self.end(BI_SERVER)
    }

    /// The folders of every server, each a child of an earlier one (a tree four wide).
    pub(super) fn folders(&mut self) -> Result<()> {
        let lay = self.lay;
        let per = lay.folders_per_server();
        let mut oid = 1;
        let mut r = Rng::with_seed(mix(lay.seed, u64::MAX, 1));
        for s in 1..=lay.tab_server() {
            for f in 0..per {
                self.begin(BI_FOLDER);
                self.num("oid", oid);
                oid += 1;
                self.num("server_id", s);
                let ext = folder_ext(&lay, s, f);
                self.str("external_id", &ext);
                self.scratch.clear();
                self.scratch.push_str(&title(&mut r));
                self.scratch_field("name");
                if f > 0 {
                    let parent = folder_ext(&lay, s, (f - 1) / 4);
                    self.str("parent_folder", &parent);
                }
                self.end(BI_FOLDER)?;
            }
        }
        Ok(())
    }

    /// Reports of the non-Looker server: some look like legacy Looker ids on purpose.
    pub(super) fn tab_report(&mut self, k: u64) -> Result<()> {
        let lay = self.lay;
        let mut r = Rng::with_seed(mix(lay.seed, k, 5));
        let nv = lay.tab_versions(k);
        let server = lay.tab_server();
        let created = 1_546_300_800 + r.i64(0..94_608_000);
        let mut stamp = created + r.i64(3600..864_000);
        let desc_seed = r.u64(..);
        let name = title(&mut r);
        let folder = folder_ext(&lay, server, r.u64(0..lay.folders_per_server()));
        for v in 0..nv {
            let ext = match k % 3 {
                0 => format!("dashboard_{}_{}", k + 1, stamp),
                1 => format!("workbook-{:08x}-{}", mix(lay.seed, k, 6) as u32, v + 1),
                _ => format!("look_{}_{}", k + 1, stamp),
            };
            self.begin(BI_REPORT);
            self.num("oid", lay.tab_report_oid(k, v));
            self.num("server_id", server);
            self.str("external_id", &ext);
            self.str("name", &name);
            self.str("report_type", "workbook");
            self.str("parent_folder", &folder);
            self.str(
                "source_url",
                &format!(
                    "https://tableau.example.com/#/views/{}/dashboards/{}",
                    k + 1,
                    k + 1
                ),
            );
            self.ts("created_at", ts(&mut r, created));
            self.ts("last_updated", ts(&mut r, stamp));
            self.end(BI_REPORT)?;
            for c in 0..TAB_COLUMNS {
                self.begin(BI_REPORT_COLUMN);
                self.num("oid", lay.tab_column_oid(k, v, c));
                self.num("server_id", server);
                self.str("external_id", &format!("{}.{}", ext, COLUMNS[c as usize]));
                self.str("report", &ext);
                self.str("name", COLUMNS[c as usize]);
                self.end(BI_REPORT_COLUMN)?;
            }
            let ctx = VersionCtx {
                report: None,
                subject: Subj::new("bi_report", lay.tab_report_oid(k, v)),
                stamp,
                desc_seed,
            };
            self.curate_version(&mut r, &ctx)?;
            stamp += r.i64(3600..2_592_000);
        }
        Ok(())
    }

    /// One logical Looker report: its versions, their columns and their curation.
    pub(super) fn report(&mut self, i: u64) -> Result<()> {
        let lay = self.lay;
        let sh = shape(lay.seed, i);
        let mut r = Rng::with_seed(mix(lay.seed, i, 2));
        let server = i % lay.servers + 1;
        let ident = i / lay.servers + 1;
        let uri = looker_uri(server);
        let nv = sh.nv as usize;

        // Version stamps (unix seconds) and timestamps.
        let created = 1_546_300_800 + r.i64(0..94_608_000);
        let mut stamps = [0i64; 4];
        let mut updated: [Option<i64>; 4] = [None; 4];
        let mut deleted = [false; 4];
        let mut t = created + r.i64(0..7_776_000);
        for v in 0..nv {
            t += r.i64(3600..5_184_000);
            stamps[v] = t;
            updated[v] = match r.u32(0..100) {
                0..=2 => None,
                3..=7 if v > 0 => updated[v - 1],
                _ => Some(t + r.i64(0..600)),
            };
            deleted[v] = if v + 1 < nv {
                r.u32(0..100) < 20
            } else {
                r.u32(0..100) < 3
            };
        }

        let model = pick(&mut r, MODELS);
        let lookml_name = format!("{}_{}", pick(&mut r, COLUMNS), ident);
        let look = r.bool();
        let (report_type, stable_prefix) = match sh.form {
            Form::Look => ("look", "look"),
            Form::LookmlDashboard => ("lookml_dashboard", "lookml_dashboard"),
            Form::Stable | Form::UrlOnly if look => ("look", "look"),
            _ => ("dashboard", "dashboard"),
        };
        let url_variant = r.u32(0..4);
        let base_name = title(&mut r);
        let folders = lay.folders_per_server();
        let mut folder = r.u64(0..folders);
        let desc_seed = r.u64(..);

        // Column names shared by the versions.
        let mut cols = [0usize; 5];
        {
            let (idx, len) = distinct(&mut r, sh.ncols as usize, COLUMNS.len() as u64);
            for c in 0..len {
                cols[c] = idx[c] as usize;
            }
        }

        let mut exts: [String; 4] = Default::default();
        for v in 0..nv {
            let stamp = stamps[v];
            exts[v] = match sh.form {
                Form::Dashboard => format!("dashboard_{ident}_{stamp}"),
                Form::Look => format!("look_{ident}_{stamp}"),
                Form::LookmlDashboard => {
                    format!("lookml_dashboard_{model}::{lookml_name}_{stamp}")
                }
                Form::Stable if v + 1 == nv => format!("{stable_prefix}/{ident}"),
                Form::Stable => format!("{stable_prefix}_{ident}_{stamp}"),
                Form::UrlOnly => match (look, url_variant % 2) {
                    (false, 0) => format!("dashboard_ext_{ident}_{stamp}"),
                    (false, _) => format!("dashboard-{ident}-v{stamp}"),
                    (true, 0) => format!("look-{ident}@{stamp}"),
                    (true, _) => format!("looks_{ident}_{stamp}"),
                },
                Form::Unresolvable => match (i + v as u64) % 4 {
                    0 => format!("explore_{:012x}", mix(lay.seed, i, 3 + v as u64) >> 16),
                    1 => format!("dashboard_{ident}"),
                    2 => format!("report-{}-{}", ident, v + 1),
                    _ => format!("look_{ident}_v{}", v + 1),
                },
            };
        }

        // Report versions.
        for v in 0..nv {
            let oid = lay.report_oid(i, sh.slot(v as u64));
            self.begin(BI_REPORT);
            self.num("oid", oid);
            self.num("server_id", server);
            self.str("external_id", &exts[v]);
            if r.u32(0..10) == 0 {
                self.scratch.clear();
                self.scratch.push_str(&base_name);
                self.scratch.push_str(" (v");
                push_num(&mut self.scratch, v as u64 + 1);
                self.scratch.push(')');
                self.scratch_field("name");
            } else {
                self.str("name", &base_name);
            }
            self.str("report_type", report_type);
            if r.u32(0..10) == 0 {
                folder = r.u64(0..folders);
            }
            let fext = folder_ext(&lay, server, folder);
            self.str("parent_folder", &fext);
            let url = match sh.form {
                Form::Dashboard => Some(Self::dashboard_url(&mut r, &uri, ident)),
                Form::Stable if !look => Some(Self::dashboard_url(&mut r, &uri, ident)),
                Form::Look | Form::Stable => Some(format!("{uri}/looks/{ident}")),
                Form::LookmlDashboard => Some(format!("{uri}/dashboards/{model}::{lookml_name}")),
                Form::UrlOnly => Some(match (look, url_variant) {
                    (false, 0) => format!("{uri}/dashboards-next/{ident}?x=1"),
                    (false, 1) => format!("{uri}/dashboards/{ident}/"),
                    (false, 2) => format!("{uri}/embed/dashboards/{ident}#tab=2"),
                    (false, _) => format!("{uri}/dashboards/{model}::{lookml_name}"),
                    (true, 0) => format!("{uri}/looks/{ident}/"),
                    (true, 1) => format!("{uri}/looks/{ident}?qid=abc&toggle=fil"),
                    (true, _) => format!("{uri}/looks/{ident}"),
                }),
                Form::Unresolvable => match (i + v as u64) % 3 {
                    0 => None,
                    1 => Some(format!("{uri}/explore/{model}/orders?qid=Zx{ident}")),
                    _ => Some(format!("{uri}/browse/boards/{ident}")),
                },
            };
            if let Some(url) = url {
                self.str("source_url", &url);
            }
            self.ts("created_at", ts(&mut r, created));
            if let Some(u) = updated[v] {
                self.ts("last_updated", Ts::utc(u));
            }
            if deleted[v] {
                self.raw("deleted", "true");
            } else if r.bool() {
                self.raw("deleted", "false");
            }
            match r.u32(0..20) {
                0 => self.num("owner_id", 1 + r.u64(0..USERS)),
                1 => {
                    self.key("metadata");
                    self.put("{\"tiles\":");
                    self.json(&r.u64(1..30));
                    self.put(",\"filters\":[\"date\",\"region\"],\"ratio\":0.75}");
                }
                _ => {}
            }
            self.end(BI_REPORT)?;
        }

        // Columns.
        for v in 0..nv {
            let slot = sh.slot(v as u64);
            for c in 0..sh.cols(v as u64) {
                let name = COLUMNS[cols[c as usize]];
                self.begin(BI_REPORT_COLUMN);
                self.num("oid", lay.column_oid(i, slot, c));
                self.num("server_id", server);
                self.scratch.clear();
                if r.u32(0..100) >= 8 {
                    self.scratch.push_str(&exts[v]);
                    self.scratch.push('.');
                }
                self.scratch.push_str(name);
                self.scratch_field("external_id");
                self.str("report", &exts[v]);
                self.str("name", name);
                self.str("data_type", DATA_TYPES[cols[c as usize]]);
                if deleted[v] || r.u32(0..100) < 3 {
                    self.raw("deleted", "true");
                }
                self.end(BI_REPORT_COLUMN)?;
            }
        }

        self.report_curation(&mut r, i, &sh, &stamps[..nv], desc_seed)
    }
}

/// The URL of Looker server `server`.
fn looker_uri(server: u64) -> String {
    if server == 1 {
        "https://looker.example.com".to_string()
    } else {
        format!("https://looker{server}.example.com")
    }
}

/// The external_id of folder `f` of server `server`.
fn folder_ext(lay: &Layout, server: u64, f: u64) -> String {
    if server == lay.tab_server() {
        format!("project-{}", f + 1)
    } else {
        (f + 1).to_string()
    }
}
