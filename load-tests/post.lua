-- wrk script for the POST targets of run.sh (issue 7): every request is a POST of the same
-- body; with a signatures file, each request also carries one pre-generated RFC 9421
-- signature (Content-Digest, Signature-Input, Signature), each used exactly once.
--
--   wrk ... -s post.lua URL -- BODY_FILE [SIGNATURES_PREFIX]
--
-- BODY_FILE: the exact body bytes. SIGNATURES_PREFIX: thread i (0-based) reads
-- PREFIX.i, one signature a line as `portcullis sign --count` prints it (tab-separated
-- `Name: value` fields); run.sh splits the signatures into one file per thread, so no two
-- threads (and no two requests) ever send the same nonce.
--
-- When a thread has used all its signatures it goes on sending the same POST *unsigned*: the
-- gateway answers 401, wrk counts those as "Non-2xx or 3xx responses", and done() prints how
-- many were sent, so a run that ran out is visible and is flagged invalid by run.sh.

local counter = 0
local threads = {}

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   body = read_file(args[1])
   base = { ["Content-Type"] = "application/octet-stream" }
   sigs = {}
   if args[2] ~= nil and args[2] ~= "" then
      for line in io.lines(args[2] .. "." .. id) do
         local h = {}
         for field in string.gmatch(line, "[^\t]+") do
            local name, value = string.match(field, "^([^:]+): (.*)$")
            h[name] = value
         end
         sigs[#sigs + 1] = h
      end
   end
   signed = args[2] ~= nil and args[2] ~= ""
   next_sig = 1
   unsigned = 0
   loaded = #sigs
end

-- (wrk calls thread 0's request() once before the run to inspect the request: that uses up
-- one signature, never sent.)
function request()
   if not signed then
      return wrk.format("POST", nil, base, body)
   end
   local s = sigs[next_sig]
   if s == nil then
      unsigned = unsigned + 1
      return wrk.format("POST", nil, base, body)
   end
   sigs[next_sig] = nil
   next_sig = next_sig + 1
   local h = {
      ["Content-Type"] = "application/octet-stream",
      ["Content-Digest"] = s["Content-Digest"],
      ["Signature-Input"] = s["Signature-Input"],
      ["Signature"] = s["Signature"],
   }
   return wrk.format("POST", nil, h, body)
end

function done(summary, latency, requests)
   local loaded_total, used, unsigned_total = 0, 0, 0
   for _, t in ipairs(threads) do
      loaded_total = loaded_total + (t:get("loaded") or 0)
      used = used + (t:get("next_sig") or 1) - 1
      unsigned_total = unsigned_total + (t:get("unsigned") or 0)
   end
   if loaded_total > 0 then
      io.write(string.format("Signatures: %d loaded, %d used, %d requests sent unsigned (ran out)\n",
         loaded_total, used, unsigned_total))
   end
end
