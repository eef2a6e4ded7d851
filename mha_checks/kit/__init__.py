"""The checks that several chapters make the same way, beside the engine.

A chapter module declares its own functions, mistakes and messages; what it
shares with other chapters lives here under public names, so that a chapter
imports the engine, this kit and earlier chapters' public declarations (their
``Function`` objects), never another chapter's private helpers:

- :mod:`.common`: case inputs every chapter draws from (random arrays, masks),
  and ``pasted_in`` for a building block an earlier chapter declared.
- :mod:`.layers`: the whole multi-head layer ``f(x, params, n_heads, mask=None)``:
  its cases, its known mistakes, the mistakes it inherits from its building blocks.
- :mod:`.head_masks`: the layer with a head mask and a model's head mask ``(L, H)``.
- :mod:`.models`: the attention-only model: cases, the forward pass's diagnosis, the
  PyTorch model's check, the course's trained model in PyTorch.
- :mod:`.modules`: the PyTorch ``MultiHeadAttention``: its parameters and head mask,
  a per-example head mask, ``prune_heads``.
- :mod:`.differences`: the check of ``central_difference`` on known gradients.
- :mod:`.pruned`: a pruned layer or model as the student's function returns it.
"""
