"""``--bundle-base``: before registering, re-log the run's pyfunc model with the base checkpoint inside.

A run trained on a hub base logs a pyfunc model that records the base's id and revision; a serving
host then needs the hub or a cache. When the serving hosts are air-gapped, whoever promotes decides
that, not whoever trained, so the gate can bundle the base at promotion time: the same zip, code,
requirements and metadata, plus the base checkpoint resolved on the gate's machine and checked against
the weights digest recorded in the zip. It is logged to the same run under the same name (the gate's
evidence and ``find_logged_model`` take the newest), and that model is the one registered.
"""

from __future__ import annotations

from pathlib import Path

from processor.cli import parse_bool
from processor.gate.evidence import Evidence, serving_json
from processor.gate.registry import GateInfraError


def already_bundled(ev: Evidence) -> bool:
    value = ev.model_metadata.get("base_bundled")
    try:
        return value is not None and parse_bool(value)
    except ValueError:  # metadata the gate did not write: not a claim that the base is bundled
        return False


def _requirements(model_dir: Path) -> list[str]:
    path = model_dir / "requirements.txt"
    if not path.is_file():
        raise GateInfraError(f"--bundle-base: the logged model has no requirements.txt ({model_dir})")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def bundle_base(run_id: str, ev: Evidence) -> str:
    """Log the run's pyfunc again with its base checkpoint bundled; return the new model id.

    Nothing is logged when the model already carries its base (the demo base always does). Raises
    :class:`GateInfraError` (exit 2, one line) when the base cannot be resolved on this machine or is
    not the checkpoint the adapter was trained on."""
    import mlflow
    import pandas as pd
    from mlflow.models import Model

    from processor.io import weights_sha256
    from processor.model import ModelNotAvailableError, resolve_model
    from processor.package import PackageError, load_packaged_model
    from processor.tracking import log_pyfunc

    if already_bundled(ev):
        return ev.pyfunc_model_id or ""
    if ev.zip_path is None or ev.pyfunc_dir is None:
        raise GateInfraError("--bundle-base: the run's zip or pyfunc model was not downloaded")
    serving, problem = serving_json(ev.zip_path)
    if serving is None or not serving.base.name:
        raise GateInfraError(f"--bundle-base: the package names no base model ({problem or 'no base in serving.json'})")
    base = serving.base
    try:
        resolved = resolve_model(base.name, revision=base.revision)
    except ModelNotAvailableError as exc:
        raise GateInfraError(f"--bundle-base: base model {base.name!r} is not available on this machine: "
                             f"{exc}") from None
    if base.weights_sha256 and weights_sha256(resolved.path) != base.weights_sha256:
        raise GateInfraError(f"--bundle-base: base model {base.name!r} at {resolved.path} is not the one the "
                             "adapter was trained on (weights sha256 differs); nothing registered")
    example = Model.load(ev.pyfunc_dir).load_input_example(ev.pyfunc_dir)
    if isinstance(example, list):  # logged as request records ({"inputs": [...]}); older models: a frame
        example = pd.DataFrame.from_records(example)
    if not isinstance(example, pd.DataFrame) or example.empty:
        raise GateInfraError("--bundle-base: the logged model has no input example to log the bundled one with")
    try:
        packaged = load_packaged_model(ev.zip_path, base_dir=resolved.path)
    except PackageError as exc:
        raise GateInfraError(f"--bundle-base: {exc}") from None
    try:
        output = pd.DataFrame(packaged.predict(example.to_dict(orient="records")))
    finally:
        packaged.close()
    metadata = {**ev.model_metadata, "base_bundled": True}
    with mlflow.start_run(run_id=run_id):  # reopened and finished again: the model belongs to the run
        info = log_pyfunc(ev.zip_path, example, output, _requirements(ev.pyfunc_dir),
                          base_dir=Path(resolved.path), metadata=metadata)
    return info.model_id
