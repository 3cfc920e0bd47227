-- hancock.promql: the part of PromQL that alert rules and the status page use, parsed and
-- evaluated with Prometheus 2.x's semantics, so that the host decides an alert as a Prometheus
-- would on the same samples. It owns the parser, the evaluator and the RE2-style regular
-- expressions of =~ and !~; it knows nothing of where samples come from: eval reads them
-- through a storage with select(name) -> streams, each { labels = {__name__ = …}, t = {ms…},
-- v = {…}, stale = {[i] = true} or nil }, t ascending. A storage with `sorted = true` hands
-- streams over in labels order already (M.sort_streams); others are sorted at each select.
--
-- Supported: selectors with = != =~ !~, range selectors, + - * / % ^, comparisons (with bool),
-- and / or / unless with on / ignoring, sum min max avg count group (by / without), rate
-- increase delta irate deriv absent histogram_quantile abs ceil floor round sqrt clamp_min
-- clamp_max time vector scalar, and the *_over_time family. Anything else (offset, subqueries,
-- group_left) is a parse error that names it, never a silently different answer.

local M = {}

local LOOKBACK_MS = 5 * 60 * 1000 -- Prometheus' default --query.lookback-delta

-- ---- regular expressions (RE2 syntax, fully anchored, as PromQL's =~) -------------------------

local re_parse_alt

local CLASS_ESCAPES = {
  d = function(c) return c:match("%d") ~= nil end,
  D = function(c) return c:match("%d") == nil end,
  w = function(c) return c:match("[%w_]") ~= nil end,
  W = function(c) return c:match("[%w_]") == nil end,
  s = function(c) return c:match("[ \t\n\r\f\v]") ~= nil end,
  S = function(c) return c:match("[ \t\n\r\f\v]") == nil end,
}

local function re_error(pattern, message)
  error(("invalid regular expression %q: %s"):format(pattern, message), 0)
end

-- A node matches one character (fn) or is a sequence/alternation/repeat of nodes.
local function re_parse_class(p)
  local items, negate = {}, false
  if p.s:sub(p.i, p.i) == "^" then
    negate = true
    p.i = p.i + 1
  end
  local first = true
  while true do
    local c = p.s:sub(p.i, p.i)
    if c == "" then re_error(p.s, "missing ]") end
    if c == "]" and not first then
      p.i = p.i + 1
      break
    end
    first = false
    if c == "\\" then
      local e = p.s:sub(p.i + 1, p.i + 1)
      p.i = p.i + 2
      if CLASS_ESCAPES[e] then
        items[#items + 1] = CLASS_ESCAPES[e]
      else
        items[#items + 1] = { e, e }
      end
    else
      p.i = p.i + 1
      if p.s:sub(p.i, p.i) == "-" and p.s:sub(p.i + 1, p.i + 1) ~= "]" and p.s:sub(p.i + 1, p.i + 1) ~= "" then
        local hi = p.s:sub(p.i + 1, p.i + 1)
        if hi == "\\" then
          hi = p.s:sub(p.i + 2, p.i + 2)
          p.i = p.i + 1
        end
        items[#items + 1] = { c, hi }
        p.i = p.i + 2
      else
        items[#items + 1] = { c, c }
      end
    end
  end
  return { kind = "char", fn = function(ch)
    local hit = false
    for _, item in ipairs(items) do
      if type(item) == "function" then
        hit = item(ch)
      else
        hit = ch >= item[1] and ch <= item[2]
      end
      if hit then break end
    end
    return hit ~= negate
  end }
end

local function re_parse_atom(p)
  local c = p.s:sub(p.i, p.i)
  if c == "(" then
    p.i = p.i + 1
    if p.s:sub(p.i, p.i + 1) == "?:" then
      p.i = p.i + 2
    elseif p.s:sub(p.i, p.i) == "?" then
      re_error(p.s, "flags and named groups are not supported")
    end
    local node = re_parse_alt(p)
    if p.s:sub(p.i, p.i) ~= ")" then re_error(p.s, "missing )") end
    p.i = p.i + 1
    return node
  elseif c == "[" then
    p.i = p.i + 1
    return re_parse_class(p)
  elseif c == "." then
    p.i = p.i + 1
    return { kind = "char", fn = function(ch) return ch ~= "\n" end }
  elseif c == "\\" then
    local e = p.s:sub(p.i + 1, p.i + 1)
    if e == "" then re_error(p.s, "trailing backslash") end
    p.i = p.i + 2
    if CLASS_ESCAPES[e] then
      return { kind = "char", fn = CLASS_ESCAPES[e] }
    end
    local literal = ({ n = "\n", t = "\t", r = "\r", f = "\f", v = "\v" })[e] or e
    if e:match("%w") and literal == e then
      re_error(p.s, "escape \\" .. e .. " is not supported")
    end
    return { kind = "char", fn = function(ch) return ch == literal end }
  elseif c == "^" or c == "$" then
    p.i = p.i + 1
    return { kind = "anchor", at = c }
  elseif c == "*" or c == "+" or c == "?" then
    re_error(p.s, "missing argument to repetition operator " .. c)
  end
  p.i = p.i + 1
  return { kind = "char", fn = function(ch) return ch == c end }
end

local function re_parse_repeat(p)
  local node = re_parse_atom(p)
  while true do
    local c = p.s:sub(p.i, p.i)
    local min, max
    if c == "*" then
      min, max = 0, math.huge
    elseif c == "+" then
      min, max = 1, math.huge
    elseif c == "?" then
      min, max = 0, 1
    elseif c == "{" then
      local a, b, close = p.s:match("^{(%d*)(,?%d*)}()", p.i)
      if a == nil or a == "" then
        return node -- RE2 takes a { that is not a repetition literally
      end
      min = tonumber(a)
      if b == "" then
        max = min
      elseif b == "," then
        max = math.huge
      else
        max = tonumber(b:sub(2))
      end
      p.i = close - 1
    else
      return node
    end
    p.i = p.i + 1
    if p.s:sub(p.i, p.i) == "?" then p.i = p.i + 1 end -- lazy: same set of full matches
    node = { kind = "repeat", node = node, min = min, max = max }
  end
end

local function re_parse_seq(p)
  local items = {}
  while p.i <= #p.s do
    local c = p.s:sub(p.i, p.i)
    if c == "|" or c == ")" then break end
    items[#items + 1] = re_parse_repeat(p)
  end
  return { kind = "seq", items = items }
end

function re_parse_alt(p)
  local alternatives = { re_parse_seq(p) }
  while p.s:sub(p.i, p.i) == "|" do
    p.i = p.i + 1
    alternatives[#alternatives + 1] = re_parse_seq(p)
  end
  if #alternatives == 1 then return alternatives[1] end
  return { kind = "alt", items = alternatives }
end

-- Matching by continuations: m(node, s, i, k) calls k(j) for every position j the node can end
-- at, stopping at the first k that returns true. Label values are short; depth is bounded by
-- the value's length.
local match_node

local function match_seq(items, index, s, i, k)
  if index > #items then return k(i) end
  return match_node(items[index], s, i, function(j) return match_seq(items, index + 1, s, j, k) end)
end

function match_node(node, s, i, k)
  local kind = node.kind
  if kind == "char" then
    if i <= #s and node.fn(s:sub(i, i)) then return k(i + 1) end
    return false
  elseif kind == "seq" then
    return match_seq(node.items, 1, s, i, k)
  elseif kind == "alt" then
    for _, item in ipairs(node.items) do
      if match_node(item, s, i, k) then return true end
    end
    return false
  elseif kind == "anchor" then
    if (node.at == "^" and i == 1) or (node.at == "$" and i == #s + 1) then return k(i) end
    return false
  end
  -- repeat: greedy, and an iteration that consumes nothing ends the loop
  local function step(count, at)
    if count < node.max and match_node(node.node, s, at, function(j)
      return j > at and step(count + 1, j)
    end) then
      return true
    end
    return count >= node.min and k(at)
  end
  return step(0, i)
end

local regex_cache = setmetatable({}, { __mode = "k" })
local regex_count = 0

--- A function(value) -> boolean for the RE2 pattern, anchored at both ends as PromQL's are.
function M.regex(pattern)
  local cached = regex_cache[pattern]
  if cached then return cached end
  local p = { s = pattern, i = 1 }
  local tree = re_parse_alt(p)
  if p.i <= #pattern then re_error(pattern, "unexpected )") end
  local fn = function(value)
    return match_node(tree, value, 1, function(j) return j == #value + 1 end)
  end
  if regex_count < 256 then
    regex_cache[pattern] = fn
    regex_count = regex_count + 1
  end
  return fn
end

-- ---- lexer ------------------------------------------------------------------------------------

local UNITS = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000, w = 604800000, y = 31536000000 }

--- Milliseconds of a Prometheus duration ("5m", "1h30m", "250ms"), or nil.
function M.duration_ms(text)
  if type(text) ~= "string" or text == "" then return nil end
  local total, rest = 0, text
  while rest ~= "" do
    local n, unit, after = rest:match("^(%d+)(ms)()")
    if not n then n, unit, after = rest:match("^(%d+)([smhdwy])()") end
    if not n then return nil end
    total = total + tonumber(n) * UNITS[unit]
    rest = rest:sub(after)
  end
  return total
end

local OPERATORS = { "==", "!=", "=~", "!~", ">=", "<=", ">", "<", "=", "+", "-", "*", "/", "%", "^",
                    "(", ")", "{", "}", "[", "]", ",", ":", "@" }

local STRING_ESCAPES = { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ['"'] = '"', ["'"] = "'",
                         a = "\a", b = "\b", f = "\f", v = "\v" }

local function lex(text)
  local tokens, i = {}, 1
  local function add(kind, value, at)
    tokens[#tokens + 1] = { kind = kind, value = value, pos = at }
  end
  while i <= #text do
    local c = text:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c == "#" then
      i = (text:find("\n", i, true) or #text) + 1
    elseif c == '"' or c == "'" or c == "`" then
      local start, out = i, {}
      i = i + 1
      while true do
        local ch = text:sub(i, i)
        if ch == "" then error(("unterminated string at %d"):format(start), 0) end
        if ch == c then break end
        if ch == "\\" and c ~= "`" then
          local e = text:sub(i + 1, i + 1)
          if not STRING_ESCAPES[e] then error(("unknown escape \\%s at %d"):format(e, i), 0) end
          out[#out + 1] = STRING_ESCAPES[e]
          i = i + 2
        else
          out[#out + 1] = ch
          i = i + 1
        end
      end
      add("string", table.concat(out), start)
      i = i + 1
    elseif c:match("[%d%.]") then
      local duration = text:match("^%d+[%a][%w]*", i)
      if duration and M.duration_ms(duration) then
        add("duration", M.duration_ms(duration), i)
        i = i + #duration
      else
        local number = text:match("^0[xX]%x+", i) or text:match("^%d*%.?%d+[eE][-+]?%d+", i)
          or text:match("^%d+%.?%d*", i) or text:match("^%.%d+", i)
        if not number then error(("unexpected character %q at %d"):format(c, i), 0) end
        add("number", tonumber(number), i)
        i = i + #number
      end
    elseif c:match("[%a_:]") then
      local word = text:match("^[%w_:]+", i)
      add("ident", word, i)
      i = i + #word
    else
      local matched
      for _, op in ipairs(OPERATORS) do
        if text:sub(i, i + #op - 1) == op then
          matched = op
          break
        end
      end
      if not matched then error(("unexpected character %q at %d"):format(c, i), 0) end
      add("op", matched, i)
      i = i + #matched
    end
  end
  add("eof", nil, #text + 1)
  return tokens
end

-- ---- parser -----------------------------------------------------------------------------------

local AGGREGATIONS = { sum = true, min = true, max = true, avg = true, count = true, group = true }
local UNSUPPORTED_AGGREGATIONS = { stddev = true, stdvar = true, topk = true, bottomk = true,
                                   quantile = true, count_values = true }

local BINARY = { ["or"] = 1, ["and"] = 2, ["unless"] = 2, ["=="] = 3, ["!="] = 3, ["<="] = 3,
                 ["<"] = 3, [">="] = 3, [">"] = 3, ["+"] = 4, ["-"] = 4, ["*"] = 5, ["/"] = 5,
                 ["%"] = 5, ["atan2"] = 5, ["^"] = 6 }
local COMPARISON = { ["=="] = true, ["!="] = true, ["<="] = true, ["<"] = true, [">="] = true, [">"] = true }
local SET = { ["and"] = true, ["or"] = true, ["unless"] = true }

local FUNCTIONS = {
  rate = { "matrix" }, increase = { "matrix" }, delta = { "matrix" }, irate = { "matrix" },
  deriv = { "matrix" }, absent = { "vector" }, histogram_quantile = { "scalar", "vector" },
  abs = { "vector" }, ceil = { "vector" }, floor = { "vector" }, round = { "vector", "scalar", optional = 1 },
  sqrt = { "vector" }, clamp_min = { "vector", "scalar" }, clamp_max = { "vector", "scalar" },
  time = {}, vector = { "scalar" }, scalar = { "vector" },
  avg_over_time = { "matrix" }, min_over_time = { "matrix" }, max_over_time = { "matrix" },
  sum_over_time = { "matrix" }, count_over_time = { "matrix" }, last_over_time = { "matrix" },
}

local Parser = {}
Parser.__index = Parser

function Parser:peek() return self.tokens[self.i] end

function Parser:next()
  local token = self.tokens[self.i]
  self.i = self.i + 1
  return token
end

function Parser:fail(message, token)
  token = token or self:peek()
  error(("%s at position %d of %q"):format(message, token.pos, self.text), 0)
end

function Parser:expect(value)
  local token = self:next()
  if token.kind ~= "op" or token.value ~= value then
    self:fail(("expected %q"):format(value), token)
  end
  return token
end

function Parser:is(value)
  local token = self:peek()
  return token.kind == "op" and token.value == value
end

function Parser:label_list()
  self:expect("(")
  local labels = {}
  while not self:is(")") do
    local token = self:next()
    if token.kind ~= "ident" then self:fail("expected a label name", token) end
    labels[#labels + 1] = token.value
    if not self:is(")") then self:expect(",") end
  end
  self:expect(")")
  return labels
end

function Parser:matchers()
  self:expect("{")
  local matchers = {}
  while not self:is("}") do
    local name = self:next()
    if name.kind ~= "ident" then self:fail("expected a label name", name) end
    local op = self:next()
    if op.kind ~= "op" or not (op.value == "=" or op.value == "!=" or op.value == "=~" or op.value == "!~") then
      self:fail("expected =, !=, =~ or !~", op)
    end
    local value = self:next()
    if value.kind ~= "string" then self:fail("expected a quoted label value", value) end
    local matcher = { name = name.value, op = op.value, value = value.value }
    if op.value == "=~" or op.value == "!~" then
      local ok, fn = pcall(M.regex, value.value)
      if not ok then self:fail(fn, value) end
      matcher.regex = fn
    end
    matchers[#matchers + 1] = matcher
    if not self:is("}") then self:expect(",") end
  end
  self:expect("}")
  return matchers
end

function Parser:postfix(node)
  if self:is("[") then
    local open = self:next()
    if node.kind ~= "selector" then self:fail("a range needs a metric selector before it", open) end
    local duration = self:next()
    if duration.kind ~= "duration" then self:fail("expected a duration such as 5m", duration) end
    if self:is(":") then self:fail("subqueries are not supported") end
    self:expect("]")
    node = { kind = "matrix", selector = node, range_ms = duration.value }
  end
  local token = self:peek()
  if token.kind == "ident" and token.value == "offset" then self:fail("offset is not supported") end
  if self:is("@") then self:fail("the @ modifier is not supported") end
  return node
end

function Parser:primary()
  local token = self:next()
  if token.kind == "number" then
    return { kind = "number", value = token.value }
  elseif token.kind == "string" then
    return { kind = "string", value = token.value }
  elseif token.kind == "op" and token.value == "(" then
    local inner = self:expr(1)
    self:expect(")")
    return self:postfix({ kind = "paren", expr = inner })
  elseif token.kind == "op" and token.value == "{" then
    self.i = self.i - 1
    return self:postfix({ kind = "selector", matchers = self:matchers() })
  elseif token.kind == "ident" then
    local word = token.value
    if word == "Inf" or word == "inf" or word == "NaN" or word == "nan" then
      return { kind = "number", value = (word:lower() == "inf") and math.huge or (0 / 0) }
    end
    if UNSUPPORTED_AGGREGATIONS[word] then self:fail(word .. " is not supported", token) end
    if AGGREGATIONS[word] and (self:is("(") or (self:peek().kind == "ident"
        and (self:peek().value == "by" or self:peek().value == "without"))) then
      local node = { kind = "aggregate", op = word }
      local function grouping()
        local modifier = self:peek()
        if modifier.kind == "ident" and (modifier.value == "by" or modifier.value == "without") then
          self:next()
          node.grouping = modifier.value
          node.labels = self:label_list()
        end
      end
      grouping()
      self:expect("(")
      node.expr = self:expr(1)
      self:expect(")")
      if node.grouping == nil then grouping() end
      return node
    end
    if self:is("(") then
      local signature = FUNCTIONS[word]
      if signature == nil then self:fail(("function %s is not supported"):format(word), token) end
      self:next()
      local args = {}
      while not self:is(")") do
        args[#args + 1] = self:expr(1)
        if not self:is(")") then self:expect(",") end
      end
      self:expect(")")
      local least = #signature - (signature.optional or 0)
      if #args < least or #args > #signature then
        local count = least == #signature and tostring(least) or ("%d to %d"):format(least, #signature)
        self:fail(("%s takes %s argument(s), got %d"):format(word, count, #args), token)
      end
      return { kind = "call", name = word, args = args }
    end
    if BINARY[word] or word == "by" or word == "without" or word == "on" or word == "ignoring" then
      self:fail(("unexpected %q"):format(word), token)
    end
    local node = { kind = "selector", name = word, matchers = {} }
    if self:is("{") then node.matchers = self:matchers() end
    return self:postfix(node)
  end
  self:fail(token.kind == "eof" and "unexpected end of expression"
    or ("unexpected %q"):format(tostring(token.value)), token)
end

function Parser:unary()
  if self:is("-") or self:is("+") then
    local op = self:next().value
    local operand = self:expr(BINARY["^"])
    if op == "+" then return operand end
    return { kind = "unary", expr = operand }
  end
  return self:primary()
end

function Parser:expr(min_prec)
  local lhs = self:unary()
  while true do
    local token = self:peek()
    local op = (token.kind == "op" or token.kind == "ident") and token.value or nil
    local prec = op and BINARY[op]
    if not prec or prec < min_prec then return lhs end
    self:next()
    local node = { kind = "binary", op = op, lhs = lhs }
    local modifier = self:peek()
    if modifier.kind == "ident" and modifier.value == "bool" then
      if not COMPARISON[op] then self:fail("bool is only for comparisons", modifier) end
      self:next()
      node.bool = true
      modifier = self:peek()
    end
    if modifier.kind == "ident" and (modifier.value == "on" or modifier.value == "ignoring") then
      self:next()
      node.matching = modifier.value
      node.labels = self:label_list()
      modifier = self:peek()
    end
    if modifier.kind == "ident" and (modifier.value == "group_left" or modifier.value == "group_right") then
      self:fail(modifier.value .. " is not supported", modifier)
    end
    node.rhs = self:expr(op == "^" and prec or prec + 1)
    lhs = node
  end
end

--- The expression's tree, or nil and a message naming what is wrong and where.
function M.parse(text)
  if type(text) ~= "string" then return nil, "the expression must be a string" end
  local ok, tokens = pcall(lex, text)
  if not ok then return nil, tokens end
  local parser = setmetatable({ tokens = tokens, i = 1, text = text }, Parser)
  local ok2, tree = pcall(function()
    local node = parser:expr(1)
    if parser:peek().kind ~= "eof" then parser:fail(("unexpected %q"):format(tostring(parser:peek().value))) end
    return node
  end)
  if not ok2 then return nil, tree end
  return tree
end

--- Every metric name the expression selects, and the longest range it reads (ms).
function M.names(tree)
  local names, seen, longest = {}, {}, 0
  local function walk(node)
    if type(node) ~= "table" then return end
    if node.kind == "selector" and node.name and not seen[node.name] then
      seen[node.name] = true
      names[#names + 1] = node.name
    end
    if node.kind == "matrix" and node.range_ms > longest then longest = node.range_ms end
    for key, child in pairs(node) do
      if key ~= "matchers" and type(child) == "table" then walk(child) end
    end
  end
  walk(tree)
  table.sort(names)
  return names, longest
end

-- ---- evaluation -------------------------------------------------------------------------------

local function eval_error(message) error(message, 0) end

local function copy_without(labels, drop)
  local out = {}
  for k, v in pairs(labels) do
    if not drop[k] then out[k] = v end
  end
  return out
end

local NAME_ONLY = { __name__ = true }

local function drop_name(labels) return copy_without(labels, NAME_ONLY) end

local function set_of(list)
  local set = {}
  for _, v in ipairs(list or {}) do set[v] = true end
  return set
end

--- A stable key for a label set (every label, sorted).
function M.label_key(labels)
  local keys = {}
  for k in pairs(labels) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = k .. "\0" .. labels[k]
  end
  return table.concat(parts, "\1")
end
local label_key = M.label_key

local function matches(labels, matchers)
  for _, m in ipairs(matchers) do
    local value = labels[m.name] or ""
    local op = m.op
    if op == "=" then
      if value ~= m.value then return false end
    elseif op == "!=" then
      if value == m.value then return false end
    elseif op == "=~" then
      if not m.regex(value) then return false end
    elseif m.regex(value) then
      return false
    end
  end
  return true
end

local function streams_of(node, ctx)
  if node.name == nil then
    for _, m in ipairs(node.matchers) do
      if m.name == "__name__" and m.op == "=" then
        return ctx.select(m.value)
      end
    end
    eval_error("a selector needs a metric name")
  end
  return ctx.select(node.name)
end

-- The index of the last sample at or before t (binary search), or nil.
local function last_at_or_before(times, t)
  local lo, hi, found = 1, #times, nil
  while lo <= hi do
    local mid = (lo + hi) // 2
    if times[mid] <= t then
      found = mid
      lo = mid + 1
    else
      hi = mid - 1
    end
  end
  return found
end

local function select_vector(node, ctx)
  local out = {}
  for _, stream in ipairs(streams_of(node, ctx)) do
    if matches(stream.labels, node.matchers) then
      local i = last_at_or_before(stream.t, ctx.t)
      if i and stream.t[i] >= ctx.t - LOOKBACK_MS and not (stream.stale and stream.stale[i]) then
        out[#out + 1] = { labels = stream.labels, v = stream.v[i] }
      end
    end
  end
  return { type = "vector", samples = out }
end

local function select_matrix(node, ctx)
  local out = {}
  local from = ctx.t - node.range_ms
  for _, stream in ipairs(streams_of(node.selector, ctx)) do
    if matches(stream.labels, node.selector.matchers) then
      local t, v = {}, {}
      local last = last_at_or_before(stream.t, ctx.t)
      if last then
        local first = last + 1
        while first > 1 and stream.t[first - 1] >= from do first = first - 1 end
        for i = first, last do
          if not (stream.stale and stream.stale[i]) then
            t[#t + 1] = stream.t[i]
            v[#v + 1] = stream.v[i]
          end
        end
      end
      if #t > 0 then
        out[#out + 1] = { labels = stream.labels, t = t, v = v }
      end
    end
  end
  return { type = "matrix", series = out, range_ms = node.range_ms }
end

-- Prometheus' extrapolatedRate: rate, increase and delta.
local function extrapolated(series, ctx, range_ms, is_counter, is_rate)
  local t, v = series.t, series.v
  local n = #t
  if n < 2 then return nil end
  local range_start, range_end = ctx.t - range_ms, ctx.t
  local result = v[n] - v[1]
  if is_counter then
    local last = 0
    for i = 1, n do
      if v[i] < last then result = result + last end
      last = v[i]
    end
  end
  local to_start = (t[1] - range_start) / 1000
  local to_end = (range_end - t[n]) / 1000
  local sampled = (t[n] - t[1]) / 1000
  local average = sampled / (n - 1)
  if is_counter and result > 0 and v[1] >= 0 then
    local to_zero = sampled * (v[1] / result)
    if to_zero < to_start then to_start = to_zero end
  end
  local threshold = average * 1.1
  local interval = sampled
  interval = interval + (to_start < threshold and to_start or average / 2)
  interval = interval + (to_end < threshold and to_end or average / 2)
  -- In Prometheus' order (a factor, divided by the range for a rate, then applied): the same
  -- operations in another order differ in the last bit.
  local factor = interval / sampled
  if is_rate then factor = factor / (range_ms / 1000) end
  return result * factor
end

local function regression_slope(series)
  local t, v = series.t, series.v
  local n = #t
  if n < 2 then return nil end
  local constant = true
  for i = 2, n do
    if v[i] ~= v[1] then
      constant = false
      break
    end
  end
  if constant then return 0 end
  local sum_x, sum_y, sum_xy, sum_x2 = 0, 0, 0, 0
  for i = 1, n do
    local x = (t[i] - t[1]) / 1000
    sum_x, sum_y = sum_x + x, sum_y + v[i]
    sum_xy, sum_x2 = sum_xy + x * v[i], sum_x2 + x * x
  end
  local cov = sum_xy - sum_x * sum_y / n
  local var = sum_x2 - sum_x * sum_x / n
  return cov / var
end

local OVER_TIME = {
  avg_over_time = function(v)
    local sum = 0
    for _, x in ipairs(v) do sum = sum + x end
    return sum / #v
  end,
  min_over_time = function(v)
    local m = v[1]
    for _, x in ipairs(v) do if x < m or m ~= m then m = x end end
    return m
  end,
  max_over_time = function(v)
    local m = v[1]
    for _, x in ipairs(v) do if x > m or m ~= m then m = x end end
    return m
  end,
  sum_over_time = function(v)
    local sum = 0
    for _, x in ipairs(v) do sum = sum + x end
    return sum
  end,
  count_over_time = function(v) return #v end,
  last_over_time = function(v) return v[#v] end,
}

local SIMPLE = {
  abs = math.abs,
  ceil = function(x) return x ~= x and x or math.ceil(x) + 0.0 end,
  floor = function(x) return x ~= x and x or math.floor(x) + 0.0 end,
  round = function(x) return x ~= x and x or math.floor(x + 0.5) + 0.0 end,
  sqrt = math.sqrt,
}

-- Prometheus' bucketQuantile over buckets { {upper, count}, ... }.
local function bucket_quantile(q, buckets)
  if q ~= q then return 0 / 0 end
  if q < 0 then return -math.huge end
  if q > 1 then return math.huge end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  local n = #buckets
  if n == 0 or buckets[n][1] ~= math.huge then return 0 / 0 end
  for i = 2, n do -- ensure monotonic, as Prometheus does for scrapes that raced
    if buckets[i][2] < buckets[i - 1][2] then buckets[i][2] = buckets[i - 1][2] end
  end
  if n < 2 then return 0 / 0 end
  local observations = buckets[n][2]
  if observations == 0 then return 0 / 0 end
  local rank = q * observations
  local b = n
  for i = 1, n do
    if buckets[i][2] >= rank then
      b = i
      break
    end
  end
  if b == n then return buckets[n - 1][1] end
  if b == 1 and buckets[1][1] <= 0 then return buckets[1][1] end
  local start, finish, count = 0, buckets[b][1], buckets[b][2]
  if b > 1 then
    start = buckets[b - 1][1]
    count = count - buckets[b - 1][2]
    rank = rank - buckets[b - 1][2]
  end
  return start + (finish - start) * (rank / count)
end

local evaluate

local function call(node, ctx)
  local name, args = node.name, node.args
  if name == "time" then
    return { type = "scalar", v = ctx.t / 1000 }
  elseif name == "vector" then
    local s = evaluate(args[1], ctx)
    if s.type ~= "scalar" then eval_error("vector() takes a scalar") end
    return { type = "vector", samples = { { labels = {}, v = s.v } } }
  end
  local values = {}
  for i, arg in ipairs(args) do
    values[i] = evaluate(arg, ctx)
    local want = FUNCTIONS[name][i]
    if values[i].type ~= want then
      eval_error(("%s: argument %d must be a %s, got a %s"):format(name, i, want, values[i].type))
    end
  end
  local out = {}
  if name == "rate" or name == "increase" or name == "delta" or name == "irate" or name == "deriv"
      or OVER_TIME[name] then
    local m = values[1]
    for _, series in ipairs(m.series) do
      local v
      if name == "rate" then
        v = extrapolated(series, ctx, m.range_ms, true, true)
      elseif name == "increase" then
        v = extrapolated(series, ctx, m.range_ms, true, false)
      elseif name == "delta" then
        v = extrapolated(series, ctx, m.range_ms, false, false)
      elseif name == "irate" then
        local n = #series.t
        if n >= 2 then
          local last, previous = series.v[n], series.v[n - 1]
          local diff = last < previous and last or last - previous
          v = diff / ((series.t[n] - series.t[n - 1]) / 1000)
        end
      elseif name == "deriv" then
        v = regression_slope(series)
      else
        v = OVER_TIME[name](series.v)
      end
      if v ~= nil then
        out[#out + 1] = { labels = name == "last_over_time" and series.labels or drop_name(series.labels), v = v }
      end
    end
    return { type = "vector", samples = out }
  elseif name == "absent" then
    if #values[1].samples > 0 then return { type = "vector", samples = {} } end
    local labels = {}
    local arg = args[1]
    if arg.kind == "selector" then
      local seen = {}
      for _, m in ipairs(arg.matchers) do
        if m.op == "=" and m.name ~= "__name__" then
          if seen[m.name] then labels[m.name] = nil else labels[m.name] = m.value end
          seen[m.name] = true
        end
      end
    end
    return { type = "vector", samples = { { labels = labels, v = 1 } } }
  elseif name == "scalar" then
    local samples = values[1].samples
    return { type = "scalar", v = #samples == 1 and samples[1].v or 0 / 0 }
  elseif name == "histogram_quantile" then
    local q = values[1].v
    local groups, order = {}, {}
    for _, s in ipairs(values[2].samples) do
      local upper = tonumber(s.labels.le)
      if s.labels.le == "+Inf" then upper = math.huge end
      if upper ~= nil then
        local labels = copy_without(s.labels, { __name__ = true, le = true })
        local key = label_key(labels)
        if groups[key] == nil then
          groups[key] = { labels = labels, buckets = {} }
          order[#order + 1] = key
        end
        table.insert(groups[key].buckets, { upper, s.v })
      end
    end
    for _, key in ipairs(order) do
      out[#out + 1] = { labels = groups[key].labels, v = bucket_quantile(q, groups[key].buckets) }
    end
    return { type = "vector", samples = out }
  elseif name == "clamp_min" or name == "clamp_max" then
    local bound = values[2].v
    for _, s in ipairs(values[1].samples) do
      local v = s.v
      if name == "clamp_min" then v = math.max(v, bound) else v = math.min(v, bound) end
      out[#out + 1] = { labels = drop_name(s.labels), v = v }
    end
    return { type = "vector", samples = out }
  elseif name == "round" and values[2] then
    -- Prometheus': floor(v / to_nearest + 0.5) * to_nearest, through the inverse as it does.
    local inverse = 1 / values[2].v
    for _, s in ipairs(values[1].samples) do
      out[#out + 1] = { labels = drop_name(s.labels), v = math.floor(s.v * inverse + 0.5) / inverse }
    end
    return { type = "vector", samples = out }
  end
  local fn = SIMPLE[name]
  for _, s in ipairs(values[1].samples) do
    out[#out + 1] = { labels = drop_name(s.labels), v = fn(s.v) }
  end
  return { type = "vector", samples = out }
end

local function aggregate(node, ctx)
  local value = evaluate(node.expr, ctx)
  if value.type ~= "vector" then eval_error(node.op .. " needs an instant vector") end
  local groups, order = {}, {}
  local listed = set_of(node.labels)
  for _, s in ipairs(value.samples) do
    local labels
    if node.grouping == "by" then
      labels = {}
      for name in pairs(listed) do
        if s.labels[name] ~= nil and s.labels[name] ~= "" then labels[name] = s.labels[name] end
      end
    elseif node.grouping == "without" then
      labels = copy_without(s.labels, listed)
      labels.__name__ = nil
    else
      labels = {}
    end
    local key = label_key(labels)
    local g = groups[key]
    if g == nil then
      g = { labels = labels, v = s.v, count = 1 }
      groups[key] = g
      order[#order + 1] = key
    else
      g.count = g.count + 1
      local op = node.op
      if op == "sum" or op == "avg" then
        g.v = g.v + s.v
      elseif op == "max" then
        if g.v < s.v or g.v ~= g.v then g.v = s.v end
      elseif op == "min" then
        if g.v > s.v or g.v ~= g.v then g.v = s.v end
      end
    end
  end
  local out = {}
  for _, key in ipairs(order) do
    local g = groups[key]
    local v = g.v
    if node.op == "avg" then
      v = v / g.count
    elseif node.op == "count" then
      v = g.count
    elseif node.op == "group" then
      v = 1
    end
    out[#out + 1] = { labels = g.labels, v = v }
  end
  return { type = "vector", samples = out }
end

local ARITHMETIC = {
  ["+"] = function(a, b) return a + b end,
  ["-"] = function(a, b) return a - b end,
  ["*"] = function(a, b) return a * b end,
  ["/"] = function(a, b) return a / b end,
  ["%"] = function(a, b) return math.fmod(a, b) end,
  ["^"] = function(a, b) return a ^ b end,
  atan2 = function(a, b) return math.atan(a, b) end,
}
local COMPARE = {
  ["=="] = function(a, b) return a == b end,
  ["!="] = function(a, b) return a ~= b end,
  [">"] = function(a, b) return a > b end,
  ["<"] = function(a, b) return a < b end,
  [">="] = function(a, b) return a >= b end,
  ["<="] = function(a, b) return a <= b end,
}

-- The signature a binary operation matches two samples on.
local function signature(labels, node)
  if node.matching == "on" then
    local kept = {}
    for _, name in ipairs(node.labels) do kept[name] = labels[name] end
    return label_key(kept)
  end
  local drop = set_of(node.labels)
  drop.__name__ = true
  return label_key(copy_without(labels, drop))
end

local function result_labels(labels, node)
  local out
  if COMPARISON[node.op] and not node.bool then
    out = copy_without(labels, {})
  else
    out = drop_name(labels)
  end
  if node.matching == "on" then
    local kept = {}
    for _, name in ipairs(node.labels) do kept[name] = out[name] end
    return kept
  elseif node.matching == "ignoring" then
    for _, name in ipairs(node.labels) do out[name] = nil end
  end
  return out
end

local function binary(node, ctx)
  local lhs, rhs = evaluate(node.lhs, ctx), evaluate(node.rhs, ctx)
  local op = node.op
  if SET[op] then
    if lhs.type ~= "vector" or rhs.type ~= "vector" then
      eval_error(op .. " is only for instant vectors")
    end
    local right = {}
    for _, s in ipairs(rhs.samples) do right[signature(s.labels, node)] = true end
    local out = {}
    if op == "or" then
      local left = {}
      for _, s in ipairs(lhs.samples) do
        left[signature(s.labels, node)] = true
        out[#out + 1] = s
      end
      for _, s in ipairs(rhs.samples) do
        if not left[signature(s.labels, node)] then out[#out + 1] = s end
      end
    else
      for _, s in ipairs(lhs.samples) do
        local present = right[signature(s.labels, node)] == true
        if present == (op == "and") then out[#out + 1] = s end
      end
    end
    return { type = "vector", samples = out }
  end
  local arithmetic, compare = ARITHMETIC[op], COMPARE[op]
  local function apply(a, b)
    if arithmetic then return arithmetic(a, b), true end
    local hit = compare(a, b)
    if node.bool then return hit and 1 or 0, true end
    return a, hit
  end
  if lhs.type == "scalar" and rhs.type == "scalar" then
    if compare and not node.bool then eval_error("comparisons between scalars must use bool") end
    local v = apply(lhs.v, rhs.v)
    return { type = "scalar", v = v }
  end
  local out = {}
  if lhs.type == "scalar" or rhs.type == "scalar" then
    local vector, scalar, swapped = lhs, rhs.v, false
    if lhs.type == "scalar" then vector, scalar, swapped = rhs, lhs.v, true end
    if vector.type ~= "vector" then eval_error(op .. " needs instant vectors or scalars") end
    for _, s in ipairs(vector.samples) do
      local a, b = s.v, scalar
      if swapped then a, b = scalar, s.v end
      local v, keep = apply(a, b)
      if compare and not node.bool then v = s.v end
      if keep then
        out[#out + 1] = { labels = (arithmetic or node.bool) and drop_name(s.labels) or s.labels, v = v }
      end
    end
    return { type = "vector", samples = out }
  end
  if lhs.type ~= "vector" or rhs.type ~= "vector" then eval_error(op .. " needs instant vectors or scalars") end
  local right = {}
  for _, s in ipairs(rhs.samples) do
    local sig = signature(s.labels, node)
    if right[sig] then
      eval_error(("found duplicate series for the match group on the right-hand side of %s"):format(op))
    end
    right[sig] = s
  end
  local seen = {}
  for _, s in ipairs(lhs.samples) do
    local sig = signature(s.labels, node)
    local r = right[sig]
    if r then
      if seen[sig] then
        eval_error(("multiple matches for labels on the left-hand side of %s: "
          .. "many-to-one matching must be explicit"):format(op))
      end
      seen[sig] = true
      local v, keep = apply(s.v, r.v)
      if keep then
        out[#out + 1] = { labels = result_labels(s.labels, node), v = v }
      end
    end
  end
  return { type = "vector", samples = out }
end

function evaluate(node, ctx)
  local kind = node.kind
  if kind == "number" then
    return { type = "scalar", v = node.value }
  elseif kind == "string" then
    return { type = "string", v = node.value }
  elseif kind == "paren" then
    return evaluate(node.expr, ctx)
  elseif kind == "selector" then
    return select_vector(node, ctx)
  elseif kind == "matrix" then
    return select_matrix(node, ctx)
  elseif kind == "call" then
    return call(node, ctx)
  elseif kind == "aggregate" then
    return aggregate(node, ctx)
  elseif kind == "unary" then
    local value = evaluate(node.expr, ctx)
    if value.type == "scalar" then return { type = "scalar", v = -value.v } end
    if value.type ~= "vector" then eval_error("unary minus needs a vector or a scalar") end
    local out = {}
    for i, s in ipairs(value.samples) do out[i] = { labels = drop_name(s.labels), v = -s.v } end
    return { type = "vector", samples = out }
  elseif kind == "binary" then
    return binary(node, ctx)
  end
  eval_error("cannot evaluate a " .. tostring(kind))
end

-- Prometheus' labels.Compare: the label sets as sorted (name, value) pairs, compared pair by
-- pair, a prefix first. Storage hands series over in this order, and sums are added in it, so
-- the same order gives the same last bit.
local function label_pairs(labels)
  local names = {}
  for name in pairs(labels) do names[#names + 1] = name end
  table.sort(names)
  local pairs_ = {}
  for i, name in ipairs(names) do pairs_[i] = { name, labels[name] } end
  return pairs_
end

local function sort_streams(streams)
  local keyed = {}
  for i, stream in ipairs(streams) do keyed[i] = { pairs = label_pairs(stream.labels), stream = stream } end
  table.sort(keyed, function(a, b)
    local x, y = a.pairs, b.pairs
    for i = 1, math.min(#x, #y) do
      if x[i][1] ~= y[i][1] then return x[i][1] < y[i][1] end
      if x[i][2] ~= y[i][2] then return x[i][2] < y[i][2] end
    end
    return #x < #y
  end)
  local out = {}
  for i, k in ipairs(keyed) do out[i] = k.stream end
  return out
end

--- Evaluates a parsed expression at t_ms over storage (see the top of this file): a value
--- { type = "vector", samples = { {labels, v}, ... } } or { type = "scalar", v }, or nil and a
--- message. select results are cached for the one evaluation.
function M.eval(tree, storage, t_ms)
  local cache = {}
  local ctx = {
    t = t_ms,
    select = function(name)
      local streams = cache[name]
      if streams == nil then
        streams = storage.select(name) or {}
        if not storage.sorted then streams = sort_streams(streams) end
        cache[name] = streams
      end
      return streams
    end,
  }
  local ok, value = pcall(evaluate, tree, ctx)
  if not ok then return nil, value end
  return value
end

M.LOOKBACK_MS = LOOKBACK_MS
M.sort_streams = sort_streams

return M
