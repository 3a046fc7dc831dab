"""From rendered examples to micro-batches: data order, packing, and collation.

Data order is a pure function of (seed, epoch), so a resumed run replays exactly the same steps.
Each optimizer step takes `batch_size` examples; they are split into micro-batches under a token budget.
How they are split never changes the gradient, because the loss is normalised by the supervised-token
count of the whole step (see loss.py), so the split is free to optimise speed:

- packing on: examples are packed into rows of at most `row_capacity` tokens (in training about twice
  the median example, longer when the examples share a prefix, `packed_row_capacity`: attention costs a
  row's length squared), balanced so the rows are about equally long, or best-fit decreasing when that
  pads less (a micro-batch is as wide as its longest row, and best-fit's last row is often near empty:
  balanced rows measured ~15% faster on CPU for short chats, see BENCHMARKS.md); each example keeps its
  own position ids (0, 1, 2, ...) and a block-diagonal causal mask stops it from attending to its
  neighbours (position ids alone are not enough with SDPA: measured, see DESIGN.md);
- shared prefix (with packing): the tokens every example of a micro-batch call starts with (the chat
  template's preamble, a fixed system prompt or instruction) sit once at the start of each row, and each
  example's own tokens follow, at the positions they have in the example, attending to that prefix and to
  themselves. Exact, because causal attention makes a prefix's hidden states independent of what follows
  it, and the gradient through the one copy is the sum of what the copies would have received (the
  technique of prefix sharing in preference training, Wang et al. 2024, arXiv:2410.20305). On banking77 chats
  with a one-sentence system prompt it is 56% of the tokens (BENCHMARKS.md);
- packing off: one example per row, rows sorted by length so padding is small.

Targets follow the rendering's loss mask exactly: token t is a target when `loss_mask[t]`, predicted
from the hidden state at t - 1 of the same example. The mask is never re-derived here.
"""

from __future__ import annotations

import functools
import math
import os
import random
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Example:
    """One rendered training example; `index` is its position in the dataset."""

    index: int
    input_ids: list[int]
    loss_mask: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        # Token 0 has no previous position to be predicted from, so it can never be a target.
        return sum(self.loss_mask[1:])


@dataclass
class MicroBatch:
    """Tensors for one forward/backward pass.

    `attention_mask` is 4D boolean [rows, 1, L, L], True = may attend. `hidden_index` holds flat
    positions (row * L + t - 1) whose hidden state predicts `targets`; `target_example` names the
    example each target belongs to (for per-example losses). `num_tokens` counts the examples' tokens,
    `num_positions` the positions the model computes for them (fewer with a shared prefix; no padding).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    hidden_index: torch.Tensor
    targets: torch.Tensor
    target_example: torch.Tensor
    num_tokens: int
    num_positions: int = 0

    @property
    def num_targets(self) -> int:
        return int(self.targets.numel())

    def to(self, device: str | torch.device) -> MicroBatch:
        return MicroBatch(
            input_ids=self.input_ids.to(device),
            position_ids=self.position_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            hidden_index=self.hidden_index.to(device),
            targets=self.targets.to(device),
            target_example=self.target_example.to(device),
            num_tokens=self.num_tokens,
            num_positions=self.num_positions,
        )


@functools.lru_cache(maxsize=2)  # every step of an epoch asks for the same order
def epoch_order(num_examples: int, *, seed: int, epoch: int) -> tuple[int, ...]:
    """The shuffled example order of one epoch: the same (seed, epoch) always gives the same order.

    >>> epoch_order(5, seed=0, epoch=0) == epoch_order(5, seed=0, epoch=0)
    True
    """
    order = list(range(num_examples))
    random.Random(f"honed:{seed}:{epoch}").shuffle(order)
    return tuple(order)


def step_examples(num_examples: int, *, seed: int, step: int, batch_size: int) -> tuple[int, list[int]]:
    """The (epoch, example indices) of 1-based optimizer `step`. The last step of an epoch may be short."""
    steps_per_epoch = steps_in_epoch(num_examples, batch_size=batch_size)
    epoch, position = divmod(step - 1, steps_per_epoch)
    order = epoch_order(num_examples, seed=seed, epoch=epoch)
    return epoch, list(order[position * batch_size : (position + 1) * batch_size])


def steps_in_epoch(num_examples: int, *, batch_size: int) -> int:
    return max(1, -(-num_examples // batch_size))


def shard(indices: Sequence[int], *, rank: int, world_size: int) -> list[int]:
    """This rank's share of a step's examples (round-robin, so every rank gets a similar count)."""
    return list(indices[rank::world_size])


def pack_best_fit(lengths: Sequence[int], *, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: put each item (longest first) into the fullest bin it still fits.

    Returns bins as lists of item positions. An item longer than `capacity` gets a bin of its own.

    >>> pack_best_fit([5, 3, 4, 2], capacity=7)
    [[0, 3], [2, 1]]
    """
    bins: list[list[int]] = []
    free: list[int] = []
    for item in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[item]
        best = -1
        for b, room in enumerate(free):
            if size <= room and (best < 0 or room < free[best]):
                best = b
        if best < 0:
            bins.append([item])
            free.append(capacity - size)
        else:
            bins[best].append(item)
            free[best] -= size
    return bins


def pack_balanced(lengths: Sequence[int], *, capacity: int) -> list[list[int]]:
    """The fewest bins of at most `capacity` that longest-first "into the emptiest bin" filling finds, so
    bins come out about equally full. An item longer than `capacity` gets a bin of its own.

    >>> pack_balanced([5, 3, 4, 2], capacity=7)
    [[0, 3], [2, 1]]
    >>> pack_balanced([4, 4, 4, 1, 1, 1], capacity=8)
    [[0, 2], [1, 3, 4, 5]]
    """
    oversized = [[i] for i in range(len(lengths)) if lengths[i] > capacity]
    items = sorted((i for i in range(len(lengths)) if lengths[i] <= capacity), key=lambda i: (-lengths[i], i))
    count = max(1, -(-sum(lengths[i] for i in items) // capacity)) if items else 0
    while items:
        bins: list[list[int]] = [[] for _ in range(count)]
        fill = [0] * count
        for item in items:
            emptiest = min(range(count), key=lambda b: (fill[b], b))
            bins[emptiest].append(item)
            fill[emptiest] += lengths[item]
        if max(fill) <= capacity:
            return [b for b in bins if b] + oversized
        count += 1  # one bin overflowed: spread over one more
    return oversized


def pack_least_padding(lengths: Sequence[int], *, capacity: int) -> list[list[int]]:
    """Balanced or best-fit-decreasing bins, whichever pads less when every bin is padded to the fullest.

    >>> pack_least_padding([100, 60, 60, 60, 60], capacity=256)
    [[0, 3], [1, 2, 4]]
    """
    candidates = [pack_balanced(lengths, capacity=capacity), pack_best_fit(lengths, capacity=capacity)]

    def padded_size(bins: list[list[int]]) -> int:
        return len(bins) * max((sum(lengths[i] for i in b) for b in bins), default=0)

    return min(candidates, key=padded_size)


def packed_row_capacity(
    examples: Sequence[Example], *, max_length: int, shared_prefix: int = 0, attention_length: int = 0
) -> int:
    """How long a packed row may be: room for about two typical examples (twice the median length), and
    never less than the longest example, capped at `max_length`; with a shared prefix, as long as
    `cheapest_shared_row` says (capped at `max_length` too).

    Attention over a packed row costs its length squared, whatever the block-diagonal mask hides, while
    padding costs every layer: measured on smollm2-135m (LoRA, fp32, 2 cores, 16 banking77 chats of 56-101
    tokens a step), rows of up to 1024 tokens (max_length, the old capacity) ran 190 tokens/s, rows of 256
    213, rows of 128-160 (about twice the median) 224-230, rows of just the longest example (one per row,
    28% padding) 182 (BENCHMARKS.md, "Training speed" notes).

    >>> examples = [Example(i, [0] * n, [True] * n) for i, n in enumerate([56, 63, 70, 101])]
    >>> packed_row_capacity(examples, max_length=1024)
    140
    >>> packed_row_capacity(examples, max_length=1024, shared_prefix=35, attention_length=3072)
    364
    """
    lengths = sorted(len(e) for e in examples)
    if not lengths:
        return max_length
    median = lengths[len(lengths) // 2]
    capacity = max(lengths[-1], 2 * median)
    if shared_prefix and attention_length:
        capacity = max(capacity, cheapest_shared_row(shared_prefix, attention_length=attention_length))
    return min(max_length, capacity)


def cheapest_shared_row(shared_prefix: int, *, attention_length: int) -> int:
    """The row length L that computes each example's own tokens most cheaply when every row starts with the
    same `shared_prefix` P tokens.

    A row costs about L * (1 + L / attention_length) (its linear layers grow with L, its attention with L
    squared; `attention_length` is where the two are equal, see `attention_break_even`) and holds L - P
    tokens of the examples' own. That cost per own token is smallest at L = P + sqrt(P^2 + P *
    attention_length): longer rows than twice the median example, because each row computes the prefix
    once whatever it holds. Measured on smollm2-135m (LoRA, fp32, 2 cores, 8 banking77 chats a step, 35 of
    62 tokens shared): one row of 256 per step instead of three of 116 computed 13% fewer positions and
    ran 1.07x faster; a forward over 100 holdout chats in rows of 251 instead of 141, 1.16x (noisy;
    BENCHMARKS.md, "Longer rows when the examples share a prefix").

    >>> cheapest_shared_row(35, attention_length=3072)
    364
    """
    return shared_prefix + math.isqrt(shared_prefix * shared_prefix + shared_prefix * attention_length)


def attention_break_even(layer_parameters: int, attention_width: int) -> int:
    """The row length at which a decoder layer's attention costs as much as its linear layers.

    Per position the linear layers cost 2 * parameters FLOPs (forward); per (query, key) pair attention
    costs 4 * width (Q.K and the weighted sum of V, width = heads * head_dim), over all L^2 pairs of a row
    (SDPA with an explicit mask computes the masked ones too). Equal at L = parameters / (2 * width).

    >>> attention_break_even(3_538_944, 576)  # smollm2-135m: 9 heads of 64, 3.5 M parameters a layer
    3072
    """
    return max(1, layer_parameters // (2 * attention_width))


SHARED = -1  # segment id of a row's shared prefix (0 is padding, k the k-th example of the row)


def shared_prefix_length(examples: Sequence[Example]) -> int:
    """How many tokens all `examples` start with, at most one less than the shortest (each example keeps a
    token of its own); 0 for fewer than two examples.

    >>> shared_prefix_length([Example(0, [1, 2, 3, 4], [False] * 4), Example(1, [1, 2, 5], [False] * 3)])
    2
    """
    if len(examples) < 2:
        return 0
    common = os.path.commonprefix([e.input_ids for e in examples])
    return max(0, min(len(common), min(len(e) for e in examples) - 1))


def row_length(row: Sequence[Example], *, shared_prefix: int = 0) -> int:
    """Tokens of a row: the shared prefix once, then each example's own tokens."""
    return shared_prefix + sum(len(e) - shared_prefix for e in row)


def plan_rows(
    examples: Sequence[Example], *, packing: bool, row_capacity: int, shared_prefix: int = 0
) -> list[list[Example]]:
    """Group examples into rows (packed or one per row), longest rows first."""
    if packing:
        own = [len(e) - shared_prefix for e in examples]
        bins = pack_least_padding(own, capacity=max(1, row_capacity - shared_prefix))
        rows = [[examples[i] for i in b] for b in bins]
    else:
        rows = [[e] for e in examples]
    return sorted(rows, key=lambda row: -row_length(row, shared_prefix=shared_prefix))


def plan_micro_batches(
    examples: Sequence[Example], *, max_tokens: int, packing: bool, row_capacity: int, shared_prefix: int = 0
) -> list[list[list[Example]]]:
    """Split examples into micro-batches (lists of rows) whose padded size stays within `max_tokens`."""
    batches: list[list[list[Example]]] = []
    current: list[list[Example]] = []
    for row in plan_rows(examples, packing=packing, row_capacity=row_capacity, shared_prefix=shared_prefix):
        width = max(row_length(r, shared_prefix=shared_prefix) for r in [*current, row])
        if current and width * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    return batches


def collate(rows: Sequence[Sequence[Example]], *, pad_id: int = 0, shared_prefix: int = 0) -> MicroBatch:
    """Build the tensors for rows of (possibly packed) examples, right-padded to the longest row.

    With `shared_prefix` p > 0 (every example starts with the same p tokens), each row holds those p tokens
    once, then each example's tokens p, p+1, ... at position ids p, p+1, ...; a target whose predicting
    hidden state lies in the prefix points at the prefix's one copy (several targets may share it).
    """
    p = shared_prefix
    lengths = [row_length(row, shared_prefix=p) for row in rows]
    width = max(lengths)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.zeros((len(rows), width), dtype=torch.long)  # 0 = padding, k = k-th example in the row
    hidden_index: list[int] = []
    targets: list[int] = []
    target_example: list[int] = []
    for r, row in enumerate(rows):
        if p:
            input_ids[r, :p] = torch.tensor(row[0].input_ids[:p], dtype=torch.long)
            position_ids[r, :p] = torch.arange(p)
            segment[r, :p] = SHARED
        offset = p  # where the current example's own tokens start in the row
        for k, example in enumerate(row, start=1):
            n = len(example)
            input_ids[r, offset : offset + n - p] = torch.tensor(example.input_ids[p:], dtype=torch.long)
            position_ids[r, offset : offset + n - p] = torch.arange(p, n)
            segment[r, offset : offset + n - p] = k
            for t in range(1, n):
                if example.loss_mask[t]:
                    source = t - 1  # the example's position whose hidden state predicts token t
                    hidden_index.append(r * width + (source if source < p else offset + source - p))
                    targets.append(example.input_ids[t])
                    target_example.append(example.index)
            offset += n - p
    return MicroBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=block_causal_mask(segment),
        hidden_index=torch.tensor(hidden_index, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        target_example=torch.tensor(target_example, dtype=torch.long),
        num_tokens=sum(len(e) for row in rows for e in row),
        num_positions=sum(lengths),
    )


def block_causal_mask(segment: torch.Tensor) -> torch.Tensor:
    """[rows, 1, L, L] boolean: query i may attend key j when j <= i and both are in the same example, or j
    is in the row's shared prefix (segment SHARED, which every example of the row continues).

    Padding positions attend only to themselves, so no softmax row is empty (that would give NaN).
    """
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = segment[:, :, None] == segment[:, None, :]
    shared_key = (segment == SHARED)[:, None, :]
    real = (segment != 0)[:, :, None]
    diagonal = torch.eye(width, dtype=torch.bool)
    return (((same | shared_key) & causal & real) | diagonal)[:, None, :, :]


def micro_batches(
    examples: Sequence[Example], *, max_tokens: int, packing: bool, row_capacity: int, pad_id: int = 0,
    shared_prefix: int | None = None,
) -> list[MicroBatch]:
    """Plan and collate in one call. With packing, rows hold `shared_prefix` tokens once (None: as many as
    all `examples` start with, `shared_prefix_length`; 0: none); without packing, none.

    >>> examples = [Example(i, list(range(1, n + 1)), [False] * (n - 2) + [True, True])
    ...             for i, n in enumerate([5, 3, 4])]
    >>> [batch] = micro_batches(examples, max_tokens=16, packing=True, row_capacity=8, shared_prefix=0)
    >>> batch.position_ids.tolist()  # examples of 4 and 3 tokens packed in one row, positions restarting
    [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 3, 4, 0, 0]]
    >>> batch.targets.tolist(), batch.num_tokens
    ([3, 4, 2, 3, 4, 5], 12)
    >>> [batch] = micro_batches(examples, max_tokens=16, packing=True, row_capacity=8)  # all start with 1, 2
    >>> batch.input_ids.tolist(), batch.position_ids.tolist()  # 1, 2 once, then each example's own tokens
    ([[1, 2, 3, 4, 5, 3, 4, 3]], [[0, 1, 2, 3, 4, 2, 3, 2]])
    """
    prefix = (shared_prefix_length(examples) if shared_prefix is None else shared_prefix) if packing else 0
    plan = plan_micro_batches(examples, max_tokens=max_tokens, packing=packing, row_capacity=row_capacity,
                              shared_prefix=prefix)
    return [collate(rows, pad_id=pad_id, shared_prefix=prefix) for rows in plan]
