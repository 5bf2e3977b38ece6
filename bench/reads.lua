-- wrk script: GET /fhir/Patient/{id} over random ids read from ids.txt (one per line), with the token in WARD_TOKEN if set.
-- WARD_PATH changes the request: a path with %s where the id goes (for example /fhir/Observation?patient=%s&_count=20).
local ids = {}
for line in io.lines(os.getenv("WARD_IDS") or "ids.txt") do ids[#ids + 1] = line end
math.randomseed(42)
local token = os.getenv("WARD_TOKEN")
if token and #token > 0 then wrk.headers["Authorization"] = "Bearer " .. token end
local path = os.getenv("WARD_PATH") or "/fhir/Patient/%s"
request = function()
  return wrk.format("GET", string.format(path, ids[math.random(#ids)]))
end
