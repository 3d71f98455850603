-- wrk script for bench/run.sh: the trivial-handler baseline (GET of a small static file);
-- done() prints the same "WRKJSON {...}" line as notify.lua. RMS_DELAY_MS: as in notify.lua
-- (mean think time per connection, for the same offered load as the webhook's).
local threads = {}
local think = tonumber(os.getenv("RMS_DELAY_MS") or "0")
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args) math.randomseed(os.time() * 100 + (tid or 0)) end
if think > 0 then
   function delay() return -math.log(1 - math.random()) * think end
end
n200, nother = 0, 0
function response(status, hdrs, body)
   if status == 200 then n200 = n200 + 1 else nother = nother + 1 end
end
function done(summary, latency, requests)
   local a, o = 0, 0
   for _, t in ipairs(threads) do a = a + (t:get("n200") or 0); o = o + (t:get("nother") or 0) end
   io.write(string.format('WRKJSON {"requests":%d,"n202":%d,"nother":%d,"batch":1,'
      .. '"seconds":%.3f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,'
      .. '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
      summary.requests, a, o, summary.duration / 1e6,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000, summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout))
end
