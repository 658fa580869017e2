// k6 scenario `lifecycle`: users each open a chat, follow its event stream to `done`, check the answer is whole,
// then leave; the building block of every other scenario here, run on its own.
//
// Environment: VUS (users, default 10), ITERATIONS (chats per user, default 5), MAX_DURATION (default 10m),
// SUMMARY_PATH (default loadtest/results/k6-lifecycle.json); BASE_URL, THINK_S, STREAM_TIMEOUT,
// USER_FORWARDED_FOR and the thresholds ERROR_RATE_MAX, CHAT_P95_MS, ADMISSION_P95_MS, CHECKS_RATE_MIN,
// REFUSAL_RATE_MAX, MIN_COMPLETED as chat_lifecycle.js describes. k6 cannot see the first token of a stream (no
// streaming read): the chat's whole time and its admission time are measured instead.
import {
  checksThreshold, createLifecycleMetrics, envNumber, envText, lifecycleThresholds, runChatLifecycle, summaryOutputs,
} from './chat_lifecycle.js';

const metrics = createLifecycleMetrics('');

export const options = {
  scenarios: {
    lifecycle: {
      executor: 'per-vu-iterations',
      vus: envNumber('VUS', 10),
      iterations: envNumber('ITERATIONS', 5),
      maxDuration: envText('MAX_DURATION', '10m'),
    },
  },
  thresholds: Object.assign(lifecycleThresholds(''), checksThreshold()),
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  runChatLifecycle(metrics);
}

export function handleSummary(data) {
  return summaryOutputs(data, 'lifecycle');
}
