// The one chat lifecycle every k6 scenario in this folder shares: a user opens a chat, reads its event stream to
// the end, checks the answer, then thinks before leaving; plus the metrics, thresholds and summary they all use.
// Scenario files hold only their executors and knobs; nothing here knows which scenario runs it.
//
// What k6 can measure on server-sent events: k6 has no streaming read, so `http.get` on the events URL returns
// only when the stream ends (after its `done` or `error` event). The time to the first token is therefore NOT
// measurable here; the scenarios measure the admission time (POST to its 202) and the chat's whole time (POST to
// the end of the stream) instead. `dam-load` measures the first token.
//
// Environment read here (every scenario that runs lifecycle users):
//   BASE_URL            where the users go (nginx, or one gateway); default http://127.0.0.1:8080
//   THINK_S             seconds a user reads the answer before leaving (default 1; a refused user waits the same)
//   STREAM_TIMEOUT      how long one event stream may take to end (k6 duration, default 120s)
//   USER_FORWARDED_FOR  1: each user names an address of its own in X-Forwarded-For (10.20.x.y), for a gateway
//                       reached directly that trusts loopback; default 0: the user is its source address (spread
//                       them with `k6 run --local-ips 127.0.0.2-127.0.0.200`)
// Thresholds (a broken system fails the run; k6 then exits with 99):
//   ERROR_RATE_MAX      most chats that may fail after admission or get a non-429 error (default 0.01)
//   CHAT_P95_MS         p95 of the chat's whole time, POST to the end of its stream (default 20000)
//   ADMISSION_P95_MS    p95 of the POST's answer time (default 2000)
//   CHECKS_RATE_MIN     least share of passing checks (default 0.99)
//   REFUSAL_RATE_MAX    most chats refused with 429 (default 1: refusals are the dam's answer to overload)
//   MIN_COMPLETED       least chats that must complete (default 1), so a run that served nobody fails
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

/** The codes a 429 can carry in X-Dam-Reason: the gate's refusals and nginx's (edge) per-address limits. */
export const REFUSAL_CODES = [
  'rate_limited',
  'too_many_active_chats',
  'queue_full',
  'budget_exhausted',
  'too_many_connections',
];

export function envNumber(name, fallback) {
  const value = __ENV[name];
  if (value === undefined || value === '') {
    return fallback;
  }
  const parsed = Number(value);
  if (Number.isNaN(parsed)) {
    throw new Error(`${name} must be a number, got '${value}'`);
  }
  return parsed;
}

export function envText(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

export const BASE_URL = envText('BASE_URL', 'http://127.0.0.1:8080').replace(/\/$/, '');

const JSON_HEADERS = { 'content-type': 'application/json' };

/**
 * Every metric of a lifecycle user, named `<prefix><name>` (the flood's legitimate users use `legit_`). Metrics can
 * only be made in k6's init context, so a scenario calls this at its top level.
 */
export function createLifecycleMetrics(prefix) {
  const refusedByCode = {};
  for (const code of REFUSAL_CODES) {
    refusedByCode[code] = new Counter(`${prefix}refused_${code}`);
  }
  return {
    prefix,
    started: new Counter(`${prefix}chats_started`),
    admitted: new Counter(`${prefix}chats_admitted`),
    completed: new Counter(`${prefix}chats_completed`),
    failed: new Counter(`${prefix}chats_failed`),
    refused: new Counter(`${prefix}chats_refused`),
    refusedEdge: new Counter(`${prefix}chats_refused_edge`),
    refusedGate: new Counter(`${prefix}chats_refused_gate`),
    refusedByCode,
    refusedOtherCode: new Counter(`${prefix}refused_other_code`),
    errors: new Rate(`${prefix}chat_errors`),
    refusals: new Rate(`${prefix}chat_refusals`),
    chatMs: new Trend(`${prefix}chat_ms`, true),
    admissionMs: new Trend(`${prefix}admission_ms`, true),
  };
}

/** The thresholds on a set of lifecycle metrics, from the environment variables in this file's header. */
export function lifecycleThresholds(prefix) {
  return {
    [`${prefix}chat_errors`]: [`rate<=${envNumber('ERROR_RATE_MAX', 0.01)}`],
    [`${prefix}chat_refusals`]: [`rate<=${envNumber('REFUSAL_RATE_MAX', 1)}`],
    [`${prefix}chat_ms`]: [`p(95)<${envNumber('CHAT_P95_MS', 20000)}`],
    [`${prefix}admission_ms`]: [`p(95)<${envNumber('ADMISSION_P95_MS', 2000)}`],
    [`${prefix}chats_completed`]: [`count>=${envNumber('MIN_COMPLETED', 1)}`],
  };
}

export function checksThreshold() {
  return { checks: [`rate>=${envNumber('CHECKS_RATE_MIN', 0.99)}`] };
}

/** The address a user or caller names in X-Forwarded-For when the scenario is told to (see the header). */
export function userForwardedFor() {
  return `10.20.${Math.floor(__VU / 250) % 256}.${__VU % 250}`;
}

/**
 * Counts one 429 by its layer (X-Dam-Layer: edge or gate) and code (X-Dam-Reason), and checks its shape: JSON
 * with a Retry-After, as both nginx and the gateway answer it.
 */
export function recordRefusal(metrics, response) {
  const layer = response.headers['X-Dam-Layer'] || 'none';
  const code = response.headers['X-Dam-Reason'] || 'none';
  metrics.refused.add(1, { layer, code });
  if (layer === 'edge') {
    metrics.refusedEdge.add(1);
  } else if (layer === 'gate') {
    metrics.refusedGate.add(1);
  }
  (metrics.refusedByCode[code] || metrics.refusedOtherCode).add(1);
  check(response, {
    'a refusal is JSON with Retry-After and a layer': (refusal) =>
      String(refusal.headers['Content-Type'] || '').startsWith('application/json') &&
      refusal.headers['Retry-After'] !== undefined &&
      (layer === 'edge' || layer === 'gate'),
  });
}

/**
 * One user's visit: POST /api/chats with a unique prompt, read the events URL to its end, check the answer, think.
 * Returns what happened: 'completed', 'refused' or 'failed'.
 */
export function runChatLifecycle(metrics, options = {}) {
  const baseUrl = options.baseUrl || BASE_URL;
  const forwardedFor = options.forwardedFor === undefined ? __ENV.USER_FORWARDED_FOR === '1' : options.forwardedFor;
  const thinkS = options.thinkS === undefined ? envNumber('THINK_S', 1) : options.thinkS;
  const headers = forwardedFor ? Object.assign({ 'x-forwarded-for': userForwardedFor() }, JSON_HEADERS) : JSON_HEADERS;
  // Unique per run, user and iteration, so the gateway never joins two chats as duplicates.
  const prompt = `${options.label || 'user'} ${__ENV.RUN_ID || Date.now()} ${__VU}-${__ITER}: what is a dam for?`;

  metrics.started.add(1);
  const started = Date.now();
  const created = http.post(`${baseUrl}/api/chats`, JSON.stringify({ message: prompt }), {
    headers,
    responseType: 'text',
    tags: { name: 'POST /api/chats' },
  });

  if (created.status === 429) {
    recordRefusal(metrics, created);
    metrics.refusals.add(true);
    metrics.errors.add(false);
    sleep(thinkS);
    return 'refused';
  }
  metrics.refusals.add(false);

  let eventsUrl = null;
  const admitted = check(created, {
    'a chat is admitted with 202': (response) => response.status === 202,
    'the 202 names its events_url': (response) => {
      try {
        eventsUrl = response.json('events_url');
      } catch (_error) {
        eventsUrl = null;
      }
      return typeof eventsUrl === 'string' && eventsUrl.length > 0;
    },
  });
  if (!admitted) {
    return fail(metrics, 'post', created.status, thinkS);
  }
  metrics.admitted.add(1);
  metrics.admissionMs.add(created.timings.duration);

  // The stream ends after its terminal event, so this returns the whole answer at once.
  const events = http.get(eventsUrl.startsWith('http') ? eventsUrl : `${baseUrl}${eventsUrl}`, {
    headers,
    timeout: envText('STREAM_TIMEOUT', '120s'),
    responseType: 'text',
    tags: { name: 'GET events' },
  });
  const body = typeof events.body === 'string' ? events.body : '';
  const complete = check(events, {
    'the event stream answers 200': (response) => response.status === 200,
    'the answer has token events': () => body.includes('event: token'),
    'the answer ends with done': () => body.includes('event: done'),
    'the answer has no error event': () => !body.includes('event: error'),
  });
  if (!complete) {
    return fail(metrics, 'events', events.status, thinkS);
  }
  metrics.completed.add(1);
  metrics.errors.add(false);
  metrics.chatMs.add(Date.now() - started);
  // A person reads the answer before leaving (and stays within a caller's chat rate).
  sleep(thinkS);
  return 'completed';
}

function fail(metrics, step, status, thinkS) {
  metrics.failed.add(1, { step, status: String(status) });
  metrics.errors.add(true);
  sleep(thinkS);
  return 'failed';
}

/** The summary file path: SUMMARY_PATH, else loadtest/results/k6-<scenario>.json (relative to where k6 runs). */
export function summaryPath(scenario) {
  return envText('SUMMARY_PATH', `loadtest/results/k6-${scenario}.json`);
}

/**
 * handleSummary's outputs: the JSON summary to its file and a short text summary to stdout (k6's own text summary
 * lives in a remote jslib module, which a machine without that network cannot load).
 */
export function summaryOutputs(data, scenario) {
  return {
    stdout: textSummary(data, scenario),
    [summaryPath(scenario)]: JSON.stringify(data, null, 2),
  };
}

function formatValues(metric) {
  const values = metric.values || {};
  if (metric.type === 'trend') {
    return ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max']
      .filter((stat) => values[stat] !== undefined)
      .map((stat) => `${stat}=${values[stat].toFixed(2)}`)
      .join(' ') + (metric.contains === 'time' ? ' (ms)' : '');
  }
  if (metric.type === 'rate') {
    return `${(100 * values.rate).toFixed(2)}% (${values.passes} of ${values.passes + values.fails})`;
  }
  if (metric.type === 'counter') {
    return `${values.count} (${values.rate.toFixed(2)}/s)`;
  }
  return Object.keys(values).map((key) => `${key}=${values[key]}`).join(' ');
}

function textSummary(data, scenario) {
  const lines = [`k6 scenario ${scenario}: ${(data.state.testRunDurationMs / 1000).toFixed(1)} s`];
  const names = Object.keys(data.metrics).sort();
  const failedThresholds = [];
  lines.push('thresholds:');
  for (const name of names) {
    for (const [expression, result] of Object.entries(data.metrics[name].thresholds || {})) {
      const verdict = result.ok ? 'ok  ' : 'FAIL';
      if (!result.ok) {
        failedThresholds.push(`${name} ${expression}`);
      }
      lines.push(`  ${verdict} ${name} ${expression}: ${formatValues(data.metrics[name])}`);
    }
  }
  lines.push('metrics:');
  for (const name of names) {
    if (!name.includes('{')) {
      lines.push(`  ${name.padEnd(34, '.')} ${formatValues(data.metrics[name])}`);
    }
  }
  lines.push(failedThresholds.length ? `thresholds FAILED: ${failedThresholds.join('; ')}` : 'thresholds met');
  return `${lines.join('\n')}\n`;
}
