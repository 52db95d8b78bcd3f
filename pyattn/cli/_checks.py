"""Checks two commands share, before any work: the tokenizer fits the model
on the documents (``attribute``, ``importance``); a results store, its shape
and a head importance that fits it, and the special tokens of the store's
tokenizer (``compare``, ``report``)."""

from __future__ import annotations

from pyattn.cli._flags import Refused

__all__ = ["check_tokenizer_fits", "special_tokens", "store_and_importance"]


def check_tokenizer_fits(model, tokenizer, documents, data: str) -> None:
    """The tokenizer fits the model on these documents (ids inside the
    vocabulary, not mostly unknown), before any store is made."""
    from pyattn.models.inputs import check_tokenizer_fits as check_fits

    texts = [d.text for d in documents if isinstance(d.text, str) and d.text.strip()]
    ids = [i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    try:
        check_fits(model, tokenizer, ids, where=f"the {len(texts)} document(s) of {data}")
    except ValueError as error:
        raise Refused(str(error).replace("(pass the model's own tokenizer)", "(pass the model's own with --tokenizer)")) from None


def special_tokens(tokenizer_name: str) -> list[str]:
    import pyattn

    if tokenizer_name == "demo":
        return list(pyattn.load_demo()[1].all_special_tokens)
    from pyattn.pipeline import quiet_transformers

    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        special = list(AutoTokenizer.from_pretrained(tokenizer_name).all_special_tokens)
    except Exception as error:
        raise Refused(f"cannot load the tokenizer {tokenizer_name!r} named in the store's manifest ({type(error).__name__}), "
                       "so special tokens cannot be told apart") from None
    if not special:
        raise Refused(f"the tokenizer {tokenizer_name!r} named in the store's manifest declares no special tokens, "
                       "so the no_special mask cannot be computed")
    return special


def store_and_importance(args):
    """The store, its (layers, heads) and a checked head importance."""
    from pyattn.attribution.importance import load_head_importance
    from pyattn.pipeline import store_shape
    from pyattn.pipeline.store import ResultsStore

    store = ResultsStore.open(args.results)
    shape = store_shape(store)
    if shape is None:
        raise Refused(f"{store.path} holds no results yet: run `pyattn attribute` first")
    importance = None
    if args.head_importance:
        importance = load_head_importance(args.head_importance).numpy()
        if tuple(importance.shape) != tuple(shape):
            raise Refused(f"--head-importance {args.head_importance} has shape {tuple(importance.shape)} "
                           f"but the store's model has {shape[0]} layers x {shape[1]} heads")
    return store, shape, importance
