// k6 scenario `ramping`: lifecycle users ramp 0 -> 100 (30 s) -> 500 (1 min) -> 1,000 (2 min) -> 2,000 (1 min)
// -> 0 (30 s), the load shape of the system this one replaces; a broken or overwhelmed system fails its thresholds.
//
// Environment: SCALE multiplies every stage's users (default 1; e.g. 0.01 for 1 -> 5 -> 10 -> 20 users),
// TIME_SCALE every stage's duration (default 1; e.g. 0.05 for 1.5 s -> 3 s -> 6 s -> 3 s -> 1.5 s),
// GRACEFUL_RAMP_DOWN (how long users past a falling stage may finish their chat, default 30s), SUMMARY_PATH
// (default loadtest/results/k6-ramping.json); BASE_URL, THINK_S, STREAM_TIMEOUT, USER_FORWARDED_FOR and the
// thresholds ERROR_RATE_MAX, CHAT_P95_MS, ADMISSION_P95_MS, CHECKS_RATE_MIN, REFUSAL_RATE_MAX, MIN_COMPLETED as
// chat_lifecycle.js describes. k6 cannot see the first token of a stream: the chat's whole time is measured.
import {
  checksThreshold, createLifecycleMetrics, envNumber, envText, lifecycleThresholds, runChatLifecycle, summaryOutputs,
} from './chat_lifecycle.js';

const metrics = createLifecycleMetrics('');
const scale = envNumber('SCALE', 1);
const timeScale = envNumber('TIME_SCALE', 1);

// [seconds, users] of the full-size run.
const FULL_SIZE_STAGES = [[30, 100], [60, 500], [120, 1000], [60, 2000], [30, 0]];

function stage([seconds, users]) {
  // A scaled stage keeps at least one user (unless it ramps to none) and lasts at least a second.
  const target = users === 0 ? 0 : Math.max(1, Math.round(users * scale));
  return { duration: `${Math.max(1, Math.round(seconds * timeScale))}s`, target };
}

export const options = {
  scenarios: {
    ramping: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: FULL_SIZE_STAGES.map(stage),
      gracefulRampDown: envText('GRACEFUL_RAMP_DOWN', '30s'),
    },
  },
  thresholds: Object.assign(lifecycleThresholds(''), checksThreshold()),
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  runChatLifecycle(metrics);
}

export function handleSummary(data) {
  return summaryOutputs(data, 'ramping');
}
