-- wrk script of scripts/bench-ingest's "with real work" phase: POSTs signed deliveries that
-- rotate over a set of pull requests (one body and signature per pull request, signed by the
-- caller), each request with its own X-GitHub-Delivery id, and counts the answers by status
-- (202 accepted, 503 the bot's queue for that pull request or in all was full, anything else).
--
-- Arguments (after `--`): MANIFEST EVENT RUN PATH
--   MANIFEST: a file with one line per pull request, `BODY_FILE<TAB>SIGNATURE`.
--   RUN: a number unique to this wrk invocation, so ids never repeat across passes.
-- At the end it prints one line `BENCH_RESULT {json}` for the caller to parse.

local threads = {}
local counter = 0
local templates = {}
-- Globals, so done() can read each thread's counts with thread:get.
accepted, refused, other = 0, 0, 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local placeholder = "DELIVERY-ID-PLACEHOLDER-000000000000"

function init(args)
  for line in io.lines(args[1]) do
    local file, signature = string.match(line, "^([^\t]+)\t(.+)$")
    local f = assert(io.open(file, "rb"))
    local body = f:read("*a")
    f:close()
    local headers = {
      ["Content-Type"] = "application/json",
      ["User-Agent"] = "GitHub-Hookshot/bench",
      ["X-GitHub-Event"] = args[2],
      ["X-GitHub-Delivery"] = placeholder,
      ["X-GitHub-Hook-ID"] = "1",
      ["X-Hub-Signature-256"] = signature,
    }
    local request = wrk.format("POST", args[4], headers, body)
    local at = string.find(request, placeholder, 1, true)
    table.insert(templates, { string.sub(request, 1, at - 1), string.sub(request, at + #placeholder) })
  end
  run = tonumber(args[3])
end

function request()
  counter = counter + 1
  -- Threads start at different pull requests so they do not move in lockstep.
  local t = templates[((counter + tid * 7919) % #templates) + 1]
  local id = string.format("%08x-%04x-4000-8000-%012x", run, tid, counter)
  return t[1] .. id .. t[2]
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  elseif status == 503 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local a, r, o = 0, 0, 0
  for _, thread in ipairs(threads) do
    a = a + thread:get("accepted")
    r = r + thread:get("refused")
    o = o + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"accepted":%d,"refused":%d,"other":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, a, r, o,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
