// k6 scenario `llm_burst`, for `make bench-llm-rate`: a burst of chats arrives at once (far more than the LLM may
// start per second), so the queue must absorb it and the workers drain it at the allowed rate. Nobody reads the
// answers; the bench watches them drain.
//
// Environment: BASE_URL (GATEWAY_URL is still read when BASE_URL is unset), CHATS (default 2000), VUS (default
// 100), MAX_DURATION (default 120s), SUMMARY_PATH (default loadtest/results/k6-llm_burst.json).
// Thresholds: ADMITTED_RATE_MIN (least share admitted, default 0.99: the queue holds the burst),
// ADMISSION_P95_MS (p95 of the POST's answer time, default 5000).
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import { envNumber, envText, summaryOutputs } from './chat_lifecycle.js';

const baseUrl = envText('BASE_URL', envText('GATEWAY_URL', 'http://127.0.0.1:8080')).replace(/\/$/, '');
const admitted = new Counter('burst_admitted');
const refused = new Counter('burst_refused');
const admissions = new Rate('burst_admissions');
const admissionMs = new Trend('burst_admission_ms', true);

export const options = {
  scenarios: {
    burst: {
      executor: 'shared-iterations',
      vus: envNumber('VUS', 100),
      iterations: envNumber('CHATS', 2000),
      maxDuration: envText('MAX_DURATION', '120s'),
    },
  },
  thresholds: {
    burst_admissions: [`rate>=${envNumber('ADMITTED_RATE_MIN', 0.99)}`],
    burst_admission_ms: [`p(95)<${envNumber('ADMISSION_P95_MS', 5000)}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  const response = http.post(
    `${baseUrl}/api/chats`,
    JSON.stringify({ message: `burst chat ${__VU}-${__ITER} at ${Date.now()}` }),
    { headers: { 'content-type': 'application/json' }, responseType: 'none' },
  );
  admissionMs.add(response.timings.duration);
  admissions.add(response.status === 202);
  if (response.status === 202) {
    admitted.add(1);
  } else {
    refused.add(1, { status: String(response.status) });
  }
}

export function handleSummary(data) {
  return summaryOutputs(data, 'llm_burst');
}
