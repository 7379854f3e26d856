"""The demo kit: what `make demo`, the tests and the benchmarks need and a user of the product does not.

* ``sample_data`` -- synthetic labeled events and their data card (``python -m demo_kit.sample_data``);
* ``rules`` -- the labeler's rule sets v1, v2, v3 that label them (and give the Bayes ceiling);
* ``tiny_base`` -- builds and pretrains the demo base ``qwen-tiny`` locally;
* ``qwen_standin`` -- a Qwen2.5 checkpoint with Qwen's vocabulary and random weights, for offline runs of
  the real-Qwen path (``python -m demo_kit.qwen_standin``);
* ``demo`` -- `make demo`'s driver: sample data -> validate -> `mlflow run` -> gate (``python -m demo_kit``).

It imports :mod:`processor`; :mod:`processor` never imports it (tests/test_architecture.py). The product
reaches ``qwen-tiny`` by name only, through :data:`processor.model.LOCAL_BUILDERS`.
"""
