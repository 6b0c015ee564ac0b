"use strict";
// alignkit's report.html: everything is drawn from the JSON in #data; text is set as text, never as HTML.
const D = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}
const svg = (tag, attrs) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};
const num = (v, digits = 3) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
const big = (v) => (v == null ? "–" : Number(v).toPrecision(3));

// ------------------------------------------------------------------------------------------ summary
function drawSummary() {
  $("title").textContent = "Comparison: " + D.name;
  $("facts").textContent = D.facts;
  const list = $("sentences");
  for (const s of D.sentences) list.append(el("li", {text: s}));
  if (!D.sentences.length) list.append(el("li", {text: "No verdicts: only one method."}));
  for (const c of D.caveats) $("caveat-list").append(el("li", {text: c}));
}

// results: [key, heading, format(row), sort value(row)]
const COLUMNS = [
  ["label", "entry", (r) => r.label, (r) => r.label],
  ["method", "method", (r) => r.method, (r) => r.method],
  ["sweep", "sweep", (r) => r.sweep || "–", (r) => r.sweep || ""],
  ["train_seed", "seed", (r) => num(r.train_seed, 0), (r) => r.train_seed],
  ["gold_reward_mean", "gold reward [95% CI]",
   (r) => `${num(r.gold_reward_mean)} [${num(r.gold_reward_ci_low)}, ${num(r.gold_reward_ci_high)}]`],
  ["proxy_reward_mean", "proxy (RM)", (r) => num(r.proxy_reward_mean)],
  ["kl_mean", "KL [95% CI]", (r) => `${num(r.kl_mean, 2)} [${num(r.kl_ci_low, 2)}, ${num(r.kl_ci_high, 2)}]`],
  ["kl_kind", "KL kind", (r) => r.kl_kind || "–", (r) => r.kl_kind || ""],
  ["win_rate_vs_reference", "win rate vs reference [95% CI]",
   (r) => `${num(r.win_rate_vs_reference)} [${num(r.win_rate_ci_low)}, ${num(r.win_rate_ci_high)}]`],
  ["distinct_2", "distinct-2", (r) => num(r.distinct_2)],
  ["self_bleu", "self-BLEU", (r) => num(r.self_bleu)],
  ["mean_completion_tokens", "tokens", (r) => num(r.mean_completion_tokens, 1)],
  ["train_steps", "steps", (r) => num(r.train_steps, 0)],
  ["train_wall_s", "train s", (r) => num(r.train_wall_s, 1)],
  ["compute_flops", "FLOPs", (r) => big(r.compute_flops)],
  ["convergence", "convergence", (r) => r.convergence || "–", (r) => r.convergence || ""],
];

function drawResults() {
  const table = $("results-table");
  const columns = COLUMNS.filter(([key]) => D.results.some((r) => r[key] != null));
  let order = {key: null, sign: 1};
  const head = el("tr");
  const body = el("tbody");
  const fill = () => {
    const rows = D.results.slice();
    if (order.key) {
      const [, , , value = (r) => r[order.key]] = columns.find(([key]) => key === order.key);
      rows.sort((a, b) => {
        const x = value(a), y = value(b);
        if (x == null || y == null) return (x == null) - (y == null);  // missing values last
        return (x < y ? -1 : x > y ? 1 : 0) * order.sign;
      });
    }
    const cells = (r) => columns.map(([, , show]) => el("td", {text: show(r)}));
    body.replaceChildren(...rows.map((r) => el("tr", {}, ...cells(r))));
  };
  for (const [key, heading] of columns) {
    const th = el("th", {text: heading, "data-key": key, title: "sort by " + heading});
    th.addEventListener("click", () => {
      order = {key, sign: order.key === key ? -order.sign : 1};
      for (const other of head.children) other.className = "";
      th.className = order.sign > 0 ? "asc" : "desc";
      fill();
    });
    head.append(th);
  }
  table.replaceChildren(el("thead", {}, head), body);
  fill();
}

function drawFigures() {
  for (const f of D.figures) {
    const image = el("img", {src: f.src, alt: f.caption});
    $("figures").append(el("figure", {}, image, el("figcaption", {text: f.caption})));
  }
}

// one small chart per entry: gold reward against step, its interval shaded
function drawCurves() {
  const W = 260, H = 130, L = 38, B = 18, T = 6, R = 8;
  for (const e of D.entries) {
    const box = el("div", {class: "curve", "data-label": e.label},
      el("div", {}, el("b", {text: e.label}), ` — ${e.convergence}`));
    const pts = e.trajectory;
    if (!pts.length) {
      box.append(el("div", {class: "note", text: "no checkpoints recorded"}));
      $("curves").append(box);
      continue;
    }
    const xs = pts.map((p) => p[0]), ys = pts.flatMap((p) => [p[2] ?? p[1], p[3] ?? p[1]]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const sx = (x) => L + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (W - L - R);
    const sy = (y) => T + (y1 > y0 ? (y1 - y) / (y1 - y0) : 0.5) * (H - T - B);
    const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img"});
    const band = pts.map((p) => `${sx(p[0])},${sy(p[3] ?? p[1])}`)
      .concat(pts.slice().reverse().map((p) => `${sx(p[0])},${sy(p[2] ?? p[1])}`));
    chart.append(svg("polygon", {class: "band", points: band.join(" ")}));
    const line = pts.map((p) => `${sx(p[0])},${sy(p[1])}`);
    chart.append(svg("polyline", {class: "line", points: line.join(" ")}));
    for (const p of pts) {
      const dot = svg("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: "#0b5cad"});
      dot.append(svg("title", {}));
      dot.firstChild.textContent = `step ${p[0]}: gold ${num(p[1])}, KL ${num(p[4], 2)}`;
      chart.append(dot);
    }
    chart.append(svg("line", {class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B}));
    chart.append(svg("line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B}));
    const label = (x, y, text, anchor) => {
      const t = svg("text", {x, y, "text-anchor": anchor});
      t.textContent = text;
      chart.append(t);
    };
    label(L - 3, T + 8, num(y1), "end");
    label(L - 3, H - B, num(y0), "end");
    label(L, H - 4, `step ${x0}`, "start");
    label(W - R, H - 4, `${x1}`, "end");
    box.append(chart);
    $("curves").append(box);
  }
}

// ------------------------------------------------------------------------------------------ head to head
function drawHeadToHead() {
  const h = D.head_to_head;
  if (!h) {
    $("h2h-note").textContent = D.head_to_head_missing;
    return;
  }
  $("h2h-note").textContent = `Win rate of the row entry against the column entry on the same ${h.n} ` +
    `prompts (${h.method}). Each entry's KL is beside its name. Click a cell for the prompts behind it.`;
  const named = (label) => `${label} (KL ${num(h.kl[label], 2)})`;
  const rows = [el("tr", {}, el("th"), ...h.labels.map((l) => el("th", {text: named(l)})))];
  h.labels.forEach((a, i) => {
    const cells = h.labels.map((b, j) => {
      if (i === j) return el("td", {text: "–"});
      const link = el("a", {href: "#samples", "data-a": a, "data-b": b,
        title: `prompts where the judge scored ${a} above ${b}`,
        text: `${num(h.wins[i][j], 2)} [${num(h.low[i][j], 2)}, ${num(h.high[i][j], 2)}]`});
      link.addEventListener("click", () => showPair(a, b));
      return el("td", {class: h.low[i][j] > 0.5 ? "win" : h.high[i][j] < 0.5 ? "loss" : ""}, link);
    });
    rows.push(el("tr", {}, el("th", {text: named(a)}), ...cells));
  });
  $("h2h-table").replaceChildren(el("tbody", {}, ...rows));
}

// ------------------------------------------------------------------------------------------ samples
const S = D.samples;
const LABELS = Object.keys(S.entries);
const PAGE = 10;
const state = {shown: new Set(LABELS), filter: "all", order: "prompt", query: "", pair: null, limit: PAGE};
const rowAt = {};  // label -> Map(prompt -> the entry's row)
// the unusual ending is marked: "cut off" where most completions end with EOS, "ended (EOS)" where few do
const ENDED = Object.values(S.entries).flatMap((e) => e.ended || []);
const ENDS_USUALLY = ENDED.filter(Boolean).length * 2 >= ENDED.length;
const END_BADGE = ENDS_USUALLY ? "cut off" : "ended (EOS)";

function standardised(values) {
  const known = values.filter((v) => v != null);
  const mean = known.reduce((s, v) => s + v, 0) / known.length;
  const sd = Math.sqrt(known.reduce((s, v) => s + (v - mean) ** 2, 0) / known.length) || 1;
  return values.map((v) => (v == null ? null : (v - mean) / sd));
}
for (const [label, e] of Object.entries(S.entries)) {
  rowAt[label] = new Map(e.at.map((prompt, row) => [prompt, row]));
  if (e.proxy && e.gold) {  // proxy minus gold, each standardised over the entry's own samples
    const p = standardised(e.proxy), g = standardised(e.gold);
    e.gap = p.map((v, i) => (v == null || g[i] == null ? null : v - g[i]));
  }
}

function referenceOf(label, prompt) {
  const e = S.entries[label], own = e.reference, r = rowAt[label].get(prompt);
  const pick = (cols, i) => ({text: cols.text?.[i], gold: cols.gold?.[i], judge: cols.judge?.[i]});
  return own ? pick(own, r) : pick(S.reference, prompt);
}

// +1: the judge prefers the entry's completion to the reference's; -1: the reference's; 0: tie; null: unknown
function judgeSign(label, prompt) {
  const e = S.entries[label], r = rowAt[label].get(prompt);
  if (e.pref) return Math.sign(e.pref[r] - 0.5);
  if (D.judge.is_gold || !e.judge) return null;
  const ref = referenceOf(label, prompt).judge;
  return ref == null ? null : Math.sign(e.judge[r] - ref);
}
function disagrees(label, prompt) {
  const e = S.entries[label], r = rowAt[label].get(prompt);
  const judge = judgeSign(label, prompt), ref = referenceOf(label, prompt).gold;
  return Boolean(judge) && ref != null && e.gold != null && Math.sign(e.gold[r] - ref) === -judge;
}
function beats(a, b, prompt) {  // the head-to-head judge's score of a above b's on this prompt
  const score = (label) => (S.entries[label].judge || S.entries[label].gold)[rowAt[label].get(prompt)];
  return score(a) > score(b);  // a gold judge's scores are the gold column
}

const visible = (prompt) => (state.pair ? state.pair : LABELS.filter((l) => state.shown.has(l)))
  .filter((l) => rowAt[l].has(prompt));
const textOf = (label, prompt) => S.entries[label].text[rowAt[label].get(prompt)] || "";
const gapOf = (label, prompt) => S.entries[label].gap?.[rowAt[label].get(prompt)] ?? null;

function matching() {
  const q = state.query.toLowerCase();
  let found = [];
  S.prompts.forEach((text, prompt) => {
    const labels = visible(prompt);
    if (!labels.length) return;
    if (state.pair && !beats(state.pair[0], state.pair[1], prompt)) return;
    if (state.filter === "disagree" && !labels.some((l) => disagrees(l, prompt))) return;
    if (q && ![text, referenceOf(labels[0], prompt).text || "", ...labels.map((l) => textOf(l, prompt))]
      .some((t) => t.toLowerCase().includes(q))) return;
    found.push(prompt);
  });
  const key = {
    longest: (p) => -Math.max(...visible(p).map((l) => textOf(l, p).length)),
    shortest: (p) => Math.min(...visible(p).map((l) => textOf(l, p).length)),
    gap: (p) => -Math.max(...visible(p).map((l) => gapOf(l, p) ?? -Infinity)),
  }[state.order];
  if (key) {
    const keyed = found.map((p) => [key(p), p]);
    keyed.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    found = keyed.map(([, p]) => p);
  }
  return found;
}

function highlighted(text) {  // the search term marked, the rest as plain text
  const node = el("div", {class: "body"});
  const q = state.query.toLowerCase();
  if (!q) { node.textContent = text; return node; }
  let at = 0;
  for (let i = text.toLowerCase().indexOf(q); i >= 0; i = text.toLowerCase().indexOf(q, at)) {
    node.append(text.slice(at, i), el("mark", {text: text.slice(i, i + q.length)}));
    at = i + q.length;
  }
  node.append(text.slice(at));
  return node;
}

function judgeText(label, prompt) {
  const e = S.entries[label], r = rowAt[label].get(prompt);
  if (e.pref) {
    const v = e.pref[r];
    const verdict = v > 0.5 ? "prefers this" : v < 0.5 ? "prefers the reference"
      : "tie (or the orders disagreed)";
    return "judge: " + verdict;
  }
  if (D.judge.is_gold || !e.judge) return null;
  return `judge ${num(e.judge[r])} (reference ${num(referenceOf(label, prompt).judge)})`;
}

function sampleCard(label, prompt) {
  const e = S.entries[label], r = rowAt[label].get(prompt);
  const scores = [`gold ${num(e.gold?.[r])}`];
  if (e.proxy) scores.push(`proxy ${num(e.proxy[r])}`);
  if (e.kl) scores.push(`KL ${num(e.kl[r], 2)}`);
  const judge = judgeText(label, prompt);
  if (judge) scores.push(judge);
  if (e.gap && state.order === "gap") scores.push(`proxy-gold gap ${num(e.gap[r], 2)} sd`);
  scores.push(`${textOf(label, prompt).length} chars`);
  const odd = disagrees(label, prompt);
  const who = el("div", {class: "who", text: label},
    odd ? el("span", {class: "badge disagree", text: "judge disagrees with gold"}) : null,
    !e.ended || e.ended[r] === ENDS_USUALLY ? null : el("span", {class: "badge end", text: END_BADGE}));
  return el("div", {class: "sample" + (odd ? " disagree" : ""), "data-label": label},
    who, el("div", {class: "scores", text: scores.join(" · ")}), highlighted(textOf(label, prompt)));
}

function referenceCard(label, prompt) {
  const ref = referenceOf(label, prompt);
  const scores = [`gold ${num(ref.gold)}`];
  if (!D.judge.is_gold && ref.judge != null) scores.push(`judge ${num(ref.judge)}`);
  return el("div", {class: "sample reference", "data-label": "reference"},
    el("div", {class: "who", text: "reference (SFT)"}),
    el("div", {class: "scores", text: scores.join(" · ")}),
    highlighted(ref.text || ""));
}

function drawSamples() {
  const found = matching();
  $("match-count").textContent = `${found.length} of ${S.prompts.length} prompts` +
    (found.length > state.limit ? `, the first ${state.limit} shown` : "");
  const cards = found.slice(0, state.limit).map((prompt) => {
    const labels = visible(prompt);
    return el("div", {class: "prompt", "data-prompt": prompt},
      el("div", {class: "text"}, highlighted(S.prompts[prompt])),
      el("div", {class: "completions"}, referenceCard(labels[0], prompt),
        ...labels.map((l) => sampleCard(l, prompt))));
  });
  $("sample-list").replaceChildren(...cards);
  $("more").hidden = found.length <= state.limit;
}

function showPair(a, b) {
  state.pair = [a, b];
  state.limit = PAGE;
  const banner = $("pair-banner");
  banner.hidden = false;
  banner.firstChild.textContent = `Head to head: the prompts where the judge scored ${a} above ${b}.`;
  drawSamples();
}

function setupSamples() {
  const judge = D.judge.pairwise ? `${D.judge.name}, asked both orders (a tie: it called a tie or the two ` +
    `orders disagreed; samples.jsonl keeps the combined verdict only)`
    : D.judge.is_gold ? "the gold reward itself" : D.judge.name;
  $("samples-note").textContent = `Each held-out prompt with the reference's completion and every entry's, ` +
    `sampled at temperature ${D.temperature}: gold reward, proxy (reward-model) score where the entry has ` +
    `one, per-sample KL to the reference, and the judge (${judge}). "Judge disagrees with gold": the judge ` +
    `and the gold reward prefer different ones of the entry's and the reference's completions. Proxy-gold ` +
    `gap: proxy ` +
    `minus gold, each standardised over that entry's samples; a large gap is where over-optimisation shows.`;
  const boxes = $("entry-boxes");
  for (const label of LABELS) {
    const box = el("input", {type: "checkbox", value: label});
    box.checked = true;
    box.addEventListener("change", () => {
      box.checked ? state.shown.add(label) : state.shown.delete(label);
      state.limit = PAGE;
      drawSamples();
    });
    boxes.append(el("label", {}, box, " " + label));
  }
  const setAll = (on) => {
    for (const box of boxes.querySelectorAll("input")) box.checked = on;
    state.shown = new Set(on ? LABELS : []);
    state.limit = PAGE;
    drawSamples();
  };
  $("entries-all").addEventListener("click", () => setAll(true));
  $("entries-none").addEventListener("click", () => setAll(false));
  const canDisagree = D.judge.pairwise || !D.judge.is_gold;
  const disagree = $("filter").querySelector("option[value=disagree]");
  disagree.disabled = !canDisagree;
  if (!canDisagree) disagree.textContent += " (the judge is the gold reward)";
  const gap = $("order").querySelector("option[value=gap]");
  gap.disabled = !LABELS.some((l) => S.entries[l].gap);
  if (gap.disabled) gap.textContent += " (no entry has a proxy score)";
  for (const [id, key, event] of [["filter", "filter", "change"], ["order", "order", "change"],
    ["search", "query", "input"]]) {
    $(id).addEventListener(event, () => { state[key] = $(id).value; state.limit = PAGE; drawSamples(); });
  }
  $("more").addEventListener("click", () => { state.limit += PAGE; drawSamples(); });
  $("pair-clear").addEventListener("click", () => {
    state.pair = null;
    $("pair-banner").hidden = true;
    drawSamples();
  });
}

drawSummary();
drawResults();
drawFigures();
drawCurves();
drawHeadToHead();
setupSamples();
drawSamples();
performance.mark("report-drawn");
document.body.dataset.drawn = "yes";
