-- wrk script for bench/run.sh: POST valid Graph change notifications to /rmsync/notify.
-- Every item carries a distinct event id (the queue coalesces repeats of a pending event), the
-- real subscription id and its clientState. Environment: RMS_SUB, RMS_STATE, RMS_TENANT,
-- RMS_BATCH (items per POST), RMS_TAG (makes ids unique across runs), RMS_DELAY_MS (optional:
-- mean think time per connection before each request, exponentially distributed, so that the
-- offered load is about connections * 1000 / RMS_DELAY_MS requests/s instead of saturation).
-- done() prints one line "WRKJSON {...}" with requests, 202s, other statuses, items, latency.
local sub    = os.getenv("RMS_SUB")
local state  = os.getenv("RMS_STATE")
local tenant = os.getenv("RMS_TENANT") or "00000000-0000-0000-0000-000000000000"
local batch  = tonumber(os.getenv("RMS_BATCH") or "1")
local tag    = os.getenv("RMS_TAG") or "r"
local think  = tonumber(os.getenv("RMS_DELAY_MS") or "0")

local threads = {}
local nthreads = 0

function setup(thread)
   nthreads = nthreads + 1
   thread:set("tid", nthreads)
   table.insert(threads, thread)
end

local seq = 0
n202 = 0
nother = 0
local head = ""
local headers = { ["Content-Type"] = "application/json" }

function init(args)
   math.randomseed(os.time() * 100 + tid)
   head = '{"subscriptionId":"' .. sub .. '","subscriptionExpirationDateTime":"2030-01-01T00:00:00.0000000+00:00",'
      .. '"changeType":"updated","clientState":"' .. state .. '","tenantId":"' .. tenant .. '",'
end

local function item()
   seq = seq + 1
   local ev = "AAMkBench" .. tag .. "T" .. tid .. "N" .. seq
   local res = "Users/bench-user/Events/" .. ev
   return head .. '"resource":"' .. res .. '","resourceData":{"@odata.type":"#Microsoft.Graph.Event",'
      .. '"@odata.id":"' .. res .. '","@odata.etag":"W/\\"DwAAABYAAAB\\"","id":"' .. ev .. '"}}'
end

function request()
   local items = {}
   for i = 1, batch do items[i] = item() end
   return wrk.format("POST", nil, headers, '{"value":[' .. table.concat(items, ",") .. ']}')
end

-- Poisson-like arrivals per connection (Graph delivers at its own pace, not in lock-step).
if think > 0 then
   function delay()
      return -math.log(1 - math.random()) * think
   end
end

function response(status, hdrs, body)
   if status == 202 then n202 = n202 + 1 else nother = nother + 1 end
end

function done(summary, latency, requests)
   local a, o = 0, 0
   for _, t in ipairs(threads) do
      a = a + (t:get("n202") or 0)
      o = o + (t:get("nother") or 0)
   end
   io.write(string.format('WRKJSON {"requests":%d,"n202":%d,"nother":%d,"batch":%d,'
      .. '"seconds":%.3f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,'
      .. '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
      summary.requests, a, o, batch, summary.duration / 1e6,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000, summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout))
end
