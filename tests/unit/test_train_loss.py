"""The loss is the mean over supervised tokens of the whole step, computed only where needed, in chunks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from honed.train.batching import Example, collate, micro_batches
from honed.train.loss import loss_sum, model_parts, per_example_losses, step_normaliser, token_losses


def make_examples(n: int, *, seed: int = 0) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(6, 40, (1,), generator=g))
        ids = torch.randint(3, 427, (length,), generator=g).tolist()
        # A prompt part, then an answer; some examples get two supervised spans.
        mask = [False] * length
        start = length // 2
        mask[start:] = [True] * (length - start)
        if i % 3 == 0:
            mask[2:4] = [True, True]
        out.append(Example(index=i, input_ids=ids, loss_mask=mask))
    return out


@pytest.fixture(scope="module")
def model(tiny_model):
    """The shared tiny model (eval mode: no dropout in it anyway); its gradients are dropped afterwards."""
    yield tiny_model
    tiny_model.zero_grad(set_to_none=True)


def step_grads(model, groups: list[list[Example]]) -> dict[str, torch.Tensor]:
    """Accumulate one optimizer step over micro-batches exactly as the loop does."""
    model.zero_grad(set_to_none=True)
    batches = [collate([[e] for e in group]) for group in groups]
    normaliser = step_normaliser(batches)
    for batch in batches:
        (loss_sum(model, batch, chunk_size=7) / normaliser).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_one_micro_batch_of_8_equals_4_micro_batches_of_2(model):
    examples = make_examples(8)
    whole = step_grads(model, [examples])
    split = step_grads(model, [examples[i : i + 2] for i in range(0, 8, 2)])
    assert whole.keys() == split.keys() and whole
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], atol=1e-6, rtol=1e-5, msg=name)


def test_mean_of_micro_batch_means_would_differ(model):
    """Guards the test above: the naive normalisation gives different gradients on this data."""
    examples = make_examples(8)
    whole = step_grads(model, [examples])
    model.zero_grad(set_to_none=True)
    for i in range(0, 8, 2):
        batch = collate([[e] for e in examples[i : i + 2]])
        (loss_sum(model, batch) / batch.num_targets / 4).backward()
    naive = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any(not torch.allclose(naive[n], whole[n], atol=1e-6) for n in whole)


def test_token_losses_match_full_logits_reference(model):
    examples = make_examples(5, seed=1)
    batch = collate([[e] for e in examples])
    with torch.no_grad():
        losses, _ = token_losses(model, batch, chunk_size=3)
        expected = []
        for e in examples:
            logits = model(torch.tensor([e.input_ids])).logits[0]
            ids, mask = torch.tensor(e.input_ids), torch.tensor(e.loss_mask)
            expected.append(F.cross_entropy(logits[:-1][mask[1:]], ids[1:][mask[1:]], reduction="none"))
    torch.testing.assert_close(losses, torch.cat(expected), atol=1e-5, rtol=1e-5)


def test_packed_and_unpacked_give_the_same_per_example_losses(model):
    examples = make_examples(7, seed=2)
    with torch.no_grad():
        unpacked = per_example_losses(model, collate([[e] for e in examples]))
        (packed_batch,) = micro_batches(examples, max_tokens=4096, packing=True, row_capacity=80)
        assert packed_batch.input_ids.shape[0] < len(examples)  # several examples share a row
        packed = per_example_losses(model, packed_batch)
    assert packed.keys() == unpacked.keys()
    for index in unpacked:
        assert packed[index] == pytest.approx(unpacked[index], abs=1e-5)


def prefixed_examples(n: int, *, prefix: int, seed: int) -> list[Example]:
    """Examples that start with the same `prefix` tokens (a system prompt), one supervised inside it."""
    shared = torch.randint(3, 427, (prefix,), generator=torch.Generator().manual_seed(seed + 100)).tolist()
    out = []
    for e in make_examples(n, seed=seed):
        mask = [False] * prefix + e.loss_mask
        if e.index == 1:
            mask[prefix // 2] = True  # a target inside the shared prefix
        out.append(Example(index=e.index, input_ids=shared + e.input_ids, loss_mask=mask))
    return out


def test_a_shared_prefix_computed_once_gives_the_same_losses_and_gradients(model):
    examples = prefixed_examples(6, prefix=12, seed=4)
    (shared,) = micro_batches(examples, max_tokens=4096, packing=True, row_capacity=400)
    assert shared.input_ids.numel() < sum(len(e) for e in examples) - 12  # the prefix really is stored once
    with torch.no_grad():
        unshared = per_example_losses(model, collate([[e] for e in examples]))
        losses = per_example_losses(model, shared)
    assert losses.keys() == unshared.keys()
    for index in unshared:
        assert losses[index] == pytest.approx(unshared[index], abs=1e-5)
    reference = step_grads(model, [examples])
    model.zero_grad(set_to_none=True)
    (loss_sum(model, shared) / shared.num_targets).backward()
    for name, grad in reference.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_shared_prefix_the_examples_cannot_see_would_change_the_losses(model):
    """Guards the test above: without the prefix columns of the mask, the examples' losses change."""
    examples = prefixed_examples(3, prefix=12, seed=5)
    (batch,) = micro_batches(examples, max_tokens=4096, packing=True, row_capacity=400)
    with torch.no_grad():
        good = per_example_losses(model, batch)
        blind = torch.zeros_like(batch.attention_mask)
        blind[..., :12, :12] = batch.attention_mask[..., :12, :12]
        blind[..., 12:, 12:] = batch.attention_mask[..., 12:, 12:]
        batch.attention_mask = blind
        assert per_example_losses(model, batch)[2] != pytest.approx(good[2], abs=1e-4)


def test_packing_without_the_block_mask_would_leak(model):
    """Guards the test above: a plain causal mask over a packed row changes the second example's loss."""
    a, b = make_examples(2, seed=3)
    with torch.no_grad():
        good = collate([[a, b]])
        leaky = collate([[a, b]])
        leaky.attention_mask = torch.ones_like(leaky.attention_mask).tril()
        assert per_example_losses(model, leaky)[1] != pytest.approx(per_example_losses(model, good)[1], abs=1e-4)


def test_lm_head_only_sees_supervised_positions_in_chunks(model):
    examples = make_examples(6, seed=4)
    batch = collate([[e] for e in examples])
    parts = model_parts(model)
    seen: list[tuple[int, ...]] = []
    handle = parts.head.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    try:
        total = loss_sum(model, batch, chunk_size=5)
        total.backward()
    finally:
        handle.remove()
    hidden = model.config.hidden_size
    assert seen, "lm_head was never called"
    assert all(len(s) == 2 and s[0] <= 5 and s[1] == hidden for s in seen)
    # Logits this small are kept for backward (KEEP_LOGITS_BYTES), so each chunk runs once.
    assert sum(s[0] for s in seen) == batch.num_targets < batch.input_ids.numel()


def test_small_logits_are_kept_large_ones_recomputed(model, monkeypatch):
    """The head's chunks are checkpointed only when the supervised logits are large; gradients agree."""
    import honed.train.loss as loss_module

    batch = collate([[e] for e in make_examples(4)])
    grads = []
    for keep in (0, 2**40):  # recompute every chunk, then keep every chunk
        monkeypatch.setattr(loss_module, "KEEP_LOGITS_BYTES", keep)
        calls = []
        original = loss_module.checkpoint
        monkeypatch.setattr(loss_module, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
        model.zero_grad(set_to_none=True)
        loss_sum(model, batch, chunk_size=8).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert (len(calls) > 0) == (keep == 0)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name])
