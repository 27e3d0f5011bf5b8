// The Responses API through the official Node SDK (npm `openai`, pinned in package-lock.json), for one model.
// Run by tests/gateway/responses/test_node_sdk.py with TIERGATE_BASE_URL (the gateway's /v1),
// TIERGATE_API_KEY, TIERGATE_MODEL and TIERGATE_SCENARIOS (comma-separated names of `scenarios` below); prints
// one JSON line: what each scenario saw, or the error that ended it (a scenario's failure does not stop the
// others, so that pytest can say which one the SDK rejected).
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const baseURL = process.env.TIERGATE_BASE_URL;
const apiKey = process.env.TIERGATE_API_KEY;
const model = process.env.TIERGATE_MODEL;
const chosen = (process.env.TIERGATE_SCENARIOS ?? '').split(',').filter(Boolean);
if (!baseURL || !apiKey || !model || chosen.length === 0) {
  throw new Error('TIERGATE_BASE_URL, TIERGATE_API_KEY, TIERGATE_MODEL and TIERGATE_SCENARIOS must be set');
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
const reasoning = { effort: 'low' };

const WEATHER = {
  type: 'function',
  name: 'get_weather',
  description: 'The weather in a city.',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } },
    required: ['city', 'unit'],
    additionalProperties: false,
  },
  strict: true,
};

function failure(error) {
  return {
    name: error?.constructor?.name ?? typeof error,
    message: String(error?.message ?? error),
    status: error?.status ?? null,
    code: error?.code ?? null,
    param: error?.param ?? null,
    stack: String(error?.stack ?? '').split('\n').slice(0, 8).join('\n'),
  };
}

// What the tests read of a response: the SDK's own view of it (output_text is the SDK's derived field).
function summary(response) {
  return {
    id: response.id,
    object: response.object,
    status: response.status,
    incomplete_details: response.incomplete_details ?? null,
    model: response.model,
    previous_response_id: response.previous_response_id ?? null,
    output_text: response.output_text,
    output: response.output,
    usage: response.usage,
  };
}

// An event as it came, without the bulky parts (a lifecycle event's response is kept as a summary).
function eventRecord(event) {
  const record = {};
  for (const key of [
    'type',
    'sequence_number',
    'output_index',
    'content_index',
    'summary_index',
    'item_id',
    'delta',
    'text',
    'arguments',
    'name',
  ]) {
    if (event[key] !== undefined) record[key] = event[key];
  }
  if (event.item) record.item = { type: event.item.type, id: event.item.id, status: event.item.status };
  if (event.part) record.part = { type: event.part.type };
  if (event.response) record.response = { id: event.response.id, status: event.response.status };
  return record;
}

async function create() {
  const { data, response } = await client.responses
    .create({ model, input: 'Name three prime numbers.', max_output_tokens: 1500, reasoning, metadata: { run: 'node' } })
    .withResponse();
  const retrieved = await client.responses.retrieve(data.id);
  return {
    tier_header: response.headers.get('x-tiergate-tier'),
    metadata: data.metadata,
    response: summary(data),
    retrieved: summary(retrieved),
  };
}

// Three input messages, listed one per page by the SDK's auto-pagination (`after` cursors), then deleted.
async function inputItemsAndDelete() {
  const input = ['one', 'two', 'three'].map((word) => ({ role: 'user', content: `Say ${word}.` }));
  const created = await client.responses.create({ model, input, reasoning });
  const items = [];
  for await (const item of client.responses.inputItems.list(created.id, { limit: 1, order: 'asc' })) {
    items.push({ id: item.id, type: item.type, role: item.role, content: item.content });
  }
  await client.responses.delete(created.id);
  let retrieveAfterDelete = null;
  try {
    await client.responses.retrieve(created.id);
  } catch (error) {
    retrieveAfterDelete = failure(error);
  }
  return { id: created.id, items, retrieve_after_delete: retrieveAfterDelete };
}

async function stream(params) {
  const events = [];
  const snapshots = []; // the helper's per-delta accumulated text ('response.output_text.delta' listener)
  const argumentSnapshots = [];
  const runner = client.responses.stream(params);
  runner.on('response.output_text.delta', (event) => snapshots.push(event.snapshot));
  runner.on('response.function_call_arguments.delta', (event) => argumentSnapshots.push(event.snapshot));
  for await (const event of runner) {
    events.push(eventRecord(event));
  }
  const final = await runner.finalResponse();
  const retrieved = await client.responses.retrieve(final.id);
  return {
    events,
    snapshots,
    argument_snapshots: argumentSnapshots,
    final: summary(final),
    retrieved: summary(retrieved),
  };
}

// An engine that dies mid-stream: the helper must reject with the gateway's `error` event, not hang or end clean.
async function streamDies() {
  const events = [];
  const runner = client.responses.stream({ model, input: 'Tell me a story.' });
  let thrown = null;
  try {
    for await (const event of runner) {
      events.push(eventRecord(event));
    }
  } catch (error) {
    thrown = failure(error);
  }
  let final = null;
  try {
    await runner.finalResponse();
    final = 'resolved';
  } catch (error) {
    final = failure(error);
  }
  return { events, thrown, final_response: final };
}

async function functionCallRoundTrip() {
  const first = await client.responses.create({
    model,
    input: 'Should I take an umbrella in Paris? Use get_weather.',
    tools: [WEATHER],
    tool_choice: { type: 'function', name: 'get_weather' },
    reasoning,
  });
  const call = first.output.find((item) => item.type === 'function_call');
  if (!call) return { first: summary(first), second: null };
  const second = await client.responses.create({
    model,
    previous_response_id: first.id,
    input: [{ type: 'function_call_output', call_id: call.call_id, output: JSON.stringify({ rain: true }) }],
    tools: [WEATHER],
    reasoning,
  });
  return { first: summary(first), second: summary(second) };
}

const scenarios = {
  create,
  input_items_and_delete: inputItemsAndDelete,
  stream: () => stream({ model, input: 'Count to five.', reasoning }),
  // on the deliberate tier: five samples and a vote, the reasoning's summary asked for
  stream_high_effort: () =>
    stream({ model, input: 'What is 6 * 7?', reasoning: { effort: 'high', summary: 'auto' } }),
  stream_function_call: () =>
    stream({
      model,
      input: 'Is it raining in Oslo? Use get_weather.',
      tools: [WEATHER],
      tool_choice: { type: 'function', name: 'get_weather' },
      reasoning,
    }),
  function_call_round_trip: functionCallRoundTrip,
  // stopped by its bound: response.incomplete (on the deliberate tier, a bound under the depth floor is a 400)
  stream_incomplete: () => stream({ model, input: 'Tell me a long story.', max_output_tokens: 16 }),
  stream_dies: streamDies,
};

const results = { sdk_version: VERSION, node_version: process.version, model };
for (const name of chosen) {
  const run = scenarios[name];
  if (!run) throw new Error(`no scenario ${name}`);
  try {
    results[name] = { ok: true, ...(await run()) };
  } catch (error) {
    results[name] = { ok: false, error: failure(error) };
  }
}
process.stdout.write(JSON.stringify(results) + '\n');
