"""Sets of non-negative integers kept as sorted, disjoint half-open ranges: received packet
numbers (for ACK frames), acknowledged or pending stream bytes."""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeSet:
    __slots__ = ("_ranges",)

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, stop in ranges or []:
            self.add(start, stop)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges})"

    def __contains__(self, value: int) -> bool:
        ranges = self._ranges
        if ranges and ranges[-1][0] <= value:  # the usual question: the newest range
            return value < ranges[-1][1]
        index = bisect.bisect_right(self._ranges, (value, float("inf"))) - 1
        return index >= 0 and self._ranges[index][0] <= value < self._ranges[index][1]

    def add(self, start: int, stop: int | None = None) -> None:
        """Add [start, stop) (a single value when ``stop`` is None)."""
        stop = start + 1 if stop is None else stop
        if stop <= start:
            return
        ranges = self._ranges
        if ranges and ranges[-1][0] <= start:  # at or past the last range: the usual case
            low, high = ranges[-1]
            if start <= high:
                ranges[-1] = (low, max(high, stop))
            else:
                ranges.append((start, stop))
            return
        index = bisect.bisect_left(ranges, (start, start))
        if index > 0 and ranges[index - 1][1] >= start:
            index -= 1
        end = index
        while end < len(ranges) and ranges[end][0] <= stop:
            start, stop = min(start, ranges[end][0]), max(stop, ranges[end][1])
            end += 1
        ranges[index:end] = [(start, stop)]

    def subtract(self, start: int, stop: int) -> None:
        """Remove [start, stop)."""
        ranges = self._ranges
        if stop <= start:
            return
        if ranges and start <= ranges[0][0] and stop <= ranges[0][1]:  # a prefix: the usual
            if stop > ranges[0][0]:
                if stop < ranges[0][1]:
                    ranges[0] = (stop, ranges[0][1])
                else:
                    ranges.pop(0)
            return
        result = []
        for low, high in self._ranges:
            if high <= start or low >= stop:
                result.append((low, high))
                continue
            if low < start:
                result.append((low, start))
            if high > stop:
                result.append((stop, high))
        self._ranges = result

    def shift(self) -> tuple[int, int]:
        """Remove and return the lowest range."""
        return self._ranges.pop(0)

    def bounds(self) -> tuple[int, int]:
        return self._ranges[0][0], self._ranges[-1][1]

    def first(self) -> tuple[int, int]:
        return self._ranges[0]

    def missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of [start, stop) not in the set, lowest first."""
        ranges = self._ranges
        if not ranges or ranges[-1][1] <= start:  # past the last range: the usual case
            return [(start, stop)] if start < stop else []
        index = max(bisect.bisect_right(ranges, (start, float("inf"))) - 1, 0)
        gaps = []
        while index < len(ranges) and start < stop:
            low, high = ranges[index]
            if low >= stop:
                break
            if low > start:
                gaps.append((start, low))
            start, index = max(start, high), index + 1
        if start < stop:
            gaps.append((start, stop))
        return gaps

    def descending(self, count: int) -> list[tuple[int, int]]:
        """The newest ``count`` ranges as inclusive (low, high) pairs, highest first: the shape
        of an ACK frame. It costs ``count``, not the size of the set."""
        newest = self._ranges[max(len(self._ranges) - count, 0) :]
        return [(low, high - 1) for low, high in reversed(newest)]
