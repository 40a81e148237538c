"""Property-based tests: arbitrary YAML never crashes the config and policy loaders with anything
but ConfigError; the policy checker is pure, monotone in its limits, and never fails on a metric
that was not measured."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="needs hypothesis (the test extra)")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgegate.config.load import Limit, ResolvedDevice, load_config, load_policy  # noqa: E402
from edgegate.config.policy_schema import LIMITS, DeviceProfile  # noqa: E402
from edgegate.config.yamlfile import load_yaml_text  # noqa: E402
from edgegate.errors import ConfigError  # noqa: E402
from edgegate.policy.check import check_result  # noqa: E402
from edgegate.report.model import DeviceResult, Metrics  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None)

# ------------------------------------------------------------------ loaders

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
keys = st.one_of(st.sampled_from(["version", "models", "path", "devices", "policy", "calibration",
                                  "evaluation", "data", "metric", "benchmark", "repeats",
                                  "quantization", "cache", "dir", "max_accuracy_drop_pp", "target",
                                  "timeout_s", "memory_limit_mb", "inputs", "shape"]),
                 st.text(max_size=10))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
yaml_texts = st.one_of(
    documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    documents.map(lambda d: yaml.safe_dump({"version": 1, "models": [d], "devices": {"x": d}})),
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)


def _load_both(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edgegate.yml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        for loader in (load_config, load_policy):
            try:
                loader(path)
            except ConfigError as exc:
                assert exc.fix or exc.what          # an explained error, never a traceback
        try:
            load_yaml_text(text, "x.yml")
        except ConfigError:
            pass


@SETTINGS
@given(yaml_texts)
def test_arbitrary_yaml_only_ever_raises_config_error(text):
    _load_both(text)


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 1500), st.sampled_from(["flow-list", "flow-map", "block"]))
def test_deep_nesting_is_a_config_error(depth, style):
    text = {"flow-list": "[" * depth + "]" * depth,
            "flow-map": "{a: " * depth + "1" + "}" * depth,
            "block": "".join("  " * i + "- \n" for i in range(depth))}[style]
    _load_both(text)
    if depth > 60:
        with pytest.raises(ConfigError, match="nests deeper"):
            load_yaml_text(text, "x.yml")


# ------------------------------------------------------------------ the policy checker

METRIC_FIELDS = {name: spec[1] for name, spec in LIMITS.items()}
value = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))


def _interval(centre: float | None, spread: float) -> list[float] | None:
    return None if centre is None else [centre - spread, centre + spread]


@st.composite
def results(draw):
    fields = {metric: draw(value) for metric in METRIC_FIELDS.values()}
    spread = draw(st.floats(0, 100))
    metrics = Metrics(metric="top1", eval_samples=draw(st.integers(1, 10_000)),
                      speedup_ci95=_interval(fields["speedup"], spread),
                      latency_p50_ci95_ms_after=_interval(fields["latency_p50_ms_after"], spread),
                      accuracy_drop_ci95_pp=_interval(fields["accuracy_drop_pp"], spread),
                      not_measured={m: "not measured here" for m, v in fields.items() if v is None},
                      **fields)
    return DeviceResult(device="d", target="onnxruntime", status="passed", metrics=metrics)


@st.composite
def devices(draw):
    names = draw(st.lists(st.sampled_from(sorted(LIMITS)), unique=True, min_size=1))
    limits = {n: Limit(n, draw(st.floats(-1e6, 1e6, allow_nan=False)), "policy.yml", i + 1)
              for i, n in enumerate(names)}
    decision = draw(st.sampled_from([None, "measured", "ci95_upper", "ci95_lower"]))
    return ResolvedDevice("d", "onnxruntime", DeviceProfile(accuracy_decision=decision), limits)


def _tightened(device: ResolvedDevice, name: str, by: float) -> ResolvedDevice:
    old = device.limits[name]
    new = old.value - by if LIMITS[name][0] == "max" else old.value + by
    return ResolvedDevice(device.id, device.target, device.profile,
                          {**device.limits, name: Limit(name, new, old.file, old.line)})


@SETTINGS
@given(results(), devices())
def test_the_checker_is_pure(result, device):
    first = check_result(result, device)
    again = check_result(result, device)
    assert first.model_dump() == again.model_dump()
    assert result.status == "passed" and not result.checks      # the input is not mutated


@SETTINGS
@given(results(), devices(), st.data(), st.floats(0, 1e6))
def test_tightening_a_limit_never_turns_a_fail_into_a_pass(result, device, data, by):
    name = data.draw(st.sampled_from(sorted(device.limits)))
    before = check_result(result, device)
    after = check_result(result, _tightened(device, name, by))
    if before.status == "failed":
        assert after.status == "failed"
    assert {c.limit for c in before.violations} <= {c.limit for c in after.violations}


@SETTINGS
@given(results(), devices())
def test_unmeasured_metrics_never_fail(result, device):
    checked = check_result(result, device)
    for check in checked.checks:
        if getattr(result.metrics, check.metric) is None:
            assert check.passed is None and check.measured is None
            assert check.note                                    # says why it was not measured
    assert all(getattr(result.metrics, c.metric) is not None for c in checked.violations)
