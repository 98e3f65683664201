-- wrk script of scripts/bench-ingest: POSTs one signed GitHub delivery body over and over,
-- each request with its own X-GitHub-Delivery id. The body never changes, so the signature
-- computed once by the caller stays valid; only the delivery header differs.
--
-- Arguments (after `--`): BODY_FILE EVENT SIGNATURE RUN PATH
--   RUN: a number unique to this wrk invocation, so ids never repeat across passes.
-- At the end it prints one line `BENCH_RESULT {json}` with the exact counts and latency
-- percentiles (microseconds) for the caller to parse.

local threads = {}
local counter = 0
local prefix, suffix

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  local placeholder = "DELIVERY-ID-PLACEHOLDER-000000000000"
  local headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = args[2],
    ["X-GitHub-Delivery"] = placeholder,
    ["X-GitHub-Hook-ID"] = "1",
    ["X-Hub-Signature-256"] = args[3],
  }
  local request = wrk.format("POST", args[5], headers, body)
  local at = string.find(request, placeholder, 1, true)
  prefix = string.sub(request, 1, at - 1)
  suffix = string.sub(request, at + #placeholder)
  run = tonumber(args[4])
end

function request()
  counter = counter + 1
  -- UUID-shaped like GitHub's: run, thread and a per-thread counter make it unique.
  local id = string.format("%08x-%04x-4000-8000-%012x", run, tid, counter)
  return prefix .. id .. suffix
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
