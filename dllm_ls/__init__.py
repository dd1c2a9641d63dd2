"""dllm-ls: code completion for editors from a block-diffusion language model.

The code lives in four packages mapped under this namespace (see pyproject.toml):
`dllm_ls.diffusion_core`, `dllm_ls.kernels`, `dllm_ls.trainer`, `dllm_ls.lsp_server`.
"""

__version__ = "0.1.0"
