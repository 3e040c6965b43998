"""Text from a candidate is data: make it safe to store and to show to a person.

Exception messages, tracebacks and output of candidate code reach hints, the store, the
terminal (`autopilot show`), the reports and the notebook panel. A hostile candidate can put
terminal control sequences in them (clear the screen, set the window title, plant a
hyperlink, recolour text) or Unicode bidi overrides that make text display other than it
reads. :func:`clean` removes all of that and bounds the length; text without such characters
comes back unchanged.
"""

from __future__ import annotations

import re
from typing import Any

# Whole sequences first, so that their parameters do not stay behind as visible junk.
_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI (ESC [ or the C1 byte 0x9b) ... final byte
    # OSC, DCS, SOS, PM and APC strings (ESC ] P X ^ _ or their C1 bytes) up to BEL or ST;
    # the payload stops at any ESC, as a terminal's does, so the scan stays linear
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"  # any other escape sequence: ESC, intermediates, final byte
)
# Then every character left that a terminal acts on or that reorders text: C0 controls but
# newline and tab, DEL, C1 controls, a lone ESC, bidi embeddings/overrides and isolates.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Lone surrogates (bytes decoded with surrogateescape) would make print() raise.
_SURROGATES = re.compile("[\ud800-\udfff]")

DEFAULT_LIMIT = 2000


def clean(text: Any, limit: int | None = DEFAULT_LIMIT) -> str:
    """``text`` (``str()`` of it when not a string) without control sequences, control
    characters other than newline and tab, or bidi overrides; at most ``limit`` characters
    (None: no bound), the head kept and ``... [N characters cut]`` ending it.

    Idempotent for ``limit`` of 40 or more, so a cleaned field read back and cleaned again
    stays equal. Never raises.
    """
    try:
        raw = text if isinstance(text, str) else str(text)
    except Exception:  # a hostile __str__ must not break a report
        raw = f"<unprintable {type(text).__name__}>"
    tail = 0
    if limit is not None and len(raw) > 4 * limit + 1024:
        # clean only a head of a huge text: the tail would be cut anyway
        keep = 4 * max(limit, 0) + 1024
        raw, tail = raw[:keep], len(raw) - keep
    out = _CONTROLS.sub("", _SEQUENCES.sub("", raw))
    out = _SURROGATES.sub("\ufffd", out)
    if limit is None or (not tail and len(out) <= limit):
        return out
    total = len(out) + tail
    shown = out[:max(limit - len(f"... [{total} characters cut]"), 0)]
    return f"{shown}... [{total - len(shown)} characters cut]"


def clean_line(text: Any, limit: int | None = DEFAULT_LIMIT) -> str:
    """:func:`clean` on one line, for a table cell: newlines and tabs become spaces."""
    return clean(text, limit).replace("\n", " ").replace("\t", " ")
