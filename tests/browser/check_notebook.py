#!/usr/bin/env python
"""Real-browser check: JupyterLab and headless Chromium run a notebook and use its widgets, as a student would.

    python tests/browser/check_notebook.py [NOTEBOOK] [--timeout SECONDS] [--out runs/browser]

``make test-browser`` installs what this needs (Debian ``chromium`` and the ``playwright`` Python package; never
``playwright install``) and runs it. Steps:

1. start JupyterLab from this interpreter on a free localhost port with a random token, its config, data,
   runtime, settings and workspace folders in a temporary folder (autosave off, so the notebook file is not
   rewritten with outputs), with ``CXRLIB_SMOKE=1`` exported for the kernel; wait for ``/api/status``;
2. start ``/usr/bin/chromium`` headless with remote debugging and attach Playwright to it over CDP;
3. open the notebook (default ``notebooks/06_results_and_evaluation.ipynb``, or this folder's
   ``widgets_fixture.ipynb`` while 05 does not exist), wait for the kernel, click into the first cell, press
   Escape, Run → Run All Cells, and wait until every cell has run and the kernel is idle;
4. fail on any error output or unrun cell; require a rendered widget, an image output, and a widget that
   answers: a click on a Turing-test "Real" button changes the score line, and a slider moved with ArrowRight
   changes its readout and makes the kernel redraw an image;
5. save screenshots in ``runs/browser/`` (``<notebook>.png`` after the click, ``<notebook>-slider.png`` after the
   slider move, ``<notebook>-failure.png`` when a check fails); always stop the JupyterLab (and its kernels)
   and the Chromium it started, by PID.

Exit status: 0 passed, 1 a check failed, 2 the setup failed (nothing to test with).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_NOTEBOOK = REPO / "notebooks" / "06_results_and_evaluation.ipynb"
FIXTURE_NOTEBOOK = Path(__file__).resolve().parent / "widgets_fixture.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--no-default-browser-check", "--disable-extensions", "--mute-audio", "--window-size=1400,1000",
]
# JupyterLab user settings for the run: no news/update pop-ups, no autosave (the notebook file must not be
# rewritten with outputs), and every cell kept in the DOM (the default windowing drops off-screen cells,
# which would hide their outputs from the checks).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b.*:", re.M)


class CheckFailed(Exception):
    """A check on the notebook failed (exit status 1)."""


class SetupFailed(Exception):
    """JupyterLab or Chromium could not be started (exit status 2)."""


def log(msg: str) -> None:
    print(f"[browser {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (kernels run in their own session, so a process group misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def stop(proc: subprocess.Popen | None, name: str, grace: float = 10.0) -> None:
    """SIGTERM the process group we started (and any descendant outside it), then SIGKILL what is left."""
    if proc is None:
        return
    family = descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # started with start_new_session: its group id is its pid
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {proc.pid}) ignored SIGTERM for {grace:g} s: killing it")
    for pid in [proc.pid, *family]:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            continue
        try:
            os.killpg(pid, signal.SIGKILL) if pid == proc.pid else os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        log(f"warning: {name} (pid {proc.pid}) is still running")
    log(f"stopped {name} (pid {proc.pid}{', and ' + str(len(family)) + ' child processes' if family else ''})")


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Lab:
    """A JupyterLab server started from this interpreter, isolated in a temporary folder."""

    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp = root, tmp
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.log_path = tmp / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        req = urllib.request.Request(self.url(path), method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def start(self, timeout: float = 120.0, attempt: int = 1) -> None:
        env = dict(os.environ)
        env.pop("MPLBACKEND", None)  # the kernel must use the inline backend so figures appear
        env["CXRLIB_SMOKE"] = "1"  # the kernel inherits the server's environment
        env["PYTHONUNBUFFERED"] = "1"
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
            env[var] = str(self.tmp / sub)
            (self.tmp / sub).mkdir(parents=True, exist_ok=True)
        for name, value in LAB_SETTINGS.items():
            f = self.tmp / "settings" / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--LabApp.news_url=None"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        log(f"starting JupyterLab on 127.0.0.1:{self.port} (log: {self.log_path})")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "already in use" in tail(self.log_path) and attempt < 3:  # another process took the port
                    self.port = free_port()
                    return self.start(timeout, attempt + 1)
                raise SetupFailed(f"JupyterLab exited with status {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                self.api("api/status", timeout=2)
                log(f"JupyterLab is up (pid {self.proc.pid})")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        raise SetupFailed(f"JupyterLab did not answer /api/status within {timeout:g} s:\n{tail(self.log_path)}")

    def kernel_state(self, notebook_rel: str) -> str | None:
        """The execution state of the kernel attached to the notebook (None while there is no session)."""
        try:
            sessions = self.api("api/sessions")
        except (urllib.error.URLError, OSError):
            return None
        for s in sessions:
            if s.get("path") == notebook_rel and s.get("kernel"):
                return s["kernel"].get("execution_state")
        return None

    def shutdown_kernels(self) -> None:
        try:
            for k in self.api("api/kernels"):
                self.api(f"api/kernels/{k['id']}", method="DELETE", timeout=10)
        except (urllib.error.URLError, OSError, TypeError, KeyError):
            pass  # stop() kills whatever is left by PID

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.shutdown_kernels()
        stop(self.proc, "JupyterLab")


def start_chromium(tmp: Path, timeout: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Headless Chromium with remote debugging on a port it picks; returns (process, DevTools port)."""
    profile = tmp / "chromium"
    profile.mkdir()
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
           "--remote-debugging-port=0", "about:blank"]
    log_path = tmp / "chromium.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    port_file = profile / "DevToolsActivePort"  # Chromium writes its chosen port here
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupFailed(f"Chromium exited with status {proc.returncode}:\n{tail(log_path)}")
        try:
            port = int(port_file.read_text().split()[0])
            log(f"Chromium is up (pid {proc.pid}, DevTools port {port})")
            return proc, port
        except (OSError, ValueError, IndexError):
            time.sleep(0.2)
    stop(proc, "Chromium")
    raise SetupFailed(f"Chromium did not open its DevTools port within {timeout:g} s:\n{tail(log_path)}")


# ----------------------------------------------------------------------------------------- the page

# Per code cell with source: its prompt ("[3]:", "[*]:", "[ ]:"), and its error outputs.
CELLS_JS = r"""
() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell')).map((cell, i) => {
  const code = cell.classList.contains('jp-CodeCell');
  const src = (cell.querySelector('.jp-InputArea-editor .cm-content') || {}).textContent || '';
  const prompt = (cell.querySelector('.jp-InputArea-prompt') || {}).textContent || '';
  const outs = Array.from(cell.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"],' +
      '.jp-OutputArea-output[data-mime-type*="error"], .jp-RenderedText[data-mime-type*="error"]'))
    .map(o => o.textContent);
  return {index: i, code, hasSource: src.trim().length > 0, prompt: prompt.trim(), stderr: outs};
})
"""


def cell_states(page) -> list[dict]:
    return [c for c in page.evaluate(CELLS_JS) if c["code"] and c["hasSource"]]


def wait_until_run(page, lab: Lab, rel: str, timeout: float) -> None:
    """Wait until no cell is queued or running and the kernel is idle (twice in a row, a second apart)."""
    deadline, last_report, calm = time.monotonic() + timeout, 0.0, 0
    while time.monotonic() < deadline:
        cells = cell_states(page)
        running = [c for c in cells if "*" in c["prompt"]]
        done = [c for c in cells if re.search(r"\[\d+\]", c["prompt"])]
        errored = any(TRACEBACK.search(t) for c in cells for t in c["stderr"])
        idle = lab.kernel_state(rel) == "idle"
        finished = not running and idle and (len(done) == len(cells) or errored)
        calm = calm + 1 if finished else 0
        if calm >= 2:
            log(f"run finished: {len(done)}/{len(cells)} code cells executed")
            return
        if time.monotonic() - last_report > 15:
            log(f"running: {len(done)}/{len(cells)} code cells done, kernel {lab.kernel_state(rel)}")
            last_report = time.monotonic()
        time.sleep(1.0)
    raise CheckFailed(f"the notebook did not finish within {timeout:g} s (raise it with --timeout)")


def check_outputs(page) -> None:
    """No error output, no code cell left unrun."""
    problems = []
    for c in cell_states(page):
        for text in c["stderr"]:
            if TRACEBACK.search(text):
                lines = [ln for ln in text.strip().splitlines() if ln.strip()]
                problems.append(f"cell {c['index'] + 1} raised: {lines[-1] if lines else text[:200]}")
            else:
                log(f"note: cell {c['index'] + 1} wrote to stderr: {text.strip()[:200]}")
        if not re.search(r"\[\d+\]", c["prompt"]):
            problems.append(f"cell {c['index'] + 1} was not run (prompt {c['prompt'] or 'empty'})")
    if problems:
        raise CheckFailed("; ".join(problems[:5]))


def check_widgets_render(page, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = page.locator(".jp-OutputArea-output .jupyter-widgets").count()
        text = " ".join(page.locator(".jp-OutputArea-output .jupyter-widgets").all_text_contents()) if n else ""
        if "Error displaying widget" in text:
            raise CheckFailed(f"a widget failed to render: {text[:300]}")
        if n and "Loading widget" not in text:
            log(f"{n} widget elements rendered")
            return
        time.sleep(0.5)
    raise CheckFailed(f"no ipywidgets rendered within {timeout:g} s (is jupyterlab_widgets installed?)")


def check_image_output(page) -> None:
    n = page.evaluate("""() => Array.from(document.querySelectorAll('.jp-OutputArea-output img'))
                           .filter(img => img.complete && img.naturalWidth > 0).length""")
    if not n:
        raise CheckFailed("no image output is shown (no loaded <img> in any output area)")
    log(f"{n} images shown in outputs")


# What the kernel can change in outputs: every widget image, and each output's text without slider readouts
# (which the browser updates by itself).
KERNEL_VIEW_JS = r"""
() => [Array.from(document.querySelectorAll('.jupyter-widgets img')).map(i => i.src).join(' '),
       Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(o => {
         const c = o.cloneNode(true);
         c.querySelectorAll('.widget-readout, .noUi-base, .widget-play').forEach(e => e.remove());
         return c.textContent;
       }).join('|')]
"""
SLIDER_PREFERENCE = (".cxr-latent-t", ".cxr-aug-brightness", "")  # the course's own tools first, then any


def wait_changed(fn, before, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn() != before:
            return True
        time.sleep(0.25)
    return False


def screenshot(page, locator, path: Path) -> None:
    """Scroll the output holding ``locator`` to the top of the notebook view, then save the page."""
    locator.evaluate("e => (e.closest('.jp-OutputArea-output') || e).scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    log(f"screenshot: {path}")


def check_click(page, shot: Path) -> bool:
    """A click on the Turing test's "Real" button changes its score line (the kernel answered)."""
    button = page.locator("button.cxr-turing-real")
    if not button.count():
        return False
    score = page.locator(".cxr-turing-score").first
    before = score.inner_text()
    button.first.scroll_into_view_if_needed()
    button.first.click()
    if not wait_changed(lambda: score.inner_text(), before, 30):
        raise CheckFailed(f"clicking 'Real' did not change the score line ({before!r}): widget comms broken?")
    log(f"click ok: score line {before!r} → {score.inner_text()!r}")
    screenshot(page, button.first, shot)
    return True


def check_slider(page, shot: Path) -> bool:
    """ArrowRight on a slider handle changes its readout, and the kernel redraws an output in response."""
    for cls in SLIDER_PREFERENCE:
        sliders = page.locator(f".jp-OutputArea-output .widget-slider{cls}:has(.noUi-handle):not(.mod-disabled)")
        if sliders.count():
            break
    else:
        return False
    slider = sliders.first
    handle, readout = slider.locator(".noUi-handle").first, slider.locator(".widget-readout").first
    has_readout = readout.count() > 0
    before_text = readout.inner_text() if has_readout else None
    before_view = page.evaluate(KERNEL_VIEW_JS)
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    if has_readout:
        if not wait_changed(lambda: readout.inner_text(), before_text, 10):
            raise CheckFailed(f"ArrowRight on a slider did not change its readout ({before_text!r})")
        log(f"slider ok: readout {before_text!r} → {readout.inner_text()!r}")
    if not wait_changed(lambda: page.evaluate(KERNEL_VIEW_JS), before_view, 30):
        raise CheckFailed("moving a slider changed no image or text in any output: is the kernel answering?")
    log("slider ok: the kernel redrew an output")
    page.wait_for_timeout(500)  # let the new image decode before the screenshot
    screenshot(page, slider, shot)
    return True


def open_notebook(page, lab: Lab, rel: str, timeout: float = 180.0) -> None:
    page.goto(lab.url(f"lab/tree/{rel}?reset&token={lab.token}"), wait_until="domcontentloaded",
              timeout=timeout * 1000)
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(state="visible", timeout=timeout * 1000)
    log("notebook open; waiting for its kernel")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            log(f"dialog: {dialog.first.inner_text()[:200]!r} → accepting")
            page.locator(".jp-Dialog .jp-mod-accept").first.click()
        if lab.kernel_state(rel) == "idle":
            log("kernel idle")
            return
        time.sleep(0.5)
    raise CheckFailed(f"the notebook's kernel did not become idle within {timeout:g} s: {tail(lab.log_path)}")


def menu(page, top: str, entry: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).first.click()
    item = page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{entry}$")).first
    item.wait_for(state="visible", timeout=10_000)
    item.click()
    log(f"{top} → {entry}")


def run_all(page) -> None:
    # Without a click into a cell and Escape (command mode), Run All Cells can do nothing.
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Escape")
    if any(re.search(r"\[\d+\]", c["prompt"]) for c in cell_states(page)):
        # Saved outputs would look like a finished run before this one starts.
        menu(page, "Edit", "Clear Outputs of All Cells")
        page.wait_for_function("() => !/\\[\\d+\\]/.test(Array.from(document.querySelectorAll("
                               "'.jp-Notebook .jp-InputArea-prompt')).map(p => p.textContent).join(' '))",
                               timeout=10_000)
    menu(page, "Run", "Run All Cells")


# ----------------------------------------------------------------------------------------- main


def pick_notebook(arg: str | None) -> Path:
    if arg:
        nb = Path(arg).resolve()
        if not nb.is_file():
            raise SetupFailed(f"no notebook at '{arg}'")
        return nb
    if DEFAULT_NOTEBOOK.is_file():
        return DEFAULT_NOTEBOOK
    log(f"{DEFAULT_NOTEBOOK.relative_to(REPO)} does not exist yet: using {FIXTURE_NOTEBOOK.relative_to(REPO)}")
    return FIXTURE_NOTEBOOK


def check(notebook: Path, out: Path, timeout: float) -> Path:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise SetupFailed("the playwright package is missing: run `make test-browser` (it installs it)") from e
    if not os.access(CHROMIUM, os.X_OK):
        raise SetupFailed(f"{CHROMIUM} is missing: run `make test-browser` (it installs Debian's chromium)")
    root = REPO if REPO in notebook.parents else notebook.parent
    rel = notebook.relative_to(root).as_posix()
    out.mkdir(parents=True, exist_ok=True)
    shot = out / f"{notebook.stem}.png"
    original = notebook.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="cxr-browser-"))
    lab, chromium, t0 = Lab(root, tmp), None, time.monotonic()
    try:
        lab.start()
        chromium, cdp_port = start_chromium(tmp)
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}", timeout=60_000)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda e: log(f"page error: {e}"))
            try:
                open_notebook(page, lab, rel)
                run_all(page)
                wait_until_run(page, lab, rel, timeout)
                check_outputs(page)
                check_widgets_render(page)
                check_image_output(page)
                clicked = check_click(page, shot)
                slid = check_slider(page, out / f"{notebook.stem}-slider.png" if clicked else shot)
                if not (clicked or slid):
                    raise CheckFailed("no Turing-test button and no slider to interact with in the notebook")
            except Exception:
                try:
                    page.screenshot(path=str(out / f"{notebook.stem}-failure.png"))
                    log(f"screenshot of the failure: {out / (notebook.stem + '-failure.png')}")
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
                raise
            finally:
                browser.close()
    finally:
        stop(chromium, "Chromium")
        lab.stop()
        if notebook.read_bytes() != original:  # autosave is off; this is a second line of defence
            notebook.write_bytes(original)
            log(f"restored {rel} (the browser session had modified it)")
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"passed in {time.monotonic() - t0:.0f} s; screenshot: {shot}")
    return shot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", nargs="?", help="notebook to run (default: notebook 06, else the fixture)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed for Run All (default 900)")
    ap.add_argument("--out", default=str(REPO / "runs" / "browser"), help="screenshot folder")
    args = ap.parse_args(argv)
    try:
        notebook = pick_notebook(args.notebook)
        log(f"notebook: {notebook}")
        check(notebook, Path(args.out), args.timeout)
    except SetupFailed as e:
        print(f"test-browser: setup failed: {e}", file=sys.stderr)
        return 2
    except CheckFailed as e:
        print(f"test-browser: FAILED: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a Playwright timeout and the like: its message (with Playwright's call log)
        lines = str(e).strip().splitlines()[:8]
        print(f"test-browser: FAILED: {type(e).__name__}: " + "\n  ".join(lines), file=sys.stderr)
        return 1
    print("test-browser: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
