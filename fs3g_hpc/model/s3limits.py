"""S3's limits (AWS documentation, late 2025) and the part-sizing rule that follows from them: pure, no boto3.

One home for every limit the planner, the policy checks, the uploader, restore and estimates rely on.
"""

from __future__ import annotations

from .sizes import GIB, MIB

S3_MIN_PART_BYTES = 5 * MIB
S3_MAX_PART_BYTES = 5 * GIB
S3_MAX_PARTS = 10_000
S3_MAX_PUT_BYTES = 5 * GIB
S3_MAX_OBJECT_BYTES = S3_MAX_PARTS * S3_MAX_PART_BYTES  # 48.8 TiB
S3_MAX_KEY_BYTES = 1024  # UTF-8 bytes of an object key


class ObjectTooLarge(ValueError):
    """A file larger than S3's largest object: no part size can send it, and no retry will mend that."""


def part_size_for(size_bytes: int, buffer_size_bytes: int) -> int:
    """The buffer size, grown to ceil(size / 10,000) rounded up to a whole MiB when the file needs more parts.
    ObjectTooLarge past S3's largest object."""
    if size_bytes > S3_MAX_OBJECT_BYTES:
        raise ObjectTooLarge(f"{size_bytes} bytes is over S3's largest object ({S3_MAX_OBJECT_BYTES} bytes)")
    needed = -(-size_bytes // S3_MAX_PARTS)
    needed = -(-needed // MIB) * MIB
    return min(max(buffer_size_bytes, needed), S3_MAX_PART_BYTES)
