// tests/web/dashboard.mjs — drives Debian's Chromium (puppeteer-core)
// through the dashboard of a running aha-server and checks each page
// against the API it shows. Called by test_dashboard.py with one JSON
// argument: {url, read, admin, done, done2, live, trace, xss, model, dataset,
// dataset_name, ds_xss, reward, pipeline} (keys, two finished runs' ids, a
// running run's id, a trace id, the text of that trace's user message, a
// served model, a dataset's id and name with markup, the markup in one of
// its rows, a stored reward spec and pipeline). Prints `ok NAME` or `FAIL
// NAME: why` per check; exits 1 when a check failed.
import puppeteer from 'puppeteer-core';

const cfg = JSON.parse(process.argv[2]);
const base = cfg.url + '/dashboard/';
let failed = 0;

// AHA_SCREENSHOTS=DIR keeps a picture of the page after each check.
let shot = 0;
async function check(name, fn) {
  const t = Date.now();
  try {
    await fn();
    if (process.env.AHA_SCREENSHOTS)
      await page.screenshot({ path: `${process.env.AHA_SCREENSHOTS}/${String(++shot).padStart(2, '0')}.png`, fullPage: true });
    console.log(`ok   ${name.padEnd(58)} ${((Date.now() - t) / 1000).toFixed(2)}s`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.message ? e.message : e}`);
  }
}

function eq(got, want, what) {
  const g = JSON.stringify(got), w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: expected ${w}, got ${g}`);
}

// The newest trace matching word, waiting up to 20 s (traces are stored
// after the answer, by the server's writer).
async function storedTrace(word) {
  for (let i = 0; i < 100; i++) {
    const d = (await api('/v1/traces?limit=5&q=' + encodeURIComponent(word))).data;
    if (d.length) return d[0];
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no trace matching ${word} stored`);
}

async function api(path, key = cfg.read) {
  const r = await fetch(cfg.url + path, { headers: { Authorization: 'Bearer ' + key } });
  if (r.status !== 200) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}
// Any method: {status, body (parsed JSON or null)}.
async function apiReq(method, path, body, key = cfg.admin) {
  const headers = { Authorization: 'Bearer ' + key };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(cfg.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}
// The last non-null value of metric `name` in the run's last stage logging it.
function lastValue(run, metrics, name) {
  const order = (run.stages || []).map((s) => s.name);
  const ms = metrics.filter((m) => m.name === name && m.values.some((v) => v !== null))
    .sort((a, b) => order.indexOf(a.stage) - order.indexOf(b.stage));
  return ms.length ? ms.at(-1).values.filter((v) => v !== null).at(-1) : null;
}

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const page = await browser.newPage();
const pageErrors = [], cspErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.on('console', (m) => {
  if (/Content.Security.Policy|Refused to/i.test(m.text())) cspErrors.push(m.text());
});
const runPosts = []; // the POST /v1/runs requests the page sent
page.on('request', (r) => {
  if (r.method() === 'POST' && new URL(r.url()).pathname === '/v1/runs') runPosts.push(r.postData());
});
page.setDefaultTimeout(30000);

// Navigates the app to hash route h (reloading when h is shown already: no
// hashchange then) and waits until page `name` has rendered its data (the
// app sets body[data-page] then).
async function go(h, name) {
  const same = await page.evaluate((hash) => {
    delete document.body.dataset.page;
    if (location.hash === hash) return true;
    location.hash = hash;
    return false;
  }, h);
  if (same) await page.reload();
  await waitPage(name);
}
async function waitPage(name, timeout = 30000) {
  await page.waitForFunction((n) => document.body.dataset.page === n, { timeout }, name);
}
const texts = (sel) => page.$$eval(sel, (es) => es.map((e) => e.textContent.trim()));
const attrs = (sel, a) => page.$$eval(sel, (es, a) => es.map((e) => e.getAttribute(a)), a);
// Waits until #error shows and contains each of `parts`; the message when not.
async function errorShows(parts, timeout = 10000) {
  try {
    await page.waitForFunction((ps) => {
      const e = document.querySelector('#error');
      return !e.hidden && ps.every((p) => e.textContent.includes(p));
    }, { timeout }, parts);
  } catch {
    throw new Error(`#error does not show ${JSON.stringify(parts)}: ${JSON.stringify(await page.$eval('#error', (e) => (e.hidden ? '(hidden) ' : '') + e.textContent))}`);
  }
}
// Fills the new-run form (text fields set as typed).
async function fillNewRun({ pipeline = cfg.pipeline, base = cfg.model, name = '', tags = '', overrides = '' }) {
  await page.select('#new-pipeline', pipeline);
  await page.select('#new-base', base);
  for (const [sel, v] of [['#new-name', name], ['#new-tags', tags], ['#new-overrides', overrides]]) {
    await page.$eval(sel, (e, v) => { e.value = v; e.dispatchEvent(new Event('input', { bubbles: true })); }, v);
  }
}
async function signIn(key) {
  await page.waitForSelector('#key-input', { visible: true });
  await page.$eval('#key-input', (e) => { e.value = ''; });
  await page.type('#key-input', key);
  await page.evaluate(() => { delete document.body.dataset.page; });
  await page.$eval('#key-form', (f) => f.requestSubmit());
}

try {
  await check('first visit asks for a key', async () => {
    await page.goto(base);
    await waitPage('key');
  });

  await check('a wrong key is refused', async () => {
    await signIn('sk-wrong');
    await waitPage('key');
    eq(await page.$eval('#key-input', (e) => e.offsetParent !== null), true, 'key form visible');
  });

  await check('runs list equals GET /v1/runs', async () => {
    await signIn(cfg.read);
    await waitPage('runs');
    const want = (await api('/v1/runs?limit=50')).data;
    eq(await attrs('#runs tr[data-run-id]', 'data-run-id'), want.map((r) => r.id), 'ids');
    eq(await texts('#runs tr[data-run-id] .status'), want.map((r) => r.status), 'statuses');
    // the pipeline column names the pipeline, not its id
    eq(await page.$$eval('#runs tr[data-run-id]', (trs) => trs.map((tr) => tr.cells[3].textContent.trim())),
      want.map((r) => r.pipeline), 'pipeline names');
  });

  await check('status filter', async () => {
    await page.select('#runs-status', 'succeeded');
    await page.waitForFunction(() => [...document.querySelectorAll('#runs tr[data-run-id]')]
      .every((tr) => tr.querySelector('.status').textContent.trim() === 'succeeded'));
    const want = (await api('/v1/runs?limit=50&status=succeeded')).data.map((r) => r.id);
    await page.waitForFunction((n) => document.querySelectorAll('#runs tr[data-run-id]').length === n, {}, want.length);
    eq(await attrs('#runs tr[data-run-id]', 'data-run-id'), want, 'succeeded ids');
    await page.select('#runs-status', 'failed');
    await page.waitForFunction(() => document.querySelectorAll('#runs tr[data-run-id]').length === 0);
    await page.select('#runs-status', '');
  });

  await check('compare: two picked runs; a chart per metric, a line per run and stage', async () => {
    await go('#/runs', 'runs');
    const disabled = () => page.$eval('#runs-compare', (e) => e.disabled);
    eq(await disabled(), true, 'Compare with no run picked');
    await page.click(`#runs tr[data-run-id="${cfg.done}"] input.pick[type=checkbox]`);
    eq(await disabled(), true, 'Compare with one run picked');
    await page.click(`#runs tr[data-run-id="${cfg.done2}"] input.pick[type=checkbox]`);
    eq(await disabled(), false, 'Compare with two runs picked');
    await page.evaluate(() => { delete document.body.dataset.page; });
    await page.click('#runs-compare');
    await waitPage('compare');
    const hash = await page.evaluate(() => location.hash);
    if (!hash.startsWith('#/compare?')) throw new Error(`address ${hash}`);
    eq(new URLSearchParams(hash.slice(hash.indexOf('?') + 1)).get('runs').split(','), [cfg.done, cfg.done2], 'runs in the address');
    const ids = [cfg.done, cfg.done2];
    const runs = await Promise.all(ids.map((id) => api('/v1/runs/' + id)));
    const metrics = await Promise.all(ids.map(async (id) => (await api(`/v1/runs/${id}/metrics`)).data));
    const names = new Set();
    for (const [i, id] of ids.entries()) {
      if (!metrics[i].length) throw new Error(`run ${id} has no metrics`);
      for (const m of metrics[i]) {
        names.add(m.name);
        const sel = `figure.chart[data-metric="${m.name}"] path.series[data-run="${id}"][data-stage="${m.stage}"]`;
        eq(await attrs(sel, 'data-points'), [String(m.values.filter((v) => v !== null).length)], `points of ${runs[i].name} ${m.stage}/${m.name}`);
      }
    }
    const once = [...names].filter((n) => metrics.some((ms) => !ms.some((m) => m.name === n)));
    if (!once.length) throw new Error('both runs log the same metrics: no metric of one run only is checked');
    const order = await attrs('#compare-charts figure.chart', 'data-metric');
    eq([...order].sort(), [...names].sort(), 'one chart per metric');
    eq(order[0], 'reward', 'reward first');
    eq(await page.$$eval('#compare-charts path.series', (es) => es.length), metrics.flat().length, 'one line per run, stage and metric');
    const strokes = await page.$$eval('figure.chart[data-metric="reward"] path.series', (es) => es.map((e) => [e.dataset.run, e.getAttribute('stroke')]));
    const colour = new Map(strokes);
    if (colour.size !== 2 || new Set(colour.values()).size !== 2) throw new Error(`not a colour per run: ${JSON.stringify(strokes)}`);
    const legend = await texts('figure.chart[data-metric="reward"] .legend > span');
    for (const r of runs) if (!legend.some((t) => t === r.name || t.startsWith(r.name + ' '))) throw new Error(`the legend ${JSON.stringify(legend)} lacks ${r.name}`);
    eq(await attrs('#compare-runs tr[data-run-id]', 'data-run-id'), ids, 'table rows');
    eq(await texts('#compare-runs tr[data-run-id] td:first-child a'), runs.map((r) => r.name), 'names');
    eq(await texts('#compare-runs tr[data-run-id] .status'), runs.map((r) => r.status), 'statuses');
    const shown = (await texts('#compare-runs tr[data-run-id] td.reward')).map(Number);
    runs.forEach((r, i) => {
      const want = lastValue(r, metrics[i], 'reward');
      if (!(Math.abs(shown[i] - want) <= 1e-3 * Math.max(1, Math.abs(want)))) throw new Error(`reward of ${r.name}: ${shown[i]}, API ${want}`);
    });
  });

  await check('new run with a read key: pipelines offered, stages previewed, the 403 shown', async () => {
    await go('#/runs', 'runs');
    await page.evaluate(() => { delete document.body.dataset.page; });
    await page.click('a#runs-new');
    await waitPage('new-run');
    const pipelines = (await api('/v1/pipelines?limit=100')).data;
    eq(await attrs('#new-pipeline option', 'value'), pipelines.map((p) => p.id), 'pipelines offered');
    eq(await texts('#new-pipeline option'), pipelines.map((p) => p.name + (p.builtin ? ' (built-in)' : '')), 'pipeline names');
    const models = (await api('/v1/models')).data.map((m) => m.id);
    eq(await attrs('#new-base option', 'value'), ['', ...models], 'base models offered');
    for (const p of [pipelines.find((x) => x.id !== cfg.pipeline), pipelines.find((x) => x.id === cfg.pipeline)]) {
      await page.select('#new-pipeline', p.id);
      eq(await attrs('#new-preview tr[data-stage]', 'data-stage'), p.spec.stages.map((st) => st.name), `${p.name}: stages previewed`);
      const cells = await page.$$eval('#new-preview tr[data-stage]', (trs) => trs.map((tr) => [...tr.cells].slice(0, 4).map((c) => c.textContent)));
      eq(cells, p.spec.stages.map((st) => [st.name, st.kind, st.model ?? '—', st.dataset ?? '—']), `${p.name}: stage name, kind, model, dataset`);
    }
    await fillNewRun({ name: 'dash-denied' });
    const n = runPosts.length;
    await page.click('#new-submit');
    await errorShows(['scope']);
    eq(runPosts.length, n + 1, 'POSTs sent');
    eq((await apiReq('GET', '/v1/runs/dash-denied')).status, 404, 'a run made with a read key');
  });

  await check('finished run: header, stages, charts, samples, checkpoints', async () => {
    await go('#/runs/' + cfg.done, 'run');
    const run = await api('/v1/runs/' + cfg.done);
    eq(await page.$eval('#run-name', (e) => e.textContent.trim()), run.name, 'name');
    eq(await page.$eval('#run-status', (e) => e.textContent.trim()), 'succeeded', 'status');
    eq(await attrs('#stages tr[data-stage]', 'data-stage'), run.stages.map((s) => s.name), 'stages');
    const metrics = (await api(`/v1/runs/${cfg.done}/metrics`)).data;
    if (!metrics.length) throw new Error('the run has no metrics');
    for (const m of metrics) {
      const n = m.values.filter((v) => v !== null).length;
      const sel = `figure.chart[data-metric="${m.name}"] path.series[data-stage="${m.stage}"]`;
      const got = await page.$eval(sel, (e) => e.getAttribute('data-points')).catch(() => null);
      eq(got, String(n), `points of ${m.stage}/${m.name}`);
    }
    const names = [...new Set(metrics.map((m) => m.name))];
    eq((await attrs('figure.chart', 'data-metric')).sort(), names.sort(), 'one chart per metric');
    for (const n of names) { // the caption: the name and the last value
      const [name, value] = await page.$eval(`figure.chart[data-metric="${n}"] figcaption`,
        (c) => [c.querySelector('.metric-name')?.textContent, c.querySelector('.metric-value')?.textContent]);
      const want = lastValue(run, metrics, n);
      if (name !== n || !(Math.abs(Number(value) - want) <= 1e-3 * Math.max(1, Math.abs(want))))
        throw new Error(`caption of ${n}: ${JSON.stringify([name, value])}, API ${want}`);
    }
    const order = await attrs('figure.chart', 'data-metric');
    if (names.includes('reward')) eq(order[0], 'reward', 'reward first');
    // sectioned by the prefix before "/" (W&B's groups), the plain names first
    const groups = await page.$$eval('#charts section.chart-group', (ss) => ss.map((sec) =>
      [sec.dataset.group, [...sec.querySelectorAll('figure.chart')].map((f) => f.dataset.metric)]));
    const prefix = (n) => (n.includes('/') ? n.slice(0, n.indexOf('/')) : '');
    eq(groups[0][0], '', 'plain names first');
    for (const [g, ms] of groups)
      if (!ms.length || ms.some((m) => prefix(m) !== g)) throw new Error(`group ${g}: ${ms}`);
    eq(groups.map(([g]) => g).slice(1), groups.map(([g]) => g).slice(1).sort(), 'groups in order');
    eq(new Set(groups.map(([g]) => g)).size, groups.length, 'one section per group');
    const samples = (await api(`/v1/runs/${cfg.done}/samples?limit=1000`)).data;
    if (!samples.length) throw new Error('the run logged no samples');
    const shown = await texts('#samples article.sample pre.completion');
    if (!shown.length) throw new Error('no sample shown');
    const all = new Set(samples.map((s) => String(s.completion).trim()));
    for (const s of shown) if (!all.has(s)) throw new Error(`sample ${JSON.stringify(s)} is not the run's`);
    eq(shown[0], String(samples[samples.length - 1].completion).trim(), 'newest sample first');
    const ckpts = (await api(`/v1/runs/${cfg.done}/checkpoints`)).data;
    eq((await texts('#checkpoints li')).length, ckpts.length, 'checkpoints');
    const cancel = await page.$eval('#run-cancel', (e) => e.offsetParent !== null).catch(() => false);
    eq(cancel, false, 'a cancel button on a finished run');
  });

  await check('running run: metrics arrive live over SSE', async () => {
    await go('#/runs/' + cfg.live, 'run');
    await page.waitForSelector('figure.chart[data-metric="reward"] path.series', { timeout: 60000 });
    const n0 = Number(await page.$eval('figure.chart[data-metric="reward"] path.series',
      (e) => e.getAttribute('data-points')));
    await page.waitForFunction((n) => Number(document.querySelector(
      'figure.chart[data-metric="reward"] path.series').getAttribute('data-points')) > n,
    { timeout: 90000 }, n0);
    eq(await page.$eval('#live', (e) => e.textContent.trim()), 'live', '#live');
    eq(await page.$eval('#run-status', (e) => e.textContent.trim()), 'running', 'status');
  });

  await check('a read key cannot cancel: the 403 message is shown', async () => {
    await page.click('#run-cancel');
    await page.waitForFunction(() => /scope/.test(document.querySelector('#error').textContent));
    eq((await api('/v1/runs/' + cfg.live)).status, 'running', 'still running');
  });

  await check('sign out; an admin signs in', async () => {
    await page.click('#sign-out');
    await waitPage('key');
    await signIn(cfg.admin);
    await waitPage('run');
  });

  await check('new run: overrides that are not JSON are refused here, nothing sent', async () => {
    await go('#/new-run', 'new-run');
    await fillNewRun({ name: 'dash-new', overrides: '{"rl": {params: 1}}' });
    const n = runPosts.length;
    await page.click('#new-submit');
    await errorShows(['Overrides are not valid JSON']);
    eq(await page.$eval('#new-overrides', (e) => e.getAttribute('aria-invalid')), 'true', 'the field marked');
    await new Promise((r) => setTimeout(r, 300));
    eq(runPosts.length, n, 'POSTs sent');
    eq(await page.evaluate(() => document.body.dataset.page), 'new-run', 'still on the form');
  });

  await check('new run: refused by the server, its param and message are shown', async () => {
    await page.evaluate(() => { document.querySelector('#error').hidden = true; });
    const form = { pipeline: cfg.pipeline, base_model: cfg.model, name: 'dash-new', overrides: { nosuch: { params: { steps: 2 } } } };
    const want = await apiReq('POST', '/v1/runs', form);
    eq([want.status, want.body?.error?.param], [422, 'overrides'], 'the API refuses an unknown stage');
    await fillNewRun({ name: form.name, overrides: JSON.stringify(form.overrides) });
    await page.click('#new-submit');
    await errorShows([want.body.error.message]);
    eq(JSON.parse(runPosts.at(-1)), form, 'the body sent');
    // a message that does not name its field gets "param: " before it
    const taken = await apiReq('POST', '/v1/runs', { ...form, name: 'done', overrides: undefined });
    eq([taken.status, taken.body?.error?.param], [409, 'name'], 'the API refuses a taken name');
    await fillNewRun({ name: 'done' });
    await page.click('#new-submit');
    await errorShows([`name: ${taken.body.error.message}`]);
  });

  await check('new run: a good form starts the run and opens its page', async () => {
    const overrides = { rl: { params: { steps: 2 } } };
    await fillNewRun({ name: 'dash-new', tags: ' web, compare-check ,', overrides: JSON.stringify(overrides, null, 2) });
    await page.evaluate(() => { delete document.body.dataset.page; });
    await page.click('#new-submit');
    await waitPage('run');
    const hash = await page.evaluate(() => location.hash);
    const id = decodeURIComponent(hash.slice('#/runs/'.length));
    eq(await page.$eval('#run-name', (e) => e.textContent.trim()), 'dash-new', '#run-name');
    const run = await api('/v1/runs/' + id);
    eq([run.name, run.pipeline_id, run.base_model, run.tags, run.overrides], ['dash-new', cfg.pipeline, cfg.model, ['web', 'compare-check'], overrides], 'the run');
    // queued behind the live run (--max-runs 1): cancelled at once
    const c = await apiReq('POST', `/v1/runs/${id}/cancel`);
    if (![200, 202, 409].includes(c.status)) throw new Error(`cancel: HTTP ${c.status}`);
    for (let i = 0; !['succeeded', 'failed', 'cancelled'].includes((await api('/v1/runs/' + id)).status); i++) {
      if (i === 600) throw new Error('the run did not stop within 60 s of its cancel');
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  await check('an admin cancels; the status arrives live', async () => {
    await go('#/runs/' + cfg.live, 'run');
    await page.click('#run-cancel');
    await page.waitForFunction(() => document.querySelector('#run-status').textContent.trim() === 'cancelled',
      { timeout: 120000 });
    await page.waitForFunction(() => document.querySelector('#live').textContent.trim() === 'ended',
      { timeout: 30000 });
    eq((await api('/v1/runs/' + cfg.live)).status, 'cancelled', 'API status');
  });

  await check('traces list equals GET /v1/traces', async () => {
    await go('#/traces', 'traces');
    const want = (await api('/v1/traces?limit=25')).data.map((t) => t.id);
    eq(await attrs('#traces tr[data-trace-id]', 'data-trace-id'), want, 'ids');
  });

  await check('trace search, kept in the address across a reload', async () => {
    await page.$eval('#trace-q', (e) => { e.value = ''; });
    await page.type('#trace-q', 'zebraquartz');
    await page.evaluate(() => { delete document.body.dataset.page; });
    await page.$eval('#trace-search', (f) => f.requestSubmit());
    await waitPage('traces');
    const want = (await api('/v1/traces?limit=25&q=zebraquartz')).data.map((t) => t.id);
    eq(want, [cfg.trace], 'API search');
    await page.waitForFunction(() => document.querySelectorAll('#traces tr[data-trace-id]').length === 1);
    eq(await attrs('#traces tr[data-trace-id]', 'data-trace-id'), want, 'ids');
    if (!(await page.evaluate(() => location.hash)).includes('q=zebraquartz')) throw new Error('q not in the hash');
    await page.reload();
    await waitPage('traces');
    eq(await attrs('#traces tr[data-trace-id]', 'data-trace-id'), want, 'ids after reload');
  });

  await check('a trace shows markup as text and runs none of it', async () => {
    await go('#/traces/' + cfg.trace, 'trace');
    const t = await api('/v1/traces/' + cfg.trace);
    const user = await page.$eval('#trace-messages .message[data-role="user"] pre', (e) => e.textContent);
    eq(user, cfg.xss, 'user message');
    eq(await page.$$eval('#view img, #view script', (es) => es.length), 0, 'elements made from the text');
    eq(await page.evaluate(() => window.__pwned), undefined, 'script ran');
    eq(await page.$eval('#trace-content', (e) => e.textContent), t.content ?? '', 'content');
    if (t.reasoning_content !== null)
      eq(await page.$eval('#trace-reasoning', (e) => e.textContent), t.reasoning_content, 'reasoning');
  });

  await check('models list equals GET /v1/models', async () => {
    await go('#/models', 'models');
    const want = (await api('/v1/models')).data.map((m) => m.id);
    eq((await attrs('#models tr[data-model-id]', 'data-model-id')).sort(), want.sort(), 'ids');
  });

  await check('chat streams an answer; its trace holds what was shown', async () => {
    await go('#/chat?model=' + encodeURIComponent(cfg.model), 'chat');
    eq(await page.$eval('#chat-model', (e) => e.value), cfg.model, 'model preselected');
    const ask = 'What is 3 + 4? kiwiplanet';
    await page.type('#chat-input', ask);
    await page.click('#chat-send');
    await page.waitForSelector('#chat-done', { visible: true, timeout: 120000 });
    const content = await page.$eval('#chat-content', (e) => e.textContent);
    const reasoning = await page.$eval('#chat-reasoning', (e) => e.textContent).catch(() => '');
    const t = await storedTrace('kiwiplanet');
    eq(content, t.content ?? '', 'content shown');
    eq(reasoning, t.reasoning_content ?? '', 'reasoning shown');
    eq(t.messages.at(-1).content, ask, 'message sent');
  });

  await check('chat with thinking off: no reasoning, the switch in the stored request', async () => {
    await page.click('#chat-clear');
    await page.click('#chat-thinking');
    const ask = 'What is 5 + 1? zebrafalcon';
    await page.type('#chat-input', ask);
    await page.evaluate(() => { document.querySelector('#chat-done').hidden = true; });
    await page.click('#chat-send');
    await page.waitForSelector('#chat-done', { visible: true, timeout: 120000 });
    const content = await page.$eval('#chat-content', (e) => e.textContent);
    const t = await storedTrace('zebrafalcon');
    eq(t.params.chat_template_kwargs, { enable_thinking: false }, 'params');
    eq(t.reasoning_content ?? '', '', 'no reasoning');
    eq(content, t.content ?? '', 'content shown');
    eq(await page.$eval('#chat-reasoning', (e) => e.textContent), '', 'reasoning shown');
  });

  await check('catalog lists the API\'s datasets, reward specs and pipelines', async () => {
    await page.evaluate(() => { delete document.body.dataset.page; });
    await page.click('nav.main a[href="#/catalog"]');
    await waitPage('catalog');
    for (const [table, path, a] of [['datasets', '/v1/datasets', 'data-dataset-id'],
      ['rewards', '/v1/rewards', 'data-reward-id'], ['pipelines', '/v1/pipelines', 'data-pipeline-id']]) {
      const want = (await api(path + '?limit=50')).data.map((x) => x.id);
      if (!want.length) throw new Error(`${path} is empty`);
      eq(await attrs(`#${table} tr[${a}]`, a), want, table);
    }
    const ds = await api('/v1/datasets/' + cfg.dataset);
    const dsRow = await page.$eval(`#datasets tr[data-dataset-id="${cfg.dataset}"]`, (tr) => [...tr.cells].map((c) => c.textContent));
    eq([dsRow[0], dsRow[1], dsRow[2]], [ds.name, ds.purpose, String(ds.rows)], 'dataset name, purpose, rows');
    for (const f of Object.keys(ds.fields)) if (!dsRow[4].includes(f)) throw new Error(`fields ${JSON.stringify(dsRow[4])} lack ${f}`);
    const rw = await api('/v1/rewards/' + cfg.reward);
    const rwText = await page.$eval(`#rewards tr[data-reward-id="${cfg.reward}"]`, (tr) => tr.textContent);
    for (const c of rw.spec.components) if (!rwText.includes(c.name ?? c.type) || !rwText.includes(c.type)) throw new Error(`${JSON.stringify(rwText)} lacks ${c.type}`);
    const pl = await api('/v1/pipelines/' + cfg.pipeline);
    const plText = await page.$eval(`#pipelines tr[data-pipeline-id="${cfg.pipeline}"]`, (tr) => tr.textContent);
    for (const st of pl.stages) if (!plText.includes(`${st.name} (${st.kind})`)) throw new Error(`${JSON.stringify(plText)} lacks stage ${st.name}`);
    eq(await page.$eval('nav.main a.active', (e) => e.getAttribute('href')), '#/catalog', 'active nav link');
  });

  await check('dataset page: the API\'s rows as JSON text, More pages on', async () => {
    await page.evaluate(() => { delete document.body.dataset.page; });
    await page.click(`#datasets tr[data-dataset-id="${cfg.dataset}"] a`);
    await waitPage('dataset');
    eq(await page.evaluate(() => location.hash), '#/datasets/' + cfg.dataset, 'address');
    eq(await page.$eval('#dataset-name', (e) => e.textContent), cfg.dataset_name, 'name');
    const shown = () => page.$$eval('#rows pre.row', (es) => es.map((e) => JSON.parse(e.textContent)));
    const first = await api(`/v1/datasets/${cfg.dataset}/rows?limit=20`);
    eq(await shown(), first.data, 'the first rows');
    if (!first.has_more) throw new Error('the dataset fits one page: More is not exercised');
    eq(await page.$eval('#rows-more', (e) => !e.hidden), true, 'More shown');
    await page.click('#rows-more');
    await page.waitForFunction((n) => document.querySelectorAll('#rows pre.row').length >= n, { timeout: 10000 }, first.total);
    const rest = await api(`/v1/datasets/${cfg.dataset}/rows?offset=20&limit=20`);
    eq(await shown(), [...first.data, ...rest.data], 'all rows');
    eq(await page.$eval('#rows-more', (e) => e.hidden), !rest.has_more, 'More hidden at the end');
  });

  await check('dataset markup (a value, a field name, the name) stays text', async () => {
    const row = await page.$eval('#rows pre.row', (e) => JSON.parse(e.textContent));
    eq([row.prompt.startsWith(cfg.ds_xss), row['<i>note</i>']], [true, cfg.ds_xss], 'the row with markup');
    eq(await attrs('#dataset-fields tr[data-field]', 'data-field'), Object.keys((await api('/v1/datasets/' + cfg.dataset)).fields), 'fields');
    eq(await page.$$eval('#view img, #view script, #view b, #view i', (es) => es.length), 0, 'elements made from the dataset');
    await go('#/catalog', 'catalog');
    eq(await page.$$eval('#view img, #view script, #view b, #view i', (es) => es.length), 0, 'elements made in the catalog');
    eq(await page.evaluate(() => window.__pwned), undefined, 'script ran');
  });

  await check('no uncaught errors, no CSP violations', async () => {
    eq(pageErrors, [], 'page errors');
    eq(cspErrors, [], 'CSP reports');
  });
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
