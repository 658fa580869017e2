// k6 scenario for `make bench-llm-rate`: a burst of chats arrives at once (far more than the LLM may start per
// second), so the queue must absorb it and the workers drain it at the allowed rate.
// Environment: GATEWAY_URL, CHATS (default 2000), VUS (default 100), SUMMARY_PATH.
import http from 'k6/http';
import { Counter } from 'k6/metrics';

const gateway = __ENV.GATEWAY_URL;
const admitted = new Counter('burst_admitted');
const refused = new Counter('burst_refused');

export const options = {
  scenarios: {
    burst: {
      executor: 'shared-iterations',
      vus: parseInt(__ENV.VUS || '100', 10),
      iterations: parseInt(__ENV.CHATS || '2000', 10),
      maxDuration: '120s',
    },
  },
};

export default function () {
  const response = http.post(`${gateway}/api/chats`, JSON.stringify({ message: `burst chat ${__VU}-${__ITER}` }), {
    headers: { 'content-type': 'application/json' },
    responseType: 'none',
  });
  if (response.status === 202) {
    admitted.add(1);
  } else {
    refused.add(1, { status: String(response.status) });
  }
}

export function handleSummary(data) {
  const outputs = { stdout: '' };
  if (__ENV.SUMMARY_PATH) {
    outputs[__ENV.SUMMARY_PATH] = JSON.stringify(data, null, 2);
  }
  return outputs;
}
