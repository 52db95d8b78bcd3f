"""Demo documents: generated abstracts-and-bodies of two topics, mirroring the
original task (arXiv cs.AI-style machine-learning papers vs cs.PL-style
programming-language papers).

Each document is built from sentence templates whose slots draw words from
the document's topic vocabulary, from a large vocabulary shared by both
topics (academic prose, and words like *model*, *program*, *language*,
*kernel*, *inference* that both fields use), and, as noise, from the other
topic (0-35% of topic slots, varying per document, as does the share of
topic slots given to shared words). So no single word decides the label, but the topic words carry it:
:data:`LABEL_WORDS` lists them, and the attribution test checks that the model
learned to look at them.

Everything is seeded: ``demo_documents("test")`` is the same everywhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pyattn.errors import InputError

__all__ = ["LABELS", "LABEL_WORDS", "SHARED_WORDS", "DemoDocument", "demo_documents", "generate_document"]

LABELS = ("machine learning", "programming languages")

_ML = """
neural network networks deep learning gradient descent stochastic backpropagation training trained
classifier classifiers regression supervised unsupervised reinforcement reward policy agent
transformer transformers attention embedding embeddings convolutional recurrent lstm dropout
regularization overfitting underfitting hyperparameter hyperparameters epoch epochs minibatch
dataset datasets benchmark accuracy precision recall generative adversarial autoencoder variational
bayesian posterior likelihood clustering features feature pretraining finetuning fine-tuned
labels labeled annotated loss entropy softmax activation layers neurons perceptron tensor
""".split()

_PL = """
compiler compilers type types typed typing typechecker semantics operational denotational syntax
parser parsing grammar interpreter bytecode garbage collector polymorphism polymorphic monad monads
functional imperative lambda calculus closure closures continuation continuations concurrency
verification verified refinement ownership borrow checker linker macro macros haskell ocaml rust
coq lean proof assistant soundness subtyping unification pointer pointers aliasing
heap stack register allocation optimizer optimizations intermediate ssa llvm
""".split()

_SHARED = """
we propose present introduce novel approach method methods framework system systems results show
demonstrate evaluate evaluation experiments experimental performance efficient efficiency scalable
model models program programs language languages analysis algorithm algorithms data structure
structures function functions kernel inference optimization memory runtime graph graphs tree trees
representation representations problem problems paper work prior existing state art significant
significantly improve improves improvement compared baseline baselines large small set sets
implementation implement implemented tool tools design general generalization search space time
complexity correctness correct error errors study studies application applications practical
theory theoretical formal formalism abstract abstraction domain specific open source code
""".split()

_FILLER = "the a an of and to in for on with by from that this these which is are was be as at its their our it".split()

#: Words that carry each label (lower case, as generated).
LABEL_WORDS = {0: frozenset(_ML), 1: frozenset(_PL)}
SHARED_WORDS = frozenset(_SHARED)

_TEMPLATES = [
    "we {S} a {T} {S} for {T} {T} .",
    "this {S} {S} {T} {T} and {T} {S} .",
    "our {S} {S} {T} {T} on {S} {S} .",
    "the {T} {S} is {S} with {T} {T} {S} .",
    "in this {S} we {S} {T} {S} using {T} .",
    "{T} {T} {S} {S} of {T} {S} in {S} {S} .",
    "results {S} that {T} {T} {S} {S} {S} .",
    "we {S} {S} {T} to {S} the {T} {S} .",
    "prior {S} on {T} {S} {T} {S} {S} .",
    "a {S} {S} of {S} {S} {T} with {S} {T} .",
    "experiments on {S} {S} {S} {T} {T} and {S} .",
]


@dataclass(frozen=True)
class DemoDocument:
    """One generated document and its label (0: machine learning, 1:
    programming languages); ``label_name`` is its entry in :data:`LABELS`.

    Attributes
    ----------
    text : str
    label : int

    Examples
    --------
    >>> document = demo_documents("test", n=1)[0]
    >>> document.label, document.label_name, isinstance(document.text, str)
    (0, 'machine learning', True)
    >>> DemoDocument("the borrow checker", 1).label_name
    'programming languages'
    """
    text: str
    label: int

    @property
    def label_name(self) -> str:
        """The label's name in :data:`LABELS`."""
        return LABELS[self.label]


def generate_document(label: int | None, n_words: int, rng: random.Random, noise: float = 0.25, topic_rate: float = 1.0) -> str:
    """About ``n_words`` words of topic ``label``: a topic slot ({T}) takes a
    shared word with probability ``1 - topic_rate``, else a word of the other
    topic with probability ``noise``, else a word of its own topic; shared
    slots ({S}) take shared words; filler words are sprinkled in.
    ``label=None`` makes a neutral document of shared words only (used in
    training, to teach the model that text without topic words says nothing).

    Parameters
    ----------
    label : int or None
        0, 1, or None for a neutral document.
    n_words : int
    rng : random.Random
        The only source of randomness (seed it to repeat a document).
    noise : float
        Share of topic slots filled from the other topic, in [0, 1].
    topic_rate : float
        Share of topic slots that take a topic word at all, in [0, 1].

    Returns
    -------
    str

    Examples
    --------
    >>> import random
    >>> def topic_words(text, label):
    ...     return set(text.replace(".", " ").replace(",", " ").lower().split()) & set(LABEL_WORDS[label])
    >>> text = generate_document(0, 40, random.Random(1), noise=0.0)
    >>> len(topic_words(text, 0)) > 0, topic_words(text, 1)  # no noise: no word of the other topic
    (True, set())
    >>> neutral = generate_document(None, 30, random.Random(0))
    >>> topic_words(neutral, 0) | topic_words(neutral, 1)
    set()
    >>> generate_document(1, 12, random.Random(0)) == generate_document(1, 12, random.Random(0))  # seeded
    True
    """
    if label is None:
        own = other = _SHARED
    else:
        own, other = (_ML, _PL) if label == 0 else (_PL, _ML)
    words: list[str] = []
    while len(words) < n_words:
        template = rng.choice(_TEMPLATES)
        for slot in template.split():
            if slot == "{T}" and rng.random() < topic_rate:
                words.append(rng.choice(other if rng.random() < noise else own))
            elif slot == "{T}":
                words.append(rng.choice(_SHARED))
            elif slot == "{S}":
                words.append(rng.choice(_SHARED))
            else:
                words.append(slot)
            if rng.random() < 0.2:
                words.append(rng.choice(_FILLER))
    return " ".join(words[:n_words])


_SPLITS = {"train": (0, 900), "validation": (1, 100), "test": (2, 200)}


def demo_documents(split: str = "test", n: int | None = None, min_words: int = 150, max_words: int = 3900) -> list[DemoDocument]:
    """Labelled demo documents of one split (``"train"``, ``"validation"``,
    ``"test"``; deterministic), balanced, lengths log-uniform between
    ``min_words`` and ``max_words`` words (a few hundred to about 4,000
    tokens).

    >>> documents = demo_documents("test")
    >>> len(documents), sorted({d.label_name for d in documents})
    (200, ['machine learning', 'programming languages'])
    """
    if split not in _SPLITS:
        raise InputError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    seed, size = _SPLITS[split]
    size = size if n is None else int(n)
    rng = random.Random(1000 + seed)
    documents = []
    for index in range(size):
        label = index % 2
        n_words = int(round(min_words * (max_words / min_words) ** rng.random()))
        # Per document: how many topic words, and how much of the other topic.
        # Documents with no noise at all make the model learn both
        # vocabularies (with a fixed noise rate it could, and did, learn the
        # density of one topic's words alone).
        noise, topic_rate = rng.uniform(0.0, 0.35), rng.uniform(0.5, 1.0)
        documents.append(DemoDocument(generate_document(label, n_words, rng, noise, topic_rate), label))
    return documents
