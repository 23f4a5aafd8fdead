"""Bin packing of VQA samples into fixed-length sequences, over a bounded streaming buffer.

``pack_stream`` keeps a buffer of up to ``buffer_size`` samples sorted by length. Each pack
starts with the longest sample in the buffer, then repeatedly takes the longest sample that
still fits (tokens and images), refilling the buffer from the stream as it goes; a pack is
emitted when nothing in a full buffer fits. Partly filled packs are therefore only ever emitted
when no buffered sample fits them, and the pack's leftover is smaller than the shortest sample
seen: on a FineVision-like stream this fills 4096-token packs to over 99 % (bench/packing.py).
Memory is the buffer, whatever the stream's length. Every sample is emitted exactly once; a
sample that cannot fit even alone is an error (``oversize="error"``) or its own flagged pack
(``oversize="separate"``), never truncated or dropped.

``nanovlm_pack`` is a faithful port of nanoVLM's ``ConstantLengthDataset`` packing (balanced
greedy knapsack over token-budget buffers), the baseline of the benchmark.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Pack:
    indices: tuple[int, ...]  # positions of the samples in the stream
    tokens: int
    images: int
    oversize: bool = False


def pack_stream(
    items: Iterable[tuple[int, int]],
    max_tokens: int,
    max_images: int,
    buffer_size: int = 512,
    oversize: Literal["error", "separate"] = "error",
) -> Iterator[Pack]:
    """Pack a stream of (tokens, images) samples; yields packs of stream positions."""
    stream = enumerate(items)
    lengths: list[int] = []  # sorted ascending; parallel to entries
    entries: list[tuple[int, int, int]] = []  # (tokens, index, images)
    exhausted = False

    def refill() -> Iterator[Pack]:
        nonlocal exhausted
        while not exhausted and len(entries) < buffer_size:
            nxt = next(stream, None)
            if nxt is None:
                exhausted = True
                return
            index, (tokens, images) = nxt
            if tokens > max_tokens or images > max_images:
                if oversize == "error":
                    raise ValueError(
                        f"sample {index} has {tokens} tokens and {images} images; a pack holds "
                        f"at most {max_tokens} tokens and {max_images} images: raise the limits "
                        "or filter the data"
                    )
                yield Pack((index,), tokens, images, oversize=True)
                continue
            key = (tokens, index, images)
            at = bisect.bisect_left(entries, key)
            entries.insert(at, key)
            lengths.insert(at, tokens)

    yield from refill()
    while entries:
        tokens, index, images = entries.pop()
        lengths.pop()
        chosen = [index]
        room, image_room = max_tokens - tokens, max_images - images
        while True:
            yield from refill()
            j = bisect.bisect_right(lengths, room) - 1
            while j >= 0 and entries[j][2] > image_room:
                j -= 1
            if j < 0:
                break
            t, i, m = entries.pop(j)
            lengths.pop(j)
            chosen.append(i)
            room -= t
            image_room -= m
        yield Pack(tuple(chosen), max_tokens - room, max_images - image_room)
        yield from refill()


class PackPool:
    """Drawn samples waiting to be packed (training.batch_tokens): kept sorted by length, they
    are taken out a pack at a time by ``pack_stream``'s rule (the longest first, then the longest
    that still fits, tokens and images), and the rest waits for the next micro-batch. Entries
    are (dataset, row); equal lengths go in the order they were added, so the packs depend only
    on the order of the draws (the plan is the same in every process, and after a resume)."""

    def __init__(self, max_tokens: int, max_images: int) -> None:
        self.max_tokens, self.max_images = max_tokens, max_images
        self._entries: list[tuple[int, int, int, str, int]] = []  # (tokens, seq, images, ...)
        self._seq = 0
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, name: str, index: int, tokens: int, images: int) -> None:
        if tokens > self.max_tokens or images > self.max_images:
            raise ValueError(
                f"datasets.{name} row {index} has {tokens} tokens and {images} images; a pack "
                f"holds at most {self.max_tokens} tokens and {self.max_images} images "
                "(training.pack_max_tokens / pack_max_images): `orch validate` names the row"
            )
        bisect.insort(self._entries, (tokens, self._seq, images, name, index))
        self._seq += 1
        self.tokens += tokens

    def take(self, n: int) -> list[list[tuple[str, int, int]]]:
        """``n`` packs of (dataset, row, tokens), fewer only when the pool runs out."""
        packs: list[list[tuple[str, int, int]]] = []
        entries = self._entries
        while entries and len(packs) < n:
            tokens, _, images, name, index = entries.pop()
            chosen = [(name, index, tokens)]
            room, image_room = self.max_tokens - tokens, self.max_images - images
            while True:
                j = bisect.bisect_right(entries, (room, float("inf"))) - 1
                while j >= 0 and entries[j][2] > image_room:
                    j -= 1
                if j < 0:
                    break
                t, _, m, nm, ix = entries.pop(j)
                chosen.append((nm, ix, t))
                room -= t
                image_room -= m
            self.tokens -= self.max_tokens - room
            packs.append(chosen)
        return packs

    def pending(self) -> list[tuple[str, int]]:
        """The waiting samples in the order they were added (what a checkpoint saves)."""
        return [(e[3], e[4]) for e in sorted(self._entries, key=lambda e: e[1])]


def fill_ratio(packs: Sequence[Pack], max_tokens: int) -> float:
    regular = [p for p in packs if not p.oversize]
    return sum(p.tokens for p in regular) / (len(regular) * max_tokens) if regular else 0.0


# ----------------------------------------------------------------------------- the baseline


def nanovlm_balanced_greedy_knapsack(
    lengths: Sequence[int],
    image_counts: Sequence[int],
    L: int,  # nanoVLM's name
    delta: int = 0,
    max_images_per_knapsack: int | None = None,
    rng: random.Random | None = None,
) -> list[list[int]]:
    """nanoVLM ``ConstantLengthDataset._balanced_greedy_knapsack`` (data/advanced_datasets.py):
    items sorted by length, descending; each goes to the least-loaded knapsack where it fits
    (tokens and images), else to a new knapsack; ``ceil(sum/L) + delta`` knapsacks to start;
    groups shuffled, empty ones removed."""
    items = sorted(
        enumerate(zip(lengths, image_counts, strict=True)), key=lambda x: x[1][0], reverse=True
    )
    min_knapsacks = (sum(lengths) + L - 1) // L + delta
    load = [0] * min_knapsacks
    image_load = [0] * min_knapsacks
    groups: list[list[int]] = [[] for _ in range(min_knapsacks)]
    for idx, (item_len, item_images) in items:
        suitable = None
        for ks in sorted(range(len(load)), key=load.__getitem__):
            fits = load[ks] + item_len <= L
            images_fit = (
                max_images_per_knapsack is None
                or image_load[ks] + item_images <= max_images_per_knapsack
            )
            if fits and images_fit:
                suitable = ks
                break
        if suitable is None:
            suitable = len(load)
            load.append(0)
            image_load.append(0)
            groups.append([])
        groups[suitable].append(idx)
        load[suitable] += item_len
        image_load[suitable] += item_images
    (rng or random.Random(42)).shuffle(groups)
    return [g for g in groups if g]


def nanovlm_pack(
    items: Iterable[tuple[int, int]],
    seq_length: int,
    num_of_sequences: int,
    max_images_per_knapsack: int,
    max_sample_length: int | None = None,
    max_images_per_example: int = 4,
) -> Iterator[Pack]:
    """nanoVLM's ``ConstantLengthDataset._producer``: fill a buffer until it holds
    ``seq_length * num_of_sequences`` tokens (each sample + 1 separator pad token, samples of
    ``max_sample_length`` tokens or more and with too many images skipped), pack the whole buffer
    with the balanced greedy knapsack (delta=5), emit every group, start a new buffer.
    Pack.tokens counts the samples' own tokens (not the separators)."""
    limit = max_sample_length if max_sample_length is not None else seq_length
    rng = random.Random(42)
    stream = enumerate(items)
    more = True
    while more:
        buffer: list[tuple[int, int, int]] = []
        buffer_len = 0
        while buffer_len < seq_length * num_of_sequences:
            nxt = next(stream, None)
            if nxt is None:
                more = False
                break
            index, (tokens, images) = nxt
            if tokens + 1 >= limit or images > max_images_per_example:
                continue  # nanoVLM skips these samples
            buffer.append((index, tokens + 1, images))
            buffer_len += tokens + 1
        if not buffer:
            break
        groups = nanovlm_balanced_greedy_knapsack(
            [b[1] for b in buffer],
            [b[2] for b in buffer],
            seq_length,
            delta=5,
            max_images_per_knapsack=max_images_per_knapsack,
            rng=rng,
        )
        for g in groups:
            yield Pack(
                tuple(buffer[i][0] for i in g),
                sum(buffer[i][1] - 1 for i in g),
                sum(buffer[i][2] for i in g),
            )
