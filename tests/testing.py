"""The one testing module: tiny seeded models (no download), input makers
and constants shared by every test file (as pytorch_scatter's testing.py).
Fixtures live in conftest.py, which builds them from here; test files import
from here and never from each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hypothesis import strategies as st

#: The repository's root, wherever under tests/ the importing test file lives.
ROOT = Path(__file__).resolve().parents[1]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


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



def assert_close_scaled(actual, expected, ulps: float = 256, msg=None, scale: float | None = None):
    """assert_close with the tolerance float32 error analysis gives two
    computations of the same sums in different orders: each element may differ
    by about (terms summed) x eps x (the magnitude of what is summed), so the
    tolerance is ``ulps`` x eps(dtype) x max|expected| of the whole tensor
    (relative, scaled to the values), not a fixed absolute number that a
    tensor of large values misses by rounding alone. 256 eps is 3e-5 of the
    largest value in float32: rounding stays far under it, while a real error
    (a wrong mask, a dropped bias) moves values by percents. ``scale``
    overrides max|expected| where the true value is zero and only rounding
    is left (the gradient of a key bias, which softmax cancels): pass the
    magnitude of the terms summed, e.g. the largest gradient of the model."""
    expected = expected.detach()
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    atol = ulps * torch.finfo(expected.dtype).eps * max(scale, torch.finfo(expected.dtype).tiny)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0, msg=msg)

TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float64: dict(atol=1e-12, rtol=1e-12),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=1e-2),
}


def make_inputs(B, H, N, X, w, counts, seed, dtype=torch.float32, device="cpu", pad_extra=3, non_contiguous=False):
    """Random band/global tensors in the model's layout, and a mask with
    counts[b] <= X global tokens for item b at random positions."""
    generator = torch.Generator().manual_seed(seed)
    local = torch.rand(B, H, N, X + w + 1, generator=generator, dtype=torch.float64)
    global_attn = torch.rand(B, H, N + pad_extra, X, generator=generator, dtype=torch.float64) if X > 0 else None
    mask = torch.zeros(B, N, dtype=torch.long)
    for b, count in enumerate(counts):
        positions = torch.randperm(N, generator=generator)[:count]
        mask[b, positions] = 1
        # Zeros where the model writes them: the local rows of the global
        # tokens and the local columns of an item's unused global slots.
        local[b, :, positions] = 0.0
        local[b, :, :, count:X] = 0.0
    if non_contiguous:
        # Same values, other strides: stored in another dimension order, every
        # other element of the last dimension.
        spread = local.new_zeros(local.shape[:-1] + (2 * local.shape[-1],))
        spread[..., ::2] = local
        local = spread.permute(3, 0, 2, 1).contiguous().permute(1, 3, 2, 0)[..., ::2]
        if global_attn is not None:
            global_attn = global_attn.transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not local.is_contiguous() and local.stride(-1) == 2 * B * N * H
    local = local.to(dtype=dtype, device=device)
    if global_attn is not None:
        global_attn = global_attn.to(dtype=dtype, device=device)
    return local, global_attn, (mask.to(device) if X > 0 or any(counts) else None)


@st.composite
def layouts(draw):
    B = draw(st.integers(1, 3))
    H = draw(st.integers(1, 3))
    N = draw(st.integers(1, 40))
    w = 2 * draw(st.integers(1, 12))  # N < w happens often
    X = draw(st.integers(0, 3))
    X = min(X, N)
    counts = [draw(st.integers(0, X)) for _ in range(B)]
    if X > 0:
        counts[draw(st.integers(0, B - 1))] = X  # X is the batch's largest count
    return B, H, N, X, w, counts


def reference_inputs(local, global_attn, mask):
    """The reference on float64 CPU copies."""
    return (
        local.double().cpu(),
        None if global_attn is None else global_attn.double().cpu(),
        None if mask is None else mask.cpu(),
    )


def cuda_emulator():
    """The CUDA kernels' per-thread code compiled for the host
    (tests/harness/emulate_cuda.cpp with the csrc/ headers, g++): a module with
    ``band_to_dense``, ``attention_received`` and the q/k ops' per-tile code.
    torch caches the build in build/cuda-emulator; set PYATTN_VERBOSE_BUILD=1
    to watch it."""
    import os

    from torch.utils.cpp_extension import load

    build = ROOT / "build" / "cuda-emulator"
    build.mkdir(parents=True, exist_ok=True)
    return load(
        name="pyattn_cuda_emulator",
        sources=[str(ROOT / "tests" / "harness" / "emulate_cuda.cpp")],
        extra_include_paths=[str(ROOT / "csrc")],
        extra_cflags=["-O1"],
        build_directory=str(build),
        verbose=bool(os.environ.get("PYATTN_VERBOSE_BUILD")),
    )
