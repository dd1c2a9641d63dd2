"""A phase timer shared by the step profiles (scripts/host_step_bench.py, server_step_profile.py)."""
import time


def time_into(spent: dict, name: str, owner, attr: str):
    """Replace `owner.attr` (a function of a module, class or object) by a wrapper that adds each
    call's wall time to `spent[name]`."""
    fn = getattr(owner, attr)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t
    setattr(owner, attr, wrapper)
