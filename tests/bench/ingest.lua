-- wrk script for the ingest benchmark: POSTs one realistic submission, each request with a
-- fresh idempotency key, and prints percentiles wrk's own summary leaves out (p95).
-- args: <path> <body file> <bearer token> <run nonce>

local counter = 0
local tag
local threads = 0

-- setup runs in the main state; thread:set writes a global of the thread's own state.
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  -- Unique across threads and across runs (the nonce is per wrk run): a repeated key would
  -- be an idempotent replay, not the new submission this benchmark means to measure.
  tag = args[4] .. "-" .. thread_id
  path = args[1]
  local file = assert(io.open(args[2], "rb"))
  local body = file:read("*a")
  file:close()
  -- The body holds the marker __KEY__ once, in client_submission_id.
  local at = assert(string.find(body, "__KEY__", 1, true))
  head = string.sub(body, 1, at - 1)
  tail = string.sub(body, at + 7)
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. args[3],
  }
end

function request()
  counter = counter + 1
  return wrk.format("POST", path, headers, head .. tag .. "-" .. counter .. tail)
end

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d socket_errors=%d p50_us=%d p95_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
