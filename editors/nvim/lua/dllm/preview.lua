--- Refactor previews. dllm-ls answers "Propagate this edit" and "Repair this file" with a
--- WorkspaceEdit whose edits carry change annotations (one per function) that need confirmation.
--- Neovim would apply such an edit at once (0.11) or ask yes/no for all of it (0.12); this module
--- shows it instead as a unified diff in a scratch buffer, hunk by hunk, each hunk labelled with its
--- function. Each hunk is accepted or rejected; when none is left pending (or on <CR>) only the
--- accepted hunks' edits are applied, with vim.lsp.util.apply_text_edits, as one undo step.
--- Nothing is written to disk: the buffer is modified, the user saves it.
---
--- Hooked in by wrapping vim.lsp.util.apply_workspace_edit (what vim.lsp.buf.code_action and the
--- workspace/applyEdit handler call): an edit with a `dllm.*` annotation that needs confirmation
--- opens the preview; every other edit goes to Neovim's own function untouched.
local M = {}

local api = vim.api

---@class dllm.PreviewKeys
M.keys = { accept = 'a', reject = 'r', accept_all = 'A', reject_all = 'R', apply = '<CR>', cancel = 'q' }
M.enabled = true

---@class dllm.Hunk
---@field old_start integer 1-based first line in the buffer (for an insertion: the line after it)
---@field old_count integer
---@field new_start integer
---@field new_count integer
---@field edits table[] the LSP text edits it holds
---@field labels string[] the annotation labels (functions) of its edits
---@field status 'pending'|'accepted'|'rejected'
---@field first integer first line of the hunk in the preview buffer (1-based)
---@field last integer

---@type {buf: integer, win: integer, source: integer, version: integer?, encoding: string, title: string,
---       hunks: dllm.Hunk[], file: string}?
local state = nil

--- Whether `edit` is a dllm-ls refactor to preview.
function M.wants(edit)
  local ann = type(edit) == 'table' and edit.changeAnnotations
  if not M.enabled or type(ann) ~= 'table' then return false end
  for id, a in pairs(ann) do
    if type(id) == 'string' and id:match('^dllm%.') and type(a) == 'table' and a.needsConfirmation then
      return true
    end
  end
  return false
end

--- The open preview (for tests and statuslines): its buffer, the source buffer, and each hunk's
--- labels, status and diff lines.
function M.current()
  if not state then return nil end
  local hunks = {}
  for i, h in ipairs(state.hunks) do
    hunks[i] = { labels = h.labels, status = h.status, lines = api.nvim_buf_get_lines(state.buf, h.first - 1, h.last, false) }
  end
  return { buf = state.buf, win = state.win, source = state.source, title = state.title, hunks = hunks }
end

local function strip(e) -- a plain TextEdit (no annotation: 0.12 would ask again)
  return { range = e.range, newText = e.newText }
end

local diff = (vim.text and vim.text.diff) or vim.diff

--- Hunks of `old` -> `new` (lists of lines), each holding the edits whose lines it covers; hunks
--- that share an edit are merged, so accepting one hunk never applies part of another.
local function hunks_of(old, new, edits, annotations)
  local idx = diff(table.concat(old, '\n') .. '\n', table.concat(new, '\n') .. '\n',
    { result_type = 'indices', algorithm = 'histogram' }) or {}
  local hunks = {} ---@type dllm.Hunk[]
  for _, d in ipairs(idx) do
    local sa, ca, sb, cb = d[1], d[2], d[3], d[4]
    if ca == 0 then sa = sa + 1 end -- an insertion after line sa: it sits before line sa + 1
    if cb == 0 then sb = sb + 1 end
    hunks[#hunks + 1] = { old_start = sa, old_count = ca, new_start = sb, new_count = cb, edits = {}, labels = {},
      status = 'pending' }
  end
  local function touches(h, first, last) -- 1-based lines of the buffer
    local a, b = h.old_start, h.old_start + math.max(h.old_count, 1) - 1
    if h.old_count == 0 then b = a - 1 end -- an insertion point between a - 1 and a
    return first <= math.max(a, b) and last >= math.min(a, b)
  end
  for _, e in ipairs(edits) do
    local first, last = e.range.start.line + 1, e.range['end'].line + 1
    local hit = {}
    for i, h in ipairs(hunks) do
      if touches(h, first, last) then hit[#hit + 1] = i end
    end
    if #hit == 0 and #hunks > 0 then -- an edit that changes nothing visible: the nearest hunk
      local best, bd = 1, math.huge
      for i, h in ipairs(hunks) do
        local dist = math.abs(h.old_start - first)
        if dist < bd then best, bd = i, dist end
      end
      hit = { best }
    end
    if #hit > 0 then
      local into = hunks[hit[1]]
      for k = #hit, 2, -1 do -- merge the others into the first
        local h = table.remove(hunks, hit[k])
        local old_end = h.old_start + h.old_count
        local new_end = h.new_start + h.new_count
        into.old_count = old_end - into.old_start
        into.new_count = new_end - into.new_start
        vim.list_extend(into.edits, h.edits)
        for _, l in ipairs(h.labels) do
          if not vim.tbl_contains(into.labels, l) then into.labels[#into.labels + 1] = l end
        end
      end
      into.edits[#into.edits + 1] = e
      local a = e.annotationId and annotations and annotations[e.annotationId]
      local label = a and a.label or nil
      if label and not vim.tbl_contains(into.labels, label) then into.labels[#into.labels + 1] = label end
    end
  end
  return vim.tbl_filter(function(h) return #h.edits > 0 end, hunks)
end

local function header(h)
  local mark = ({ pending = '[ ]', accepted = '[accepted]', rejected = '[rejected]' })[h.status]
  return ('@@ -%d,%d +%d,%d @@ %s  %s'):format(h.old_start, h.old_count, h.new_start, h.new_count,
    table.concat(h.labels, ', '), mark)
end

local CONTEXT = 2

--- The preview buffer's lines: a title, the keys, then each hunk with two lines of context.
local function render(old, new)
  local k = M.keys
  local lines = {
    ('dllm-ls: %s: %s'):format(state.title, state.file),
    ('%s accept, %s reject, %s accept all, %s reject all, %s apply the accepted, %s cancel'):format(
      k.accept, k.reject, k.accept_all, k.reject_all, k.apply, k.cancel),
    '',
  }
  local shown = 0 -- the last buffer line shown as context (no line is shown twice)
  for _, h in ipairs(state.hunks) do
    h.first = #lines + 1
    lines[#lines + 1] = header(h)
    local a, b = h.old_start, h.old_start + h.old_count - 1
    for l = math.max(1, a - CONTEXT, shown + 1), a - 1 do lines[#lines + 1] = ' ' .. old[l] end
    for l = a, b do lines[#lines + 1] = '-' .. old[l] end
    for l = h.new_start, h.new_start + h.new_count - 1 do lines[#lines + 1] = '+' .. new[l] end
    shown = math.min(#old, b + CONTEXT)
    for l = b + 1, shown do lines[#lines + 1] = ' ' .. old[l] end
    h.last = #lines
  end
  vim.bo[state.buf].modifiable = true
  api.nvim_buf_set_lines(state.buf, 0, -1, false, lines)
  vim.bo[state.buf].modifiable = false
end

local function set_status(h, status)
  h.status = status
  vim.bo[state.buf].modifiable = true
  api.nvim_buf_set_lines(state.buf, h.first - 1, h.first, false, { header(h) })
  vim.bo[state.buf].modifiable = false
end

local function close()
  local s = state
  state = nil
  if s and api.nvim_win_is_valid(s.win) then pcall(api.nvim_win_close, s.win, true) end
  if s and api.nvim_buf_is_valid(s.buf) then pcall(api.nvim_buf_delete, s.buf, { force = true }) end
end

--- Apply the accepted hunks (the others are rejected) and close the preview.
function M.apply()
  if not state then return end
  local s = state
  local edits, n = {}, 0
  for _, h in ipairs(s.hunks) do
    if h.status == 'accepted' then
      n = n + 1
      for _, e in ipairs(h.edits) do edits[#edits + 1] = strip(e) end
    end
  end
  local changed = s.version and vim.lsp.util.buf_versions[s.source] ~= s.version
  close()
  if n > 0 and changed then
    vim.notify('dllm: the buffer changed since the preview; nothing applied (ask for the action again)',
      vim.log.levels.WARN)
    return
  end
  if n > 0 and api.nvim_buf_is_valid(s.source) then
    vim.lsp.util.apply_text_edits(edits, s.source, s.encoding)
  end
  vim.notify(('dllm: applied %d of %d hunks'):format(n, #s.hunks))
end

--- Close the preview without applying anything.
function M.cancel()
  if not state then return end
  local n = #state.hunks
  close()
  vim.notify(('dllm: preview closed, none of %d hunks applied'):format(n))
end

local function hunk_at_cursor()
  local row = api.nvim_win_get_cursor(0)[1]
  for _, h in ipairs(state.hunks) do
    if row <= h.last then return h end -- on a hunk, or on the lines above the first one
  end
  return state.hunks[#state.hunks]
end

local function next_pending(after)
  for _, h in ipairs(state.hunks) do
    if h.status == 'pending' and h.first > after then return h end
  end
  for _, h in ipairs(state.hunks) do
    if h.status == 'pending' then return h end
  end
end

--- Accept (`true`) or reject the hunk under the cursor; with `all`, every pending hunk. When no
--- hunk is left pending, the accepted ones are applied.
function M.decide(accept, all)
  if not state then return end
  local status = accept and 'accepted' or 'rejected'
  local h = hunk_at_cursor()
  if all then
    for _, x in ipairs(state.hunks) do
      if x.status == 'pending' then set_status(x, status) end
    end
  elseif h then
    set_status(h, status)
  end
  local nxt = next_pending(h and h.first or 0)
  if not nxt then return M.apply() end
  api.nvim_win_set_cursor(state.win, { nxt.first, 0 })
end

--- Show `workspace_edit` (dllm-ls' annotated refactor) as a preview. Returns true when shown.
function M.open(workspace_edit, encoding)
  local doc_edits = {}
  for _, change in ipairs(workspace_edit.documentChanges or {}) do
    if not change.kind then doc_edits[#doc_edits + 1] = change end
  end
  for uri, edits in pairs(workspace_edit.changes or {}) do
    doc_edits[#doc_edits + 1] = { textDocument = { uri = uri }, edits = edits }
  end
  if #doc_edits ~= 1 then return false end -- dllm-ls sends one document; anything else: Neovim's way
  local de = doc_edits[1]
  local source = vim.uri_to_bufnr(de.textDocument.uri)
  vim.fn.bufload(source)
  local version = de.textDocument.version
  if version == vim.NIL or version == 0 then version = nil end
  if version and vim.lsp.util.buf_versions[source] and vim.lsp.util.buf_versions[source] > version then
    vim.notify('dllm: the buffer changed since the refactor was computed; ask for the action again',
      vim.log.levels.WARN)
    return true
  end
  if #de.edits == 0 then
    vim.notify('dllm: the model finds nothing to change')
    return true
  end
  if state then close() end
  local old = api.nvim_buf_get_lines(source, 0, -1, false)
  local scratch = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(scratch, 0, -1, false, old)
  local plain = vim.tbl_map(strip, de.edits)
  vim.lsp.util.apply_text_edits(plain, scratch, encoding)
  local new = api.nvim_buf_get_lines(scratch, 0, -1, false)
  api.nvim_buf_delete(scratch, { force = true })
  local hunks = hunks_of(old, new, de.edits, workspace_edit.changeAnnotations)
  if #hunks == 0 then
    vim.notify('dllm: the model finds nothing to change')
    return true
  end
  local title = 'refactor'
  for _, a in pairs(workspace_edit.changeAnnotations or {}) do
    if a.description then title = a.description:gsub('^dllm%-ls: ', ''):gsub(';.*$', '') break end
  end
  local buf = api.nvim_create_buf(false, true)
  vim.bo[buf].bufhidden = 'wipe'
  vim.bo[buf].filetype = 'diff'
  pcall(api.nvim_buf_set_name, buf, ('dllm://preview/%d'):format(buf))
  vim.cmd('botright split')
  local win = api.nvim_get_current_win()
  api.nvim_win_set_buf(win, buf)
  state = { buf = buf, win = win, source = source, version = vim.lsp.util.buf_versions[source],
    encoding = encoding, title = title, hunks = hunks, file = vim.fn.fnamemodify(api.nvim_buf_get_name(source), ':~:.') }
  render(old, new)
  local function map(lhs, fn, desc)
    vim.keymap.set('n', lhs, fn, { buffer = buf, nowait = true, desc = 'dllm preview: ' .. desc })
  end
  map(M.keys.accept, function() M.decide(true) end, 'accept the hunk')
  map(M.keys.reject, function() M.decide(false) end, 'reject the hunk')
  map(M.keys.accept_all, function() M.decide(true, true) end, 'accept every pending hunk')
  map(M.keys.reject_all, function() M.decide(false, true) end, 'reject every pending hunk')
  map(M.keys.apply, M.apply, 'apply the accepted hunks')
  map(M.keys.cancel, M.cancel, 'close, apply nothing')
  api.nvim_create_autocmd('BufWipeout', { buffer = buf, once = true, callback = function()
    if state and state.buf == buf then state = nil end
  end })
  api.nvim_win_set_cursor(win, { hunks[1].first, 0 })
  return true
end

local original = nil

--- Wrap vim.lsp.util.apply_workspace_edit once (idempotent).
function M.install()
  local util = vim.lsp.util
  if original then return end
  original = util.apply_workspace_edit
  util.apply_workspace_edit = function(workspace_edit, position_encoding, ...)
    if M.wants(workspace_edit) then
      local ok, shown = pcall(M.open, workspace_edit, position_encoding)
      if ok and shown then return end
      if not ok then
        vim.notify('dllm: cannot show the preview (' .. tostring(shown) .. '); applying nothing',
          vim.log.levels.ERROR)
        return
      end
    end
    return original(workspace_edit, position_encoding, ...)
  end
end

return M
