"""In-memory backends: the test kit's default, faithful to the interfaces' contracts but
kept in process memory (nothing survives the process)."""

from threadcast.toolkit.memory.edge import MemoryEdge, Pushed
from threadcast.toolkit.memory.log import MemoryLog
from threadcast.toolkit.memory.queue import MemoryQueue

__all__ = ["MemoryEdge", "MemoryLog", "MemoryQueue", "Pushed"]
