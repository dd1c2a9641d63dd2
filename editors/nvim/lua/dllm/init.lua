--- dllm.nvim: inline code completion from dllm-ls (a block-diffusion language model).
---
---   require('dllm').setup({ ... })   -- see lua/dllm/config.lua for every option; calling it
---                                   -- again replaces the configuration (idempotent)
---
--- The server starts through vim.lsp.config/vim.lsp.enable (Neovim 0.11+). Ghost text comes from
--- vim.lsp.inline_completion where Neovim has it (0.12+), else from lua/dllm/ghost.lua.
local M = {}

local api = vim.api
local ghost = require('dllm.ghost')
local preview = require('dllm.preview')

M.config = nil ---@type dllm.Config?
M.status = {} ---@type table<integer, {state: string, message: string, fix: string}> per client id
local group = api.nvim_create_augroup('dllm', { clear = true })

--- Whether the native vim.lsp.inline_completion is in use.
function M.native()
  local cfg = M.config or require('dllm.config').defaults
  if cfg.native == 'auto' then return vim.lsp.inline_completion ~= nil end
  return cfg.native and vim.lsp.inline_completion ~= nil
end

local NATIVE_NS = 'nvim.lsp.inline_completion'

--- The ghost text shown in `bufnr` (nil when none): for tests, statuslines and keys.
function M.shown(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  if not M.native() then return ghost.shown(bufnr) end
  local ns = api.nvim_get_namespaces()[NATIVE_NS]
  if not ns then return nil end
  local marks = api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  if #marks == 0 then return nil end
  local d = marks[1][4]
  local lines = { '' }
  for _, chunk in ipairs(d.virt_text or {}) do lines[1] = lines[1] .. chunk[1] end
  for _, vl in ipairs(d.virt_lines or {}) do
    local l = ''
    for _, chunk in ipairs(vl) do l = l .. chunk[1] end
    lines[#lines + 1] = l
  end
  return table.concat(lines, '\n')
end

--- Accept the shown suggestion: kind "all" | "word" | "line". Returns false when none is shown.
function M.accept(kind)
  kind = kind or 'all'
  if not M.native() then return ghost.accept(kind) end
  return vim.lsp.inline_completion.get({
    on_accept = function(item)
      local text = type(item.insert_text) == 'string' and item.insert_text or item.insert_text.value
      local row, col = unpack(api.nvim_win_get_cursor(0))
      row = row - 1
      local start = item.range and { item.range.start.row, item.range.start.col } or { row, col }
      local typed = start[1] == row and col >= start[2] and api.nvim_buf_get_text(0, row, start[2], row, col, {})[1] or ''
      local rest = text:sub(1, #typed) == typed and text:sub(#typed + 1) or text
      local part = kind == 'all' and rest or ghost.part(rest, kind)
      local finish = { row, col }
      if kind == 'all' and item.range and (item.range.end_.row > row or item.range.end_.col > col) then
        finish = { item.range.end_.row, item.range.end_.col }
      end
      local lines = vim.split(part, '\n', { plain = true })
      api.nvim_buf_set_text(0, row, col, finish[1], finish[2], lines)
      api.nvim_win_set_cursor(0, { row + #lines, (#lines == 1 and col or 0) + #lines[#lines] })
      local client = vim.lsp.get_client_by_id(item.client_id)
      if client and item.command then
        client:request('workspace/executeCommand', { command = item.command.command,
          arguments = item.command.arguments }, function() end, 0)
      end
    end,
  })
end

function M.cycle(delta)
  if M.native() then return vim.lsp.inline_completion.select({ count = delta }) end
  return ghost.cycle(delta)
end

function M.dismiss()
  if not M.native() then return ghost.dismiss() end
  -- the native API has no "hide": re-enabling recreates the buffer's completor, which hides it
  local filter = { bufnr = api.nvim_get_current_buf() }
  vim.lsp.inline_completion.enable(false, filter)
  vim.lsp.inline_completion.enable(true, filter)
end

-- keys -------------------------------------------------------------------------------------------

local mapped = {} ---@type string[]

local function set_keys(keys)
  for _, lhs in ipairs(mapped) do pcall(vim.keymap.del, 'i', lhs) end
  mapped = {}
  local function map(lhs, rhs, desc, fallthrough)
    if not lhs then return end
    vim.keymap.set('i', lhs, function()
      if M.config.enabled and M.shown() then
        return '<C-g>u<Cmd>lua ' .. rhs .. '<CR>' -- an undo break before the text goes in
      end
      return fallthrough and lhs or ''
    end, { expr = true, replace_keycodes = true, desc = 'dllm: ' .. desc })
    mapped[#mapped + 1] = lhs
  end
  map(keys.accept, "require('dllm').accept('all')", 'accept the suggestion', true)
  map(keys.accept_word, "require('dllm').accept('word')", 'accept the next word', true)
  map(keys.accept_line, "require('dllm').accept('line')", 'accept the rest of the line', true)
  map(keys.dismiss, "require('dllm').dismiss()", 'dismiss the suggestion', true)
  for lhs, spec in pairs({ [keys.next or 0] = { 1, 'next suggestion' }, [keys.prev or 0] = { -1, 'previous suggestion' } }) do
    if lhs ~= 0 then
      vim.keymap.set('i', lhs, function() M.cycle(spec[1]) end, { desc = 'dllm: ' .. spec[2] })
      mapped[#mapped + 1] = lhs
    end
  end
end

-- the server -------------------------------------------------------------------------------------

local function lsp_config(cfg)
  local cmd = vim.list_extend({}, cfg.cmd)
  if cfg.checkpoint then vim.list_extend(cmd, { '--checkpoint', cfg.checkpoint }) end
  local init = vim.tbl_extend('force', { inlineCompletion = true, enable = cfg.enabled }, cfg.settings)
  return {
    cmd = cmd,
    cmd_env = cfg.cmd_env,
    filetypes = cfg.filetypes,
    root_markers = cfg.root_markers,
    init_options = { dllm = init },
    -- WorkspaceEdits as documentChanges (versioned: a stale edit is refused) with change
    -- annotations, which lua/dllm/preview.lua shows hunk by hunk
    capabilities = { workspace = { workspaceEdit = { documentChanges = true,
      changeAnnotationSupport = cfg.preview.enabled and { groupsOnLabel = true } or nil } } },
    settings = { dllm = vim.tbl_extend('force', { enable = cfg.enabled }, cfg.settings) },
    handlers = {
      ['dllm/status'] = function(_, params, ctx)
        M.status[ctx.client_id] = params
        if params.state == 'error' then
          vim.notify(('dllm-ls: %s%s'):format(params.message, params.fix ~= '' and ('. Fix: ' .. params.fix) or ''),
            vim.log.levels.ERROR)
        end
        api.nvim_exec_autocmds('User', { pattern = 'DllmStatus', modeline = false, data = params })
      end,
    },
  }
end

local function on_attach(bufnr)
  if M.native() then
    vim.lsp.inline_completion.enable(M.config.enabled, { bufnr = bufnr })
  else
    ghost.attach(bufnr)
  end
end

--- Set up (or reconfigure) the plugin. Safe to call more than once.
---@param opts? table see lua/dllm/config.lua
function M.setup(opts)
  local cfg = require('dllm.config').resolve(opts)
  M.config, ghost.config, ghost.enabled = cfg, cfg, cfg.enabled
  preview.enabled, preview.keys = cfg.preview.enabled, cfg.preview.keys
  preview.install()
  if vim.fn.hlexists(cfg.hl_group) == 0 or vim.tbl_isempty(api.nvim_get_hl(0, { name = cfg.hl_group })) then
    api.nvim_set_hl(0, cfg.hl_group, { link = 'Comment', default = true })
  end
  set_keys(cfg.keys)
  api.nvim_clear_autocmds({ group = group })
  api.nvim_create_autocmd('LspAttach', { group = group, callback = function(a)
    local client = vim.lsp.get_client_by_id(a.data.client_id)
    if client and client.name == 'dllm' then on_attach(a.buf) end
  end })
  vim.lsp.config('dllm', lsp_config(cfg))
  vim.lsp.enable('dllm')
  for _, client in ipairs(vim.lsp.get_clients({ name = 'dllm' })) do -- reconfigured: already running
    client:notify('workspace/didChangeConfiguration', { settings = lsp_config(cfg).settings })
    for bufnr in pairs(client.attached_buffers) do on_attach(bufnr) end
  end
end

-- commands (plugin/dllm.lua) ---------------------------------------------------------------------

--- One line per client: its state, and the server's telemetry when `verbose`.
function M.status_lines(verbose)
  local lines = {}
  local clients = vim.lsp.get_clients({ name = 'dllm' })
  if #clients == 0 then
    return { 'dllm: no dllm-ls server is running (open a file of a configured filetype, or :checkhealth dllm)' }
  end
  for _, c in ipairs(clients) do
    local st = M.status[c.id] or { state = 'starting', message = '' }
    lines[#lines + 1] = ('dllm: %s%s (client %d, %s, ghost text: %s)'):format(st.state,
      st.message ~= '' and (' - ' .. st.message) or '', c.id, M.config.enabled and 'enabled' or 'disabled',
      M.native() and 'native' or 'plugin')
    if st.fix and st.fix ~= '' then lines[#lines + 1] = '  fix: ' .. st.fix end
    if verbose then
      local res = c:request_sync('workspace/executeCommand', { command = 'dllm.telemetry' }, 2000)
      if res and res.result then lines[#lines + 1] = '  telemetry: ' .. vim.json.encode(res.result.telemetry) end
    end
  end
  if ghost.last_error then lines[#lines + 1] = '  last error: ' .. ghost.last_error end
  return lines
end

function M.toggle(on)
  if on == nil then on = not M.config.enabled end
  M.config.enabled, ghost.enabled = on, on
  for _, c in ipairs(vim.lsp.get_clients({ name = 'dllm' })) do
    c:notify('workspace/didChangeConfiguration', { settings = lsp_config(M.config).settings })
    for bufnr in pairs(c.attached_buffers) do
      if M.native() then vim.lsp.inline_completion.enable(on, { bufnr = bufnr }) else ghost.reset(bufnr) end
    end
  end
  return on
end

function M.restart()
  local bufs = {}
  for _, c in ipairs(vim.lsp.get_clients({ name = 'dllm' })) do
    for bufnr in pairs(c.attached_buffers) do bufs[#bufs + 1] = bufnr end
    c:stop(true)
  end
  vim.defer_fn(function()
    for _, bufnr in ipairs(bufs) do
      if api.nvim_buf_is_valid(bufnr) then
        api.nvim_exec_autocmds('FileType', { buffer = bufnr, modeline = false }) -- vim.lsp.enable starts it again
      end
    end
  end, 100)
end

--- Run dllm-ls' code actions of `kind` at the cursor through vim.lsp.buf.code_action (dllm-ls
--- only): 'quickfix' ("Fix this function", "Fix syntax error": a menu), 'refactor.rewrite'
--- ("Propagate this edit") or 'source.repairFile' ("Repair this file"), applied at once when it is
--- the only one; the refactors then open the preview (lua/dllm/preview.lua). Returns false (and
--- says so) when no dllm-ls server that offers code actions is attached.
function M.code_action(kind)
  local c = vim.lsp.get_clients({ bufnr = 0, name = 'dllm' })[1]
  if not (c and c.server_capabilities.codeActionProvider) then
    vim.notify(c and 'dllm: this dllm-ls offers no code actions; update dllm-ls'
      or 'dllm: no dllm-ls server is attached to this buffer (:DllmStatus)', vim.log.levels.WARN)
    return false
  end
  vim.lsp.buf.code_action({
    context = { only = { kind }, diagnostics = {} },
    apply = kind ~= 'quickfix',
    filter = function(a, client_id) -- 0.11 passes only the action; 0.12 its client too
      return (client_id == nil or client_id == c.id) and type(a.title) == 'string' and a.title:find('^dllm%-ls: ') ~= nil
    end,
  })
  return true
end

--- "Fix this function" / "Fix syntax error" (a menu of the quick fixes).
function M.fix() return M.code_action('quickfix') end

--- "Propagate this edit": the follow-on changes of your recent edit, as a preview.
function M.propagate() return M.code_action('refactor.rewrite') end

--- "Repair this file": every function repaired, as a preview.
function M.repair_file() return M.code_action('source.repairFile') end

return M
