-- wrk script for benches/http_deps_bench.py: `wrk ... -s benches/spread.lua URL -- KIND N`
-- walks N keys in turn (one wrk thread: every key within N requests).
--   db:      GET /db/item/<i>?q=x
--   me:      GET /me with Authorization: Bearer user-<i>
--   me-nodb: GET /me-nodb with the same header
local kind, n, counter = "db", 1000, 0

function init(args)
  kind = args[1] or kind
  n = tonumber(args[2] or n)
end

function request()
  local i = counter % n
  counter = counter + 1
  if kind == "db" then
    return wrk.format("GET", "/db/item/" .. i .. "?q=x")
  end
  return wrk.format("GET", "/" .. kind, { ["Authorization"] = "Bearer user-" .. i })
end
