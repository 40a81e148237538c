"""`edgegate --help`, `targets`, `check` and `render` work with the base dependencies alone.

The child interpreter refuses to import every optional framework (and even onnx/onnxruntime),
as if they were not installed.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
BLOCKED = ["torch", "tensorflow", "keras", "tf2onnx", "onnx2tf", "onnxscript", "coremltools",
           "tensorrt", "ai_edge_litert", "openvino", "nncf", "github", "PIL", "sklearn",
           "onnx", "onnxruntime"]

BOOT = """
import sys
BLOCKED = {blocked!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {{name}}")
        return None
sys.meta_path.insert(0, Blocker())
import importlib.util
_find = importlib.util.find_spec
def find_spec(name, package=None):
    if name.split(".")[0] in BLOCKED:
        return None
    return _find(name, package)
importlib.util.find_spec = find_spec
sys.argv = ["edgegate"] + {args!r}
from edgegate.cli.main import main
main()
"""


def run_blocked(*args, cwd=None, blocked=BLOCKED):
    code = BOOT.format(blocked=blocked, args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args", [["--help"], ["targets"], ["targets", "--json"],
                                  ["render", str(GOLDEN / "report.json")],
                                  ["render", str(GOLDEN / "report.json"), "--format", "summary"]])
def test_light_commands_need_no_framework(args):
    proc = run_blocked(*args)
    assert proc.returncode == 0, proc.stderr
    assert "blocked for this test" not in proc.stderr


def test_targets_reports_missing_frameworks_with_install_hints():
    proc = run_blocked("targets", "--json")
    data = json.loads(proc.stdout)
    by_id = {t["id"]: t for t in data["targets"]}
    assert by_id["tflite"]["can_compile"] is False
    assert 'pip install "edgegate-ci[tflite]"' in by_id["tflite"]["install"]


def test_targets_checks_the_modules_onnx2tf_imports():
    """onnx2tf imports tf_keras without declaring it: without it tflite (and coreml, which converts
    ONNX through onnx2tf) are not available, and the hint is the command that installs it here."""
    import platform

    proc = run_blocked("targets", "--json", blocked=["tf_keras"])
    by_id = {t["id"]: t for t in json.loads(proc.stdout)["targets"]}
    for target in ("tflite", "coreml"):
        assert by_id[target]["can_compile"] is False
        assert "tf_keras" in by_id[target]["reason"]
    if sys.platform.startswith("linux") and platform.machine() == "x86_64":
        assert by_id["tflite"]["install"].startswith('pip install --no-deps "tf-keras')
    else:
        assert by_id["tflite"]["install"] == 'pip install "edgegate-ci[tflite]"'
    assert by_id["onnxruntime"]["can_measure"] is True


def test_check_needs_no_framework():
    proc = run_blocked("check", str(GOLDEN / "report.json"), "--json")
    assert proc.returncode == 2, proc.stderr           # the golden report holds an input error
    assert json.loads(proc.stdout)["verdict"] == "error"
