"""The models: text -> the tensors a model is given, and the model's own
attention read from inside it.

- :mod:`pyattn.models.inputs`: text -> input ids, the integrated-gradients
  baseline, positions and masks, as the model builds them; the embedding
  layer and output kind of each model;
- :mod:`pyattn.models.fast_attention`: an exact, faster Longformer
  self-attention (used while attributing);
- :mod:`pyattn.models.qk_capture`: the per-architecture table of where each
  attention module's queries and keys are read, and the capture itself;
- :mod:`pyattn.models.recompute`: a model's stack of layers, run with
  activation recomputation (attribution at lengths whose activations do not
  fit the memory budget);
- ``pyattn.models._state`` (private): a model's mutable settings put back as
  they were after a call; ``pyattn.models._checks`` (private): checks of the
  tensors a model is given.

Models know nothing of attributions, comparisons or reports.
"""

__all__: list[str] = []  # the modules above hold the public names
