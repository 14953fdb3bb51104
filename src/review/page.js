"use strict";
// The review page's script: lists rendered 100 rows at a time, group details parsed from their
// chunk only when a group is opened, decisions kept in memory (and in localStorage, per bundle
// id) and saved as decisions.csv through a Blob link. No network, no outside files.
(function () {
  var T0 = performance.now();
  var D = JSON.parse(document.getElementById("data").textContent);
  var PAGE = 100;
  var COLS = D.decision_columns;
  var FIELD_NAMES = { 3: "title", 4: "description", 8: "stewards" };
  var STABLE = /^(dashboard|look|lookml_dashboard)\/.+$/;

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c == null) continue;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  // Rich text shown as text: tags removed, a few entities decoded; never inserted as HTML.
  function plain(v) {
    if (v == null) return "";
    if (typeof v !== "string") return JSON.stringify(v);
    return v.replace(/<[^>]*>/g, " ").replace(/&nbsp;/g, " ").replace(/&lt;/g, "<").replace(/&gt;/g, ">")
      .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, "&").replace(/\s+/g, " ").trim();
  }
  // The mentions of rich text: the <a> tags with data-otype and data-oid (SPEC §5), as text.
  function mentions(v) {
    if (typeof v !== "string" || v.indexOf("data-oid") < 0) return "";
    var out = [], tags = v.match(/<a\b[^>]*>/gi) || [];
    tags.forEach(function (t) {
      var o = /data-otype\s*=\s*["']?([^"'\s>]+)/i.exec(t), i = /data-oid\s*=\s*["']?([^"'\s>]+)/i.exec(t);
      if (o && i) out.push(o[1] + " " + i[1]);
    });
    return out.length ? " [mentions " + out.join(", ") + "]" : "";
  }
  function short(s, n) { s = String(s); n = n || 160; return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  // ---- decisions -------------------------------------------------------------------------
  var decisions = new Map();
  var STORE = "lookmig-decisions-" + D.id;
  function dkey(d) {
    return d.action === "choose"
      ? ["c", d.survivor_otype, d.survivor_oid, d.kind, d.merge_key].join("|")
      : ["m", d.server_id, d.legacy_external_id].join("|");
  }
  function fromBundle(x) {
    var d = { action: x.action, note: "decided earlier (line " + x.line + " of the decisions file)" };
    if (x.action === "choose") {
      d.survivor_otype = x.survivor.otype; d.survivor_oid = String(x.survivor.oid);
      d.kind = x.kind; d.merge_key = x.merge_key;
      d.choose_oid = x.choose_oid == null ? "" : String(x.choose_oid);
      d.value_sha256 = x.value_sha256 || "";
    } else {
      d.server_id = x.server_id == null ? "" : String(x.server_id);
      d.legacy_external_id = x.legacy_external_id; d.stable_external_id = x.stable_external_id;
    }
    return d;
  }
  (D.decisions || []).forEach(function (x) { var d = fromBundle(x); decisions.set(dkey(d), d); });
  try {
    var saved = JSON.parse(localStorage.getItem(STORE) || "[]");
    saved.forEach(function (d) { decisions.set(dkey(d), d); });
  } catch (e) { /* storage unavailable from this file: decisions live in this tab only */ }
  function cell(s) {
    s = s == null ? "" : String(s);
    return /[",\r\n]/.test(s) || /^\s|\s$/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csv() {
    var lines = [COLS.join(",")];
    decisions.forEach(function (d) {
      lines.push(COLS.map(function (c) { return cell(d[c]); }).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }
  function changed() {
    try { localStorage.setItem(STORE, JSON.stringify(Array.from(decisions.values()))); } catch (e) { }
    document.getElementById("decision-count").textContent = decisions.size;
    var ta = document.getElementById("decisions-csv");
    if (ta) ta.value = csv();
    var n = document.getElementById("decisions-n");
    if (n) n.textContent = decisions.size;
  }

  // ---- tabs ------------------------------------------------------------------------------
  var shown = {};
  function tab(name) {
    document.querySelectorAll("nav button").forEach(function (b) { b.classList.toggle("on", b.dataset.tab === name); });
    document.querySelectorAll("main > section").forEach(function (s) { s.hidden = s.id !== name; });
    if (!shown[name] && builders[name]) { builders[name](document.getElementById(name)); }
    shown[name] = true;
  }
  document.getElementById("tabs").addEventListener("click", function (e) {
    var b = e.target.closest("button"); if (b) tab(b.dataset.tab);
  });

  // ---- groups ----------------------------------------------------------------------------
  var G = D.groups; // [name, stable, server, survivor, versions, deleted_left, column_groups, conflicts, changes]
  // Which chunk holds each group's details: the last block of the page, read once it is there.
  var IDX = null;
  function index() {
    // Only once parsing is done: an element still being parsed may hold part of its text.
    if (!IDX && document.readyState !== "loading") IDX = JSON.parse(document.getElementById("chunk-index").textContent);
    return IDX;
  }
  function whenLoaded(f) {
    if (index()) f(); else document.addEventListener("DOMContentLoaded", f, { once: true });
  }
  var hay = null;
  var filtered = null, page = 0, selected = -1;
  function haystack(i) {
    var g = G[i];
    return (g[0] + " " + g[1] + " " + g[3] + " " + g[4].join(" ")).toLowerCase();
  }
  function applyFilter() {
    var q = document.getElementById("search").value.trim().toLowerCase();
    var f = document.getElementById("filter").value;
    var s = document.getElementById("server").value;
    if (q && !hay) { hay = new Array(G.length); for (var i = 0; i < G.length; i++) hay[i] = haystack(i); }
    var out = [];
    for (var j = 0; j < G.length; j++) {
      var g = G[j];
      if (f === "conflicts" && !g[7]) continue;
      if (f === "clean" && g[7]) continue;
      if (s && String(g[2]) !== s) continue;
      if (q && hay[j].indexOf(q) < 0) continue;
      out.push(j);
    }
    filtered = out; page = 0; renderList();
  }
  function renderList() {
    var body = document.getElementById("group-rows");
    body.textContent = "";
    var from = page * PAGE, to = Math.min(filtered.length, from + PAGE);
    var frag = document.createDocumentFragment();
    for (var k = from; k < to; k++) {
      var i = filtered[k], g = G[i];
      var tr = el("tr", { "data-group": i, cls: i === selected ? "sel" : "" },
        el("td", null, g[0] || el("span", { cls: "small", text: "(no name in the bundle)" })),
        el("td", null, el("code", { text: g[1] })),
        el("td", { cls: "num" }, g[2]),
        el("td", { cls: "num" }, g[3]),
        el("td", { cls: "num" }, g[4].length),
        el("td", null, g[7] ? el("span", { cls: "badge", text: g[7] + " conflict" + (g[7] > 1 ? "s" : "") }) : el("span", { cls: "badge ok", text: "none" })));
      frag.appendChild(tr);
    }
    body.appendChild(frag);
    var pages = Math.max(1, Math.ceil(filtered.length / PAGE));
    document.getElementById("group-count").textContent = fmt(filtered.length) + " of " + fmt(G.length) + " groups";
    document.getElementById("group-page").textContent = "page " + (page + 1) + " of " + fmt(pages);
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = page + 1 >= pages;
  }
  function buildGroups(sec) {
    var servers = {};
    G.forEach(function (g) { servers[g[2]] = 1; });
    var sel = el("select", { id: "server", "aria-label": "server" }, el("option", { value: "", text: "All servers" }));
    Object.keys(servers).sort(function (a, b) { return a - b; }).forEach(function (s) { sel.appendChild(el("option", { value: s, text: "Server " + s })); });
    var timer = 0;
    var search = el("input", { id: "search", type: "search", placeholder: "Search name, stable id or oid", "aria-label": "search",
      oninput: function () { clearTimeout(timer); timer = setTimeout(applyFilter, 120); } });
    sec.appendChild(el("div", { cls: "bar" }, search,
      el("select", { id: "filter", "aria-label": "filter", onchange: applyFilter },
        el("option", { value: "all", text: "All groups" }),
        el("option", { value: "conflicts", text: "With conflicts" }),
        el("option", { value: "clean", text: "Without conflicts" })),
      sel,
      el("span", { id: "group-count", cls: "pager" }),
      el("button", { id: "prev", cls: "act alt", onclick: function () { page--; renderList(); } }, "‹ Previous"),
      el("span", { id: "group-page", cls: "pager" }),
      el("button", { id: "next", cls: "act alt", onclick: function () { page++; renderList(); } }, "Next ›")));
    sel.addEventListener("change", applyFilter);
    var note = el("p", { cls: "note", id: "details-note" });
    sec.appendChild(note);
    whenLoaded(function () {
      var n = index().groups_with_details;
      if (n < G.length) note.textContent = "The page holds the before/after details of " + fmt(n) + " of " +
        fmt(G.length) + " groups (groups with conflicts first, up to " + Math.round(D.details.budget_bytes / 1048576) +
        " MB of data). Make it again with a larger --details-mb to see the others.";
    });
    var table = el("table", { cls: "list", id: "group-list" },
      el("thead", null, el("tr", null, el("th", null, "Report name"), el("th", null, "Stable id"), el("th", { cls: "num" }, "Server"),
        el("th", { cls: "num" }, "Survivor oid"), el("th", { cls: "num" }, "Versions"), el("th", null, "Conflicts"))),
      el("tbody", { id: "group-rows" }));
    table.addEventListener("click", function (e) {
      var tr = e.target.closest("tr[data-group]"); if (tr) openGroup(+tr.dataset.group);
    });
    sec.appendChild(table);
    sec.appendChild(el("div", { id: "detail" }));
    applyFilter();
  }

  // ---- one group's details ---------------------------------------------------------------
  var chunks = new Map();
  function chunk(n) {
    if (!chunks.has(n)) {
      var m = new Map();
      JSON.parse(document.getElementById("c" + n).textContent).forEach(function (x) { m.set(x[0], x[1]); });
      chunks.set(n, m);
    }
    return chunks.get(n);
  }
  function after(c) {
    if (c.op === "create") return c.record;
    if (c.op === "delete") return null;
    var r = {};
    for (var k in c.prior) r[k] = c.prior[k];
    for (var s in c.set || {}) r[s] = c.set[s];
    (c.unset || []).forEach(function (u) { delete r[u]; });
    return r;
  }
  function slot(r, kind) {
    switch (kind) {
      case "field_value": return "field " + r.field_id;
      case "trust_flag": return r.flag_type + " by user " + r.user_id;
      case "tag": return "tag " + r.name;
      case "star": return "star by user " + r.user_id;
      case "conversation": return "conversation " + r.id;
      default: return kind + (r.id != null ? " " + r.id : "");
    }
  }
  function slotLabel(s) {
    var m = /^field (\d+)$/.exec(s);
    return m && FIELD_NAMES[m[1]] ? FIELD_NAMES[m[1]] + " (field " + m[1] + ")" : s;
  }
  function describe(r, kind) {
    if (!r) return "";
    switch (kind) {
      case "field_value":
        if (Array.isArray(r.value)) return r.value.map(function (x) { return typeof x === "object" && x ? x.otype + " " + x.oid : String(x); }).join(", ");
        return plain(r.value) + mentions(r.value);
      case "trust_flag": return r.flag_type + (r.reason ? ": " + plain(r.reason) + mentions(r.reason) : "") + (r.ts_created ? " (" + r.ts_created + ")" : "");
      case "tag": return r.name;
      case "star": return "starred" + (r.ts_created ? " " + r.ts_created : "");
      case "conversation": return (r.posts || []).length + " post(s): " + short(plain(((r.posts || [])[0] || {}).text), 120) +
        (r.posts || []).map(function (p) { return mentions(p.text); }).join("");
      default: return short(JSON.stringify(r), 200);
    }
  }
  function openGroup(i) {
    selected = i;
    document.querySelectorAll("#group-rows tr").forEach(function (tr) { tr.classList.toggle("sel", +tr.dataset.group === i); });
    var g = G[i], box = document.getElementById("detail");
    box.textContent = "";
    box.appendChild(el("h2", { id: "detail-title" }, (g[0] || "(no name)") + " — " + g[1] + " (server " + g[2] + ")"));
    box.appendChild(el("p", { cls: "small" }, "Versions in version order: survivor " + g[3] + (g[4].length > 1 ? "; retired " + g[4].slice(1).join(", ") : "") +
      (g[5].length ? "; deleted versions left as they are: " + g[5].join(", ") : "") + ". " + g[6] + " column group(s) with several versions."));
    if (!index()) {
      box.appendChild(el("p", { cls: "note", text: "Loading the details…" }));
      whenLoaded(function () { if (selected === i) openGroup(i); });
      return;
    }
    var at = index().chunks[i];
    if (at < 0) {
      box.appendChild(el("p", { cls: "note", text: "The details of this group are not embedded in this page (see the note above the list); " +
        g[8] + " change(s) of the bundle concern it." }));
      return;
    }
    var entries = chunk(at).get(i) || [];
    var full = index().full[i] === 1;
    var conflicts = [], reports = {}, cols = [], rows = new Map();
    var versions = g[4].concat(g[5]);
    function row(s) { if (!rows.has(s)) rows.set(s, { before: {}, after: null, removed: false }); return rows.get(s); }
    entries.forEach(function (c) {
      if (c.conflict) { conflicts.push(c.conflict); return; }
      var before = c.prior || null, aft = after(c), rec = before || aft;
      if (c.kind === "bi_report") { reports[rec.oid] = { before: before, after: aft, op: c.op }; return; }
      var subj = rec.subject || {};
      if (c.kind === "bi_report_column" || subj.otype === "bi_report_column") { cols.push(c); return; }
      var s = slot(rec, c.kind) + "\u0000" + c.kind;
      var r = row(s);
      if (before && before.subject) r.before[before.subject.oid] = before;
      if (aft && aft.subject && aft.subject.oid === g[3]) r.after = aft;
      if (!aft) r.removed = true;
    });
    if (!full) box.appendChild(el("p", { cls: "note", text: "Only the conflicts of this group are embedded: the page's budget for before/after details ran out (make it again with a larger --details-mb). " +
      g[8] + " change(s) of the bundle concern this group." }));
    // The versions.
    var vt = el("table", { cls: "matrix", id: "versions" }, el("thead", null, el("tr", null,
      el("th", null, "Version oid"), el("th", null, "Role"), el("th", null, "Name"), el("th", null, "external_id before"), el("th", null, "after"))));
    versions.forEach(function (v, k) {
      var rp = reports[v] || {};
      var b = rp.before, a = rp.after;
      var role = k === 0 ? "survivor" : k < g[4].length ? "retired" : "deleted, left as it is";
      vt.appendChild(el("tr", null, el("td", null, v), el("td", null, role), el("td", null, (b || a || {}).name || ""),
        el("td", null, b ? b.external_id : "(unchanged: not in the bundle)"),
        el("td", null, rp.op === "delete" ? "leaves the catalog" : a ? a.external_id : "unchanged")));
    });
    if (full) { box.appendChild(el("h3", null, "Versions")); box.appendChild(vt); }
    // The curation, before on each version and after on the survivor.
    if (full) box.appendChild(el("h3", null, "Curation before and after"));
    var head = el("tr", null, el("th", null, "What"));
    g[4].forEach(function (v, k) { head.appendChild(el("th", null, (k === 0 ? "survivor " : "retired ") + v + " before")); });
    head.appendChild(el("th", null, "survivor " + g[3] + " after"));
    var mt = el("table", { cls: "matrix", id: "curation" }, el("thead", null, head));
    Array.from(rows.keys()).sort().forEach(function (s) {
      var r = rows.get(s), parts = s.split("\u0000"), kind = parts[1];
      var tr = el("tr", null, el("th", null, slotLabel(parts[0])));
      g[4].forEach(function (v) {
        var b = r.before[v];
        tr.appendChild(el("td", { cls: b ? "" : "none" }, b ? describe(b, kind) : "—"));
      });
      tr.appendChild(r.after ? el("td", { cls: "after" }, describe(r.after, kind))
        : el("td", { cls: "after none" }, r.removed ? "what the survivor held stays (not changed, so not in the bundle)" : "—"));
      mt.appendChild(tr);
    });
    if (!rows.size) mt.appendChild(el("tr", null, el("td", { colspan: g[4].length + 2, cls: "none" }, "No curation of these versions changes.")));
    if (full) box.appendChild(mt);
    if (full) box.appendChild(el("p", { cls: "note", text: "Each cell holds a record the migration changes or removes, as it was; the last column what the survivor holds afterwards for that row. Curation only the survivor held, and that does not change, is not in the bundle and is not shown." }));
    if (full && g[9] > 0) box.appendChild(el("p", { cls: "note", text: g[9] + " more change(s) of this group's curation are not shown (at most " + Math.round(D.details.per_group_bytes / 1024) + " KB of changes per group are embedded)." }));
    // The conflicts.
    box.appendChild(el("h3", null, "Conflicts (" + conflicts.length + ")"));
    if (!conflicts.length) box.appendChild(el("p", { cls: "small", text: "No conflicts: every value merged by the rules." }));
    conflicts.forEach(function (c) { box.appendChild(conflictView(c, g)); });
    if (cols.length) {
      box.appendChild(el("h3", null, "Columns' curation (" + cols.length + " changes; the columns' own re-keys are not listed)"));
      var ct = el("table", { cls: "matrix" }, el("thead", null, el("tr", null, el("th", null, "Change"), el("th", null, "Kind"), el("th", null, "Key"), el("th", null, "Before"), el("th", null, "After"))));
      cols.slice(0, 200).forEach(function (c) {
        ct.appendChild(el("tr", null, el("td", null, c.op), el("td", null, c.kind), el("td", null, c.key),
          el("td", null, c.prior ? short(describe(c.prior, c.kind), 120) : ""), el("td", null, c.op === "delete" ? "" : short(describe(after(c), c.kind), 120))));
      });
      box.appendChild(ct);
    }
    box.scrollIntoView({ block: "start" });
  }
  function conflictView(c, g) {
    var w = c.winner, l = c.loser, kind = c.kind;
    var multi = kind === "field_value" && Array.isArray(w.value);
    var d = { action: "choose", server_id: "", survivor_otype: c.survivor.otype, survivor_oid: String(c.survivor.oid), kind: kind,
      merge_key: c.merge_key, choose_oid: String((l.subject || {}).oid), value_sha256: c.loser_sha256,
      note: short((g[0] || g[1]) + ": " + describe(l, kind), 200) };
    var key = dkey(d);
    var box = el("div", { cls: "conflict", "data-conflict": key + "|" + c.loser_sha256 });
    box.appendChild(el("h4", null, slotLabel(c.merge_key) + " on " + c.survivor.otype + " " + c.survivor.oid,
      c.decision_line ? el("span", { cls: "badge ok", text: " decided by line " + c.decision_line + " of the decisions file" }) : null));
    box.appendChild(el("div", { cls: "side win" }, el("div", { cls: "who", text: "Kept: from version " + (w.subject || {}).oid }),
      el("div", { cls: "val", text: describe(w, kind) })));
    var btn = el("button", { cls: "act take" });
    function sync() {
      var cur = decisions.get(key);
      var mine = cur && cur.value_sha256 === c.loser_sha256;
      btn.textContent = mine ? "Chosen — undo" : "Take this value instead";
      btn.classList.toggle("alt", !!mine);
    }
    btn.addEventListener("click", function () {
      var cur = decisions.get(key);
      if (cur && cur.value_sha256 === c.loser_sha256) decisions.delete(key); else decisions.set(key, d);
      changed();
      document.querySelectorAll(".conflict").forEach(function (x) { if (x._sync) x._sync(); });
    });
    box._sync = sync;
    sync();
    box.appendChild(el("div", { cls: "side lose" }, el("div", { cls: "who", text: "Not kept: from version " + (l.subject || {}).oid }),
      el("div", { cls: "val", text: describe(l, kind) }),
      multi ? el("p", { cls: "small", text: "(a lone value of a list field: it cannot be chosen)" }) : btn));
    return box;
  }

  // ---- unresolved, warnings, decisions -----------------------------------------------------
  function buildUnresolved(sec) {
    var U = D.unresolved; // [server, oid, external_id, suggestion]
    sec.appendChild(el("h2", null, fmt(U.length) + " unresolved report(s)"));
    sec.appendChild(el("p", { cls: "note", text: "No rule found a stable id for these reports: they stay exactly as they are. Give each its stable id here (it becomes a map decision), or put the suggested lines, checked, in an --id-map file. Suggestions are guesses from the external_id: check each in Looker." }));
    var pg = 0;
    var body = el("tbody", { id: "unresolved-rows" });
    var info = el("span", { cls: "pager" });
    var prev = el("button", { cls: "act alt", onclick: function () { pg--; draw(); } }, "‹ Previous");
    var next = el("button", { cls: "act alt", onclick: function () { pg++; draw(); } }, "Next ›");
    function draw() {
      body.textContent = "";
      U.slice(pg * PAGE, pg * PAGE + PAGE).forEach(function (u) {
        var cur = decisions.get(["m", String(u[0]), u[2]].join("|"));
        var input = el("input", { type: "text", value: cur ? cur.stable_external_id : (u[3] || ""), placeholder: "dashboard/ID or look/ID", "aria-label": "stable id of " + u[2] });
        var msg = el("span", { cls: "small" }, cur ? "mapped" : "");
        var use = el("button", { cls: "act use" }, "Use this id");
        use.addEventListener("click", function () {
          var s = input.value.trim();
          if (!STABLE.test(s)) { msg.textContent = "not a stable id (dashboard/ID, look/ID, lookml_dashboard/MODEL::NAME)"; return; }
          var d = { action: "map", server_id: String(u[0]), legacy_external_id: u[2], stable_external_id: s, note: "report oid " + u[1] };
          decisions.set(dkey(d), d); changed(); msg.textContent = "mapped";
        });
        body.appendChild(el("tr", { "data-oid": u[1] }, el("td", { cls: "num" }, u[0]), el("td", { cls: "num" }, u[1]), el("td", null, el("code", { text: u[2] })),
          el("td", null, input, " ", use, " ", msg),
          el("td", null, el("code", { text: cell(u[2]) + "," + cell(u[3] || "") + "," + u[0] }))));
      });
      var pages = Math.max(1, Math.ceil(U.length / PAGE));
      info.textContent = "page " + (pg + 1) + " of " + pages;
      prev.disabled = pg === 0; next.disabled = pg + 1 >= pages;
    }
    sec.appendChild(el("div", { cls: "bar" }, prev, info, next));
    sec.appendChild(el("table", { cls: "list" }, el("thead", null, el("tr", null, el("th", { cls: "num" }, "Server"), el("th", { cls: "num" }, "Oid"),
      el("th", null, "external_id"), el("th", null, "Stable id"), el("th", null, "Suggested id-map line"))), body));
    draw();
    var lines = ["legacy_external_id,stable_external_id,server_id"].concat(U.map(function (u) { return cell(u[2]) + "," + cell(u[3] || "") + "," + u[0]; }));
    sec.appendChild(el("h3", null, "Suggested id-map (CSV; empty stable ids need filling in)"));
    sec.appendChild(el("pre", { id: "suggested-idmap", text: lines.join("\n") }));
  }
  function buildWarnings(sec) {
    var W = D.warnings;
    sec.appendChild(el("h2", null, fmt(W.length) + " warning(s)"));
    var ul = el("ul");
    W.slice(0, 2000).forEach(function (w) { ul.appendChild(el("li", null, w.warning)); });
    sec.appendChild(ul);
    if (W.length > 2000) sec.appendChild(el("p", { cls: "note", text: (W.length - 2000) + " more: see warnings.ndjson.zst in the bundle." }));
  }
  function buildDecisions(sec) {
    sec.appendChild(el("h2", null, el("span", { id: "decisions-n", text: decisions.size }), " decision(s)"));
    sec.appendChild(el("p", { cls: "note", text: "Decisions are kept in this browser for this bundle id until you save them. Save them as decisions.csv and make the bundle again with them:" }));
    sec.appendChild(el("pre", { text: "lookmig migrate EXPORT --decisions decisions.csv -o NEW.bundle\nlookmig review NEW.bundle -o review.html" }));
    var link = el("a", { id: "save-link", download: "decisions.csv", hidden: "" }, "decisions.csv");
    var url = null;
    sec.appendChild(el("div", { cls: "bar" },
      el("button", { id: "save", cls: "act", onclick: function () {
        if (url) URL.revokeObjectURL(url);
        url = URL.createObjectURL(new Blob([csv()], { type: "text/csv" }));
        link.href = url; link.click();
      } }, "Save decisions.csv"),
      el("button", { id: "forget", cls: "act alt", onclick: function () {
        if (confirm("Forget every decision on this page?")) { decisions.clear(); changed(); }
      } }, "Forget all"), link));
    sec.appendChild(el("textarea", { id: "decisions-csv", readonly: "", "aria-label": "decisions.csv" }));
    changed();
  }
  var builders = { groups: buildGroups, unresolved: buildUnresolved, warnings: buildWarnings, decisions: buildDecisions };
  // The decisions tab is built at once so that its CSV is always on the page.
  buildDecisions(document.getElementById("decisions"));
  shown.decisions = true;
  changed();
  document.body.dataset.ready = String(Math.round(performance.now() - T0));
  document.body.dataset.readyAt = String(Math.round(performance.now())); // since navigation
  window.lookmigReview = { tab: tab, openGroup: openGroup, csv: csv };
})();
