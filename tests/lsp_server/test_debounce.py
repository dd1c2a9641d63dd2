"""The adaptive debounce rule."""

from dllm_ls.lsp_server.debounce import DEFAULT_MS, MAX_MS, MIN_MS, AdaptiveDebounce


def typed(d, intervals_ms, t=100.0):
    d.keystroke(t)
    for ms in intervals_ms:
        t += ms / 1000
        d.keystroke(t)
    return t


def test_fixed_setting_wins():
    d = AdaptiveDebounce(fixed_ms=40)
    typed(d, [500, 500])
    assert d.delay_ms() == 40


def test_follows_the_typing_rhythm_within_bounds():
    d = AdaptiveDebounce()
    assert d.delay_ms() == DEFAULT_MS
    typed(d, [120, 100, 110, 5000, 130])  # the 5 s pause is not rhythm
    assert abs(d.delay_ms() - 115) < 1e-6
    d = AdaptiveDebounce()
    typed(d, [2, 3, 2])
    assert d.delay_ms() == MIN_MS
    d = AdaptiveDebounce()
    typed(d, [900, 800, 700])
    assert d.delay_ms() == MAX_MS


def test_a_fast_model_shortens_the_wait():
    d = AdaptiveDebounce()
    typed(d, [200, 200, 200])
    d.model_time(30)
    d.model_time(40)
    assert d.delay_ms() == 35
    d.model_time(900)
    d.model_time(900)
    d.model_time(900)
    assert abs(d.delay_ms() - 200) < 1e-6  # a slow model: wait for the user's rhythm
