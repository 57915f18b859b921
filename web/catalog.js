// aha dashboard: #/catalog — the stored datasets, reward specs and
// pipelines — and #/datasets/<id>, one dataset's summary and rows.

import { el, enc, fmtNum, fmtTime, fmtBytes, clip, meta, mount, api, ready, fail, rewardText } from './lib.js';

const PAGE = 50; // catalog rows per request
const ROWS = 20; // dataset rows per request

// A catalog list (`{data, has_more, last_id}` pages, newest first) as a
// table whose More button fetches the next page.
function pagedTable(ctx, { id, path, head, row, empty }) {
  const tbody = el('tbody');
  const table = el('table', { id, class: 'grid', hidden: true },
    el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))), tbody);
  const none = el('p', { class: 'empty', hidden: true }, empty);
  const more = el('button', { id: `${id}-more`, type: 'button', class: 'more', hidden: true, onclick: () => load().catch((e) => fail(e, ctx)) }, 'More');
  let after = null;
  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (after) q.set('after', after);
    more.disabled = true;
    try {
      const page = await api(`${path}?${q}`, { signal: ctx.signal });
      tbody.append(...(page.data || []).map(row));
      after = page.last_id ?? page.data?.at(-1)?.id ?? null;
      more.hidden = !page.has_more || !after;
    } finally {
      more.disabled = false;
    }
    table.hidden = !tbody.childElementCount;
    none.hidden = !!tbody.childElementCount;
  }
  return { nodes: [table, none, more], load };
}

// A dataset's field summary in one line: "prompt: string · answer?: string|number"
// (? when some rows lack the field).
function fieldsText(ds) {
  const f = ds.fields && typeof ds.fields === 'object' ? Object.entries(ds.fields) : [];
  return f.map(([k, v]) => `${k}${v?.count != null && v.count < ds.rows ? '?' : ''}: ${Object.keys(v?.types || {}).join('|') || '?'}`).join(' · ');
}

const stagesText = (stages) => (stages || []).map((s) => `${s?.name ?? '?'} (${s?.kind ?? '?'})`).join(' → ');

export async function renderCatalog(ctx) {
  const datasets = pagedTable(ctx, {
    id: 'datasets', path: '/v1/datasets', empty: 'No datasets. Upload one with POST /v1/datasets (JSONL).',
    head: ['Name', 'Purpose', 'Rows', 'Size', 'Fields', 'Created'],
    row: (d) => {
      const href = '#/datasets/' + enc(d.id);
      const fields = fieldsText(d);
      return el('tr', { class: 'clickable', dataset: { datasetId: d.id }, onclick: (e) => { if (!e.target.closest('a')) location.hash = href; } },
        el('td', { class: 'name' }, el('a', { href }, d.name || d.id)),
        el('td', {}, el('span', { class: 'tag' }, d.purpose ?? '—')),
        el('td', { class: 'num' }, fmtNum(d.rows)),
        el('td', { class: 'num' }, fmtBytes(d.bytes)),
        el('td', { class: 'text', title: fields }, fields || '—'),
        el('td', {}, fmtTime(d.created_at)));
    },
  });
  const rewards = pagedTable(ctx, {
    id: 'rewards', path: '/v1/rewards', empty: 'No reward specs. Store one with POST /v1/rewards.',
    head: ['Name', 'ID', 'Components', 'Created'],
    row: (r) => el('tr', { dataset: { rewardId: r.id } },
      el('td', {}, r.name ?? '—', r.spec?.description ? el('div', { class: 'muted' }, clip(r.spec.description, 120)) : null),
      el('td', {}, el('code', {}, r.id)),
      el('td', {}, rewardText(r.spec)),
      el('td', {}, fmtTime(r.created_at))),
  });
  const pipelines = pagedTable(ctx, {
    id: 'pipelines', path: '/v1/pipelines', empty: 'No pipelines. Store one with POST /v1/pipelines.',
    head: ['Name', 'ID', 'Stages', 'Created', ''],
    row: (p) => el('tr', { dataset: { pipelineId: p.id } },
      el('td', {}, p.name ?? '—', p.builtin ? el('span', { class: 'tag' }, 'built-in') : null),
      el('td', {}, el('code', {}, p.id)),
      el('td', {}, stagesText(p.stages || p.spec?.stages)),
      el('td', {}, fmtTime(p.created_at)),
      el('td', { class: 'nowrap' }, el('a', { href: '#/new-run?pipeline=' + enc(p.id) }, 'Start a run'))),
  });
  mount(el('div', { class: 'page-head' }, el('h1', {}, 'Catalog')),
    el('h2', {}, 'Datasets'), datasets.nodes,
    el('h2', {}, 'Reward specs'), rewards.nodes,
    el('h2', {}, 'Pipelines'), pipelines.nodes);
  await Promise.all([datasets.load(), rewards.load(), pipelines.load()]);
  ready(ctx, 'catalog');
}

function fieldRow(name, f) {
  const types = Object.entries(f?.types || {}).map(([t, n]) => `${t} ${n}`).join(', ');
  const mean = f?.mean_length != null ? `${fmtNum(f.mean_length)} chars`
    : f?.mean_items != null ? `${fmtNum(f.mean_items)} items` : '—';
  return el('tr', { dataset: { field: name } },
    el('td', {}, el('code', {}, name)), el('td', { class: 'num' }, fmtNum(f?.count)), el('td', {}, types || '—'), el('td', {}, mean));
}

export async function renderDataset(ctx, _params, id) {
  const base = '/v1/datasets/' + enc(id);
  const [ds, first] = await Promise.all([
    api(base, { signal: ctx.signal }), api(`${base}/rows?offset=0&limit=${ROWS}`, { signal: ctx.signal })]);
  const rows = el('div', { id: 'rows' });
  const count = el('p', { id: 'rows-count', class: 'muted' });
  const more = el('button', { id: 'rows-more', type: 'button', class: 'more', hidden: true, onclick: () => next().catch((e) => fail(e, ctx)) }, 'More');
  const fields = Object.entries(ds.fields && typeof ds.fields === 'object' ? ds.fields : {});
  mount(
    el('div', { class: 'page-head' }, el('h1', { id: 'dataset-name' }, ds.name || ds.id), el('span', { class: 'tag' }, ds.purpose ?? '—'),
      el('span', { class: 'actions' }, el('a', { class: 'button', href: '#/catalog' }, 'Catalog'))),
    meta([
      ['ID', el('code', {}, ds.id)], ['Purpose', ds.purpose], ['Rows', fmtNum(ds.rows)],
      ['Size', `${fmtBytes(ds.bytes)} (${ds.bytes ?? '?'} bytes)`], ['SHA-256', ds.sha256 && el('code', {}, ds.sha256)],
      ['Created', fmtTime(ds.created_at)],
    ]),
    el('h2', {}, 'Fields'),
    fields.length
      ? el('table', { id: 'dataset-fields', class: 'grid compact' },
        el('thead', {}, el('tr', {}, ['Field', 'Rows', 'Types', 'Mean size'].map((h) => el('th', {}, h)))),
        el('tbody', {}, fields.map(([k, f]) => fieldRow(k, f))))
      : el('p', { class: 'empty' }, 'No fields.'),
    el('h2', {}, 'Rows'), count, rows, more);

  let total = ds.rows ?? 0;
  function add(page) {
    const off = page.offset ?? rows.childElementCount;
    (page.data || []).forEach((r, i) => rows.append(el('pre', { class: 'row', dataset: { row: String(off + i + 1) } }, JSON.stringify(r))));
    if (page.total != null) total = page.total;
    more.hidden = !page.has_more;
    const n = rows.childElementCount;
    count.textContent = n ? `Rows 1–${n} of ${total}` : 'No rows.';
  }
  async function next() {
    more.disabled = true;
    try {
      add(await api(`${base}/rows?offset=${rows.childElementCount}&limit=${ROWS}`, { signal: ctx.signal }));
    } finally {
      more.disabled = false;
    }
  }
  add(first);
  ready(ctx, 'dataset');
}
