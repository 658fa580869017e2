// k6 scenario `flood`: an arrival-rate attack (default 5,000 requests/s) from a few identities, beside legitimate
// lifecycle users. The flood's requests go out with http.batch, several per iteration, which keeps k6's own CPU low
// enough to offer the full rate on a small machine; their answers are counted by who answered: admitted
// (`flood_admitted`), refused by nginx (`flood_refused_edge`, X-Dam-Layer: edge) or by a gateway
// (`flood_refused_gate`), or anything else (`flood_other`, which the threshold FLOOD_UNEXPECTED_RATE_MAX bounds).
//
// Environment: BASE_URL (nginx, or one gateway), FLOOD_RATE (requests/s, default 5000; 0: no flood, a baseline),
// DURATION (default 30s), LEGIT_VUS (legitimate users, default 20; 0: the flood only), FLOOD_FORWARDED_FOR (1: each
// flood request names one of FLOOD_IDENTITIES callers, default 5, in X-Forwarded-For, and each legitimate user an
// address of its own, for a gateway reached directly that trusts loopback; 0, the default: the caller is the
// source address, chosen with `k6 run --local-ips`), FLOOD_BATCH (requests per iteration, default 10),
// FLOOD_PREALLOCATED_VUS (300), FLOOD_MAX_VUS (1500), FLOOD_UNEXPECTED_RATE_MAX (0.01), SUMMARY_PATH (default
// loadtest/results/k6-flood.json); THINK_S, STREAM_TIMEOUT, USER_FORWARDED_FOR and the thresholds ERROR_RATE_MAX,
// CHAT_P95_MS, ADMISSION_P95_MS, CHECKS_RATE_MIN, REFUSAL_RATE_MAX, MIN_COMPLETED for the legitimate users (their
// metrics are prefixed `legit_`), as chat_lifecycle.js describes. k6 cannot see the first token of a stream: the
// legitimate chats' whole time is measured (`legit_chat_ms`); `make bench-flood` measures first tokens with dam-load.
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  BASE_URL, checksThreshold, createLifecycleMetrics, envNumber, envText, lifecycleThresholds, runChatLifecycle,
  summaryOutputs,
} from './chat_lifecycle.js';

const floodRate = envNumber('FLOOD_RATE', 5000);
const floodBatch = Math.max(1, envNumber('FLOOD_BATCH', 10));
const floodIdentities = Math.max(1, envNumber('FLOOD_IDENTITIES', 5));
const floodForwardedFor = envText('FLOOD_FORWARDED_FOR', '0') === '1';
const legitVus = envNumber('LEGIT_VUS', 20);
const duration = envText('DURATION', '30s');

const floodRequests = new Counter('flood_requests');
const floodAdmitted = new Counter('flood_admitted');
const floodRefusedEdge = new Counter('flood_refused_edge');
const floodRefusedGate = new Counter('flood_refused_gate');
const floodOther = new Counter('flood_other');
const floodUnexpected = new Rate('flood_unexpected');
const floodRefusalMs = new Trend('flood_refusal_ms', true);
const legitMetrics = createLifecycleMetrics('legit_');

const scenarios = {};
const thresholds = Object.assign({}, checksThreshold());
if (floodRate > 0) {
  scenarios.flood = {
    executor: 'constant-arrival-rate',
    exec: 'flood',
    rate: Math.max(1, Math.ceil(floodRate / floodBatch)),
    timeUnit: '1s',
    duration,
    preAllocatedVUs: envNumber('FLOOD_PREALLOCATED_VUS', 300),
    maxVUs: envNumber('FLOOD_MAX_VUS', 1500),
  };
  thresholds.flood_unexpected = [`rate<=${envNumber('FLOOD_UNEXPECTED_RATE_MAX', 0.01)}`];
}
if (legitVus > 0) {
  scenarios.legit = { executor: 'constant-vus', exec: 'legit', vus: legitVus, duration };
  Object.assign(thresholds, lifecycleThresholds('legit_'));
}

export const options = {
  // Only the tags the summary uses: fewer time series keep the load generator's own cost down.
  systemTags: ['status', 'scenario', 'name'],
  scenarios,
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const JSON_HEADERS = { 'content-type': 'application/json' };

export function flood() {
  const requests = [];
  for (let index = 0; index < floodBatch; index += 1) {
    const headers = floodForwardedFor
      ? Object.assign({ 'x-forwarded-for': `198.51.100.${((__ITER * floodBatch + index) % floodIdentities) + 1}` },
        JSON_HEADERS)
      : JSON_HEADERS;
    requests.push({
      method: 'POST',
      url: `${BASE_URL}/api/chats`,
      body: JSON.stringify({ message: `flood ${__VU}-${__ITER}-${index}` }),
      // The bodies are never read: only the status and the layer header count.
      params: { headers, responseType: 'none', tags: { name: 'flood POST /api/chats' } },
    });
  }
  for (const response of http.batch(requests)) {
    floodRequests.add(1);
    const layer = response.headers['X-Dam-Layer'];
    if (response.status === 202) {
      floodAdmitted.add(1);
      floodUnexpected.add(false);
    } else if ((response.status === 429 || response.status === 503 || response.status === 403) && layer) {
      (layer === 'edge' ? floodRefusedEdge : floodRefusedGate).add(1);
      floodRefusalMs.add(response.timings.duration);
      floodUnexpected.add(false);
    } else {
      floodOther.add(1, { status: String(response.status) });
      floodUnexpected.add(true);
    }
  }
}

export function legit() {
  runChatLifecycle(legitMetrics, {
    label: 'legit',
    forwardedFor: floodForwardedFor || envText('USER_FORWARDED_FOR', '0') === '1',
  });
}

export function handleSummary(data) {
  return summaryOutputs(data, 'flood');
}
