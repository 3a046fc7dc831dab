"""`honed serve --engine llama.cpp`: llama.cpp decodes a run's GGUF export in this process, behind the same front.

    honed export runs/demo --to gguf --quant q8_0      # writes runs/demo/exports/gguf-best-q8_0/model-q8_0.gguf
    honed serve runs/demo --engine llama.cpp           # serves the run's newest GGUF export of that checkpoint

honed's front (app.py: the same routes, auth, limits, metrics and request log as the torch engine) renders
each prompt with the run's chat template into token ids, exactly as training did, and hands them to this
engine. The GGUF keeps the vocabulary's ids, so llama.cpp decodes those ids as they are, and the answer's
text is decoded by the run's tokenizer (honed.serve.textstream), as on the torch engine.

Batching: the engine is the torch engine's scheduler (honed.serve.engine.Engine: the bounded queue,
continuous batching, stop strings, end of turn, max_tokens, cancellation) over a `LlamaBatch` instead of
a transformers `RunningBatch`. llama.cpp's context holds one sequence per batch slot (`--max-batch`), each
with its own part of the KV cache; every decode step is one `llama_decode` call with one token of every
running sequence, and a new request's prompt is prefilled into a free sequence between steps. Several
sequences per step is what lets 16 clients get many times one client's tokens/s (llama-cpp-python's
high-level `Llama` decodes one sequence at a time).

The token choice is the torch batch's own (`RunningBatch.choose` on llama.cpp's logits): greedy is the
argmax, sampling is temperature + top-p with a per-request seeded generator, and logit_bias, the
penalties, log-probabilities and JSON-schema constraints behave as on the torch engine.

llama.cpp objects are not thread-safe: the models are loaded before the server starts and, once it runs,
only the engine's thread touches them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.errors import ConfigError, ModelError
from honed.export.llamacpp_buffers import extra_buffers_safe
from honed.model.batch import Row, RunningBatch, _score_prompt
from honed.runs.rundir import RunDir
from honed.serve.engine import Engine
from honed.serve.loading import ServedModel, Target, _check_names, _tokenizer_for, parse_target


INSTALL = "CMAKE_ARGS=\"-DLLAVA_BUILD=OFF\" pip install 'honed[llamacpp]'"
KV_TOKENS_PER_SEQUENCE = 4096  # each batch slot's context (capped by the model's own); the front refuses longer
PREFILL_TOKENS = 512  # tokens per llama_decode call (llama.cpp's n_batch)


def require_llama_cpp() -> None:
    """Refuse clearly when the compiled llama.cpp bindings are not installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError("--engine llama.cpp needs llama-cpp-python, which is not installed here; install it with "
                          f"`{INSTALL}` (compiles llama.cpp, several minutes; `make llama-cpp` does the same), "
                          "or use the built-in engine (--engine torch)")


# ---- which GGUF ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufExport:
    """One `honed export --to gguf` of a run, as its export.json describes it."""

    path: Path  # the .gguf file
    checkpoint: str  # as exported: best, final, checkpoints/step-N
    created_at: str
    parity: dict[str, Any] | None


def gguf_exports(run: RunDir) -> list[GgufExport]:
    """The run's GGUF exports whose file is there, newest first.

        [e.path.name for e in gguf_exports(RunDir("runs/demo"))]  # ['model-q8_0.gguf', 'model-f16.gguf']
    """
    found = []
    for record in sorted(run.exports.glob("*/export.json")) if run.exports.is_dir() else []:
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        path = record.parent / str(data.get("gguf", ""))
        if data.get("target") == "gguf" and data.get("gguf") and path.is_file():
            found.append(GgufExport(path, str(data.get("checkpoint", "best")), str(data.get("created_at", "")),
                                    data.get("parity")))
    return sorted(found, key=lambda e: e.created_at, reverse=True)


def newest_gguf(run: RunDir, *, weights: Path, checkpoint: str) -> GgufExport:
    """The newest GGUF export of the checkpoint whose weights are `weights` (what --checkpoint resolves to).

    A run with none is a ConfigError that names the export command to run.
    """
    exports = gguf_exports(run)
    for export in exports:
        try:
            if run.resolve_checkpoint(export.checkpoint).resolve() == weights.resolve():
                return export
        except Exception:  # the exported checkpoint is gone: that export cannot be this checkpoint
            continue
    flag = "" if checkpoint == "best" else f" --checkpoint {checkpoint}"
    others = f" (its GGUF exports are of other checkpoints: {', '.join(sorted({e.checkpoint for e in exports}))})" \
        if exports else ""
    raise ConfigError(f"{run.path}: no GGUF export of checkpoint {checkpoint}{others}, and --engine llama.cpp serves "
                      f"one; make it with `honed export {run.path} --to gguf{flag}`, then serve again")


def gguf_target(text: str, *, checkpoint: str) -> Target:
    """`[NAME=]RUN` -> the run's newest GGUF export of `checkpoint`; `[NAME=]FILE.gguf` -> that file."""
    target = parse_target(text, checkpoint=checkpoint)
    if target.run is not None:
        export = newest_gguf(RunDir(target.run), weights=target.weights, checkpoint=checkpoint)
        return Target(name=target.name, weights=export.path, base=None, run=target.run,
                      checkpoint=str(export.path.resolve().relative_to(target.run)))
    if target.weights.suffix != ".gguf":
        raise ConfigError(f"{text}: --engine llama.cpp serves a run directory (its GGUF export) or a .gguf file, "
                          "not a Hugging Face folder; export one with `honed export RUN --to gguf`")
    return target


# ---- one GGUF in llama.cpp ---------------------------------------------------------------------------------


class LlamaCppModel:
    """One GGUF loaded by llama.cpp with one context of `sequences` sequences, each `context` tokens of KV cache.

    `decode` feeds tokens (each with its position and sequence) and returns the logits asked for; `forget`
    empties a sequence for its next request. Only the engine's thread may call them once serving.

        model = LlamaCppModel(Path("model-q8_0.gguf"), sequences=16, threads=2)
        model.decode([(1, 0, 0, False), (42, 1, 0, True)]).shape  # (1, 49152): the flagged token's logits
    """

    def __init__(self, path: Path, *, sequences: int, threads: int, context: int = KV_TOKENS_PER_SEQUENCE,
                 gpu: bool = False) -> None:
        import llama_cpp

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's loading chatter
        llama_cpp.llama_backend_init()
        self.path = path
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 999 if gpu else 0
        params.use_extra_bufts = extra_buffers_safe()  # AMX repacking crashes llama.cpp (see llamacpp_buffers)
        model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if model is None:
            raise ModelError(f"{path}: llama.cpp could not load this GGUF file (its messages are above)")
        self.sequences = min(sequences, int(llama_cpp.llama_max_parallel_sequences()))
        self.context = min(context, int(llama_cpp.llama_model_n_ctx_train(model)))
        ctx = llama_cpp.llama_init_from_model(model, self._context_params(threads))
        if ctx is None:
            llama_cpp.llama_model_free(model)
            raise ModelError(f"{path}: llama.cpp could not create a context of {self.sequences} sequences x "
                             f"{self.context} tokens (out of memory?); serve with a smaller --max-batch")
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))
        self._model, self._ctx, self._memory = model, ctx, llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(PREFILL_TOKENS, 0, 1)
        self._close = weakref.finalize(self, _free, self._batch, ctx, model)

    def _context_params(self, threads: int) -> Any:
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = self.sequences
        params.n_ctx = self.sequences * self.context  # split evenly: each sequence gets `context` tokens
        params.n_batch = params.n_ubatch = PREFILL_TOKENS
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # one KV stream per sequence: attention reads only its own tokens
        params.no_perf = True
        return params

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> Any:
        """Feed (token, position, sequence, want logits) entries in order; the wanted logits [n, vocab] (numpy)."""
        import llama_cpp
        import numpy as np

        wanted: list[Any] = []
        batch = self._batch
        for start in range(0, len(entries), PREFILL_TOKENS):
            chunk = entries[start : start + PREFILL_TOKENS]
            for i, (token, position, sequence, logits) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0], batch.logits[i] = sequence, logits
            batch.n_tokens = len(chunk)
            status = llama_cpp.llama_decode(self._ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status}" + (" (no room left in the KV cache)"
                                                                        if status == 1 else ""))
            count = sum(1 for entry in chunk if entry[3])
            if count:  # the logits of the flagged tokens, in batch order; copied before the next call reuses them
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(count, self.n_vocab))
                wanted.append(logits.copy())
        return np.concatenate(wanted) if wanted else np.zeros((0, self.n_vocab), dtype=np.float32)

    def forget(self, sequence: int, *, start: int = 0) -> bool:
        """Drop the tokens of `sequence` from position `start` on from the KV cache; False when llama.cpp
        cannot cut that sequence there (then nothing is dropped)."""
        import llama_cpp

        return bool(llama_cpp.llama_memory_seq_rm(self._memory, sequence, start, -1))

    def close(self) -> None:
        self._close()


def _free(batch: Any, ctx: Any, model: Any) -> None:
    import llama_cpp

    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


# ---- the running batch on llama.cpp ------------------------------------------------------------------------


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5])
    2
    """
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


class LlamaBatch(RunningBatch):
    """The rows decoding on one LlamaCppModel, one llama.cpp sequence each, and their next logits.

    It keeps `RunningBatch`'s interface and its `choose` (the token choice, log-probabilities, penalties,
    logit_bias, constraints); admitting, advancing and dropping rows are llama.cpp calls on the rows'
    sequences instead of transformers forward passes on a padded cache.

    A finished row's sequence keeps its tokens in the KV cache. A new row takes the free sequence that
    shares the longest prefix with its prompt (the chat template's system prompt and turn headers, a
    conversation's earlier turns) and prefills only the rest, as llama.cpp's own server reuses its slots.
    """

    def __init__(self, model: LlamaCppModel) -> None:  # noqa: super().__init__ wants a torch module
        self.model = model
        self.rows: list[Row] = []
        self.sequences: list[int] = []  # each row's llama.cpp sequence id
        self.fed: list[list[int]] = []  # each row's tokens in the KV cache (its next position is their count)
        self.cached: dict[int, list[int]] = {s: [] for s in range(model.sequences)}  # free sequence -> its tokens
        self.logits: Any = None

    def _clear(self) -> None:
        self.logits = None

    def can_join(self) -> bool:
        return bool(self.cached)

    def _take_sequence(self, prompt: list[int], *, reuse: bool) -> tuple[int, int]:
        """The free sequence sharing the longest prefix with `prompt` (cut to that prefix), and the prefix's
        length; at least the prompt's last token is always prefilled again, for its logits."""
        best = max(self.cached, key=lambda s: common_prefix(self.cached[s], prompt))
        keep = min(common_prefix(self.cached.pop(best), prompt), len(prompt) - 1) if reuse else 0
        if not self.model.forget(best, start=keep):
            keep = 0
            self.model.forget(best)
        return best, keep

    def admit(self, rows: Sequence[Row]) -> None:
        """Prefill each row's prompt into a free sequence (all in one or a few llama_decode calls)."""
        import secrets

        import torch

        if any(not row.prompt_ids for row in rows):
            raise ValueError("an empty prompt: llama.cpp needs at least one token to answer from")
        if len(rows) > len(self.cached):
            raise RuntimeError(f"{len(rows)} requests but only {len(self.cached)} free llama.cpp sequences")
        taken: list[int] = []
        try:
            entries = []
            for row in rows:
                every = row.sampling.prompt_logprobs is not None  # every prompt position's logits: no reuse
                sequence, keep = self._take_sequence(row.prompt_ids, reuse=not every)
                taken.append(sequence)
                last = len(row.prompt_ids) - 1
                entries += [(row.prompt_ids[p], p, sequence, every or p == last) for p in range(keep, last + 1)]
            logits = torch.from_numpy(self.model.decode(entries))
        except Exception:
            for sequence in taken:
                self.model.forget(sequence)
                self.cached[sequence] = []
            raise
        last_rows, at = [], 0
        for row in rows:
            if row.sampling.prompt_logprobs is not None:
                row.prompt_scores = _score_prompt(logits[at : at + len(row.prompt_ids)], row)
                at += len(row.prompt_ids)
            else:
                at += 1
            last_rows.append(at - 1)
            if row.sampling.temperature > 0:
                seed = row.sampling.seed if row.sampling.seed is not None else secrets.randbits(63)
                row.generator = torch.Generator().manual_seed(seed)
        new = logits[last_rows]
        self.logits = new if self.logits is None else torch.cat([self.logits, new])
        self.rows.extend(rows)
        self.sequences.extend(taken)
        self.fed.extend(list(row.prompt_ids) for row in rows)

    def keep(self, keep: Sequence[bool]) -> None:
        """Drop the rows whose flag is False; their sequences are free again, their tokens kept for reuse."""
        if all(keep):
            return
        for flag, sequence, fed in zip(keep, self.sequences, self.fed):
            if not flag:
                self.cached[sequence] = fed
        index = [i for i, flag in enumerate(keep) if flag]
        self.rows = [self.rows[i] for i in index]
        self.sequences = [self.sequences[i] for i in index]
        self.fed = [self.fed[i] for i in index]
        self.logits = self.logits[index] if self.rows else None

    def advance(self) -> None:
        """One llama_decode with every row's chosen token; next logits ready."""
        import torch

        entries = [(row.next_token, len(fed), sequence, True)
                   for row, fed, sequence in zip(self.rows, self.fed, self.sequences)]
        try:
            self.logits = torch.from_numpy(self.model.decode(entries))
        except Exception:
            for fed in self.fed:  # what these sequences hold is unknown now: never reuse it
                fed.clear()
            raise
        for row, fed in zip(self.rows, self.fed):
            fed.append(row.next_token)


# ---- the engine --------------------------------------------------------------------------------------------


class LlamaCppEngine(Engine):
    """The torch engine's scheduler (queue, continuous batching, stops, cancellation) on llama.cpp batches."""

    name = "llama.cpp"  # which request parameters it implements: honed.serve.schemas.ENGINE_PARAMS

    def new_batch(self, served: ServedModel) -> RunningBatch:
        """A `LlamaBatch` on the served GGUF: Engine's admit loop, queue and steps do the rest."""
        return LlamaBatch(served.model)


# ---- loading and serving -----------------------------------------------------------------------------------


def load_llamacpp_targets(texts: list[str], *, checkpoint: str = "best", sequences: int = 32, threads: int = 1,
                          gpu: bool = False, context: int = KV_TOKENS_PER_SEQUENCE) -> list[ServedModel]:
    """What `honed serve --engine llama.cpp` serves: each run's GGUF in llama.cpp, with the run's tokenizer
    and template for the front.

        served = load_llamacpp_targets(["runs/demo"], sequences=16, threads=2)
        served[0].checkpoint  # 'exports/gguf-best-q8_0/model-q8_0.gguf'
    """
    from honed.model.decode import pad_token_id, stops_for

    require_llama_cpp()
    if not texts:
        raise ConfigError("nothing to serve; pass one or more run directories (with a GGUF export) or .gguf files")
    targets = [gguf_target(text, checkpoint=checkpoint) for text in texts]
    _check_names(targets)
    served = []
    for target in targets:
        tokenizer = _tokenizer_for(target)
        stops = stops_for(tokenizer)
        model = LlamaCppModel(target.weights, sequences=sequences, threads=threads, context=context, gpu=gpu)
        served.append(ServedModel(
            name=target.name, model=model, tokenizer=tokenizer, adapter=None, stops=stops,
            pad_id=pad_token_id(tokenizer, stops), context_length=model.context, run=target.run,
            checkpoint=target.checkpoint, base=str(target.weights.resolve()), created=int(time.time()),
            extra={"gguf": str(target.weights.resolve())},
        ))
    return served


def serve_llamacpp(served: list[ServedModel], *, host: str, port: int, settings: Any, max_batch: int,
                   max_queue: int, drain_s: float) -> None:
    """Serve loaded GGUFs (load_llamacpp_targets) behind honed's front on host:port, until SIGTERM / Ctrl-C."""
    from honed.serve.server import serve

    slots = min([max_batch, *(s.model.sequences for s in served)])
    try:
        serve(served, host=host, port=port, settings=settings, drain_s=drain_s,
              engine=LlamaCppEngine(max_batch=slots, max_queue=max_queue))
    finally:
        for model in served:
            model.model.close()
