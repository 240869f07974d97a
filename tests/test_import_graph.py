"""The project's import graph has no circles and its layers point one way (see
:mod:`tests.import_graph`), and the check sees the imports a circle hides behind."""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import ROOT, cycles, import_graph, problems


def test_the_project_has_no_import_circles_and_layers_point_one_way() -> None:
    assert problems(ROOT) == []


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_function_level_and_type_checking_imports_count(tmp_path: Path) -> None:
    _package(
        tmp_path,
        {
            "cds_service/__init__.py": "",
            "cds_service/runtime.py": "def run():\n    from cds_service.jobs import work\n",
            "cds_service/jobs/__init__.py": "",
            "cds_service/jobs/work.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from cds_service.runtime import Runtime\n"
            ),
            "cds_service/hooks.py": "from . import runtime\n",
            "adapters/__init__.py": "",
            "adapters/reader.py": "import cds_service.hooks\n",
            "models/__init__.py": "",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["cds_service.hooks"] == {"cds_service.runtime": 1}  # relative import
    assert cycles(graph) == [["cds_service.jobs.work", "cds_service.runtime"]]
    found = problems(tmp_path)
    assert any(p.startswith("layering: adapters.reader") for p in found)
    assert any("import circle: cds_service.jobs.work -> cds_service.runtime" in p for p in found)
