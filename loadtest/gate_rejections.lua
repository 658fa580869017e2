-- wrk script for the one-core part of `make bench-gate`: every request is a chat from one caller that is always
-- over its rate, so every answer is a 429 decided by the gate in one Redis round trip.
wrk.method = "POST"
wrk.body = '{"message": "over the limit"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Forwarded-For"] = "198.51.100.200"
