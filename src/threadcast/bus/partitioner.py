"""Key -> partition, the way Kafka's Java client does it.

`partition_for` hashes the UTF-8 bytes of the key with Kafka's murmur2 (`Utils.murmur2`) and
takes `toPositive(hash) % partitions`, so one key lands on the same partition number in the
embedded log and on a Kafka broker fed by the Java client or by librdkafka configured with
`partitioner=murmur2_random`. Records without a key are spread round robin.
"""

from __future__ import annotations

import itertools

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF

_round_robin = itertools.count()


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: the 32-bit hash as a signed Java int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length - length % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length - tail
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str | None, partitions: int) -> int:
    """The partition of a record with `key` in a topic of `partitions` partitions."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    if key is None:
        return next(_round_robin) % partitions
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
