"""Settings: camelCase and snake_case, nested or not, bad values warned about and ignored."""

import dataclasses

from dllm_ls.lsp_server.settings import Settings, parse_settings


def test_defaults_and_every_field_documented():
    s = Settings()
    assert s.enable and s.debounce_ms is None and s.mode == "auto" and s.modes == ["line", "block"]
    source = open(__import__("dllm_ls.lsp_server.settings", fromlist=["x"]).__file__).read()
    for f in dataclasses.fields(Settings):  # each field is followed by its docstring
        assert f'    {f.name}:' in source and '"""' in source.split(f"    {f.name}:")[1].split("\n")[1]


def test_camel_and_snake_case_nested_or_not():
    s, w = parse_settings({"dllm": {"maxTokens": 32, "block_size": 8, "debounceMs": "auto", "modes": ["line"]}})
    assert (s.max_tokens, s.block_size, s.debounce_ms, s.modes) == (32, 8, None, ["line"]) and w == []
    s, w = parse_settings({"threshold": 0.5, "debounceMs": 120, "inlineCompletion": True})
    assert (s.threshold, s.debounce_ms, s.inline_completion) == (0.5, 120, True) and w == []


def test_bad_values_keep_the_previous_value_and_say_why():
    base = Settings(max_tokens=48)
    s, w = parse_settings({"dllm": {"maxTokens": "many", "threshold": 3, "mode": "paragraph", "nope": 1,
                                    "enable": "yes", "device": "tpu"}}, base)
    assert s == base
    text = " | ".join(w)
    for needle in ["dllm.maxTokens = 'many' is invalid (expected 1-1024); keeping 48", "threshold",
                   '"auto" or "line" or "block"', "unknown setting dllm.nope", "dllm.enable", "cuda:N"]:
        assert needle in text


def test_not_ours_or_null():
    base = Settings(max_tokens=7)
    assert parse_settings(None, base) == (base, [])
    assert parse_settings({"python": {"x": 1}}, base) == (base, [])
    assert parse_settings({"dllm": None}, base) == (base, [])
    s, w = parse_settings([1, 2], base)
    assert s == base and "JSON object" in w[0]
