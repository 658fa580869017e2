// k6 scenario for `make bench-gate`: one gateway is flooded by a few callers far above their rate while
// legitimate users chat through it. Every flood request carries a caller address in X-Forwarded-For (the gateway
// trusts loopback proxies, as it trusts nginx), so a handful of identities stand for a scraper or an L7 attack.
//
// Environment: GATEWAY_URL, FLOOD_RATE (requests/s, default 5000), FLOOD_IDENTITIES (5), USERS (100),
// DURATION (e.g. 30s), SUMMARY_PATH (where the JSON summary goes).
import http from 'k6/http';
import { sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const gateway = __ENV.GATEWAY_URL;
const floodRate = parseInt(__ENV.FLOOD_RATE || '5000', 10);
const floodIdentities = parseInt(__ENV.FLOOD_IDENTITIES || '5', 10);
// Requests per flood iteration, sent together with http.batch: fewer JavaScript iterations per request keeps
// the load generator's own CPU cost low enough to offer the full rate on a small machine.
const floodBatch = parseInt(__ENV.FLOOD_BATCH || '10', 10);
const users = parseInt(__ENV.USERS || '100', 10);
const duration = __ENV.DURATION || '30s';

const floodStatus = new Counter('flood_status');
const floodRejectionMs = new Trend('flood_rejection_ms', true);
const floodAdmitted = new Counter('flood_admitted');
const floodRejected = new Counter('flood_rejected');
const userChatsCompleted = new Counter('user_chats_completed');
const userChatsFailed = new Counter('user_chats_failed');
const userAdmitted = new Counter('user_admitted');
const userChatMs = new Trend('user_chat_ms', true);

export const options = {
  // Fewer tags and no flood bodies keep the load generator's own cost down on a small machine.
  discardResponseBodies: true,
  systemTags: ['status', 'scenario'],
  scenarios: {
    flood: {
      executor: 'constant-arrival-rate',
      exec: 'flood',
      rate: Math.ceil(floodRate / floodBatch),
      timeUnit: '1s',
      duration,
      preAllocatedVUs: 300,
      maxVUs: 1500,
    },
    users: {
      executor: 'constant-vus',
      exec: 'chat',
      vus: users,
      duration,
    },
  },
  summaryTrendStats: ['min', 'med', 'p(90)', 'p(99)', 'max', 'count'],
};

const jsonHeaders = { 'content-type': 'application/json' };

export function flood() {
  const requests = [];
  for (let index = 0; index < floodBatch; index += 1) {
    const identity = `198.51.100.${((__ITER * floodBatch + index) % floodIdentities) + 1}`;
    requests.push({
      method: 'POST',
      url: `${gateway}/api/chats`,
      body: JSON.stringify({ message: `flood ${__VU}-${__ITER}-${index}` }),
      params: { headers: Object.assign({ 'x-forwarded-for': identity }, jsonHeaders), responseType: 'none' },
    });
  }
  for (const response of http.batch(requests)) {
    floodStatus.add(1, { status: String(response.status) });
    if (response.status === 202) {
      floodAdmitted.add(1);
    } else if (response.status === 429 || response.status === 403) {
      floodRejected.add(1);
      floodRejectionMs.add(response.timings.duration);
    }
  }
}

export function chat() {
  // Each virtual user is one person with an address of their own, chatting one message at a time.
  const identity = `10.20.${Math.floor(__VU / 250)}.${__VU % 250}`;
  const headers = Object.assign({ 'x-forwarded-for': identity }, jsonHeaders);
  const started = Date.now();
  const created = http.post(`${gateway}/api/chats`, JSON.stringify({ message: `user ${__VU} asks ${__ITER}` }), {
    headers,
    responseType: 'text',
    tags: { name: 'user-post' },
  });
  if (created.status !== 202) {
    userChatsFailed.add(1, { step: 'post', status: String(created.status) });
    sleep(1);
    return;
  }
  userAdmitted.add(1);
  const eventsUrl = created.json('events_url');
  // The SSE stream ends after `done` or `error`; k6 reads it whole.
  const events = http.get(`${gateway}${eventsUrl}`, {
    headers,
    timeout: '120s',
    responseType: 'text',
    tags: { name: 'user-events' },
  });
  if (events.status === 200 && events.body.includes('event: done')) {
    userChatsCompleted.add(1);
    userChatMs.add(Date.now() - started);
  } else {
    userChatsFailed.add(1, { step: 'events', status: String(events.status) });
  }
  // A person reads the answer before asking again (and stays well within the anonymous rate of 1 per second).
  sleep(1.5);
}

export function handleSummary(data) {
  const outputs = { stdout: '' };
  if (__ENV.SUMMARY_PATH) {
    outputs[__ENV.SUMMARY_PATH] = JSON.stringify(data, null, 2);
  }
  return outputs;
}
