"""The trained comparison's data and runner on tiny sizes (the real table: tools/lra/README.md)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import tasks  # noqa: E402


def listops_value(tokens):
    """An independent evaluator: the expression's value by a stack over the tokens."""
    stack = []
    for t in tokens:
        if t.startswith("["):
            stack.append([t])
        elif t == "]":
            op, *args = stack.pop()
            if op == "[MAX":
                v = max(args)
            elif op == "[MIN":
                v = min(args)
            elif op == "[MED":
                s = sorted(args)
                m = len(s) // 2
                v = s[m] if len(s) % 2 else int((s[m - 1] + s[m]) / 2)
            else:
                v = sum(args) % 10
            if not stack:
                return v
            stack[-1].append(v)
        else:
            if not stack:
                return int(t)
            stack[-1].append(int(t))
    raise AssertionError("unbalanced expression")


def test_listops_labels_lengths_and_determinism():
    a = tasks.listops_examples(40, seed=5)
    b = tasks.listops_examples(40, seed=5)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    for row, label in zip(a.tokens, a.labels):
        toks = [tasks.LISTOPS_VOCAB[i] for i in row if i != 0]
        assert tasks.LISTOPS_MIN <= len(toks) <= tasks.LISTOPS_MAX
        assert listops_value(toks) == label
        depth = max_depth = 0
        for t in toks:
            depth += t.startswith("[")
            max_depth = max(max_depth, depth)
            depth -= t == "]"
        assert depth == 0 and max_depth <= 10
    c = tasks.listops_examples(40, seed=6)
    assert not np.array_equal(a.tokens, c.tokens)


def test_listops_median_is_the_generators_integer_median():
    # [MED 1 2 ] -> int(np.median([1, 2])) = int(1.5) = 1
    assert listops_value(["[MED", "1", "2", "]"]) == 1


def test_image_task():
    t = tasks.image(100, 50)
    assert t.train.tokens.shape == (100, 784) and t.test.tokens.shape == (50, 784)
    assert t.train.tokens.max() <= 255 and set(np.unique(t.train.labels)) <= set(range(10))


def test_image_task_names_a_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        tasks.image(10, 10, str(tmp_path))


def test_text_task_split_is_fixed_and_has_both_classes():
    package = os.path.join(ROOT, tasks.SPAM_PACKAGE)
    a = tasks.text(300, 100, package)
    b = tasks.text(300, 100, package)
    assert np.array_equal(a.train.tokens, b.train.tokens)
    assert a.train.tokens.shape == (300, tasks.TEXT_LENGTH) and a.train.tokens.max() <= 256
    for split in (a.train, a.test):
        assert 0 < split.labels.mean() < 1
    # No mail in both splits.
    train_rows = {r.tobytes() for r in tasks.text(0, 0, package).train.tokens}
    assert not any(r.tobytes() in train_rows for r in a.test.tokens if r.any())


def test_body_drops_the_headers():
    assert tasks._body("From: a\nSubject: b\n\nhello\n\nworld") == "hello\n\nworld"


def run(args, out, models):
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "lra.py"), "run", "--steps", "3", "--n-train", "48",
         "--n-test", "24", "--threads", "1", "--out", str(out), "--model-dir", str(models)]
        + args, capture_output=True, text=True, timeout=600)


def test_runner_resumes_and_writes_the_tables(tmp_path):
    out, models = tmp_path / "out", tmp_path / "models"
    args = ["--tasks", "image,listops", "--specs", "dense,local:F,performer:F", "--top", "1"]
    r = run(args, out, models)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in open(out / "runs.jsonl")]
    # 3 specs x 2 tasks at seed 0, then the best of each task at seeds 1 and 2.
    assert len(rows) == 3 * 2 + 2 * 2
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["steps"] == 3
        want = 1.0 if row["spec"] == "dense" else 0.25
        assert abs(row["memory"] - want) < 0.03, row
    inter = [json.loads(line) for line in open(out / "interchange.jsonl")]
    assert {r["spec"] for r in inter} == {"local:0.25", "performer:0.25"}
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 3 + 2 and "†" not in table and "0 of 6 figures" in table
    # Nothing left to run: the same rows, same bits.
    before = (out / "runs.jsonl").read_text()
    r = run(args, out, models)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "runs.jsonl").read_text() == before


def test_runner_same_seed_same_accuracy_and_loss(tmp_path):
    args = ["--tasks", "text", "--specs", "smyrf:2:F", "--top", "0"]
    got = []
    for i in range(2):
        r = run(args, tmp_path / f"o{i}", tmp_path / f"m{i}")
        assert r.returncode == 0, r.stderr[-3000:]
        row = json.loads(open(tmp_path / f"o{i}" / "runs.jsonl").readline())
        got.append((row["accuracy"], row["final_loss"]))
    assert got[0] == got[1]


def test_runner_names_an_unknown_spec(tmp_path):
    r = run(["--tasks", "listops", "--specs", "nosuch:F"], tmp_path / "o", tmp_path / "m")
    assert r.returncode != 0 and "nosuch" in r.stderr


def test_a_run_over_the_time_cap_stops_and_is_marked(tmp_path):
    out = tmp_path / "o"
    r = run(["--tasks", "image", "--specs", "dense", "--top", "0", "--no-interchange",
             "--max-minutes", "0.00001"], out, tmp_path / "m")
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads(open(out / "runs.jsonl").readline())
    assert row["capped"] and row["steps"] == 1
    assert "† (capped at step 1 of 3)" in (out / "table.md").read_text()


def test_timing_alone_replaces_the_training_medians(tmp_path):
    out = tmp_path / "o"
    r = run(["--tasks", "listops", "--specs", "dense,local:F", "--top", "0"], out, tmp_path / "m")
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, os.path.join(HERE, "lra.py"), "time", "--tasks", "listops",
                        "--specs", "dense,local:F", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in open(out / "timing.jsonl")]
    assert [r["spec"] for r in rows] == ["dense", "local:0.25"]
    assert all(r["seconds_per_step"] > 0 for r in rows)
    assert "every figure measured alone" in (out / "table.md").read_text()
