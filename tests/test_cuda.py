"""The CUDA path: the shipped models give the CPU's answers on a GPU (float32 and bf16 autocast),
and the KV cache agrees with recompute there. Skipped where no GPU is present (CI has none)."""
import pytest
import torch

from lmviz.models import checkpoints
from lmviz.models.record import Want

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _inputs(loaded):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, loaded.model.config.vocab_size, (2, 48), generator=g)
    if loaded.kind == "t5":
        return (ids, ids[:, :16]), {}
    return (ids,), {}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_the_gpu_gives_the_cpus_logits_and_attention(kind):
    cpu = checkpoints.load(checkpoints.shipped(kind), device="cpu")
    gpu = checkpoints.load(checkpoints.shipped(kind), device="cuda")
    args, kw = _inputs(cpu)
    with torch.inference_mode():
        a = cpu.model(*args, want=Want(), **kw)
        b = gpu.model(*[t.cuda() for t in args], want=Want(), **kw)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            c = gpu.model(*[t.cuda() for t in args], **kw)
    assert (a.logits - b.logits.cpu()).abs().max() < 1e-3
    for kind_ in a.record.probs:
        for pa, pb in zip(a.record.probs[kind_], b.record.probs[kind_]):
            assert (pa - pb).abs().max() < 1e-4
    # bf16 keeps the argmax almost everywhere
    agree = (a.logits.argmax(-1) == c.logits.float().cpu().argmax(-1)).float().mean()
    assert agree > 0.9, agree


def test_gpt2_cache_matches_recompute_on_the_gpu():
    gpu = checkpoints.load(checkpoints.shipped("gpt2"), device="cuda")
    ids = torch.randint(5, gpu.model.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.inference_mode():
        full = gpu.model(ids).logits
        out = gpu.model(ids[:, :20])
        cache, steps = out.cache, [out.logits]
        for t in range(20, 40):
            out = gpu.model(ids[:, t : t + 1], cache=cache)
            cache = out.cache
            steps.append(out.logits)
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-4
