// The official OpenAI Node SDK's Responses API (`client.responses`) against
// Crossroads' /v1/responses: text, the typed event stream, function tools and
// their outputs, structured output, from the scripted frontier upstream
// (deterministic: exact assertions) and the real local model (tokens came back).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI, { BadRequestError } from 'openai';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run scripts/test-clients.sh`);
  return value;
}

const client = new OpenAI({
  baseURL: `${env('CROSSROADS_URL')}/v1`,
  apiKey: 'unused',
  maxRetries: 0,
  timeout: 180_000,
});

const WEATHER_TOOL = {
  type: 'function',
  name: 'get_weather',
  description: 'The current weather in a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
    additionalProperties: false,
  },
  strict: true,
};

const words = (s) => s.split(/\s+/).filter(Boolean).length;

describe('responses (scripted upstream)', () => {
  test('a response is exact, with the gateway headers', async () => {
    const input = 'Name three primary colours, node responses';
    const { data, response } = await client.responses
      .create({ model: 'frontier', input })
      .withResponse();
    const reply = `scripted reply: ${input}`;
    assert.equal(data.object, 'response');
    assert.equal(data.status, 'completed');
    assert.equal(data.output_text, reply);
    assert.equal(data.usage.input_tokens, words(input) + 4);
    assert.equal(data.usage.output_tokens, words(reply));
    assert.equal(response.headers.get('x-crossroads-deployment'), 'frontier-scripted');
    assert.equal(
      Number(response.headers.get('x-crossroads-cost-usd')),
      ((words(input) + 4) * 2 + words(reply) * 8) / 1e6,
    );
  });

  test('a stream has the typed events and a final response', async () => {
    const input = 'Stream me something, node responses';
    const stream = client.responses.stream({ model: 'frontier', input });
    const types = [];
    for await (const event of stream) types.push(event.type);
    const final = await stream.finalResponse();
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    assert.ok(types.includes('response.output_text.delta'));
    assert.equal(final.output_text, `scripted reply: ${input}`);
  });

  test('function tools round trip', async () => {
    const first = await client.responses.create({
      model: 'frontier',
      input: 'What is the weather in Paris?',
      tools: [WEATHER_TOOL],
    });
    const call = first.output.find((item) => item.type === 'function_call');
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
    const second = await client.responses.create({
      model: 'frontier',
      tools: [WEATHER_TOOL],
      input: [
        { role: 'user', content: 'What is the weather in Paris?' },
        { type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments },
        { type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21 C' },
      ],
    });
    assert.equal(second.output_text, 'The tool answered: sunny, 21 C');
  });

  test('structured output is a JSON instance of the schema', async () => {
    const response = await client.responses.create({
      model: 'frontier',
      input: 'The largest city in France',
      text: {
        format: {
          type: 'json_schema',
          name: 'city',
          strict: true,
          schema: {
            type: 'object',
            properties: { name: { type: 'string' }, population: { type: 'integer' } },
            required: ['name', 'population'],
            additionalProperties: false,
          },
        },
      },
    });
    assert.deepEqual(JSON.parse(response.output_text), { name: 'Paris', population: 1 });
  });

  test('state the gateway does not keep is a 400 naming the field', async () => {
    await assert.rejects(
      client.responses.create({ model: 'frontier', input: 'again', previous_response_id: 'resp_1' }),
      (error) => error instanceof BadRequestError && error.param === 'previous_response_id',
    );
  });
});

describe('responses (local model)', () => {
  test('the local model answers through the Responses API', async () => {
    const response = await client.responses.create({
      model: 'local',
      input: 'Say hello.',
      max_output_tokens: 24,
    });
    assert.ok(response.output_text.length > 0);
    assert.ok(response.usage.output_tokens > 0);
  });
});
