"""``python -m cxrlib <command>`` — the command line (usage: the README's "Training from the command line").

Every command has ``--help``; bad input ends with one line ``error: …`` on stderr and exit status 2,
never a traceback (set ``CXRLIB_DEBUG=1`` to see one). So do running out of memory and a device torch cannot
use (``_known_failure``: the line says what to change); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

ON_ERROR_HELP = "what to do with an unreadable file: stop naming it (raise, default) or skip it and count it"


def _add_on_error(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise", help=ON_ERROR_HELP)


# --------------------------------------------------------------------------- data commands
def _cmd_phantom(args) -> int:
    from cxrlib.phantom import write_phantoms

    summary = write_phantoms(
        args.out, n=args.n, size=args.size, seed=args.seed,
        pneumonia_fraction=args.pneumonia_fraction, masks=args.masks, severity=_severity_range(args.severity),
    )
    print(summary)
    return 0


def _severity_range(text):
    """``--severity``: ``LO-HI`` (e.g. ``0.2-0.5``) or one number; None when not given."""
    from cxrlib.errors import CxrError

    if text is None:
        return None
    parts = text.strip().split("-")
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2):
        raise CxrError(f"--severity must be LO-HI with 0 < LO <= HI <= 1 (e.g. 0.2-0.5) or one number, got {text!r}")
    return vals[0] if len(vals) == 1 else tuple(vals)


def _print_warnings(fn, *a, **kw):
    """Run ``fn`` and show its warnings (skipped files, multi-frame DICOMs) as ``warning: …`` lines on
    stderr instead of Python's file:line format."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*a, **kw)
    for w in caught:
        if not issubclass(w.category, DeprecationWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    return result


def _cmd_inspect(args) -> int:
    from cxrlib.data import inspect_folder

    print(_print_warnings(inspect_folder, args.dir))
    return 0


def _cmd_prepare(args) -> int:
    from cxrlib.data import prepare_folder

    print(_print_warnings(prepare_folder, args.src, args.dst, size=args.size, on_error=args.on_error, crop=args.crop))
    return 0


def _cmd_augment(args) -> int:
    from cxrlib.augment import augment_folder

    summary = _print_warnings(
        augment_folder, args.src, args.dst, copies=args.copies, seed=args.seed, on_error=args.on_error
    )
    print(summary)
    return 0


# --------------------------------------------------------------------------- training commands
def _data_folder(source, flag: str = "--data"):
    from pathlib import Path

    from cxrlib.errors import CxrError

    path = Path(source)
    if not path.exists():
        raise CxrError(f"data folder '{source}' does not exist (give a folder of images, or 'phantom')")
    if not path.is_dir():
        raise CxrError(f"{flag} '{source}' is not a folder (give a folder of images, or 'phantom')")
    return path


def _training_data(source: str, size: int, n_images: int | None, on_error: str = "raise", family: str = "",
                   masks: str | None = None, data_b: str | None = None, mmap=None, progress: bool = False):
    """``--data``: ``phantom`` (generated now, seed 0) or a folder tree of images → ImageSet at ``size`` px.
    pix2pix: with its masks (``--masks``, default DATA/masks); cyclegan with ``--data-b``: two folders.
    mmap: ``--memmap`` (True) or None (memory-mapped when large). Under torchrun rank 0 decodes and caches
    the data first; the other processes then read its cache."""
    from cxrlib import distributed

    def load():
        return _load_training_data(source, size, n_images, on_error, family, masks, data_b, mmap,
                                   progress and distributed.is_writer())

    if distributed.world_size() == 1:
        return load()
    data = load() if distributed.is_writer() else None
    distributed.barrier()
    return data if data is not None else load()


def _load_training_data(source, size, n_images, on_error, family, masks, data_b, mmap, progress):
    from cxrlib.config import TrainConfig
    from cxrlib.data import _take, load_dataset, load_unpaired
    from cxrlib.engine.families import FAMILIES
    from cxrlib.errors import CxrError

    kind = FAMILIES[family or TrainConfig.family]  # an older run's config may not name its family
    paired = kind.needs_masks
    if masks is not None and not paired:
        raise CxrError("--masks gives the input masks of --family pix2pix")
    if data_b is not None and not kind.needs_domains:
        raise CxrError("--data-b gives the second domain of --family cyclegan")
    if str(source).lower() == "phantom":
        if masks is not None or data_b is not None:
            raise CxrError("phantoms bring their own masks and classes: drop --masks/--data-b with --data phantom")
        return load_dataset("phantom", size=size, n=n_images, seed=0, mmap=mmap, **({"masks": True} if paired else {}))
    path = _data_folder(source)
    if data_b is not None:
        data = _print_warnings(load_unpaired, path, _data_folder(data_b, "--data-b"), size=size, on_error=on_error)
        return _take(data, n_images, 0)
    kw = {"masks": True, "masks_dir": masks} if paired else {"mmap": mmap, "progress": progress}
    return _print_warnings(load_dataset, path, size=size, n=n_images, on_error=on_error, **kw)


def _parse_sets(pairs) -> dict:
    """``--set key=value`` → {key: value}; values are read as JSON when they parse (0.5, true, [0, 0.99])."""
    import json

    from cxrlib.errors import CxrError

    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CxrError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _length(args) -> dict:
    """--steps / --minutes → config fields (the one given rules alone)."""
    if args.steps is not None:
        return {"steps": args.steps, "minutes": None}
    if args.minutes is not None:
        return {"steps": None, "minutes": args.minutes}
    return {}


def _run_config(out) -> dict:
    """The config of the run in ``out`` (its config.json, else its last checkpoint)."""
    import json
    from pathlib import Path

    from cxrlib.train import load_checkpoint

    path = Path(out) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return load_checkpoint(Path(out) / "checkpoints" / "last.pt")["config"]


def _check_fresh(out) -> None:
    from pathlib import Path

    from cxrlib.errors import CxrError

    last = Path(out) / "checkpoints" / "last.pt"
    if last.exists():
        raise CxrError(f"'{out}' already holds a run ({last}); add --resume to continue it, or choose another --out")


def _config_file(source) -> tuple[dict, str]:
    """``train --config FILE``: the training options saved in a JSON file (a run's ``config.json``, or the run
    folder holding one) → (options, the file's name for messages). Every problem with the file is one
    ``CxrError`` naming it and the reason; ``classes`` and ``structures`` are left out (the data decides them)."""
    import dataclasses
    import json
    from pathlib import Path

    from cxrlib.config import TrainConfig, renamed_fields
    from cxrlib.errors import CxrError

    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    where = f"--config '{path}'"
    if path.suffix.lower() in (".yaml", ".yml"):
        raise CxrError(f"{where}: YAML is not read here; give a JSON file such as a run's config.json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CxrError(f"{where}: no such file (give a run's config.json, or its run folder)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CxrError(f"{where}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        saved = json.loads(text)
    except ValueError as e:
        raise CxrError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(saved, dict):
        raise CxrError(f"{where}: expected a JSON object of training options, got a {type(saved).__name__}")
    try:
        saved = renamed_fields(saved)  # a run saved before a rename (r1_every → reg_every) still loads
    except CxrError as e:
        raise CxrError(f"{where}: {e}") from None
    saved.pop("privacy", None)  # a DP-SGD run's record of what it spent, not an option
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise CxrError(f"{where}: unknown training option(s) {', '.join(unknown)}")
    return {k: v for k, v in saved.items() if k not in ("classes", "structures")}, where


def _saved_config(args, overrides: dict) -> tuple[str | None, dict]:
    """``train --config FILE`` → (its preset, its other options), checked on their own (a bad value is the
    file's fault, named as such) before the flags override them; a ``--preset`` other than the file's is
    refused (the file holds that preset's whole recipe)."""
    from cxrlib.config import make_config
    from cxrlib.errors import CxrError

    options, where = _config_file(args.config)
    preset = options.pop("preset", None)
    try:
        make_config(preset or "course", **options)
    except (CxrError, TypeError, ValueError) as e:
        raise CxrError(f"{where}: {e}") from None
    if args.preset is not None and preset is not None and make_config(args.preset).preset != make_config(preset).preset:
        raise CxrError(f"--preset {args.preset} differs from the preset {preset!r} of {where}, whose whole recipe "
                       "the file holds: drop --preset, or change single options with --set")
    if "device" in options and "device" not in overrides:
        _check_device(options["device"], f"{where} asks for device '{options['device']}' (--device overrides it)")
    return preset, options


def _device_problem(device) -> str | None:
    """Why the device string ``device`` cannot be used on this machine, in words, or None (``auto``, a usable
    device, or a kind this check does not know: torch then decides)."""
    import torch

    if device in (None, "auto"):
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return "not a device name: use auto, cpu, cuda, cuda:N or mps"
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "torch finds no usable NVIDIA GPU"
            return f"{why} here: use auto or cpu"
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            return f"this machine has {n} CUDA GPU{'s' if n != 1 else ''}: use cuda:0" + (f" to cuda:{n - 1}" if n > 1 else "")
    if d.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "Apple's MPS is not available here: use auto or cpu"
    return None


def _check_device(device, what: str | None = None) -> None:
    """``CxrError`` in one line when ``device`` cannot be used here; ``what`` names where it came from (default
    ``--device DEVICE``)."""
    from cxrlib.errors import CxrError

    why = _device_problem(device)
    if why:
        raise CxrError(f"{what or f'--device {device}'}: {why}")


#: what to change when memory runs out, by command (the others: the generic line)
_MEMORY_HINTS = {
    "train": "use a smaller --batch or --size (or --memmap when the data set is larger than memory)",
    "finetune": "use a smaller batch (--set batch=N) or --memmap",
    "bench": "use a smaller --batch or --sizes",
    "evaluate": "compare smaller images (--size) or fewer of them",
}
#: the first words of torch's errors when a device cannot be used at all (wrong name, no driver, a build for
#: other GPUs); any other error is a bug and keeps its traceback
_DEVICE_ERRORS = (
    "Expected one of cpu, cuda", "Invalid device string", "Found no NVIDIA driver", "Torch not compiled with CUDA",
    "No CUDA GPUs are available", "invalid device ordinal", "CUDA-capable device(s) is/are busy or unavailable",
    "no kernel image is available", "is not linked with support for mps",
)


def _known_failure(e: BaseException, args) -> str | None:
    """One line for an exception that is not a bug but the machine's limit or setting (out of memory, a device
    torch cannot use), saying what to change; None for anything else (it keeps its traceback)."""
    torch = sys.modules.get("torch")
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    first = first if len(first) <= 200 else first[:197] + "..."
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),) if t is not None)
    lower = text.lower()
    if isinstance(e, MemoryError) or (oom_types and isinstance(e, oom_types)) or (
        isinstance(e, RuntimeError) and ("out of memory" in lower or "can't allocate memory" in lower
                                         or "defaultcpuallocator: not enough memory" in lower)):
        hint = _MEMORY_HINTS.get(getattr(args, "command", None), "close what else uses this memory, or use less data")
        return f"out of memory ({first}): {hint}"
    if isinstance(e, (RuntimeError, AssertionError)) and any(m in text for m in _DEVICE_ERRORS):
        change = "choose another --device (auto, cpu)" if hasattr(args, "device") else "run on the CPU"
        return f"the device cannot be used ({first}): {change}, or hide the GPUs with CUDA_VISIBLE_DEVICES=''"
    return None


def _cmd_train(args) -> int:
    from pathlib import Path

    from cxrlib import distributed
    from cxrlib.engine.state import claimed

    _check_device(args.device)
    distributed.init(args.device or "auto")  # under torchrun: join the other processes first
    # RUN/.lock held by rank 0 from before anything is written to --out until the command ends
    with claimed(Path(args.out), distributed.is_writer(), distributed.world_size()):
        return _train(args)


def _train(args) -> int:
    from pathlib import Path

    from cxrlib import models
    from cxrlib.config import FAMILY_CHOICES, TrainConfig, budget, family_preset, make_config
    from cxrlib.engine.families import FAMILIES
    from cxrlib.errors import CxrError
    from cxrlib.train import Trainer

    out = Path(args.out)
    callbacks = _tensorboard(args, out)
    overrides = {**_parse_sets(args.set), **_length(args)}
    for key in ("batch", "seed", "checkpoint_every", "log_every", "sample_every", "amp", "device", "dp_epsilon",
                "dp_delta", "dp_max_grad_norm"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if overrides.get("dp_epsilon") is not None:  # before any data is read: without Opacus, one line
        from cxrlib.gan import dp

        dp.require_opacus()
    if args.resume:
        if args.config:
            raise CxrError("--config starts a new run from a saved config; --resume continues the run in --out with "
                           "its own: give one")
        if not (out / "checkpoints" / "last.pt").exists():
            raise CxrError(f"nothing to resume: '{out / 'checkpoints' / 'last.pt'}' does not exist")
        saved = _run_config(out)
        for key in ("size", "preset"):
            given = getattr(args, key)
            if given is not None and given != saved[key]:
                raise CxrError(f"--{key} {given} differs from the run's {key} {saved[key]} in '{out}'")
        FAMILIES[saved.get("family") or TrainConfig.family].check_available()  # before reading any data
        if saved.get("dp_epsilon") is not None:  # a private run's accountant: without Opacus, one line, no data read
            from cxrlib.gan import dp

            dp.require_opacus()
        data = _training_data(args.data, saved["size"], args.n_images, args.on_error, saved.get("family", ""),
                              args.masks, args.data_b, _memmap(args), not args.quiet)
        trainer = Trainer.resume(out, data, callbacks=callbacks, **overrides)
        if trainer.writer:
            print(f"resuming '{out}' at step {trainer.step}", flush=True)
    else:
        _check_fresh(out)
        saved_preset, saved = _saved_config(args, overrides) if args.config else (None, {})
        size = models.check_size(args.size or saved.get("size") or budget().size)
        if "steps" not in overrides and not ({"steps", "minutes"} & set(saved)):
            overrides["steps"] = budget().steps
        family = args.family or ("conditional" if args.conditional else  # --conditional: --family conditional
                                 overrides.get("family", saved.get("family", TrainConfig.family)))
        if args.conditional and family != "conditional":
            raise CxrError(f"--conditional and --family {family} contradict each other: give one")
        if family not in FAMILIES:
            raise CxrError(f"unknown GAN family {family!r} (choose one of {', '.join(FAMILY_CHOICES)})")
        FAMILIES[family].check_available()  # an optional package it needs (diffusion: diffusers), before any data
        overrides["family"] = family
        if args.balanced:
            if not FAMILIES[family].takes_labels:
                raise CxrError("--balanced draws classes of a conditional GAN: add --conditional")
            overrides["class_sampling"] = "balanced"
        if args.domains is not None:
            if not FAMILIES[family].needs_domains:
                raise CxrError("--domains names the two domains of --family cyclegan")
            overrides["domains"] = tuple(d.strip() for d in args.domains.split(","))
        preset = args.preset or saved_preset or family_preset(family) or TrainConfig.preset
        # on a CPU, networks measured to work in its time (e.g. CycleGAN's); every flag, --set and --config wins
        recipe = {k: v for k, v in budget().recipe(preset).items() if k not in saved and k not in overrides}
        cfg = make_config(preset, **{**recipe, **saved, **overrides, "size": size})
        if "device" in overrides and args.device is None:
            _check_device(cfg.device, f"--set device={cfg.device}")
        data = _training_data(args.data, size, args.n_images, args.on_error, family, args.masks, args.data_b,
                              _memmap(args), not args.quiet)
        trainer = Trainer(cfg, data, out=out, callbacks=callbacks)
        if recipe and trainer.writer:
            print(_recipe_line(budget().kind, preset, recipe), flush=True)
    _announce(trainer, data)
    try:
        trainer.fit(progress=not args.quiet)
    finally:  # also on a stop (SIGINT/SIGTERM) or a NaN: the events written so far stay readable
        for cb in callbacks:
            cb.close()
    if trainer.writer:
        spent = "" if trainer.dp is None else f" · privacy spent ε = {trainer.dp.spent():.3g} at δ = {trainer.dp.delta:.3g}"
        print(f"done: step {trainer.step}{spent} · checkpoint {out / 'checkpoints' / 'last.pt'} · samples "
              f"{out / 'samples'} · log {out / 'log.jsonl'}")
    return 0


def _recipe_line(kind: str, preset: str, recipe: dict) -> str:
    """One line: what the budget changed in the preset's recipe, and the flags that put the preset's own back."""
    import json

    from cxrlib.config import make_config

    def flags(fields):
        return " ".join(f"--set '{k}={json.dumps(v)}'" for k, v in fields.items())

    own = {k: getattr(make_config(preset), k) for k in recipe}
    return (f"{kind} budget: preset {preset!r} with its CPU networks, {flags(recipe)} (the preset's own: "
            f"{flags(own)})")


def _tensorboard(args, out) -> list:
    """``--tensorboard``: the callback writing the run's curves and grids into ``out`` (checked before any data is
    read: without the package, one line saying how to install it)."""
    if not getattr(args, "tensorboard", False):
        return []
    from cxrlib.board import TensorBoard

    return [TensorBoard(out)]


def _add_private(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dp-epsilon", type=float, metavar="E", help="differentially private training (DP-SGD on D; G is "
                   "private by post-processing): the run spends at most privacy ε = E at δ; turns R1, ADA and the "
                   "course D's minibatch-std off, refuses what it cannot carry (BatchNorm D, pix2pix, cyclegan), and "
                   "refuses to start (or resume) steps the budget cannot pay for. ε spent: log.jsonl, config.json, "
                   "checkpoint (pip install \"cxrlib[privacy]\")")
    p.add_argument("--dp-delta", type=float, metavar="D", help="δ of the guarantee (default 1 / the training images)")
    p.add_argument("--dp-max-grad-norm", type=float, metavar="C", help="clip each real image's gradient of D to norm "
                   "C (default 1)")


def _add_tensorboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tensorboard", action="store_true", help="also log the curves and sample grids for "
                   "TensorBoard into --out (pip install \"cxrlib[tensorboard]\"; view: tensorboard --logdir runs)")


def _memmap(args):
    """``--memmap``: True (keep the decoded pixels memory-mapped); absent: None (chosen by size)."""
    return True if getattr(args, "memmap", False) else None


def _announce(trainer, data) -> None:
    from cxrlib.config import TrainConfig

    if not trainer.writer:
        return
    cfg = trainer.cfg
    amp = "bf16" if trainer.amp_dtype is not None else "fp32"
    length = " and ".join(x for x in (f"{cfg.steps} steps" if cfg.steps is not None else "",
                                      f"{cfg.minutes:g} min" if cfg.minutes else "") if x)
    what = data.describe() if hasattr(data, "describe") else f"{len(data)} images"
    family = f"{cfg.family} " if cfg.family != TrainConfig.family else ""  # the default family goes unnamed
    where = trainer.device.type
    if trainer.world > 1:
        where = f"{trainer.world} processes ({trainer.device.type}, {trainer.batch} images each)"
    elif trainer.on_host:
        where += ", batches copied from host memory"
    print(f"training {family}preset {cfg.preset!r} at {cfg.size}px, batch {cfg.batch}, up to {length} on "
          f"{where} ({amp}) · {what} → {trainer.out}", flush=True)
    if trainer.dp is not None:
        print(trainer.dp, flush=True)


def _cmd_finetune(args) -> int:
    from pathlib import Path

    from cxrlib import distributed
    from cxrlib.config import budget
    from cxrlib.train import Trainer, load_checkpoint

    distributed.init("auto")
    out = Path(args.out)
    callbacks = _tensorboard(args, out)
    state = load_checkpoint(args.ckpt)
    _check_fresh(out)
    length = _length(args) or {"steps": budget().steps, "minutes": None}
    data = _training_data(args.data, state["config"]["size"], args.n_images, args.on_error, mmap=_memmap(args),
                          progress=not args.quiet)
    trainer = Trainer.finetune(state, data, out=out, lr_scale=args.lr_scale, d_lr_scale=args.d_lr_scale,
                               adaptive=args.adaptive, callbacks=callbacks, **length, **_parse_sets(args.set))
    _announce(trainer, data)
    try:
        trainer.fit(progress=not args.quiet)
    finally:  # as train: the events written so far stay readable after a stop or an error
        for cb in callbacks:
            cb.close()
    if trainer.writer:
        print(f"done: step {trainer.step} · checkpoint {out / 'checkpoints' / 'last.pt'} · samples {out / 'samples'}")
    return 0


def _cmd_sample(args) -> int:
    from cxrlib.train import write_samples

    if args.n is None and args.per_class is None:
        from cxrlib.errors import CxrError

        raise CxrError("give --n N (images) or --per-class N (N of every class of a conditional generator)")
    print(write_samples(args.ckpt, args.n, args.out, seed=args.seed, ema=not args.no_ema, label=args.class_,
                        per_class=args.per_class, truncation=args.truncation, mix_seed=args.mix_seed,
                        mix_layers=args.mix_layers, steps=args.steps))
    return 0


def _cmd_translate(args) -> int:
    from cxrlib.translation import translate_folder

    print(_print_warnings(translate_folder, args.ckpt, args.src, args.dst, args.direction, masks_dir=args.masks,
                          on_error=args.on_error, ema=not args.no_ema))
    return 0


def _cmd_bench(args) -> int:
    from cxrlib.config import get_device
    from cxrlib.train import throughput

    _check_device(args.device)
    gpu = get_device(args.device).type == "cuda"
    sizes = args.sizes or ([32, 64] if args.quick else ([64, 128, 256, 512] if gpu else [64, 128]))
    steps = args.steps or (2 if args.quick else (20 if gpu else 5))
    print(f"{'preset':<8} {'size':>5} {'batch':>5} {'amp':>5} {'images/s':>9} {'ms/step':>9}")
    for preset in args.presets:
        for size in sizes:
            r = throughput(preset, size, batch=args.batch, steps=steps, warmup=1 if args.quick else 3,
                           amp=args.amp, device=args.device)
            print(f"{preset:<8} {size:>5} {r['batch']:>5} {r['amp']:>5} {r['images_per_s']:>9.1f} "
                  f"{r['ms_per_step']:>9.1f}", flush=True)
    return 0


def _cmd_demo(args) -> int:
    """Phantoms → the course preset for about 3 minutes (CXRLIB_SMOKE=1: ~20 s) → samples and loss curves."""
    import shutil
    from pathlib import Path

    from cxrlib import viz
    from cxrlib.config import budget, make_config
    from cxrlib.data import load_dataset
    from cxrlib.train import Trainer

    b = budget()
    out = Path(args.out)
    if (out / "config.json").exists():  # a previous demo: start it over (only the run's own files go)
        for sub in ("checkpoints", "samples"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("log.jsonl", "config.json", "samples.png", "losses.png"):
            (out / name).unlink(missing_ok=True)
    # the demo is "what 3 minutes of this machine make"; the smoke budget's is its step count (CI: seconds)
    steps = b.steps if (b.kind == "smoke" and not args.minutes) else None
    minutes = args.minutes or (b.minutes if b.kind == "smoke" else 3.0)
    data = load_dataset("phantom", size=b.size, n=b.n_images, seed=0)
    cfg = make_config("course", size=b.size, batch=b.batch, steps=steps, minutes=minutes,
                      log_every=5 if b.kind == "smoke" else 25, sample_every=10**9, checkpoint_every=10**9)
    trainer = Trainer(cfg, data, out=out)
    _announce(trainer, data)
    trainer.fit(progress=True)
    grid = trainer.save_samples(out / "samples.png")
    fig = viz.plot_log(out)
    curves = out / "losses.png"
    fig.savefig(curves, dpi=100, bbox_inches="tight")
    print(f"demo done after {trainer.step} steps ({trainer.seconds / 60:.1f} min): samples {grid} · "
          f"loss curves {curves} · checkpoint {out / 'checkpoints' / 'last.pt'}")
    return 0


# --------------------------------------------------------------------------- evaluation
def _first_image_size(root) -> tuple[int, int] | None:
    """(width, height) of the first readable image under ``root`` (header only where Pillow can), or None."""
    from PIL import Image

    from cxrlib.data import list_images, read_image

    for path in list_images(root).files[:50]:
        try:
            with Image.open(path) as im:
                return im.size
        except Exception:  # DICOM or an unreadable file: decode it properly, or try the next one
            try:
                h, w = read_image(path).shape[:2]
                return w, h
            except Exception:
                continue
    return None


def _evaluate_size(args) -> int:
    """The side all sets are loaded at: ``--size``, else the fake images' own size, which every other
    folder must share (comparing 64 px fakes with 1024 px X-rays silently resized would hide a mistake)."""
    from cxrlib.errors import CxrError

    if args.size:
        return args.size
    sizes = {}
    for flag in ("fake", "real", "train", "holdout"):
        folder = getattr(args, flag)
        if folder is not None:
            sizes[flag] = (_first_image_size(folder), folder)
    fake_size, fake_dir = sizes["fake"]
    if fake_size is None:
        raise CxrError(f"no readable images in '{fake_dir}'")
    for flag, (size, folder) in sizes.items():
        if size is not None and size != fake_size:
            raise CxrError(
                f"--{flag} images are {size[0]}x{size[1]} px ('{folder}') but --fake images are "
                f"{fake_size[0]}x{fake_size[1]} px: pass --size {fake_size[0]} to resize every set to one size"
            )
    if fake_size[0] != fake_size[1]:
        raise CxrError(f"--fake images are {fake_size[0]}x{fake_size[1]} px, not square: pass --size S")
    return fake_size[0]


def _cmd_evaluate(args) -> int:
    import json

    from cxrlib import metrics
    from cxrlib.data import load_images
    from cxrlib.files import atomic_write

    size = _evaluate_size(args)
    sets = {}
    for flag in ("real", "fake", "train", "holdout"):
        folder = getattr(args, flag)
        if folder is not None:
            # fakes change from run to run: never worth caching; real/train are read again and again
            sets[flag] = _print_warnings(load_images, folder, size, on_error=args.on_error, cache=flag != "fake")
    images = {k: v.images for k, v in sets.items()}
    result = metrics.evaluate(
        images["real"], images["fake"], images.get("train"), holdout=images.get("holdout"), seed=args.seed,
        fid_weights=args.fid_weights,
    )
    real, fake = sets["real"], sets["fake"]
    if len(real.classes) > 1 and len(fake.classes) > 1:  # class sub-folders on both sides: SWD per class too
        result["per_class_swd"] = metrics.per_class_swd(real.images, real.labels, real.classes, fake.images,
                                                        fake.labels, fake.classes, seed=args.seed)
    result["folders"] = {k: str(getattr(args, k)) for k in sets}
    print(metrics.summary_table(result))
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        print(f"wrote {atomic_write(args.json, lambda tmp: tmp.write_text(text))}")
    if args.report:
        from cxrlib import viz

        fig = viz.evaluation_report(images["real"], images["fake"], result, images.get("train"))
        print(f"wrote {atomic_write(args.report, lambda tmp: fig.savefig(tmp, format='png', dpi=100))}")
    return 0


def _cmd_privacy(args) -> int:
    import json

    from cxrlib import privacy
    from cxrlib.data import load_images
    from cxrlib.errors import CxrError
    from cxrlib.files import atomic_write

    cfg = privacy.checkpoint_config(args.ckpt)  # another family: refused before any folder is read
    sets = {}
    for flag, folder in (("members", args.members), ("nonmembers", args.nonmembers)):
        size = _first_image_size(folder)  # a missing folder or one without images: load_images says which
        if size is not None and size != (cfg.size, cfg.size) and not args.resize:
            raise CxrError(f"--{flag} images are {size[0]}x{size[1]} px ('{folder}') but the generator draws "
                           f"{cfg.size}x{cfg.size} px: pass --resize to load them at {cfg.size} px, as training did")
        sets[flag] = _print_warnings(load_images, folder, cfg.size, on_error=args.on_error)
    n = {} if args.n_generated is None else {"n_generated": args.n_generated}
    result = privacy.audit_checkpoint(args.ckpt, sets["members"], sets["nonmembers"], seed=args.seed,
                                      subsample=args.subsample, ema=not args.no_ema, **n)
    result["folders"] = {"members": str(args.members), "nonmembers": str(args.nonmembers)}
    print(privacy.format_report(result))
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        print(f"wrote {atomic_write(args.json, lambda tmp: tmp.write_text(text))}")
    return 0


def _add_length(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="training iterations (default: the budget's)")
    g.add_argument("--minutes", type=float, help="train for this many minutes of wall-clock instead")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-images", type=int, help="use N images (phantom: generate N; default: the budget's)")
    p.add_argument("--memmap", action="store_true",
                   help="keep the decoded images memory-mapped in the cache file instead of in memory (data larger "
                   "than memory; default: chosen by size, see $CXRLIB_MEMMAP_BYTES)")
    p.add_argument("--log-every", type=int, help="steps between lines of log.jsonl")
    p.add_argument("--sample-every", type=int, help="steps between sample grids")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), help="bf16 autocast: auto (where fast), bf16, off")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other training option, e.g. --set r1_gamma=0.5 --set augment=translation "
                   "--set loss=hinge (bce, hinge, lsgan, rpgan, wgan-gp; denoising is the diffusion family's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_on_error(p)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cxrlib", description="cxr-gan: synthetic chest X-rays with a GAN, from data to audit."
    )
    from cxrlib import __version__

    parser.add_argument("--version", action="version", version=f"cxrlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from cxrlib.config import FAMILY_CHOICES, PRESET_ALIASES, PRESETS

    p = sub.add_parser("phantom", help="write procedural phantom chest X-rays (offline data set)")
    p.add_argument("--out", required=True, help="folder to create (normal/, pneumonia/, manifest.csv)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--size", type=int, default=256, help="image side in px, 32–1024 (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same images")
    p.add_argument("--pneumonia-fraction", type=float, default=0.5, help="share of pneumonia images (0–1)")
    p.add_argument("--masks", action="store_true", help="also write anatomy masks under masks/")
    p.add_argument("--severity", metavar="LO-HI",
                   help="milder pneumonia: each ill image's patch area and density as a share of the default, "
                        "drawn from LO-HI within (0, 1], e.g. 0.2-0.5 (default: the default look, 1)")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("inspect", help="report what a folder of images/DICOMs holds, and every unreadable file")
    p.add_argument("dir", help="folder to inspect")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("prepare", help="convert any supported images/DICOMs to clean square grayscale PNGs")
    p.add_argument("--src", required=True, help="source folder (never written to)")
    p.add_argument("--dst", required=True, help="destination folder (class sub-folders kept)")
    p.add_argument("--size", type=int, required=True, help="output side in px")
    p.add_argument(
        "--crop", choices=("center", "pad", "stretch"), default="center",
        help="non-square images: resize the shorter side and centre-crop (default), letterbox, or stretch",
    )
    _add_on_error(p)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("augment", help="the original project's offline augmentation: brightness, contrast, JPEG quality")
    p.add_argument("--src", required=True, help="source folder (never written to)")
    p.add_argument("--dst", required=True, help="destination folder, outside the source")
    p.add_argument("--copies", type=int, required=True, help="augmented copies per original (K)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _add_on_error(p)
    p.set_defaults(func=_cmd_augment)

    p = sub.add_parser("train", help="train a GAN → RUN/config.json, log.jsonl, checkpoints/, samples/")
    p.add_argument("--data", required=True, help="folder of images/DICOMs (class = first sub-folder), or 'phantom'")
    p.add_argument("--out", required=True, help="run directory to create (or to continue with --resume)")
    p.add_argument("--size", type=int, help="image side in px, a power of two 32–512 (default: the budget's)")
    p.add_argument("--preset", choices=(*PRESETS, *PRESET_ALIASES),
                   help="recipe and networks (default course; an image-to-image family brings its own)")
    p.add_argument("--family", choices=FAMILY_CHOICES,
                   help="GAN family: unconditional (default), conditional, pix2pix (masks → X-ray, needs masks), "
                        "cyclegan (between two classes or folders, unpaired; on a CPU the shipped CycleGAN's networks, "
                        "width 0.25, U-Net G, ndf 128: --set width=1 --set 'model_kwargs={}' for the paper's), or "
                        "diffusion: not a GAN but a small DDPM to measure one against (pip install \"cxrlib[diffusion]\"; "
                        "--set width=W scales its U-Net)")
    p.add_argument("--masks", metavar="DIR", help="pix2pix: the mask folder, masks/<structure>/<image stem>.png "
                   "(default DATA/masks)")
    p.add_argument("--domains", metavar="A,B", help="cyclegan: the two classes of --data to translate between "
                   "(default: its two classes in sorted order, e.g. normal,pneumonia)")
    p.add_argument("--data-b", metavar="DIR", help="cyclegan: a second folder as domain B (--data is then A)")
    _add_length(p)
    p.add_argument("--batch", type=int, help="batch size (default: the preset's); under torchrun the global batch, "
                   "shared out among the processes")
    p.add_argument("--seed", type=int, help="random seed: same seed and data, same run (default 0)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints/step_XXXXXX.pt")
    p.add_argument("--conditional", action="store_true",
                   help="a conditional GAN: G(z, class) and a projection D; the classes are --data's sub-folders "
                   "(e.g. normal/ and pneumonia/, or NORMAL/ and PNEUMONIA/)")
    p.add_argument("--balanced", action="store_true",
                   help="with --conditional: draw every class equally often (default: the data's class shares)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--config", metavar="FILE", help="start a new run from a saved config: a run's config.json (or "
                   "its run folder); the flags given here override its options")
    _add_private(p)
    _add_tensorboard(p)
    _add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune", help="continue from a checkpoint with lower learning rates (the original project's phase 2)")
    p.add_argument("--ckpt", required=True, help="checkpoint to start from (e.g. RUN/checkpoints/last.pt, or "
                   "'pretrained': the course generator shipped with cxrlib)")
    p.add_argument("--data", required=True, help="folder of images, or 'phantom'")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--lr-scale", type=float, default=0.5,
                   help="G's learning rate × F (default 0.5: the original project's 1e-4 → 5e-5)")
    p.add_argument("--d-lr-scale", type=float, default=1.0, help="D's learning rate × F (default 1: the original project kept 1e-4)")
    p.add_argument("--adaptive", action="store_true",
                   help="halve both learning rates when the SWD of EMA samples to held-out images stops improving")
    _add_length(p)
    _add_tensorboard(p)
    p.set_defaults(func=_cmd_finetune)
    p.add_argument("--n-images", type=int, help="use N images (phantom: generate N; default: the budget's)")
    p.add_argument("--memmap", action="store_true",
                   help="keep the decoded images memory-mapped in the cache file instead of in memory (data larger "
                   "than memory; default: chosen by size, see $CXRLIB_MEMMAP_BYTES)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other training option")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_on_error(p)

    p = sub.add_parser("sample", help="write samples from a checkpoint's (EMA) generator as PNGs")
    p.add_argument("--ckpt", required=True, help="checkpoint file, run directory, 'pretrained' (the course "
                   "generator shipped with cxrlib, 64-px phantoms), 'pretrained-conditional' (its conditional "
                   "twin: normal / pneumonia) or 'pretrained-style' (a style-based generator: --truncation, --mix-*)")
    p.add_argument("--n", type=int, help="number of images")
    p.add_argument("--out", required=True, help="folder for sample_XXXXX.png (with --per-class: OUT/<class>/)")
    p.add_argument("--class", dest="class_", metavar="CLASS",
                   help="conditional generator: draw this class (name, e.g. pneumonia, or index)")
    p.add_argument("--per-class", type=int, metavar="N", help="conditional generator: N images of every class")
    p.add_argument("--seed", type=int, default=0, help="latent seed: the same seed gives the same images")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its EMA")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                   help="style generator: the truncation trick, w = w_avg + PSI·(w − w_avg), PSI in (0, 1] "
                   "(lower: more typical, less varied images; default 1 = off)")
    p.add_argument("--mix-seed", type=int, metavar="K",
                   help="style generator: style mixing -- the layers of --mix-layers take their w from latents of "
                   "seed K (image i mixes latent i of --seed with latent i of K)")
    p.add_argument("--mix-layers", metavar="I-J",
                   help="style layers taken from --mix-seed, e.g. 0-2 (coarse: anatomy) or 7-9 (fine: texture at "
                   "64 px); default with --mix-seed: the coarse layers")
    p.add_argument("--steps", type=int, metavar="K",
                   help="diffusion model: DDIM denoising steps, each one pass of its U-Net (default: the model's, 50; "
                   "fewer are faster; what that costs in quality, evaluate measures); K must divide the 1,000 noise "
                   "levels (e.g. 10, 20, 25, 40, 50, 100, 250); a GAN draws in one pass and refuses it")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("translate", help="translate a folder with a pix2pix (masks → X-ray) or cyclegan run")
    p.add_argument("--ckpt", required=True, help="checkpoint file or run directory of a pix2pix or cyclegan run, or "
                   "'pretrained-cyclegan' (the shipped normal ↔ pneumonia CycleGAN, 64 px)")
    p.add_argument("--src", required=True, help="pix2pix: a folder with masks/<structure>/<image stem>.png (and "
                   "its images, whose names the outputs take); cyclegan: any folder of images (never written to)")
    p.add_argument("--dst", required=True, help="folder for the translated images (same relative names, .png)")
    p.add_argument("--direction", choices=("a2b", "b2a"), help="cyclegan: A → B (default, e.g. normal → "
                   "pneumonia) or B → A")
    p.add_argument("--masks", metavar="DIR", help="pix2pix: the mask folder (default SRC/masks)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its EMA")
    _add_on_error(p)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("bench", help="training throughput table (images/s, ms/step) of presets × sizes here")
    p.add_argument("--quick", action="store_true", help="tiny sizes and step counts: checks that it works")
    p.add_argument("--presets", type=lambda s: s.split(","), default=["original", "dcgan", "course", "style"],
                   help="comma-separated presets (default original,dcgan,course,style)")
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], help="comma-separated sizes")
    p.add_argument("--batch", type=int, help="batch (default: each preset's)")
    p.add_argument("--steps", type=int, help="timed steps per row")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto", help="autocast (default auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, …")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="what `make demo` runs: phantoms → a short training run → runs/demo/")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--minutes", type=float, help="training minutes (default 3; CXRLIB_SMOKE=1: the smoke budget)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("evaluate", help="quality metrics and memorisation audit of generated images")
    p.add_argument("--real", required=True, help="folder of real images (the reference)")
    p.add_argument("--fake", required=True, help="folder of generated images")
    p.add_argument("--train", help="folder of the (un-augmented) training images: adds the memorisation audit")
    p.add_argument("--holdout", help="real images never trained on, the audit's baseline "
                   "(default: the --real images that are not in --train)")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--report", help="write a PNG report: samples, histograms, SWD per level, nearest pairs")
    p.add_argument("--size", type=int, help="resize every set to S px (default: the fake images' size; "
                   "other sizes are refused)")
    p.add_argument("--seed", type=int, default=0, help="random seed of patches, directions and pairs")
    p.add_argument("--fid-weights", help="Inception weights file for FID (weights-inception-2015-12-05-"
                   "6726825d.pth); without it FID is skipped unless torch hub's cache holds them")
    _add_on_error(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("privacy", help="membership-inference attacks: can an attacker tell the training images "
                       "from other patients' films?")
    p.add_argument("--ckpt", required=True, metavar="RUN",
                   help="run folder, checkpoint file or 'pretrained' of a model that draws from noise (an "
                   "unconditional or conditional GAN, or a diffusion model: no discriminator attack)")
    p.add_argument("--members", required=True, metavar="DIR", help="folder of the training images, un-augmented "
                   "(a conditional checkpoint's D needs them in class sub-folders)")
    p.add_argument("--nonmembers", required=True, metavar="DIR", help="folder of other patients' images from the "
                   "same distribution, never trained on; as many as --members")
    p.add_argument("--n-generated", type=int, metavar="N", help="samples the distance attacks compare each image "
                   "with (default 1,000, cxrlib.privacy.N_GENERATED; more: a stronger attack, slower)")
    p.add_argument("--subsample", action="store_true", help="when the two folders hold different numbers of "
                   "images, use a random equal number of each (default: refuse)")
    p.add_argument("--resize", action="store_true", help="load folders of another size at the generator's size "
                   "(default: refuse them)")
    p.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the samples, D's batches, the "
                   "subsample and the bootstrap (default 0)")
    p.add_argument("--no-ema", action="store_true", help="attack the raw generator instead of its EMA")
    _add_on_error(p)
    p.set_defaults(func=_cmd_privacy)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cxrlib.errors import CxrError, TrainingStopped

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrainingStopped as e:  # SIGINT/SIGTERM: the step was finished and a checkpoint written
        from cxrlib import distributed

        if distributed.is_writer():
            print(str(e), file=sys.stderr, flush=True)
        return e.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CxrError, OSError) as e:
        if os.environ.get("CXRLIB_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        # the library's hints name the Python keyword; on the command line it is a flag
        msg = msg.replace("on_error='skip'", "--on-error skip")
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug keeps its traceback; out of memory or an unusable device is one line
        line = None if os.environ.get("CXRLIB_DEBUG") else _known_failure(e, args)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
