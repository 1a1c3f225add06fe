"""
The gatehouse test suite (trial).

Hypothesis settings for the whole suite: no per-example deadline (CI
machines are shared and slow at times), and no "explain" phase, whose
tracing makes a failing property test with large examples take minutes to
report instead of seconds.
"""

from hypothesis import Phase, settings

settings.register_profile(
    "gatehouse",
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.load_profile("gatehouse")
