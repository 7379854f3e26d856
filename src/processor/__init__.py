"""Train loop v3: a Qwen + LoRA classifier for structural trading events.

One module per pipeline step: ``schema`` (the event contract), ``data`` (JSONL loading),
``oversample``, ``serialize`` (event -> text), ``model``, ``loss``, ``train_loop``, ``evaluate``,
``package``, ``tracking``, ``tune``, ``predict``.
"""

__version__ = "3.0.0"
