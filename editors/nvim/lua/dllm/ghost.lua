--- Ghost text drawn by the plugin (Neovim 0.11, or `native = false`): requests
--- textDocument/inlineCompletion itself, shows the suggestion as inline virtual text plus virtual
--- lines, hides it while the popup menu is open and on leaving insert mode, cancels stale requests.
local M = {}

local api = vim.api
local ns = api.nvim_create_namespace('dllm.ghost')
M.ns = ns

---@class dllm.Suggestion
---@field start integer[]  {row, col} 0-based bytes where insert_text begins
---@field finish integer[] {row, col} 0-based bytes where the replaced range ends
---@field text string      insert_text
---@field command? table
---@field client_id integer

---@class dllm.BufState
---@field items dllm.Suggestion[]
---@field index integer
---@field invoked boolean   the items came from an Invoked request (alternatives)
---@field request? {client_id: integer, id: integer, tick: integer}
---@field timer? uv.uv_timer_t
---@field hidden boolean    dismissed until the next edit

---@type table<integer, dllm.BufState>
local state = {}
M.state = state
M.config = nil ---@type dllm.Config

local function get(bufnr)
  state[bufnr] = state[bufnr] or { items = {}, index = 1, invoked = false, hidden = false }
  return state[bufnr]
end

local function client_of(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr, name = 'dllm' })[1]
end

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

--- Byte column of an LSP position on `row`.
local function byte_col(bufnr, row, character, encoding)
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  if encoding == 'utf-8' then return math.min(character, #line) end
  local ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  return ok and col or #line
end

--- The buffer text between two {row, col} positions (nil when b is before a).
local function text_between(bufnr, a, b)
  if b[1] < a[1] or (b[1] == a[1] and b[2] < a[2]) then return nil end
  return table.concat(api.nvim_buf_get_text(bufnr, a[1], a[2], b[1], b[2], {}), '\n')
end

--- What is left to show of the current suggestion at the cursor, or nil when the buffer no longer
--- agrees with it (the user typed something else, moved away).
function M.remaining(bufnr)
  local s = state[bufnr]
  local sug = s and s.items[s.index]
  if not sug then return nil end
  local row, col = cursor()
  local typed = text_between(bufnr, sug.start, { row, col })
  if typed == nil or sug.text:sub(1, #typed) ~= typed then return nil end
  return sug.text:sub(#typed + 1), sug
end

function M.clear(bufnr)
  api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
end

--- The text shown now (nil when nothing is shown): for tests and statuslines.
function M.shown(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local marks = api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  if #marks == 0 then return nil end
  local d = marks[1][4]
  local lines = { d.virt_text and d.virt_text[1] and d.virt_text[1][1] or '' }
  for _, vl in ipairs(d.virt_lines or {}) do
    lines[#lines + 1] = vl[1] and vl[1][1] or ''
  end
  return table.concat(lines, '\n')
end

function M.render(bufnr)
  M.clear(bufnr)
  local s = state[bufnr]
  if not s or s.hidden or vim.fn.pumvisible() == 1 or not api.nvim_get_mode().mode:match('^i') then return end
  local rest, sug = M.remaining(bufnr)
  if not rest or rest == '' then return end
  local row, col = cursor()
  -- the part of the replaced range after the cursor is already in the buffer: do not show it twice
  if sug.finish[1] == row and sug.finish[2] > col then
    local after = text_between(bufnr, { row, col }, sug.finish) or ''
    if after ~= '' and rest:sub(-#after) == after then rest = rest:sub(1, #rest - #after) end
  end
  local hl = M.config.hl_group
  local lines = vim.split(rest, '\n', { plain = true })
  local opts = { virt_text_pos = 'inline', hl_mode = 'combine', virt_text = { { lines[1], hl } } }
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do opts.virt_lines[#opts.virt_lines + 1] = { { lines[i], hl } } end
  end
  api.nvim_buf_set_extmark(bufnr, ns, row, col, opts)
end

local function cancel(bufnr)
  local s = state[bufnr]
  if s and s.request then
    local client = vim.lsp.get_client_by_id(s.request.client_id)
    if client then client:cancel_request(s.request.id) end
    s.request = nil
  end
  if s and s.timer then
    s.timer:stop()
    if not s.timer:is_closing() then s.timer:close() end
    s.timer = nil
  end
end

--- Drop the suggestion and any request for it.
function M.reset(bufnr)
  cancel(bufnr)
  local s = state[bufnr]
  if s then s.items, s.index, s.invoked = {}, 1, false end
  M.clear(bufnr)
end

local function on_result(bufnr, client, req, err, result, select_index)
  local s = state[bufnr]
  if not s or s.request ~= req then return end -- superseded or cancelled
  s.request = nil
  if err then
    if err.code ~= -32800 then M.last_error = err.message end
    return
  end
  if not api.nvim_buf_is_valid(bufnr) or api.nvim_buf_get_changedtick(bufnr) ~= req.tick then return end
  local items = result and (result.items or result) or {}
  local list = {}
  for _, it in ipairs(items) do
    local text = type(it.insertText) == 'table' and it.insertText.value or it.insertText
    if type(text) == 'string' and text ~= '' then
      local r = it.range
      local row, col = cursor()
      local start, finish = { row, col }, { row, col }
      if r then
        start = { r.start.line, byte_col(bufnr, r.start.line, r.start.character, client.offset_encoding) }
        finish = { r['end'].line, byte_col(bufnr, r['end'].line, r['end'].character, client.offset_encoding) }
      end
      list[#list + 1] = { start = start, finish = finish, text = text:gsub('\r\n', '\n'),
                          command = it.command, client_id = client.id }
    end
  end
  s.items, s.invoked = list, req.invoked
  s.index = math.min(select_index or 1, math.max(#list, 1))
  M.render(bufnr)
end

--- Ask the server now. `invoked`: the user asked (alternatives), else Automatic.
function M.request(bufnr, invoked, select_index)
  cancel(bufnr)
  local client = client_of(bufnr)
  local s = get(bufnr)
  if not client or not M.enabled then return end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = invoked and 1 or 2 }
  local req = { client_id = client.id, tick = api.nvim_buf_get_changedtick(bufnr), invoked = invoked }
  local ok, id = client:request('textDocument/inlineCompletion', params, function(err, result)
    on_result(bufnr, client, req, err, result, select_index)
  end, bufnr)
  if ok then
    req.id = id
    s.request = req
  end
end

--- After a keystroke or a cursor move: keep the suggestion if the buffer still agrees with it,
--- else drop it and ask again (debounced).
function M.on_change(bufnr)
  local s = get(bufnr)
  if not M.enabled then return end
  s.hidden = false
  local rest = M.remaining(bufnr)
  if rest and rest ~= '' then
    cancel(bufnr)
    M.render(bufnr)
    return
  end
  M.reset(bufnr)
  if vim.fn.pumvisible() == 1 then return end
  s.timer = vim.defer_fn(function()
    s.timer = nil
    if api.nvim_buf_is_valid(bufnr) and api.nvim_get_current_buf() == bufnr
        and api.nvim_get_mode().mode:match('^i') then
      M.request(bufnr, false)
    end
  end, M.config.debounce_ms)
end

function M.visible(bufnr)
  return M.shown(bufnr or api.nvim_get_current_buf()) ~= nil
end

--- The part of `rest` that accepting `kind` ("all", "word", "line") inserts.
function M.part(rest, kind)
  if kind == 'word' then
    return rest:match('^%s*[%w_]+') or rest:match('^%s*[^%w_%s]+') or rest:match('^%s+') or rest
  elseif kind == 'line' then
    return rest:match('^\n[^\n]*') or rest:match('^[^\n]*')
  end
  return rest
end

--- Insert (part of) the suggestion; the caller put an undo break before (see keys in init.lua).
function M.accept(kind)
  local bufnr = api.nvim_get_current_buf()
  local rest, sug = M.remaining(bufnr)
  if not rest or rest == '' then return false end
  local row, col = cursor()
  local part = M.part(rest, kind)
  local finish = { row, col }
  if kind == 'all' and (sug.finish[1] > row or (sug.finish[1] == row and sug.finish[2] > col)) then
    finish = sug.finish -- replace the rest of the item's range
  end
  local lines = vim.split(part, '\n', { plain = true })
  api.nvim_buf_set_text(bufnr, row, col, finish[1], finish[2], lines)
  local end_row = row + #lines - 1
  local end_col = (#lines == 1 and col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { end_row + 1, end_col })
  local client = vim.lsp.get_client_by_id(sug.client_id)
  if client and sug.command then
    local cmd = vim.deepcopy(sug.command)
    if kind ~= 'all' and type(cmd.arguments) == 'table' and type(cmd.arguments[1]) == 'table' then
      cmd.arguments[1].length = vim.fn.strchars(part)
    end
    client:request('workspace/executeCommand', { command = cmd.command, arguments = cmd.arguments },
      function() end, bufnr)
  end
  if kind == 'all' then M.reset(bufnr) else M.render(bufnr) end
  return true
end

--- Next/previous suggestion; the first time, ask the server for alternatives (Invoked).
function M.cycle(delta)
  local bufnr = api.nvim_get_current_buf()
  local s = get(bufnr)
  s.hidden = false
  if not s.invoked then
    M.request(bufnr, true, delta > 0 and 2 or 1)
    return
  end
  if #s.items == 0 then return end
  s.index = (s.index - 1 + delta) % #s.items + 1
  M.render(bufnr)
end

function M.dismiss()
  local bufnr = api.nvim_get_current_buf()
  cancel(bufnr)
  get(bufnr).hidden = true
  M.clear(bufnr)
end

M.enabled = true

function M.attach(bufnr)
  local group = api.nvim_create_augroup('dllm.ghost.' .. bufnr, { clear = true })
  local function au(events, fn)
    api.nvim_create_autocmd(events, { group = group, buffer = bufnr, callback = function() fn(bufnr) end })
  end
  au({ 'InsertEnter', 'TextChangedI' }, M.on_change)
  au('CursorMovedI', function(b) -- moved away from the suggestion: drop it
    local s = state[b]
    if s and s.items[1] and not M.remaining(b) then M.reset(b) end
  end)
  au({ 'InsertLeave', 'BufLeave' }, M.reset)
  au({ 'CompleteChanged', 'TextChangedP' }, function(b) cancel(b); M.clear(b) end)
  au('CompleteDone', function(b) vim.schedule(function() if api.nvim_buf_is_valid(b) then M.on_change(b) end end) end)
  api.nvim_create_autocmd('LspDetach', { group = group, buffer = bufnr, callback = function(a)
    local c = vim.lsp.get_client_by_id(a.data.client_id)
    if c and c.name == 'dllm' then M.reset(bufnr); api.nvim_del_augroup_by_id(group) end
  end })
end

return M
