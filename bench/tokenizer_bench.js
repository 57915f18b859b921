#!/usr/bin/env node
// bench/tokenizer_bench.js — encode throughput of Hugging Face's Rust
// tokenizers (Node binding @anush008/tokenizers, installed by
// tests/tokenizer/run.sh) on a corpus file, timing only the encode calls
// (each includes the binding's hop to its worker thread); one JSON line per
// mode, cut as tokenizer_bench.c cuts it: "docs" (documents of lines,
// >= 4 KiB each) and "whole" (one call). Best of --reps after one warm-up.
// usage: node tokenizer_bench.js --tokenizer FILE --corpus FILE [--reps N] [--name NAME]
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, '../tests/tokenizer/node_modules/@anush008/tokenizers'));

const a = process.argv.slice(2);
const opt = { reps: 3 };
for (let i = 0; i + 1 < a.length; i += 2) opt[a[i].replace(/^--/, '')] = a[i + 1];
(async () => {
  const text = fs.readFileSync(opt.corpus, 'utf8');
  const bytes = Buffer.byteLength(text);
  let t = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(opt.tokenizer);
  const load = Number(process.hrtime.bigint() - t) / 1e9;
  const buf = Buffer.from(text, 'utf8');
  const docs = [];
  for (let a = 0; a < buf.length;) {
    let b = a;
    while (b < buf.length && b - a < 4096) {
      const nl = buf.indexOf(10, b);
      b = nl < 0 ? buf.length : nl + 1;
    }
    docs.push(buf.toString('utf8', a, b));
    a = b;
  }
  for (const mode of ['docs', 'whole']) {
    const inputs = mode === 'docs' ? docs : [text];
    let best = Infinity, ntok = 0;
    for (let r = 0; r <= Number(opt.reps); r++) {
      let total = 0;
      ntok = 0;
      for (const s of inputs) {
        t = process.hrtime.bigint();
        const enc = await tok.encode(s, null, { addSpecialTokens: false });
        total += Number(process.hrtime.bigint() - t) / 1e9;
        ntok += enc.getLength();
      }
      if ((r > 0 || total > 5) && total < best) best = total;
      if (total > 5) break;   /* slow (one huge string): a single run is timed */
    }
    console.log(JSON.stringify({ bench: 'tokenizer_encode', impl: 'hf-rust', mode, tokenizer: opt.name || opt.tokenizer,
      bytes, tokens: ntok, seconds: +best.toFixed(4), mb_per_s: +(bytes / 1e6 / best).toFixed(2), load_seconds: +load.toFixed(3) }));
  }
})();
