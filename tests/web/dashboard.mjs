// tests/web/dashboard.mjs — drives Debian's Chromium (puppeteer-core)
// through the dashboard of a running aha-server and checks each page
// against the API it shows. Called by test_dashboard.py with one JSON
// argument: {url, read, admin, done, live, trace, xss, model} (keys, a
// finished run's id, a running run's id, a trace id, the text of that
// trace's user message, a served model). Prints `ok NAME` or `FAIL NAME:
// why` per check; exits 1 when a check failed.
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

async function api(path, key = cfg.read) {
  const r = await fetch(cfg.url + path, { headers: { Authorization: 'Bearer ' + key } });
  if (r.status !== 200) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
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
page.setDefaultTimeout(30000);

// Navigates the app to hash route h and waits until page `name` has
// rendered its data (the app sets body[data-page] then).
async function go(h, name) {
  await page.evaluate((hash) => { delete document.body.dataset.page; location.hash = hash; }, h);
  await waitPage(name);
}
async function waitPage(name, timeout = 30000) {
  await page.waitForFunction((n) => document.body.dataset.page === n, { timeout }, name);
}
const texts = (sel) => page.$$eval(sel, (es) => es.map((e) => e.textContent.trim()));
const attrs = (sel, a) => page.$$eval(sel, (es, a) => es.map((e) => e.getAttribute(a)), a);
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
    const order = await attrs('figure.chart', 'data-metric');
    if (names.includes('reward')) eq(order[0], 'reward', 'reward first');
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

  await check('sign out; an admin cancels; the status arrives live', async () => {
    await page.click('#sign-out');
    await waitPage('key');
    await signIn(cfg.admin);
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
    const t = await (async () => {
      for (let i = 0; i < 100; i++) {
        const d = (await api('/v1/traces?limit=5&q=kiwiplanet')).data;
        if (d.length) return d[0];
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error('no trace stored');
    })();
    eq(content, t.content ?? '', 'content shown');
    eq(reasoning, t.reasoning_content ?? '', 'reasoning shown');
    eq(t.messages.at(-1).content, ask, 'message sent');
  });

  await check('no uncaught errors, no CSP violations', async () => {
    eq(pageErrors, [], 'page errors');
    eq(cspErrors, [], 'CSP reports');
  });
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
