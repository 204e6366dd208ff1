-- wrk script: cycles through the narinfo paths listed (one per line) in the file given after `--`,
-- and prints a machine-readable summary line for bench/run.mjs. The requests are formatted once,
-- in init(), so the client spends per request no more than a table lookup on choosing one.
local requests = {}
local i = 0
local threads = 0

function setup(thread)
  thread:set("offset", threads * 397)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then requests[#requests + 1] = wrk.format("GET", line) end
  end
  if #requests == 0 then error("no paths in " .. tostring(args[1])) end
  -- Threads start at different offsets, so they do not ask for the same path at the same time.
  i = (offset or 0) % #requests
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
