// aha dashboard: metric line charts (SVG, no dependencies), shared by the
// run page (a line per stage) and the compare page (a line per run and stage).

import { el, sv, build, fmtNum, swatch } from './lib.js';

const CW = 360, CH = 170, PAD = { l: 46, r: 12, t: 10, b: 22 }; // chart geometry (viewBox units)

// Chart order: reward, reward*, loss, kl, then alphabetical.
const chartRank = (n) => (n === 'reward' ? 0 : n.startsWith('reward') ? 1 : n === 'loss' ? 2 : n === 'kl' ? 3 : 4);
export const chartCmp = (a, b) => chartRank(a) - chartRank(b) || (a < b ? -1 : a > b ? 1 : 0);

// A metric's group, as W&B sections them: the prefix before its first "/"
// ("rewards/format/mean": rewards), "" for the plain names (reward, loss,
// kl...), which come first; the others alphabetically.
const groupOf = (n) => (n.includes('/') ? n.slice(0, n.indexOf('/')) : '');
const groupCmp = (a, b) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0);

// The charts of a page in `container`, one figure.chart[data-metric] per
// metric name, in a section.chart-group[data-group] per group (groupOf),
// each in chartCmp order. get(name) makes a missing one.
export function chartGrid(container) {
  const charts = new Map();
  function layout() {
    const groups = new Map();
    for (const n of [...charts.keys()].sort(chartCmp)) {
      const g = groupOf(n);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(charts.get(n).fig);
    }
    container.replaceChildren(...[...groups.keys()].sort(groupCmp).map((g) =>
      el('section', { class: 'chart-group', dataset: { group: g } },
        groups.size > 1 ? el('h3', {}, g || 'training') : null, el('div', { class: 'charts' }, groups.get(g)))));
  }
  return {
    charts,
    get(name) {
      let c = charts.get(name);
      if (c) return c;
      c = newChart(name);
      charts.set(name, c);
      layout();
      return c;
    },
    clear() { charts.clear(); container.replaceChildren(); },
  };
}

function newChart(name) {
  const svg = sv('svg', { viewBox: `0 0 ${CW} ${CH}`, role: 'img', 'aria-label': name });
  const tip = el('div', { class: 'tip', hidden: true });
  const c = { name, cap: el('figcaption'), svg, tip, legend: el('div', { class: 'legend' }), pts: [], multi: false, dot: null };
  c.fig = el('figure', { class: 'chart', dataset: { metric: name } }, c.cap, el('div', { class: 'plot' }, svg, tip), c.legend);
  svg.addEventListener('mousemove', (e) => hover(c, e));
  svg.addEventListener('mouseleave', () => { tip.hidden = true; c.dot?.remove(); });
  return c;
}

// Draws `series` into chart c, replacing what it showed. A series is
// {data: {stage, run?} (its path's data-* attributes), label (the tooltip's),
// color, dash? (stroke-dasharray), steps (ascending), values (finite)}; its
// path.series carries data-points, the number of points. caption: nodes
// after the metric name; legend: [{label, color, value?}].
export function drawChart(c, series, { caption = [], legend = [] } = {}) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of series) {
    s.steps.forEach((x) => { x0 = Math.min(x0, x); x1 = Math.max(x1, x); });
    s.values.forEach((y) => { y0 = Math.min(y0, y); y1 = Math.max(y1, y); });
  }
  if (x0 > x1) { x0 = 0; x1 = 1; } // no points at all
  if (y0 > y1) { y0 = 0; y1 = 1; }
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const X = (x) => PAD.l + ((x - x0) / (x1 - x0)) * (CW - PAD.l - PAD.r);
  const Y = (y) => PAD.t + (1 - (y - y0) / (y1 - y0)) * (CH - PAD.t - PAD.b);
  const nodes = [sv('path', { class: 'axis', d: `M${PAD.l},${PAD.t}V${CH - PAD.b}H${CW - PAD.r}` })];
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    nodes.push(sv('line', { class: 'grid', x1: PAD.l, x2: CW - PAD.r, y1: Y(y), y2: Y(y) }),
      sv('text', { x: PAD.l - 4, y: Y(y) + 3, 'text-anchor': 'end' }, fmtNum(y)));
  }
  [x0, (x0 + x1) / 2, x1].forEach((x, i) => nodes.push(sv('text', {
    x: X(x), y: CH - 6, 'text-anchor': ['start', 'middle', 'end'][i],
  }, fmtNum(Number.isInteger(x0) && Number.isInteger(x1) ? Math.round(x) : x))));
  c.pts = [];
  for (const s of series) {
    const d = s.steps.map((x, i) => `${i ? 'L' : 'M'}${X(x).toFixed(1)},${Y(s.values[i]).toFixed(1)}`).join('');
    nodes.push(sv('path', {
      class: 'series', dataset: s.data, 'data-points': s.steps.length,
      stroke: s.color, 'stroke-dasharray': s.dash || null, fill: 'none', d,
    }));
    if (s.steps.length === 1) nodes.push(sv('circle', { cx: X(s.steps[0]), cy: Y(s.values[0]), r: 2.5, fill: s.color }));
    s.steps.forEach((x, i) => c.pts.push({ label: s.label, color: s.color, step: x, value: s.values[i], x: X(x), y: Y(s.values[i]) }));
  }
  c.multi = series.length > 1;
  c.dot = null;
  c.tip.hidden = true;
  c.svg.replaceChildren(...nodes);
  c.cap.replaceChildren();
  build(c.cap, {}, [el('span', { class: 'metric-name' }, c.name), ' ', caption]);
  c.legend.replaceChildren(...legend.map((l) => el('span', {}, swatch(l.color), l.label,
    l.value != null ? el('span', { class: 'metric-value' }, ' ', l.value) : null)));
}

function hover(c, e) {
  if (!c.pts.length) return;
  const r = c.svg.getBoundingClientRect();
  const vx = ((e.clientX - r.left) / r.width) * CW, vy = ((e.clientY - r.top) / r.height) * CH;
  let best = c.pts[0], bd = Infinity;
  for (const p of c.pts) {
    const d = Math.abs(p.x - vx) * 4 + Math.abs(p.y - vy); // mostly by step
    if (d < bd) { bd = d; best = p; }
  }
  c.dot?.remove();
  c.dot = sv('circle', { class: 'cursor', cx: best.x, cy: best.y, r: 3.5, stroke: best.color });
  c.svg.append(c.dot);
  c.tip.textContent = `${c.multi && best.label ? best.label + ' · ' : ''}step ${best.step}: ${fmtNum(best.value)}`;
  c.tip.hidden = false;
  c.tip.style.left = `${(best.x / CW) * 100}%`;
  c.tip.style.top = `${(best.y / CH) * 100}%`;
}
