--- :checkhealth dllm - every failure is followed by how to fix it.
local M = {}

local h = vim.health

local function start_server(cmd, env, timeout_ms)
  -- a throwaway client (not attached to any buffer): initialize, then wait for dllm/status
  local status
  local ok, id = pcall(vim.lsp.start, {
    name = 'dllm-health', cmd = cmd, cmd_env = env, root_dir = vim.fn.getcwd(),
    init_options = { dllm = { inlineCompletion = true } },
    handlers = { ['dllm/status'] = function(_, params) if params.state ~= 'loading' then status = params end end },
  }, { attach = false, reuse_client = function() return false end })
  if not ok or not id then return nil, tostring(id or 'the server did not start') end
  local client = vim.lsp.get_client_by_id(id)
  vim.wait(timeout_ms, function() return status ~= nil or client == nil or client:is_stopped() end, 50)
  local info = { status = status, initialized = client and client.initialized }
  if client and not client:is_stopped() and status then
    local res = client:request_sync('workspace/executeCommand', { command = 'dllm.telemetry' }, 5000)
    info.core = res and res.result and res.result.core
  end
  if client then client:stop(true) end
  return info
end

function M.check()
  local dllm = require('dllm')
  local cfg = dllm.config or require('dllm.config').defaults
  h.start('dllm: Neovim')
  local v = vim.version()
  local vs = ('%d.%d.%d'):format(v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.11') == 0 then
    h.error('Neovim ' .. vs .. ' is too old', { 'dllm.nvim needs Neovim 0.11 or newer (vim.lsp.config/vim.lsp.enable)' })
    return
  end
  h.ok('Neovim ' .. vs .. (vim.lsp.inline_completion and ' (native vim.lsp.inline_completion)' or ' (ghost text drawn by the plugin)'))
  if not dllm.config then
    h.warn("setup() has not been called", { "add require('dllm').setup({}) to your config (defaults are checked below)" })
  else
    h.ok('setup() done; suggestions ' .. (cfg.enabled and 'enabled' or 'disabled (:DllmToggle)'))
  end

  h.start('dllm: server')
  local cmd = vim.list_extend({}, cfg.cmd)
  if cfg.checkpoint then vim.list_extend(cmd, { '--checkpoint', cfg.checkpoint }) end
  if vim.fn.executable(cmd[1]) == 0 then
    h.error(('server command not found: %s'):format(cmd[1]), {
      'install the server: pip install dllm-ls (in a virtualenv: put its bin/ on $PATH)',
      "or point the plugin at it: require('dllm').setup({ cmd = { '/path/to/dllm-ls', 'serve' } })",
    })
    return
  end
  h.ok('server command: ' .. table.concat(cmd, ' ') .. ' (' .. vim.fn.exepath(cmd[1]) .. ')')
  local info, err = start_server(cmd, cfg.cmd_env, 60000)
  if not info or not info.initialized then
    h.error('the server does not start: ' .. (err or 'no answer to initialize'), {
      'run the command in a terminal to see its error: ' .. table.concat(cmd, ' '),
      'dllm-ls serve --log-file /tmp/dllm-ls.log writes a detailed log',
    })
    return
  end
  h.ok('server starts and answers initialize')
  local st = info.status
  if not st then
    h.error('the server did not report its model within 60 s', { 'see :DllmStatus; run the command with --log-file' })
    return
  end
  if info.core then
    h.ok(('core reachable: %s on %s'):format(info.core.state or '?', info.core.device or '?'))
  end
  if st.state == 'ready' or st.state == 'disabled' then
    h.ok('model loaded: ' .. (st.message ~= '' and st.message or st.state))
  else
    h.error('model not loaded: ' .. (st.message or st.state), { st.fix ~= '' and st.fix or 'see :DllmStatus' })
  end
end

return M
