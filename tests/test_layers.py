"""Import boundaries of `tvad_jax/` and `experiments/`, read from the README's Layers table.

The README's Architecture section holds the one source of truth, a table under the heading
line `### Layers` (`| unit | may import |`, one row per unit); this test reads it from there.

A unit is the first component under `tvad_jax/` (a subpackage such as `data`, or a top-level
module such as `config` for `config.py`); every file under the top-level `experiments/` folder
is the unit `experiments`. `tvad_jax/__init__.py` and `tvad_jax/__main__.py` are the unit
`tvad_jax`, which may import only `cli`. Imports within one unit are always fine.

Checked here, on every import statement anywhere in a file (module level, `if TYPE_CHECKING:`,
class bodies, functions):
  * every arrow between units is allowed by the table, and every unit has a row in it;
  * the unit graph found in the code has no cycle (whatever the table says);
  * an import inside a function carries a comment with the word `deferred` on its line or the
    line just above, or directly follows such an import (a block shares one comment): imports
    go inside functions only to defer a heavy dependency on purpose.
The checker functions take root paths, so the self-tests below run them on small fake trees.
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import io
import re
import textwrap
import tokenize
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[1]
PACKAGE = "tvad_jax"
EXTRA_DIRS = ("experiments",)
LAYERS_HEADING = "### Layers"
NO_IMPORTS = {"", "—", "–", "-", "none"}  # what an empty "may import" cell may hold
DEFERRED_WORD = re.compile(r"\bdeferred\b", re.IGNORECASE)
FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


@dataclasses.dataclass(frozen=True)
class Import:
    """One imported name of one import statement, as the layer checks see it."""

    path: str            # file, relative to the scanned root, with '/' separators
    line: int            # first line of the statement
    source: str          # unit of the importing file
    target: str | None   # unit imported, or None for anything outside the project
    text: str            # the statement, on one line
    in_function: bool    # inside a def (at any depth), so run at call time
    deferred: bool       # a 'deferred' comment on its line or the one above, or it follows
                         # a deferred import directly

    def arrow(self) -> str:
        """`path:line: source -> target (text)`, the form every failure message lists."""
        return f"{self.path}:{self.line}: {self.source} -> {self.target} ({self.text})"


# --- the table ---------------------------------------------------------------------------------

def read_layer_table(readme_path: Path) -> dict[str, set[str]]:
    """{unit: units it may import} from the markdown table under `### Layers` in the README."""
    lines = Path(readme_path).read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == LAYERS_HEADING)
    except StopIteration:
        raise ValueError(f"{readme_path} has no line '{LAYERS_HEADING}' followed by the table "
                         f"of units (see the docstring of {Path(__file__).name})") from None
    rows = _table_rows(lines[start + 1:])
    if not rows:
        raise ValueError(f"{readme_path}: no '| unit | may import |' table under "
                         f"'{LAYERS_HEADING}'")
    table: dict[str, set[str]] = {}
    for unit, allowed in rows:
        if unit in table:
            raise ValueError(f"{readme_path}: unit '{unit}' has two rows in the Layers table")
        table[unit] = allowed
    unknown = {name for allowed in table.values() for name in allowed} - set(table)
    if unknown:
        raise ValueError(f"{readme_path}: the Layers table lets units import "
                         f"{sorted(unknown)}, which have no row of their own")
    return table


def _table_rows(lines: list[str]) -> list[tuple[str, set[str]]]:
    """(unit, allowed units) of the first markdown table in `lines`, header and rule skipped."""
    rows = []
    for line in lines:
        line = line.strip()
        if not line.startswith("|"):
            if rows or line.startswith("#"):  # the table ended, or the next section began
                break
            continue  # prose between the heading and the table
        cells = [cell.strip().strip("`").strip() for cell in line.strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= set("-: ") or cells[0].lower() == "unit":
            continue
        allowed = {name.strip().strip("`").strip() for name in cells[1].split(",")}
        rows.append((cells[0], {name for name in allowed if name.lower() not in NO_IMPORTS}))
    return rows


def layer_rules(readme_path: Path, package_name: str) -> dict[str, set[str]]:
    """The README's table plus the package root's own rule: `__init__`/`__main__` import `cli`."""
    table = read_layer_table(readme_path)
    table.setdefault(package_name, {"cli"})
    return table


# --- reading the code --------------------------------------------------------------------------

def project_files(root_dir: Path, package_name: str,
                  extra_dirs: tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    """(file, unit) for every .py file of the package and of the extra top-level folders."""
    root_dir = Path(root_dir)
    files = []
    for top in (package_name, *extra_dirs):
        for path in sorted((root_dir / top).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files.append((path, file_unit(path.relative_to(root_dir), package_name)))
    return files


def file_unit(relpath: Path, package_name: str) -> str:
    """The unit of a file given relative to the root: `tvad_jax/data/x.py` -> `data`."""
    parts = relpath.parts
    if parts[0] != package_name:
        return parts[0]  # an extra folder such as experiments/ is one unit
    if len(parts) == 2:
        stem = Path(parts[1]).stem
        return package_name if stem in ("__init__", "__main__") else stem
    return parts[1]


def package_units(root_dir: Path, package_name: str) -> set[str]:
    """Names directly under the package that are units (subpackages and modules)."""
    units = set()
    for child in (Path(root_dir) / package_name).iterdir():
        if child.suffix == ".py" and child.stem not in ("__init__", "__main__"):
            units.add(child.stem)
        elif child.is_dir() and any(child.rglob("*.py")):
            units.add(child.name)
    return units


def collect_imports(root_dir: Path, package_name: str,
                    extra_dirs: tuple[str, ...] = ()) -> list[Import]:
    """Every import statement of every project file, one `Import` per imported name."""
    root_dir = Path(root_dir)
    known_units = package_units(root_dir, package_name)
    imports = []
    for path, unit in project_files(root_dir, package_name, extra_dirs):
        relpath = path.relative_to(root_dir)
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(relpath))
        deferred_lines = _lines_with_deferred_comment(source)
        deferred_ends = set()   # last lines of deferred imports: the next line's may follow
        for node, in_function in _import_statements(tree):
            lines = range(node.lineno - 1, (node.end_lineno or node.lineno) + 1)
            deferred = (any(line in deferred_lines for line in lines)
                        or node.lineno - 1 in deferred_ends)
            if deferred:
                deferred_ends.add(node.end_lineno or node.lineno)
            for module, name in _imported_modules(node, relpath):
                imports.append(Import(
                    path=relpath.as_posix(), line=node.lineno, source=unit,
                    target=_module_unit(module, name, package_name, extra_dirs, known_units),
                    text=" ".join(ast.get_source_segment(source, node).split()),
                    in_function=in_function, deferred=deferred))
    return imports


def _import_statements(tree: ast.AST):
    """Yield (import node, whether it sits inside a function) for all imports in `tree`."""
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            else:
                yield from visit(child, in_function or isinstance(child, FUNCTION_NODES))
    yield from visit(tree, False)


def _imported_modules(node: ast.Import | ast.ImportFrom, relpath: Path):
    """Yield (module parts, name imported from it or None), relative imports made absolute."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name.split("."), None
        return
    module = node.module.split(".") if node.module else []
    if node.level:
        package = list(relpath.parts[:-1])  # the folder of the file is its package
        up = node.level - 1
        if up >= len(package):
            raise ValueError(f"{relpath.as_posix()}:{node.lineno}: relative import goes above "
                             "the top folder")
        module = package[:len(package) - up] + module
    for alias in node.names:
        yield module, (None if alias.name == "*" else alias.name)


def _module_unit(module: list[str], name: str | None, package_name: str,
                 extra_dirs: tuple[str, ...], known_units: set[str]) -> str | None:
    """The unit that `module` (and `name` imported from it) belongs to; None outside the project."""
    if module[0] in extra_dirs:
        return module[0]
    if module[0] != package_name:
        return None
    if len(module) > 1:
        return module[1]
    if name in known_units:  # from tvad_jax import config
        return name
    return package_name  # import tvad_jax, or from tvad_jax import <something in __init__>


def _lines_with_deferred_comment(source: str) -> set[int]:
    """Line numbers holding a comment that contains the word 'deferred'."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0] for tok in tokens
            if tok.type == tokenize.COMMENT and DEFERRED_WORD.search(tok.string)}


# --- the checks --------------------------------------------------------------------------------

def undeclared_units(root_dir: Path, package_name: str, extra_dirs: tuple[str, ...],
                     rules: dict[str, set[str]]) -> list[str]:
    """One line per file whose unit has no row in the table."""
    return [f"{path.relative_to(root_dir).as_posix()}: unit '{unit}' has no row in the Layers "
            f"table" for path, unit in project_files(root_dir, package_name, extra_dirs)
            if unit not in rules]


def violations(imports: list[Import], rules: dict[str, set[str]]) -> list[str]:
    """One line per import statement crossing units in a way the table does not allow.

    Files of a unit without a row are left to `undeclared_units`, which names them once.
    """
    return list(dict.fromkeys(imp.arrow() for imp in _cross_unit(imports)
                              if imp.source in rules and imp.target not in rules[imp.source]))


def cycles(imports: list[Import]) -> list[list[Import]]:
    """Cycles of the unit graph found in the code, each as one example import per edge.

    For each strongly connected component, the shortest cycle through each of its units,
    without repeats, so every unit caught in a cycle shows up in at least one.
    """
    edges: dict[tuple[str, str], list[Import]] = collections.defaultdict(list)
    for imp in _cross_unit(imports):
        edges[imp.source, imp.target].append(imp)
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    found, seen = [], set()
    for component in _strongly_connected(graph):
        for unit in sorted(component):
            units = _shortest_cycle(graph, component, unit)
            pairs = list(zip(units, units[1:] + units[:1]))
            if frozenset(pairs) not in seen:
                seen.add(frozenset(pairs))
                found.append([min(edges[pair], key=lambda i: (i.path, i.line)) for pair in pairs])
    return found


def undeferred_function_imports(imports: list[Import]) -> list[str]:
    """`path:line: text` of imports inside functions without a 'deferred' comment."""
    lines = {(imp.path, imp.line): imp.text for imp in imports
             if imp.in_function and not imp.deferred}
    return [f"{path}:{line}: {text}" for (path, line), text in sorted(lines.items())]


def _cross_unit(imports: list[Import]) -> list[Import]:
    """The imports from one project unit into another."""
    return [imp for imp in imports if imp.target is not None and imp.target != imp.source]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Components of `graph` with more than one unit (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(unit):
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for other in sorted(graph.get(unit, ())):
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in on_stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == unit:
                    break
            if len(component) > 1:
                components.append(component)

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return components


def _shortest_cycle(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """The units of a shortest cycle from `start` back to itself inside `component`."""
    parent = {start: None}
    queue = collections.deque([start])
    while queue:
        unit = queue.popleft()
        for other in sorted(graph[unit] & component):
            if other == start:
                path = [unit]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1]
            if other not in parent:
                parent[other] = unit
                queue.append(other)
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def format_cycle(cycle: list[Import]) -> str:
    """`a -> b -> a` and one `path:line: a -> b (text)` line per edge."""
    units = " -> ".join([imp.source for imp in cycle] + [cycle[0].source])
    return "\n".join([f"cycle {units}:"] + [f"  {imp.arrow()}" for imp in cycle])


# --- the real checks ---------------------------------------------------------------------------

def _real_rules() -> dict[str, set[str]]:
    """The rules from this repository's README, or a failure saying what to add."""
    try:
        return layer_rules(REPO_ROOT / "README.md", PACKAGE)
    except ValueError as error:
        problem = str(error)
    pytest.fail(problem, pytrace=False)


def _fail_listing(problems: list[str], what: str) -> None:
    """Fail with `what` and one problem per line, without pytest's repr of the list."""
    if problems:
        pytest.fail(f"{len(problems)} {what}\n" + "\n".join(problems), pytrace=False)


def test_package_imports_follow_the_layers():
    rules = _real_rules()
    _fail_listing(
        undeclared_units(REPO_ROOT, PACKAGE, EXTRA_DIRS, rules)
        + violations(collect_imports(REPO_ROOT, PACKAGE, EXTRA_DIRS), rules),
        f"problem(s) with the layers of README.md's '{LAYERS_HEADING}' table (move the code "
        "to a unit that may depend on what it imports, or move what it imports lower; change "
        "the table only if the architecture itself changed):")


def test_no_unit_cycles():
    found = cycles(collect_imports(REPO_ROOT, PACKAGE, EXTRA_DIRS))
    _fail_listing([format_cycle(cycle) for cycle in found],
                  "import cycle(s) between units (break one edge of each; the first import "
                  "of each edge is shown):")


def test_function_level_imports_are_deferred_on_purpose():
    _fail_listing(
        undeferred_function_imports(collect_imports(REPO_ROOT, PACKAGE, EXTRA_DIRS)),
        "import(s) inside functions without a 'deferred' comment. Move each to the top of "
        "its module, or, if it defers an optional heavy dependency on purpose, say so on the "
        "import line or the line above (e.g. '# deferred: av is an optional heavy "
        "dependency'):")


# --- self-tests on fake trees ------------------------------------------------------------------

BELOW = ("errors", "config", "runs", "data", "models", "train", "infer", "eval", "jobs")
FAKE_RULES = {       # the layering the self-tests' fake trees follow
    "errors": (), "config": ("errors",), "runs": ("config",),
    "data": ("errors", "config", "runs"), "models": ("errors", "config"),
    "train": BELOW[:5], "infer": BELOW[:6], "eval": BELOW[:7], "jobs": BELOW[:8],
    "configs": BELOW, "experiments": BELOW + ("configs",), "commands": BELOW + ("configs",),
    "cli": ("commands", "config", "configs", "errors"),
}
LAYERS_TABLE = "### Layers\n\n| unit | may import |\n|---|---|\n" + "".join(
    f"| `{unit}` | {', '.join(f'`{d}`' for d in deps) or '—'} |\n"
    for unit, deps in FAKE_RULES.items())

CLEAN_TREE = {
    "tvad_jax/__init__.py": "",
    "tvad_jax/__main__.py": "from tvad_jax.cli import main\n",
    "tvad_jax/errors.py": "class InputError(Exception):\n    pass\n",
    "tvad_jax/config.py": "from tvad_jax.errors import InputError\n",
    "tvad_jax/cli.py": "from tvad_jax.commands import data as data_commands\n",
    "tvad_jax/commands/__init__.py": "",
    "tvad_jax/commands/data.py": "from tvad_jax.data import prepare\n",
    "tvad_jax/data/__init__.py": "",
    "tvad_jax/data/prepare.py": "from .synthetic import spec\nfrom tvad_jax import config\n",
    "tvad_jax/data/synthetic/__init__.py": "",
    "tvad_jax/data/synthetic/spec.py": "import numpy as np\n",
    "tvad_jax/models/__init__.py": "",
    "tvad_jax/models/ahd.py": "import numpy as np\n\n\ndef head():\n    return np.zeros(3)\n",
    "tvad_jax/eval/__init__.py": "",
    "tvad_jax/eval/metrics.py": "from tvad_jax.data.prepare import spec\n",
    "experiments/__init__.py": "",
    "experiments/run.py": "from tvad_jax.eval import metrics\nfrom experiments import helpers\n",
    "experiments/helpers.py": "",
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: source} under `root` (sources are dedented) and return `root`."""
    for relpath, source in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def check_tree(root: Path) -> dict[str, list]:
    """Every check on a fake tree with the docstring's table in a README of its own."""
    (root / "README.md").write_text("# Fake\n\n## Architecture\n\n" + LAYERS_TABLE
                                    + "\n## Next section\n\n| a | b |\n|---|---|\n")
    rules = layer_rules(root / "README.md", "tvad_jax")
    imports = collect_imports(root, "tvad_jax", ("experiments",))
    return {"undeclared": undeclared_units(root, "tvad_jax", ("experiments",), rules),
            "violations": violations(imports, rules),
            "cycles": [format_cycle(cycle) for cycle in cycles(imports)],
            "undeferred": undeferred_function_imports(imports)}


def test_read_layer_table_reads_every_row(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("## Architecture\n\nProse.\n\n" + LAYERS_TABLE + "\nMore prose.\n")
    table = read_layer_table(readme)
    assert len(table) == 13
    assert table["errors"] == set()
    assert table["cli"] == {"commands", "config", "configs", "errors"}
    assert "configs" in table["experiments"] and "experiments" not in table["commands"]


def test_read_layer_table_says_what_is_missing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("## Architecture\n\nNo table yet.\n")
    with pytest.raises(ValueError, match="### Layers"):
        read_layer_table(readme)
    readme.write_text("### Layers\n\n| unit | may import |\n|---|---|\n| `cli` | `comands` |\n")
    with pytest.raises(ValueError, match="comands"):
        read_layer_table(readme)


def test_clean_tree_passes(tmp_path):
    assert check_tree(write_tree(tmp_path, CLEAN_TREE)) == {
        "undeclared": [], "violations": [], "cycles": [], "undeferred": []}


def test_every_import_form_is_resolved_to_its_unit(tmp_path):
    write_tree(tmp_path, CLEAN_TREE | {"tvad_jax/runs.py": "", "tvad_jax/train/__init__.py": "",
                                       "tvad_jax/train/step.py": "", "tvad_jax/train/loop.py": """\
        import os, tvad_jax.models.ahd
        from typing import TYPE_CHECKING
        from tvad_jax import config as config_lib, data
        from .. import runs
        from ..data.prepare import spec
        from . import step
        import tvad_jax
        if TYPE_CHECKING:
            from tvad_jax.eval import metrics

        class Loop:
            from experiments import run
        """})
    found = {(imp.line, imp.target, imp.in_function)
             for imp in collect_imports(tmp_path, "tvad_jax", ("experiments",))
             if imp.path == "tvad_jax/train/loop.py"}
    assert found == {(1, None, False), (1, "models", False), (2, None, False),
                     (3, "config", False), (3, "data", False), (4, "runs", False),
                     (5, "data", False), (6, "train", False), (7, "tvad_jax", False),
                     (9, "eval", False), (12, "experiments", False)}


def test_forbidden_import_inside_a_function_is_reported(tmp_path):
    found = check_tree(write_tree(tmp_path, CLEAN_TREE | {"tvad_jax/models/ahd.py": """\
        import numpy as np

        def head():
            from tvad_jax.data.synthetic import spec, scene
            return spec, scene
        """}))
    assert found["violations"] == [
        "tvad_jax/models/ahd.py:4: models -> data"
        " (from tvad_jax.data.synthetic import spec, scene)"]
    assert found["undeferred"] == [
        "tvad_jax/models/ahd.py:4: from tvad_jax.data.synthetic import spec, scene"]


def test_package_root_may_import_only_cli(tmp_path):
    found = check_tree(write_tree(tmp_path, CLEAN_TREE | {
        "tvad_jax/__init__.py": "from . import cli\nfrom .data import prepare\n"}))
    assert found["violations"] == [
        "tvad_jax/__init__.py:2: tvad_jax -> data (from .data import prepare)"]


def test_experiments_folder_is_a_unit_of_its_own(tmp_path):
    found = check_tree(write_tree(tmp_path, CLEAN_TREE | {
        "experiments/run.py": "from tvad_jax import cli\n",
        "tvad_jax/data/prepare.py": "def f():\n    import experiments.run  # deferred: test\n"}))
    assert found["violations"] == [
        "tvad_jax/data/prepare.py:2: data -> experiments (import experiments.run)",
        "experiments/run.py:1: experiments -> cli (from tvad_jax import cli)"]


def test_undeclared_unit_names_the_file(tmp_path):
    found = check_tree(write_tree(tmp_path, CLEAN_TREE | {
        "tvad_jax/stages/__init__.py": "", "tvad_jax/stages/s3m.py": "from tvad_jax import runs\n",
        "tvad_jax/runs.py": "", "tvad_jax/cli.py": "from tvad_jax.stages import s3m\n"}))
    assert found["undeclared"] == [
        "tvad_jax/stages/__init__.py: unit 'stages' has no row in the Layers table",
        "tvad_jax/stages/s3m.py: unit 'stages' has no row in the Layers table"]
    assert found["violations"] == [
        "tvad_jax/cli.py:1: cli -> stages (from tvad_jax.stages import s3m)"]


def test_cycle_is_reported_even_where_the_table_allows_it(tmp_path):
    root = write_tree(tmp_path, CLEAN_TREE | {
        "tvad_jax/data/prepare.py": "import os\n\nfrom tvad_jax.eval.metrics import auc\n",
        "tvad_jax/data/readers.py": "from tvad_jax.eval import metrics\n"})
    found = check_tree(root)
    assert found["cycles"] == [
        "cycle data -> eval -> data:\n"
        "  tvad_jax/data/prepare.py:3: data -> eval (from tvad_jax.eval.metrics import auc)\n"
        "  tvad_jax/eval/metrics.py:1: eval -> data (from tvad_jax.data.prepare import spec)"]
    # A table edited to allow both directions hides the arrows but not the cycle.
    rules = layer_rules(root / "README.md", "tvad_jax")
    rules["data"].add("eval")
    imports = collect_imports(root, "tvad_jax", ("experiments",))
    assert violations(imports, rules) == []
    assert len(cycles(imports)) == 1


def test_longer_cycles_are_found(tmp_path):
    found = check_tree(write_tree(tmp_path, CLEAN_TREE | {
        "tvad_jax/config.py": "from tvad_jax.cli import main\n"}))
    assert found["cycles"] == [
        "cycle cli -> commands -> data -> config -> cli:\n"
        "  tvad_jax/cli.py:1: cli -> commands"
        " (from tvad_jax.commands import data as data_commands)\n"
        "  tvad_jax/commands/data.py:1: commands -> data (from tvad_jax.data import prepare)\n"
        "  tvad_jax/data/prepare.py:2: data -> config (from tvad_jax import config)\n"
        "  tvad_jax/config.py:1: config -> cli (from tvad_jax.cli import main)"]


def test_function_imports_need_a_deferred_comment(tmp_path):
    found = check_tree(write_tree(tmp_path, CLEAN_TREE | {"tvad_jax/models/ahd.py": """\
        import numpy as np


        def plain():
            import torch
            return torch


        def commented_above():
            # deferred: torch is an optional heavy dependency
            import torch
            return torch


        def commented_on_the_line():
            import torch  # Deferred: optional heavy dependency
            return torch


        def comment_too_far_above():
            # deferred: optional heavy dependency

            import torch
            return torch


        def commented_block():
            # deferred: the imports right below it share the comment
            import torch
            import torchvision
            return torch, torchvision


        class Head:
            def method(self):
                def inner():
                    from tvad_jax.errors import InputError
                    return InputError
                return inner
        """}))
    assert found["undeferred"] == [
        "tvad_jax/models/ahd.py:5: import torch",
        "tvad_jax/models/ahd.py:23: import torch",
        "tvad_jax/models/ahd.py:37: from tvad_jax.errors import InputError"]
    assert found["violations"] == []
