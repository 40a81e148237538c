"""Which configuration a command uses, where its outputs go, and the data named on the command
line (`edgegate run MODEL --calibration X --evaluation Y`, `--synthetic`): the CLI's setup before
anything is gated."""

from __future__ import annotations

import os
from pathlib import Path

from edgegate.config.files import CONFIG, OUT_DIR, find_config, git_root
from edgegate.errors import ConfigError, InputError


def config_file(config_path: str | None) -> Path | None:
    """``--config`` as given (it must exist), else the edgegate.yml found here or in a folder
    above, up to the git root; None when there is none."""
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError("configuration file not found", file=config_path,
                              fix="correct --config, or leave it out to use the edgegate.yml of "
                                  "this folder or a folder above it (edgegate init writes one)")
        return path
    return find_config()


def default_root(config: Path | None) -> Path:
    """The repository root: the configuration's folder, else the git root, else here."""
    if config is not None:
        return Path(os.path.abspath(config)).parent
    return git_root() or Path.cwd()


def out_folder(out_dir: str | None, root: Path) -> Path:
    """``--out`` as given (relative to here), else OUT_DIR at the repository root."""
    return Path(out_dir) if out_dir else Path(relative(root / OUT_DIR))


def relative(path: Path) -> str:
    """``path`` as printed: relative to the current folder when that is shorter."""
    rel = os.path.relpath(os.path.abspath(path))
    return rel if not rel.startswith("../../..") else str(path)


def load(config_path: str | None, models=(), say=None):
    """The loaded configuration. Without one, named MODELs run on the built-in defaults;
    ``say`` (a print function) is told which configuration is used."""
    from edgegate.config.load import LoadedConfig, load_config
    from edgegate.config.schema import Config
    from edgegate.config.yamlfile import Sourced

    found = config_file(config_path)
    if found is not None:
        if say is not None:
            say(f"config: {relative(found)}")
        return load_config(found)
    if models:
        if say is not None:
            say(f"config: none ({CONFIG} not found here or above): built-in defaults")
        return LoadedConfig(Config(version=1), Sourced(None, "(defaults)"), default_root(None))
    raise ConfigError(f"no {CONFIG} in this folder or any folder above it (up to the git root)",
                      file=CONFIG,
                      fix="run 'edgegate init' to write one, or name a model to try it: edgegate run "
                          "model.onnx --synthetic (or --calibration data.npz --evaluation eval.npz)")


SYNTHETIC_NOTE = ("--synthetic: the model is calibrated and compared on random inputs: no accuracy "
                  "is measured (there are no labels), the calibration ranges are not those of real "
                  "data, and the fidelity numbers say little about real inputs. Pass --calibration "
                  "and --evaluation files for numbers that mean something")


def with_data(loaded, models, calibration: str | None, evaluation: str | None, labels: str | None,
              metric: str | None, synthetic: bool):
    """The configuration with each named MODEL's calibration / evaluation set from the command
    line (replacing its edgegate.yml entry's, if it has one). Paths are relative to here."""
    from pydantic import ValidationError

    from edgegate.config.schema import CalibrationSpec, EvaluationSpec, ModelSpec
    from edgegate.discover import spec_for

    if not (calibration or evaluation or synthetic or labels or metric):
        return loaded
    if not models:
        raise ConfigError("--calibration, --evaluation, --labels, --metric and --synthetic apply to "
                          "the models named on the command line, and none is named",
                          field="MODEL", fix="name the model: edgegate run path/to/model.onnx "
                                             "--calibration data.npz")
    if synthetic and calibration:
        raise ConfigError("--synthetic and --calibration both say what to calibrate on",
                          field="--synthetic", fix="keep one of them")
    if (labels or metric) and not evaluation:
        raise ConfigError("--labels and --metric describe the --evaluation file, and none is given",
                          field="--evaluation", fix="add --evaluation eval.npz (or drop --labels/--metric)")
    root = loaded.root
    cal = _under_root(calibration, root, "--calibration") if calibration else None
    ev = _under_root(evaluation, root, "--evaluation") if evaluation else None
    entries = list(loaded.config.models)
    for model in models:
        rel = _under_root(model, root, "MODEL")
        base = spec_for(loaded.config, rel)
        update: dict = {"path": rel}
        try:
            if synthetic:
                update["calibration"] = CalibrationSpec(synthetic=True)
            elif cal:
                update["calibration"] = cal
            if ev:
                update["evaluation"] = EvaluationSpec.model_validate(
                    {"data": ev, **({"labels": labels} if labels else {}),
                     **({"metric": metric} if metric else {})})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(err["msg"].removeprefix("Value error, "), field="--metric",
                              value=metric, fix="use top1, top5, mse, fidelity or module:function "
                                                "(docs/configuration.md)") from None
        if base is not None and base.path.strip("/") == rel:
            entries[entries.index(base)] = base.model_copy(update=update)
        else:
            entries.append(ModelSpec.model_validate(
                {**(base.model_dump(exclude_unset=True) if base else {}), **update}))
    config = loaded.config.model_copy(update={"models": entries})
    return type(loaded)(config, loaded.source, root)


def _under_root(given: str, root: Path, field: str) -> str:
    """A path typed on the command line (relative to here) as a POSIX path relative to the
    repository root; it must exist."""
    path = Path(os.path.abspath(given))
    if not path.exists():
        raise InputError("not found", field=field, file=given,
                         fix="check the path (relative to the current folder)")
    for base in (Path(os.path.abspath(root)), root.resolve()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    raise InputError(f"outside the repository ({relative(root)})", field=field, file=given,
                     fix="copy the file into the repository, or run from the repository it is in")
