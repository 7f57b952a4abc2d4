"use strict";
// tts view: the page's script. Everything it shows comes from the JSON blocks tts view wrote into this
// file; every string from a results file is model or user text and goes into the page as text
// (textContent, text nodes), never as markup. No network: the page's policy forbids it.
(function () {
  const DATA = JSON.parse(document.getElementById("tts-data").textContent);
  const F = {};
  DATA.fields.forEach((name, i) => { F[name] = i; });
  const ROWS = DATA.rows;
  const STRATEGIES = DATA.strategies; // index -> [file index, strategy name]
  const FILES = DATA.report.files;
  const ROW_H = 26;
  const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e85aad", "#0a3069", "#fb8500", "#6e7781"];

  // ---------------------------------------------------------------- small helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const node = document.createElementNS(svgNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  const isNum = (x) => typeof x === "number" && isFinite(x);
  function fixed(x, digits) { return isNum(x) ? x.toFixed(digits) : "–"; }
  function int(x) { return isNum(x) ? Math.round(x).toLocaleString("en-US") : "–"; }
  function sci(x) { return isNum(x) ? (x === 0 ? "0" : x.toExponential(2)) : "–"; }
  function short(x) {
    if (!isNum(x)) return x === null || x === undefined ? "–" : String(x);
    if (Number.isInteger(x)) return Math.abs(x) >= 1e6 ? sci(x) : int(x);
    return Math.abs(x) >= 1e5 || (x !== 0 && Math.abs(x) < 1e-3) ? sci(x) : String(Number(x.toPrecision(4)));
  }
  function ci(interval) { return interval ? `${fixed(interval[0], 2)}-${fixed(interval[1], 2)}` : ""; }
  function fileName(path) { const parts = String(path).split(/[\\/]/); return parts[parts.length - 1]; }
  function strategyLabel(index) {
    const [file, name] = STRATEGIES[index];
    return FILES.length > 1 ? `${name} (${fileName(FILES[file].path)})` : name;
  }

  // ---------------------------------------------------------------- the run
  function passAtFull(s) {
    const k = s.full_k;
    const point = (s.curve || [])[k - 1];
    return point ? `${fixed(point.pass_at_k, 3)} (N=${k})` : "–";
  }

  function runTables() {
    const host = document.getElementById("run-tables");
    FILES.forEach((f) => {
      const what = [f.datasets.join(", "), f.models.join(", "), `${f.records} records`].filter(Boolean).join(" · ");
      host.append(el("div", { class: "file-title" }, fileName(f.path), el("span", { class: "muted" }, "  " + what)));
      const head = ["strategy", "problems", "accuracy (95% CI)", "pass@N", "gen tokens per problem", "FLOPs per problem",
        "gen tokens", "prompt tokens", "cached prompt", "verifier tokens", "engine calls", "FLOPs", "elapsed s"];
      const table = el("table", { class: "run-table" },
        el("tr", {}, head.map((h, i) => el("th", { class: i > 0 && i !== 2 ? "num" : "" }, h))));
      for (const [name, s] of Object.entries(f.strategies)) {
        const t = (f.ledger_totals || {})[name] || {};
        table.append(el("tr", {},
          el("td", {}, name), el("td", { class: "num" }, int(s.problems)),
          el("td", {}, s.accuracy === null ? "ungraded" : `${fixed(s.accuracy, 3)} (${ci(s.wilson)})`),
          el("td", { class: "num" }, passAtFull(s)),
          el("td", { class: "num" }, fixed(s.mean_generated_tokens, 1)), el("td", { class: "num" }, sci(s.mean_flops)),
          el("td", { class: "num" }, int(t.generated_tokens)), el("td", { class: "num" }, int(t.prompt_tokens)),
          el("td", { class: "num" }, int(t.cached_prompt_tokens)), el("td", { class: "num" }, int(t.verifier_tokens)),
          el("td", { class: "num" }, int(t.engine_calls)), el("td", { class: "num" }, sci(t.flops)),
          el("td", { class: "num" }, isNum(s.elapsed_seconds) ? fixed(s.elapsed_seconds, 1) : "–")));
      }
      host.append(el("div", { class: "table-scroll" }, table));
    });
  }

  // One line per (file, strategy): its widths (majority@4, majority@16) joined, as tts report --plot
  // draws them; lines of different files are never joined (their problems can differ).
  function chartLines() {
    const lines = [];
    FILES.forEach((f) => {
      const groups = new Map();
      for (const [name, s] of Object.entries(f.strategies)) {
        const base = name.split("@")[0];
        if (!groups.has(base)) groups.set(base, []);
        if (s.accuracy !== null) groups.get(base).push({ name, s });
      }
      for (const [base, members] of groups) {
        if (!members.length) continue;
        const widths = members.map((m) => (m.name.includes("@") ? m.name.split("@")[1] : String(m.s.pool_size || ""))).filter(Boolean);
        const label = `${base}${widths.length ? " N=" + widths.join(",") : ""}, ${f.datasets.join(", ") || fileName(f.path)} (${Math.max(...members.map((m) => m.s.problems))} problems)`;
        lines.push({ label, members });
      }
    });
    return lines;
  }

  function ticks(lo, hi, log) {
    if (log) {
      const out = [];
      for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
      return out.filter((t) => t >= lo / 1.0001 && t <= hi * 1.0001);
    }
    const span = hi - lo || 1;
    const step = 10 ** Math.floor(Math.log10(span / 5));
    const unit = [1, 2, 5, 10].map((m) => m * step).find((u) => span / u <= 6) || step * 10;
    const out = [];
    for (let t = Math.ceil(lo / unit) * unit; t <= hi + 1e-9; t += unit) out.push(t);
    return out;
  }

  function drawChart() {
    const axis = document.querySelector("input[name=x]:checked").value;
    const host = document.getElementById("chart");
    host.textContent = "";
    const lines = chartLines();
    const points = lines.flatMap((l) => l.members.map((m) => (axis === "tokens" ? m.s.mean_generated_tokens : m.s.mean_flops)));
    for (const l of lines) for (const m of l.members) {  // the maj@k curves' extent too
      const per = axis === "tokens" ? m.s.mean_tokens_per_candidate : (m.s.pool_size ? m.s.mean_flops / m.s.pool_size : null);
      for (const c of (m.s.curve || [])) if (per > 0) points.push(c.k * per);
    }
    const positive = points.filter((x) => x > 0);
    if (!positive.length) { host.append(el("p", { class: "hint" }, "No graded results with compute to plot.")); return; }
    const W = 980, H = 320, L = 56, R = 360, T = 14, B = 44;
    let lo = Math.min(...positive), hi = Math.max(...positive);
    const log = hi / lo > 20;
    if (log) { lo /= 1.5; hi *= 1.5; } else { const pad = (hi - lo) * 0.08 || lo * 0.2 || 1; lo = Math.max(0, lo - pad); hi += pad; }
    const X = (x) => L + (W - L - R) * (log ? Math.log(x / lo) / Math.log(hi / lo) : (x - lo) / (hi - lo));
    const Y = (y) => T + (H - T - B) * (1 - y / 1.02);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "accuracy against compute" });
    for (const t of ticks(lo, hi, log)) {
      root.append(svg("line", { x1: X(t), x2: X(t), y1: T, y2: H - B, stroke: "#eaeef2" }));
      root.append(svg("text", { x: X(t), y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#57606a" }, short(t)));
    }
    for (let y = 0; y <= 1.0001; y += 0.2) {
      root.append(svg("line", { x1: L, x2: W - R, y1: Y(y), y2: Y(y), stroke: "#eaeef2" }));
      root.append(svg("text", { x: L - 6, y: Y(y) + 4, "text-anchor": "end", "font-size": 11, fill: "#57606a" }, y.toFixed(1)));
    }
    root.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#d0d7de" }));
    root.append(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", "font-size": 12 },
      (axis === "tokens" ? "mean generated tokens per problem" : "mean FLOPs per problem") + (log ? " (log scale)" : "")));
    root.append(svg("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 14 ${(T + H - B) / 2})` }, "accuracy"));
    lines.forEach((line, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = line.members.map((m) => ({ x: axis === "tokens" ? m.s.mean_generated_tokens : m.s.mean_flops, s: m.s, name: m.name }))
        .filter((p) => p.x > 0).sort((a, b) => a.x - b.x);
      // dashed: maj@k of each pool, k candidates costing k times the mean per candidate (as tts report --plot)
      for (const m of line.members) {
        const curve = m.s.curve || [];
        const per = axis === "tokens" ? m.s.mean_tokens_per_candidate : (m.s.pool_size ? m.s.mean_flops / m.s.pool_size : null);
        const usable = curve.filter((c) => isNum(c.maj_at_k) && per > 0 && c.k * per >= lo && c.k * per <= hi);
        if (usable.length > 1) {
          root.append(svg("polyline", { class: "maj-curve", points: usable.map((c) => `${X(c.k * per)},${Y(c.maj_at_k)}`).join(" "),
            fill: "none", stroke: color, "stroke-width": 1, "stroke-dasharray": "4 3", opacity: 0.4 }));
        }
      }
      if (pts.length > 1) root.append(svg("polyline", { points: pts.map((p) => `${X(p.x)},${Y(p.s.accuracy)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      for (const p of pts) {
        const [a, b] = p.s.wilson || [p.s.accuracy, p.s.accuracy];
        root.append(svg("line", { x1: X(p.x), x2: X(p.x), y1: Y(a), y2: Y(b), stroke: color }));
        const dot = svg("circle", { cx: X(p.x), cy: Y(p.s.accuracy), r: 4, fill: color, class: "point" });
        dot.append(svg("title", {}, `${p.name}: accuracy ${fixed(p.s.accuracy, 3)} (${ci(p.s.wilson)}), ${short(p.x)} ${axis === "tokens" ? "tokens" : "FLOPs"}`));
        root.append(dot);
      }
      const ly = T + 8 + i * 18;
      root.append(svg("line", { x1: W - R + 16, x2: W - R + 36, y1: ly, y2: ly, stroke: color, "stroke-width": 2 }));
      root.append(svg("text", { x: W - R + 42, y: ly + 4, "font-size": 11 }, line.label));
    });
    const ly = T + 8 + lines.length * 18;
    root.append(svg("line", { x1: W - R + 16, x2: W - R + 36, y1: ly, y2: ly, stroke: "#57606a", "stroke-dasharray": "4 3" }));
    root.append(svg("text", { x: W - R + 42, y: ly + 4, "font-size": 11 }, "maj@k from a sampled pool"));
    host.append(root);
  }

  // ---------------------------------------------------------------- the problem list
  const state = { view: [], selected: -1 };
  const filters = {};

  function options(select, values) {
    select.append(el("option", { value: "" }, "any"));
    for (const [value, label] of values) select.append(el("option", { value }, label));
  }

  function setupFilters() {
    options(filters.file = document.getElementById("f-file"), FILES.map((f, i) => [String(i), fileName(f.path)]));
    filters.file.parentElement.style.display = FILES.length > 1 ? "" : "none";
    const names = [...new Set(STRATEGIES.map((s) => s[1]))];
    options(filters.strategy = document.getElementById("f-strategy"), names.map((n) => [n, n]));
    options(filters.outcome = document.getElementById("f-outcome"), DATA.outcomes.map((o) => [o, o]));
    const levels = [...new Set(ROWS.map((r) => r[F.level]).filter((l) => l !== null))];
    levels.sort((a, b) => (isFinite(a) && isFinite(b) ? a - b : String(a).localeCompare(String(b))));
    options(filters.level = document.getElementById("f-level"), levels.map((l) => [l, l]));
    filters.level.parentElement.style.display = levels.length ? "" : "none";
    filters.budget = document.getElementById("f-budget");
    filters.id = document.getElementById("f-id");
    filters.sort = document.getElementById("sort");
    filters.reverse = document.getElementById("sort-reverse");
    for (const control of Object.values(filters)) control.addEventListener("input", applyFilters);
    for (const control of Object.values(filters)) control.addEventListener("change", applyFilters);
  }

  function applyFilters() {
    const file = filters.file.value, strategy = filters.strategy.value, outcome = filters.outcome.value;
    const level = filters.level.value, budget = filters.budget.value, needle = filters.id.value.trim().toLowerCase();
    const view = [];
    for (let i = 0; i < ROWS.length; i++) {
      const r = ROWS[i];
      if (file && String(r[F.file]) !== file) continue;
      if (strategy && STRATEGIES[r[F.strategy]][1] !== strategy) continue;
      if (outcome && r[F.outcome] !== outcome) continue;
      if (level && String(r[F.level]) !== level) continue;
      if (budget && (budget === "yes") !== r[F.budget_stop]) continue;
      if (needle && !String(r[F.id]).toLowerCase().includes(needle)) continue;
      view.push(i);
    }
    // numbers sort largest first (the costly, the split); "reverse" flips any order
    const key = filters.sort.value;
    if (key !== "order") {
      const column = F[key], sign = filters.reverse.checked ? 1 : -1;
      view.sort((a, b) => sign * ((ROWS[a][column] || 0) - (ROWS[b][column] || 0)) || a - b);
    } else if (filters.reverse.checked) {
      view.reverse();
    }
    state.view = view;
    document.getElementById("count").textContent = `(${view.length.toLocaleString("en-US")} of ${ROWS.length.toLocaleString("en-US")})`;
    document.getElementById("list-spacer").style.height = `${view.length * ROW_H}px`;
    document.getElementById("list").scrollTop = 0;
    renderRows();
  }

  // Only the rows in sight are in the page: a list of 10,000 problems costs what 40 rows cost.
  function renderRows() {
    const list = document.getElementById("list");
    const host = document.getElementById("list-rows");
    const first = Math.max(0, Math.floor(list.scrollTop / ROW_H) - 5);
    const last = Math.min(state.view.length, first + Math.ceil(list.clientHeight / ROW_H) + 10);
    host.style.top = `${first * ROW_H}px`;
    host.textContent = "";
    for (let v = first; v < last; v++) {
      const i = state.view[v], r = ROWS[i];
      const outcome = r[F.outcome];
      host.append(el("div", { class: `prow row-grid${i === state.selected ? " selected" : ""}`, "data-row": i, onclick: () => select(i) },
        el("span", { title: r[F.id] }, r[F.id]), el("span", { title: strategyLabel(r[F.strategy]) }, strategyLabel(r[F.strategy])),
        el("span", {}, r[F.level] === null ? "" : r[F.level]),
        el("span", { class: "outcome-" + outcome.replace(" ", "-") }, outcome + (r[F.budget_stop] ? " ⏹" : "")),
        el("span", { title: r[F.answer] || "" }, r[F.answer] === null ? "–" : r[F.answer]),
        el("span", { title: r[F.reference] || "" }, r[F.reference] === null ? "–" : r[F.reference]),
        el("span", { class: "num" }, int(r[F.tokens])), el("span", { class: "num" }, isNum(r[F.flops]) && r[F.flops] ? r[F.flops].toExponential(1) : "0"),
        el("span", { class: "num", title: "share of candidates outside the most common answer" }, fixed(r[F.disagreement], 2))));
    }
  }

  // ---------------------------------------------------------------- one problem
  function select(i) {
    state.selected = i;
    if (location.hash !== `#p${i}`) history.replaceState(null, "", `#p${i}`);
    for (const row of document.querySelectorAll(".prow")) row.classList.toggle("selected", Number(row.dataset.row) === i);
    const block = document.getElementById(`p${i}`);
    const d = JSON.parse(block.textContent);
    const host = document.getElementById("detail");
    host.textContent = "";
    host.append(...[problemView(d, ROWS[i])].flat(Infinity));
  }

  function fieldTable(pairs) {
    return el("table", { class: "fields" }, pairs.filter((p) => p[1] !== undefined).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  }

  function problemView(d, row) {
    const info = d.info || {};
    const out = [];
    out.push(el("h2", { id: "problem-title" }, `${d.id} · ${d.strategy}`, FILES.length > 1 ? el("span", { class: "muted" }, `  ${fileName(FILES[row[F.file]].path)}`) : null));
    const meta = Object.entries(d.metadata || {}).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
    if (meta) out.push(el("p", { class: "muted" }, meta));
    out.push(fieldTable([
      ["outcome", el("span", { class: "outcome-" + d.outcome.replace(" ", "-") }, d.outcome)],
      ["answer", d.answer === null ? "none" : d.answer], ["reference", d.reference === null ? "none" : d.reference],
    ]));
    out.push(el("div", { class: "why", id: "why" }, "Why: ", d.why));
    if (d.question) { out.push(el("h3", {}, "Question")); out.push(el("pre", { class: "text" }, d.question)); }
    if (info.votes && typeof info.votes === "object") out.push(votesView(info.votes, d));
    out.push(el("h3", {}, `Candidates (${d.candidates.length})`));
    out.push(candidatesView(d, info));
    if (info.tree && Array.isArray(info.tree.nodes)) out.push(treeView(info.tree, d, info));
    out.push(el("h3", {}, "Compute"));
    out.push(fieldTable(Object.entries(d.ledger || {}).map(([k, v]) => [k.replace(/_/g, " "), short(v)])));
    const rest = Object.fromEntries(Object.entries(info).filter(([k]) => !["tree", "votes", "segments"].includes(k)));
    if (Object.keys(rest).length) out.push(el("details", {}, el("summary", {}, "the trace's other fields"), el("pre", { class: "text" }, JSON.stringify(rest, null, 2))));
    return out;
  }

  function votesView(votes, d) {
    const chosenKey = d.chosen !== null && d.candidates[d.chosen] ? (d.candidates[d.chosen].vote_key || d.candidates[d.chosen].answer) : null;
    const entries = Object.entries(votes).sort((a, b) => b[1] - a[1]);
    return [el("h3", {}, "Votes"), el("table", { class: "votes" },
      el("tr", {}, el("th", {}, "answer"), el("th", { class: "num" }, "votes"), el("th", {}, "")),
      entries.map(([answer, count]) => el("tr", { class: answer === chosenKey ? "cand-chosen" : "" },
        el("td", {}, answer), el("td", { class: "num" }, short(count)), el("td", {}, answer === chosenKey ? "chosen" : ""))))];
  }

  function segmented(text, segments) {
    const pre = el("pre", { class: "text" });
    if (!Array.isArray(segments) || !segments.length) { pre.append(text); return pre; }
    let at = 0;
    for (const [kind, a, b] of segments) {
      if (a > at) pre.append(text.slice(at, a));
      pre.append(el("span", { class: "seg-" + String(kind).replace(/[^a-z]/g, ""), title: kind }, text.slice(a, b)));
      at = Math.max(at, b);
    }
    if (at < text.length) pre.append(el("span", { class: "seg-answer", title: "answer" }, text.slice(at)));
    return pre;
  }

  function candidatesView(d, info) {
    const scoreNames = [...new Set(d.candidates.flatMap((c) => Object.keys(c.scores || {})))];
    const table = el("table", { class: "candidates" }, el("tr", {},
      ["#", "answer", "vote key", ...scoreNames, "tokens", "finish", "right", ""].map((h) => el("th", {}, h))));
    const segments = Array.isArray(info.segments) ? info.segments : [];
    const nodes = Array.isArray(info.candidate_nodes) ? info.candidate_nodes : [];
    d.candidates.forEach((c, i) => {
      const chosen = i === d.chosen;
      const row = el("tr", { class: `cand${chosen ? " cand-chosen" : ""}`, "data-candidate": i, title: "click to show its text" },
        el("td", {}, i), el("td", {}, c.answer === null ? "–" : c.answer), el("td", {}, c.vote_key || ""),
        scoreNames.map((n) => el("td", { class: "num" }, short((c.scores || {})[n]))),
        el("td", { class: "num" }, int(c.num_tokens)), el("td", {}, c.finish_reason || ""),
        el("td", { class: c.correct ? "outcome-correct" : c.correct === false ? "outcome-wrong" : "" }, c.correct === null ? "–" : c.correct ? "yes" : "no"),
        el("td", {}, [chosen ? "chosen" : "", isNum(nodes[i]) ? ` node ${nodes[i]}` : ""].join("")));
      const textRow = el("tr", { class: "cand-text" }, el("td", { colspan: scoreNames.length + 8 }, segmented(c.text || "", segments[i])));
      row.addEventListener("click", () => { row.classList.toggle("cand-open"); textRow.style.display = row.classList.contains("cand-open") ? "table-row" : "none"; });
      table.append(row, textRow);
    });
    const parts = [table];
    if (segments.some((s) => Array.isArray(s) && s.length)) {
      parts.unshift(el("p", { class: "legend" }, "segments: ", el("span", { class: "seg-thinking" }, "thinking"),
        el("span", { class: "seg-wait" }, "Wait (injected)"), el("span", { class: "seg-cue" }, "cue (injected)"), el("span", { class: "seg-answer" }, "answer")));
    }
    return parts;
  }

  // ---------------------------------------------------------------- the search tree
  function treeView(tree, d, info) {
    const nodes = tree.nodes;
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const candidateOf = new Map();
    (Array.isArray(info.candidate_nodes) ? info.candidate_nodes : []).forEach((id, i) => candidateOf.set(id, i));
    const chosenNode = Array.isArray(info.candidate_nodes) && d.chosen !== null ? info.candidate_nodes[d.chosen] : undefined;
    const onPath = new Set();
    for (let n = byId.get(chosenNode); n; n = byId.get(n.parent)) onPath.add(n.id);
    const particles = new Map(); // node id -> how many particles resampling put on it
    (Array.isArray(info.particles) ? info.particles : []).forEach((round) => round.forEach((id) => particles.set(id, (particles.get(id) || 0) + 1)));
    const deepest = Math.max(0, ...nodes.filter((n) => n.kind === "step").map((n) => n.depth));
    function status(n) {
      if (n.kind === "root") return "root";
      if (n.kind !== "step") return n.kind;
      if (n.finished) return "finished";
      if ((n.children || []).length) return "kept";
      if (info.particles && !particles.has(n.id)) return "pruned";
      return n.depth >= deepest ? "frontier" : "pruned";
    }
    const collapsed = new Set();
    const rows = new Map();
    const box = el("div", { class: "tree", id: "tree" });
    const detail = el("div", { id: "node-detail" }, el("p", { class: "hint" }, "Click a node to see its step and scores."));
    function visit(n, depth) {
      const st = status(n);
      const kids = (n.children || []).map((c) => byId.get(c)).filter(Boolean);
      const numbers = [];
      if (isNum(n.score)) numbers.push(`step ${short(n.score)}`);
      if (isNum(n.path_score)) numbers.push(`path ${short(n.path_score)}`);
      if (n.visits) numbers.push(`visits ${n.visits} value ${short(n.value)}`);
      if (n.num_tokens) numbers.push(`${n.num_tokens} tok`);
      if (particles.has(n.id)) numbers.push(`×${particles.get(n.id)} particles`);
      const toggle = el("span", { class: "toggle" }, kids.length ? "▾" : "·");
      const row = el("div", {
        class: `tree-node ${st}${onPath.has(n.id) ? " on-path" : ""}`, "data-node": n.id, style: `padding-left:${6 + depth * 16}px`,
      }, toggle, el("span", { class: `badge st-${st}` }, st), candidateOf.has(n.id) ? el("span", { class: "badge" }, `candidate ${candidateOf.get(n.id)}`) : null,
      el("span", { class: "step", title: n.step || "" }, n.kind === "root" ? "(question)" : (n.step || "").replace(/\s+/g, " ") || "(empty step)"),
      el("span", { class: "nums" }, numbers.join(" · ")));
      toggle.addEventListener("click", (event) => {
        event.stopPropagation();
        if (!kids.length) return;
        if (collapsed.has(n.id)) collapsed.delete(n.id); else collapsed.add(n.id);
        toggle.textContent = collapsed.has(n.id) ? "▸" : "▾";
        layout();
      });
      row.addEventListener("click", () => showNode(n, st));
      rows.set(n.id, row);
      box.append(row);
      for (const kid of kids) visit(kid, depth + 1);
    }
    function layout() {
      for (const n of nodes) {
        let hidden = false;
        for (let p = byId.get(n.parent); p; p = byId.get(p.parent)) if (collapsed.has(p.id)) { hidden = true; break; }
        rows.get(n.id).classList.toggle("hidden", hidden);
      }
    }
    function showNode(n, st) {
      for (const r of box.querySelectorAll(".node-selected")) r.classList.remove("node-selected");
      rows.get(n.id).classList.add("node-selected");
      detail.textContent = "";
      const path = [];
      for (let p = n; p && p.kind !== "root"; p = byId.get(p.parent)) path.unshift(p);
      detail.append(el("h3", {}, `node ${n.id}: ${st}${onPath.has(n.id) ? ", on the chosen path" : ""}`),
        el("pre", { class: "text", id: "node-step" }, n.step || ""),
        fieldTable([
          ["depth", n.depth], [info.particles ? "parent (resampled from)" : "parent", n.parent === null ? "–" : n.parent], ["kind", n.kind], ["step score", short(n.score)],
          ["path score", short(n.path_score)], ["rank score", short(n.rank_score)], ["visits", n.visits], ["value", short(n.value)],
          ["prior", short(n.prior)], ["step tokens", int(n.num_tokens)], ["path tokens", int(n.path_tokens)],
          ["prompt tokens", int(n.prompt_tokens)], ["cached prompt tokens", int(n.cached_prompt_tokens)],
          ["finish", n.finish_reason || (n.finished ? "finished" : "open")], ["subtree", n.group === null ? undefined : n.group],
          ["particles resampled onto it", particles.has(n.id) ? particles.get(n.id) : undefined],
          ["candidate", candidateOf.has(n.id) ? candidateOf.get(n.id) : undefined],
        ]),
        path.length > 1 ? el("details", {}, el("summary", {}, `the path to it (${path.length} steps)`),
          el("pre", { class: "text" }, path.map((p) => p.step).join("\n"))) : null);
    }
    const root = nodes.find((n) => n.parent === null) || nodes[0];
    if (root) visit(root, 0);
    // nodes the walk from the root did not reach (a hand-cut export) are still drawn, at their depth
    for (const n of nodes) if (!rows.has(n.id)) visit(n, n.depth || 0);
    const controls = el("p", {},
      el("button", { type: "button", onclick: () => { nodes.forEach((n) => { if ((n.children || []).length) collapsed.add(n.id); }); syncToggles(); layout(); } }, "collapse all"),
      " ", el("button", { type: "button", onclick: () => { collapsed.clear(); syncToggles(); layout(); } }, "expand all"),
      " ", el("span", { class: "legend" }, ["kept", "pruned", "frontier", "finished"].map((s) => el("span", { class: `badge st-${s}` }, s)),
        el("span", { class: "path-key" }, "chosen path")));
    function syncToggles() {
      for (const [id, row] of rows) {
        const toggle = row.querySelector(".toggle");
        if ((byId.get(id).children || []).length) toggle.textContent = collapsed.has(id) ? "▸" : "▾";
      }
    }
    const title = `Search tree (${nodes.length} nodes${tree.truncated ? `; ${tree.truncated} more were left out of the trace` : ""})`;
    return [el("h3", {}, title), controls, box, detail];
  }

  // ---------------------------------------------------------------- start
  runTables();
  drawChart();
  for (const input of document.querySelectorAll("input[name=x]")) input.addEventListener("change", drawChart);
  setupFilters();
  applyFilters();
  document.getElementById("list").addEventListener("scroll", renderRows);
  window.addEventListener("resize", renderRows);
  const wanted = /^#p(\d+)$/.exec(location.hash);
  if (wanted && Number(wanted[1]) < ROWS.length) select(Number(wanted[1]));
  document.body.dataset.ready = "1";
})();
