// aha dashboard: what every page shares — DOM and formatting helpers, the
// API client, server-sent events, the page context and error reporting.
// Rule: API data reaches the DOM only as text (el() appends strings as text
// nodes, never as HTML), so a completion containing markup stays text.

export const KEY = 'aha.key';
export const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
export const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
export const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];
export const view = document.getElementById('view');
const errorBox = document.getElementById('error');

/* ---------- DOM and formatting helpers ---------- */

// el('a', {href, class, dataset: {runId}, onclick: fn, hidden: true}, 'text', node, [more])
export function el(tag, attrs, ...kids) { return build(document.createElement(tag), attrs, kids); }
export function sv(tag, attrs, ...kids) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, kids);
}
export function build(node, attrs = {}, kids = []) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}

export const enc = encodeURIComponent;
// Model ids look like "run/stage": keep the slash readable in links.
export const chatHref = (model) => '#/chat?model=' + enc(model).replace(/%2F/g, '/');

// A run stage's output: its model (a chat link once it succeeded), or the
// dataset a generate or rejection_sample stage added to the catalog.
export function stageOutput(s) {
  if (s.dataset) return el('a', { href: '#/datasets/' + enc(s.dataset) }, s.dataset);
  if (!s.model) return '—';
  return s.status === 'succeeded' ? el('a', { href: chatHref(s.model) }, s.model) : s.model;
}

export function fmtNum(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return v == null ? '—' : String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-4) return v.toExponential(2);
  return String(parseFloat(a >= 1 ? v.toFixed(3) : v.toPrecision(3)));
}
export const fmt3 = (v) => (typeof v === 'number' ? v.toFixed(3) : v == null ? '—' : String(v));
export const fmtTime = (s) => (s ? new Date(s * 1000).toLocaleString() : '—');
export const fmtMs = (ms) => (ms == null ? '—' : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`);
export function fmtDur(start, end) {
  if (!start) return '—';
  let s = Math.max(0, Math.round((end || Date.now() / 1000) - start));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  s %= 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}
export function fmtBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i ? `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}` : `${n} B`;
}
// Message content: a string, null, or an array of {type:"text", text} parts.
export function textOf(c) {
  if (c == null) return '';
  if (typeof c === 'string') return c;
  if (Array.isArray(c) && c.every((p) => typeof p === 'string' || (p && typeof p === 'object')))
    return c.map((p) => (typeof p === 'string' ? p : p.text ?? '')).join('');
  return JSON.stringify(c);
}
export const clip = (s, n = 80) => { s = s.replace(/\s+/g, ' ').trim(); return s.length > n ? s.slice(0, n) + '…' : s; };
export const statusSpan = (s, id) => el('span', { class: `status status-${s}`, id }, s ?? '—');
export const tagList = (tags) => (tags || []).map((t) => el('span', { class: 'tag' }, t));
export const meta = (rows) => el('dl', { class: 'meta' },
  rows.filter((r) => r[1] != null && r[1] !== '').map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
export const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); reject(new DOMException('aborted', 'AbortError')); }, { once: true });
});
// A stage's reward as text: a stored reward's id, or an inline spec's components.
export function rewardText(r) {
  if (r == null) return '—';
  if (typeof r === 'string') return r;
  const cs = Array.isArray(r.components) ? r.components : [];
  return cs.map((c) => {
    const kind = c?.name && c.name !== c.type ? `${c.name} (${c.type ?? '?'})` : c?.type ?? '?';
    return `${kind} ×${c?.weight ?? 1}`;
  }).join(', ') || '—';
}

// A line-coloured swatch (legends); the colour comes from data, so it is set here.
export function swatch(color) {
  const s = el('span', { class: 'swatch' });
  s.style.background = color;
  return s;
}

// Appends to the page view with el()'s rules (arrays flattened, null/false skipped).
export const mount = (...kids) => build(view, {}, kids);

export function showError(msg) {
  errorBox.textContent = msg || '';
  errorBox.hidden = !msg;
}

/* ---------- API ---------- */

export class ApiError extends Error {
  constructor(status, message, param = null, code = null) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

// JSON in, JSON out; {stream: true} returns the Response for SSE bodies.
export async function api(path, { method = 'GET', body, signal, headers = {}, stream = false } = {}) {
  const key = localStorage.getItem(KEY);
  if (!key) throw new ApiError(401, 'An API key is needed.');
  const h = { Authorization: `Bearer ${key}`, ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, signal, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`, param = null, code = null;
    try {
      const e = (await res.json())?.error;
      msg = e?.message || msg;
      param = typeof e?.param === 'string' && e.param ? e.param : null;
      code = e?.code ?? null;
    } catch { /* not JSON */ }
    throw new ApiError(res.status, msg, param, code);
  }
  if (stream) return res;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// Every item of a catalog list (`{data, has_more, last_id}` pages), at most
// `max` of them.
export async function apiAll(path, signal, max = 1000) {
  const out = [];
  let after = null;
  for (;;) {
    const q = new URLSearchParams({ limit: '100' });
    if (after) q.set('after', after);
    const page = await api(`${path}?${q}`, { signal });
    out.push(...(page.data || []));
    after = page.last_id ?? page.data?.at(-1)?.id;
    if (!page.has_more || !after || out.length >= max) return out;
  }
}

// An error as shown to the user: "param: message" when the API named the
// field at fault (unless the message starts with it already).
export function errorText(err) {
  const msg = err?.message || String(err);
  const p = err?.param;
  if (!p || msg.startsWith(p) || msg.startsWith(`'${p}'`)) return msg;
  return `${p}: ${msg}`;
}

// Server-sent events from a fetch Response: yields {event, data, id, retry}.
// Shared by the run event stream and the chat completion stream.
export async function* sseEvents(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '', data = [], event = '', id = null, retry = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      for (;;) {
        const m = /\r\n|\n|\r/.exec(buf);
        if (!m || (m[0] === '\r' && m.index === buf.length - 1)) break; // a \r may start \r\n
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') { // a blank line ends the event
          if (data.length) yield { event: event || 'message', data: data.join('\n'), id, retry };
          data = []; event = '';
          continue;
        }
        if (line[0] === ':') continue; // comment (keep-alive)
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? '' : line.slice(i + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'event') event = val;
        else if (field === 'id') id = val;
        else if (field === 'retry' && /^\d+$/.test(val)) retry = Number(val);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/* ---------- the page context, errors ---------- */

// One context per rendered page: its AbortController stops fetches and
// streams, and its timers are cleared when the page is left.
let current = null;
export function newPage() {
  if (current) { current.ctrl.abort(); current.timers.forEach(clearTimeout); }
  const ctrl = new AbortController();
  const timers = new Set();
  current = {
    ctrl, signal: ctrl.signal, timers,
    later(ms, fn) {
      if (ctrl.signal.aborted) return;
      const t = setTimeout(() => { timers.delete(t); if (!ctrl.signal.aborted) fn(); }, ms);
      timers.add(t);
    },
  };
  return current;
}
export function ready(ctx, name) { if (!ctx.signal.aborted) document.body.dataset.page = name; }

// What a 401 does (app.js asks for a key).
let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

// Errors of a page: 401 asks for a key; others go to the banner. With a
// page name, the page counts as loaded (it shows the error).
export function fail(err, ctx, name) {
  if (err?.name === 'AbortError' || ctx?.signal.aborted) return;
  if (err?.status === 401) { unauthorized(err.message); return; }
  if (!(err instanceof ApiError)) console.error(err); // a bug, not an API answer
  showError(errorText(err));
  if (name) ready(ctx, name);
}
