-- wrk script for the echo app: POST a 64 KiB body (BENCH_POST_BYTES overrides the size).

local size = tonumber(os.getenv("BENCH_POST_BYTES") or "") or 65536
wrk.method = "POST"
wrk.body = string.rep("a", size)
wrk.headers["Content-Type"] = "application/octet-stream"

-- Report like the GET runs (report.lua lives beside this file).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
