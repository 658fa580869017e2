// k6 scenario `abuser`: a few VUs with one identity each fire a chat every 50 ms, far above any tier's rate. The
// dam must refuse most of them with a JSON 429 carrying Retry-After (from the gate, or nginx's edge), never a 5xx,
// and stay up for everyone else.
//
// Environment: BASE_URL, VUS (default 5), INTERVAL_MS (between one VU's chats, default 50), DURATION (default
// 30s), ABUSER_IDENTITY (an address every request names in X-Forwarded-For, for a gateway reached directly or to
// stand apart from other loopback clients; default none: the identity is k6's source address, so run this without
// --local-ips), SUMMARY_PATH (default loadtest/results/k6-abuser.json).
// Thresholds: MIN_REFUSED_RATE (least share refused, default 0.5), ERROR_RATE_MAX (most answers other than 202
// and 429, default 0), CHECKS_RATE_MIN (default 0.99).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import {
  BASE_URL, checksThreshold, createLifecycleMetrics, envNumber, envText, recordRefusal, summaryOutputs,
} from './chat_lifecycle.js';

const metrics = createLifecycleMetrics('abuser_');
const serverErrors = new Counter('abuser_server_errors');
const intervalS = envNumber('INTERVAL_MS', 50) / 1000;
const identity = envText('ABUSER_IDENTITY', '');
const headers = Object.assign({ 'content-type': 'application/json' }, identity ? { 'x-forwarded-for': identity } : {});

export const options = {
  scenarios: {
    abuser: {
      executor: 'constant-vus',
      vus: envNumber('VUS', 5),
      duration: envText('DURATION', '30s'),
    },
  },
  thresholds: Object.assign(
    {
      abuser_chat_refusals: [`rate>=${envNumber('MIN_REFUSED_RATE', 0.5)}`],
      abuser_chat_errors: [`rate<=${envNumber('ERROR_RATE_MAX', 0)}`],
    },
    checksThreshold(),
  ),
};

export default function () {
  metrics.started.add(1);
  const response = http.post(
    `${BASE_URL}/api/chats`,
    JSON.stringify({ message: `abuser ${__ENV.RUN_ID || Date.now()} ${__VU}-${__ITER}` }),
    { headers, responseType: 'text', tags: { name: 'POST /api/chats' } },
  );
  check(response, {
    'the answer is 202 or 429, never a 5xx': (answer) => answer.status === 202 || answer.status === 429,
  });
  if (response.status === 202) {
    metrics.admitted.add(1);
    metrics.refusals.add(false);
    metrics.errors.add(false);
  } else if (response.status === 429) {
    recordRefusal(metrics, response);
    metrics.refusals.add(true);
    metrics.errors.add(false);
  } else {
    metrics.refusals.add(false);
    metrics.errors.add(true);
    metrics.failed.add(1, { status: String(response.status) });
    if (response.status >= 500 || response.status === 0) {
      serverErrors.add(1, { status: String(response.status) });
    }
  }
  sleep(intervalS);
}

export function handleSummary(data) {
  return summaryOutputs(data, 'abuser');
}
