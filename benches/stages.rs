//! Criterion benchmarks of the pipeline's stages on realistic inputs: reading a line (the
//! validating probe), key resolution (SPEC §2), mention rewriting (§5) and the merge of one
//! group's curation (§4). Run with `cargo bench --bench stages`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use lookmig::keys::{self, IdMap};
use lookmig::merge::{merge_group, Item};
use lookmig::record::{parse_line, Probe, Subject};
use lookmig::refs::{Fields, RefMap};

/// A few thousand lines of a generated export, the same every run.
fn sample_lines() -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let opts = lookmig::generate::GenerateOptions {
        reports: 200,
        seed: 7,
        servers: 2,
    };
    lookmig::generate::generate(&opts, &mut buf).expect("generating");
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn read(c: &mut Criterion) {
    let lines = sample_lines();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("probe+key", |b| {
        b.iter(|| {
            for l in &lines {
                let p = Probe::parse(l).expect("valid");
                black_box(p.key());
            }
        })
    });
    // What restore and verify read per line: every field kept too (Probe::parse_whole).
    g.bench_function("probe whole+key", |b| {
        b.iter(|| {
            for l in &lines {
                let p = Probe::parse_whole(l).expect("valid");
                black_box(p.key());
            }
        })
    });
    g.bench_function("full parse", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(parse_line(l).expect("valid"));
            }
        })
    });
    g.finish();
}

fn key_resolution(c: &mut Criterion) {
    let ids: Vec<(String, Option<String>)> = (0..10_000)
        .map(|i| match i % 5 {
            0 => (format!("dashboard_{i}_1690000{i:03}"), None),
            1 => (format!("look_{i}_17000{i:05}"), None),
            2 => (
                format!("lookml_dashboard_model_{}::view_{i}_1690000000", i % 7),
                None,
            ),
            3 => (format!("dashboard/{i}"), None),
            _ => (
                format!("report-{i}"),
                Some(format!(
                    "https://looker.example.com/dashboards-next/{i}/?x=1"
                )),
            ),
        })
        .collect();
    let map = IdMap::default();
    let mut g = c.benchmark_group("keys");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("resolve", |b| {
        b.iter(|| {
            for (id, url) in &ids {
                black_box(keys::resolve(&map, 1, id, url.as_deref()));
            }
        })
    });
    g.finish();
}

fn mention_rewriting(c: &mut Criterion) {
    let mut html = String::from("<p>Quarterly revenue, see also ");
    for i in 0..8 {
        html.push_str(&format!(
            r#"<a href="/bi/v2/report/{0}/" data-oid="{0}" data-otype="bi_report">report {0}</a> and <b>notes</b> &amp; text; "#,
            100 + i
        ));
    }
    html.push_str("</p><p>No mention here, only <i>markup</i>.</p>");
    let plain =
        "A description without any link, long enough to be typical of a catalog field. ".repeat(4);
    let lookup = |_: &str, oid: i64| (oid % 2 == 0).then_some(oid + 1000);
    let mut g = c.benchmark_group("mentions");
    g.throughput(Throughput::Bytes(html.len() as u64));
    g.bench_function("rewrite 8 mentions", |b| {
        b.iter(|| black_box(lookmig::mentions::rewrite(&html, lookup)))
    });
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("no mention (fast path)", |b| {
        b.iter(|| black_box(lookmig::mentions::rewrite(&plain, lookup)))
    });
    g.finish();
}

fn merge(c: &mut Criterion) {
    // Three versions of one report, each with a description, stewards, tags, stars and flags.
    let mut items = Vec::new();
    let mut line = 0;
    for (rank, oid) in [(0usize, 3i64), (1, 2), (2, 1)] {
        let subject = format!(r#"{{"otype":"bi_report","oid":{oid}}}"#);
        let records = [
            format!(
                r#"{{"kind":"field_value","field_id":4,"subject":{subject},"value":"<p>Version {oid}</p>","ts_updated":"2024-0{oid}-01T00:00:00Z"}}"#
            ),
            format!(
                r#"{{"kind":"field_value","field_id":8,"subject":{subject},"value":[{{"otype":"user","oid":{oid}}},{{"otype":"user","oid":9}}]}}"#
            ),
            format!(r#"{{"kind":"tag","name":"finance","subject":{subject}}}"#),
            format!(r#"{{"kind":"tag","name":"v{oid}","subject":{subject}}}"#),
            format!(
                r#"{{"kind":"star","user_id":5,"subject":{subject},"ts_created":"2024-0{oid}-02T00:00:00Z"}}"#
            ),
            format!(
                r#"{{"kind":"trust_flag","id":{oid},"flag_type":"ENDORSEMENT","subject":{subject},"user_id":5,"reason":"ok {oid}","ts_created":"2024-0{oid}-03T00:00:00Z"}}"#
            ),
        ];
        for r in records {
            line += 1;
            let rec = parse_line(r.as_bytes()).expect("valid");
            items.push(Item {
                rank,
                line,
                before: rec.clone().into(),
                after: rec,
            });
        }
    }
    let survivor = Subject {
        otype: "bi_report".into(),
        oid: 3,
    };
    let fields = Fields::default();
    let _ = RefMap::default();
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("group of 3 versions", |b| {
        b.iter(|| black_box(merge_group(&survivor, items.clone(), &fields)))
    });
    g.finish();
}

criterion_group!(benches, read, key_resolution, mention_rewriting, merge);
criterion_main!(benches);
