"""The q/k route (pyattn.models.qk_capture) against the models themselves: attention
received read from the queries and keys each architecture forms, while it
runs sdpa, equals the column sums of the same model's own eager attention
(``attn_implementation="eager"``, ``output_attentions=True``)."""

from __future__ import annotations

import copy

import pytest
import torch

import pyattn
from pyattn.model_attention import attention_from_inputs
from pyattn.models.qk_capture import QK_ARCHITECTURES, QKCapture, qk_layer_masks, qk_refusal, qk_rollout
from pyattn.model_attention.rollout import dense_rollout

VOCAB = 64
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48)


def _seeded(build, seed):
    torch.manual_seed(seed)
    model = build().eval()
    if model.config._attn_implementation != "eager":  # BigBird has only its own inline attention
        model.set_attn_implementation("sdpa")
    return model


def tiny_model(name: str, seed: int = 0):
    """Tiny seeded sequence classifiers, one per architecture in the q/k table
    (windows smaller than the test lengths; grouped-query decoders)."""
    import transformers as tf

    decoder = dict(SMALL, num_key_value_heads=2, pad_token_id=0, max_position_embeddings=128, num_labels=3)
    builders = {
        "bert": lambda: tf.BertForSequenceClassification(tf.BertConfig(**SMALL, pad_token_id=0, num_labels=3)),
        "roberta": lambda: tf.RobertaForSequenceClassification(tf.RobertaConfig(**SMALL, pad_token_id=1, max_position_embeddings=130, num_labels=3)),
        "xlm-roberta": lambda: tf.XLMRobertaForSequenceClassification(tf.XLMRobertaConfig(**SMALL, pad_token_id=1, max_position_embeddings=130, num_labels=3)),
        "electra": lambda: tf.ElectraForSequenceClassification(tf.ElectraConfig(**SMALL, embedding_size=16, pad_token_id=0, num_labels=3)),
        "distilbert": lambda: tf.DistilBertForSequenceClassification(
            tf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=3, n_heads=4, hidden_dim=48, pad_token_id=0, num_labels=3)),
        "big_bird": lambda: tf.BigBirdForSequenceClassification(
            tf.BigBirdConfig(**SMALL, attention_type="original_full", pad_token_id=0, bos_token_id=1, eos_token_id=2, sep_token_id=3, max_position_embeddings=128, num_labels=3)),
        "modernbert": lambda: tf.ModernBertForSequenceClassification(
            tf.ModernBertConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                                local_attention=8, global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                cls_token_id=1, sep_token_id=2, max_position_embeddings=128, num_labels=3)),
        "llama": lambda: tf.LlamaForSequenceClassification(tf.LlamaConfig(**decoder)),
        "qwen2": lambda: tf.Qwen2ForSequenceClassification(
            tf.Qwen2Config(**decoder, use_sliding_window=True, sliding_window=6, max_window_layers=1)),
        "mistral": lambda: tf.MistralForSequenceClassification(tf.MistralConfig(**decoder, sliding_window=5)),
    }
    return _seeded(builders[name], seed)


ARCHITECTURES = list(QK_ARCHITECTURES)


def batch(model, lengths, seed=0):
    """Right-padded ids (B, N) and mask: item b has lengths[b] real tokens."""
    generator = torch.Generator().manual_seed(seed)
    N = max(lengths)
    ids = torch.randint(5, VOCAB, (len(lengths), N), generator=generator)
    mask = (torch.arange(N)[None] < torch.tensor(lengths)[:, None]).long()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    return ids.masked_fill(mask == 0, pad), mask


def eager_attentions(model, ids, mask):
    """The model's own attention probabilities, (B, H, N, N) per layer, from an
    eager copy (the model itself is left as it is)."""
    eager = copy.deepcopy(model)
    if eager.config._attn_implementation != "eager":
        eager.set_attn_implementation("eager")
    with torch.no_grad():
        return [a.double() for a in eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions]


def eager_received(attentions, mask, row_weights=None):
    """Column sums over the real query rows (or weighted rows): (L, B, H, N)."""
    rows = mask.double()[:, None, :] if row_weights is None else row_weights.double()[:, None, :] * mask.double()[:, None, :]
    return torch.stack([torch.einsum("bhij,bhi->bhj", a, rows.expand(a.shape[:3])) for a in attentions])


def captured(model, ids, mask, **options):
    with torch.no_grad(), QKCapture(model, mask, **options) as capture:
        logits = model(input_ids=ids, attention_mask=mask).logits
    return capture, logits


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("lengths", [[13], [17, 11], [9, 20, 4]])
def test_received_equals_eager_column_sums(name, lengths):
    model = tiny_model(name, seed=len(lengths))
    ids, mask = batch(model, lengths, seed=sum(lengths))
    expected = eager_received(eager_attentions(model, ids, mask), mask)
    implementation = model.config._attn_implementation
    capture, _ = captured(model, ids, mask, per_head=True)
    assert model.config._attn_implementation == implementation == ("eager" if name == "big_bird" else "sdpa")
    torch.testing.assert_close(capture.received.double(), expected, atol=1e-5, rtol=1e-5)
    # every real row of every head is one distribution over the keys: columns sum to the real length
    torch.testing.assert_close(capture.received.sum(-1), mask.sum(1).float()[None, :, None].expand(capture.received.shape[:3]))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_head_and_row_weighted_forms(name):
    model = tiny_model(name, seed=7)
    ids, mask = batch(model, [15, 10], seed=3)
    attentions = eager_attentions(model, ids, mask)
    L, H = len(attentions), attentions[0].shape[1]
    importance = torch.rand(L, H, generator=torch.Generator().manual_seed(1))
    fused, _ = captured(model, ids, mask, head_importance=importance)
    expected = (eager_received(attentions, mask) * importance.double()[:, None, :, None]).sum(2)
    torch.testing.assert_close(fused.received.double(), expected, atol=1e-5, rtol=1e-5)
    # the CLS row: row weights one-hot at 0 give row 0 of each attention matrix
    cls = torch.zeros(2, ids.shape[1])
    cls[:, 0] = 1
    row, _ = captured(model, ids, mask, per_head=True, row_weights=cls)
    torch.testing.assert_close(row.received.double(), torch.stack([a[:, :, 0, :] for a in attentions]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_rollout_equals_dense_rollout_of_eager_attention(name):
    model = tiny_model(name, seed=2)
    ids, mask = batch(model, [14, 9], seed=5)
    attentions = eager_attentions(model, ids, mask)
    capture, _ = captured(model, ids, mask, keep_qk=True)
    for b, length in enumerate([14, 9]):  # dense_rollout reads one item's real tokens
        dense = [a[b : b + 1, :, :length, :length] for a in attentions]
        for start in (0, length - 1):
            expected = dense_rollout(dense, start=start)
            got = qk_rollout(capture.layers, mask, start=torch.tensor([start, start]))[b : b + 1, :length]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["modernbert", "llama", "qwen2", "mistral"])
def test_windows_are_smaller_than_the_inputs(name):
    """The tests above only prove the window when it is narrower than N."""
    masks = qk_layer_masks(tiny_model(name))
    widths = [m.window for m in masks if m.window != (-1, -1)]
    if name == "llama":
        assert widths == [] and all(m.causal for m in masks)
    else:
        assert widths and all(max(w) < 9 for w in widths)
    if name == "modernbert":
        assert [m.window for m in masks] == [(-1, -1), (4, 4), (4, 4), (-1, -1)]


def test_repeatable_bitwise():
    model = tiny_model("modernbert")
    ids, mask = batch(model, [20, 13])
    first, _ = captured(model, ids, mask, per_head=True)
    second, _ = captured(model, ids, mask, per_head=True)
    assert torch.equal(first.received, second.received)


def test_logits_are_the_models_own():
    model = tiny_model("llama")
    ids, mask = batch(model, [12, 8])
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
    _, logits = captured(model, ids, mask)
    assert torch.equal(logits, plain)


def _state(model):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return (model.config._attn_implementation, model.training, hooks, dict(ALL_ATTENTION_FUNCTIONS._local_mapping),
            [m.training for m in model.modules()])


@pytest.mark.parametrize("name", ["bert", "big_bird", "modernbert", "qwen2"])
def test_model_comes_back_as_it_went_in_even_after_an_error(name):
    model = tiny_model(name)
    model.train()  # a user's model in training mode stays so
    ids, mask = batch(model, [10])
    before = _state(model)
    result = attention_from_inputs(model, ids, attention_mask=mask)
    assert result.route == "qk" and _state(model) == before

    layer = QKCapture(model).modules[1]

    def fail(*args, **kwargs):
        raise RuntimeError("inside the forward")

    handle = layer.register_forward_pre_hook(fail)  # the forward raises inside layer 1, after layer 0 was captured
    before = _state(model)
    with pytest.raises(RuntimeError, match="inside the forward"):
        attention_from_inputs(model, ids, attention_mask=mask)
    assert _state(model) == before
    handle.remove()


def test_refused_models_are_named_with_the_reason():
    import transformers as tf

    deberta = tf.DebertaV2ForSequenceClassification(tf.DebertaV2Config(**SMALL))
    assert "relative-position" in qk_refusal(deberta) and "DebertaV2ForSequenceClassification" in qk_refusal(deberta)
    sparse = tf.BigBirdForSequenceClassification(tf.BigBirdConfig(**SMALL, attention_type="block_sparse"))
    assert "block_sparse" in qk_refusal(sparse)
    with pytest.raises(ValueError, match="relative-position"):
        attention_from_inputs(deberta, torch.tensor([[2, 5, 6, 3]]), route="qk")
    with pytest.raises(ValueError, match="route must be"):
        attention_from_inputs(tiny_model("bert"), torch.tensor([[2, 5, 6, 3]]), route="fast")
    # auto falls back to the model's own eager probabilities
    assert attention_from_inputs(deberta, torch.tensor([[2, 5, 6, 3]])).route == "eager"


@pytest.mark.parametrize("name", ["bert", "modernbert", "mistral"])
def test_attention_routes_agree(name):
    """pyattn.attention_from_inputs: route="qk" (default for these) against
    route="eager", the reference, including head importance and rollout."""
    model = tiny_model(name, seed=3)
    ids, mask = batch(model, [16])
    importance = torch.rand(len(qk_layer_masks(model)), 4, generator=torch.Generator().manual_seed(2))
    fast = attention_from_inputs(copy.deepcopy(model), ids, attention_mask=mask, head_importance=importance, per_head=True, rollout=True)
    reference = attention_from_inputs(copy.deepcopy(model), ids, attention_mask=mask, head_importance=importance, per_head=True,
                                      rollout=True, route="eager")
    assert (fast.route, reference.route) == ("qk", "eager")
    torch.testing.assert_close(fast.received.per_layer, reference.received.per_layer, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.rollout, reference.rollout, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.logits, reference.logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="route='eager'"):
        fast.dense(0)


@pytest.mark.parametrize("name", ["modernbert", "llama"])
def test_cli_attribute_stores_the_models_own_attention(name, tmp_path):
    """`pyattn attribute` on a tiny model saved to a folder: the stored
    attention received per layer and head (read by the q/k route while the
    loaded model runs sdpa) equals the column sums of the saved model's own
    eager attention."""
    import pandas as pd
    from transformers import AutoModelForSequenceClassification

    from pyattn.cli import main
    from pyattn.pipeline import stored_attention
    from pyattn.pipeline.store import ResultsStore
    from testing import sample_text, tiny_tokenizer

    model, tokenizer = tiny_model(name, seed=5), tiny_tokenizer("bert")
    folder = tmp_path / name
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    texts = [sample_text(14, seed=1), sample_text(9, seed=2)]
    pd.DataFrame({"text": texts, "label": [0, 2]}).to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "store"
    assert main(["attribute", "--model", str(folder), "--data", str(tmp_path / "data.csv"), "--out", str(out), "--steps", "4", "--quiet"]) == 0
    records = ResultsStore.open(str(out)).records().sort_values("index")
    from pyattn.pipeline import load_model

    assert load_model(str(folder))[0].config._attn_implementation == "sdpa"  # loaded as saved: the q/k route reads it
    eager = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    for text, (_, record) in zip(texts, records.iterrows()):
        ids = torch.tensor([[int(i) for i in record["input_ids"]]])
        stored = torch.as_tensor(stored_attention(record))  # (L, H, N)
        expected = eager_received(eager_attentions(eager, ids, torch.ones_like(ids)), torch.ones_like(ids))[:, 0]
        torch.testing.assert_close(stored, expected, atol=1e-5, rtol=1e-5)
    eager_out = tmp_path / "store-eager"
    assert main(["attribute", "--model", str(folder), "--data", str(tmp_path / "data.csv"), "--out", str(eager_out), "--steps", "4",
                 "--attention-route", "eager", "--quiet"]) == 0
    by_eager = ResultsStore.open(str(eager_out)).records().sort_values("index")
    for (_, fast), (_, reference) in zip(records.iterrows(), by_eager.iterrows()):
        np_fast, np_ref = stored_attention(fast), stored_attention(reference)
        torch.testing.assert_close(torch.as_tensor(np_fast), torch.as_tensor(np_ref), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ threads
def _slowed(model, layer_index: int, seconds: float):
    layers = [m for m in model.modules() if type(m).__name__.endswith(("Layer", "DecoderLayer", "TransformerBlock", "EncoderLayer"))]
    return layers[layer_index].register_forward_pre_hook(lambda *_: __import__("time").sleep(seconds))


@pytest.mark.parametrize("pair", [("bert", "llama"), ("bert", "bert"), ("big_bird", "big_bird")], ids=["two-models", "one-model", "one-model-hooks"])
def test_threads_get_what_each_gets_alone_and_the_mapping_comes_back(pair):
    """Two threads at once, their captures left out of order (the first thread
    to enter leaves first while the other is mid-forward): each gets what it
    gets alone, and transformers' global attention mapping ends as it began."""
    import threading

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    first = tiny_model(pair[0])
    second = first if pair[0] == pair[1] else tiny_model(pair[1])
    ids_a, _ = batch(first, [9])
    ids_b, _ = batch(second, [13], seed=1)
    alone = [attention_from_inputs(first, ids_a).received.per_layer, attention_from_inputs(second, ids_b).received.per_layer]
    before = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    handles = [_slowed(first, -1, 0.4), _slowed(second, 0, 0.8)]
    got: dict[int, object] = {}

    def run(index, model, ids, delay):
        __import__("time").sleep(delay)
        try:
            got[index] = attention_from_inputs(model, ids).received.per_layer
        except Exception as error:  # reported by the assertion below
            got[index] = error

    threads = [threading.Thread(target=run, args=(0, first, ids_a, 0.0)), threading.Thread(target=run, args=(1, second, ids_b, 0.1))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for handle in handles:
            handle.remove()
    for index in (0, 1):
        assert isinstance(got[index], torch.Tensor), got[index]
        assert torch.equal(got[index], alone[index])
    assert dict(ALL_ATTENTION_FUNCTIONS._local_mapping) == before
