"""Train loop v3: a Qwen + LoRA classifier for structural trading events.

One module per pipeline step: ``schema`` (the event contract), ``data`` (JSONL loading),
``oversample``, ``serialize`` (event -> text), ``model``, ``loss``, ``train_loop``, ``evaluate``,
``package``, ``tracking``, ``tune``, ``predict``. The demo's scaffolding (sample data, rule sets, the
demo base ``qwen-tiny``, the Qwen stand-in, `make demo`) is the separate package ``demo_kit``, which this
package never imports.
"""

__version__ = "3.0.0"
