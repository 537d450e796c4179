// The official OpenAI Node SDK against a running Crossroads, with the scripted
// frontier upstream (deterministic: exact assertions) and a real local model,
// SmolLM2 on llama.cpp (its words vary: assert tokens came back, never text).
//
// scripts/test-clients.sh starts everything and exports where it is. Node 20
// has no built-in SQLite, so this suite checks the local model's accounting
// through /metrics; the Python suite reads the ledger itself.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';

import OpenAI, {
  APIError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  NotFoundError,
  RateLimitError,
} from 'openai';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run scripts/test-clients.sh`);
  return value;
}

const GATEWAY = env('CROSSROADS_URL');
const METRICS = env('CROSSROADS_METRICS_URL');
const UPSTREAM = env('CROSSROADS_UPSTREAM_URL');

// The generated config does not require keys: the SDK insists on one, and a
// placeholder that is not a Crossroads `ck-` key passes as anonymous. maxRetries 0:
// the SDK retries 429 and 5xx by default, which would only slow the error tests.
// The timeout is generous: the local model serves one request at a time.
const client = new OpenAI({
  baseURL: `${GATEWAY}/v1`,
  apiKey: 'unused',
  maxRetries: 0,
  timeout: 180_000,
});

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
    },
  },
};

const user = (content) => [{ role: 'user', content }];

// The scripted upstream's usage: words in all messages + 4 per message, and
// words in the reply (see tests/clients/scripted_upstream.py).
function scriptedUsage(messages, reply) {
  const words = (s) => s.split(/\s+/).filter(Boolean).length;
  const prompt = messages.reduce((n, m) => n + words(m.content) + 4, 0);
  return { prompt_tokens: prompt, completion_tokens: words(reply) };
}

// Prices of the generated config: gpt-4.1, $2 / $8 per 1M tokens.
const gpt41Usd = ({ prompt_tokens, completion_tokens }) =>
  (prompt_tokens * 2 + completion_tokens * 8) / 1e6;

// Bodies as the gateway forwarded them (keys may come in another order: compare
// them as values, not as text).
async function upstreamReceived() {
  const response = await fetch(`${UPSTREAM}/scripted/requests`);
  return response.json();
}

// Prometheus text summed over the series of `name` whose labels include `labels`.
async function metric(name, labels = {}) {
  const text = await (await fetch(METRICS)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  return { chunks, text };
}

describe('frontier (scripted upstream)', () => {
  test('models lists auto and the aliases', async () => {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    for (const id of ['auto', 'local', 'frontier', 'blocked', 'broken']) {
      assert.ok(ids.includes(id), `${id} missing from ${ids}`);
    }
  });

  test('named alias, headers through withResponse()', async () => {
    const messages = user('Name three primary colours, node raw');
    const { data, response } = await client.chat.completions
      .create({ model: 'frontier', messages })
      .withResponse();

    const reply = `scripted reply: ${messages[0].content}`;
    assert.equal(data.choices[0].message.content, reply);
    const usage = scriptedUsage(messages, reply);
    assert.equal(data.usage.prompt_tokens, usage.prompt_tokens);
    assert.equal(data.usage.completion_tokens, usage.completion_tokens);

    const h = response.headers;
    assert.equal(h.get('x-crossroads-rule'), 'alias');
    assert.equal(h.get('x-crossroads-pool'), 'frontier');
    assert.equal(h.get('x-crossroads-deployment'), 'frontier-scripted');
    assert.equal(h.get('x-crossroads-tier'), 'frontier');
    assert.ok(h.get('x-crossroads-request-id'));
    assert.ok(h.get('x-crossroads-class'));
    assert.equal(Number(h.get('x-crossroads-cost-usd')), gpt41Usd(usage));
  });

  test('auto routes by rules, headers through asResponse()', async () => {
    const response = await client.chat.completions
      .create({ model: 'auto', messages: user('What is a good name for a cat?') })
      .asResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-crossroads-rule'), 'default');
    assert.equal(response.headers.get('x-crossroads-tier'), 'frontier');
    const body = await response.json();
    assert.match(body.choices[0].message.content, /^scripted reply: /);
  });

  test('stream without include_usage has no usage chunk', async () => {
    const messages = user('Stream me something, node no-usage');
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'frontier', messages, stream: true })
      .withResponse();
    assert.equal(response.headers.get('x-crossroads-tier'), 'frontier');
    const { chunks, text } = await collect(stream);

    assert.equal(text, `scripted reply: ${messages[0].content}`);
    assert.ok(chunks.every((c) => c.usage == null), 'a usage chunk the client did not ask for');
    assert.ok(chunks.every((c) => c.choices.length > 0), 'an empty-choices chunk leaked');
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');

    // The gateway asked the upstream for usage anyway, to price the stream.
    const sent = (await upstreamReceived()).filter((b) =>
      isDeepStrictEqual(b.messages, messages),
    );
    assert.equal(sent.at(-1).stream_options.include_usage, true);
  });

  test('stream with include_usage ends with the usage chunk', async () => {
    const messages = user('Stream me something, node with usage');
    const stream = await client.chat.completions.create({
      model: 'frontier',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const { chunks, text } = await collect(stream);

    const withUsage = chunks.filter((c) => c.usage != null);
    assert.equal(withUsage.length, 1);
    assert.equal(withUsage[0], chunks.at(-1));
    assert.deepEqual(chunks.at(-1).choices, []);
    const usage = scriptedUsage(messages, text);
    assert.deepEqual(chunks.at(-1).usage, {
      ...usage,
      total_tokens: usage.prompt_tokens + usage.completion_tokens,
    });
  });

  test('tool call round trip', async () => {
    const messages = user('What is the weather in Paris? (node)');
    const first = await client.chat.completions.create({
      model: 'frontier',
      messages,
      tools: [WEATHER_TOOL],
    });
    const choice = first.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.tool_calls.length, 1);
    const call = choice.message.tool_calls[0];
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });

    messages.push(choice.message);
    messages.push({ role: 'tool', tool_call_id: call.id, content: 'sunny, 21 C' });
    const second = await client.chat.completions.create({
      model: 'frontier',
      messages,
      tools: [WEATHER_TOOL],
    });
    assert.equal(second.choices[0].finish_reason, 'stop');
    assert.equal(second.choices[0].message.content, 'The tool answered: sunny, 21 C');

    const forwarded = (await upstreamReceived()).at(-1).messages;
    assert.equal(forwarded[1].tool_calls[0].id, call.id);
    assert.deepEqual(forwarded[2], { role: 'tool', tool_call_id: call.id, content: 'sunny, 21 C' });
  });

  test('streamed tool call', async () => {
    const stream = await client.chat.completions.create({
      model: 'frontier',
      messages: user('Weather in Paris, streamed (node)'),
      tools: [WEATHER_TOOL],
      stream: true,
    });
    let name = '';
    let args = '';
    let finish = null;
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        for (const delta of choice.delta.tool_calls ?? []) {
          name += delta.function?.name ?? '';
          args += delta.function?.arguments ?? '';
        }
        finish = choice.finish_reason ?? finish;
      }
    }
    assert.equal(name, 'get_weather');
    assert.deepEqual(JSON.parse(args), { city: 'Paris' });
    assert.equal(finish, 'tool_calls');
  });

  test('JSON mode passes through', async () => {
    const messages = user('Reply in JSON please (node)');
    const completion = await client.chat.completions.create({
      model: 'frontier',
      messages,
      response_format: { type: 'json_object' },
    });
    assert.equal(JSON.parse(completion.choices[0].message.content).json_mode, true);
    const sent = (await upstreamReceived()).filter((b) =>
      isDeepStrictEqual(b.messages, messages),
    );
    assert.deepEqual(sent.at(-1).response_format, { type: 'json_object' });
  });
});

describe('errors: the SDK raises its own classes with Crossroads messages', () => {
  const hello = user('hello');

  test('401 AuthenticationError for an unknown virtual key', async () => {
    // The generated config does not require keys (the other tests send a
    // placeholder), but a key in Crossroads' `ck-` format it does not know is refused.
    const stranger = new OpenAI({
      baseURL: `${GATEWAY}/v1`,
      apiKey: 'ck-not-a-key-of-this-gateway',
      maxRetries: 0,
    });
    const error = await stranger.chat.completions
      .create({ model: 'frontier', messages: hello })
      .catch((e) => e);
    assert.ok(error instanceof AuthenticationError, `got ${error}`);
    assert.equal(error.status, 401);
    assert.equal(error.code, 'invalid_api_key');
    assert.equal(error.error.message, 'the API key is invalid or revoked');
  });

  test('400 BadRequestError', async () => {
    const error = await client.chat.completions
      .create({ model: 'auto', messages: [] })
      .catch((e) => e);
    assert.ok(error instanceof BadRequestError, `got ${error}`);
    assert.equal(error.status, 400);
    assert.equal(error.error.message, '`messages` must not be empty');
    assert.equal(error.param, 'messages');
    assert.equal(error.message, '400 `messages` must not be empty');
    assert.ok(error.headers.get('x-crossroads-request-id'));
  });

  test('404 NotFoundError for an unknown model', async () => {
    const error = await client.chat.completions
      .create({ model: 'no-such-model', messages: hello })
      .catch((e) => e);
    assert.ok(error instanceof NotFoundError, `got ${error}`);
    assert.equal(error.status, 404);
    assert.equal(error.code, 'model_not_found');
    assert.match(error.error.message, /no-such-model/);
  });

  test('429 RateLimitError from a reject rule', async () => {
    for (const stream of [false, true]) {
      const error = await client.chat.completions
        .create({ model: 'blocked', messages: hello, stream })
        .catch((e) => e);
      assert.ok(error instanceof RateLimitError, `stream=${stream}: got ${error}`);
      assert.equal(error.status, 429);
      assert.equal(error.error.message, 'the blocked alias is rejected by the test config');
    }
  });

  test('502 InternalServerError when the upstream is unreachable', async () => {
    for (const stream of [false, true]) {
      const error = await client.chat.completions
        .create({ model: 'broken', messages: hello, stream })
        .catch((e) => e);
      // The Node SDK's class for every 5xx; APIError is its status-error base.
      assert.ok(error instanceof InternalServerError, `stream=${stream}: got ${error}`);
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 502);
      assert.match(error.error.message, /broken/);
      assert.doesNotMatch(error.error.message, /127\.0\.0\.1/);
    }
  });
});

describe('local model (SmolLM2 on llama.cpp)', () => {
  const MAX_TOKENS = 24;
  const prompt = user('Say hello and name one colour.');
  const local = { deployment: 'local-smollm2', tier: 'local', status_class: '2xx' };

  test('non-stream: real tokens, local tier, price 0, the model usage counted', async () => {
    const requestsBefore = await metric('crossroads_requests_total', local);
    const tokensBefore = await metric('crossroads_tokens_total', { kind: 'output', tier: 'local' });
    const costBefore = await metric('crossroads_cost_usd_total', { tier: 'local' });

    const { data, response } = await client.chat.completions
      .create({ model: 'local', messages: prompt, max_tokens: MAX_TOKENS })
      .withResponse();
    assert.ok(data.choices[0].message.content.trim(), 'no generated text');
    assert.ok(data.usage.completion_tokens > 0 && data.usage.completion_tokens <= MAX_TOKENS);
    assert.equal(response.headers.get('x-crossroads-tier'), 'local');
    assert.equal(response.headers.get('x-crossroads-deployment'), 'local-smollm2');
    assert.equal(Number(response.headers.get('x-crossroads-cost-usd')), 0);

    assert.equal(await metric('crossroads_requests_total', local), requestsBefore + 1);
    assert.equal(
      await metric('crossroads_tokens_total', { kind: 'output', tier: 'local' }),
      tokensBefore + data.usage.completion_tokens,
    );
    assert.equal(await metric('crossroads_cost_usd_total', { tier: 'local' }), costBefore);
  });

  test('stream: real tokens, counted by estimate', async () => {
    const requestsBefore = await metric('crossroads_requests_total', local);
    const tokensBefore = await metric('crossroads_tokens_total', { kind: 'output', tier: 'local' });

    const { data: stream, response } = await client.chat.completions
      .create({ model: 'local', messages: prompt, max_tokens: MAX_TOKENS, stream: true })
      .withResponse();
    assert.equal(response.headers.get('x-crossroads-tier'), 'local');
    const { chunks, text } = await collect(stream);
    assert.ok(text.trim(), 'no generated text');
    assert.ok(chunks.every((c) => c.usage == null), 'a usage chunk the client did not ask for');

    // The stream's record is written when it ends; give the counters a moment.
    let requests = 0;
    for (let i = 0; i < 50 && requests < requestsBefore + 1; i++) {
      requests = await metric('crossroads_requests_total', local);
      if (requests < requestsBefore + 1) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(requests, requestsBefore + 1);
    // llama.cpp sends no usage in streams: the gateway's estimate is counted.
    assert.ok(
      (await metric('crossroads_tokens_total', { kind: 'output', tier: 'local' })) > tokensBefore,
    );
  });
});
