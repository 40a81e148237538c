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
