"""`honed data split` and `split_conversations`: deterministic, leak-free, stratified, all-or-nothing."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from honed.cli import app
from honed.data.split import classification_labels, split_conversations, split_file
from honed.data.types import Conversation, Message
from honed.errors import ConfigError, DataError

WORDS = (
    "invoice refund login password export report dashboard crash slow billing team admin seat plan upgrade "
    "cancel trial browser mobile android iphone sync calendar email alert notice folder upload download "
    "share "
    "link token access error timeout server delete archive restore backup invite member owner role guest "
    "filter chart graph widget theme dark font language region currency tax receipt discount coupon renew"
).split()


def chat(user: str, answer: str, *, system: str = "Triage the message.") -> Conversation:
    turns = (Message("system", system), Message("user", user), Message("assistant", answer))
    return Conversation(messages=turns)


def sentence(rng: random.Random, n: int = 9) -> str:
    return " ".join(rng.sample(WORDS, n))


def distinct_chats(count: int, *, seed: int = 0, label: str | None = None) -> list[Conversation]:
    """Examples no two of which are near duplicates (random word draws), with free text or a fixed label."""
    rng = random.Random(seed)
    return [chat(sentence(rng), label if label is not None else sentence(rng)) for _ in range(count)]


def write_chats(path: Path, conversations: list[Conversation]) -> Path:
    path.write_text("".join(json.dumps(c.to_json()) + "\n" for c in conversations), encoding="utf-8")
    return path


def sides(result) -> dict[int, str]:  # type: ignore[no-untyped-def]
    holdout = set(result.holdout_indices)
    return {i: ("holdout" if i in holdout else "train") for i in range(len(result.cluster_of))}


# --- split_conversations ------------------------------------------------------------------------------


def test_same_input_and_seed_give_the_same_split() -> None:
    data = distinct_chats(120)
    first = split_conversations(data, holdout_fraction=0.2, seed=3)
    again = split_conversations(list(data), holdout_fraction=0.2, seed=3)
    other_seed = split_conversations(data, holdout_fraction=0.2, seed=4)
    assert first.holdout_indices == again.holdout_indices
    assert first.holdout == again.holdout and first.train == again.train
    assert first.holdout_indices != other_seed.holdout_indices


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5])
def test_holdout_fraction_is_respected(fraction: float) -> None:
    data = distinct_chats(200, seed=1)
    result = split_conversations(data, holdout_fraction=fraction, seed=0)
    assert abs(len(result.holdout) - fraction * 200) <= 1
    assert len(result.train) + len(result.holdout) == 200
    # Nothing lost, nothing doubled, input order kept on each side.
    holdout = set(result.holdout_indices)
    assert result.train == [c for i, c in enumerate(data) if i not in holdout]
    assert result.holdout == [data[i] for i in result.holdout_indices]


def test_near_duplicate_clusters_never_cross_sides() -> None:
    rng = random.Random(5)
    data = distinct_chats(60, seed=2)
    groups: list[list[int]] = []
    for _ in range(8):
        base = sentence(rng, 40)  # long enough that one changed word keeps word-shingle Jaccard ~0.95
        variants = [
            chat(base, "answer one"),
            chat(base, "answer one"),  # exact duplicate
            chat(base.replace(" ", "  ", 1).upper(), "answer one"),  # same after normalising case and spaces
            chat(base[:-1] + "x", "answer one"),  # one character changed
            chat(base, "a different answer entirely"),  # same prompt, conflicting target
        ]
        start = len(data)
        data.extend(variants)
        groups.append(list(range(start, start + len(variants))))
    random.Random(0).shuffle(order := list(range(len(data))))
    shuffled = [data[i] for i in order]
    position = {original: new for new, original in enumerate(order)}
    for seed in range(5):
        result = split_conversations(shuffled, holdout_fraction=0.3, seed=seed)
        side = sides(result)
        for group in groups:
            members = [position[i] for i in group]
            assert len({result.cluster_of[i] for i in members}) == 1
            assert len({side[i] for i in members}) == 1
    assert result.num_clusters == 60 + len(groups)


def test_distinct_examples_stay_separate_clusters() -> None:
    result = split_conversations(distinct_chats(50, seed=9), holdout_fraction=0.2, seed=0)
    assert result.num_clusters == 50


def test_near_threshold_controls_what_counts_as_duplicate() -> None:
    a = "please refund the duplicate charge on my invoice from last month, thank you very much"
    b = "please refund the duplicate charge on my invoice from last week, thanks a lot friends"
    data = [chat(a, "x"), chat(b, "x")] + distinct_chats(20, seed=4)
    strict = split_conversations(data, holdout_fraction=0.2, seed=0, near_threshold=0.95)
    loose = split_conversations(data, holdout_fraction=0.2, seed=0, near_threshold=0.3)
    assert strict.cluster_of[0] != strict.cluster_of[1]
    assert loose.cluster_of[0] == loose.cluster_of[1]


def test_stratification_keeps_every_label_share() -> None:
    data = (
        distinct_chats(100, seed=1, label="billing")
        + distinct_chats(40, seed=2, label="bug")
        + distinct_chats(10, seed=3, label="account")
        + distinct_chats(1, seed=4, label="lonely")
    )
    random.Random(1).shuffle(data)
    result = split_conversations(data, holdout_fraction=0.2, seed=0)
    assert result.stratified and result.num_labels == 4
    held = Counter(c.response_text() for c in result.holdout)
    assert held["billing"] == 20 and held["bug"] == 8 and held["account"] == 2
    assert held["lonely"] == 0  # a label with one example must stay in train to be learnable


def test_stratification_with_small_labels_keeps_the_overall_fraction() -> None:
    # 30 labels x 3 examples: 10% cannot give every label a holdout example; the total must still be 9.
    data = [c for k in range(30) for c in distinct_chats(3, seed=k, label=f"label-{k}")]
    result = split_conversations(data, holdout_fraction=0.1, seed=0)
    assert result.stratified
    assert len(result.holdout) == 9
    assert max(Counter(c.response_text() for c in result.holdout).values()) == 1


def test_free_text_responses_are_not_stratified() -> None:
    data = distinct_chats(80)
    assert classification_labels(data) is None
    result = split_conversations(data, holdout_fraction=0.2, seed=0)
    assert not result.stratified and result.num_labels is None


def test_json_targets_with_few_distinct_values_are_labels() -> None:
    pairs = [(c, p) for c in ("billing", "bug") for p in ("low", "high")]
    targets = [json.dumps({"category": c, "priority": p}) for c, p in pairs]
    data = [chat(f"message number {i} " + sentence(random.Random(i)), targets[i % 4]) for i in range(80)]
    assert classification_labels(data) is not None


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_zero_one_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="--holdout-fraction"):
        split_conversations(distinct_chats(10), holdout_fraction=fraction, seed=0)


def test_too_few_distinct_examples_is_a_data_error() -> None:
    with pytest.raises(DataError, match="at least 2"):
        split_conversations(distinct_chats(1), holdout_fraction=0.5, seed=0)
    twins = [chat("same text here", "same"), chat("same text here", "same")]
    with pytest.raises(DataError, match="only 1 near-duplicate cluster"):
        split_conversations(twins, holdout_fraction=0.5, seed=0)


def test_clusters_too_large_for_the_fraction_is_a_data_error() -> None:
    # Two clusters of 30 copies each: 5% would be 3 examples, but a cluster only moves whole.
    data = [chat("refund the extra charge on my invoice", "ok")] * 30 + [chat("the app crashes", "ok")] * 30
    with pytest.raises(DataError, match="too large"):
        split_conversations(data, holdout_fraction=0.05, seed=0)


def test_labels_without_two_clusters_fall_back_to_an_unstratified_split() -> None:
    # Every label's examples are near duplicates of each other: one cluster per label.
    data = [chat(f"{sentence(random.Random(k), 12)}", f"label-{k}") for k in range(20) for _ in range(2)]
    result = split_conversations(data, holdout_fraction=0.2, seed=0)
    assert not result.stratified and result.num_clusters == 20
    assert len(result.holdout) == 8


def test_tiny_dataset_still_holds_one_out() -> None:
    result = split_conversations(distinct_chats(4), holdout_fraction=0.1, seed=0)
    assert len(result.holdout) == 1 and len(result.train) == 3


# --- split_file and the CLI ---------------------------------------------------------------------------


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    labelled = [c for k, n in (("a", 30), ("b", 20), ("c", 10)) for c in distinct_chats(n, seed=n, label=k)]
    return write_chats(tmp_path / "data.jsonl", labelled)


def read_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_split_file_is_byte_identical_for_the_same_seed(data_file: Path, tmp_path: Path) -> None:
    split_file(data_file, out=tmp_path / "one", holdout_fraction=0.2, seed=7)
    split_file(data_file, out=tmp_path / "two", holdout_fraction=0.2, seed=7)
    split_file(data_file, out=tmp_path / "three", holdout_fraction=0.2, seed=8)
    one, two, three = (read_bytes(tmp_path / n) for n in ("one", "two", "three"))
    assert set(one) == {"train.jsonl", "holdout.jsonl", "manifest.json"}
    assert one == two
    assert one["holdout.jsonl"] != three["holdout.jsonl"]


def test_manifest_describes_the_outputs(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    returned = split_file(data_file, out=out, holdout_fraction=0.2, seed=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == returned
    assert manifest["source"]["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert manifest["source"]["path"] == str(data_file.resolve())
    for name in ("train.jsonl", "holdout.jsonl"):
        content = (out / name).read_bytes()
        assert manifest["files"][name]["sha256"] == hashlib.sha256(content).hexdigest()
        assert manifest["files"][name]["rows"] == content.count(b"\n")
    assert manifest["counts"] == {"input": 60, "train": 48, "holdout": 12}
    assert manifest["seed"] == 0 and manifest["holdout_fraction"] == 0.2
    assert manifest["stratified"] is True and manifest["labels"] == 3 and manifest["clusters"] == 60
    assert manifest["format"].startswith("openai-chat")
    # The outputs are the input rows, each exactly once, in canonical form.
    names = ("train.jsonl", "holdout.jsonl")
    rows = sorted(line for name in names for line in (out / name).read_text().splitlines())
    assert rows == sorted(json.dumps(json.loads(line)) for line in data_file.read_text().splitlines())


def test_existing_output_folder_is_refused_unless_forced(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="--force"):
        split_file(data_file, out=out, holdout_fraction=0.2, seed=0)
    assert read_bytes(out) == {"mine.txt": b"keep me"}
    split_file(data_file, out=out, holdout_fraction=0.2, seed=0, force=True)
    assert set(read_bytes(out)) == {"train.jsonl", "holdout.jsonl", "manifest.json"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_an_empty_output_folder_is_used(data_file: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    split_file(data_file, out=tmp_path / "empty", holdout_fraction=0.2, seed=0)
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_failure_leaves_no_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    bad.write_text(good + "\n{oops\n")
    with pytest.raises(DataError):
        split_file(bad, out=tmp_path / "split", holdout_fraction=0.2, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_cli_split_writes_the_folder_and_reports(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    args = ["data", "split", str(data_file), "--holdout-fraction", "0.2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "48 train, 12 holdout" in result.output
    assert "stratified by 3 labels" in result.output
    as_json = CliRunner().invoke(app, args + ["--force", "--json"])
    assert json.loads(as_json.stdout)["counts"]["holdout"] == 12


@pytest.mark.parametrize("fraction", ["0", "1", "1.5", "-0.2"])
def test_cli_bad_fraction_exits_2_with_a_clear_message(
    data_file: Path, tmp_path: Path, fraction: str
) -> None:
    result = CliRunner().invoke(
        app, ["data", "split", str(data_file), "--holdout-fraction", fraction, "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 2
    assert "--holdout-fraction must be between 0 and 1" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_cli_lone_column_flag_is_a_config_error(data_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "split", str(data_file), "--prompt-col", "text", "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 2 and "--response-col" in result.output


def test_cli_splits_csv_with_a_column_mapping(tmp_path: Path) -> None:
    rng = random.Random(0)
    lines = ["text,category"] + [f"{sentence(rng)},{'card' if i % 2 else 'loan'}" for i in range(40)]
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "split"
    result = CliRunner().invoke(
        app,
        ["data", "split", str(csv), "--prompt-col", "text", "--response-col", "category",
         "--system", "Classify.", "--holdout-fraction", "0.25", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    holdout = [json.loads(line) for line in (out / "holdout.jsonl").read_text().splitlines()]
    assert len(holdout) == 10
    assert holdout[0]["messages"][0] == {"role": "system", "content": "Classify."}
    assert Counter(row["messages"][-1]["content"] for row in holdout) == {"card": 5, "loan": 5}


def test_cli_split_skip_invalid_sets_bad_rows_aside(data_file: Path, tmp_path: Path) -> None:
    with data_file.open("a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "bot", "content": "hi"}]}\n')
    out = tmp_path / "split"
    failed = CliRunner().invoke(app, ["data", "split", str(data_file), "--out", str(out)])
    assert failed.exit_code == 2 and "--skip-invalid" in failed.output  # the advice names a real flag
    result = CliRunner().invoke(app, ["data", "split", str(data_file), "--out", str(out), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["input"] == 60 and manifest["skipped_invalid"] == 1
    assert Path(f"{data_file}.invalid.jsonl").is_file()


def test_force_never_deletes_the_input_file(data_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds the input"):
        split_file(data_file, out=tmp_path, holdout_fraction=0.2, seed=0, force=True)
    assert data_file.is_file()


def test_unwritable_out_is_a_config_error(data_file: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write the split"):
        split_file(data_file, out=data_file.parent / "data.jsonl" / "split", holdout_fraction=0.2, seed=0)
    assert data_file.is_file()


def test_cli_prints_paths_with_brackets_as_they_are(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "[exp1]"
    result = CliRunner().invoke(app, ["data", "split", str(data_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out}/train.jsonl" in result.output  # not eaten as rich markup


def test_split_leaves_no_near_leakage_by_data_checks_prompt_test() -> None:
    """`data check --holdout` compares prompts only (word shingles); split must keep those pairs together
    even when their different, long responses make the whole examples look unalike."""
    import random as _random

    from honed.data import dedup
    from honed.data.report import dialogue_text

    rng = _random.Random(0)
    vocabulary = [f"w{k}" for k in range(500)]
    conversations = []
    for family in range(10):  # 10 unrelated prompts, each sent in 12 variants differing in one last word
        base = " ".join(rng.choice(vocabulary) for _ in range(20))
        for variant in range(12):
            prompt = f"{base} {rng.choice(vocabulary)}"
            response = " ".join(rng.choice(vocabulary) for _ in range(40))  # long, unrelated responses
            conversations.append(Conversation((Message("user", prompt), Message("assistant", response))))
    result = split_conversations(conversations, holdout_fraction=0.2, seed=0)
    train_sigs = dedup.signatures([dialogue_text(c, prompt_only=True) for c in result.train])
    holdout_sigs = dedup.signatures([dialogue_text(c, prompt_only=True) for c in result.holdout])
    assert result.holdout
    assert dedup.near_matches(holdout_sigs, train_sigs, threshold=0.85) == []
