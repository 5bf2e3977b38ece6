-- wrk script: GET /fhir/Patient/{id} over random ids read from ids.txt (one per line).
local ids = {}
for line in io.lines(os.getenv("WARD_IDS") or "ids.txt") do ids[#ids + 1] = line end
math.randomseed(42)
request = function()
  return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)])
end
