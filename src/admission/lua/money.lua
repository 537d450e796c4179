-- Exact money in Lua, whose numbers are doubles: a pico-USD amount (a decimal string,
-- as Redis stores it) is split into {whole dollars, pico remainder}, each exact.
local E = 1e12
local function big(s)
  s = tostring(s or '0')
  if string.sub(s, 1, 1) == '-' then return {0, 0} end
  local n = #s
  if n <= 12 then return {0, tonumber(s) or 0} end
  return {tonumber(string.sub(s, 1, n - 12)), tonumber(string.sub(s, n - 11))}
end
local function add(a, b)
  local h, l = a[1] + b[1], a[2] + b[2]
  if l >= E then h, l = h + 1, l - E end
  return {h, l}
end
local function gt(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2]) end
local function ge(a, b) return not gt(b, a) end
