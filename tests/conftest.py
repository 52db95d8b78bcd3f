"""Shared fixtures: tiny seeded Longformer models (no download) and devices."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

# hypothesis: deterministic in CI, and no per-example deadline (the first call
# of a compiled op on a new shape can take a while on a loaded machine).
try:
    from hypothesis import settings

    settings.register_profile("pyattn", deadline=None, derandomize=True, print_blob=True)
    settings.load_profile("pyattn")
except ImportError:  # pragma: no cover
    pass

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@dataclass
class LongformerRun:
    """A tiny model, the inputs it ran on and its output with attentions."""

    model: torch.nn.Module
    input_ids: torch.Tensor  # (B, N)
    attention_mask: torch.Tensor  # (B, N)
    global_attention_mask: torch.Tensor  # (B, N)
    output: object
    hidden_states: list  # per layer, the (B, N_pad, dim) input of self-attention


def tiny_longformer(windows=(4, 16, 8), seed: int = 0, heads: int = 4):
    from transformers import LongformerConfig, LongformerForSequenceClassification

    torch.manual_seed(seed)
    config = LongformerConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=len(windows),
        num_attention_heads=heads,
        intermediate_size=64,
        attention_window=list(windows),
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=3,
    )
    model = LongformerForSequenceClassification(config).eval()
    return model


def run_longformer(model, input_ids, attention_mask, global_attention_mask) -> LongformerRun:
    """Run with output_attentions, capturing each layer's self-attention input."""
    captured: list = []
    hooks = [
        layer.attention.self.register_forward_pre_hook(
            lambda module, args, kwargs: captured.append(
                (kwargs.get("hidden_states", args[0] if args else None)).detach()
            ),
            with_kwargs=True,
        )
        for layer in model.longformer.encoder.layer
    ]
    try:
        with torch.no_grad():
            output = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                global_attention_mask=global_attention_mask,
                output_attentions=True,
            )
    finally:
        for hook in hooks:
            hook.remove()
    return LongformerRun(model, input_ids, attention_mask, global_attention_mask, output, captured)


@pytest.fixture(scope="session")
def longformer_run() -> LongformerRun:
    """Batch of two, N = 37 (the model pads to 48 inside): item 0 has three
    global tokens (0, 3, 10: 3 inside 0's window and 0 inside 3's), item 1 has
    one (5) and padding from position 30 on."""
    model = tiny_longformer()
    generator = torch.Generator().manual_seed(1)
    B, N = 2, 37
    input_ids = torch.randint(3, 64, (B, N), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones(B, N, dtype=torch.long)
    attention_mask[1, 30:] = 0
    input_ids[1, 30:] = model.config.pad_token_id
    global_attention_mask = torch.zeros(B, N, dtype=torch.long)
    global_attention_mask[0, [0, 3, 10]] = 1
    global_attention_mask[1, 5] = 1
    return run_longformer(model, input_ids, attention_mask, global_attention_mask)


def pytest_report_header(config):
    import pyattn

    return f"pyattn {pyattn.__version__}: torch {torch.__version__}, CUDA kernels built: {pyattn.has_cuda_kernels()}, devices: {DEVICES}, threads: {torch.get_num_threads()}, cores: {os.cpu_count()}"


WORDS = (
    "the a of and to in is for on with model models learning neural network training data gradient loss "
    "program programs language languages compiler type types semantics syntax parser runtime memory "
    "proof analysis static dynamic function functions paper we show results method"
).split()


def tiny_tokenizer(style: str = "roberta"):
    """A word-level tokenizer (built here, no download): RoBERTa-style
    (<s>=0, <pad>=1, </s>=2, <unk>=3) or BERT-style ([PAD]=0, [UNK]=1,
    [CLS]=2, [SEP]=3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if style == "roberta":
        specials = dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", cls_token="<s>", sep_token="</s>")
        order = ["<s>", "<pad>", "</s>", "<unk>"]
    else:
        specials = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
        order = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {token: index for index, token in enumerate(order + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def tiny_classifier(kind: str, seed: int = 0, num_labels: int = 3):
    """Tiny seeded RoBERTa or BERT sequence classifiers (vocab 64)."""
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=num_labels)
    if kind == "roberta":
        config = RobertaConfig(max_position_embeddings=130, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
        return RobertaForSequenceClassification(config).eval()
    config = BertConfig(max_position_embeddings=128, pad_token_id=0, **common)
    return BertForSequenceClassification(config).eval()


def sample_text(n_words: int, seed: int = 0) -> str:
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(WORDS), (n_words,), generator=generator).tolist()
    return " ".join(WORDS[i] for i in picks)
