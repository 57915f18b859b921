// aha dashboard: #/compare?runs=<id>,<id>,... — several runs side by side:
// a header table and one chart per metric name with a line per run and stage
// (a colour per run, a dash pattern per stage within it).

import {
  PALETTE, el, enc, fmtNum, fmtTime, statusSpan, swatch, mount, showError, errorText, api, ready, fail,
} from './lib.js';
import { chartCmp, chartGrid, drawChart } from './charts.js';

const DASHES = [null, '5 3', '1.5 2.5', '8 3 2 3'];

// A metric's points of one stage, the nulls left out.
function points(m) {
  const steps = [], values = [];
  (m.steps || []).forEach((x, i) => {
    const v = m.values?.[i];
    if (typeof v === 'number' && Number.isFinite(v)) { steps.push(x); values.push(v); }
  });
  return { steps, values };
}

// The stages of a run in pipeline order; stages only the metrics name come last.
function stageOrder(run, metrics) {
  const order = (run.stages || []).map((s) => s.name);
  for (const m of metrics) if (!order.includes(m.stage ?? '')) order.push(m.stage ?? '');
  return order;
}

// The last value of metric `name` in the latest stage that logged it (as the run page's caption).
function lastValue(r, name) {
  let best = null;
  for (const m of r.metrics) {
    if (m.name !== name) continue;
    const p = points(m);
    if (!p.values.length) continue;
    const i = r.stages.indexOf(m.stage ?? '');
    if (!best || i >= best.i) best = { i, v: p.values.at(-1) };
  }
  return best ? best.v : null;
}

export async function renderCompare(ctx, params) {
  const ids = [...new Set((params.get('runs') || '').split(',').map((s) => s.trim()).filter(Boolean))];
  const refresh = el('button', { id: 'compare-refresh', type: 'button', onclick: () => reload().catch((e) => fail(e, ctx)) }, 'Refresh');
  mount(el('div', { class: 'page-head' }, el('h1', {}, 'Compare runs'),
    el('span', { class: 'actions' }, el('a', { class: 'button', href: '#/runs' }, 'Runs'), refresh)));
  if (!ids.length) {
    mount(el('p', { class: 'empty' }, 'No runs picked. Tick two or more on the ', el('a', { href: '#/runs' }, 'Runs'), ' page and press Compare.'));
    refresh.hidden = true;
    ready(ctx, 'compare');
    return;
  }
  const tbody = el('tbody');
  const table = el('table', { id: 'compare-runs', class: 'grid' },
    el('thead', {}, el('tr', {}, ['Run', 'Status', 'Pipeline', 'Base model', 'Created', 'Reward'].map((h) => el('th', {}, h)))), tbody);
  const charts = el('div', { id: 'compare-charts' });
  const noCharts = el('p', { class: 'empty', hidden: true }, 'None of these runs has logged metrics yet.');
  const grid = chartGrid(charts);
  mount(table, el('h2', {}, 'Metrics'), noCharts, charts);

  // Each run with its metrics; a run that cannot be read is reported and left out.
  async function load() {
    const got = await Promise.all(ids.map(async (id, i) => {
      try {
        const [run, metrics] = await Promise.all([
          api(`/v1/runs/${enc(id)}`, { signal: ctx.signal }), api(`/v1/runs/${enc(id)}/metrics`, { signal: ctx.signal })]);
        const data = metrics?.data || [];
        return { id, run, metrics: data, stages: stageOrder(run, data), color: PALETTE[i % PALETTE.length] };
      } catch (e) {
        if (e.name === 'AbortError' || e.status === 401) throw e;
        return { id, error: e };
      }
    }));
    const bad = got.filter((r) => r.error);
    showError(bad.map((r) => `${r.id}: ${errorText(r.error)}`).join('\n'));
    return got.filter((r) => !r.error);
  }

  function draw(runs) {
    tbody.replaceChildren(...runs.map((r) => el('tr', { dataset: { runId: r.run.id } },
      el('td', {}, swatch(r.color), el('a', { href: '#/runs/' + enc(r.run.id) }, r.run.name || r.run.id)),
      el('td', {}, statusSpan(r.run.status)),
      el('td', {}, r.run.pipeline ?? r.run.pipeline_id ?? '—'),
      el('td', {}, r.run.base_model ?? '—'),
      el('td', {}, fmtTime(r.run.created_at)),
      el('td', { class: 'num reward' }, fmtNum(lastValue(r, 'reward'))))));
    const names = new Set(runs.flatMap((r) => r.metrics.map((m) => m.name)));
    grid.clear();
    noCharts.hidden = names.size > 0;
    for (const name of [...names].sort(chartCmp)) {
      const series = [], legend = [];
      for (const r of runs) {
        const ms = r.metrics.filter((m) => m.name === name)
          .sort((a, b) => r.stages.indexOf(a.stage ?? '') - r.stages.indexOf(b.stage ?? ''));
        if (!ms.length) continue;
        const label = r.run.name || r.run.id;
        for (const m of ms) {
          const stage = m.stage ?? '';
          series.push({
            data: { run: r.run.id, stage }, label: ms.length > 1 || r.stages.length > 1 ? `${label} · ${stage}` : label,
            color: r.color, dash: DASHES[Math.max(0, r.stages.indexOf(stage)) % DASHES.length], ...points(m),
          });
        }
        legend.push({ label, color: r.color, value: fmtNum(lastValue(r, name)) });
      }
      drawChart(grid.get(name), series, { legend });
    }
  }

  async function reload() {
    refresh.disabled = true;
    try { draw(await load()); } finally { refresh.disabled = false; }
  }
  draw(await load());
  ready(ctx, 'compare');
}
