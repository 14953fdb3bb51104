//! The review page in a real browser: headless Chromium, driven through the DevTools protocol
//! (a small websocket client below), opens pages made from sample bundles; the test searches,
//! opens a group, takes a conflict's other value and gives an unresolved report its id with
//! real mouse and keyboard events, saves decisions.csv through the page's Blob link, and
//! `migrate --decisions` with that very file gives the expected records.
//!
//! It fails (never skips) when Chromium is missing: `apt-get install chromium` (`.ci/run` does).

use crate::util::{self, arg, changes, sample, values, Dir};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary, or a failure that says how to install it.
fn chromium() -> String {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return name.to_string();
        }
    }
    panic!("chromium is missing: the review page is tested in headless Chromium; install it with `apt-get install chromium` (.ci/run does)");
}

/// A headless Chromium with its DevTools endpoint on 127.0.0.1, killed when dropped.
struct Browser {
    child: Child,
    port: u16,
    _profile: Dir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start(url: &str) -> Browser {
        let profile = Dir::new();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://127.0.0.1:") {
                    let rest = &line[at + "ws://127.0.0.1:".len()..];
                    let port: u16 = rest[..rest.find('/').unwrap_or(rest.len())]
                        .parse()
                        .unwrap_or(0);
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium prints its DevTools address within a minute");
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// The DevTools session of the page showing `url`.
    fn page(&self, url: &str) -> Cdp {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list: Value = serde_json::from_str(&http_get(self.port, "/json/list"))
                .expect("/json/list is JSON");
            if let Some(ws) = list.as_array().and_then(|l| {
                l.iter()
                    .find(|t| t["type"] == "page" && t["url"] == url)
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            }) {
                return Cdp::connect(ws);
            }
            assert!(
                Instant::now() < deadline,
                "no page target for {url}: {list}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("DevTools HTTP endpoint");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Read the head, then as many bytes as Content-Length says (the server may keep the
    // connection open).
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("DevTools HTTP response");
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("DevTools HTTP body");
    String::from_utf8_lossy(&body).into_owned()
}

/// A DevTools protocol session over a minimal websocket client (RFC 6455: text frames, client
/// frames masked, fragmented server messages joined).
struct Cdp {
    s: TcpStream,
    next: u64,
}

impl Cdp {
    fn connect(ws: &str) -> Cdp {
        let rest = ws.strip_prefix("ws://").expect("a ws:// address");
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut s = TcpStream::connect(host).expect("DevTools websocket");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).expect("websocket handshake");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        Cdp { s, next: 0 }
    }

    fn send(&mut self, text: &str) {
        let p = text.as_bytes();
        let mut f = vec![0x81u8];
        match p.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).expect("websocket write");
    }

    fn receive(&mut self) -> String {
        let mut msg = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).expect("websocket read");
            let (fin, op) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                self.s.read_exact(&mut b).unwrap();
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.s.read_exact(&mut b).unwrap();
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            self.s.read_exact(&mut payload).unwrap();
            assert_ne!(op, 8, "the browser closed the DevTools connection");
            if op == 9 || op == 10 {
                continue; // ping, pong
            }
            msg.extend_from_slice(&payload);
            if fin {
                return String::from_utf8(msg).expect("DevTools messages are UTF-8");
            }
        }
    }

    /// Calls a DevTools method and returns its result (events in between are dropped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let v: Value = serde_json::from_str(&self.receive()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy.
    fn wait_for(&mut self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // Not yet there (no body, no element) counts as false, not as an error.
        let probe =
            format!("(() => {{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()");
        while !self.eval(&probe).as_bool().unwrap_or(false) {
            assert!(Instant::now() < deadline, "timed out waiting for {expr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A real mouse click (trusted input events) in the middle of the element `selector`
    /// finds; `pick` is a JavaScript filter over the matches, for buttons told apart by text.
    fn click(&mut self, selector: &str, pick: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = Array.from(document.querySelectorAll({sel})).filter(e => {pick})[0];
               if (!e) return null; e.scrollIntoView({{block: 'center'}});
               const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = serde_json::to_string(selector).unwrap()
        ));
        let (x, y) = (
            at[0]
                .as_f64()
                .unwrap_or_else(|| panic!("nothing to click: {selector} / {pick}")),
            at[1].as_f64().unwrap(),
        );
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Types text into the focused element, as a keyboard would.
    fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// Saves the decisions with the page's button and reads the Blob the link points at.
    fn save_decisions(&mut self) -> String {
        self.click("nav button", "e.dataset.tab === 'decisions'");
        self.click("#save", "true");
        self.wait_for("document.getElementById('save-link').href.startsWith('blob:')");
        self.eval("fetch(document.getElementById('save-link').href).then(r => r.text())")
            .as_str()
            .expect("the Blob holds text")
            .to_string()
    }
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

#[test]
fn the_review_page_decides_a_conflict_and_an_unresolved_report_in_chromium() {
    chromium();
    let d = Dir::new();
    // Sample 10: three versions of dashboard 12, with conflicts.
    let export = sample("10-collapse-versions").join("export.ndjson");
    util::migrate(d.path(), &export, &d.join("a.bundle"), &[]).ok();
    d.run([
        "review",
        &arg(&d.join("a.bundle")),
        "-o",
        &arg(&d.join("a.html")),
    ])
    .ok();
    let url = file_url(&d.join("a.html"));
    let browser = Browser::start(&url);
    let mut page = browser.page(&url);
    page.wait_for("document.body.dataset.ready");
    let id = page.eval("document.getElementById('bundle-id').textContent");
    let manifest = std::fs::read(d.join("a.bundle").join("manifest.json")).unwrap();
    assert_eq!(id, util::sha256_hex(&manifest));
    // Search, open the group.
    page.click("nav button", "e.dataset.tab === 'groups'");
    page.click("#search", "true");
    page.type_text("sales v3");
    page.wait_for("document.querySelectorAll('#group-rows tr').length === 1");
    page.click("#group-rows tr", "true");
    page.wait_for("document.getElementById('detail-title')");
    let title = page.eval("document.getElementById('detail-title').textContent");
    assert!(title.as_str().unwrap().contains("dashboard/12"), "{title}");
    let cells = page.eval("document.getElementById('curation').textContent");
    assert!(
        cells.as_str().unwrap().contains("Old description."),
        "{cells}"
    );
    // Take the losing description instead of the winner.
    page.click(
        ".conflict .take",
        "e.closest('.conflict').textContent.includes('Old description.')",
    );
    page.wait_for("document.getElementById('decision-count').textContent === '1'");
    let csv = page.save_decisions();
    // The Blob and the text on the page agree (a textarea's value has its CRLFs as LFs).
    assert_eq!(
        csv.replace("\r\n", "\n"),
        page.eval("document.getElementById('decisions-csv').value")
    );
    let file = d.write("decisions.csv", &csv);
    util::migrate(
        d.path(),
        &export,
        &d.join("b.bundle"),
        &["--decisions".into(), arg(&file)],
    )
    .ok();
    let field = changes(&d.join("b.bundle"))
        .into_iter()
        .find(|c| c["kind"] == "field_value" && c["key"] == "bi_report:103:4")
        .expect("the description of 103 changes");
    assert_eq!(util::after(&field)["value"], "<p>Old description.</p>");
    // The decided bundle's page shows the decision as made.
    d.run([
        "review",
        &arg(&d.join("b.bundle")),
        "-o",
        &arg(&d.join("b.html")),
    ])
    .ok();
    let url_b = file_url(&d.join("b.html"));
    page.call("Page.navigate", json!({ "url": url_b }));
    page.wait_for(&format!(
        "location.href === {} && document.body.dataset.ready",
        serde_json::to_string(&url_b).unwrap()
    ));
    assert_eq!(
        page.eval("document.getElementById('decision-count').textContent"),
        "1"
    );

    // Sample 06: unresolved reports; give report-alpha its stable id.
    let export = sample("06-unresolved").join("export.ndjson");
    util::migrate(d.path(), &export, &d.join("u.bundle"), &[]).ok();
    d.run([
        "review",
        &arg(&d.join("u.bundle")),
        "-o",
        &arg(&d.join("u.html")),
    ])
    .ok();
    let url_u = file_url(&d.join("u.html"));
    page.call("Page.navigate", json!({ "url": url_u }));
    page.wait_for(&format!(
        "location.href === {} && document.body.dataset.ready",
        serde_json::to_string(&url_u).unwrap()
    ));
    page.click("nav button", "e.dataset.tab === 'unresolved'");
    page.click("#unresolved-rows tr[data-oid='601'] input", "true");
    page.type_text("dashboard/77");
    page.click("#unresolved-rows tr[data-oid='601'] .use", "true");
    page.wait_for("document.getElementById('decision-count').textContent === '1'");
    let csv = page.save_decisions();
    let file = d.write("decisions-u.csv", &csv);
    util::migrate(
        d.path(),
        &export,
        &d.join("v.bundle"),
        &["--decisions".into(), arg(&file)],
    )
    .ok();
    let line = values(&d.join("v.bundle").join("idmap.ndjson.zst"))
        .into_iter()
        .find(|l| l["oid"] == 601)
        .expect("report 601 is mapped");
    assert_eq!(line["stable_external_id"], "dashboard/77");
}

/// Not a test of behaviour: measures a page's time to first render and to ready in headless
/// Chromium, and saves a screenshot. `LOOKMIG_REVIEW_PAGE=page.html [LOOKMIG_REVIEW_SHOT=x.png]
/// cargo test --release --test tests browser::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure() {
    let path = std::env::var("LOOKMIG_REVIEW_PAGE").expect("LOOKMIG_REVIEW_PAGE names a page");
    let url = file_url(Path::new(&path));
    let started = Instant::now();
    let browser = Browser::start(&url);
    let mut page = browser.page(&url);
    page.wait_for("document.body && document.body.dataset.ready");
    let wall = started.elapsed();
    let t = page.eval(
        "JSON.stringify({fcp: (performance.getEntriesByName('first-contentful-paint')[0]||{}).startTime,
          dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
          load: performance.getEntriesByType('navigation')[0].loadEventEnd,
          script_ms: +document.body.dataset.ready, interactive_at: +document.body.dataset.readyAt})",
    );
    page.wait_for("document.readyState === 'complete'");
    let loaded = started.elapsed();
    let dcl = page.eval("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd");
    let t0 = Instant::now();
    page.click("nav button", "e.dataset.tab === 'groups'");
    page.wait_for("document.querySelectorAll('#group-rows tr').length > 0");
    let groups_tab = t0.elapsed();
    let t1 = Instant::now();
    page.click("#group-rows tr", "true");
    page.wait_for("document.querySelector('#detail h3')");
    let open = t1.elapsed();
    let t2 = Instant::now();
    page.click("#search", "true");
    page.type_text("dashboard/1");
    page.wait_for("document.getElementById('group-count').textContent.includes(' of ') && !document.getElementById('group-count').textContent.startsWith(document.getElementById('group-count').textContent.split(' of ')[1])");
    let search = t2.elapsed();
    println!(
        "page {path}: {} bytes; {t}; chromium start to ready {wall:?}, to loaded {loaded:?} (DOMContentLoaded at {dcl} ms); groups tab {groups_tab:?}; open a group {open:?}; search {search:?}",
        std::fs::metadata(&path).unwrap().len()
    );
    if let Ok(shot) = std::env::var("LOOKMIG_REVIEW_SHOT") {
        // The first group with conflicts, opened, then the summary.
        page.click("#filter", "true");
        page.eval("(() => { const f = document.getElementById('filter'); f.value = 'conflicts'; f.dispatchEvent(new Event('change')); })()");
        page.click("#group-rows tr", "true");
        page.eval("document.getElementById('detail').scrollIntoView()");
        screenshot(&mut page, &shot.replace(".png", "-group.png"));
        page.click("nav button", "e.dataset.tab === 'summary'");
        page.eval("window.scrollTo(0, 0)");
        screenshot(&mut page, &shot);
    }
}

fn screenshot(page: &mut Cdp, path: &str) {
    let r = page.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": false}),
    );
    std::fs::write(path, base64_decode(r["data"].as_str().unwrap())).unwrap();
    println!("screenshot {path}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            _ => 63,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
