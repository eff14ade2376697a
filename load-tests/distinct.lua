-- wrk script: every request to a path of its own (the target's path, then "/<n>"), so that no
-- decision of the gateway can be remembered from an earlier request (run.sh's *-distinct
-- policy targets). Headers given with -H (the token) are sent as usual.
local n = 0
local base

init = function(args)
    base = wrk.path
    -- Threads count from different starts, so no two send the same path.
    n = math.random(1, 1000000000)
end

request = function()
    n = n + 1
    return wrk.format(nil, base .. "/" .. n)
end
