"""One call per document: :func:`explain` runs the whole comparison and
returns an :class:`Explanation` that holds every number and renders itself.

``pyattn demo``, the dataset commands and the reports are callers of the same
pieces; a notebook user gets them in one object::

    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = pyattn.explain(model, tokenizer, "the borrow checker rejects the program", faithfulness=False)
    >>> result.supporting(2)["token"].tolist()  # the 2 tokens that most support the prediction
    ['borrow', 'checker']
    >>> result.save_html("document.html")  # doctest: +SKIP
    >>> result                # in a notebook: the heat maps, inline   # doctest: +SKIP

The package: :mod:`~pyattn.explanation.document` goes from text to the
numbers (:func:`explain`, its comparison stage :func:`compose`,
:func:`compare_document`, :func:`attention_views`);
:mod:`~pyattn.explanation.result` holds them (:class:`Explanation`).

Conventions: per-document vectors are numpy arrays over the encoded document
(special tokens included, as :func:`pyattn.attribute` returns them); tables
are pandas DataFrames; layers and heads are numbered from 0; every ranking
names its convention (see :mod:`pyattn.compare.similarity` and :mod:`pyattn.compare.tokens`).
"""

from pyattn.explanation.document import attention_views, compare_document, compose, explain, label_names
from pyattn.explanation.result import Explanation, NotConvergedWarning

__all__ = ["Explanation", "explain", "compose", "compare_document", "attention_views", "label_names", "NotConvergedWarning"]
