"""One shape for every service: settings.py + service.py + a __main__.py of a few lines,
and `run_service(settings, service)` with nothing untyped."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from driftloop_common.runtime.service import Service, ServiceBase, run_service, serve

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(ROOT.glob("services/*/driftloop_*"))
CLASSES = {
    "driftloop_auditor": "Auditor",
    "driftloop_collector": "Collector",
    "driftloop_drift_monitor": "DriftMonitorService",
    "driftloop_trainer": "TrainerService",
    "driftloop_evaluator": "EvaluatorService",
    "driftloop_promoter": "PromoterService",
    "driftloop_rollback_watcher": "RollbackWatcherService",
    "driftloop_predictor": "PredictorService",
}


def test_every_service_package_is_known() -> None:
    assert {p.name for p in PACKAGES} == set(CLASSES)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_service_has_settings_service_and_a_short_main(package: Path) -> None:
    for name in ("settings.py", "service.py", "__main__.py"):
        assert (package / name).is_file(), f"{package.name} has no {name}"
    lines = (package / "__main__.py").read_text().splitlines()
    assert len(lines) < 15, f"{package.name}/__main__.py has {len(lines)} lines"


@pytest.mark.parametrize("package", sorted(CLASSES))
def test_every_service_class_is_a_service(package: str) -> None:
    cls = getattr(importlib.import_module(f"{package}.service"), CLASSES[package])
    assert issubclass(cls, ServiceBase)
    methods = {name for name, value in vars(Service).items() if inspect.isfunction(value)}
    methods -= {name for name in methods if name.startswith("_")}
    assert {"decode", "handle", "flush", "commit_floor", "ready_checks", "routes"} <= methods
    for method in methods:
        assert callable(getattr(cls, method, None)), f"{cls.__name__} lacks {method}"
    assert set(Service.__annotations__) == {"topics", "metrics"}  # set per instance or class
    assert inspect.iscoroutinefunction(cls.handle)


def test_run_service_takes_the_settings_and_the_service_only() -> None:
    for function in (run_service, serve):
        kinds = [p.kind for p in inspect.signature(function).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds
        assert list(inspect.signature(function).parameters) == ["settings", "service"]


def test_every_service_has_its_own_default_port() -> None:
    ports = {}
    for package in sorted(CLASSES):
        settings = importlib.import_module(f"{package}.settings")
        (cls,) = [
            v
            for k, v in vars(settings).items()
            if k.endswith("Settings") and getattr(v, "__module__", "") == settings.__name__
        ]
        ports[package] = cls.model_fields["http_port"].default
    assert len(set(ports.values())) == len(ports), ports
