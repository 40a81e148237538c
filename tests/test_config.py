"""edgegate.yml and policy loading: valid files load, every error names file, line, field and value."""

import json
from pathlib import Path

import pytest

from edgegate.config.jsonschema import SCHEMAS, schema_text
from edgegate.config.load import builtin_profiles, load_config, load_policy, policy_stack, resolve_devices
from edgegate.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text, name="edgegate.yml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_full_config_loads(tmp_path):
    path = write(tmp_path, """version: 1
models:
  - path: models/classifier.onnx
    calibration: data/calibration.npz
    evaluation:
      data: data/evaluation.npz
      labels: labels
      metric: top5
    devices: [x86-cpu]
policy: .edgegate/policy.yml
""")
    loaded = load_config(path)
    spec = loaded.config.models[0]
    assert spec.calibration_spec().data == "data/calibration.npz"
    assert spec.calibration_spec().samples == 200          # documented default
    assert spec.evaluation.metric == "top5"
    assert loaded.root == tmp_path


def test_unknown_key_names_file_line_field_and_allowed_keys(tmp_path):
    path = write(tmp_path, """version: 1
models:
  - path: m.onnx
    calibraton: data/c.npz
""")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    e = err.value
    assert e.file == "edgegate.yml" and e.line == 4
    assert e.field == "models.0.calibraton"
    assert "calibration" in e.fix                           # lists the allowed keys


def test_bad_value_reports_value_seen_and_allowed(tmp_path):
    path = write(tmp_path, """version: 1
models:
  - path: m.onnx
    evaluation:
      data: e.npz
      metric: accuracy
""")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.line == 6
    assert err.value.value == "accuracy"
    assert "top1" in err.value.message


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "version: 1\nmodels:\n  - path: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.file == "edgegate.yml" and err.value.line is not None
    assert "invalid YAML" in err.value.message


def test_wrong_version_and_duplicate_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "version: 2\n"))
    assert err.value.field == "version" and err.value.value == 2
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "version: 1\nversion: 1\n"))
    assert "duplicate key" in err.value.message and err.value.line == 2


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 10) + "]")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "\n".join(lines) + "\n"))
    assert "alias bomb" in err.value.message


def test_repository_policy_overrides_builtin_limit_and_records_its_line(tmp_path):
    write(tmp_path, "version: 1\npolicy: policy.yml\n")
    write(tmp_path, """version: 1
devices:
  x86-cpu:
    min_speedup: 2.0
  my-box:
    target: onnxruntime
    max_size_mb: 10
""", "policy.yml")
    loaded = load_config(tmp_path / "edgegate.yml")
    devices = resolve_devices(policy_stack(loaded))
    x86 = devices["x86-cpu"]
    assert x86.limits["min_speedup"].value == 2.0
    assert x86.limits["min_speedup"].source == "policy.yml:4"
    # limits the repository did not touch still come from the built-in profile
    assert x86.limits["max_accuracy_drop_pp"].source.startswith("policies/x86-cpu.yml:")
    assert devices["my-box"].limits["max_size_mb"].value == 10   # a custom device


def test_custom_device_without_target_is_an_error(tmp_path):
    write(tmp_path, "version: 1\ndevices:\n  mystery:\n    max_size_mb: 1\n", "p.yml")
    with pytest.raises(ConfigError) as err:
        resolve_devices(builtin_profiles() + [load_policy(tmp_path / "p.yml", display="p.yml")])
    assert "mystery" in err.value.message and "target" in err.value.fix


def test_policy_limit_of_wrong_type(tmp_path):
    write(tmp_path, "version: 1\ndevices:\n  x86-cpu:\n    min_speedup: fast\n", "p.yml")
    with pytest.raises(ConfigError) as err:
        load_policy(tmp_path / "p.yml", display="p.yml")
    assert err.value.line == 4 and err.value.field == "devices.x86-cpu.min_speedup"


def test_missing_policy_file_points_at_the_config_line(tmp_path):
    write(tmp_path, "version: 1\n\npolicy: nowhere.yml\n")
    loaded = load_config(tmp_path / "edgegate.yml")
    with pytest.raises(ConfigError) as err:
        policy_stack(loaded)
    assert err.value.line == 3 and err.value.value == "nowhere.yml"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_published_json_schemas_are_current(name):
    model, title = SCHEMAS[name]
    committed = (ROOT / "schemas" / name).read_text()
    assert committed == schema_text(model, title), \
        "schemas/ is stale: run `make schemas` (edgegate schema --out schemas) and commit"
    assert json.loads(committed)["title"] == title


def test_builtin_profiles_are_valid_and_name_targets():
    devices = resolve_devices(builtin_profiles())
    assert "x86-cpu" in devices
    for device in devices.values():
        assert device.target


# ------------------------------------------------------------------ nothing passes silently (exit 2)


def _edgegate(repo, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", *args], cwd=repo,
                          capture_output=True, text=True, timeout=300)


def test_an_unknown_device_on_the_command_line_exits_2_with_did_you_mean(tmp_path):
    from tinyrepo import tiny_repo

    proc = _edgegate(tiny_repo(tmp_path), "models/tiny.onnx", "--device", "rpi4", "--no-cache")
    assert proc.returncode == 2, proc.stderr
    assert "unknown device 'rpi4'" in proc.stderr and "raspberry-pi-4" in proc.stderr
    assert "valid ids:" in proc.stderr and "x86-cpu" in proc.stderr
    assert "compiling" not in proc.stderr
    import subprocess
    import sys

    plan = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "plan", "--device", "rpi4"],
                          cwd=tmp_path / "tiny", capture_output=True, text=True, timeout=300)
    assert plan.returncode == 2 and "unknown device 'rpi4'" in plan.stderr, plan.stderr


def test_an_unknown_device_in_edgegate_yml_names_the_line_and_suggests(tmp_path):
    from tinyrepo import tiny_repo

    repo = tiny_repo(tmp_path)
    text = (repo / "edgegate.yml").read_text().replace("[x86-cpu]", "[x86-cpu, raspbery-pi-4]")
    (repo / "edgegate.yml").write_text(text)
    proc = _edgegate(repo, "--no-cache")
    assert proc.returncode == 2, proc.stderr
    assert "edgegate.yml:6: models.0.devices.1: unknown device 'raspbery-pi-4'" in proc.stderr
    assert "did you mean 'raspberry-pi-4'?" in proc.stderr


def test_a_path_that_matches_no_file_exits_2_with_did_you_mean(tmp_path):
    from tinyrepo import tiny_repo

    repo = tiny_repo(tmp_path)
    (repo / "edgegate.yml").write_text((repo / "edgegate.yml").read_text()
                                       .replace("models/*.onnx", "models/tiny.onx"))
    proc = _edgegate(repo, "--no-cache")
    assert proc.returncode == 2, proc.stderr
    assert "edgegate.yml:3: models.0.path: 'path' matches no file" in proc.stderr
    assert "did you mean 'models/tiny.onnx'?" in proc.stderr


def test_a_base_commit_missing_from_a_shallow_clone_exits_2_with_the_fix(tmp_path):
    from conftest import commit_all, git
    from tinyrepo import tiny_onnx, tiny_repo

    repo = tiny_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD").strip()
    tiny_onnx(repo / "models/tiny.onnx", seed=2)
    commit_all(repo, "retrain")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    proc = _edgegate(clone, "--base", base, "--no-cache")
    assert proc.returncode == 2, proc.stderr
    assert "does not name a commit in this clone (this clone is shallow)" in proc.stderr
    assert "set fetch-depth: 0 on actions/checkout" in proc.stderr


def test_a_device_override_is_not_an_edgegate_yml_change(tmp_path):
    import json

    from conftest import commit_all
    from tinyrepo import tiny_repo

    repo = tiny_repo(tmp_path)
    (repo / "edgegate.yml").write_text((repo / "edgegate.yml").read_text()
                                       .replace("    devices: [x86-cpu]\n", ""))   # inherits x86-cpu
    commit_all(repo, "devices from the top level")
    (repo / "README.md").write_text("docs\n")
    commit_all(repo, "docs only")
    proc = _edgegate(repo, "--base", "HEAD~1", "--device", "android", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((repo / ".edgegate-out/report.json").read_text())
    assert report["models"] == [] and report["unchanged"] == ["models/tiny.onnx"]


# ------------------------------------------------------------------ a new user's common mistakes


def _set(repo, old, new, name="edgegate.yml"):
    path = repo / name
    text = path.read_text()
    assert old in text, (old, name)
    path.write_text(text.replace(old, new))


def _rename_labels(repo):
    import numpy as np

    arrays = dict(np.load(repo / "data/evaluation.npz"))
    arrays["y"] = arrays.pop("labels")
    np.savez(repo / "data/evaluation.npz", **arrays)


def _shallow(repo):
    from conftest import commit_all, git
    from tinyrepo import tiny_onnx

    base = git(repo, "rev-parse", "HEAD").strip()
    tiny_onnx(repo / "models/tiny.onnx", seed=2)
    commit_all(repo, "retrain")
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    return clone, ["--base", base]


# (id, how the tiny repository is broken -> (repo, extra args), what the error must name)
MISTAKES = [
    ("misspelt-key", lambda r: _set(r, "    calibration:", "    calibraton:"),
     ["edgegate.yml:4: models.0.calibraton: unknown key 'calibraton'", "did you mean 'calibration'?"]),
    ("wrong-type", lambda r: _set(r, "repeats: 5", "repeats: many"),
     ["edgegate.yml:8: benchmark.repeats: expected an integer, got 'many'"]),
    ("unknown-device", lambda r: _set(r, "[x86-cpu]", "[raspbery-pi-4]"),
     ["edgegate.yml:6: models.0.devices.0: unknown device", "did you mean 'raspberry-pi-4'?"]),
    ("unknown-metric", lambda r: _set(r, "metric: top1", "metric: accuracy"),
     ["edgegate.yml:5: models.0.evaluation.metric:", "got 'accuracy'", "use one of: top1, top5"]),
    ("bad-yaml", lambda r: _set(r, "devices: [x86-cpu]", "devices: [x86-cpu"),
     ["edgegate.yml:", "invalid YAML"]),
    ("path-matches-nothing", lambda r: _set(r, "models/*.onnx", "model/*.onnx"),
     ["edgegate.yml:3: models.0.path: 'path' matches no file", "got 'model/*.onnx'"]),
    ("missing-data-file", lambda r: _set(r, "data/calibration.npz", "data/calib.npz"),
     ["data/calib.npz: data file not found", "Fix: commit the file or correct the path"]),
    ("labels-under-another-name", _rename_labels,
     ["data/evaluation.npz: evaluation.labels:", "Fix: set evaluation.labels: y"]),
    ("policy-limit-wrong-type", lambda r: _set(r, "min_speedup: 0.01", "min_speedup: fast", "policy.yml"),
     ["policy.yml:5: devices.x86-cpu.min_speedup: expected a number, got 'fast'", "docs/policies.md"]),
    ("policy-misspelt-limit", lambda r: _set(r, "max_accuracy_drop_pp", "max_acuracy_drop_pp", "policy.yml"),
     ["policy.yml:4: devices.x86-cpu.max_acuracy_drop_pp: unknown key",
      "did you mean 'max_accuracy_drop_pp'?"]),
    ("no-git-repository", lambda r: __import__("shutil").rmtree(r / ".git"),
     ["not inside a git repository", "edgegate run path/to/model.onnx"]),
    ("shallow-clone", _shallow,
     ["does not name a commit in this clone (this clone is shallow)", "fetch-depth: 0"]),
    ("model-file-not-found", lambda r: (r, ["models/tiny.onx"]),
     ["models/tiny.onx: model file not found"]),
    ("unknown-device-option", lambda r: (r, ["--device", "rpi4"]),
     ["--device: unknown device 'rpi4'", "did you mean 'raspberry-pi-4'?"]),
]


@pytest.mark.parametrize("mistake, expected", [(m[1], m[2]) for m in MISTAKES],
                         ids=[m[0] for m in MISTAKES])
def test_a_common_mistake_exits_2_naming_the_file_and_field_with_a_fix(tmp_path, mistake, expected):
    import subprocess
    import sys

    from tinyrepo import tiny_repo

    repo = tiny_repo(tmp_path)
    broken = mistake(repo)
    cwd, args = broken if isinstance(broken, tuple) else (repo, [])
    proc = subprocess.run([sys.executable, "-m", "edgegate", "run", "--no-cache", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    for text in expected:
        assert text in out, (text, out)
    lines = out.splitlines()
    error = next(i for i, line in enumerate(lines) if expected[0] in line)
    assert lines[error + 1].strip().startswith("Fix: "), out          # the fix right below it
    assert "Value error" not in out and "Input should be" not in out and "[type=" not in out
    assert str(tmp_path) not in out                                   # paths relative to the repo
    named = expected[0].split(":")[0]
    assert lines[error].count(named) == 1, lines[error]               # printed once
