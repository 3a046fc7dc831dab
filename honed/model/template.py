"""The chat template of a model, chosen once, stored with the run, and used by every later stage.

A model that ships a chat template keeps it. One without (a base model, most GGUF files) gets its own
family's template, chosen from its architecture (`config.model_type`) and checked against its vocabulary:

| family  | turn markers                                           | end of turn     | system role        |
|---------|--------------------------------------------------------|-----------------|--------------------|
| gemma   | `<start_of_turn>user` ... `<end_of_turn>`, `<bos>` first | `<end_of_turn>` | folded into user 1 |
| llama3  | `<|start_header_id|>`...`<|end_header_id|>`, `<|eot_id|>` | `<|eot_id|>`    | yes                |
| phi3    | `<|user|>` `<|assistant|>` ... `<|end|>`               | `<|end|>`       | yes                |
| mistral | `[INST] ... [/INST]` answer `</s>`                     | eos (`</s>`)    | folded into user 1 |
| chatml  | `<|im_start|>role` ... `<|im_end|>` (Qwen 2/2.5/3, SmolLM) | `<|im_end|>`    | yes                |

A family is taken only where its marker tokens are single tokens of the vocabulary; otherwise the
vocabulary's own markers decide (a Llama-architecture model with ChatML tokens, like SmolLM2, is ChatML).
A base model with none of them gets ChatML with `<|im_start|>`/`<|im_end|>` added as special tokens,
whose new embedding rows training must learn (the approach of TRL's `clone_chat_template`).

Templates that rewrite earlier turns (Qwen3 drops the reasoning of earlier answers, Phi-3 appends eos
to a finished conversation) cannot tell training which tokens are the answer: a known one is replaced by
its family's training-safe template, with the reason said; an unknown one is refused in `data/render.py`.

`--chat-template NAME|FILE.jinja` overrides all of this.

Usage: `choose_template(tokenizer, model_type="gemma3_text")` picks `name='gemma'`,
`end_of_turn='<end_of_turn>'` for a Gemma 3 tokenizer without a template (tests/unit/test_template.py runs
every family, on the tiny committed tokenizer dressed as each).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from honed.errors import ConfigError, ModelError

# ChatML, with tools written as Qwen 2.5 writes them (Hermes style): the tool definitions in the system turn
# inside <tools></tools>, each call as <tool_call>{"name": ..., "arguments": ...}</tool_call> in the answer,
# tool results as <tool_response> in a user turn. Without tools it is plain ChatML.
CHATML = (
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with '"
    " 'function signatures within <tools></tools> XML tags:\n<tools>' }}"
    "{% for tool in tools %}{{ '\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\n</tools>\n\nFor each function call, return a json object with function name and arguments within '"
    " '<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": '"
    " '<args-json-object>}\n</tool_call><|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{{ '<|im_start|>assistant\n' }}{% if message['content'] %}{{ message['content'] + '\n' }}{% endif %}"
    "{% for call in message['tool_calls'] %}"
    "{% set call = call['function'] if call.get('function') else call %}"
    "{{ '<tool_call>\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' }}"
    "{{ call['arguments'] if call['arguments'] is string else (call['arguments'] | tojson) }}"
    "{{ '}\n</tool_call>' + ('\n' if not loop.last else '') }}"
    "{% endfor %}"
    "{{ '<|im_end|>\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{ '\n<tool_response>\n' + message['content'] + '\n</tool_response>' }}"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma 1/2/3: no system role; the system text opens the first user turn (Gemma 3's own template does this).
GEMMA = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Phi-3's own template appends eos after a finished conversation, which rewrites the end of every prefix;
# this is the same format without that eos (the end of turn `<|end|>` is what the model stops on).
PHI3 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Mistral (v0.1-v0.3 instruct): no system role; the system text opens the first user turn.
MISTRAL = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + (system_prefix if loop.first else '') + message['content']"
    " + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('the Mistral template has only user and assistant turns (and a first system "
    "turn); this conversation has a ' + message['role'] + ' turn') }}"
    "{% endif %}"
    "{% endfor %}"
)


@dataclass(frozen=True)
class Family:
    """One chat format: its template, the tokens that must be single vocabulary entries, its end of turn."""

    name: str
    template: str
    markers: tuple[str, ...]  # must each encode to one token for the family to be chosen
    end_of_turn: str | None  # None: the tokenizer's eos token
    model_types: tuple[str, ...]
    system_role: bool = True


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gemma", GEMMA, ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>",
           ("gemma", "gemma2", "gemma3", "gemma3_text"), system_role=False),
    Family("llama3", LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "<|eot_id|>", ("llama",)),
    Family("phi3", PHI3, ("<|user|>", "<|assistant|>", "<|end|>"), "<|end|>", ("phi3",)),
    Family("mistral", MISTRAL, (), None, ("mistral",), system_role=False),
    Family("chatml", CHATML, ("<|im_start|>", "<|im_end|>"), "<|im_end|>",
           ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe")),
)}
# When the architecture names no family (or its markers are missing), the vocabulary's markers decide, in
# this order (mistral has no marker tokens of its own, so it is chosen by architecture only).
VOCABULARY_ORDER = ("llama3", "gemma", "chatml", "phi3")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
# Model-shipped templates known to rewrite earlier turns, and the family format that trains safely instead.
REWRITING_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("reasoning_content", "chatml", "Qwen3's template drops the reasoning of earlier answers"),
    ("<|assistant|>", "phi3", "Phi-3's template appends eos to a finished conversation"),
)


@dataclass(frozen=True)
class ChatTemplate:
    """The chosen template and why: what `data check` and `train` print and the run stores (template.json)."""

    name: str  # a family name, "model" (the model's own), or "file" (--chat-template FILE)
    template: str  # the Jinja text
    end_of_turn: str  # the text an answer ends with (a token's text, or several tokens' text)
    reason: str  # one sentence: why this one
    system_role: bool = True  # False: system text is folded into the first user turn
    added_tokens: tuple[str, ...] = field(default=())  # special tokens honed added to the vocabulary

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "added_tokens": list(self.added_tokens)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChatTemplate:
        known = {k: data[k] for k in ("name", "template", "end_of_turn", "reason", "system_role") if k in data}
        return cls(**known, added_tokens=tuple(data.get("added_tokens") or ()))

    def apply(self, tokenizer: Any) -> Any:
        """Set this template (and its added special tokens) on `tokenizer`; returns the tokenizer."""
        missing = [t for t in self.added_tokens if not is_single_token(tokenizer, t)]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.chat_template = self.template
        return tokenizer


def is_single_token(tokenizer: Any, text: str) -> bool:
    """Whether `text` encodes to exactly one token of the vocabulary (a real special or added token)."""
    try:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    except Exception:  # a tokenizer that cannot encode the text has no such token
        return False
    return len(ids) == 1 and getattr(tokenizer, "unk_token_id", None) not in ids


def end_of_turn_of(tokenizer: Any, template: str) -> str:
    """The text a template writes right after an assistant answer's content: its first token when that is
    an added (special) token, else the whole tail up to the first line break (several tokens then).

    Usage: `end_of_turn_of(tokenizer, CHATML)` is `'<|im_end|>'` (renders with the tokenizer:
    tests/unit/test_template.py's test_end_of_turn_is_the_special_token_right_after_the_answer).
    """
    from jinja2.exceptions import TemplateError

    marker = "HONEDMARKER"
    saved = getattr(tokenizer, "chat_template", None)
    tokenizer.chat_template = template
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
    except TemplateError as exc:
        raise ModelError(f"the chat template cannot render a user and an assistant turn ({exc})") from exc
    finally:
        tokenizer.chat_template = saved
    tail = text[text.rfind(marker) + len(marker):]
    if not tail.strip():
        eos = getattr(tokenizer, "eos_token", None)
        if not eos:
            raise ModelError("the chat template writes nothing after an answer and the tokenizer has no eos "
                             "token, so an answer could never end; pass --chat-template")
        return str(eos)
    stripped = tail.lstrip()
    ids = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    first = tokenizer.convert_ids_to_tokens(int(ids[0])) if ids else None
    added = set(getattr(tokenizer, "all_special_tokens", [])) | set(tokenizer.get_added_vocab())
    if first in added and stripped.startswith(str(first)):
        return str(first)
    return stripped.split("\n")[0].strip() or stripped.strip()


def _family_choice(tokenizer: Any, family: Family, reason: str) -> ChatTemplate:
    end = family.end_of_turn or str(getattr(tokenizer, "eos_token", None) or "")
    if not end:
        raise ModelError(f"the {family.name} template ends a turn with the eos token, and this tokenizer has none")
    return ChatTemplate(family.name, family.template, end, reason, system_role=family.system_role)


def _has_markers(tokenizer: Any, family: Family) -> bool:
    return all(is_single_token(tokenizer, marker) for marker in family.markers)


def _rewriting_replacement(tokenizer: Any, own: str) -> ChatTemplate | None:
    for needle, family_name, why in REWRITING_TEMPLATES:
        family = FAMILIES[family_name]
        if needle in own and _has_markers(tokenizer, family):
            return _family_choice(tokenizer, family, f"{why}, which hides which tokens are the answer; trained "
                                  f"with the {family.name} format it uses, without the rewrite")
    return None


def choose_template(tokenizer: Any, *, model_type: str | None, override: str | None = None) -> ChatTemplate:
    """The chat template for a model: `override` (a family name or a .jinja file), else the model's own,
    else its family's by architecture and vocabulary, else ChatML with added tokens. Sets nothing.

    Usage: `choose_template(tokenizer, model_type="llama").name` is `'chatml'` for a Llama tokenizer without
    a template or Llama 3's turn tokens (tests/unit/test_template.py).
    """
    if override:
        return _override(tokenizer, override)
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own.strip():
        replaced = _rewriting_replacement(tokenizer, own)
        if replaced is not None:
            return replaced
        return ChatTemplate("model", own, end_of_turn_of(tokenizer, own), "the model's own chat template")
    for family in FAMILIES.values():
        if model_type in family.model_types and _has_markers(tokenizer, family):
            return _family_choice(tokenizer, family, f"no template in the model; architecture {model_type} is "
                                  f"the {family.name} family and its turn tokens are in the vocabulary")
    for name in VOCABULARY_ORDER:
        if _has_markers(tokenizer, FAMILIES[name]):
            return _family_choice(tokenizer, FAMILIES[name], f"no template in the model; architecture {model_type} "
                                  f"names no family, and the vocabulary has the {name} turn tokens")
    return ChatTemplate("chatml", CHATML, "<|im_end|>", f"no template in the model and no family's turn tokens in "
                        f"its vocabulary (architecture {model_type}): ChatML, with <|im_start|> and <|im_end|> added "
                        "as special tokens whose embeddings training learns", added_tokens=CHATML_TOKENS)


def _override(tokenizer: Any, override: str) -> ChatTemplate:
    if override in FAMILIES:
        family = FAMILIES[override]
        choice = _family_choice(tokenizer, family, f"--chat-template {override}")
        if family.markers and not _has_markers(tokenizer, family):
            return ChatTemplate(choice.name, choice.template, choice.end_of_turn, choice.reason + " (its turn tokens "
                                "are added to the vocabulary)", choice.system_role, family.markers)
        return choice
    path = Path(override).expanduser()
    if path.suffix not in (".jinja", ".j2") or not path.is_file():
        raise ConfigError(f"--chat-template {override}: not a family name ({', '.join(FAMILIES)}) or an existing "
                          ".jinja file; pass one of those")
    text = path.read_text(encoding="utf-8")
    return ChatTemplate("file", text, end_of_turn_of(tokenizer, text), f"--chat-template {path}")


def write_template(path: Path, choice: ChatTemplate) -> None:
    """Store the choice as JSON (atomically), so later stages read it instead of choosing again."""
    from honed.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(choice.to_json(), indent=2) + "\n")


def read_template(path: Path) -> ChatTemplate | None:
    """The stored choice, or None when the run predates template.json."""
    if not path.is_file():
        return None
    try:
        return ChatTemplate.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: unreadable ({exc}); delete it to choose the template again") from exc
