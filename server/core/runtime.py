"""Process-level tuning for the web workers."""

from __future__ import annotations

import gc

# A submission allocates thousands of short-lived objects (300 trials of dicts and values):
# with the default gen-0 threshold of 700 that is several collections per request, and the
# occasional full collection walks every long-lived object the app holds.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Move what start-up allocated out of the collector's way, then collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
