"""The options of `honed export`: one typed object whose fields build the command's flags (honed.options).

>>> ExportSettings(to="gguf").parity_examples()
64
>>> ExportSettings(to="gguf", no_parity=True).parity_examples()
0
"""

from __future__ import annotations

from dataclasses import dataclass

from honed.options import REQUIRED, option

DEFAULT_PARITY_EXAMPLES = 64  # holdout examples an export's parity check answers


@dataclass(kw_only=True)
class ExportSettings:
    """What `honed export` writes and checks (defaults are the command's)."""

    to: str = option(REQUIRED, "merged (HF folder), adapter (portable LoRA) or gguf (one file)")
    quant: str | None = option(None, "gguf only: f16, q8_0 (default) or q4_k_m")
    out: str | None = option(None, "folder to create (default RUN/exports/<target>-<checkpoint>[-<quant>])")
    checkpoint: str = option("best", "best, final, last, step-N or checkpoints/step-N")
    ollama: bool = option(False, "gguf only: also write an Ollama Modelfile")
    parity: int = option(DEFAULT_PARITY_EXAMPLES, "holdout examples the parity check answers", min=1)
    no_parity: bool = option(False, "skip the parity check")
    dtype: str | None = option(None, "merged only: float32, bfloat16 or float16 (default: the base's)")
    base_name: str | None = option(None, "adapter only: base_model_name_or_path to record")
    force: bool = option(False, "replace --out if it exists")
    batch_size: int = option(16, "prompts decoded together in the parity check", min=1)

    def parity_examples(self) -> int:
        """Holdout examples the parity check answers (0: no check)."""
        return 0 if self.no_parity else self.parity
