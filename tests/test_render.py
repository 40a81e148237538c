"""The rendered comment and summary are checked against golden files; untrusted text is escaped.

Regenerate after an intended template change: EDGEGATE_UPDATE_GOLDEN=1 pytest tests/test_render.py
"""

import os
from pathlib import Path

import pytest

from edgegate.report.model import read_report
from edgegate.report.render import COMMENT_LIMIT, MARKER, md, render, render_comment

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def report():
    return read_report(GOLDEN / "report.json")


@pytest.mark.parametrize("fmt", ["comment", "summary"])
def test_matches_golden(report, fmt):
    text = render_comment(report) if fmt == "comment" else render(report, "summary")
    golden = GOLDEN / f"{fmt}.md"
    if os.environ.get("EDGEGATE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_untrusted_names_are_escaped(report):
    text = render_comment(report)
    assert "<script>" not in text
    assert "@octocat" not in text                     # mention neutralised with a zero-width space
    assert text.startswith(MARKER)


def test_md_filter():
    assert md("a|b") == "a\\|b"
    assert md("<img src=x>") == "&lt;img src=x&gt;"
    assert "\n" not in md("line1\nline2")


def test_comment_degrades_to_fit_the_limit(report):
    many = report.model_copy(update={"models": [report.models[0].model_copy(
        update={"path": f"models/m{i}.onnx"}) for i in range(400)]})
    text = render_comment(many)
    assert len(text) <= COMMENT_LIMIT
    assert "<details>" not in text                    # details collapsed away first
    full = render(many, "comment")
    assert len(full) > COMMENT_LIMIT


def test_speedup_chart_for_several_measured_devices(report):
    model = report.models[0]
    twin = model.results[0].model_copy(update={"device": 'evil"] ; click x call'})
    two = report.model_copy(update={"models": [model.model_copy(
        update={"results": [model.results[0], twin]})]})
    text = render_comment(two)
    assert "```mermaid" in text and "xychart-beta" in text
    chart = text[text.index("```mermaid"):text.index("```", text.index("```mermaid") + 3)]
    assert '"evil__ _ click x call"' in chart and 'evil"' not in chart
    assert "```mermaid" not in render_comment(report)      # one measured device: no chart


def test_numpy_values_in_free_form_fields_serialize_as_json_types():
    # a multi-output model's SQNR budget once put numpy.bool into the search record, and the
    # device result could not be written at all
    import json

    import numpy as np

    from edgegate.report.model import DeviceResult

    r = DeviceResult(device="x86-cpu", target="onnxruntime", status="passed",
                     quantization={"search": {"met": np.bool_(True), "candidates": [
                         {"meets_budget": np.bool_(False), "sqnr": np.float32(31.5)}]}},
                     measurement={"shape": np.arange(3), "threads": np.int64(2)})
    back = json.loads(r.model_dump_json())
    assert back["quantization"]["search"]["met"] is True
    assert back["quantization"]["search"]["candidates"][0] == {"meets_budget": False, "sqnr": 31.5}
    assert back["measurement"] == {"shape": [0, 1, 2], "threads": 2}


def test_code_spans_hold_untrusted_text_without_visible_escapes():
    # md() inside backticks showed its escapes ("policy.yml\:5"): a code span needs only a fence
    from edgegate.report.render import code

    assert code("policy.yml:5") == "`policy.yml:5`"
    assert code("a`b") == "``a`b``" and code("`x") == "`` `x ``"
    assert code("evil\u202e.yml:3") == "`evil<U+202E>.yml:3`"


# ---- the numbers a reviewer reads: one formatter for the comment, the summary and the CLI table


def _device(report, **update):
    """The golden report's x86-cpu result with fields replaced (metrics/measurement merged)."""
    r = report.models[0].results[0]
    metrics = r.metrics.model_copy(update=update.pop("metrics", {}))
    measurement = {**r.measurement, **update.pop("measurement", {})}
    return r.model_copy(update={"metrics": metrics, "measurement": measurement, **update})


def _with_results(report, *results):
    model = report.models[0].model_copy(update={"results": list(results)})
    return report.model_copy(update={"models": [model]})


def test_latencies_below_one_ms_read_in_microseconds():
    from edgegate.report.render import fmt_ms

    assert fmt_ms(0.32) == "320 µs" and fmt_ms(0.0123) == "12.3 µs" and fmt_ms(0.00123) == "1.23 µs"
    assert fmt_ms(0.9996) == "1.00 ms"                  # rounds up across the unit, never "1000 µs"
    assert fmt_ms(1.874) == "1.87 ms" and fmt_ms(38.91) == "38.9 ms" and fmt_ms(12_345) == "12.3 s"
    assert fmt_ms(None) == "—"


def test_cells_read_value_limit_and_mark_and_the_cli_prints_the_same(report):
    from edgegate.cli.table import verdict_table
    from edgegate.report.model import Check

    slow = Check(limit="min_speedup", metric="speedup", threshold=1.5, measured=0.98, passed=False,
                 source="policies/raspberry-pi-4.yml:9", builtin=True)
    r = _device(report, metrics={"latency_p50_ms_after": 0.01234, "speedup": 0.98},
                checks=[slow], violations=[slow], status="failed")
    text = render_comment(_with_results(report, r))
    row = next(line for line in text.splitlines() if line.startswith("| x86-cpu"))
    assert "| 12.3 µs |" in row                                       # no limit: no mark
    assert "| 0.98× (≥ 1.5×) ❌ |" in row
    assert "97.04 %, drop -0.19 pp |" in row                          # no limit left: no mark
    assert "0.01 ms" not in text and "0.01 →" not in text
    assert "set by the built-in raspberry-pi-4 profile" in text        # not the packaged file:line
    assert "policies/raspberry-pi-4.yml" not in text
    table = verdict_table(_with_results(report, r))
    assert "12.3 µs" in table and "0.98× (≥ 1.5×) FAIL" in table
    assert "speedup 1.5 but measured 0.98× (set by the built-in raspberry-pi-4 profile)" in table


def test_accuracy_drop_is_positive_when_worse_everywhere(report):
    from edgegate.cli.table import verdict_table

    r = report.models[0].results[0]
    worse = _device(report, metrics={"accuracy_after": 95.50, "accuracy_drop_pp": 1.35,
                                     "accuracy_drop_ci95_pp": [0.74, 2.03]},
                    checks=[c.model_copy(update={"measured": 1.35, "passed": False})
                            if c.metric == "accuracy_drop_pp" else c for c in r.checks])
    one = _with_results(report, worse)
    for text in (render_comment(one), render(one, "summary"), verdict_table(one)):
        assert "drop 1.35 pp (≤ 1 pp)" in text and "-1.35" not in text
    from edgegate.report.junit import junit_xml

    failure = next(junit_xml(one).getroot().iter("failure")).get("message")
    assert "max_accuracy_drop_pp is 1 (≤ 1 pp), measured 1.35 pp" in failure
    assert failure.endswith("set at .edgegate/policy.yml:5")
    details = render_comment(one)
    assert "drop 1.35 pp (95% CI of the drop 0.74 to 2.03 pp)" in details
    # the golden run got better: the drop is negative, its interval in the same orientation
    assert "drop -0.19 pp (≤ 1 pp) ✅" in render_comment(report)
    from edgegate.github.statuses import statuses_for

    passing = _with_results(report, _device(report, metrics={"accuracy_drop_pp": 0.35}))
    assert "accuracy drop 0.35 pp" in statuses_for(passing)[0].description


def test_a_device_timed_on_this_host_is_marked_and_one_not_measured_says_so(report):
    pi = _device(report, device="raspberry-pi-4", target="tflite",
                 measurement={"device_note": "measured on this x86_64 host with LiteRT+XNNPACK, "
                                             "not on the device"})
    gpu = _device(report, device="jetson-orin-nano", target="tensorrt",
                  measurement={"where": "not measured", "reason": "no CUDA GPU here"},
                  metrics={"latency_p50_ms_before": None, "latency_p50_ms_after": None,
                           "speedup": None, "speedup_ci95": None, "accuracy_before": None,
                           "accuracy_after": None, "accuracy_drop_pp": None,
                           "top1_agreement": None, "cosine_similarity": None, "sqnr_db": None,
                           "not_measured": {"speedup": "no CUDA GPU here"}},
                  checks=[c.model_copy(update={"measured": None, "passed": None})
                          for c in report.models[0].results[0].checks
                          if c.metric in ("speedup", "accuracy_drop_pp")])
    text = render_comment(_with_results(report, report.models[0].results[0], pi, gpu))
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| raspberry-pi-4 †"] and "| x86-cpu" in rows          # the x86 row: no marker
    assert "†" not in rows["| x86-cpu"]
    assert "† measured on the x86\\_64 host that ran EdgeGate, not on the device" in text
    gpu_row = rows["| jetson-orin-nano"]
    assert ("| not measured here | not measured here (≥ 1.05×) ❔ | not measured here (≤ 1 pp) ❔ "
            "| not measured here |") in gpu_row
    assert "µs" not in gpu_row and " ms" not in gpu_row and " %" not in gpu_row   # never a number
    alone = render_comment(_with_results(report, report.models[0].results[0]))
    assert "†" not in alone


def test_a_limit_the_base_commit_also_failed_is_said_so(report):
    from edgegate.report.model import BaselineResult, Check

    slow = Check(limit="min_speedup", metric="speedup", threshold=1.5, measured=1.21, passed=False,
                 source=".edgegate/policy.yml:8")
    base = BaselineResult(commit="7e190dc4bf32bbea09142be2a5bc14ce871d8f6a", path="models/digits.onnx",
                          source="computed", status="failed",
                          metrics={"speedup": 1.19, "size_bytes_after": 325639, "accuracy_after": 97.2},
                          delta={"size_bytes_after": 0, "accuracy_after": -0.16,
                                 "speedup_vs_base": 1.0, "speedup_vs_base_ci95_low": 0.97,
                                 "speedup_vs_base_ci95_high": 1.03})
    r = _device(report, metrics={"speedup": 1.21}, checks=[slow], violations=[slow],
                status="failed", baseline=base)
    text = render_comment(_with_results(report, r))
    row = next(line for line in text.splitlines() if line.startswith("| x86-cpu | 325.64 kB →"))
    assert "❌ `min_speedup` already failing on base (1.19×)" in row
    assert "no regression" not in row
    assert "97.20 → 97.04, drop 0.16 pp" in row                        # vs base, in words
    from edgegate.cli.table import verdict_table

    assert "vs base 7e190dc: min_speedup already failing on base (1.19×)" in verdict_table(
        _with_results(report, r))
    fixed = base.model_copy(update={"status": "passed", "metrics": {**base.metrics, "speedup": 1.62}})
    text = render_comment(_with_results(report, r.model_copy(update={"baseline": fixed})))
    assert "`min_speedup` newly failing: base passed (1.62×)" in text
    passing = _device(report, baseline=fixed)
    assert "✅ no regression" in render_comment(_with_results(report, passing))


def test_speedup_chart_has_the_fp32_line_and_the_limit_line(report):
    twin = _device(report, device="x86-openvino", metrics={"speedup": 2.4})
    text = render_comment(_with_results(report, report.models[0].results[0], twin))
    chart = text[text.index("```mermaid"):text.index("```", text.index("```mermaid") + 3)]
    assert "bar [1.87, 2.4]" in chart
    assert "line [1.0, 1.0]" in chart and "line [1.05, 1.05]" in chart
    assert "y-axis \"speedup (x)\" 0 --> 2.9" in chart


def test_a_custom_metric_name_from_the_pull_request_is_escaped_in_the_cell(report):
    from edgegate.cli.table import verdict_table

    r = _device(report, metrics={"metric": "metrics.py:f <b>|x", "accuracy_before": 0.5,
                                 "accuracy_after": 0.25})
    one = _with_results(report, r)
    text = render_comment(one)
    assert "metrics.py\\:f &lt;b&gt;\\|x 0.5000 → 0.2500; drop -0.19 pp (≤ 1 pp) ✅" in text
    unchecked = _device(report, metrics={"metric": "mse", "accuracy_after": 0.25,
                                         "accuracy_drop_pp": None},
                        checks=[c.model_copy(update={"measured": None, "passed": None})
                                for c in report.models[0].results[0].checks])
    assert "mse 96.8519 → 0.2500; drop not measured (≤ 1 pp) ❔" in render_comment(
        _with_results(report, unchecked))
    assert "metrics.py:f <b>|x 0.5000 → 0.2500" in verdict_table(one)     # the terminal: as is


def test_a_probability_map_reads_mask_iou_against_its_limit(report):
    from edgegate.cli.table import verdict_table
    from edgegate.report.model import Check

    low = Check(limit="min_mask_iou", metric="mask_iou", threshold=0.9, measured=0.8996,
                passed=False, source="policies/x86-cpu.yml:20", builtin=True)
    r = _device(report, metrics={"primary_metric": "mask_iou", "mask_iou": 0.8996,
                                 "mask_agreement": 0.988, "top1_agreement": None, "task": "segmentation"},
                checks=[low], violations=[low], status="failed")
    text = render_comment(_with_results(report, r))
    assert "mask IoU 0.8996 (≥ 0.9) ❌" in text
    assert "mask IoU 0.8996 (pixels agreeing 98.8 %)" in text
    assert "mask IoU 0.8996 (≥ 0.9) FAIL" in verdict_table(_with_results(report, r))
