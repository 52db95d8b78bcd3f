"""The model zoo: tiny seeded sequence classifiers of every architecture the
README lists (hidden 32, 2 layers, 4 heads, vocabulary 64), each with a
word-level tokenizer built here (no download), and the references the zoo
suite checks pyattn against: the model's own outputs, never pyattn's.

``ZOO`` maps a name to a builder ``() -> (model, tokenizer)``; ``build(name)``
calls it. Decoder classifiers (GPT-2, Llama, Qwen2, Mistral) pool at the last
token that is not the pad token, with pad = eos where their tokenizers have it
so, which is the case the baseline must get right.
"""

from __future__ import annotations

import torch

from testing import WORDS, tiny_longformer

HIDDEN = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
VOCAB = 64

#: The short texts of the suite (7 and 20 words: BigBird's block_sparse needs
#: more than (5 + 2 x random blocks) x block size = 14 tokens to run sparse).
SHORT = "the compiler checks types of the program"
LONG = "we show results of training neural network models with gradient descent on data for the language parser and runtime"


def word_tokenizer(specials: dict[str, str], order: list[str]):
    """A whitespace word-level tokenizer: the ``order`` tokens first (ids
    0, 1, ...), then the shared words. ``specials`` maps
    ``bos_token``/``pad_token``/... to tokens in ``order``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(order + [w for w in WORDS if w not in order])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials.get("unk_token", order[0])))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def bert_tokenizer():
    """[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4."""
    return word_tokenizer(
        dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"),
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )


def roberta_tokenizer():
    """<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4."""
    return word_tokenizer(
        dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", cls_token="<s>", sep_token="</s>", mask_token="<mask>"),
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )


def decoder_tokenizer(pad_is_eos: bool = True):
    """Llama-style: <unk>=0, <s>=1, </s>=2, <pad>=3; the pad token is ``</s>``
    (as Llama and Mistral users set it) unless ``pad_is_eos`` is False."""
    return word_tokenizer(
        dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>" if pad_is_eos else "<pad>"),
        ["<unk>", "<s>", "</s>", "<pad>"],
    )


def gpt2_tokenizer(distinct_unk: bool = True):
    """GPT-2 style: ``<|endoftext|>`` = 0 is bos, eos and pad (as GPT-2 users
    set pad); <unk>=1 unless ``distinct_unk`` is False (real GPT-2: every
    special token is <|endoftext|>)."""
    eot = "<|endoftext|>"
    return word_tokenizer(
        dict(bos_token=eot, eos_token=eot, pad_token=eot, unk_token="<unk>" if distinct_unk else eot),
        [eot, "<unk>"],
    )


def _seeded(seed: int = 0):
    torch.manual_seed(seed)


def bert_ids(**overrides):
    return dict(dict(vocab_size=VOCAB, pad_token_id=0, **HIDDEN), **overrides)


def roberta_ids(**overrides):
    return dict(dict(vocab_size=VOCAB, pad_token_id=1, bos_token_id=0, eos_token_id=2, **HIDDEN), **overrides)


def _classifier(name: str, tokenizer, seed: int = 0, **config):
    """transformers' ``<name>ForSequenceClassification`` of ``<name>Config(**config)``,
    its weights drawn after ``torch.manual_seed(seed)``, in eval mode, with ``tokenizer``."""
    import transformers

    _seeded(seed)
    model_class = getattr(transformers, f"{name}ForSequenceClassification")
    return model_class(getattr(transformers, f"{name}Config")(**config)).eval(), tokenizer


def distilbert():
    return _classifier("DistilBert", bert_tokenizer(), vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                       max_position_embeddings=128, pad_token_id=0, num_labels=3)


def albert():
    return _classifier("Albert", bert_tokenizer(), embedding_size=16, max_position_embeddings=128, num_labels=3,
                       **bert_ids(bos_token_id=2, eos_token_id=3))


def electra():
    return _classifier("Electra", bert_tokenizer(), embedding_size=32, max_position_embeddings=128, num_labels=3, **bert_ids())


def deberta_v2():
    return _classifier("DebertaV2", bert_tokenizer(), max_position_embeddings=128, relative_attention=True, pos_att_type=["p2c", "c2p"],
                       position_buckets=16, max_relative_positions=32, num_labels=3, **bert_ids())


def xlm_roberta():
    # seed 0 happens to give a gap of 5e-6 on LONG, under what float32 can test
    return _classifier("XLMRoberta", roberta_tokenizer(), seed=1, max_position_embeddings=130, num_labels=3, **roberta_ids())


def mpnet():
    return _classifier("MPNet", roberta_tokenizer(), max_position_embeddings=130, num_labels=3, **roberta_ids())


def modernbert():
    return _classifier("ModernBert", bert_tokenizer(), max_position_embeddings=128, local_attention=8, global_attn_every_n_layers=2,
                       num_labels=3, **bert_ids(cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3))


def bigbird(attention_type: str = "original_full"):
    return _classifier("BigBird", roberta_tokenizer(), max_position_embeddings=128, attention_type=attention_type, block_size=2,
                       num_random_blocks=1, num_labels=3, **roberta_ids(sep_token_id=2))


def longformer():
    """Per-layer windows 4 and 8 (2 layers), CLS global as the classifier puts it."""
    return tiny_longformer(windows=(4, 8)), roberta_tokenizer()


def gpt2(distinct_unk: bool = True):
    return _classifier("GPT2", gpt2_tokenizer(distinct_unk), vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0, num_labels=3)


def _decoder(name: str, pad_is_eos: bool = True, **extra):
    return _classifier(name, decoder_tokenizer(pad_is_eos), vocab_size=VOCAB, num_key_value_heads=2, max_position_embeddings=128,
                       bos_token_id=1, eos_token_id=2, pad_token_id=2 if pad_is_eos else 3, num_labels=3, **HIDDEN, **extra)


def llama():
    return _decoder("Llama")


def qwen2():
    """Qwen2 with a pad token of its own (pad != eos)."""
    return _decoder("Qwen2", pad_is_eos=False)


def mistral():
    return _decoder("Mistral", sliding_window=None)


def bert_multi_label():
    return _classifier("Bert", bert_tokenizer(), max_position_embeddings=128, num_labels=4, problem_type="multi_label_classification", **bert_ids())


def bert_regression():
    """``num_labels=1`` and no problem_type: transformers treats it as regression."""
    return _classifier("Bert", bert_tokenizer(), max_position_embeddings=128, num_labels=1, **bert_ids())


def llama_bf16():
    """Llama in bfloat16 (its gap between input and baseline is large enough
    to test completeness at bfloat16's resolution)."""
    model, tokenizer = llama()
    return model.to(torch.bfloat16), tokenizer


ZOO = {
    "DistilBERT": distilbert,
    "ALBERT": albert,
    "ELECTRA": electra,
    "DeBERTa-v2": deberta_v2,
    "XLM-R": xlm_roberta,
    "MPNet": mpnet,
    "ModernBERT": modernbert,
    "BigBird original_full": lambda: bigbird("original_full"),
    "BigBird block_sparse": lambda: bigbird("block_sparse"),
    "Longformer": longformer,
    "GPT-2": gpt2,
    "GPT-2 (every special token is the pad)": lambda: gpt2(distinct_unk=False),
    "Llama": llama,
    "Qwen2": qwen2,
    "Mistral": mistral,
    "BERT multi-label": bert_multi_label,
    "BERT regression": bert_regression,
    "Llama bfloat16": llama_bf16,
}


#: The classification head's weights are multiplied by this, so that the
#: tiny random models' outputs move by percents between baseline and input
#: (at the initial scale the gap is 1e-5, too small to test completeness on).
HEAD_SCALE = 10.0
#: and the word embeddings by this (at the initial 0.02 the position
#: embeddings and layer norms drown the words: the pooled token hardly moves).
EMBEDDING_SCALE = 10.0


def build(name: str):
    """``(model, tokenizer)`` of the zoo entry ``name``, in eval mode, its
    output layer (every Linear with ``num_labels`` outputs) scaled by
    ``HEAD_SCALE``, its word embeddings by ``EMBEDDING_SCALE``."""
    model, tokenizer = ZOO[name]()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(EMBEDDING_SCALE)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features == model.config.num_labels:
                module.weight.mul_(HEAD_SCALE)
    return model, tokenizer


def cell(outcome) -> str:
    """A README table cell: ``works``, or the refusal's first line."""
    if outcome is None:
        return "works"
    line = str(outcome).strip().splitlines()[0] if str(outcome).strip() else type(outcome).__name__
    return line.replace("|", "\\|")


README_BEGIN = "<!-- model-zoo table: generated by `python tests/zoo_table.py`; do not edit by hand -->"
README_END = "<!-- end of model-zoo table -->"
COLUMNS = ("Python attribution", "Python attention", "CLI attribution", "CLI attention")


def readme_table(path) -> dict[str, dict[str, str]]:
    """The README's zoo table: architecture -> column -> cell."""
    text = open(path).read()
    body = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")][2:]
    table = {}
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        table[cells[0]] = dict(zip(COLUMNS, cells[1:]))
    return table


def render_table(table: dict[str, dict[str, str]]) -> str:
    lines = ["| Architecture | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name in ZOO:
        lines.append(f"| {name} | " + " | ".join(table[name][c] for c in COLUMNS) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ references (the model itself)


def model_output(model, logits: torch.Tensor) -> torch.Tensor:
    """F as transformers' own loss reads the head, from the config alone:
    sigmoid per label for ``multi_label_classification``, the raw output for
    regression (``problem_type="regression"``, or ``num_labels == 1`` with no
    problem_type), softmax otherwise. ``logits`` (B, C) -> (B, C) float64."""
    config = model.config
    logits = logits.double()
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        return logits.sigmoid()
    if problem == "regression" or (problem is None and config.num_labels == 1):
        return logits
    return logits.softmax(-1)


def run_model(model, input_ids, attention_mask=None, **kwargs):
    """The model on ids as a user runs it: ``model(input_ids=..., attention_mask=...)``,
    no position ids, no grad; logits (B, C) float64."""
    ids = torch.as_tensor(input_ids).reshape(1, -1) if torch.as_tensor(input_ids).dim() == 1 else torch.as_tensor(input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(ids)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=attention_mask, **kwargs).logits.double()


def eager_attentions(model, input_ids, **kwargs):
    """The model's own per-layer attentions, ``(B, H, N, N)`` each, from a
    deep copy switched to transformers' eager attention (BigBird to
    original_full), so the user's model is untouched."""
    import copy

    reference = copy.deepcopy(model).eval()
    if getattr(reference.config, "attention_type", None) == "block_sparse":
        reference.set_attention_type("original_full") if hasattr(reference, "set_attention_type") else None
        reference.base_model.set_attention_type("original_full")
    if hasattr(reference, "set_attn_implementation"):
        try:
            reference.set_attn_implementation("eager")
        except (ValueError, AttributeError):
            pass
    ids = torch.as_tensor(input_ids).reshape(1, -1)
    with torch.no_grad():
        output = reference(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True, **kwargs)
    return output.attentions


# ------------------------------------------------------------------ outcomes (what the README table says)

N_STEPS = 9


def python_outcome(name: str) -> dict[str, str]:
    """The README's Python cells of one entry: ``attribute`` and ``attention``
    on LONG, ``works`` or the refusal's first line (the suite checks every
    ``works`` against the model itself)."""
    import warnings

    import pyattn

    model, tokenizer = build(name)
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for column, call in (("Python attribution", lambda: pyattn.attribute(model, tokenizer, LONG, n_steps=N_STEPS, device="cpu")),
                             ("Python attention", lambda: pyattn.attention(model, tokenizer, LONG, per_head=True))):
            try:
                call()
            except ValueError as error:
                found[column] = cell(error)
            else:
                found[column] = "works"
    return found


def cli_outcome(name, tmp_path, report: bool = False) -> tuple[dict[str, str], Path]:
    """``pyattn attribute`` (and compare, report) on the zoo model saved with
    save_pretrained; the CLI cells of the README."""
    import contextlib
    import io

    import pandas as pd

    from pyattn.cli import main

    model, tokenizer = build(name)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = tmp_path / "docs.csv"
    pd.DataFrame({"doc": ["a", "b"], "text": [SHORT, LONG]}).to_csv(data, index=False)
    out = tmp_path / "store"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["attribute", "--model", str(folder), "--data", str(data), "--out", str(out), "--id-column", "doc", "--label-column", "",
                     "--steps", str(N_STEPS), "--device", "cpu", "--quiet"])
    if code != 0:
        message = err.getvalue().strip().splitlines()
        assert len(message) <= 2 and "Traceback" not in err.getvalue(), err.getvalue()
        line = cell(message[0].replace(str(folder), "MODEL"))
        return {"CLI attribution": line, "CLI attention": line}, out
    if report:
        assert main(["compare", "--results", str(out), "--quiet"]) == 0
        assert main(["report", "--results", str(out), "--quiet"]) == 0
    return {"CLI attribution": "works", "CLI attention": "works"}, out


