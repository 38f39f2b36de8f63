"""The legacy :7150 error bus: its wire dialects, lenient JSON and timestamps.

``dialects.read_frames(frames, local_tz)`` classifies one frame set and
decodes it (``Decoded``) or says why it cannot (``Rejected``);
``bridge.pipeline.decode.LegacyDecoder`` turns that into contracts.
Source: legacy-bus.md §1 and §9.
"""

from bridge.legacy.dialects import Decoded, Rejected, read_frames
from bridge.legacy.lenient_json import LenientJSONError, loads_lenient
from bridge.legacy.timestamps import parse_timestamp

__all__ = [
    "Decoded",
    "LenientJSONError",
    "Rejected",
    "loads_lenient",
    "parse_timestamp",
    "read_frames",
]
