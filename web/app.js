// aha dashboard: a hash-routed page over the /v1 API, no dependencies.
// Rule: API data reaches the DOM only as text (el() appends strings as text
// nodes, never as HTML), so a completion containing markup stays text.
// Shared helpers are in lib.js, the charts in charts.js; the compare,
// new-run and catalog pages have their own modules.

import {
  KEY, STATUSES, FINAL, PALETTE, view, el, enc, chatHref, stageOutput, fmtNum, fmt3, fmtTime, fmtMs, fmtDur, textOf, clip,
  statusSpan, tagList, meta, sleep, mount, showError, api, sseEvents, newPage, ready, fail, onUnauthorized,
} from './lib.js';
import { chartGrid, drawChart } from './charts.js';
import { renderCompare } from './compare.js';
import { renderNewRun } from './new-run.js';
import { renderCatalog, renderDataset } from './catalog.js';

/* ---------- router, auth ---------- */


const routes = [
  [/^\/runs$/, 'runs', renderRuns],
  [/^\/runs\/([^/]+)$/, 'run', renderRun],
  [/^\/traces$/, 'traces', renderTraces],
  [/^\/traces\/([^/]+)$/, 'trace', renderTrace],
  [/^\/models$/, 'models', renderModels],
  [/^\/chat$/, 'chat', renderChat],
  [/^\/compare$/, 'compare', renderCompare],
  [/^\/new-run$/, 'new-run', renderNewRun],
  [/^\/catalog$/, 'catalog', renderCatalog],
  [/^\/datasets\/([^/]+)$/, 'dataset', renderDataset],
];
// The nav link a page belongs under, where its path does not name one.
const SECTION = { compare: 'runs', 'new-run': 'runs', datasets: 'catalog' };

function route() {
  if (!/^#\/./.test(location.hash)) history.replaceState(null, '', '#/runs');
  const hash = location.hash.slice(1);
  const q = hash.indexOf('?');
  const path = q < 0 ? hash : hash.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : hash.slice(q + 1));
  const ctx = newPage();
  showError('');
  delete document.body.dataset.page;
  const top = path.split('/')[1];
  const section = '#/' + (SECTION[top] || top);
  for (const a of document.querySelectorAll('nav.main a')) {
    const on = a.getAttribute('href') === section;
    a.classList.toggle('active', on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  document.getElementById('sign-out').hidden = !localStorage.getItem(KEY);
  view.replaceChildren();
  if (!localStorage.getItem(KEY)) { showKeyForm(); return; }
  const r = routes.find(([re]) => re.test(path));
  if (!r) {
    mount(el('h1', {}, 'Not found'), el('p', { class: 'empty' }, 'No page here. ', el('a', { href: '#/runs' }, 'Runs')));
    ready(ctx, 'notfound');
    return;
  }
  Promise.resolve()
    .then(() => r[2](ctx, params, ...path.match(r[0]).slice(1).map(decodeURIComponent)))
    .catch((e) => fail(e, ctx, r[1]));
}

function showKeyForm(message) {
  const ctx = newPage(); // stops the page that got the 401
  const input = el('input', { id: 'key-input', type: 'password', autocomplete: 'off', placeholder: 'Bearer key', required: true });
  const form = el('form', {
    id: 'key-form', class: 'card key-form',
    onsubmit: (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      localStorage.setItem(KEY, key);
      route();
    },
  },
  el('h1', {}, 'API key'),
  el('p', { class: 'muted' }, message && localStorage.getItem(KEY)
    ? `The server refused the key: ${message}`
    : 'Every /v1 call needs a key (aha-server keys create --name NAME --scope read|inference|admin). It stays in this browser.'),
  el('label', { for: 'key-input' }, 'Key'), input,
  el('button', { type: 'submit', class: 'primary' }, 'Save key'));
  view.replaceChildren(form);
  ready(ctx, 'key');
  input.focus();
}

document.getElementById('sign-out').addEventListener('click', (e) => {
  e.preventDefault();
  localStorage.removeItem(KEY);
  route();
});
window.addEventListener('hashchange', route);
onUnauthorized(showKeyForm);

/* ---------- #/runs ---------- */

async function renderRuns(ctx) {
  let runs = [], hasMore = false, gen = 0;
  const rowCache = new Map(); // id -> {sig, tr}: unchanged rows keep their nodes
  const select = el('select', { id: 'runs-status', 'aria-label': 'Status filter', onchange: () => { gen++; runs = []; reload().catch((e) => fail(e, ctx)); } },
    el('option', { value: '' }, 'all statuses'), STATUSES.map((s) => el('option', { value: s }, s)));
  const picked = new Set(); // run ids to compare, in the order picked (kept across filters)
  const compareB = el('button', {
    id: 'runs-compare', type: 'button', disabled: true,
    onclick: () => { location.hash = '#/compare?runs=' + [...picked].map(enc).join(','); },
  }, 'Compare');
  const pickedN = el('span', { id: 'runs-picked', class: 'muted' });
  function pick(id, on) {
    if (on) picked.add(id); else picked.delete(id);
    compareB.disabled = picked.size < 2;
    pickedN.textContent = picked.size ? `${picked.size} picked` : '';
  }
  const tbody = el('tbody');
  const table = el('table', { id: 'runs', class: 'grid' },
    el('thead', {}, el('tr', {}, el('th', { class: 'pick', title: 'Pick runs to compare' }),
      ['Name', 'Status', 'Pipeline', 'Tags', 'Created', 'Duration'].map((h) => el('th', {}, h)))), tbody);
  const empty = el('p', { class: 'empty', hidden: true }, 'No runs. Start one with New run (or POST /v1/runs).');
  const more = el('button', { id: 'runs-more', type: 'button', hidden: true, onclick: () => nextPage().catch((e) => fail(e, ctx)) }, 'More');
  mount(el('div', { class: 'page-head' }, el('h1', {}, 'Runs'), select,
    el('span', { class: 'actions' }, pickedN, compareB, el('a', { id: 'runs-new', class: 'button primary', href: '#/new-run' }, 'New run'))),
  table, empty, more);

  const fetchPage = (after, limit = 50) => {
    const q = new URLSearchParams({ limit: String(limit) });
    if (select.value) q.set('status', select.value);
    if (after) q.set('after', after);
    return api('/v1/runs?' + q, { signal: ctx.signal });
  };
  function row(r) {
    const sig = JSON.stringify(r) + fmtDur(r.started_at, r.finished_at);
    const hit = rowCache.get(r.id);
    if (hit && hit.sig === sig) return hit.tr;
    const tr = el('tr', { dataset: { runId: r.id } },
      el('td', { class: 'pick' }, el('input', {
        type: 'checkbox', class: 'pick', checked: picked.has(r.id), 'aria-label': `Compare ${r.name || r.id}`,
        onchange: (e) => pick(r.id, e.target.checked),
      })),
      el('td', {}, el('a', { href: '#/runs/' + enc(r.id) }, r.name || r.id)),
      el('td', {}, statusSpan(r.status)),
      el('td', {}, r.pipeline ?? r.pipeline_id ?? '—'),
      el('td', {}, tagList(r.tags)),
      el('td', {}, fmtTime(r.created_at)),
      el('td', { class: 'num' }, fmtDur(r.started_at, r.finished_at)));
    rowCache.set(r.id, { sig, tr });
    return tr;
  }
  function draw() {
    tbody.replaceChildren(...runs.map(row));
    table.hidden = !runs.length;
    empty.hidden = !!runs.length;
    more.hidden = !hasMore;
  }
  // The first pages again, as many rows as are shown (filter kept).
  async function reload() {
    const g = gen, want = Math.max(50, runs.length), got = [];
    let after = null, more_ = false;
    do {
      const p = await fetchPage(after, Math.min(100, want - got.length));
      got.push(...p.data);
      more_ = p.has_more;
      after = got.at(-1)?.id;
    } while (more_ && got.length < want && after);
    if (g !== gen) return; // the filter changed meanwhile
    runs = got; hasMore = more_;
    draw();
  }
  async function nextPage() {
    const g = ++gen, p = await fetchPage(runs.at(-1)?.id); // a reload in flight is dropped
    if (g !== gen) return;
    runs.push(...p.data.filter((r) => !runs.some((x) => x.id === r.id)));
    hasMore = p.has_more;
    draw();
  }
  await reload();
  ready(ctx, 'runs');
  const tick = () => ctx.later(5000, () => reload().catch((e) => fail(e, ctx)).finally(tick));
  tick();
}

/* ---------- #/runs/<id> ---------- */

// A <think>…</think> section (or, when the prompt opened it, text up to
// </think>) becomes span.think; the rest stays plain text.
function completionPre(text) {
  const open = text.indexOf('<think>');
  const close = text.indexOf('</think>', Math.max(open, 0));
  let a = 0, b = 0;
  if (close >= 0) { a = Math.max(open, 0); b = close + 8; } else if (open >= 0) { a = open; b = text.length; }
  return el('pre', { class: 'completion' }, text.slice(0, a), b > a && el('span', { class: 'think' }, text.slice(a, b)), text.slice(b));
}

function sampleNode(s) {
  const rewards = s.rewards && typeof s.rewards === 'object' ? Object.entries(s.rewards) : [];
  if (!rewards.length && s.reward != null) rewards.push(['reward', s.reward]);
  if (s.correct != null) rewards.push(['correct', s.correct ? 'yes' : 'no']);
  return el('article', { class: 'sample' },
    el('header', {},
      el('strong', {}, `step ${s.step ?? '?'}`),
      s.stage && el('span', { class: 'stage' }, s.stage),
      s.completion_tokens != null && el('span', { class: 'muted' }, `${s.completion_tokens} tokens`),
      s.advantage != null && el('span', { class: 'advantage' }, `advantage ${fmt3(s.advantage)}`)),
    el('pre', { class: 'prompt' }, textOf(s.prompt)),
    completionPre(textOf(s.completion)),
    rewards.length > 0 && el('ul', { class: 'rewards' }, rewards.map(([k, v]) => el('li', {}, `${k}: ${fmt3(v)}`))));
}

async function renderRun(ctx, _params, id) {
  const base = `/v1/runs/${enc(id)}`;
  const opt = { signal: ctx.signal };
  let run = await api(base, opt); // first: its last_seq is where the stream starts
  // The newest 20 samples: the later stages first, each newest first.
  async function newestSamples() {
    const out = [], stages = (run.stages || []).map((s) => s.name).reverse();
    for (const stage of stages.length ? stages : [null]) {
      if (out.length >= 20) break;
      const q = new URLSearchParams({ order: 'desc', limit: String(20 - out.length) });
      if (stage !== null) q.set('stage', stage);
      out.push(...(await api(`${base}/samples?${q}`, opt)).data);
    }
    return out;
  }
  const [metrics, samples, ckpts] = await Promise.all([
    api(base + '/metrics', opt), newestSamples(), api(base + '/checkpoints', opt),
  ]);

  const st = {
    lastSeq: run.last_seq || 0, final: false, streaming: false,
    series: new Map(), // metric -> stage -> {steps, values}
    latest: new Map(), // metric -> the stage last written
    colors: new Map(), dirty: new Set(), flushing: false, refreshing: false,
    sampleKeys: new Set(), // the REST samples, to drop their live copies
  };
  const color = (stage) => {
    if (!st.colors.has(stage)) st.colors.set(stage, PALETTE[st.colors.size % PALETTE.length]);
    return st.colors.get(stage);
  };
  (run.stages || []).forEach((s) => color(s.name));

  // ---- skeleton ----
  const nameH = el('h1', { id: 'run-name' });
  const statusS = el('span', { id: 'run-status' });
  const live = el('span', { id: 'live', class: 'live' }, 'connecting');
  const actions = el('span', { class: 'actions' });
  const cancelB = el('button', { id: 'run-cancel', type: 'button', onclick: () => act('cancel', cancelB) }, 'Cancel');
  const resumeB = el('button', { id: 'run-resume', type: 'button', onclick: () => act('resume', resumeB) }, 'Resume');
  const metaBox = el('div'), errSlot = el('div');
  const stagesBody = el('tbody');
  const charts = el('div', { id: 'charts' });
  const grid = chartGrid(charts);
  const noCharts = el('p', { class: 'empty' }, 'No metrics yet.');
  const samplesBox = el('div', { id: 'samples' });
  const noSamples = el('p', { class: 'empty' }, 'No samples yet.');
  const ckptList = el('ul', { id: 'checkpoints' });
  const noCkpt = el('p', { class: 'empty' }, 'No checkpoints yet.');
  const events = el('ol', { id: 'events' });
  const specPre = el('pre', { class: 'json' });
  mount(
    el('div', { class: 'page-head' }, nameH, statusS, live, actions),
    metaBox, errSlot,
    el('h2', {}, 'Stages'),
    el('table', { id: 'stages', class: 'grid' },
      el('thead', {}, el('tr', {}, ['Stage', 'Kind', 'Status', 'Output', 'Duration'].map((h) => el('th', {}, h)))), stagesBody),
    el('h2', {}, 'Metrics'), noCharts, charts,
    el('h2', {}, 'Samples'), noSamples, samplesBox,
    el('div', { class: 'cols' },
      el('section', {}, el('h2', {}, 'Checkpoints'), noCkpt, ckptList),
      el('section', {}, el('h2', {}, 'Events'), events)),
    el('details', { id: 'run-spec' }, el('summary', {}, 'Compiled spec'), specPre));

  function drawRun() {
    nameH.textContent = run.name || run.id;
    statusS.textContent = run.status;
    statusS.className = `status status-${run.status}`;
    actions.replaceChildren(...(run.status === 'queued' || run.status === 'running' ? [cancelB] : []),
      ...(run.status === 'failed' || run.status === 'cancelled' ? [resumeB] : []));
    metaBox.replaceChildren(meta([
      ['ID', el('code', {}, run.id)], ['Pipeline', run.pipeline ? `${run.pipeline} (${run.pipeline_id})` : run.pipeline_id], ['Base model', run.base_model],
      ['Attempt', run.attempt], ['Created', fmtTime(run.created_at)], ['Started', fmtTime(run.started_at)],
      ['Finished', run.finished_at ? fmtTime(run.finished_at) : null],
      ['Duration', fmtDur(run.started_at, run.finished_at)],
      ['Tags', run.tags?.length ? tagList(run.tags) : null], ['Resume from', run.resume_from],
    ]));
    errSlot.replaceChildren(...(run.error != null ? [el('pre', { id: 'run-error', class: 'run-error' }, run.error)] : []));
    stagesBody.replaceChildren(...(run.stages || []).map((s) => el('tr', { dataset: { stage: s.name } },
      el('td', {}, s.name), el('td', {}, s.kind ?? '—'), el('td', {}, statusSpan(s.status)),
      el('td', {}, stageOutput(s)),
      el('td', { class: 'num' }, fmtDur(s.started_at, s.finished_at)))));
  }
  // the run as fetched: its header, stages and spec (drawRun alone as the durations move)
  function drawFetched() {
    drawRun();
    specPre.textContent = JSON.stringify(run.spec ?? null, null, 2);
  }
  function drawCheckpoints(list) {
    ckptList.replaceChildren(...(list || []).map((k) => el('li', {},
      el('strong', {}, `${k.stage} · step ${k.step}`), ' ', el('code', {}, k.path), ' ', el('span', { class: 'muted' }, fmtTime(k.created_at)))));
    noCkpt.hidden = ckptList.childElementCount > 0;
  }
  async function refreshRun() {
    const [r, k] = await Promise.all([api(base, opt), api(base + '/checkpoints', opt)]);
    run = r;
    drawFetched();
    drawCheckpoints(k.data);
  }
  // Coalesces the refetches that a burst of stage/status events asks for.
  function scheduleRefresh() {
    if (st.refreshing) return;
    st.refreshing = true;
    ctx.later(300, () => refreshRun().catch((e) => fail(e, ctx)).finally(() => { st.refreshing = false; }));
  }
  async function act(kind, button) {
    button.disabled = true;
    try {
      await api(`${base}/${kind}`, { method: 'POST', signal: ctx.signal });
      showError('');
      await refreshRun();
      if (kind === 'resume') stream(); // a resumed run writes on after its final status
    } catch (e) { fail(e, ctx); } finally { button.disabled = false; }
  }

  // ---- metrics ----
  function addPoint(name, stage, step, value) {
    if (typeof value !== 'number' || !Number.isFinite(value)) return;
    let m = st.series.get(name);
    if (!m) st.series.set(name, (m = new Map()));
    let s = m.get(stage);
    if (!s) m.set(stage, (s = { steps: [], values: [] }));
    color(stage);
    let i = s.steps.length; // steps stay sorted; a step seen again (replay, resume) is replaced
    while (i > 0 && s.steps[i - 1] > step) i--;
    if (i > 0 && s.steps[i - 1] === step) s.values[i - 1] = value;
    else { s.steps.splice(i, 0, step); s.values.splice(i, 0, value); }
    st.latest.set(name, stage);
    st.dirty.add(name);
  }
  function flushCharts() {
    if (st.flushing) return;
    st.flushing = true;
    ctx.later(100, () => {
      st.flushing = false;
      for (const n of st.dirty) drawMetric(n);
      st.dirty.clear();
    });
  }
  // One line per stage, coloured by stage; the caption shows the latest value.
  function drawMetric(name) {
    const m = st.series.get(name), ls = st.latest.get(name), last = m.get(ls);
    noCharts.hidden = true;
    drawChart(grid.get(name),
      [...m].map(([stage, s]) => ({ data: { stage }, label: stage, color: color(stage), steps: s.steps, values: s.values })), {
        caption: [el('span', { class: 'metric-value' }, fmtNum(last.values.at(-1))),
          m.size > 1 ? el('span', { class: 'muted' }, ` (${ls})`) : ''],
        legend: m.size > 1 ? [...m.keys()].map((stage) => ({ label: stage, color: color(stage) })) : [],
      });
  }

  // ---- samples and events ----
  const stageIdx = (s) => { const i = (run.stages || []).findIndex((x) => x.name === s); return i < 0 ? 1e9 : i; };
  // A live sample that the REST list already had (written between the two
  // reads) is not shown twice.
  const sampleKey = (s) => JSON.stringify([s.stage, s.step, s.prompt, s.completion]);
  function addSample(s, live) {
    if (live) {
      if (st.sampleKeys.delete(sampleKey(s))) return;
      samplesBox.prepend(sampleNode(s));
    } else {
      st.sampleKeys.add(sampleKey(s));
      samplesBox.append(sampleNode(s));
    }
    while (samplesBox.childElementCount > 50) samplesBox.lastElementChild.remove();
    noSamples.hidden = true;
  }
  function logEvent(type, d) {
    const text = type === 'stage' ? `${d.stage ?? ''} ${d.status ?? d.state ?? ''}${d.error ? ': ' + d.error : ''}`
      : type === 'status' ? `${d.status}${d.message ? ': ' + d.message : ''}`
      : type === 'checkpoint' ? `${d.stage ?? ''} step ${d.step ?? '?'} ${d.path ?? ''}`
      : d.message != null ? `${d.stage ? d.stage + ': ' : ''}${d.message}` : JSON.stringify(d);
    events.append(el('li', { class: `event event-${type}`, dataset: { type } },
      el('time', {}, new Date().toLocaleTimeString()), ' ', el('b', {}, type), ' ', text));
    while (events.childElementCount > 200) events.firstElementChild.remove();
  }
  function onEvent(ev) {
    let d;
    try { d = JSON.parse(ev.data); } catch { d = { message: ev.data }; }
    if (d == null || typeof d !== 'object') d = { message: String(d) };
    st.final = ev.event === 'status' && FINAL.has(d.status);
    if (ev.event === 'metric') {
      for (const [k, v] of Object.entries(d.values || {})) addPoint(k, d.stage ?? '', d.step ?? 0, v);
      flushCharts();
    } else if (ev.event === 'sample') {
      addSample(d, true);
    } else {
      logEvent(ev.event, d);
      if (['stage', 'checkpoint', 'status'].includes(ev.event)) scheduleRefresh();
    }
  }
  function setLive(state) {
    live.textContent = state;
    live.className = `live live-${state}`;
  }
  // The run's events after the last seq we have; reconnects on network
  // errors and ends after a final status (or 204: nothing more will come).
  async function stream() {
    if (st.streaming) return;
    st.streaming = true;
    let delay = 2000;
    try {
      while (!ctx.signal.aborted) {
        setLive('connecting');
        try {
          const res = await api(base + '/events', {
            signal: ctx.signal, stream: true,
            headers: { 'Last-Event-ID': String(st.lastSeq), Accept: 'text/event-stream' },
          });
          if (res.status === 204) { setLive('ended'); return; }
          setLive('live');
          for await (const ev of sseEvents(res)) {
            if (ev.retry) delay = ev.retry;
            const seq = Number(ev.id);
            if (Number.isFinite(seq) && ev.id !== null) {
              if (seq <= st.lastSeq) continue; // seen already
              st.lastSeq = seq;
            }
            onEvent(ev);
          }
          if (st.final) { setLive('ended'); return; }
        } catch (e) {
          if (ctx.signal.aborted) return;
          if (e.status === 401) return fail(e, ctx);
          if (e.status && e.status < 500 && e.status !== 429) { fail(e, ctx); setLive('ended'); return; }
        }
        setLive('reconnecting');
        await sleep(delay, ctx.signal);
      }
    } catch { /* aborted: the page was left */ } finally {
      st.streaming = false;
    }
  }

  // ---- first render ----
  drawFetched();
  for (const s of metrics.data || []) {
    (s.steps || []).forEach((x, i) => addPoint(s.name, s.stage ?? '', x, s.values?.[i]));
  }
  // the later stage wins the caption when several stages log a metric
  for (const [n, m] of st.series) st.latest.set(n, [...m.keys()].sort((a, b) => stageIdx(a) - stageIdx(b)).at(-1));
  [...st.series.keys()].forEach(drawMetric);
  st.dirty.clear();
  samples.forEach((s) => addSample(s, false));
  drawCheckpoints(ckpts.data);
  ready(ctx, 'run');
  stream();
  // the durations of a run in progress move on between its events
  const tick = () => ctx.later(5000, () => {
    if (run.status === 'running' || run.status === 'queued') drawRun();
    tick();
  });
  tick();
}

/* ---------- #/traces ---------- */

function lastUserText(t) {
  if (Array.isArray(t.messages)) {
    const m = [...t.messages].reverse().find((x) => x?.role === 'user') || t.messages.at(-1);
    return textOf(m?.content);
  }
  return textOf(t.prompt);
}

async function renderTraces(ctx, params) {
  const qIn = el('input', { id: 'trace-q', type: 'search', placeholder: 'Search prompts and answers', value: params.get('q') || '' });
  const modelIn = el('input', { id: 'trace-model', placeholder: 'Model', value: params.get('model') || '' });
  const finish = el('select', { id: 'trace-finish', 'aria-label': 'Finish reason' },
    ['', 'stop', 'length', 'tool_calls', 'cancelled', 'error'].map((f) => el('option', { value: f }, f || 'any finish')));
  finish.value = params.get('finish_reason') || '';
  const form = el('form', {
    id: 'trace-search', class: 'toolbar',
    onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if (qIn.value.trim()) p.set('q', qIn.value.trim());
      if (modelIn.value.trim()) p.set('model', modelIn.value.trim());
      if (finish.value) p.set('finish_reason', finish.value);
      const h = '#/traces' + (p.toString() ? '?' + p : '');
      if (location.hash === h) route(); else location.hash = h; // the query lives in the hash
    },
  }, qIn, modelIn, finish, el('button', { type: 'submit', class: 'primary' }, 'Search'));
  const tbody = el('tbody');
  const table = el('table', { id: 'traces', class: 'grid' },
    el('thead', {}, el('tr', {}, ['Time', 'Model', 'Prompt', 'Answer', 'Finish', 'Tokens', 'Latency'].map((h) => el('th', {}, h)))), tbody);
  const empty = el('p', { class: 'empty', hidden: true }, 'No traces match. Every completion served by /v1 is stored here.');
  const more = el('button', { id: 'traces-more', type: 'button', hidden: true, onclick: () => load(lastId).catch((e) => fail(e, ctx)) }, 'More');
  mount(el('div', { class: 'page-head' }, el('h1', {}, 'Traces')), form, table, empty, more);
  let lastId = null;

  async function load(after) {
    const q = new URLSearchParams({ limit: '25' });
    for (const k of ['q', 'model', 'finish_reason']) if (params.get(k)) q.set(k, params.get(k));
    if (after) q.set('after', after);
    const page = await api('/v1/traces?' + q, { signal: ctx.signal });
    for (const t of page.data || []) {
      const href = '#/traces/' + enc(t.id);
      const u = t.usage || {};
      tbody.append(el('tr', { class: 'clickable', dataset: { traceId: t.id }, onclick: () => { location.hash = href; } },
        el('td', { class: 'nowrap' }, el('a', { href }, fmtTime(t.created))),
        el('td', {}, t.model ?? '—'),
        el('td', { class: 'text' }, clip(lastUserText(t))),
        el('td', { class: 'text' }, t.content != null ? clip(textOf(t.content))
          : el('span', { class: 'muted' }, clip(textOf(t.reasoning_content)))), // no answer: the reasoning, dimmed
        el('td', {}, t.finish_reason ?? '—'),
        el('td', { class: 'num' }, `${u.prompt_tokens ?? '?'} / ${u.completion_tokens ?? '?'}`),
        el('td', { class: 'num' }, fmtMs(t.latency_ms))));
    }
    lastId = page.last_id ?? page.data?.at(-1)?.id ?? null;
    more.hidden = !page.has_more;
    table.hidden = !tbody.childElementCount;
    empty.hidden = !!tbody.childElementCount;
  }
  await load(null);
  ready(ctx, 'traces');
}

/* ---------- #/traces/<id> ---------- */

function messageNode(m) {
  const role = m?.role ?? 'unknown';
  return el('div', { class: 'message', dataset: { role } },
    el('div', { class: 'role' }, role, m?.tool_call_id ? ` (${m.tool_call_id})` : ''),
    m?.reasoning_content && el('details', {}, el('summary', {}, 'Reasoning'), el('pre', { class: 'reasoning' }, m.reasoning_content)),
    el('pre', { class: 'content' }, textOf(m?.content)),
    m?.tool_calls && el('pre', { class: 'json tool-calls' }, JSON.stringify(m.tool_calls, null, 2)));
}

async function renderTrace(ctx, _params, id) {
  const t = await api('/v1/traces/' + enc(id), { signal: ctx.signal });
  const u = t.usage || {};
  const chat = el('a', {
    href: chatHref(t.model), class: 'button',
    onclick: () => { // carry the conversation over to the playground
      if (!Array.isArray(t.messages)) return;
      chatState.turns = t.messages.filter((m) => ['system', 'user', 'assistant'].includes(m?.role))
        .map((m) => ({ role: m.role, content: textOf(m.content) }));
      if (t.content != null) chatState.turns.push({ role: 'assistant', content: t.content, reasoning: t.reasoning_content || '' });
    },
  }, 'Continue in chat');
  mount(
    el('div', { class: 'page-head' }, el('h1', {}, 'Trace'), el('code', { class: 'muted' }, t.id), chat),
    meta([
      ['Model', t.model], ['Endpoint', t.endpoint], ['Time', fmtTime(t.created)], ['Finish reason', t.finish_reason],
      ['Tokens', `${u.prompt_tokens ?? '?'} prompt, ${u.completion_tokens ?? '?'} completion` +
        (u.reasoning_tokens != null ? ` (${u.reasoning_tokens} reasoning)` : '')],
      ['Time to first token', fmtMs(t.ttft_ms)], ['Latency', fmtMs(t.latency_ms)], ['Request', t.request_id],
    ]),
    el('details', { class: 'params' }, el('summary', {}, 'Parameters'), el('pre', { class: 'json' }, JSON.stringify(t.params ?? {}, null, 2))),
    Array.isArray(t.messages)
      ? [el('h2', {}, 'Conversation'), el('div', { id: 'trace-messages' }, t.messages.map((m) => messageNode(m)))]
      : [el('h2', {}, 'Prompt'), el('pre', { id: 'trace-prompt', class: 'content' }, typeof t.prompt === 'string' ? t.prompt : JSON.stringify(t.prompt))],
    el('h2', {}, 'Answer'),
    t.reasoning_content != null && el('details', { open: true, class: 'reasoning' },
      el('summary', {}, 'Reasoning'), el('pre', { id: 'trace-reasoning', class: 'reasoning' }, t.reasoning_content)),
    el('pre', { id: 'trace-content', class: 'content', 'data-null': t.content == null ? '' : null }, t.content ?? ''));
  ready(ctx, 'trace');
}

/* ---------- #/models ---------- */

async function renderModels(ctx) {
  const list = await api('/v1/models', { signal: ctx.signal });
  const models = list.data || [];
  mount(el('div', { class: 'page-head' }, el('h1', {}, 'Models')),
    models.length
      ? el('table', { id: 'models', class: 'grid' },
        el('thead', {}, el('tr', {}, ['ID', 'Root', 'Context', 'Created', ''].map((h) => el('th', {}, h)))),
        el('tbody', {}, models.map((m) => el('tr', { dataset: { modelId: m.id } },
          el('td', {}, el('code', {}, m.id)), el('td', { class: 'text' }, m.root ?? '—'),
          el('td', { class: 'num' }, m.max_model_len ?? '—'), el('td', {}, fmtTime(m.created)),
          el('td', {}, el('a', { href: chatHref(m.id) }, 'Chat'))))))
      : el('p', { class: 'empty' }, 'No models. Import one with POST /v1/models or train one.'));
  ready(ctx, 'models');
}

/* ---------- #/chat ---------- */

// The conversation outlives the page: {role, content, reasoning?} per turn.
const chatState = { turns: [], model: '', maxTokens: '256', temperature: '0.6', thinking: true };

function turnNode(t, ids) {
  if (t.role !== 'assistant') return messageNode(t);
  const reasoning = el('pre', { class: 'reasoning', id: ids ? 'chat-reasoning' : null }, t.reasoning || '');
  const content = el('pre', { class: 'content', id: ids ? 'chat-content' : null }, t.content || '');
  const det = el('details', { open: true, class: 'reasoning', hidden: !ids && !t.reasoning }, el('summary', {}, 'Reasoning'), reasoning);
  return el('div', { class: 'message', dataset: { role: 'assistant' } }, el('div', { class: 'role' }, 'assistant'), det, content);
}

async function renderChat(ctx, params) {
  const models = (await api('/v1/models', { signal: ctx.signal })).data || [];
  const want = params.get('model') || chatState.model;
  const select = el('select', { id: 'chat-model', 'aria-label': 'Model', onchange: () => { chatState.model = select.value; } },
    models.map((m) => el('option', { value: m.id }, m.id)));
  if (want && !models.some((m) => m.id === want)) select.append(el('option', { value: want }, want));
  if (want) select.value = want;
  chatState.model = select.value;
  const maxTok = el('input', { id: 'chat-max-tokens', type: 'number', min: 1, value: chatState.maxTokens, onchange: () => { chatState.maxTokens = maxTok.value; } });
  const temp = el('input', { id: 'chat-temperature', type: 'number', min: 0, max: 2, step: 0.1, value: chatState.temperature, onchange: () => { chatState.temperature = temp.value; } });
  // off: chat_template_kwargs.enable_thinking false (an empty reasoning block, Qwen3's switch)
  const think = el('input', { id: 'chat-thinking', type: 'checkbox', checked: chatState.thinking, onchange: () => { chatState.thinking = think.checked; } });
  const log = el('div', { id: 'chat-log' }, chatState.turns.map((t) => turnNode(t, false)));
  const input = el('textarea', { id: 'chat-input', rows: 3, placeholder: 'Message (Enter sends, Shift+Enter for a new line)' });
  const send = el('button', { id: 'chat-send', type: 'submit', class: 'primary' }, 'Send');
  const stop = el('button', { id: 'chat-stop', type: 'button', disabled: true, onclick: () => active?.abort() }, 'Stop');
  const clear = el('button', {
    id: 'chat-clear', type: 'button',
    onclick: () => { active?.abort(); chatState.turns = []; log.replaceChildren(); done.hidden = true; showError(''); },
  }, 'Clear');
  const done = el('p', { id: 'chat-done', class: 'muted', hidden: true });
  const form = el('form', { id: 'chat-form', onsubmit: (e) => { e.preventDefault(); sendTurn(); } }, input,
    el('div', { class: 'toolbar' }, send, stop, clear));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  mount(el('div', { class: 'page-head' }, el('h1', {}, 'Chat'),
    el('label', {}, 'Model ', select), el('label', {}, 'Max tokens ', maxTok), el('label', {}, 'Temperature ', temp),
    el('label', {}, think, ' Thinking')),
  models.length ? null : el('p', { class: 'empty' }, 'No models to chat with yet.'),
  log, form, done);
  let active = null; // the AbortController of the stream in flight

  async function sendTurn() {
    const text = input.value;
    if (!text.trim() || active) return;
    showError('');
    done.hidden = true;
    const user = { role: 'user', content: text };
    chatState.turns.push(user);
    const userEl = messageNode(user);
    // the newest turn owns the ids
    for (const id of ['chat-reasoning', 'chat-content']) document.getElementById(id)?.removeAttribute('id');
    const turn = { role: 'assistant', content: '', reasoning: '' };
    const turnEl = turnNode(turn, true);
    const rText = document.createTextNode(''), cText = document.createTextNode('');
    turnEl.querySelector('#chat-reasoning').append(rText);
    turnEl.querySelector('#chat-content').append(cText);
    log.append(userEl, turnEl);
    input.value = '';
    const ctrl = (active = new AbortController());
    const leave = () => ctrl.abort();
    ctx.signal.addEventListener('abort', leave);
    send.disabled = true;
    stop.disabled = false;
    const body = {
      model: select.value, messages: chatState.turns.map(({ role, content }) => ({ role, content })),
      stream: true, stream_options: { include_usage: true },
    };
    const mt = parseInt(maxTok.value, 10), tp = parseFloat(temp.value);
    if (mt > 0) body.max_tokens = mt;
    if (Number.isFinite(tp)) body.temperature = tp;
    if (!think.checked) body.chat_template_kwargs = { enable_thinking: false };
    let ok = false, finish = null, usage = null, id = null;
    try {
      const res = await api('/v1/chat/completions', { method: 'POST', body, signal: ctrl.signal, stream: true });
      ok = true;
      id = res.headers.get('x-request-id');
      for await (const ev of sseEvents(res)) {
        if (ev.data === '[DONE]') break;
        let chunk;
        try { chunk = JSON.parse(ev.data); } catch { continue; }
        if (chunk?.error) { showError(chunk.error.message || 'the stream failed'); finish = 'error'; continue; }
        id = chunk.id || id;
        if (chunk.usage) usage = chunk.usage;
        const c = chunk.choices?.[0];
        if (!c) continue;
        if (c.delta?.reasoning_content) rText.appendData(c.delta.reasoning_content);
        if (c.delta?.content) cText.appendData(c.delta.content);
        if (c.delta?.tool_calls) cText.appendData(JSON.stringify(c.delta.tool_calls));
        if (c.finish_reason) finish = c.finish_reason;
        log.scrollTop = log.scrollHeight;
      }
    } catch (e) {
      if (e.name === 'AbortError') finish = finish || 'stopped';
      else fail(e, ctx);
    } finally {
      ctx.signal.removeEventListener('abort', leave);
      active = null;
      send.disabled = false;
      stop.disabled = true;
    }
    if (ok) { // as OpenAI clients do, only the content goes back to the model
      turn.content = cText.data;
      turn.reasoning = rText.data;
      chatState.turns.push(turn);
    } else { // refused: take the turn back so it can be edited and sent again
      chatState.turns.pop();
      userEl.remove();
      turnEl.remove();
      if (!ctx.signal.aborted) input.value = text;
      return;
    }
    if (!turn.reasoning) turnEl.querySelector('details').hidden = true;
    if (ctx.signal.aborted) return;
    const usageText = usage
      ? ` · ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` +
        (usage.completion_tokens_details?.reasoning_tokens != null ? ` (${usage.completion_tokens_details.reasoning_tokens} reasoning)` : '')
      : '';
    done.replaceChildren(`finish_reason: ${finish ?? '—'}${usageText}${id ? ' · ' + id : ''} · `,
      el('a', { id: 'chat-trace', href: id ? '#/traces/' + enc(id) : '#/traces' }, 'its trace'));
    done.hidden = false;
    input.focus();
  }
  ready(ctx, 'chat');
}

route();
