"""Shared fixtures: offline, tiny, randomly initialised experts.

Nothing here downloads anything: ``HF_HUB_OFFLINE=1`` is set before any
Hugging Face import, image experts are timm ``test_*`` architectures with
``pretrained=False``, and the text expert is a two-layer BERT written to a
temporary directory with a hand-made vocabulary.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

TINY_IMAGE_MODEL = "test_efficientnet"

_VOCAB_WORDS = (
    "no evidence of acute cardiopulmonary disease normal chest heart size lungs "
    "clear pneumonia effusion pleural consolidation opacity right left lower lobe "
    "mild moderate severe possible likely patient history cough fever pain shortness "
    "breath the a is are with without and or in on of to for"
).split()


def write_tiny_text_model(directory) -> str:
    """Write a tiny random BERT and its WordPiece tokenizer to ``directory``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_VOCAB_WORDS]
    vocab_file = os.path.join(directory, "vocab.txt")
    with open(vocab_file, "w") as fh:
        fh.write("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory):
    """Path of a tiny random BERT model directory (hidden size 32)."""
    return write_tiny_text_model(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_image_model():
    """Name of a tiny timm architecture, used with ``pretrained=False``."""
    return TINY_IMAGE_MODEL


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Run the whole session on one torch thread, restoring the count at the end.

    Tiny networks on a shared machine run fastest, and most repeatably, on one
    thread. Session scope, so module-scoped fixtures that fit models run under it
    too.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def label_in_pattern():
    """300 rows whose label is in the availability pattern only.

    Blocks ``a`` (columns 0-1) and ``b`` (2-3) of noise; class 1 rows lack
    ``b`` with probability 0.8, class 0 rows with probability 0.1.
    """
    rng = np.random.default_rng(0)
    n = 300
    y = np.arange(n) % 2
    X = rng.normal(size=(n, 4))
    X[(y == 1) & (rng.random(n) < 0.8), 2:] = np.nan
    X[(y == 0) & (rng.random(n) < 0.1), 2:] = np.nan
    return X, y
