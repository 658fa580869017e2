// k6 scenario `constant`: a fixed number of lifecycle users (default 1,100) chat for a fixed time, the steady
// load the system this one replaces was sized for.
//
// Environment: VUS (default 1100), DURATION (default 5m), GRACEFUL_STOP (how long running chats may finish after
// DURATION, default 30s), SUMMARY_PATH (default loadtest/results/k6-constant.json); BASE_URL, THINK_S,
// STREAM_TIMEOUT, USER_FORWARDED_FOR and the thresholds ERROR_RATE_MAX, CHAT_P95_MS, ADMISSION_P95_MS,
// CHECKS_RATE_MIN, REFUSAL_RATE_MAX, MIN_COMPLETED as chat_lifecycle.js describes. k6 cannot see the first token
// of a stream: the chat's whole time is measured.
import {
  checksThreshold, createLifecycleMetrics, envNumber, envText, lifecycleThresholds, runChatLifecycle, summaryOutputs,
} from './chat_lifecycle.js';

const metrics = createLifecycleMetrics('');

export const options = {
  scenarios: {
    constant: {
      executor: 'constant-vus',
      vus: envNumber('VUS', 1100),
      duration: envText('DURATION', '5m'),
      gracefulStop: envText('GRACEFUL_STOP', '30s'),
    },
  },
  thresholds: Object.assign(lifecycleThresholds(''), checksThreshold()),
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  runChatLifecycle(metrics);
}

export function handleSummary(data) {
  return summaryOutputs(data, 'constant');
}
