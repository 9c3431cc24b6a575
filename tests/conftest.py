import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytest_plugins = ["browser"]


# --- library fixtures: the shipped tokenizers and tiny models (tests of corpus, tokenizers, masking, models, checkpoints)

import pytest  # noqa: E402
import torch  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


@pytest.fixture(scope="session")
def tokenizers():
    """The shipped ``tokenizer.json`` of each model, loaded once: ``{"bert": ..., "gpt2": ..., "t5": ...}``."""
    from lmviz.pretrain.tokenizers import KINDS, load_tokenizer

    return {kind: load_tokenizer(MODELS_DIR / kind / "tokenizer.json") for kind in KINDS}


@pytest.fixture()
def tiny_bert():
    """A 2-layer, 4-head BERT with random weights, vocabulary 97, 24 positions."""
    from lmviz.models.bert import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=24)
    return BertForPreTraining(cfg).eval()


@pytest.fixture()
def tiny_gpt2():
    """A 2-layer, 4-head GPT-2 with random weights, vocabulary 101, 40 positions."""
    from lmviz.models.gpt2 import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=101, n_positions=40, n_embd=32, n_layer=2, n_head=4)).eval()


@pytest.fixture()
def tiny_t5():
    """A 2+2-layer, 4-head T5 with random weights, vocabulary 103, 8 relative-position buckets."""
    from lmviz.models.t5 import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=103, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16)
    return T5ForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="session")
def models():
    """The shipped BERT, GPT-2 and T5 on the CPU, loaded once for the whole run: ``{"bert": Loaded, ...}``."""
    from lmviz.models import checkpoints

    return {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}
