"""The PARAMETERS table without ROS: types (integers for floats), relations, runtime flags, model_path."""
from __future__ import annotations

from pathlib import Path

import pytest

from robot_compress.ros.parameters import (
    ENGINE_PARAMS,
    PARAMETERS,
    PROCESSOR_PARAMS,
    SPECS,
    ConfigError,
    coerce,
    edge_settings,
    resolve_model_path,
    validate,
    with_table,
)
from robot_compress.runtime.failover import FailoverConfig

README = Path(__file__).resolve().parents[1] / "README.md"

DEFAULTS = {p.name: p.default for p in PARAMETERS}
# Parameters that change nothing but a value the node reads per frame or per report.
VALUE_ONLY = {"publish_overlay", "top_k", "diagnostics_period_s"}


def test_integers_are_accepted_for_float_parameters_and_become_floats():
    assert coerce(SPECS["frame_deadline_ms"], 100) == 100.0 and isinstance(coerce(SPECS["hedge_after_ms"], 40), float)
    values = validate({**DEFAULTS, "frame_deadline_ms": 100, "probe_backoff": 2})
    assert values["frame_deadline_ms"] == 100.0 and type(values["probe_backoff"]) is float


@pytest.mark.parametrize("name, value, words", [
    ("frame_deadline_ms", "fast", ["'frame_deadline_ms'", "float"]),
    ("threads", 1.5, ["'threads'", "int"]),
    ("top_k", True, ["'top_k'", "int"]),
    ("publish_overlay", 1, ["'publish_overlay'", "bool"]),
    ("edge_urls", ["http://a:1", 7], ["'edge_urls'", "list of strings"]),
])
def test_wrong_types_are_refused_naming_the_parameter(name, value, words):
    with pytest.raises(ConfigError) as info:
        validate({**DEFAULTS, name: value})
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("change, words", [
    ({"mode": "cloud"}, ["'mode'", "local, edge, auto", "cloud"]),
    ({"hedge_after_ms": 150.0}, ["'hedge_after_ms'", "frame_deadline_ms=100.0"]),
    ({"frame_deadline_ms": 30.0}, ["'hedge_after_ms'", "frame_deadline_ms=30.0"]),
    ({"replica_hedge_ms": 500.0}, ["'replica_hedge_ms'"]),
    ({"probe_interval_ms": 2000.0}, ["'probe_backoff_max_ms'", "probe_interval_ms"]),
    ({"edge_urls": []}, ["'edge_urls'", "at least one"]),
    ({"edge_urls": ["127.0.0.1:8000"]}, ["'edge_urls'", "http://HOST:PORT"]),
    ({"edge_url": "ftp://x"}, ["'edge_url'"]),
    ({"edge_urls": ["http://a:1", "http://b:2", "http://a:1"]}, ["'edge_urls'", "http://a:1 twice"]),
])
def test_bad_values_and_relations_are_refused_with_the_reason(change, words):
    with pytest.raises(ConfigError) as info:
        validate({**DEFAULTS, **change})
    for word in words:
        assert word in str(info.value)


def test_every_runtime_parameter_takes_effect_and_only_the_plumbing_is_read_only():
    runtime = {p.name for p in PARAMETERS if p.runtime}
    # a parameter that may change must change something: a new engine, a new processor, or a per-frame value
    assert runtime == (ENGINE_PARAMS | PROCESSOR_PARAMS | VALUE_ONLY)
    assert {p.name for p in PARAMETERS if not p.runtime} == {
        "input_topic", "compressed_input", "result_topic", "mask_topic", "overlay_topic", "qos_depth",
        "qos_reliability"}


def test_model_path_naming_a_directory_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_model_path(str(tmp_path))


def test_model_name_that_is_a_directory_in_models_says_so(tmp_path, monkeypatch):
    (tmp_path / "models" / "student.onnx").mkdir(parents=True)
    monkeypatch.setattr("robot_compress.ros.parameters.model_search_dirs", lambda: [tmp_path / "models"])
    with pytest.raises(ConfigError, match="names a directory"):
        resolve_model_path("student.onnx")


def test_model_path_lookup(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes(b"x")
    monkeypatch.setattr("robot_compress.ros.parameters.model_search_dirs", lambda: [tmp_path / "models"])
    assert resolve_model_path("m.onnx") == tmp_path / "models" / "m.onnx"
    assert resolve_model_path(str(tmp_path / "missing.onnx")) == tmp_path / "missing.onnx"  # Engine names it
    with pytest.raises(ConfigError, match="not found"):
        resolve_model_path("other.onnx")


def test_edge_settings_are_typed_from_the_values_in_seconds():
    values = validate({**DEFAULTS, "mode": "edge", "edge_urls": ["http://a:1", "http://b:2"], "frame_deadline_ms": 250,
                       "hedge_after_ms": 60, "replica_hedge_ms": 30, "edge_max_in_flight": 2})
    edge = edge_settings(values)
    assert edge.urls == ("http://a:1", "http://b:2") and edge.payload == "jpeg" and edge.model == ""
    cfg = edge.failover
    assert (cfg.mode, cfg.deadline_s, cfg.hedge_after_s, cfg.replica_hedge_s, cfg.max_in_flight) == \
        ("edge", 0.25, 0.06, 0.03, 2)
    assert edge_settings({**values, "edge_url": "http://c:3"}).urls == ("http://c:3",)  # the one-server form wins


def test_failover_defaults_are_the_policys_own():
    """One source: the node's defaults are FailoverConfig's, in the node's units."""
    assert edge_settings({**DEFAULTS, "mode": "auto"}).failover == FailoverConfig(mode="auto")


def test_readme_parameter_table_is_the_generated_one():
    text = README.read_text()
    fix = "python -m robot_compress.ros.parameters --readme README.md"
    assert text == with_table(text), f"README.md's parameter table is out of date: run {fix}"
    for p in PARAMETERS:
        assert f"| `{p.name}` |" in text


def test_readme_stays_a_package_readme():
    assert README.stat().st_size <= 8 * 1024, "README.md is over 8 KB: move detail to docs/"
