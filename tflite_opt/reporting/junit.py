"""Reports as JUnit XML (``--junit FILE.xml``), which CI systems show as test results.

One ``testsuite`` per run (a model of a pipeline, or the one run of ``evaluate``/``compare``/``auto``); one
``testcase`` per checked gate, named ``"int8: accuracy_delta >= -0.01"`` with the variant as ``classname``, and a
``<failure message="value -0.023">`` when it failed; plus one ``testcase`` per variant that could not be made or
measured, failing with its error. The ``tests``/``failures`` counts on every suite and on the root add up. No
timestamps or timings: the same report gives the same bytes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence

from tflite_opt.reporting.report import GateResult, Report

FAILED_VARIANT_CASE = "produced and measured"


def gate_case_name(gate: GateResult) -> str:
    """``int8: accuracy_delta >= -0.01``."""
    return f"{gate.variant}: {gate.metric} {gate.op} {gate.limit:g}"


def _value_text(value: float | None) -> str:
    return "value n/a (unknown)" if value is None else f"value {value:.6g}"


def to_junit(runs: Sequence[tuple[str, Report]]) -> str:
    """The JUnit XML document of ``(suite name, report)`` pairs (ends with a newline)."""
    root = ElementTree.Element("testsuites", name="tflite-opt")
    total_tests = total_failures = 0
    for suite_name, report in runs:
        suite = ElementTree.SubElement(root, "testsuite", name=suite_name)
        tests = failures = 0
        for gate in report.gates:
            case = ElementTree.SubElement(suite, "testcase", name=gate_case_name(gate), classname=gate.variant)
            tests += 1
            if not gate.passed:
                failures += 1
                failure = ElementTree.SubElement(case, "failure", message=_value_text(gate.value), type="gate")
                failure.text = gate.describe()
        for variant in report.failed_variants:
            case = ElementTree.SubElement(
                suite, "testcase", name=f"{variant.name}: {FAILED_VARIANT_CASE}", classname=variant.name
            )
            failure = ElementTree.SubElement(case, "failure", message=variant.error or "failed", type="variant")
            failure.text = variant.error or ""
            tests += 1
            failures += 1
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", "0")
        total_tests += tests
        total_failures += failures
    root.set("tests", str(total_tests))
    root.set("failures", str(total_failures))
    root.set("errors", "0")
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
