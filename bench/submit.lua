-- wrk script for the benchmark: POST one job per request.
--
-- Environment (set by bench/loadgen.py):
--   BENCH_BODY      the JSON body of every request
--   BENCH_REQUESTS  total requests; each thread stops after its share (0: run for -d)
--   BENCH_THREADS   the -t given to wrk, to split BENCH_REQUESTS between threads
--   BENCH_IDS       optional file: the "id" of every 2xx answer, one per line
--   BENCH_CLOSE     "1": send "Connection: close", a new connection per request
-- Each thread prints "BENCH_THREAD_DONE" when it has sent its share; at the end
-- the script prints "BENCH_LATENCY_US <us>:<count>,..." (the latency histogram)
-- and "BENCH_STATUS <code>=<count> ..." for every status seen.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"type": "diagnostics.echo", "payload": {}}'
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end

local total = tonumber(os.getenv("BENCH_REQUESTS") or "0")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local id_file = os.getenv("BENCH_IDS")
local threads = {}
local PARK_MS = 2000

function setup(thread)
  local index = #threads
  table.insert(threads, thread)
  local share = math.floor(total / nthreads)
  if index < total % nthreads then
    share = share + 1
  end
  thread:set("limit", share)
  thread:set("collect", id_file ~= nil and id_file ~= "")
end

function init(args)
  seen = 0
  sent = 0
  ids = {}
  statuses = {}
end

function delay()
  -- Called before each request a connection sends: once a thread has sent its
  -- share, its other connections wait instead of sending more (the answers in
  -- flight still arrive), so the server gets N requests, not N plus one per
  -- connection. After PARK_MS a parked connection sends anyway, so a request
  -- lost to a socket error cannot stall the run for all of -d.
  sent = sent + 1
  if limit > 0 and sent > limit then
    return PARK_MS
  end
  return 0
end

function response(status, headers, body)
  seen = seen + 1
  statuses[status] = (statuses[status] or 0) + 1
  if collect and status >= 200 and status < 300 then
    local id = string.match(body, '"id"%s*:%s*"([^"]+)"')
    if id then
      ids[#ids + 1] = id
    end
  end
  if limit > 0 and seen == limit then
    -- wrk's main thread sleeps for all of -d whatever its threads do; this
    -- line tells bench/loadgen.py to end the run now (SIGINT) instead.
    io.write("BENCH_THREAD_DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  -- The whole latency histogram (microseconds:count), so that several runs
  -- can be merged into exact percentiles.
  local buckets = {}
  for i = 1, #latency do
    local value, count = latency(i)
    buckets[#buckets + 1] = string.format("%d:%d", value, count)
  end
  io.write("BENCH_LATENCY_US ", table.concat(buckets, ","), "\n")
  local counts = {}
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses")) do
      counts[code] = (counts[code] or 0) + n
    end
  end
  io.write("BENCH_STATUS")
  for code, n in pairs(counts) do
    io.write(" ", code, "=", n)
  end
  io.write("\n")
  if id_file ~= nil and id_file ~= "" then
    local out = assert(io.open(id_file, "w"))
    for _, thread in ipairs(threads) do
      for _, id in ipairs(thread:get("ids")) do
        out:write(id, "\n")
      end
    end
    out:close()
  end
end
