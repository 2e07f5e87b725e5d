"""Progress bars for long work — training, evaluation, embedding, mining, tokenising, `data prepare`, the toy
model's build: tqdm on stderr, shown only where stderr is a terminal (tqdm's `disable=None`) and only once the
work has taken `DELAY_S` seconds, so a log file, CI or a Ray trial (whose stderr is a file) never gets one and
short work does not flicker; only rank 0 of several workers (`RANK`, as torchrun and Ray Train set it) draws
them. `switch(False)` turns them off for the process (a pipeline config's
`progress: false`, which the search sets for its trials).

  with bar(total, "embed", unit="sent") as b:
      ...; b.update(n)
"""

from __future__ import annotations

import os
import sys

DELAY_S = 2.0
_ON = [True]


def switch(on: bool) -> None:
    """Bars on (where stderr is a terminal) or off for this process from now on."""
    _ON[0] = bool(on)


def quiet_libraries() -> None:
    """Hugging Face's own bars (transformers' "Writing model shards", the Hub's downloads) follow the same rule:
    off where stderr is not a terminal, so a log file gets no bar frames. Sets `HF_HUB_DISABLE_PROGRESS_BARS`
    (read when transformers is imported; a value the user set is kept) without importing either library."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def bar(total: int | None, desc: str, unit: str = "it", **kwargs):
    """A tqdm bar of `total` steps (None: a counter) that closes itself as a context manager; a no-op object
    (same methods) when bars are off or stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True,
                delay=DELAY_S, disable=None if _ON[0] and os.environ.get("RANK", "0") == "0" else True, **kwargs)
