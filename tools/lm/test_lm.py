"""The causal language model of tools/lm/lm.py on tiny sizes: causality, rotary positions,
training, the checkpoint round trip and perplexity with methods swapped in."""
import json
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm  # noqa: E402

TINY = dict(dim=32, heads=2, depth=2, mlp=64, length=64)


def test_rope_scores_depend_on_the_offset_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)
    n = 40
    qs, ks = lm.rope(q.expand(1, 1, n, 16)), lm.rope(k.expand(1, 1, n, 16))
    s = (qs[0, 0] @ ks[0, 0].t())
    for off in (0, 3, 17):
        vals = torch.stack([s[i + off, i] for i in range(n - off)])
        assert torch.allclose(vals, vals[0].expand_as(vals), atol=1e-10)
    assert torch.allclose(qs.norm(dim=-1), q.norm(dim=-1).expand(1, 1, n), atol=1e-12)


# Methods whose key sets depend on positions only. SMYRF's and Reformer's causal forms mask
# later keys, but their balanced clusters are computed over the whole sequence, so which earlier
# keys a position sees can change with later bytes (test_content_clusters_see_later_bytes).
@pytest.mark.parametrize("spec", ["dense", "local:0.25", "strided:0.25"])
def test_a_position_sees_no_later_byte(spec):
    torch.manual_seed(1)
    model = lm.LM(**TINY).eval()
    model.set_attention(spec, seed=3)
    x = torch.randint(0, 256, (1, 64))
    y = x.clone()
    y[0, 40:] = torch.randint(0, 256, (24,))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[0, :40], b[0, :40]), spec


def test_training_lowers_the_loss_and_the_checkpoint_round_trips(tmp_path):
    text = tmp_path / "text"
    text.mkdir()
    # A repetitive text a tiny model learns quickly; one book held out.
    (text / "a.txt").write_text("the cat sat on the mat. " * 400)
    (text / "persuasion.txt").write_text("the cat sat on the mat. " * 40)
    cfg = dict(lm.TRAIN, steps=60, minutes=5.0, batch=8, lr=3e-3)
    out, log = tmp_path / "lm.pt", tmp_path / "log.jsonl"
    model = lm.train(str(text), str(out), TINY, cfg, str(log), books=["a"], quiet=True)
    rows = [json.loads(line) for line in open(log)]
    assert rows[-1]["final"]["steps_done"] == 60
    rows = rows[:-1]
    assert len(rows) == 60 and rows[-1]["loss"] < rows[0]["loss"] - 2.0
    loaded, ck = lm.load_checkpoint(str(out))
    assert ck["steps_done"] == 60 and ck["model"] == TINY
    check = ck["held_out_check"]
    head = lm.read_books(str(tmp_path), ["persuasion_head"])["persuasion_head"]
    assert check["bytes"] == len(head)
    assert lm.perplexity(loaded, head, TINY["length"])[0] == check["perplexity"]
    data = lm.read_books(str(text), ["persuasion"])["persuasion"]
    p1, n = lm.perplexity(loaded, data, 64)
    p2, _ = lm.perplexity(loaded, data, 64)
    assert p1 == p2 and n == (len(data) - 1) // 64 * 64
    assert p1 < math.exp(rows[0]["loss"]) / 4  # learned, not a uniform guess over 256 bytes
    model.eval()
    p_mem, _ = lm.perplexity(model, data, 64)
    assert abs(math.log(p_mem) - math.log(p1)) < 0.05  # float16 weights in the checkpoint
    # Beyond the training length (RoPE extrapolates) and with another method swapped in.
    p_long, _ = lm.perplexity(loaded, data, 256)
    p_local, _ = lm.perplexity(loaded, data, 64, "local:0.5")
    assert math.isfinite(p_long) and math.isfinite(p_local)


def test_a_method_without_causal_form_is_refused_by_name():
    model = lm.LM(**TINY).eval()
    model.set_attention("linformer:0.25")
    with pytest.raises(ValueError, match="causal"):
        with torch.no_grad():
            model(torch.randint(0, 256, (1, 64)))


def test_content_clusters_see_later_bytes():
    """Documents the property above (a change here means the clusters became prefix-only)."""
    torch.manual_seed(1)
    model = lm.LM(**TINY).eval()
    model.set_attention("smyrf:2:0.5", seed=3)
    x = torch.randint(0, 256, (1, 64))
    y = x.clone()
    y[0, 40:] = torch.randint(0, 256, (24,))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.equal(a[0, :40], b[0, :40])


CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoint", "lm.pt")


@pytest.mark.skipif(not os.path.exists(CHECKPOINT), reason="no committed checkpoint yet (lm.py train)")
def test_committed_checkpoint_reproduces_its_logged_perplexity():
    model, ck = lm.load_checkpoint(CHECKPOINT)
    assert os.path.getsize(CHECKPOINT) <= 20 * 2**20
    check = ck["held_out_check"]
    head = lm.read_books(os.path.dirname(CHECKPOINT), [check["book"] + "_head"])[check["book"] + "_head"]
    got = lm.perplexity(model, head, check["length"])[0]
    # Same machine: the same bits. Another CPU (another SIMD target of the library, another BLAS
    # kernel in torch) rounds float32 sums differently, by far less than this.
    assert abs(got - check["perplexity"]) <= 1e-4 * check["perplexity"]
