"use strict";
// qd report: one page, five linked views, state in the URL hash. Text from the run (configurations,
// prompts, errors) is only ever inserted as text nodes, never parsed as HTML.
(function () {
const SVGNS = "http://www.w3.org/2000/svg";
const qd = (window.qd = { interactive: false, timings: {} });
let D, E, N; // the data, its evaluation columns, their count
const S = { view: "map", e: null, cmp: null, x: null, y: null, c: "objective", t: null, q: "", sort: "id", desc: 0,
            page: 0, ts: "", span: null };
const IDX = new Map(), CHILDREN = new Map(), ELITE = new Map();

// -- small DOM helpers ---------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "cls") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false)
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "cls") el.setAttribute("class", v);
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false)
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}
const $ = (id) => document.getElementById(id);
function fmt(v, digits) {
  if (v === null || v === undefined || (typeof v === "number" && isNaN(v))) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential((digits || 4) - 1);
  return String(Number(v.toPrecision(digits || 4)));
}
// min and max of a long array (spreading it into Math.min overflows the stack beyond ~100k values)
function lowHigh(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
const money = (v) => (v ? "$" + (v < 0.01 ? v.toPrecision(2) : v.toFixed(4)) : "$0");
const link = (id, label) => h("a", { cls: "link", "data-eval": id, on: { click: (ev) => { ev.preventDefault();
  set({ e: id, view: S.view === "map" ? "map" : "elite", ts: "", span: null }); } } }, label || "#" + id);

// -- state in the URL hash -----------------------------------------------------------------------
const KEYS = { view: "view", e: "e", cmp: "cmp", x: "x", y: "y", c: "c", t: "t", q: "q", sort: "sort", desc: "desc",
               page: "page", ts: "ts", span: "span" };
const NUMERIC = new Set(["e", "cmp", "t", "desc", "page", "span"]);
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(KEYS)) {
    if (!p.has(k)) continue;
    const v = p.get(k);
    S[k] = NUMERIC.has(k) ? (v === "" ? null : Number(v)) : v;
  }
}
let lastHash = null;
function writeHash() {
  const p = new URLSearchParams();
  for (const k of Object.keys(KEYS)) {
    const v = S[k];
    if (v === null || v === undefined || v === "" || (k === "page" && !v) || (k === "desc" && !v)) continue;
    p.set(k, v);
  }
  lastHash = "#" + p.toString();
  if (location.hash !== lastHash) history.replaceState(null, "", lastHash);
}
function set(patch) {
  Object.assign(S, patch);
  writeHash();
  render();
}
window.addEventListener("hashchange", () => { if (location.hash !== lastHash) { readHash(); render(); } });

// -- loading -------------------------------------------------------------------------------------
async function decode() {
  const b64 = $("qd-data").textContent.trim();
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}
function prepare() {
  E = D.evals; N = E.id.length;
  E.id.forEach((id, i) => IDX.set(id, i));
  E.parents.forEach((ps, i) => { for (const p of new Set(ps)) { if (!CHILDREN.has(p)) CHILDREN.set(p, []); CHILDREN.get(p).push(E.id[i]); } });
  for (const e of D.elites) ELITE.set(e.id, e);
  COLOURS.objective = D.meta.objective_name;
  COLOURS.validated = "validated " + D.meta.objective_name;
  const names = D.meta.measure_names;
  if (!S.x || !axisExists(S.x)) S.x = names[0] || null;
  if (!S.y || !axisExists(S.y)) S.y = names[1] || names[0] || null;
}
const row = (id) => IDX.get(id);
const statusOf = (i) => E.statuses[E.status[i]];
const operatorOf = (i) => E.operators[E.operator[i]];

// -- filter expressions: the grammar of `qd elites --where` (qd.archives.query.compile_where) ----
const KEYWORDS = new Set(["False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
  "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
  "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield"]);
class WhereError extends Error {}
// Python's lines: blank and comment lines are skipped, the expression is one logical line (brackets and a
// backslash continue it), and that line may not be indented.
function tokenize(src) {
  src = src.replace(/\r\n?/g, "\n");
  // refused as qd.archives.query.compile_where refuses it (Python versions read a continued line differently)
  if (src.includes("\\\n")) throw new WhereError("a backslash at the end of a line is not allowed");
  const out = [];
  let i = 0, depth = 0, lineStart = true, ended = false, continued = false;
  const num = /^(?:0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|(?:(?:\d(?:_?\d)*)?\.\d(?:_?\d)*|\d(?:_?\d)*\.?)(?:[eE][+-]?\d(?:_?\d)*)?)/;
  while (i < src.length) {
    if (lineStart && depth === 0) {
      let j = i, indent = false;
      while (src[j] === " " || src[j] === "\t" || src[j] === "\f") { indent = src[j] === "\f" ? false : true; j++; }
      if (j >= src.length) { if (indent) throw new WhereError("unexpected indent"); i = j; break; }
      if (src[j] === "\n") { i = j + 1; continue; }
      if (src[j] === "#") { while (j < src.length && src[j] !== "\n") j++; i = j; continue; }
      if (ended) throw new WhereError("invalid syntax");
      if (indent) throw new WhereError("unexpected indent");
      i = j; lineStart = false; continue;
    }
    const c = src[i];
    if (c === "\n") { if (depth === 0) { ended = true; lineStart = true; } i++; continue; }
    if (c === " " || c === "\t" || c === "\f") { i++; continue; }
    if (c === "#") { while (i < src.length && src[i] !== "\n") i++; continue; }
    if (c === "\\") {
      if (src[i + 1] !== "\n") throw new WhereError("unexpected character after line continuation character");
      i += 2; continued = true; continue;
    }
    continued = false;
    if ("([{".includes(c)) depth++;
    if (")]}".includes(c)) depth = Math.max(0, depth - 1);
    const rest = src.slice(i);
    let m = /^([rRuUbBfF]{0,2})('|")/.exec(rest);
    if (m && (m[1] === "" || /^(?:[rRuU]|[bBfF][rR]?|[rR][bBfF])$/.test(m[1]))) {
      const prefix = m[1].toLowerCase(), q = m[2];
      if (prefix.includes("b") || prefix.includes("f")) throw new WhereError("only plain strings are allowed");
      const triple = rest.startsWith(q + q + q, m[1].length);
      let j = m[1].length + (triple ? 3 : 1), text = "";
      const raw = prefix.includes("r");
      for (;;) {
        if (j >= rest.length) throw new WhereError("unterminated string literal");
        const ch = rest[j];
        if (triple ? rest.startsWith(q + q + q, j) : ch === q) { j += triple ? 3 : 1; break; }
        if (!triple && ch === "\n") throw new WhereError("unterminated string literal");
        if (ch === "\\" && j + 1 < rest.length) {
          const nx = rest[j + 1];
          if (raw) { text += ch + nx; j += 2; continue; }
          const simple = { n: "\n", t: "\t", r: "\r", "\\": "\\", "'": "'", '"': '"', a: "\x07", b: "\b", f: "\f",
                           v: "\v", 0: "\0", "\n": "" };
          if (nx in simple) { text += simple[nx]; j += 2; continue; }
          if (nx === "x" && /^[0-9a-fA-F]{2}$/.test(rest.substr(j + 2, 2))) {
            text += String.fromCharCode(parseInt(rest.substr(j + 2, 2), 16)); j += 4; continue; }
          text += ch; j += 1; continue;
        }
        text += ch; j += 1;
      }
      out.push({ t: "str", v: text }); i += j; continue;
    }
    m = num.exec(rest);
    if (m && m[0] !== "") {
      const txt = m[0];
      if (/^[A-Za-z_0-9]/.test(rest.slice(txt.length)) && !/^[eE]/.test(rest.slice(txt.length)))
        throw new WhereError("invalid decimal literal");
      const clean = txt.replace(/_/g, "");
      let v;
      if (/^0[xX]/.test(clean)) v = parseInt(clean.slice(2), 16);
      else if (/^0[oO]/.test(clean)) v = parseInt(clean.slice(2), 8);
      else if (/^0[bB]/.test(clean)) v = parseInt(clean.slice(2), 2);
      else {
        if (/^0\d/.test(clean) && /^\d+$/.test(clean) && /[1-9]/.test(clean))
          throw new WhereError("leading zeros in decimal integer literals are not permitted");
        v = Number(clean);
      }
      out.push({ t: "num", v, int: !/[.eE]/.test(clean) || /^0[xXoObB]/.test(clean) }); i += txt.length; continue;
    }
    m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(rest);
    if (m) {
      const w = m[0];
      if (w === "True" || w === "False") out.push({ t: "bool", v: w === "True" });
      else if (w === "and" || w === "or" || w === "not") out.push({ t: "op", v: w });
      else if (KEYWORDS.has(w)) out.push({ t: "kw", v: w });
      else out.push({ t: "name", v: w });
      i += w.length; continue;
    }
    m = /^(\*\*|\/\/|<=|>=|==|!=|<<|>>|->|:=|[-+*\/%<>()~&|^@.,:\[\]{};=!])/.exec(rest);
    if (m) { out.push({ t: "op", v: m[0] }); i += m[0].length; continue; }
    throw new WhereError("invalid character " + JSON.stringify(c));
  }
  if (continued) throw new WhereError("unexpected EOF while parsing");
  out.push({ t: "end" });
  return out;
}
// Parse into nodes {k: "const"|"name"|"and"|"or"|"not"|"neg"|"bin"|"cmp"|"bad", ...}; constructs Python parses but
// the filter does not allow become "bad" nodes (an error only when evaluated, as in Python, where they fail at once
// because the whole tree is checked: see check()).
function parse(src) {
  if (src.length > 1000) throw new WhereError(`expression of ${src.length} characters; at most 1000 are allowed`);
  const toks = tokenize(src);
  let p = 0;
  const peek = () => toks[p], next = () => toks[p++];
  const isOp = (v) => toks[p].t === "op" && toks[p].v === v;
  const expect = (v) => { if (!isOp(v)) throw new WhereError("invalid syntax"); p++; };
  function ternary() {
    const a = orExpr();
    if (peek().t === "kw" && peek().v === "if") { next(); orExpr(); if (!(peek().t === "kw" && peek().v === "else"))
      throw new WhereError("invalid syntax"); next(); ternary(); return { k: "bad", what: "conditional" }; }
    return a;
  }
  function orExpr() {
    const vals = [andExpr()];
    while (isOp("or")) { next(); vals.push(andExpr()); }
    return vals.length > 1 ? { k: "or", vals } : vals[0];
  }
  function andExpr() {
    const vals = [notExpr()];
    while (isOp("and")) { next(); vals.push(notExpr()); }
    return vals.length > 1 ? { k: "and", vals } : vals[0];
  }
  function notExpr() { if (isOp("not")) { next(); return { k: "not", a: notExpr() }; } return comparison(); }
  const CMP = new Set(["<", "<=", ">", ">=", "==", "!="]);
  function comparison() {
    const first = bitOr();
    const ops = [], rights = [];
    for (;;) {
      const t = peek();
      if (t.t === "op" && CMP.has(t.v)) { next(); ops.push(t.v); }
      else if (t.t === "kw" && t.v === "in") { next(); ops.push("bad"); }
      else if (t.t === "kw" && t.v === "is") { next(); if (isOp("not")) next(); ops.push("bad"); }
      else if (t.t === "op" && t.v === "not" && toks[p + 1].t === "kw" && toks[p + 1].v === "in") { p += 2; ops.push("bad"); }
      else break;
      rights.push(bitOr());
    }
    return ops.length ? { k: "cmp", first, ops, rights } : first;
  }
  function binary(sub, ops) {
    return function () {
      let a = sub();
      while (peek().t === "op" && ops.includes(peek().v)) { const op = next().v; a = { k: "bin", op, a, b: sub() }; }
      return a;
    };
  }
  const term = binary(factor, ["*", "/", "//", "%", "@"]);
  const arith = binary(term, ["+", "-"]);
  const shift = binary(arith, ["<<", ">>"]);
  const bitAnd = binary(shift, ["&"]);
  const bitXor = binary(bitAnd, ["^"]);
  const bitOr = binary(bitXor, ["|"]);
  function factor() {
    if (isOp("-")) { next(); return { k: "neg", a: factor() }; }
    if (isOp("+") || isOp("~")) { next(); factor(); return { k: "bad", what: "unary" }; }
    return power();
  }
  function power() {
    let a = atom();
    if (isOp("**")) { next(); a = { k: "bin", op: "**", a, b: factor() }; }
    return a;
  }
  function atom() {
    const t = next();
    let node;
    if (t.t === "num") node = { k: "const", v: t.v, int: t.int };
    else if (t.t === "str") {
      let v = t.v;
      while (peek().t === "str") v += next().v; // implicit concatenation
      node = { k: "const", v };
    } else if (t.t === "bool") node = { k: "const", v: t.v };
    else if (t.t === "kw" && t.v === "None") node = { k: "bad", what: "None" };
    else if (t.t === "name") node = { k: "name", v: t.v };
    else if (t.t === "op" && t.v === "(") {
      if (isOp(")")) { next(); node = { k: "bad", what: "tuple" }; }
      else {
        node = ternary();
        if (isOp(",")) { while (isOp(",")) { next(); if (isOp(")")) break; ternary(); } node = { k: "bad", what: "tuple" }; }
        expect(")");
      }
    } else if (t.t === "op" && (t.v === "[" || t.v === "{")) {
      const close = t.v === "[" ? "]" : "}";
      while (!isOp(close)) { if (peek().t === "end") throw new WhereError("invalid syntax"); next(); }
      next(); node = { k: "bad", what: "container" };
    } else throw new WhereError("invalid syntax");
    for (;;) { // calls, attributes, subscripts: parsed, never allowed
      if (isOp("(")) { let depth = 0; do { const x = next(); if (x.t === "end") throw new WhereError("invalid syntax");
        if (x.t === "op" && x.v === "(") depth++; if (x.t === "op" && x.v === ")") depth--; } while (depth > 0);
        node = { k: "bad", what: "call" }; }
      else if (isOp("[")) { let depth = 0; do { const x = next(); if (x.t === "end") throw new WhereError("invalid syntax");
        if (x.t === "op" && x.v === "[") depth++; if (x.t === "op" && x.v === "]") depth--; } while (depth > 0);
        node = { k: "bad", what: "subscript" }; }
      else if (isOp(".")) { next(); if (peek().t !== "name") throw new WhereError("invalid syntax"); next();
        node = { k: "bad", what: "attribute" }; }
      else break;
    }
    return node;
  }
  const tree = ternary();
  if (peek().t !== "end") throw new WhereError("invalid syntax");
  if (depth(tree) > 50) throw new WhereError("expression nested more than 50 levels deep");
  return tree;
}
function depth(node) { // as Python's ast: a name holds its context node, an operator node sits beside the operands
  if (node.k === "const" || node.k === "bad") return 1;
  if (node.k === "name") return 2;
  const kids = node.k === "bin" ? [node.a, node.b] : node.k === "cmp" ? [node.first, ...node.rights]
    : node.k === "and" || node.k === "or" ? node.vals : [node.a];
  return 1 + Math.max(1, ...kids.map(depth));
}
const isNum = (v) => typeof v === "number" || typeof v === "boolean";
function number(v) { if (isNum(v)) return Number(v); throw new WhereError("arithmetic needs numbers; got " + JSON.stringify(v)); }
function truthy(v) { return typeof v === "number" ? v !== 0 : typeof v === "string" ? v.length > 0 : !!v; }
function pyMod(a, b) {
  if (b === 0) throw new WhereError("division by zero");
  let r = a % b;
  if (r !== 0 && (b < 0) !== (r < 0)) r += b;
  if (r === 0) r = b < 0 ? -0 : 0;
  return r;
}
function pyPow(a, b) {
  if (a === 0 && b < 0) throw new WhereError("division by zero");
  if (a < 0 && isFinite(a) && isFinite(b) && !Number.isInteger(b)) throw new WhereError("not a real number");
  if (a === 1 || b === 0 || (a === -1 && Math.abs(b) === Infinity)) return 1;
  const r = Math.pow(a, b);
  if (!isFinite(r) && isFinite(a) && isFinite(b)) throw new WhereError("overflows");
  return r;
}
function arith(op, a, b) {
  if (op === "+") return a + b;
  if (op === "-") return a - b;
  if (op === "*") return a * b;
  if (op === "/") { if (b === 0) throw new WhereError("division by zero"); return a / b; }
  if (op === "%") return pyMod(a, b);
  if (op === "**") return pyPow(a, b);
  throw new WhereError(`'${op}' is not allowed`);
}
function compare(op, a, b) {
  const na = isNum(a), nb = isNum(b);
  if (na && nb) { a = Number(a); b = Number(b); }
  else if (!(typeof a === "string" && typeof b === "string")) {
    if (op === "==") return false;
    if (op === "!=") return true;
    throw new WhereError(`cannot compare ${JSON.stringify(a)} and ${JSON.stringify(b)}`);
  }
  switch (op) {
    case "<": return a < b; case "<=": return a <= b; case ">": return a > b; case ">=": return a >= b;
    case "==": return a === b; case "!=": return a !== b;
  }
  throw new WhereError("comparison not allowed");
}
function evaluate(node, env) {
  switch (node.k) {
    case "const": return node.v;
    case "name":
      if (!Object.prototype.hasOwnProperty.call(env, node.v))
        throw new WhereError(`unknown name '${node.v}'; available: ${Object.keys(env).sort().join(", ")}`);
      return env[node.v];
    case "and": for (const v of node.vals) if (!truthy(evaluate(v, env))) return false; return true;
    case "or": for (const v of node.vals) if (truthy(evaluate(v, env))) return true; return false;
    case "not": return !truthy(evaluate(node.a, env));
    case "neg": return -number(evaluate(node.a, env));
    case "bin": {
      if (!["+", "-", "*", "/", "%", "**"].includes(node.op)) throw new WhereError(`'${node.op}' is not allowed`);
      const a = evaluate(node.a, env), b = evaluate(node.b, env);
      return arith(node.op, number(a), number(b));
    }
    case "cmp": {
      if (node.ops.includes("bad")) throw new WhereError("only <, <=, >, >=, ==, != compare");
      let left = evaluate(node.first, env);
      for (let i = 0; i < node.ops.length; i++) {
        const right = evaluate(node.rights[i], env);
        if (!compare(node.ops[i], left, right)) return false;
        left = right;
      }
      return true;
    }
    default: throw new WhereError(`${node.what || "this"} is not allowed (names, numbers, comparisons, and/or/not)`);
  }
}
function compileWhere(src) {
  const tree = parse(src);
  return (env) => truthy(evaluate(tree, env));
}
qd.where = function (src, env) { // for tests: {ok, value} or {ok: false, error}
  try { return { ok: true, value: compileWhere(src)(env) }; } catch (e) {
    if (e instanceof WhereError) return { ok: false, error: e.message };
    throw e;
  }
};
function rowEnv(i) {
  const env = { id: E.id[i], objective: num(E.objective[i]), fitness: num(E.objective[i]), status: statusOf(i),
                operator: operatorOf(i), index: E.cell[i], elite: ELITE.has(E.id[i]) };
  const name = D.meta.objective_name;
  if (name && /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) && !(name in env) && !D.meta.measure_names.includes(name))
    env[name] = env.objective;
  for (const [m, col] of Object.entries(E.measures)) if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(m)) env[m] = num(col[i]);
  return env;
}
const num = (v) => (v === null ? NaN : v);

// -- colours -------------------------------------------------------------------------------------
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const CATEGORICAL = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                     "#9c755f", "#bab0ac"];
function ramp(t) {
  if (t === null || isNaN(t)) return "#d0d5dd";
  t = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
  const c = VIRIDIS[i].map((a, k) => Math.round(a + f * (VIRIDIS[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
const COLOURS = { objective: "objective", validated: "validated objective", cost: "cost (USD)", tokens: "tokens",
                  operator: "operator", time: "time (s)" };
// the value an evaluation (and, where there is one, its elite) shows in colour mode `mode`
function colourValue(mode, id, elite) {
  const i = row(id);
  switch (mode) {
    case "objective": return elite ? elite.objective : i === undefined ? null : E.objective[i];
    case "validated": return elite && elite.validated !== undefined ? elite.validated : null;
    case "cost": return i === undefined ? null : E.cost[i];
    case "tokens": return i === undefined ? null : E.tokens[i];
    case "time": return i === undefined ? null : E.time[i];
    case "operator": return i === undefined ? null : E.operator[i];
  }
  return null;
}
function colourScale(mode, values) {
  if (mode === "operator") return { fn: (v) => (v === null ? "#d0d5dd" : CATEGORICAL[v % CATEGORICAL.length]),
    legend: () => h("div", { cls: "legend" }, E.operators.map((o, k) =>
      h("span", {}, h("span", { cls: "sw", style: `background:${CATEGORICAL[k % CATEGORICAL.length]}` }), o))) };
  const finite = values.filter((v) => v !== null && !isNaN(v));
  const [lo, hi] = finite.length ? lowHigh(finite) : [0, 1];
  const span = hi > lo ? hi - lo : 1;
  return { fn: (v) => ramp(v === null ? null : (v - lo) / span), lo, hi,
    legend: () => h("div", { cls: "legend" }, h("span", {}, COLOURS[mode] + ": "), h("span", {}, fmt(lo)),
      h("span", { cls: "sw", style: `width:120px;background:linear-gradient(90deg,${[0, .25, .5, .75, 1].map(ramp).join(",")})` }),
      h("span", {}, fmt(hi)), mode === "validated" && !finite.length ? h("span", { cls: "muted" },
        "(no elite is validated yet: `qd validate RUN`)") : null) };
}

// -- axes and projections ------------------------------------------------------------------------
function axes() { // every axis the map may use: stored measures, then configuration parameters
  const out = [];
  for (const m of Object.keys(E.measures)) out.push({ key: m, label: m, values: E.measures[m] });
  for (const [p, col] of Object.entries(E.params || {}))
    out.push({ key: "config." + p, label: "config." + p, values: col, categorical: typeof col.find((v) => v !== null) === "string" });
  return out;
}
function axisExists(key) { return axes().some((a) => a.key === key); }
function axis(key) { return axes().find((a) => a.key === key); }
function ticks(lo, hi, n) {
  const span = hi - lo || 1, step0 = span / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((st) => span / st <= n) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}
// The archive's own cells when both axes are its measures; else each configuration at its mean objective and
// mean measures, binned over the data (as `qd plot --measures` does: qd.analysis.selection.archive_over).
function mapModel() {
  const A = D.archive, names = A.names;
  const xi = names.indexOf(S.x), yi = names.indexOf(S.y);
  if (xi >= 0 && yi >= 0 && xi !== yi) return archiveModel(xi, yi);
  return projectionModel();
}
function unravel(cell, dims) {
  const out = new Array(dims.length);
  for (let k = dims.length - 1; k >= 0; k--) { out[k] = cell % dims[k]; cell = Math.floor(cell / dims[k]); }
  return out;
}
function archiveModel(xi, yi) {
  const A = D.archive;
  const entries = replayEntries(); // cell -> {id, objective, elite?}
  if (A.type === "grid") {
    const dx = A.dims[xi], dy = A.dims[yi], best = new Map();
    for (const [cell, en] of entries) { // several cells of other dims land on one (x, y): the best shows
      const g = unravel(cell, A.dims), key = g[xi] * dy + g[yi];
      const cur = best.get(key);
      if (!cur || (en.objective ?? -Infinity) > (cur.objective ?? -Infinity)) best.set(key, { ...en, cell });
    }
    const shapes = [];
    const all = dx * dy <= 2500; // beyond, only filled cells are drawn (on a background): fewer nodes, faster
    for (let a = 0; a < dx; a++) for (let b = 0; b < dy; b++) {
      if (!all && !best.has(a * dy + b)) continue;
      const x0 = A.lower[xi] + (a / dx) * (A.upper[xi] - A.lower[xi]), x1 = A.lower[xi] + ((a + 1) / dx) * (A.upper[xi] - A.lower[xi]);
      const y0 = A.lower[yi] + (b / dy) * (A.upper[yi] - A.lower[yi]), y1 = A.lower[yi] + ((b + 1) / dy) * (A.upper[yi] - A.lower[yi]);
      shapes.push({ rect: [x0, y0, x1, y1], entry: best.get(a * dy + b) || null });
    }
    return { kind: "archive", x: { lo: A.lower[xi], hi: A.upper[xi] }, y: { lo: A.lower[yi], hi: A.upper[yi] }, shapes };
  }
  if (A.polygons && A.names.length === 2) {
    const swap = xi === 1;
    const shapes = A.polygons.map((poly, cell) => ({ poly: swap ? poly.map(([a, b]) => [b, a]) : poly,
                                                      entry: entries.has(cell) ? { ...entries.get(cell), cell } : null }));
    return { kind: "archive", x: { lo: A.lower[xi], hi: A.upper[xi] }, y: { lo: A.lower[yi], hi: A.upper[yi] }, shapes };
  }
  const shapes = [];  // a CVT archive of more than two measures: its elites as points
  for (const [cell, en] of entries) shapes.push({ point: [A.centroids[cell][xi], A.centroids[cell][yi]], entry: { ...en, cell } });
  return { kind: "archive", x: { lo: A.lower[xi], hi: A.upper[xi] }, y: { lo: A.lower[yi], hi: A.upper[yi] }, shapes };
}
// What each cell holds: the archive's elites, or, while the slider replays, the latest insertion into it by then.
function replayEntries() {
  const out = new Map();
  if (S.t === null || S.t >= N) {
    for (const e of D.elites) out.set(e.cell, { id: e.id, objective: e.objective, elite: e });
    return out;
  }
  for (const i of finishOrder().slice(0, S.t)) if (E.added[i] > 0 && E.cell[i] >= 0)
    out.set(E.cell[i], { id: E.id[i], objective: E.objective[i] });
  return out;
}
let FINISH = null;
function finishOrder() {
  if (!FINISH) FINISH = [...Array(N).keys()].sort((a, b) => E.time[a] - E.time[b] || E.id[a] - E.id[b]);
  return FINISH;
}
function projectionModel() {
  const ax = axis(S.x), ay = axis(S.y);
  if (!ax || !ay) return { kind: "none", shapes: [] };
  const groups = new Map(); // configuration -> [row indices]
  for (let i = 0; i < N; i++) {
    if (statusOf(i) !== "ok" || E.objective[i] === null || ax.values[i] === null || ay.values[i] === null) continue;
    const g = E.config[i];
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(i);
  }
  const pts = [];
  for (const rows of groups.values()) {
    const mean = (col) => (typeof col[rows[0]] === "string" ? col[rows[0]] : rows.reduce((a, i) => a + col[i], 0) / rows.length);
    pts.push({ id: E.id[rows[0]], objective: rows.reduce((a, i) => a + E.objective[i], 0) / rows.length,
               x: mean(ax.values), y: mean(ay.values) });
  }
  const dim = (a, vals) => {
    if (a.categorical) { const cats = [...new Set(a.values.filter((v) => v !== null))].sort(); return { cats, n: cats.length }; }
    const [lo, hi0] = lowHigh(vals), hi = hi0 > lo ? hi0 : lo + 1;
    return { lo, hi, n: Math.min(50, Math.max(2, new Set(vals).size)) };
  };
  const dx = dim(ax, pts.map((p) => p.x)), dy = dim(ay, pts.map((p) => p.y));
  const bin = (d, v) => (d.cats ? d.cats.indexOf(v) : Math.min(d.n - 1, Math.max(0, Math.floor(((v - d.lo) / (d.hi - d.lo)) * d.n))));
  const best = new Map();
  for (const p of pts) {
    const key = bin(dx, p.x) * dy.n + bin(dy, p.y), cur = best.get(key);
    if (!cur || p.objective > cur.objective) best.set(key, { id: p.id, objective: p.objective, elite: ELITE.get(p.id) });
  }
  const shapes = [];
  for (let a = 0; a < dx.n; a++) for (let b = 0; b < dy.n; b++)
    shapes.push({ band: [a, b], entry: best.get(a * dy.n + b) || null });
  return { kind: "projection", bx: dx, by: dy, shapes, filled: best.size };
}

// -- views ---------------------------------------------------------------------------------------
function render() {
  for (const b of document.querySelectorAll("#nav button")) b.classList.toggle("on", b.dataset.view === S.view);
  for (const v of ["summary", "map", "elite", "progress", "table"]) $("view-" + v).hidden = v !== S.view;
  const view = { summary: renderSummary, map: renderMap, elite: renderElite, progress: renderProgress, table: renderTable }[S.view];
  if (view) view($("view-" + S.view));
}

function renderSummary(root) {
  root.replaceChildren();
  const st = D.status, m = D.meta;
  const card = (k, v, extra) => h("div", { cls: "card" }, h("div", { cls: "k" }, k), h("div", { cls: "v" }, v), extra ? h("div", { cls: "muted" }, extra) : null);
  const val = st.validation || {};
  const spend = st.spend || {};
  root.append(h("h2", {}, "Summary"), h("div", { cls: "cards", id: "summary-cards" },
    card("evaluations", `${m.evaluations} / ${m.budget}`, m.running ? "run in progress (report of a snapshot)" : m.evaluations < m.budget ? "stopped before its budget" : "finished"),
    card("elites", String(st.num_elites), `coverage ${pct(st.coverage)}`),
    card("QD score", fmt(st.qd_score, 5), val.corrected_qd_score !== undefined && val.corrected_qd_score !== null ? `corrected ${fmt(val.corrected_qd_score, 5)} (validated)` : "not validated"),
    card("best " + m.objective_name, fmt(st.obj_max, 5), null),
    card("LLM spend, pipeline", money((spend.pipeline || {}).cost_usd), `${(spend.pipeline || {}).calls || 0} calls, ${(spend.pipeline || {}).tokens_in || 0} + ${(spend.pipeline || {}).tokens_out || 0} tokens`),
    card("LLM spend, operators", money((spend.operators || {}).cost_usd), `${(spend.operators || {}).calls || 0} calls, ${(spend.operators || {}).tokens_in || 0} + ${(spend.operators || {}).tokens_out || 0} tokens`),
    card("failed evaluations", String((st.errors || 0) + (st.invalid || 0)), Object.entries(st.statuses || {}).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ")),
  ));
  const unpriced = ((spend.total || {}).unpriced_models || []);
  if (unpriced.length) root.append(h("p", { cls: "muted" }, `Unpriced models (cost 0 here): ${unpriced.join(", ")}`));
  root.append(h("h3", {}, "Failures"));
  const llmCauses = Object.entries((st.llm || {}).failed_by_cause || {});
  const lines = st.failure_lines || [];
  if (!lines.length && !llmCauses.length) root.append(h("p", { cls: "muted", id: "failures" }, "none"));
  else {
    root.append(h("pre", { id: "failures" }, lines.join("\n")));
    if (llmCauses.length) root.append(h("p", {}, "LLM calls failed, by cause: ", llmCauses.map(([c, n]) => `${c.replace(/_/g, " ")} ${n}`).join(", ")),
      h("pre", {}, Object.entries(st.llm.last_errors || {}).map(([c, m]) => `${c}: ${m}`).join("\n")));
  }
  const unusable = Object.entries((st.llm || {}).unusable_answers || {});
  if (unusable.length) root.append(h("p", {}, "LLM answers with no usable configuration: ", unusable.map(([o, n]) => `${o} ${n}`).join(", ")));
  if (st.noise) root.append(h("p", {}, `Noise: ${st.noise.policy} (${st.noise.active ? "on" : "off"}), ${st.noise.resamples} re-evaluations, up to ${st.noise.samples} per configuration.`));
  const problems = [...D.problems];
  if (!N) problems.unshift("the run has no evaluations yet");
  root.append(h("h3", {}, "What this report is missing"),
    problems.length ? h("ul", { cls: "problems", id: "problems" }, problems.map((p) => h("li", {}, p))) : h("p", { cls: "muted", id: "problems" }, "nothing: every evaluation and its trace is here"));
  root.append(h("p", { cls: "muted" }, `Run ${m.run_dir} (${m.domain}), report made ${m.generated}.`));
}

function select(label, value, options, onchange, id) {
  return h("label", {}, label + " ", h("select", { id, on: { change: (ev) => onchange(ev.target.value) } },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
}

function renderMap(root) {
  root.replaceChildren();
  const all = axes();
  const axisOptions = all.map((a) => [a.key, a.label]);
  const colourOptions = Object.entries(COLOURS).filter(([k]) => k !== "validated" || D.elites.some((e) => e.validated !== undefined) || S.c === "validated");
  const controls = h("div", { cls: "controls" },
    select("x", S.x, axisOptions, (v) => set({ x: v }), "axis-x"),
    select("y", S.y, axisOptions, (v) => set({ y: v }), "axis-y"),
    select("colour", S.c, colourOptions, (v) => set({ c: v }), "colour"));
  const model = mapModel();
  if (model.kind === "archive") {
    const slider = h("input", { type: "range", id: "replay", min: 0, max: N, step: 1, value: S.t === null ? N : S.t,
      on: { input: (ev) => { S.t = Number(ev.target.value) >= N ? null : Number(ev.target.value); writeHash(); drawMap(); } } });
    controls.append(h("label", {}, "replay ", slider, h("span", { id: "replay-label" })));
  }
  const mapBox = h("div", { id: "map" });
  const panel = h("div", { cls: "panel", id: "panel" });
  root.append(controls, h("div", { cls: "maplayout" }, mapBox, panel));
  if (D.archive.names.length > 2) root.append(h("h3", {}, "Parallel axes: the elites over every measure"), h("div", { id: "parallel" }));
  drawMap();
  renderPanel(panel);
}
function drawMap() {
  const box = $("map");
  if (!box) return;
  const model = mapModel();
  const W = 620, H = 480, L = 62, B = 44, T = 10, R = 10;
  const svg = s("svg", { width: W, height: H, id: "map-svg" });
  const vals = model.shapes.filter((sh) => sh.entry).map((sh) => colourValue(S.c, sh.entry.id, sh.entry.elite));
  const scale = colourScale(S.c, vals);
  const label = $("replay-label");
  if (label) label.textContent = S.t === null ? ` archive (${D.elites.length} elites)` : ` ${S.t} of ${N} evaluations`;
  let sx, sy, xt, yt;
  if (model.kind === "projection") {
    const bw = (W - L - R) / model.bx.n, bh = (H - T - B) / model.by.n;
    sx = (a) => L + a * bw; sy = (b) => H - B - (b + 1) * bh;
    for (const sh of model.shapes) {
      const [a, b] = sh.band, en = sh.entry;
      svg.append(shape("rect", { x: sx(a), y: sy(b), width: bw, height: bh }, en, scale));
    }
    const bandTicks = (d, horiz) => {
      const out = [];
      if (d.cats) d.cats.forEach((c, k) => out.push([k + 0.5, c]));
      else for (const v of ticks(d.lo, d.hi, 5)) out.push([((v - d.lo) / (d.hi - d.lo)) * d.n, fmt(v)]);
      return out.map(([pos, text]) => horiz ? [L + pos * bw, text] : [H - B - pos * bh, text]);
    };
    xt = bandTicks(model.bx, true); yt = bandTicks(model.by, false);
  } else if (model.kind === "archive") {
    const X = model.x, Y = model.y;
    sx = (v) => L + ((v - X.lo) / (X.hi - X.lo || 1)) * (W - L - R);
    sy = (v) => H - B - ((v - Y.lo) / (Y.hi - Y.lo || 1)) * (H - T - B);
    svg.append(s("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#f1f2f5" }));
    for (const sh of model.shapes) {
      if (sh.rect) { const [x0, y0, x1, y1] = sh.rect;
        svg.append(shape("rect", { x: sx(x0), y: sy(y1), width: Math.max(0.5, sx(x1) - sx(x0)), height: Math.max(0.5, sy(y0) - sy(y1)) }, sh.entry, scale)); }
      else if (sh.poly) svg.append(shape("polygon", { points: sh.poly.map(([a, b]) => `${sx(a).toFixed(1)},${sy(b).toFixed(1)}`).join(" ") }, sh.entry, scale));
      else svg.append(shape("circle", { cx: sx(sh.point[0]), cy: sy(sh.point[1]), r: 4 }, sh.entry, scale));
    }
    xt = ticks(X.lo, X.hi, 6).map((v) => [sx(v), fmt(v)]); yt = ticks(Y.lo, Y.hi, 6).map((v) => [sy(v), fmt(v)]);
  } else { box.replaceChildren(h("p", {}, "Choose two axes.")); return; }
  const g = s("g", { cls: "axis" });
  g.append(s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B }), s("line", { x1: L, y1: T, x2: L, y2: H - B }));
  for (const [x, text] of xt) g.append(s("line", { x1: x, y1: H - B, x2: x, y2: H - B + 4 }), s("text", { x, y: H - B + 16, "text-anchor": "middle" }, text));
  for (const [y, text] of yt) g.append(s("line", { x1: L - 4, y1: y, x2: L, y2: y }), s("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, text));
  g.append(s("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, S.x),
           s("text", { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`, "text-anchor": "middle" }, S.y));
  svg.append(g);
  const filled = model.shapes.filter((sh) => sh.entry).length;
  box.replaceChildren(svg, scale.legend(), h("p", { cls: "muted", id: "map-caption" },
    model.kind === "projection" ? `${filled} cells: each configuration at its mean ${D.meta.objective_name} and mean values (the archive's own cells are shown when both axes are its measures)`
      : S.t === null ? `${filled} of ${D.archive.cells} cells filled (the archive)` : `${filled} cells: the latest insertion into each by evaluation ${S.t}`));
  drawParallel(scale);
}
function shape(tag, attrs, entry, scale) {
  if (!entry) return s(tag, { ...attrs, cls: "cell empty" });
  const cls = "cell" + (entry.id === S.e ? " sel" : "") + (entry.id === S.cmp ? " cmp" : "");
  const el = s(tag, { ...attrs, cls, fill: scale.fn(colourValue(S.c, entry.id, entry.elite)), "data-eval": entry.id,
    "data-cell": entry.cell ?? null, on: { click: (ev) => (ev.shiftKey ? set({ cmp: entry.id }) : set({ e: entry.id, span: null })) } });
  el.append(s("title", {}, `#${entry.id}  ${D.meta.objective_name} ${fmt(entry.objective)}`));
  return el;
}
function drawParallel(scale) {
  const box = $("parallel");
  if (!box) return;
  const names = [...D.archive.names, D.meta.objective_name];
  const W = Math.max(500, 130 * names.length), H = 260, T = 24, B = 20, L = 40, R = 40;
  const cols = names.map((_, k) => D.elites.map((e) => (k < D.archive.names.length ? e.measures[k] : e.objective)));
  const rng = cols.map((c) => { const [lo, hi] = lowHigh(c.filter((v) => v !== null)); return [lo, hi > lo ? hi : lo + 1]; });
  const x = (k) => L + (k * (W - L - R)) / (names.length - 1), y = (k, v) => H - B - ((v - rng[k][0]) / (rng[k][1] - rng[k][0])) * (H - T - B);
  const svg = s("svg", { width: W, height: H, id: "parallel-svg" });
  D.elites.forEach((e, j) => {
    const d = cols.map((c, k) => `${k ? "L" : "M"}${x(k).toFixed(1)},${y(k, c[j] ?? rng[k][0]).toFixed(1)}`).join("");
    svg.append(s("path", { d, fill: "none", stroke: scale.fn(colourValue(S.c, e.id, e)), "stroke-width": e.id === S.e ? 3 : 1,
      opacity: S.e === null || e.id === S.e ? 0.9 : 0.35, "data-eval": e.id, style: "cursor:pointer",
      on: { click: () => set({ e: e.id }) } }));
  });
  names.forEach((n, k) => svg.append(s("line", { x1: x(k), y1: T, x2: x(k), y2: H - B, stroke: "#667085" }),
    s("text", { x: x(k), y: 14, "text-anchor": "middle" }, n), s("text", { x: x(k) + 3, y: H - B + 14 }, fmt(rng[k][0])),
    s("text", { x: x(k) + 3, y: T + 10 }, fmt(rng[k][1]))));
  box.replaceChildren(svg);
}

function renderPanel(panel) {
  panel.replaceChildren();
  if (S.e === null || row(S.e) === undefined) {
    panel.append(h("p", { cls: "muted" }, N ? "Click a cell to see its elite (shift-click: a second one to compare)." : "The run has no evaluations yet."));
    return;
  }
  const i = row(S.e), id = S.e, e = ELITE.get(id);
  panel.append(h("h2", { id: "panel-title" }, `Evaluation #${id}`, " ", e ? h("span", { cls: "badge elite" }, "elite") : h("span", { cls: "badge" }, "not an elite")),
    scoreLine(i, e), h("p", {}, `operator ${operatorOf(i)} · status ${statusOf(i)}`),
    parentsLine(i), childrenLine(id),
    h("pre", { id: "panel-config" }, configText(id)),
    h("div", { cls: "controls" },
      h("button", { cls: "btn", id: "open-details", on: { click: () => set({ view: "elite" }) } }, "details, lineage, diff"),
      h("button", { cls: "btn", id: "open-trace", on: { click: () => { set({ view: "elite" }); const t = $("trace"); if (t) t.scrollIntoView(); } } }, "trace")));
}
function scoreLine(i, e) {
  const name = D.meta.objective_name;
  const parts = [];
  if (e) {
    parts.push(`${name} ${fmt(e.objective, 5)}`);
    if (e.sem !== null && e.sem !== undefined) parts.push(`± ${fmt(e.sem, 3)} (standard error)`);
    parts.push(`over ${e.n} evaluation${e.n === 1 ? "" : "s"}`);
    if (e.validated !== undefined) parts.push(`· validated ${fmt(e.validated, 5)} over ${e.validated_n} (gap ${fmt(e.gap, 3)})`);
  } else parts.push(`${name} ${fmt(E.objective[i], 5)} (this evaluation)`);
  return h("p", { id: "score" }, parts.join(" "));
}
function parentsLine(i) {
  const ps = E.parents[i];
  return h("p", { id: "parents" }, "parents: ", ps.length ? ps.flatMap((p, k) => [k ? ", " : "", row(p) === undefined ? `#${p} (not in this report)` : link(p)]) : "none (seed or random)");
}
function childrenLine(id) {
  const cs = CHILDREN.get(id) || [];
  return h("p", { id: "children" }, "children: ", cs.length ? cs.slice(0, 30).flatMap((c, k) => [k ? ", " : "", link(c)]) : "none", cs.length > 30 ? ` and ${cs.length - 30} more` : "");
}
function configText(id) {
  const c = D.configs[String(id)];
  return c === undefined ? "(configuration not embedded in this report: see What this report is missing)" : JSON.stringify(c, null, 1);
}

// -- an evaluation in full -----------------------------------------------------------------------
function renderElite(root) {
  root.replaceChildren();
  if (S.e === null || row(S.e) === undefined) { root.append(h("p", { cls: "muted" }, "No evaluation selected: click a cell of the map or a row of the table.")); return; }
  const id = S.e, i = row(id), e = ELITE.get(id);
  root.append(h("h2", { id: "elite-title" }, `Evaluation #${id} `, e ? h("span", { cls: "badge elite" }, `elite of cell ${e.cell}`) : h("span", { cls: "badge" }, "not an elite"),
    statusOf(i) !== "ok" ? h("span", { cls: "badge bad" }, statusOf(i)) : null));
  root.append(scoreLine(i, e), h("p", {}, `operator ${operatorOf(i)} · finished at ${fmt(E.time[i])} s · pipeline cost ${money(E.cost[i])} · ${E.tokens[i]} tokens`));
  if (E.error[i]) root.append(h("pre", { cls: "error" }, E.error[i]));
  root.append(cellLine(i, e), measuresTable(i), samplesLine(i), parentsLine(i), childrenLine(id));
  root.append(h("h3", {}, "Configuration"), h("pre", { id: "config" }, configText(id)));
  root.append(diffSection(id, i));
  root.append(h("h3", {}, "Re-run it"), rerun(id, e));
  root.append(h("h3", {}, "Lineage"), lineage(id));
  root.append(h("h3", { id: "trace" }, "Trace"), traceSection(id, i));
}
function cellLine(i, e) {
  const A = D.archive, cell = e ? e.cell : E.cell[i];
  if (cell === undefined || cell < 0) return h("p", { id: "cell" }, "cell: none (not a usable result)");
  if (A.type === "grid") {
    const g = unravel(cell, A.dims);
    const bounds = g.map((k, d) => { const w = (A.upper[d] - A.lower[d]) / A.dims[d]; return `${A.names[d]} [${fmt(A.lower[d] + k * w)}, ${fmt(A.lower[d] + (k + 1) * w)})`; });
    return h("p", { id: "cell" }, `cell ${cell}: ${bounds.join(", ")}`);
  }
  return h("p", { id: "cell" }, `cell ${cell}: centroid ${A.centroids[cell].map((v, d) => `${A.names[d]} ${fmt(v)}`).join(", ")}`);
}
function measuresTable(i) {
  const e = ELITE.get(E.id[i]);
  const trs = Object.entries(E.measures).map(([m, col]) => {
    const k = D.archive.names.indexOf(m);
    return h("tr", {}, h("td", {}, m), h("td", { cls: "num" }, fmt(col[i], 6)), h("td", { cls: "num" }, e && k >= 0 ? fmt(e.measures[k], 6) : ""));
  });
  return h("table", { cls: "grid", id: "measures", style: "width:auto" }, h("thead", {}, h("tr", {}, h("th", {}, "measure"), h("th", { cls: "num" }, "this evaluation"), h("th", { cls: "num" }, "elite (mean)"))), h("tbody", {}, trs));
}
function samplesLine(i) {
  const g = E.config[i], same = [];
  for (let k = 0; k < N; k++) if (E.config[k] === g) same.push(k);
  if (same.length < 2) return h("p", { id: "samples" }, "samples: this configuration was evaluated once");
  return h("p", { id: "samples" }, `samples: this configuration was evaluated ${same.length} times: `,
    same.flatMap((k, j) => [j ? ", " : "", link(E.id[k]), ` ${fmt(E.objective[k])}`]));
}
function flatten(v, path, out) {
  if (v && typeof v === "object") {
    const entries = Array.isArray(v) ? v.map((x, k) => [k, x]) : Object.entries(v);
    if (!entries.length) out.set(path, JSON.stringify(v));
    for (const [k, x] of entries) flatten(x, path === "" ? String(k) : `${path}.${k}`, out);
  } else out.set(path, JSON.stringify(v));
  return out;
}
function diffSection(id, i) {
  const other = S.cmp !== null && S.cmp !== id ? S.cmp : E.parents[i][0];
  const box = h("div", { id: "diff" });
  const input = h("input", { type: "text", id: "cmp-input", size: 8, placeholder: "id", value: S.cmp ?? "",
    on: { change: (ev) => set({ cmp: ev.target.value === "" ? null : Number(ev.target.value) }) } });
  box.append(h("h3", {}, "Difference"), h("p", { cls: "controls" }, "compared with ",
    other === undefined ? "nothing (it has no parent)" : link(other), other === undefined ? "" : S.cmp !== null && S.cmp !== id ? " (chosen)" : " (its first parent)",
    " · compare with #", input));
  if (other === undefined) return box;
  const a = D.configs[String(other)], b = D.configs[String(id)];
  if (a === undefined || b === undefined) { box.append(h("p", { cls: "muted" }, "one of the two configurations is not embedded in this report")); return box; }
  const fa = flatten(a, "", new Map()), fb = flatten(b, "", new Map());
  const keys = [...new Set([...fa.keys(), ...fb.keys()])].sort();
  const changed = keys.filter((k) => fa.get(k) !== fb.get(k));
  if (!changed.length) { box.append(h("p", {}, "identical configurations")); return box; }
  box.append(h("table", { cls: "grid diff", style: "width:auto" }, h("thead", {}, h("tr", {}, h("th", {}, "key"), h("th", {}, `#${other}`), h("th", {}, `#${id}`))),
    h("tbody", {}, changed.map((k) => h("tr", { "data-key": k }, h("td", {}, k), h("td", { cls: "old" }, fa.has(k) ? fa.get(k) : "(absent)"), h("td", { cls: "new" }, fb.has(k) ? fb.get(k) : "(absent)"))))));
  return box;
}
function rerun(id, e) {
  const dir = JSON.stringify(D.meta.run_dir).slice(1, -1).replace(/'/g, "'\\''");
  const lines = [];
  if (e) lines.push(`qd elites '${dir}' --where 'id == ${id}' --rerun --traces traces/`);
  lines.push(`python -c "import qd; from qd.evaluation import evaluate_config; run = qd.open_run('${dir}'); print(evaluate_config(run.domain, run.store.get(${id}).config))"`);
  return h("div", { id: "rerun" }, lines.map((l) => h("pre", {}, l)), h("p", { cls: "muted" }, "Both import and run the domain named in the run's config."));
}
function lineage(id) {
  const chain = [];
  const seen = new Set();
  let cur = id;
  while (cur !== undefined && !seen.has(cur) && row(cur) !== undefined) { seen.add(cur); chain.push(cur); cur = E.parents[row(cur)][0]; }
  const missing = cur !== undefined && row(cur) === undefined ? cur : null;
  chain.reverse();
  const items = chain.map((c, k) => {
    const i = row(c), prev = k ? row(chain[k - 1]) : undefined;
    const delta = prev !== undefined && E.objective[i] !== null && E.objective[prev] !== null ? E.objective[i] - E.objective[prev] : null;
    const others = E.parents[i].slice(1);
    return h("li", { cls: c === id ? "here" : "" }, link(c), ` ${operatorOf(i)} → ${D.meta.objective_name} ${fmt(E.objective[i])}`,
      delta !== null ? ` (${delta >= 0 ? "+" : ""}${fmt(delta, 3)})` : "", others.length ? h("span", { cls: "muted" }, "  also from ", others.flatMap((p, j) => [j ? ", " : "", row(p) === undefined ? `#${p}` : link(p)])) : "");
  });
  return h("div", {}, missing !== null ? h("p", { cls: "muted" }, `earlier ancestors from #${missing} on are not in this report`) : null,
    h("ol", { cls: "lineage", id: "lineage" }, items));
}

// -- trace waterfall -----------------------------------------------------------------------------
function traceSection(id, i) {
  const box = h("div", { id: "trace-box" });
  const tr = D.traces[String(id)];
  if (!tr && D.meta.traces_kept && E.spans[i] === 0) {
    box.append(h("p", { cls: "muted", id: "trace-summary" }, "The evaluation recorded no spans (no LLM or tool calls)."));
    return box;
  }
  if (!tr) {
    box.append(h("p", { cls: "muted", id: "trace-missing" }, D.meta.traces_kept ? "This evaluation's trace is not in this report (see What this report is missing)."
      : "This run's store keeps no traces (written by an older qd): `qd elites RUN --traces DIR` re-runs elites to record theirs."));
    return box;
  }
  const spans = tr.spans;
  const cp = new Set(tr.critical);
  const cpLLM = tr.critical.filter((sid) => (spans.find((sp) => sp.id === sid) || {}).kind === "llm").length;
  box.append(h("p", { id: "trace-summary" }, `${spans.length} spans · critical path (highlighted) ${cpLLM} LLM call${cpLLM === 1 ? "" : "s"}`,
    ` · stored with the evaluation: ${E.spans[i]} spans, critical path ${E.critical_path[i]}`,
    D.meta.trace_text_chars === 0 ? " · prompt and answer text not kept ([run] trace_text_chars = 0)" : ""));
  if (tr.malformed.length) box.append(h("p", { cls: "error" }, `${tr.malformed.length} malformed span(s) left out: ${tr.malformed[0]}`));
  if (!spans.length) { box.append(h("p", { cls: "muted" }, "The evaluation recorded no spans (no LLM or tool calls).")); return box; }
  const search = h("input", { type: "search", id: "trace-search", placeholder: "search names, models, prompts, answers", value: S.ts, size: 40,
    on: { input: (ev) => { S.ts = ev.target.value; writeHash(); markSearch(); } } });
  box.append(h("div", { cls: "controls" }, search, h("span", { id: "trace-hits", cls: "muted" })));
  // rows: depth-first by parent, children by start time
  const byId = new Map(spans.map((sp) => [sp.id, sp]));
  const kids = new Map();
  for (const sp of spans) {
    const p = sp.parent_id !== null && sp.parent_id !== undefined && byId.has(sp.parent_id) ? sp.parent_id : null;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(sp);
  }
  for (const list of kids.values()) list.sort((a, b) => (a.start_s ?? 0) - (b.start_s ?? 0) || a.id - b.id);
  const order = [];
  const walk = (p, d) => { for (const sp of kids.get(p) || []) { order.push([sp, d]); walk(sp.id, d + 1); } };
  walk(null, 0);
  const t0 = lowHigh(spans.map((sp) => sp.start_s ?? 0))[0];
  const t1 = lowHigh(spans.map((sp) => (sp.start_s ?? 0) + (sp.latency_s ?? 0)))[1];
  const span_ = t1 - t0 || 1;
  const LIMIT = 3000;
  const shown = order.slice(0, LIMIT);
  const rowOf = new Map(shown.map(([sp], k) => [sp.id, k]));
  const tbody = h("tbody", {}, shown.map(([sp, d]) => {
    const left = (((sp.start_s ?? t0) - t0) / span_) * 100, width = Math.max(0.2, ((sp.latency_s ?? 0) / span_) * 100);
    const cls = [cp.has(sp.id) ? "cp" : "", sp.kind === "llm" && cp.has(sp.id) ? "cp-llm" : ""].join(" ").trim();
    return h("tr", { cls, "data-span": sp.id, on: { click: () => { S.span = sp.id; writeHash(); showSpan(byId.get(sp.id)); } } },
      h("td", { cls: "name", style: `padding-left:${6 + 12 * d}px`, title: sp.name || "" }, `${sp.kind === "llm" ? "◆" : sp.kind === "tool" ? "▲" : "▪"} ${sp.name || sp.kind}`),
      h("td", {}, sp.model || ""), h("td", { cls: "num" }, sp.kind === "llm" ? `${sp.tokens_in ?? 0}/${sp.tokens_out ?? 0}` : ""),
      h("td", { cls: "num" }, fmt(sp.latency_s ?? 0, 3)), h("td", { cls: "num" }, sp.kind === "llm" ? money(sp.cost_usd) : ""),
      h("td", {}, sp.cached ? "cached" : "", sp.ok === false ? h("span", { cls: "error" }, " failed") : ""),
      h("td", { cls: "bar" }, h("div", { cls: `b ${sp.kind}${sp.ok === false ? " failed" : ""}`, style: `left:${left}%;width:${width}%` })));
  }));
  const table = h("table", { cls: "grid", id: "waterfall-table" },
    h("colgroup", {}, h("col", { style: "width:24%" }), h("col", { style: "width:11%" }), h("col", { style: "width:8%" }),
      h("col", { style: "width:7%" }), h("col", { style: "width:7%" }), h("col", { style: "width:7%" }), h("col", { style: "width:36%" })),
    h("thead", {}, h("tr", {}, ["span", "model", "tokens in/out", "latency s", "cost", "", "time →"].map((t) => h("th", {}, t)))), tbody);
  const wf = h("div", { cls: "waterfall", id: "waterfall" }, table);
  box.append(wf);
  if (order.length > LIMIT) box.append(h("p", { cls: "muted" }, `showing the first ${LIMIT} of ${order.length} spans`));
  box.append(h("div", { id: "span-detail" }));
  requestAnimationFrame(() => drawDeps(wf, table, shown, rowOf, cp, t0, span_));
  markSearch();
  if (S.span !== null && byId.has(S.span)) showSpan(byId.get(S.span));
  return box;
}
function drawDeps(wf, table, shown, rowOf, cp, t0, span_) {
  const head = table.tHead.getBoundingClientRect(), barCell = table.tHead.rows[0].cells[6].getBoundingClientRect();
  const box = wf.getBoundingClientRect();
  const rowH = shown.length ? table.tBodies[0].rows[0].getBoundingClientRect().height : 22;
  const top = head.bottom - box.top, height = rowH * shown.length;
  const svg = s("svg", { cls: "deps", width: barCell.width, height, viewBox: `0 0 1000 ${height}`, preserveAspectRatio: "none",
    style: `left:${barCell.left - box.left}px;top:${top}px` });
  shown.forEach(([sp]) => {
    for (const d of sp.deps || []) {
      if (!rowOf.has(d)) continue;
      const dep = shown[rowOf.get(d)][0];
      const x1 = (((dep.start_s ?? t0) + (dep.latency_s ?? 0) - t0) / span_) * 1000, y1 = (rowOf.get(d) + 0.5) * rowH;
      const x2 = (((sp.start_s ?? t0) - t0) / span_) * 1000, y2 = (rowOf.get(sp.id) + 0.5) * rowH;
      svg.append(s("path", { d: `M${x1},${y1} C${x1 + 8},${y1} ${x2 - 8},${y2} ${x2},${y2}`, cls: cp.has(d) && cp.has(sp.id) ? "cp" : "" }));
    }
  });
  wf.append(svg);
}
function markSearch() {
  const q = S.ts.trim().toLowerCase(), tr = D.traces[String(S.e)];
  const rows = document.querySelectorAll("#waterfall-table tbody tr");
  if (!tr || !rows.length) return;
  const byId = new Map(tr.spans.map((sp) => [sp.id, sp]));
  let hits = 0;
  for (const r of rows) {
    const sp = byId.get(Number(r.dataset.span));
    const text = [sp.name, sp.model, sp.input, sp.output, sp.error].filter(Boolean).join("\n").toLowerCase();
    const hit = q !== "" && text.includes(q);
    hits += hit;
    r.classList.toggle("hit", hit);
    r.classList.toggle("dim", q !== "" && !hit);
  }
  const out = $("trace-hits");
  if (out) out.textContent = q ? `${hits} matching span${hits === 1 ? "" : "s"}` : "";
}
function showSpan(sp) {
  const box = $("span-detail");
  if (!box || !sp) return;
  const fields = Object.entries(sp).filter(([k]) => k !== "input" && k !== "output");
  box.replaceChildren(h("h3", {}, `Span ${sp.id}: ${sp.name || sp.kind}`),
    h("table", { cls: "grid", style: "width:auto" }, h("tbody", {}, fields.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v)))))),
    h("h3", {}, "Prompt"), h("pre", { id: "span-input" }, sp.input ?? "(not kept)"), h("h3", {}, "Answer"), h("pre", { id: "span-output" }, sp.output ?? "(not kept)"));
}

// -- progress ------------------------------------------------------------------------------------
function lineChart(xs, ys, xlabel, ylabel, id) {
  const W = 380, H = 220, L = 56, B = 36, T = 10, R = 12;
  const pts = xs.map((x, k) => [x, ys[k]]).filter(([x, y]) => x !== null && y !== null);
  const svg = s("svg", { width: W, height: H, cls: "chart", id });
  if (!pts.length) { svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet")); return svg; }
  const [xlo, xhi0] = lowHigh(pts.map((p) => p[0])), xhi = xhi0 || 1;
  const [ylo, yhi0] = lowHigh(pts.map((p) => p[1])), yhi = yhi0 > ylo ? yhi0 : ylo + 1;
  const sx = (v) => L + ((v - xlo) / (xhi - xlo || 1)) * (W - L - R), sy = (v) => H - B - ((v - ylo) / (yhi - ylo)) * (H - T - B);
  const g = s("g", { cls: "axis" });
  g.append(s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B }), s("line", { x1: L, y1: T, x2: L, y2: H - B }));
  for (const v of ticks(xlo, xhi, 5)) g.append(s("text", { x: sx(v), y: H - B + 14, "text-anchor": "middle" }, fmt(v)));
  for (const v of ticks(ylo, yhi, 5)) g.append(s("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end" }, fmt(v)));
  g.append(s("text", { x: (L + W) / 2, y: H - 4, "text-anchor": "middle" }, xlabel), s("text", { x: 12, y: H / 2, transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle" }, ylabel));
  svg.append(g, s("path", { cls: "line", d: pts.map(([x, y], k) => `${k ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("") }));
  return svg;
}
function renderProgress(root) {
  root.replaceChildren();
  const hi = D.history;
  const money_ = hi.cost.some((c) => c > 0);
  const spendX = money_ ? hi.cost : hi.tokens, spendLabel = money_ ? "pipeline LLM spend (USD)" : "pipeline LLM tokens (no cost: unpriced models)";
  root.append(h("h2", {}, "Progress"), h("div", { cls: "charts" },
    lineChart(hi.evaluations, hi.qd_score, "evaluations", "QD score", "chart-qd"),
    lineChart(hi.evaluations, hi.coverage, "evaluations", "coverage", "chart-coverage"),
    lineChart(hi.evaluations, hi.best, "evaluations", "best " + D.meta.objective_name, "chart-best"),
    lineChart(spendX, hi.qd_score, spendLabel, "QD score", "chart-qd-spend"),
    lineChart(spendX, hi.coverage, spendLabel, "coverage", "chart-coverage-spend"),
    lineChart(spendX, hi.best, spendLabel, "best " + D.meta.objective_name, "chart-best-spend")));
  // per operator: the counters the run kept, and what its children did against their first parent
  const per = new Map();
  for (let i = 0; i < N; i++) {
    const op = operatorOf(i), p = E.parents[i][0], pi = p === undefined ? undefined : row(p);
    const o = per.get(op) || { n: 0, added: 0, deltas: [], cost: 0, tokens: 0 };
    o.n++; o.added += E.added[i] > 0; o.cost += E.cost[i]; o.tokens += E.tokens[i];
    if (pi !== undefined && E.objective[i] !== null && E.objective[pi] !== null) o.deltas.push(E.objective[i] - E.objective[pi]);
    per.set(op, o);
  }
  const ops = D.status.operators || {}, byOp = ((D.status.llm || {}).by_operator) || {};
  const names = [...new Set([...Object.keys(ops), ...per.keys()])].sort();
  const cols = ["operator", "evaluated", "inserted", "insert rate", "mean Δ vs parent", "offspring", "valid", "duplicates", "operator LLM tokens", "children's pipeline cost"];
  root.append(h("h3", {}, "Operators"), h("table", { cls: "grid", id: "operators", style: "width:auto" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, names.map((n) => { const o = per.get(n) || { n: 0, added: 0, deltas: [], cost: 0 }, c = ops[n] || {}, u = byOp[n] || {};
      const mean = o.deltas.length ? o.deltas.reduce((a, b) => a + b, 0) / o.deltas.length : null;
      const evaluated = c.evaluated ?? o.n; // the run's counter: the table may hold a sample of a large run
      return h("tr", {}, h("td", {}, n), h("td", { cls: "num" }, evaluated), h("td", { cls: "num" }, o.added), h("td", { cls: "num" }, evaluated ? pct(o.added / evaluated) : "–"),
        h("td", { cls: "num" }, fmt(mean, 3)), h("td", { cls: "num" }, c.offspring ?? "–"), h("td", { cls: "num" }, c.valid ?? "–"),
        h("td", { cls: "num" }, c.duplicates ?? "–"), h("td", { cls: "num" }, (u.tokens_in || 0) + (u.tokens_out || 0)), h("td", { cls: "num" }, money(o.cost))); }))));
}

// -- table ---------------------------------------------------------------------------------------
const PAGE = 100;
function tableColumns() {
  const cols = [{ key: "id", label: "id", get: (i) => E.id[i], num: true },
    { key: "status", label: "status", get: statusOf }, { key: "operator", label: "operator", get: operatorOf },
    { key: "objective", label: D.meta.objective_name, get: (i) => E.objective[i], num: true },
    { key: "elite", label: "elite", get: (i) => (ELITE.has(E.id[i]) ? "✓" : "") }];
  for (const m of Object.keys(E.measures)) cols.push({ key: "m:" + m, label: m, get: (i) => E.measures[m][i], num: true });
  cols.push({ key: "cost", label: "cost", get: (i) => E.cost[i], num: true }, { key: "tokens", label: "tokens", get: (i) => E.tokens[i], num: true },
    { key: "time", label: "time s", get: (i) => E.time[i], num: true }, { key: "parents", label: "parents", get: (i) => E.parents[i].join(" ") });
  return cols;
}
function filteredRows() {
  let rows = [...Array(N).keys()], error = null;
  if (S.q.trim()) {
    try {
      const test = compileWhere(S.q);
      rows = rows.filter((i) => test(rowEnv(i)));
    } catch (e) { if (!(e instanceof WhereError)) throw e; error = e.message; rows = []; }
  }
  return { rows, error };
}
function renderTable(root) {
  root.replaceChildren();
  const cols = tableColumns();
  const { rows, error } = filteredRows();
  const col = cols.find((c) => c.key === S.sort) || cols[0];
  rows.sort((a, b) => {
    const va = col.get(a), vb = col.get(b);
    const c = va === vb ? 0 : va === null ? 1 : vb === null ? -1 : va < vb ? -1 : 1;
    return (S.desc ? -c : c) || E.id[a] - E.id[b];
  });
  const pages = Math.max(1, Math.ceil(rows.length / PAGE)), page = Math.min(S.page || 0, pages - 1);
  const input = h("input", { type: "text", id: "filter", size: 60, value: S.q, placeholder: "e.g. llm_calls <= 4 and objective > 0.5",
    on: { change: (ev) => set({ q: ev.target.value, page: 0 }), keydown: (ev) => { if (ev.key === "Enter") set({ q: ev.target.value, page: 0 }); } } });
  root.append(h("h2", {}, "Evaluations"), h("div", { cls: "controls" }, h("label", {}, "filter ", input),
    h("span", { id: "filter-count" }, `${rows.length} of ${N} evaluations`), error ? h("span", { cls: "error", id: "filter-error" }, "where: " + error) : null),
    h("p", { cls: "muted" }, "Same expressions as `qd elites --where`: names (id, objective, fitness, ", D.meta.objective_name, ", the measures, status, operator, index, elite), numbers, strings, arithmetic, comparisons, and/or/not. `objective` is each evaluation's own score."));
  const pager = h("div", { cls: "pager" }, h("button", { cls: "btn", disabled: page === 0, on: { click: () => set({ page: page - 1 }) } }, "‹"),
    `page ${page + 1} of ${pages}`, h("button", { cls: "btn", disabled: page >= pages - 1, on: { click: () => set({ page: page + 1 }) } }, "›"));
  const head = h("tr", {}, cols.map((c) => h("th", { cls: c.num ? "num" : "", "data-col": c.key, on: { click: () => set({ sort: c.key, desc: S.sort === c.key ? 1 - (S.desc || 0) : 0 }) } },
    c.label, S.sort === c.key ? (S.desc ? " ▼" : " ▲") : "")));
  const body = h("tbody", {}, rows.slice(page * PAGE, (page + 1) * PAGE).map((i) => h("tr", { "data-eval": E.id[i], cls: E.id[i] === S.e ? "sel" : "",
    on: { click: () => set({ e: E.id[i], view: "elite", span: null }) } }, cols.map((c) => h("td", { cls: c.num ? "num" : "" }, c.num ? fmt(c.get(i)) : c.get(i))))));
  root.append(pager, h("table", { cls: "grid", id: "evals" }, h("thead", {}, head), body));
}

// -- start ---------------------------------------------------------------------------------------
async function main() {
  qd.timings.start = performance.now();
  try { D = await decode(); } catch (e) {
    $("status-line").textContent = "This report's data could not be read: " + e; return; }
  qd.timings.decoded = performance.now();
  readHash();
  prepare();
  qd.data = D;
  $("title").textContent = `qd report: ${D.meta.name}`;
  const st = D.status;
  $("headline").textContent = `${D.meta.domain} · ${D.meta.evaluations} evaluations · ${st.num_elites} elites · coverage ${pct(st.coverage)} · QD score ${fmt(st.qd_score, 5)}` + (D.meta.running ? " · in progress" : "");
  $("status-line").remove();
  for (const b of document.querySelectorAll("#nav button")) b.addEventListener("click", () => set({ view: b.dataset.view }));
  writeHash();
  render();
  qd.timings.interactive = performance.now();
  qd.interactive = true;
}
main();
})();
