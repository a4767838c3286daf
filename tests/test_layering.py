"""The layering rules of DESIGN.md, checked on the source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_library_never_imports_dagster():
    offenders = [p for p in (ROOT / "avops").rglob("*.py") if any(n.split(".")[0].startswith("dagster") for n in _imports(p))]
    assert not offenders, offenders


def test_code_that_reads_real_data_never_depends_on_the_simulator():
    readers = [p for p in (ROOT / "avops").rglob("*.py") if "fleet" not in p.parts and p.name != "cli.py"]
    readers += list((ROOT / "avops_assets" / "defs").rglob("*.py")) + list((ROOT / "sensors").rglob("*.py")) + list((ROOT / "resources").rglob("*.py"))
    for p in readers:
        assert not any(n == "avops.fleet" or n.startswith("avops.fleet.") for n in _imports(p)), f"{p} imports the simulator"
        assert "sim_truth" not in p.read_text() or p.name in ("home.py", "reviewer_sim.py"), f"{p} reads simulator ground truth"


def test_only_the_simulated_reviewer_reads_ground_truth_in_curation():
    readers = [p.name for p in (ROOT / "avops" / "curation").rglob("*.py") if "sim_truth" in p.read_text()]
    assert readers == ["reviewer_sim.py"]
