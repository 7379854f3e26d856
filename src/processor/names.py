"""Names that several modules must agree on: the files a run leaves, the names it logs under, the
demo base's id. Declared once here, in a module that imports nothing, so that the gate, serving, the
train loop and the demo-base builder can all use them without importing one another.

(``metrics.json`` and ``serving.json`` belong to the run record module that reads and writes them.)
"""

from __future__ import annotations

# The shipped model: adapters, head, tokenizer, serializer, metrics (processor.package). The default of
# ``packaging.zip_final``; a run may name its zip otherwise (the gate reads that name from the run).
ZIP_NAME = "model_final.zip"
# The key under which the logged pyfunc model carries that zip (``context.artifacts``, MLmodel).
ZIP_ARTIFACT = "model_final"
# The key under which it carries the base checkpoint, when one is bundled (processor.serving loads it).
BASE_ARTIFACT = "base"
# The pyfunc's code, logged by path from the package (models from code), never imported to log it.
PYFUNC_MODULE = "serving.py"
# The name the run's pyfunc model is logged under (and the gate looks for).
PYFUNC_NAME = "model"
# The run's resolved configuration, beside metrics.json in the output directory and the run's artifacts.
RESOLVED_CONFIG = "resolved_config.yaml"
# Written beside train.jsonl/val.jsonl by demo_kit.sample_data; the train loop logs it with the data.
DATA_CARD = "data_card.json"

# The classic models a run fits beside the LLM on the same split (processor.evaluate.baselines; the
# config's eval.baselines chooses among them): metrics.json ``baselines.<name>``.
BASELINES = ("logistic_regression", "hist_gradient_boosting", "tuned_gbdt")

# The demo base (demo_kit.tiny_base builds it; processor.model resolves the alias to it).
TINY_BASE_ID = "processor/qwen-tiny"
# Written into every qwen-tiny build; its presence marks a finished build (the directory is renamed
# into place only after it is written) and lets a copied directory still be recognised as the demo base.
BUILD_INFO_FILE = "processor_build.json"
