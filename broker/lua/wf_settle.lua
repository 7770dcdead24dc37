-- Settles workflow nodes, one after another in one atomic step on the
-- workflow's slot: for each, records its outcome, adds the children its
-- run asked for, decides which children are ready, and ends the workflow
-- when every node is settled. Run before the nodes' deliveries are
-- acknowledged; repeating it changes nothing. Each settlement is applied
-- exactly as if it were alone (a batch only saves round trips and script
-- calls). See the rustdoc of spool_broker::workflow.
--
-- The hashes are read and written through write-back caches: the batch's
-- nodes, their children and the children's counters are read with one
-- HMGET per hash up front, every settlement reads and writes the caches
-- (so each sees what the ones before it wrote, as if alone), and what
-- changed is written with one HSET per hash at the end (META once, the
-- outbox with one ZADD, PEXPIRE after the writes). A script runs whole,
-- so no reader ever sees the caches' state half written.
--
-- A ready node with a route (single server only, see wf_submit.lua) is
-- added to its queue's stream here, in the same atomic step as the
-- outcome that readied it; the others go to the outbox for dispatch.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  now, in ms
-- ARGV[2]  how long a finished workflow's keys live, in ms
-- ARGV[3]  how many settlements follow
-- then per settlement, 5 values and, unless the fifth is '', 4 more and
-- its children: the node; the task id being settled (must be the node's
-- current one); the outcome (succeeded, failed, dead_lettered, revoked,
-- expired); attempts; '' when nothing else follows (no error, no stored
-- output, no children: most settlements), else '1' and then the error or
-- ''; 1 if an output follows, else 0 (a success's unit output is not
-- stored: its readers know it as the output of a success without one);
-- the output; its dynamic children, '' for none, else 'N J P': how many
-- children follow, 1 if a join node follows them else 0, and the policy
-- of the children-to-join edges; then per child (and the join, last):
-- name, task id, envelope, route ('' for none)
--
-- Returns one reply per settlement, in order: {'unknown'}, {'already'},
-- 0 when recorded without readying a node or ending the workflow (most
-- settlements of a fan-out: a short reply to build and to parse), or
-- {'recorded', finished state or '', failed node or '', failed reason
-- or '', 1 if a ready node went to the outbox else 0, ready node, ...};
-- the finished state is set only on the settlement that ended the
-- workflow.

local META, ORDER, STATE, IDS, ENV, PARENTS, CHILDREN, PENDING, OUT, ERR, ATT, OUTBOX, ROUTE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13]

local now, retention, count = ARGV[1], ARGV[2], tonumber(ARGV[3])

-- Fields per bulk command: Lua's unpack takes a few thousand values at
-- most.
local CHUNK = 1000

-- A write-back cache of one hash: `get` reads a field (false when absent)
-- from the cache, else from Redis; `set` changes it in the cache only;
-- `load` reads many fields at once (the first load, into an empty cache,
-- without first sorting out what it holds); `flush` writes what changed.
local function cache(key)
  local values, dirty, order = {}, {}, {}
  local c = {}
  local loaded = false
  function c.load(names)
    local missing = names
    if loaded then
      missing = {}
      local seen = {}
      for _, name in ipairs(names) do
        if values[name] == nil and not seen[name] then
          missing[#missing + 1] = name
          seen[name] = true
        end
      end
    end
    loaded = true
    for from = 1, #missing, CHUNK do
      local to = math.min(from + CHUNK - 1, #missing)
      local got = redis.call('HMGET', key, unpack(missing, from, to))
      for k = 1, to - from + 1 do
        local name = missing[from + k - 1]
        if values[name] == nil then
          values[name] = got[k]
        end
      end
    end
  end
  function c.get(name)
    local value = values[name]
    if value == nil then
      value = redis.call('HGET', key, name)
      values[name] = value
    end
    return value
  end
  function c.set(name, value)
    values[name] = value
    if not dirty[name] then
      dirty[name] = true
      order[#order + 1] = name
    end
  end
  function c.flush()
    local pairs_ = {}
    for _, name in ipairs(order) do
      pairs_[#pairs_ + 1] = name
      pairs_[#pairs_ + 1] = values[name]
      if #pairs_ >= 2 * CHUNK then
        redis.call('HSET', key, unpack(pairs_))
        pairs_ = {}
      end
    end
    if #pairs_ > 0 then
      redis.call('HSET', key, unpack(pairs_))
    end
  end
  return c
end

local state, ids, env, parents_of, children_of, pending, out, err, att, route =
  cache(STATE), cache(IDS), cache(ENV), cache(PARENTS), cache(CHILDREN), cache(PENDING),
  cache(OUT), cache(ERR), cache(ATT), cache(ROUTE)
local appended, outboxed, streamed = {}, {}, {}

-- The settlement whose values start at ARGV[at]: where its optional
-- values start (nil when it has none), its dynamic children (how many,
-- whether a join follows, the join's edge policy), and where the next
-- settlement starts.
local function shape(at)
  if ARGV[at + 4] == '' then
    return nil, 0, false, nil, at + 5
  end
  local spec = ARGV[at + 8]
  if spec == '' then
    return at + 5, 0, false, nil, at + 9
  end
  local n, join, policy = string.match(spec, '^(%d+) ([01]) (%S+)$')
  n = tonumber(n)
  local has_join = join == '1'
  return at + 5, n, has_join, policy, at + 9 + (n + (has_join and 1 or 0)) * 4
end

-- Edge lists ("name policy,...") parsed once per distinct stored string:
-- the members of a fan-out share one.
local parsed = {}
local function edges_of(stored)
  local edges = parsed[stored]
  if not edges then
    edges = {}
    for child, policy in string.gmatch(stored, '([^ ,]+) ([^,]+)') do
      edges[#edges + 1] = {child, policy}
    end
    parsed[stored] = edges
  end
  return edges
end

local exists = redis.call('EXISTS', META) == 1
-- Read once, kept current below: every settlement of the batch sees what
-- the ones before it wrote.
local meta = exists
    and redis.call('HMGET', META, 'total', 'max_nodes', 'failed_node', 'failed_reason', 'settled',
      'no_failures', 'no_outputs')
  or {}
local total, max_nodes, first_failure, failure_reason = tonumber(meta[1]), tonumber(meta[2]),
  meta[3], meta[4]
local settled_count = tonumber(meta[5]) or 0
-- Whether no node has yet settled other than succeeded, or stored an
-- output (see wf_submit.lua); kept current, written if either changed.
local no_failures, no_outputs = meta[6] == '1', meta[7] == '1'
local meta_changed, total_changed, finished = false, false, nil

-- The prefetch: the batch's nodes, then their children.
if exists then
  local nodes = {}
  local at = 4
  for i = 1, count do
    nodes[i] = ARGV[at]
    local _, _, _, _, next_at = shape(at)
    at = next_at
  end
  ids.load(nodes)
  state.load(nodes)
  children_of.load(nodes)
  local kids, seen = {}, {}
  for _, node in ipairs(nodes) do
    local edges = children_of.get(node)
    if edges then
      for _, edge in ipairs(edges_of(edges)) do
        local child = edge[1]
        if not seen[child] then
          seen[child] = true
          kids[#kids + 1] = child
        end
      end
    end
  end
  state.load(kids)
  pending.load(kids)
  route.load(kids)
end

-- Adds a settlement's dynamic children (a success only, and only if they
-- fit); returns the refusal, if any.
local function add_children(node, at, n_children, has_join, join_policy)
  local adding = n_children + (has_join and 1 or 0)
  if total + adding > max_nodes then
    return 'its ' .. adding .. ' dynamic children would take the workflow over its limit of '
      .. max_nodes .. ' nodes'
  end
  local names = {}
  for i = 0, adding - 1 do
    names[#names + 1] = ARGV[at + i * 4]
  end
  state.load(names)
  for _, name in ipairs(names) do
    if state.get(name) then
      return 'dynamic child ' .. name .. ' has the name of a node of the workflow'
    end
  end
  local old_children = children_of.get(node)
  -- Values from ARGV[c]: name, task id, envelope, route.
  local function add(c, parents, count_)
    local name = ARGV[c]
    appended[#appended + 1] = name
    state.set(name, 'waiting')
    ids.set(name, ARGV[c + 1])
    env.set(name, ARGV[c + 2])
    parents_of.set(name, parents)
    pending.set(name, count_)
    if ARGV[c + 3] ~= '' then
      route.set(name, ARGV[c + 3])
    end
  end
  local edges = {}
  for i = 0, n_children - 1 do
    local c = at + i * 4
    add(c, node .. ' fail', 1)
    edges[#edges + 1] = ARGV[c] .. ' fail'
  end
  local spawner_children
  if has_join then
    local j = at + n_children * 4
    local join = ARGV[j]
    if n_children > 0 then
      local parents = {}
      for i = 0, n_children - 1 do
        local child = ARGV[at + i * 4]
        parents[#parents + 1] = child .. ' ' .. join_policy
        children_of.set(child, join .. ' ' .. join_policy)
      end
      add(j, table.concat(parents, ','), n_children)
    else
      add(j, node .. ' fail', 1)
      edges[#edges + 1] = join .. ' fail'
    end
    -- The join takes over the spawner's dependents.
    if old_children then
      children_of.set(join, old_children)
      for edge in string.gmatch(old_children, '[^,]+') do
        local child = string.match(edge, '^(%S+)')
        local rewritten = {}
        for parent_edge in string.gmatch(parents_of.get(child), '[^,]+') do
          local parent, policy = string.match(parent_edge, '^(%S+) (%S+)$')
          if parent == node then
            parent = join
          end
          rewritten[#rewritten + 1] = parent .. ' ' .. policy
        end
        parents_of.set(child, table.concat(rewritten, ','))
      end
    end
    spawner_children = table.concat(edges, ',')
  else
    spawner_children = table.concat(edges, ',')
    if old_children then
      spawner_children = spawner_children .. ',' .. old_children
    end
  end
  children_of.set(node, spawner_children)
  total = total + adding
  total_changed = true
  return nil
end

-- Settles the settlement whose values start at ARGV[at] (its optional
-- values at ARGV[more]).
local function settle(at, more, n_children, has_join, join_policy)
  local node = ARGV[at]
  if not exists or ids.get(node) ~= ARGV[at + 1] then
    return {'unknown'}
  end
  if state.get(node) ~= 'queued' then
    return {'already'}
  end
  local outcome, error_ = ARGV[at + 2], ''
  if more then
    error_ = ARGV[more]
    if outcome == 'succeeded' and (n_children > 0 or has_join) then
      local refusal = add_children(node, more + 4, n_children, has_join, join_policy)
      if refusal then
        outcome, error_ = 'failed', refusal
      end
    end
  end

  state.set(node, outcome)
  if outcome ~= 'succeeded' then
    no_failures = false
  end
  -- An absent count reads as 1 for a success (it ran once), else 0 (a
  -- settlement of no attempt): the common cases write nothing.
  local attempts = ARGV[at + 3]
  if attempts ~= (outcome == 'succeeded' and '1' or '0') then
    att.set(node, attempts)
  end
  if error_ ~= '' then
    err.set(node, error_)
  end
  if more and outcome == 'succeeded' and ARGV[more + 1] == '1' then
    out.set(node, ARGV[more + 2])
    no_outputs = false
  end

  -- Propagate: each settled node's children are freed (a counter per
  -- child: O(1) per edge), or cancelled through `fail` edges,
  -- transitively. The tables are made only when needed: most
  -- settlements ready nothing and cancel nothing.
  local settled = 1
  local ready, cancelled = nil, nil
  local to_outbox = false
  local parent, parent_state = node, outcome
  while parent do
    local ok = parent_state == 'succeeded'
    local counts = false
    local children = children_of.get(parent)
    if children then
      for _, edge in ipairs(edges_of(children)) do
        local child, policy = edge[1], edge[2]
        if not ok and policy ~= 'ignore' then
          counts = true
        end
        if state.get(child) == 'waiting' then
          if ok or policy ~= 'fail' then
            local left = (tonumber(pending.get(child)) or 0) - 1
            pending.set(child, left)
            if left <= 0 then
              state.set(child, 'queued')
              if route.get(child) then
                streamed[#streamed + 1] = child
              else
                outboxed[#outboxed + 1] = child
                to_outbox = true
              end
              ready = ready or {}
              ready[#ready + 1] = child
            end
          else
            state.set(child, 'cancelled')
            err.set(child, 'cancelled: parent ' .. parent .. ' ' .. parent_state)
            settled = settled + 1
            cancelled = cancelled or {}
            cancelled[#cancelled + 1] = child
          end
        end
      end
    elseif not ok then
      counts = true
    end
    if counts and not first_failure then
      first_failure = parent
      failure_reason = err.get(parent) or parent_state
      meta_changed = true
    end
    parent = cancelled and table.remove(cancelled)
    parent_state = 'cancelled'
  end

  settled_count = settled_count + settled
  if not ready and settled_count < total then
    return 0
  end
  local reply = {'recorded', '', '', '', to_outbox and 1 or 0}
  if settled_count >= total then
    finished = first_failure and 'failed' or 'succeeded'
    reply[2], reply[3], reply[4] = finished, first_failure or '', failure_reason or ''
  end
  for _, child in ipairs(ready or {}) do
    reply[#reply + 1] = child
  end
  return reply
end

local replies = {}
local at = 4
local recorded = false
for i = 1, count do
  local more, n_children, has_join, join_policy, next_at = shape(at)
  local reply = settle(at, more, n_children, has_join, join_policy)
  replies[i] = reply
  if reply == 0 or reply[1] == 'recorded' then
    recorded = true
  end
  at = next_at
end

-- The writes, once each.
if recorded then
  for from = 1, #appended, CHUNK do
    redis.call('RPUSH', ORDER, unpack(appended, from, math.min(from + CHUNK - 1, #appended)))
  end
  for _, c in ipairs({state, ids, env, parents_of, children_of, pending, out, err, att, route}) do
    c.flush()
  end
  local fields = {'settled', settled_count}
  local function add(...)
    for _, value in ipairs({...}) do
      fields[#fields + 1] = value
    end
  end
  if total_changed then
    add('total', total)
  end
  if meta_changed then
    add('failed_node', first_failure, 'failed_reason', failure_reason)
  end
  if meta[6] == '1' and not no_failures then
    add('no_failures', 0)
  end
  if meta[7] == '1' and not no_outputs then
    add('no_outputs', 0)
  end
  if finished then
    add('state', finished, 'finished', now)
  end
  redis.call('HSET', META, unpack(fields))
  local members = {}
  for _, child in ipairs(outboxed) do
    members[#members + 1] = now
    members[#members + 1] = child
    if #members >= 2 * CHUNK then
      redis.call('ZADD', OUTBOX, unpack(members))
      members = {}
    end
  end
  if #members > 0 then
    redis.call('ZADD', OUTBOX, unpack(members))
  end
  env.load(streamed)
  for _, child in ipairs(streamed) do
    redis.call('XADD', route.get(child), '*', 'e', env.get(child))
  end
  if finished then
    for i = 1, #KEYS do
      redis.call('PEXPIRE', KEYS[i], retention)
    end
  end
end
return replies
