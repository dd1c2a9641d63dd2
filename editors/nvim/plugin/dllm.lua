-- dllm.nvim user commands; the plugin itself starts with require('dllm').setup({...}).
if vim.g.loaded_dllm then return end
vim.g.loaded_dllm = true

local function need_setup()
  if not require('dllm').config then
    vim.notify("dllm: call require('dllm').setup() first (see :help dllm / the README)", vim.log.levels.WARN)
    return true
  end
end

vim.api.nvim_create_user_command('DllmStatus', function(a)
  if need_setup() then return end
  vim.notify(table.concat(require('dllm').status_lines(a.bang), '\n'))
end, { bang = true, desc = 'dllm-ls: server state (with ! the telemetry too)' })

vim.api.nvim_create_user_command('DllmToggle', function()
  if need_setup() then return end
  local on = require('dllm').toggle()
  vim.notify('dllm: inline suggestions ' .. (on and 'enabled' or 'disabled'))
end, { desc = 'dllm-ls: turn inline suggestions on/off' })

vim.api.nvim_create_user_command('DllmRestart', function()
  if need_setup() then return end
  require('dllm').restart()
end, { desc = 'dllm-ls: restart the language server' })

vim.api.nvim_create_user_command('DllmFix', function()
  if need_setup() then return end
  require('dllm').fix()
end, { desc = 'dllm-ls: fix this function (code actions)' })

vim.api.nvim_create_user_command('DllmPropagate', function()
  if need_setup() then return end
  require('dllm').propagate()
end, { desc = 'dllm-ls: propagate your recent edit through the file (a preview, hunk by hunk)' })

vim.api.nvim_create_user_command('DllmRepairFile', function()
  if need_setup() then return end
  require('dllm').repair_file()
end, { desc = 'dllm-ls: repair every function of the file (a preview, hunk by hunk)' })
