"""Built-in device profiles and `edgegate targets`: every device names a real target and a recipe,
and what cannot run here says why."""

from __future__ import annotations

import json
import subprocess
import sys

from edgegate.config.load import builtin_profiles, resolve_devices
from edgegate.targets import TARGETS

DEVICES = {"x86-cpu": "onnxruntime", "raspberry-pi-4": "tflite", "raspberry-pi-5": "tflite",
           "android": "tflite", "edge-tpu": "tflite", "iphone": "coreml",
           "jetson-nano": "tensorrt", "jetson-orin-nano": "tensorrt"}


def test_every_builtin_device_names_its_target_recipe_and_budgets():
    devices = resolve_devices(builtin_profiles())
    for dev_id, target in DEVICES.items():
        d = devices[dev_id]
        assert d.target == target and target in TARGETS
        assert d.profile.precision in ("int8", "fp16"), dev_id
        assert "max_accuracy_drop_pp" in d.limits, dev_id
        assert d.limits["max_accuracy_drop_pp"].source.startswith(f"policies/{dev_id}.yml:")
    assert devices["edge-tpu"].profile.compiler == "edgetpu"
    assert devices["edge-tpu"].profile.io_dtype == "int8"
    assert devices["android"].profile.io_dtype == "float32"


def test_targets_json_says_why_and_imports_nothing_heavy():
    code = ("import sys, json; from edgegate.cli.targets import targets_listing; "
            "out = targets_listing(as_json=True); "
            "heavy = [m for m in ('tensorflow', 'torch', 'coremltools', 'onnx2tf', 'tensorrt') "
            "if m in sys.modules]; print(json.dumps({'out': json.loads(out), 'heavy': heavy}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    assert data["heavy"] == []
    devices = {d["id"]: d for d in data["out"]["devices"]}
    assert "compile step is not available" in devices["edge-tpu"]["why"]
    assert devices["edge-tpu"]["install"]
    targets = {t["id"]: t for t in data["out"]["targets"]}
    if not targets["tensorrt"]["can_measure"]:
        assert devices["jetson-orin-nano"]["why"]
    if not targets["coreml"]["can_measure"]:
        assert "macOS" in devices["iphone"]["why"]
