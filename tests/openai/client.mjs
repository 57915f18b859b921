// The official OpenAI Node SDK, unmodified, against aha-server: models,
// chat (plain and streamed, with reasoning_content), legacy completions
// with echo + logprobs, the SDK's typed errors for 401, 404 and 400, and
// function calling (a forced call, plain and through the SDK's stream
// helper, which assembles tool_calls from the deltas) on TOOLS_MODEL.
// usage: node client.mjs BASE_URL API_KEY MODEL [TOOLS_MODEL]
import OpenAI from "openai";

const [baseURL, apiKey, model, toolsModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
let passed = 0, failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log("ok   " + name);
  } catch (e) {
    failed++;
    console.log("FAIL " + name + ": " + (e && e.stack ? e.stack : e));
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }

await check("models.list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert(ids.includes(model), "model missing from " + JSON.stringify(ids));
});

await check("chat.completions.create", async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: "user", content: "What is 2 + 3?" }], max_tokens: 24, seed: 1,
  });
  assert(r.object === "chat.completion" && r.choices.length === 1, JSON.stringify(r));
  const m = r.choices[0].message;
  assert(m.role === "assistant", "role");
  assert(typeof m.reasoning_content === "string" || typeof m.content === "string", "no text");
  assert(r.usage.completion_tokens >= 1, "usage");
  assert(typeof r.usage.completion_tokens_details.reasoning_tokens === "number", "reasoning_tokens");
});

await check("chat.completions.create stream with usage", async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: "user", content: "What is 4 + 4?" }], max_tokens: 16, stream: true,
    stream_options: { include_usage: true },
  });
  let text = "", chunks = 0, usage = null, finish = null;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      text += (ch.delta.reasoning_content || "") + (ch.delta.content || "");
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert(chunks >= 2 && text.length > 0, "chunks " + chunks);
  assert(finish === "stop" || finish === "length", "finish " + finish);
  assert(usage && usage.completion_tokens >= 1, "final usage chunk");
});

await check("completions.create echo + logprobs, max_tokens 0", async () => {
  const r = await client.completions.create({ model, prompt: "3 + 4 = 7", max_tokens: 0, echo: true, logprobs: 1 });
  const c = r.choices[0];
  assert(c.text === "3 + 4 = 7", "echo text " + JSON.stringify(c.text));
  const lp = c.logprobs;
  assert(lp.tokens.length === lp.token_logprobs.length && lp.token_logprobs[0] === null, "logprobs");
  assert(lp.tokens.join("") === "3 + 4 = 7", "token texts " + JSON.stringify(lp.tokens));
});

await check("AuthenticationError on a wrong key", async () => {
  const bad = new OpenAI({ baseURL, apiKey: "aha-wrong", maxRetries: 0 });
  try {
    await bad.models.list();
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof OpenAI.AuthenticationError, "got " + e);
  }
});

await check("NotFoundError on an unknown model", async () => {
  try {
    await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] });
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof OpenAI.NotFoundError, "got " + e);
  }
});

await check("BadRequestError on a bad parameter", async () => {
  try {
    await client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }], temperature: -3 });
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError && e.status === 400, "got " + e);
  }
});

if (toolsModel) {
  const tools = [{ type: "function", function: { name: "get_weather", description: "Weather today",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 10 } },
                  required: ["city"], additionalProperties: false } } }];
  const req = { model: toolsModel, messages: [{ role: "user", content: "Weather in Paris?" }], tools,
                tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 600, seed: 2 };
  const checkCall = (m, how) => {
    const calls = m.tool_calls || [];
    assert(calls.length === 1 && calls[0].function.name === "get_weather", how + ": " + JSON.stringify(m));
    const args = JSON.parse(calls[0].function.arguments);
    assert(typeof args.city === "string" && args.city.length <= 10, how + " arguments " + JSON.stringify(args));
  };
  await check("tools: a forced call", async () => {
    const r = await client.chat.completions.create(req);
    assert(r.choices[0].finish_reason === "tool_calls", "finish " + r.choices[0].finish_reason);
    checkCall(r.choices[0].message, "create");
  });
  await check("tools: a forced call streamed (the SDK's stream helper)", async () => {
    const stream = client.beta.chat.completions.stream(req);
    const final = await stream.finalChatCompletion();
    checkCall(final.choices[0].message, "stream");
  });
}

console.log(`openai-sdk: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
