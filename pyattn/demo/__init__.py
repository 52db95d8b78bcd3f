"""The shipped demo: a small Longformer classifier of two generated topics
(machine learning vs programming languages), its tokenizer and documents.

``load_demo()`` returns ``(model, tokenizer)`` from files inside the package,
offline; ``tokenizer(text)`` gives ``<s> text </s>``, the input
:func:`pyattn.models.inputs.encode` builds, and the model was trained and evaluated
on exactly those inputs (position ids and global attention on ``<s>``
included). ``demo_documents(split)`` returns labelled documents. The model was
trained by ``python -m pyattn.demo.train`` (see that module).
"""

from __future__ import annotations

import os

from pyattn.demo.data import LABEL_WORDS, LABELS, SHARED_WORDS, DemoDocument, demo_documents

__all__ = ["load_demo", "demo_documents", "DemoDocument", "LABELS", "LABEL_WORDS", "SHARED_WORDS", "MODEL_DIR", "DOCS_CSV"]

#: Where the shipped model, config and tokenizer live.
MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")

#: A sample dataset for ``pyattn attribute --data``: four short demo
#: documents with the default columns ``id``, ``text`` and ``label`` (the
#: model's class names).
DOCS_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "docs.csv")


def load_demo(device=None):
    """The shipped demo model (``LongformerForSequenceClassification``, eval
    mode) and its tokenizer, loaded from the package without network.

    >>> model, tokenizer = load_demo()
    >>> model.config.num_hidden_layers, model.config.num_attention_heads, model.config.attention_window
    (3, 4, [32, 64, 128])
    """
    from transformers import AutoTokenizer, LongformerForSequenceClassification

    if not os.path.exists(os.path.join(MODEL_DIR, "model.safetensors")):
        raise FileNotFoundError(
            f"the demo model is missing from {MODEL_DIR}: reinstall pyattn, or train it with `python -m pyattn.demo.train`"
        )
    from pyattn._quiet import transformers_quiet

    with transformers_quiet():  # no weight-loading bar for the package's own model
        tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
        model = LongformerForSequenceClassification.from_pretrained(MODEL_DIR, local_files_only=True).eval()
    if device is not None:
        model = model.to(device)
    return model, tokenizer
