-- Replaces FG entries of one CSDB value atomically.
-- KEYS[1]: the value. ARGV[1]: now (unix s). Then per FG: id, expires_at (unix s, 0 = never), PSDB.
-- Expired entries are dropped; the key expires when its last entry does (never if one never expires).
local now = tonumber(ARGV[1])
local floor = math.floor
local function u16(s, i) return string.byte(s, i) + string.byte(s, i + 1) * 256 end
local function u32(s, i) return u16(s, i) + u16(s, i + 2) * 65536 end
local function le(n, width)
  local t = {}
  for i = 1, width do t[i] = n % 256; n = floor(n / 256) end
  return string.char(unpack(t))
end
-- A PSDB's expiry from header bytes 2-6: u32 LE of packed >> 8, then packed & 0xFF, where
-- packed = year << 26 | day_of_year << 17 | second_of_day (all zero = never).
local function expiry(block)
  if #block < 9 then return 0 end
  local hi, lo = u32(block, 3), string.byte(block, 7)
  if hi == 0 and lo == 0 then return 0 end
  local packed = hi * 256 + lo
  local year = floor(packed / 67108864)
  local day = floor(packed / 131072) % 512
  local sec = packed % 131072
  local y1 = year - 1
  -- days from 1970-01-01 to January 1st of `year` (477 leap days before 1970)
  local days = 365 * (year - 1970) + floor(y1 / 4) - floor(y1 / 100) + floor(y1 / 400) - 477
  return (days + day) * 86400 + sec
end

local order, blocks, exps = {}, {}, {}
local old = redis.call('GET', KEYS[1])
if old then
  local layout = string.byte(old, 1)
  local lw
  if layout == 1 then lw = 2 elseif layout == 2 then lw = 4
  else return redis.error_reply('OFSCORRUPT CSDB layout ' .. tostring(layout)) end
  local pos, n = 2, #old
  while pos <= n do
    if pos + 1 + lw > n then return redis.error_reply('OFSCORRUPT CSDB entry header truncated') end
    local id = u16(old, pos)
    local len
    if lw == 2 then len = u16(old, pos + 2) else len = u32(old, pos + 2) end
    local s = pos + 2 + lw
    if s + len - 1 > n then return redis.error_reply('OFSCORRUPT CSDB entry truncated') end
    if blocks[id] == nil then order[#order + 1] = id end
    blocks[id] = string.sub(old, s, s + len - 1)
    exps[id] = expiry(blocks[id])
    pos = s + len
  end
end
for i = 2, #ARGV, 3 do
  local id = tonumber(ARGV[i])
  if blocks[id] == nil then order[#order + 1] = id end
  exps[id] = tonumber(ARGV[i + 1])
  blocks[id] = ARGV[i + 2]
end

local live, big, forever, latest = {}, false, false, 0
for _, id in ipairs(order) do
  local e = exps[id]
  if e == 0 or e >= now then
    live[#live + 1] = id
    if #blocks[id] > 65535 then big = true end
    if e == 0 then forever = true elseif e > latest then latest = e end
  end
end
if #live == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local lw = big and 4 or 2
local parts = {string.char(big and 2 or 1)}
for _, id in ipairs(live) do
  parts[#parts + 1] = le(id, 2) .. le(#blocks[id], lw)
  parts[#parts + 1] = blocks[id]
end
redis.call('SET', KEYS[1], table.concat(parts))
if not forever then redis.call('PEXPIREAT', KEYS[1], (latest + 1) * 1000) end
return #live
