// aha dashboard: #/new-run — start a training run (POST /v1/runs, scope
// admin) from a stored pipeline, with a base model, a name, tags and
// per-stage parameter overrides.

import { el, enc, mount, showError, api, apiAll, ready, fail, rewardText } from './lib.js';

const NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;
const MAX_TAGS = 32;

function preview(p) {
  if (!p) return [];
  const stages = p.spec?.stages || p.stages || [];
  const usesBase = stages.some((s) => s?.model === '$base' || s?.teacher === '$base');
  return [
    p.spec?.description && el('p', { class: 'muted' }, p.spec.description),
    el('table', { class: 'grid compact' },
      el('thead', {}, el('tr', {}, ['Stage', 'Kind', 'Model', 'Dataset', 'Reward'].map((h) => el('th', {}, h)))),
      el('tbody', {}, stages.map((s) => el('tr', { dataset: { stage: s?.name ?? '' } },
        el('td', {}, s?.name ?? '—'), el('td', {}, s?.kind ?? '—'), el('td', {}, s?.teacher ? `${s?.model ?? '—'} (teacher ${s.teacher})` : s?.model ?? '—'),
        el('td', {}, s?.dataset ?? '—'), el('td', {}, rewardText(s?.reward)))))),
    el('p', { class: 'muted' }, usesBase
      ? (p.spec?.base_model ? `$base is the pipeline's ${p.spec.base_model} unless a base model is chosen.`
        : 'A stage trains $base: choose a base model.')
      : 'No stage trains $base: the base model is not needed.'),
    el('details', {}, el('summary', {}, 'Pipeline definition'), el('pre', { class: 'json' }, JSON.stringify(p.spec ?? null, null, 2))),
  ];
}

export async function renderNewRun(ctx, params) {
  const [pipelines, models] = await Promise.all([
    apiAll('/v1/pipelines', ctx.signal), api('/v1/models', { signal: ctx.signal }).then((m) => m?.data || []),
  ]);
  const pipeSel = el('select', { id: 'new-pipeline', name: 'pipeline', required: true },
    pipelines.map((p) => el('option', { value: p.id }, p.builtin ? `${p.name} (built-in)` : p.name)));
  const want = params.get('pipeline');
  const wanted = pipelines.find((p) => p.id === want || p.name === want);
  if (wanted) pipeSel.value = wanted.id;
  const baseSel = el('select', { id: 'new-base', name: 'base_model' },
    el('option', { value: '' }, '(none: the pipeline names its models)'), models.map((m) => el('option', { value: m.id }, m.id)));
  if (params.get('base') && models.some((m) => m.id === params.get('base'))) baseSel.value = params.get('base');
  const nameIn = el('input', {
    id: 'new-name', name: 'name', autocomplete: 'off', maxlength: 64, placeholder: 'optional, e.g. r1-tiny-lr3',
    pattern: '[A-Za-z0-9_\\-][A-Za-z0-9._\\-]{0,63}',
  });
  const tagsIn = el('input', { id: 'new-tags', name: 'tags', autocomplete: 'off', placeholder: 'optional, comma-separated' });
  const overIn = el('textarea', {
    id: 'new-overrides', name: 'overrides', rows: 5, spellcheck: 'false',
    placeholder: '{"rl": {"params": {"learning_rate": 1e-6, "steps": 100}}}',
  });
  const prev = el('div', { id: 'new-preview' });
  const submitB = el('button', { id: 'new-submit', type: 'submit', class: 'primary', disabled: !pipelines.length }, 'Start run');
  const field = (label, input, hint) => el('div', { class: 'field' },
    el('label', { for: input.id }, label), input, hint && el('p', { class: 'hint muted' }, hint));
  const form = el('form', { id: 'new-run', class: 'card form', novalidate: true, onsubmit: (e) => { e.preventDefault(); submit(); } },
    field('Pipeline', pipeSel), prev,
    field('Base model', baseSel, 'What $base means in the pipeline.'),
    field('Name', nameIn, 'Letters, digits, "_", "-" and "." (not first), at most 64; stage models are served as <name>/<stage>. Default: <pipeline>-<hex>.'),
    field('Tags', tagsIn),
    field('Overrides', overIn, 'Optional JSON: {"<stage>": {"params": {...}}}, merged into the stages\' params.'),
    el('div', { class: 'toolbar' }, submitB, el('a', { class: 'button', href: '#/runs' }, 'Cancel')));
  mount(el('div', { class: 'page-head' }, el('h1', {}, 'New run')),
    pipelines.length ? null : el('p', { class: 'empty' }, 'No pipelines yet. Store one with POST /v1/pipelines.'),
    form);
  const drawPreview = () => prev.replaceChildren(...preview(pipelines.find((p) => p.id === pipeSel.value)).filter(Boolean));
  pipeSel.addEventListener('change', drawPreview);
  const fields = { pipeline: pipeSel, base_model: baseSel, name: nameIn, tags: tagsIn, overrides: overIn };
  for (const i of Object.values(fields)) {
    i.addEventListener(i.tagName === 'SELECT' ? 'change' : 'input', () => i.removeAttribute('aria-invalid'));
  }
  drawPreview();

  // A field the form refuses: the message goes to the banner, nothing is sent.
  function invalid(input, msg) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    showError(msg);
  }
  async function submit() {
    showError('');
    if (!pipeSel.value) return invalid(pipeSel, 'Choose a pipeline.');
    const body = { pipeline: pipeSel.value };
    if (baseSel.value) body.base_model = baseSel.value;
    const name = nameIn.value.trim();
    if (name) {
      if (!NAME_RE.test(name))
        return invalid(nameIn, 'Name: 1 to 64 letters, digits, "_", "-" or "." (not first), e.g. r1-tiny.2');
      body.name = name;
    }
    const tags = tagsIn.value.split(',').map((t) => t.trim()).filter(Boolean);
    if (tags.length > MAX_TAGS) return invalid(tagsIn, `Tags: at most ${MAX_TAGS}.`);
    if (tags.length) body.tags = [...new Set(tags)];
    const ov = overIn.value.trim();
    if (ov) {
      let o;
      try { o = JSON.parse(ov); } catch (e) { return invalid(overIn, `Overrides are not valid JSON: ${e.message}`); }
      if (!o || typeof o !== 'object' || Array.isArray(o))
        return invalid(overIn, 'Overrides must be a JSON object: {"<stage>": {"params": {...}}}.');
      body.overrides = o;
    }
    submitB.disabled = true;
    try {
      const run = await api('/v1/runs', { method: 'POST', body, signal: ctx.signal });
      location.hash = '#/runs/' + enc(run.id);
    } catch (e) {
      const at = e.param?.split(/[.[]/)[0]; // the field the API named
      if (at && Object.hasOwn(fields, at)) fields[at].setAttribute('aria-invalid', 'true');
      fail(e, ctx);
    } finally {
      submitB.disabled = false;
    }
  }
  ready(ctx, 'new-run');
}
