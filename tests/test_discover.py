"""Changed models between two commits: added, modified, renamed gated; deleted listed; others skipped."""

import shutil

import pytest

from conftest import commit_all, git, perturbed_copy
from edgegate.config.load import load_config
from edgegate.discover import Git, discover
from edgegate.discover.detect import check_not_lfs_pointer, detect_framework
from edgegate.errors import ConfigError, InputError


def test_added_modified_renamed_deleted_unchanged(model_repo):
    models = model_repo / "models"
    for seed, name in enumerate(("keep", "gone", "old-name"), start=10):   # distinct contents
        perturbed_copy(models / "digits.onnx", models / f"{name}.onnx", seed=seed)
    base = commit_all(model_repo, "more models")
    perturbed_copy(models / "digits.onnx", models / "digits.onnx")          # modified
    (models / "gone.onnx").unlink()                                          # deleted
    git(model_repo, "mv", "models/old-name.onnx", "models/new-name.onnx")  # renamed
    shutil.copy(models / "keep.onnx", models / "added.onnx")
    perturbed_copy(models / "keep.onnx", models / "added.onnx", seed=7)     # added
    (model_repo / "README.txt").write_text("not a model")
    head = commit_all(model_repo, "change")

    loaded = load_config(model_repo / "edgegate.yml")
    found = discover(loaded.config, model_repo, Git(model_repo), base=base, head=head)
    changes = {j.path: j.change for j in found.jobs}
    assert changes == {"models/digits.onnx": "modified", "models/added.onnx": "added",
                       "models/new-name.onnx": "renamed"}
    renamed = next(j for j in found.jobs if j.change == "renamed")
    assert renamed.old_path == "models/old-name.onnx"
    assert found.removed == ["models/gone.onnx"]
    assert found.unchanged == ["models/keep.onnx"]
    assert found.base == base and found.head == head


def test_default_base_is_merge_base_with_default_branch(model_repo):
    first = git(model_repo, "rev-parse", "HEAD").strip()
    git(model_repo, "checkout", "-q", "-b", "feature")
    perturbed_copy(model_repo / "models/digits.onnx", model_repo / "models/digits.onnx")
    commit_all(model_repo, "retrain")
    loaded = load_config(model_repo / "edgegate.yml")
    found = discover(loaded.config, model_repo, Git(model_repo))
    assert found.base == first
    assert [j.path for j in found.jobs] == ["models/digits.onnx"]


def test_unknown_base_ref_is_a_config_error(model_repo):
    loaded = load_config(model_repo / "edgegate.yml")
    with pytest.raises(ConfigError) as err:
        discover(loaded.config, model_repo, Git(model_repo), base="no-such-ref")
    assert "no-such-ref" in err.value.message and "fetch" in err.value.fix


def test_explicit_paths_are_gated_as_given(model_repo):
    loaded = load_config(model_repo / "edgegate.yml")
    found = discover(loaded.config, model_repo, None, explicit=[str(model_repo / "models/digits.onnx")])
    assert [(j.path, j.change) for j in found.jobs] == [("models/digits.onnx", "explicit")]
    assert found.jobs[0].spec.calibration == "data/calibration.npz"   # config applies to it


def test_an_entry_naming_the_file_wins_over_an_earlier_glob():
    from edgegate.config.schema import Config
    from edgegate.discover import spec_for

    config = Config.model_validate({"version": 1, "models": [
        {"path": "models/*.onnx", "calibration": "data/c.npz"},
        {"path": "models/two.onnx", "calibration": "data/c.npz",
         "evaluation": {"data": "data/e.npz", "output": "logits"}},
        {"path": "models/*.onnx", "name": "never"}]})
    assert spec_for(config, "models/two.onnx").evaluation.output == "logits"
    assert spec_for(config, "models/one.onnx").name is None        # the first glob, as before
    assert spec_for(config, "other/x.onnx") is None


def test_lfs_pointer_is_recognised_with_the_fix(tmp_path):
    pointer = tmp_path / "model.onnx"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\n"
                       "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
                       "size 12345\n")
    with pytest.raises(InputError) as err:
        check_not_lfs_pointer(pointer, "model.onnx")
    assert "LFS" in err.value.message and "lfs" in err.value.fix


def test_framework_detection(tmp_path):
    assert detect_framework(tmp_path / "a.onnx", "a.onnx") == "onnx"
    assert detect_framework(tmp_path / "a.pt2", "a.pt2") == "pytorch"
    assert detect_framework(tmp_path / "a.keras", "a.keras") == "tensorflow"
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    assert detect_framework(saved, "saved") == "tensorflow"
    with pytest.raises(InputError) as err:
        detect_framework(tmp_path / "a.zip", "a.zip")
    assert "framework" in err.value.fix


# ------------------------------------------------------------------ re-gated: why (tiny model, no compile)


def _tiny(tmp_path):
    from tinyrepo import tiny_repo

    repo = tiny_repo(tmp_path)
    return repo, git(repo, "rev-parse", "HEAD").strip()


def _found(repo, base):
    loaded = load_config(repo / "edgegate.yml")
    return discover(loaded.config, repo, Git(repo), base=base, config_file="edgegate.yml")


def test_a_data_only_change_regates_the_model_and_says_why(tmp_path):
    from tinyrepo import write_data

    repo, base = _tiny(tmp_path)
    write_data(repo, seed=5)                       # new calibration and evaluation samples
    commit_all(repo, "new data")
    found = _found(repo, base)
    (job,) = found.jobs
    assert (job.path, job.change) == ("models/tiny.onnx", "regated")
    assert job.why == ("calibration data changed (data/calibration.npz)",
                       "evaluation data changed (data/evaluation.npz)")
    assert found.unchanged == []


def test_an_edgegate_yml_entry_change_regates_the_model(tmp_path):
    repo, base = _tiny(tmp_path)
    text = (repo / "edgegate.yml").read_text()
    (repo / "edgegate.yml").write_text(text.replace("devices: [x86-cpu]", "devices: [x86-cpu, android]")
                                       .replace("search_time_s: 2", "search_time_s: 3"))
    commit_all(repo, "another device, a longer search")
    (job,) = _found(repo, base).jobs
    assert job.why == ("edgegate.yml entry changed: devices, quantization",)
    # an unrelated edit (a comment) re-gates nothing
    (repo / "edgegate.yml").write_text((repo / "edgegate.yml").read_text() + "# a note\n")
    head2 = commit_all(repo, "comment")
    assert _found(repo, git(repo, "rev-parse", f"{head2}~1").strip()).jobs == []


def test_the_first_commit_gates_every_configured_model(tmp_path):
    repo, first = _tiny(tmp_path)
    loaded = load_config(repo / "edgegate.yml")
    found = discover(loaded.config, repo, Git(repo), config_file="edgegate.yml")
    assert found.base is None and found.head == first
    (job,) = found.jobs
    assert job.path == "models/tiny.onnx" and "first commit" in job.why[0]


def test_a_shallow_clone_is_never_taken_for_a_first_commit(tmp_path):
    from tinyrepo import tiny_onnx

    repo, _ = _tiny(tmp_path)
    tiny_onnx(repo / "models/tiny.onnx", seed=3)
    commit_all(repo, "retrain")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    git(clone, "update-ref", "-d", "refs/remotes/origin/main")
    git(clone, "update-ref", "-d", "refs/remotes/origin/HEAD")
    loaded = load_config(clone / "edgegate.yml")
    with pytest.raises(ConfigError) as err:
        discover(loaded.config, clone, Git(clone), config_file="edgegate.yml")
    assert "shallow" in err.value.message and "fetch-depth: 0" in err.value.fix


def test_a_tightened_policy_regates_and_a_refused_loosening_does_not(tmp_path):
    from edgegate.policy.integrity import resolve_policy
    from edgegate.gate.run import _policy_reasons
    from tinyrepo import TINY_POLICY

    for drop, expect in ((0.5, ["policy for x86-cpu changed (policy.yml)"]), (5.0, [])):
        repo, base = _tiny(tmp_path / str(drop))
        (repo / "policy.yml").write_text(TINY_POLICY.format(drop=drop))
        commit_all(repo, "policy")
        loaded = load_config(repo / "edgegate.yml")
        found = _found(repo, base)
        assert found.jobs == [] and found.unchanged == ["models/tiny.onnx"]
        res = resolve_policy(loaded, None, Git(repo), base)
        assert _policy_reasons(found, loaded.config, res.devices, res.base_devices) == \
            {"models/tiny.onnx": expect}


def test_the_report_says_why_a_data_only_change_was_gated(tmp_path):
    import json
    import subprocess
    import sys

    from tinyrepo import write_data

    repo, _ = _tiny(tmp_path)
    write_data(repo, seed=6)
    commit_all(repo, "new evaluation data")
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "--base", "HEAD~1",
                           "--no-cache", "--baseline", "off"], cwd=repo, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    (model,) = json.loads((repo / ".edgegate-out/report.json").read_text())["models"]
    assert model["change"] == "regated" and model["results"], proc.stderr
    assert model["why"] == ["calibration data changed (data/calibration.npz)",
                            "evaluation data changed (data/evaluation.npz)"]
    assert "**Gated because**: calibration data changed" in (repo / ".edgegate-out/comment.md").read_text()


def test_a_matrix_leg_names_a_model_as_the_full_run_does(tmp_path):
    """a/tiny.onnx and b/tiny.onnx changed together: 'run --only a@device' (one matrix leg) names
    the model after its path as the whole run does, so the legs' artifacts never collide."""
    import json
    import subprocess
    import sys

    from tinyrepo import tiny_onnx

    repo, _ = _tiny(tmp_path)
    (repo / "models/tiny.onnx").unlink()
    for folder, seed in (("a", 1), ("b", 2)):
        tiny_onnx(repo / f"models/{folder}/tiny.onnx", seed=seed)
    (repo / "edgegate.yml").write_text((repo / "edgegate.yml").read_text()
                                       .replace("models/*.onnx", "models/*/tiny.onnx"))
    commit_all(repo, "two models, one file name")
    for folder, seed in (("a", 3), ("b", 4)):
        tiny_onnx(repo / f"models/{folder}/tiny.onnx", seed=seed)
    commit_all(repo, "retrain both")
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "--base", "HEAD~1",
                           "--only", "models/a/tiny.onnx@x86-cpu", "--no-cache", "--baseline", "off"],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    (model,) = json.loads((repo / ".edgegate-out/report.json").read_text())["models"]
    assert (model["path"], model["name"]) == ("models/a/tiny.onnx", "models-a-tiny"), proc.stderr
