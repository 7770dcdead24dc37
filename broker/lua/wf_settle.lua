-- Settles workflow nodes, one after another in one atomic step on the
-- workflow's slot: for each, records its outcome, adds the children its
-- run asked for, decides which children are ready, and ends the workflow
-- when every node is settled. Run before the nodes' deliveries are
-- acknowledged; repeating it changes nothing. Each settlement is applied
-- exactly as if it were alone (a batch only saves round trips and script
-- calls). See the rustdoc of spool_broker::workflow.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  now, in ms
-- ARGV[2]  how long a finished workflow's keys live, in ms
-- ARGV[3]  how many settlements follow
-- then per settlement, 10 values and its children:
--   the node; the task id being settled (must be the node's current one);
--   the outcome (succeeded, failed, dead_lettered, revoked, expired);
--   attempts; the error or ''; 1 if an output follows, else 0; the
--   output; how many dynamic children follow; 1 if a join node follows
--   them, else 0; the policy of the children-to-join edges;
--   then per child (and the join, last): name, task id, envelope
--
-- Returns one reply per settlement, in order: {'unknown'}, {'already'},
-- or {'recorded', finished state or '', failed node or '', failed reason
-- or '', ready node, ...}; the finished state is set only on the
-- settlement that ended the workflow.

local META, ORDER, STATE, IDS, ENV, PARENTS, CHILDREN, PENDING, OUT, ERR, ATT, OUTBOX =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12]

local now, retention, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local exists = redis.call('EXISTS', META) == 1
-- Read once, kept current below: every settlement of the batch sees what
-- the ones before it wrote.
local meta = exists and redis.call('HMGET', META, 'total', 'max_nodes', 'failed_node') or {}
local total, max_nodes, first_failure = tonumber(meta[1]), tonumber(meta[2]), meta[3]

-- Adds a settlement's dynamic children (a success only, and only if they
-- fit); returns the refusal, if any.
local function add_children(node, at, n_children, has_join, join_policy)
  local adding = n_children + (has_join and 1 or 0)
  if total + adding > max_nodes then
    return 'its ' .. adding .. ' dynamic children would take the workflow over its limit of '
      .. max_nodes .. ' nodes'
  end
  for i = 0, adding - 1 do
    local name = ARGV[at + i * 3]
    if redis.call('HEXISTS', STATE, name) == 1 then
      return 'dynamic child ' .. name .. ' has the name of a node of the workflow'
    end
  end
  local old_children = redis.call('HGET', CHILDREN, node)
  local function add(name, id, env, parents, pending)
    redis.call('RPUSH', ORDER, name)
    redis.call('HSET', STATE, name, 'waiting')
    redis.call('HSET', IDS, name, id)
    redis.call('HSET', ENV, name, env)
    redis.call('HSET', PARENTS, name, parents)
    redis.call('HSET', PENDING, name, pending)
  end
  local edges = {}
  for i = 0, n_children - 1 do
    local c = at + i * 3
    add(ARGV[c], ARGV[c + 1], ARGV[c + 2], node .. ' fail', 1)
    edges[#edges + 1] = ARGV[c] .. ' fail'
  end
  local spawner_children
  if has_join then
    local j = at + n_children * 3
    local join = ARGV[j]
    if n_children > 0 then
      local parents = {}
      for i = 0, n_children - 1 do
        local child = ARGV[at + i * 3]
        parents[#parents + 1] = child .. ' ' .. join_policy
        redis.call('HSET', CHILDREN, child, join .. ' ' .. join_policy)
      end
      add(join, ARGV[j + 1], ARGV[j + 2], table.concat(parents, ','), n_children)
    else
      add(join, ARGV[j + 1], ARGV[j + 2], node .. ' fail', 1)
      edges[#edges + 1] = join .. ' fail'
    end
    -- The join takes over the spawner's dependents.
    if old_children then
      redis.call('HSET', CHILDREN, join, old_children)
      for edge in string.gmatch(old_children, '[^,]+') do
        local child = string.match(edge, '^(%S+)')
        local rewritten = {}
        for parent_edge in string.gmatch(redis.call('HGET', PARENTS, child), '[^,]+') do
          local parent, policy = string.match(parent_edge, '^(%S+) (%S+)$')
          if parent == node then
            parent = join
          end
          rewritten[#rewritten + 1] = parent .. ' ' .. policy
        end
        redis.call('HSET', PARENTS, child, table.concat(rewritten, ','))
      end
    end
    spawner_children = table.concat(edges, ',')
  else
    spawner_children = table.concat(edges, ',')
    if old_children then
      spawner_children = spawner_children .. ',' .. old_children
    end
  end
  redis.call('HSET', CHILDREN, node, spawner_children)
  redis.call('HINCRBY', META, 'total', adding)
  total = total + adding
  return nil
end

-- Settles the settlement whose values start at ARGV[at].
local function settle(at, n_children, has_join)
  local node = ARGV[at]
  if not exists or redis.call('HGET', IDS, node) ~= ARGV[at + 1] then
    return {'unknown'}
  end
  if redis.call('HGET', STATE, node) ~= 'queued' then
    return {'already'}
  end
  local outcome, err = ARGV[at + 2], ARGV[at + 4]
  if outcome == 'succeeded' and (n_children > 0 or has_join) then
    local refusal = add_children(node, at + 10, n_children, has_join, ARGV[at + 9])
    if refusal then
      outcome, err = 'failed', refusal
    end
  end

  redis.call('HSET', STATE, node, outcome)
  redis.call('HSET', ATT, node, ARGV[at + 3])
  if err ~= '' then
    redis.call('HSET', ERR, node, err)
  end
  if outcome == 'succeeded' and ARGV[at + 5] == '1' then
    redis.call('HSET', OUT, node, ARGV[at + 6])
  end

  -- Propagate: each settled node's children are freed (a counter per
  -- child: O(1) per edge), or cancelled through `fail` edges,
  -- transitively.
  local settled = 1
  local ready = {}
  local work = {{node, outcome}}
  while #work > 0 do
    local item = table.remove(work)
    local parent, parent_state = item[1], item[2]
    local ok = parent_state == 'succeeded'
    local counts = false
    local children = redis.call('HGET', CHILDREN, parent)
    if children then
      for edge in string.gmatch(children, '[^,]+') do
        local child, policy = string.match(edge, '^(%S+) (%S+)$')
        if not ok and policy ~= 'ignore' then
          counts = true
        end
        if redis.call('HGET', STATE, child) == 'waiting' then
          if ok or policy ~= 'fail' then
            if redis.call('HINCRBY', PENDING, child, -1) <= 0 then
              redis.call('HSET', STATE, child, 'queued')
              redis.call('ZADD', OUTBOX, now, child)
              ready[#ready + 1] = child
            end
          else
            redis.call('HSET', STATE, child, 'cancelled')
            redis.call('HSET', ERR, child, 'cancelled: parent ' .. parent .. ' ' .. parent_state)
            settled = settled + 1
            work[#work + 1] = {child, 'cancelled'}
          end
        end
      end
    elseif not ok then
      counts = true
    end
    if counts and not first_failure then
      first_failure = parent
      local reason = redis.call('HGET', ERR, parent) or parent_state
      redis.call('HSET', META, 'failed_node', parent, 'failed_reason', reason)
    end
  end

  local reply = {'recorded', '', '', ''}
  if redis.call('HINCRBY', META, 'settled', settled) >= total then
    local final = first_failure and 'failed' or 'succeeded'
    redis.call('HSET', META, 'state', final, 'finished', now)
    for i = 1, #KEYS do
      redis.call('PEXPIRE', KEYS[i], retention)
    end
    local failed = redis.call('HMGET', META, 'failed_node', 'failed_reason')
    reply = {'recorded', final, failed[1] or '', failed[2] or ''}
  end
  for _, child in ipairs(ready) do
    reply[#reply + 1] = child
  end
  return reply
end

local replies = {}
local at = 4
for i = 1, count do
  local n_children, has_join = tonumber(ARGV[at + 7]), ARGV[at + 8] == '1'
  replies[i] = settle(at, n_children, has_join)
  at = at + 10 + (n_children + (has_join and 1 or 0)) * 3
end
return replies
