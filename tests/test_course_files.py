"""The files around the course agree: environments, Binder, CI, README, notebook openings, no outputs."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
yaml = pytest.importorskip("yaml")

from cxrlib import exercises as ex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _tool(name: str):
    """Import tools/<name>.py (the maintenance scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ======================================================================= package lists agree
ALIASES = {"pytorch": "torch", "pytorch-cpu": "torch", "pytorch-gpu": "torch", "matplotlib-base": "matplotlib"}
NOT_PACKAGES = {"python", "pip"}


def normalise(requirement: str) -> str:
    """'PyTorch>=2.2' → 'torch'; 'matplotlib-base' → 'matplotlib'; 'Pillow' → 'pillow' (PEP 503 style)."""
    name = re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0]
    name = re.sub(r"[-_.]+", "-", name).lower()
    return ALIASES.get(name, name)


def test_normalise_maps_conda_names_to_pip_names():
    assert [normalise(r) for r in ("pytorch>=2.2", "matplotlib-base", "Pillow>=9.5", "scikit_image", "torch")] == [
        "torch", "matplotlib", "pillow", "scikit-image", "torch"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _pyproject_sets() -> tuple[set[str], set[str]]:
    """(what the course needs: dependencies + dicom/medmnist/metrics/privacy/diffusion extras, what is allowed
    besides: dev)."""
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    needed = {normalise(r) for r in project["dependencies"]}
    for extra in ("dicom", "medmnist", "metrics", "privacy", "diffusion"):
        needed |= {normalise(r) for r in extras.get(extra, [])}
    dev = {normalise(r) for r in extras.get("dev", [])}
    return needed, dev


def _environment_yml() -> tuple[set[str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert env["channels"] == ["conda-forge"], "environment.yml uses conda-forge only"
    names, pip = set(), []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            names.add(normalise(dep))
    names |= {normalise(p) for p in pip if not p.startswith("-")}
    return names - NOT_PACKAGES, pip


def _binder_requirements() -> tuple[set[str], list[str]]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    return {normalise(line) for line in lines if not line.startswith("-")}, lines


def test_environment_yml_names_the_same_packages_as_pyproject():
    needed, dev = _pyproject_sets()
    names, pip = _environment_yml()
    assert needed <= names, f"missing from environment.yml: {sorted(needed - names)}"
    assert names <= needed | dev, f"in environment.yml but not in pyproject.toml: {sorted(names - needed - dev)}"
    assert "-e ." in pip, "environment.yml installs cxrlib itself with `pip: [-e .]`"


def test_binder_names_the_same_packages_with_cpu_only_torch():
    needed, dev = _pyproject_sets()
    names, lines = _binder_requirements()
    assert needed <= names, f"missing from binder/requirements.txt: {sorted(needed - names)}"
    assert names <= needed | dev, f"in binder/requirements.txt but not in pyproject.toml: {sorted(names - needed - dev)}"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines


def test_binder_post_build_installs_cxrlib_without_deprecated_steps():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    assert post.startswith("#!") and re.search(r"pip install .*-e \.", post)
    commands = [line for line in post.splitlines() if not line.lstrip().startswith("#")]
    assert not any("nbextension" in c or "serverextension" in c for c in commands)


def test_lower_bounds_agree_with_pyproject():
    bounds = {}
    for r in _pyproject()["project"]["dependencies"]:
        m = re.match(r"([\w.-]+)\s*>=\s*([\w.]+)", r)
        bounds[normalise(m.group(1))] = m.group(2)
    for source, lines in (("environment.yml", yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]),
                          ("binder/requirements.txt", _binder_requirements()[1])):
        for line in (x for x in lines if isinstance(x, str)):
            m = re.match(r"([\w.-]+)\s*>=\s*([\w.]+)", line)
            if m and normalise(m.group(1)) in bounds:
                assert m.group(2) == bounds[normalise(m.group(1))], f"{source}: {line} vs pyproject.toml"


# ======================================================================= CI, README, Makefile
def test_ci_runs_make_test():
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in commands


def test_readme_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("make demo", "make test"):
        assert re.search(rf"^{command}\b", readme, flags=re.M), f"README must show `{command}`"


def test_makefile_has_course_targets():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^exercises:.*\n\t.*cxrlib\.exercises build notebooks exercises", makefile, flags=re.M)
    assert re.search(r"^badges:.*\n\t.*tools/notebook_opening\.py", makefile, flags=re.M)


# ======================================================================= notebooks
def _all_notebooks() -> list[Path]:
    return [p for d in ("notebooks", "exercises", "tests") for p in sorted((ROOT / d).rglob("*.ipynb"))
            if ".ipynb_checkpoints" not in p.parts]


def test_committed_notebooks_have_no_outputs():
    """Only the printed output of `# NBVAL_CHECK_OUTPUT` cells is kept (nbval's reference); student versions none."""
    dirty = []
    for path in _all_notebooks():
        nb = ex.read_notebook(path)
        keep = path.parent.name != "exercises"
        if ex.notebook_text(nb) != ex.notebook_text(ex.clear_outputs(ex.read_notebook(path), keep_checked=keep)):
            dirty.append(str(path.relative_to(ROOT)))
    assert not dirty, f"strip outputs with `python tools/strip_outputs.py`: {dirty}"


def test_checked_cells_have_a_stored_reference_output():
    """A `# NBVAL_CHECK_OUTPUT` cell without stored output is compared with nothing: nbval would always pass."""
    missing = [f"{path.name} cell {i}" for path in ex.source_notebooks(NOTEBOOKS)
               for i, cell in enumerate(ex.read_notebook(path)["cells"])
               if ex.is_checked_cell(cell) and not cell.get("outputs")]
    assert not missing, f"run `python tools/store_checked_outputs.py` on: {missing}"


def test_strip_outputs_clears_a_run_notebook(tmp_path):
    nb = ex.read_notebook(ROOT / "tests" / "fixtures" / "notebooks" / "90_fixture.ipynb")
    nb["cells"][1].update(execution_count=3, outputs=[{"output_type": "stream", "name": "stdout", "text": "hi"}])
    nb["metadata"]["widgets"] = {"state": {}}
    path = ex.write_notebook(nb, tmp_path / "90_run.ipynb")
    tool = [sys.executable, str(ROOT / "tools" / "strip_outputs.py")]
    assert subprocess.run([*tool, "--check", str(path)], capture_output=True).returncode == 1
    subprocess.run([*tool, str(path)], check=True, capture_output=True)
    assert subprocess.run([*tool, "--check", str(path)], capture_output=True).returncode == 0
    cleaned = ex.read_notebook(path)
    assert cleaned["cells"][1]["outputs"] == [] and "widgets" not in cleaned["metadata"]


def test_strip_outputs_keeps_the_reference_of_checked_cells_only():
    stdout = {"output_type": "stream", "name": "stdout", "text": "torch.Size([2, 1, 8, 8])\n"}
    image = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": 4, "outputs": [stdout, image],
         "source": "# NBVAL_CHECK_OUTPUT\nprint(x.shape)"},
        {"cell_type": "code", "metadata": {}, "execution_count": 5, "outputs": [stdout], "source": "print(x.shape)"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    kept = ex.clear_outputs(nb, keep_checked=True)
    assert kept["cells"][0]["outputs"] == [stdout] and kept["cells"][1]["outputs"] == []
    assert kept["cells"][0]["execution_count"] == 1  # nbval compares only cells that were run
    assert ex.clear_outputs(kept)["cells"][0]["outputs"] == []


def test_notebook_openings_are_in_sync_with_the_repository_name():
    opening = _tool("notebook_opening")
    settings = opening.course_settings()
    assert settings["repository"] == _pyproject()["tool"]["cxr-gan"]["repository"]
    for path in ex.source_notebooks(NOTEBOOKS):
        nb = ex.read_notebook(path)
        before = ex.notebook_text(nb)
        opening.update_opening(nb, path.name, settings["repository"], settings["branch"])
        assert ex.notebook_text(nb) == before, f"{path.name}: opening out of date, run `make badges`"


def test_colab_and_binder_links_everywhere_use_the_one_repository():
    repo = _tool("notebook_opening").course_settings()["repository"]
    pattern = re.compile(r"(?:colab\.research\.google\.com/github|mybinder\.org/v2/gh)/([\w.-]+/[\w.-]+)")
    files = [*_all_notebooks(), ROOT / "README.md", *ROOT.glob("*.md")]
    for path in files:
        for found in pattern.findall(path.read_text(encoding="utf-8")):
            assert found == repo, f"{path.relative_to(ROOT)} links to {found}, expected {repo}"


def _check_fixed_opening(path: Path) -> None:
    opening = _tool("notebook_opening")
    cells = ex.read_notebook(path)["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"].startswith(opening.BADGES_MARKER)
    assert re.search(rf"^# {path.name[:2]} · ", cells[0]["source"], flags=re.M), f"{path.name}: title '# NN · …'"
    assert cells[1]["source"].startswith(opening.SETUP_MARKER)
    assert cells[2]["cell_type"] == "code" and "budget()" in cells[2]["source"] and "print(" in cells[2]["source"]
    assert cells[3]["cell_type"] == "markdown" and "## Learning goals" in cells[3]["source"], path.name
    code = "\n".join(c["source"] for c in cells if c["cell_type"] == "code")
    assert re.search(r'^DATA = "phantom"', code, flags=re.M), f"{path.name}: the data switch `DATA = \"phantom\"`"
    assert "from tqdm import" not in code, f"{path.name}: use tqdm.auto (plain tqdm breaks nbval)"
    markdown = "\n".join(c["source"] for c in cells if c["cell_type"] == "markdown")
    assert "## Summary" in markdown and "## Try next" in markdown, f"{path.name}: end with Summary and Try next"


def test_notebooks_follow_the_fixed_opening():
    for path in ex.source_notebooks(NOTEBOOKS):
        _check_fixed_opening(path)


def test_new_notebook_skeleton_follows_the_conventions(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "new_notebook.py"), "08_image_to_image", "Image to image"]
    subprocess.run([*tool, "--dir", str(tmp_path)], check=True, capture_output=True)
    path = tmp_path / "08_image_to_image.ipynb"
    _check_fixed_opening(path)
    assert subprocess.run([sys.executable, str(ROOT / "tools" / "notebook_opening.py"), "--check", str(path)]
                          ).returncode == 0
    again = subprocess.run([*tool, "--dir", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode != 0 and "not overwriting" in again.stderr


def test_make_badges_is_idempotent_and_follows_the_repository(tmp_path):
    opening = _tool("notebook_opening")
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# 08 · Something"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    once = ex.notebook_text(opening.update_opening(nb, "07_x.ipynb", "me/course"))
    twice = ex.notebook_text(opening.update_opening(ex.read_notebook(ex.write_notebook(nb, tmp_path / "a.ipynb")),
                                                    "07_x.ipynb", "me/course"))
    assert once == twice
    cells = ex.read_notebook(tmp_path / "a.ipynb")["cells"]
    assert len(cells) == 3  # badges and setup inserted, the author's cell kept
    assert "https://colab.research.google.com/github/me/course/blob/main/notebooks/07_x.ipynb" in cells[0]["source"]
    assert "https://mybinder.org/v2/gh/me/course/main?labpath=notebooks%2F07_x.ipynb" in cells[0]["source"]
    assert "git+https://github.com/me/course" in cells[1]["source"]
    moved = opening.update_opening(ex.read_notebook(tmp_path / "a.ipynb"), "07_x.ipynb", "other/name")
    assert "other/name" in moved["cells"][0]["source"] and "me/course" not in ex.notebook_text(moved)


def test_repository_is_read_from_pyproject(tmp_path):
    opening = _tool("notebook_opening")
    (tmp_path / "pyproject.toml").write_text('[tool.cxr-gan]\nrepository = "someone/fork"\n')
    assert opening.course_settings(tmp_path / "pyproject.toml") == {"repository": "someone/fork", "branch": "main"}
    (tmp_path / "pyproject.toml").write_text('[tool.cxr-gan]\nrepository = "not a repo"\n')
    with pytest.raises(SystemExit, match="owner/name"):
        opening.course_settings(tmp_path / "pyproject.toml")


def test_setup_cell_does_nothing_outside_colab():
    source = _tool("notebook_opening").setup_source("cxr-gan/cxr-gan")
    assert "--no-deps" in source or " -c " in source or '"-c"' in source  # torch is never replaced on Colab
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<setup>", "exec"), {})
    assert out.getvalue() == "" and "google.colab" not in sys.modules


def test_setup_cell_installs_the_badges_branch_with_the_extras_the_notebooks_use():
    opening = _tool("notebook_opening")
    source = opening.setup_source("me/course", "course-v2")
    assert '"cxrlib[medmnist,dicom,metrics] @ git+https://github.com/me/course@course-v2"' in source
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"medmnist", "dicom", "metrics"} <= set(extras)  # every extra named there exists
    settings = opening.course_settings()
    for path in ex.source_notebooks(NOTEBOOKS):  # and the notebooks carry it for pyproject's branch
        setup = ex.read_notebook(path)["cells"][1]["source"]
        assert f"git+https://github.com/{settings['repository']}@{settings['branch']}\"" in setup, path.name


def test_sanitize_file_masks_run_dependent_text_only():
    nbval_plugin = pytest.importorskip("nbval.plugin")
    patterns = nbval_plugin.get_sanitize_patterns((NOTEBOOKS / "sanitize.cfg").read_text())

    def sanitize(s: str) -> str:
        for regex, replace in patterns:
            s = re.sub(regex, replace, s)
        return s

    assert sanitize("<Generator at 0x7f3a2b1c9d40>") == "<Generator at 0xADDRESS>"
    assert sanitize("took 12.3 s, 1.5 min; 340 ms") == "took TIME, TIME; TIME"
    assert sanitize("123.4 it/s · 88 img/s") == "RATE · RATE"
    assert sanitize("saved /tmp/pytest-of-root/run3/x.png") == "saved /tmp/PATH"
    assert sanitize("on 2025-11-25 15:49:01") == "on DATE"
    stable = "torch.Size([16, 1, 32, 32]) · 96 phantom images, 32 px, classes normal=48 pneumonia=48 · 40 steps"
    assert sanitize(stable) == stable


def test_nbval_compares_checked_cells_against_the_stored_reference(tmp_path):
    """The convention end to end: a stored reference passes (the new address is sanitized); a wrong one fails."""
    pytest.importorskip("nbval")
    stored = {"output_type": "stream", "name": "stdout", "text": "[3 5 7] <object object at 0x7f0000000001>\n"}
    cells = [{"cell_type": "code", "id": "a", "metadata": {}, "execution_count": None, "outputs": [stored],
              "source": "# NBVAL_CHECK_OUTPUT\nimport numpy as np\nprint(np.arange(6).reshape(2, 3).sum(0), object())"},
             {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None, "outputs": [],
              "source": "print('not checked', np.random.rand())"}]
    nb = ex.clear_outputs({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, keep_checked=True)
    good = ex.write_notebook(nb, tmp_path / "01_good.ipynb")
    nb["cells"][0]["outputs"][0]["text"] = "[3 5 8] <object object at 0x7f0000000001>\n"
    bad = ex.write_notebook(nb, tmp_path / "02_bad.ipynb")
    nbval = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "--nbval-lax",
             "--nbval-current-env", "--nbval-sanitize-with", str(NOTEBOOKS / "sanitize.cfg"), str(good), str(bad)]
    run = subprocess.run(nbval, capture_output=True, text=True, cwd=tmp_path)
    assert "PASSED 01_good.ipynb::Cell 0" in run.stdout, run.stdout[-2000:]
    assert "FAILED 02_bad.ipynb::Cell 0" in run.stdout and "[3 5 8]" in run.stdout, run.stdout[-2000:]


def test_readme_course_map_lists_every_notebook_with_its_badges():
    opening = _tool("notebook_opening")
    settings = opening.course_settings()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert opening.update_readme(text, settings["repository"], settings["branch"]) == text, "run `make badges`"
    course_map = text.split(opening.MAP_BEGIN, 1)[1].split(opening.MAP_END, 1)[0]
    for path in ex.source_notebooks(NOTEBOOKS):
        row = next((line for line in course_map.splitlines() if f"(notebooks/{path.name})" in line), None)
        assert row is not None, f"README course map: no row for {path.name}"
        assert opening.badges_inline(settings["repository"], path.name, settings["branch"]) in row


def test_make_badges_rewrites_only_the_badge_column_of_the_course_map():
    opening = _tool("notebook_opening")
    text = ("intro | not a row\n" + opening.MAP_BEGIN + " -->\n| notebook | what | open |\n|---|---|---|\n"
            "| [08 · X](notebooks/07_x.ipynb) | a \\| b | old |\n" + opening.MAP_END + " -->\n| [07](notebooks/07_x.ipynb) | kept |")
    new = opening.update_readme(text, "me/course")
    rows = new.splitlines()
    assert rows[4].startswith("| [08 · X](notebooks/07_x.ipynb) | a \\| b | [![Open In Colab]")
    assert "https://mybinder.org/v2/gh/me/course/main?labpath=notebooks%2F07_x.ipynb" in rows[4]
    assert rows[-1] == "| [07](notebooks/07_x.ipynb) | kept |"  # outside the markers: untouched
    assert opening.update_readme(new, "me/course") == new


# ======================================================================= the reading rhythm (issue 26)
PREDICT = "**Predict:**"
DEV_WORDS = re.compile(r"\b(lever|smoke budget|NBVAL_CHECK_OUTPUT|the issue's|seed project|the seed's)\b", re.I)


def _markdown(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def test_every_notebook_asks_at_least_two_predictions_each_answered_by_the_next_cell():
    for path in ex.source_notebooks(NOTEBOOKS):
        cells = ex.read_notebook(path)["cells"]
        asks = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and _markdown(c).lstrip().startswith(PREDICT)]
        assert len(asks) >= 2, f"{path.name}: {len(asks)} '{PREDICT}' cells, want at least 2"
        for i in asks:
            assert i + 1 < len(cells) and cells[i + 1]["cell_type"] == "code", (
                f"{path.name}, cell {i}: a prediction is answered by the code cell right after it")


def test_every_notebook_has_a_checked_exercise_including_notebook_00():
    for path in ex.source_notebooks(NOTEBOOKS):
        assert ex.exercise_cells(ex.read_notebook(path)), f"{path.name} has no exercise"


def test_student_text_has_no_development_words_and_calls_the_student_project_the_original_project():
    for path in ex.source_notebooks(NOTEBOOKS):
        for i, cell in enumerate(ex.read_notebook(path)["cells"]):
            if cell["cell_type"] == "markdown":
                hit = DEV_WORDS.search(_markdown(cell))
                assert not hit, f"{path.name}, cell {i}: {hit.group()!r}"
