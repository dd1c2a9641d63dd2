--- dllm.nvim configuration: the defaults (each one annotated) and their validation.
local M = {}

---@class dllm.Keys
---@field accept string|false       accept the whole suggestion (falls through to the key itself when none is shown)
---@field accept_word string|false  accept the next word of the suggestion
---@field accept_line string|false  accept the rest of the suggestion's current line
---@field next string|false         show the next suggestion (asks the server for alternatives once)
---@field prev string|false         show the previous suggestion
---@field dismiss string|false      hide the suggestion until the next keystroke

---@class dllm.PreviewKeys
---@field accept string      accept the hunk under the cursor
---@field reject string      reject the hunk under the cursor
---@field accept_all string  accept every pending hunk
---@field reject_all string  reject every pending hunk
---@field apply string       apply the accepted hunks now (the pending ones are rejected)
---@field cancel string      close the preview, apply nothing

---@class dllm.Config
M.defaults = {
  -- Turn inline suggestions on at start (`:DllmToggle` flips it at run time).
  enabled = true,
  -- The language server's command (a list, no shell). `checkpoint` below is appended as `--checkpoint DIR`.
  cmd = { 'dllm-ls', 'serve' },
  -- Extra environment for the server process, e.g. { OMP_NUM_THREADS = '4' }.
  cmd_env = nil,
  -- Model directory (config.json, model.safetensors, tokenizer.json); nil: the model shipped with dllm-ls.
  checkpoint = nil,
  -- Filetypes in which the server starts.
  filetypes = { 'python', 'lua', 'c', 'cpp', 'rust', 'go', 'javascript', 'typescript', 'java', 'sh' },
  -- Files or folders that mark a project root (a file outside any project still gets completions).
  root_markers = { '.git', 'pyproject.toml', 'setup.py', 'package.json', 'Cargo.toml', 'go.mod' },
  -- Server settings (the `dllm` section; keys as in lsp_server/settings.py, camelCase or snake_case),
  -- e.g. { maxTokens = 64, mode = 'auto', device = 'cpu' }. Sent at start and on `workspace/configuration`.
  settings = {},
  -- Ghost text: true = Neovim's own `vim.lsp.inline_completion` (0.12+), false = drawn by this plugin,
  -- 'auto' = native where it exists.
  native = 'auto',
  -- Milliseconds between the last keystroke and the request (the plugin's own ghost text; the server
  -- debounces too). Stale requests are cancelled either way.
  debounce_ms = 30,
  -- Highlight group of the ghost text (linked to Comment unless you define it).
  hl_group = 'DllmGhost',
  -- Refactor previews ("Propagate this edit", "Repair this file"): the edit is shown as a diff, hunk
  -- by hunk, and only the hunks you accept are applied (one undo step; nothing is saved).
  -- enabled = false applies the whole edit as Neovim does. Keys work in the preview buffer.
  preview = {
    enabled = true,
    ---@type dllm.PreviewKeys
    keys = { accept = 'a', reject = 'r', accept_all = 'A', reject_all = 'R', apply = '<CR>', cancel = 'q' },
  },
  -- Keys in insert mode; false disables one.
  ---@type dllm.Keys
  keys = {
    accept = '<Tab>',
    accept_word = '<M-Right>',
    accept_line = '<M-C-Right>',
    next = '<M-]>',
    prev = '<M-[>',
    dismiss = '<C-]>',
  },
}

local function key_ok(v)
  return v == false or (type(v) == 'string' and v ~= '')
end

--- The defaults merged with `opts`; raises a clear error naming the bad option.
---@param opts? table
---@return dllm.Config
function M.resolve(opts)
  vim.validate('opts', opts, 'table', true)
  local cfg = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  if opts and opts.filetypes then cfg.filetypes = opts.filetypes end -- lists replace, not merge
  if opts and opts.cmd then cfg.cmd = opts.cmd end
  if opts and opts.root_markers then cfg.root_markers = opts.root_markers end
  vim.validate('enabled', cfg.enabled, 'boolean')
  vim.validate('cmd', cfg.cmd, function(v)
    return type(v) == 'table' and #v > 0 and vim.iter(v):all(function(s) return type(s) == 'string' end)
  end, 'a non-empty list of strings, e.g. { "dllm-ls", "serve" }')
  vim.validate('cmd_env', cfg.cmd_env, 'table', true)
  vim.validate('checkpoint', cfg.checkpoint, 'string', true)
  vim.validate('filetypes', cfg.filetypes, 'table')
  vim.validate('root_markers', cfg.root_markers, 'table')
  vim.validate('settings', cfg.settings, 'table')
  vim.validate('native', cfg.native, function(v) return v == 'auto' or type(v) == 'boolean' end, "true, false or 'auto'")
  vim.validate('debounce_ms', cfg.debounce_ms, function(v)
    return type(v) == 'number' and v >= 0
  end, 'a number of milliseconds >= 0')
  vim.validate('hl_group', cfg.hl_group, 'string')
  vim.validate('preview', cfg.preview, 'table')
  vim.validate('preview.enabled', cfg.preview.enabled, 'boolean')
  vim.validate('preview.keys', cfg.preview.keys, 'table')
  for name in pairs(cfg.preview.keys) do
    if M.defaults.preview.keys[name] == nil then
      error(('dllm: unknown key option preview.keys.%s (known: %s)'):format(name,
        table.concat(vim.tbl_keys(M.defaults.preview.keys), ', ')), 0)
    end
    vim.validate('preview.keys.' .. name, cfg.preview.keys[name], function(v)
      return type(v) == 'string' and v ~= ''
    end, 'a key such as "a"')
  end
  vim.validate('keys', cfg.keys, 'table')
  for name in pairs(M.defaults.keys) do
    vim.validate('keys.' .. name, cfg.keys[name], key_ok, 'a key such as "<Tab>", or false')
  end
  for name in pairs(cfg.keys) do
    if M.defaults.keys[name] == nil then
      error(('dllm: unknown key option keys.%s (known: %s)'):format(name,
        table.concat(vim.tbl_keys(M.defaults.keys), ', ')), 0)
    end
  end
  return cfg
end

return M
