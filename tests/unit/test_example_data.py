"""The committed example dataset is exactly what its generator makes, valid, and as described."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from pathlib import Path

from honed.data.read import read_conversations
from honed.data.split import near_duplicate_clusters

EXAMPLES = Path(__file__).parents[2] / "examples"
DATA = EXAMPLES / "support_triage.jsonl"


def test_generator_reproduces_the_committed_file_byte_for_byte(tmp_path: Path) -> None:
    generator = runpy.run_path(str(EXAMPLES / "make_support_data.py"))
    out = tmp_path / "support.jsonl"
    generator["write_jsonl"](out, generator["generate"](400, 7))
    assert out.read_bytes() == DATA.read_bytes()


def test_every_row_is_valid_with_a_compact_json_target() -> None:
    result = read_conversations(DATA)
    assert result.problems == []
    assert len(result.conversations) == 400
    for conversation in result.conversations:
        assert [m.role for m in conversation.messages] == ["system", "user", "assistant"]
        target = json.loads(conversation.response_text())
        assert list(target) == ["category", "priority", "sentiment"]
        assert conversation.response_text() == json.dumps(target)
    targets = [json.loads(c.response_text()) for c in result.conversations]
    assert {t["category"] for t in targets} == {
        "billing", "account", "bug", "feature_request", "how_to", "cancellation"
    }
    assert {t["priority"] for t in targets} == {"low", "medium", "high"}
    assert {t["sentiment"] for t in targets} == {"negative", "neutral", "positive"}


def test_it_holds_the_declared_quirks() -> None:
    conversations = read_conversations(DATA).conversations
    rows = Counter(json.dumps(c.to_json()) for c in conversations)
    assert sorted(n for n in rows.values() if n > 1) == [2, 2, 2]  # 3 exact duplicates
    clusters = [c for c in near_duplicate_clusters(conversations) if len(c) > 1]
    texts = [{conversations[i].user_text() for i in c} for c in clusters]
    assert len(clusters) == 5
    assert sum(len(t) == 2 for t in texts) == 2  # 2 near duplicates (texts differ), 3 exact ones
