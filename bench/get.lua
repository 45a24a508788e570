-- wrk script for the benchmark: GET <prefix><id>, cycling through existing ids.
--
-- Environment (set by bench/loadgen.py):
--   BENCH_IDS_IN    file of ids, one per line (each thread starts at its own offset)
--   BENCH_PREFIX    the path before the id (default "/jobs/")
--   BENCH_REQUESTS  total requests; each thread stops after its share (0: run for -d)
--   BENCH_THREADS   the -t given to wrk, to split BENCH_REQUESTS between threads
-- Prints what submit.lua prints: "BENCH_THREAD_DONE" per thread once it sent its
-- share, then "BENCH_LATENCY_US <us>:<count>,..." and "BENCH_STATUS <code>=<count> ...".

local total = tonumber(os.getenv("BENCH_REQUESTS") or "0")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local prefix = os.getenv("BENCH_PREFIX") or "/jobs/"
local ids_path = os.getenv("BENCH_IDS_IN")
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
  thread:set("offset", index)
end

function init(args)
  seen = 0
  sent = 0
  statuses = {}
  paths = {}
  for line in io.lines(ids_path) do
    if line ~= "" then
      paths[#paths + 1] = prefix .. line
    end
  end
  position = offset
end

function request()
  -- Thread k of n asks for ids k, k + n, k + 2n, ...: with as many requests as
  -- ids, every id is read once.
  position = position % #paths + 1
  local path = paths[position]
  position = position + nthreads - 1
  return wrk.format("GET", path)
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
  if limit > 0 and seen == limit then
    io.write("BENCH_THREAD_DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
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
end
