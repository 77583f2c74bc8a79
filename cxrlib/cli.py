"""``python -m cxrlib <command>`` — the command line (contracts in DESIGN.md).

Every command has ``--help``; bad input ends with one line ``error: …`` on stderr and exit status 2,
never a traceback (set ``CXRLIB_DEBUG=1`` to see one).
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
        pneumonia_fraction=args.pneumonia_fraction, masks=args.masks,
    )
    print(summary)
    return 0


def _cmd_inspect(args) -> int:
    from cxrlib.data import inspect_folder

    print(inspect_folder(args.dir))
    return 0


def _cmd_prepare(args) -> int:
    from cxrlib.data import prepare_folder

    print(prepare_folder(args.src, args.dst, size=args.size, on_error=args.on_error))
    return 0


def _cmd_augment(args) -> int:
    from cxrlib.augment import augment_folder

    print(augment_folder(args.src, args.dst, copies=args.copies, seed=args.seed, on_error=args.on_error))
    return 0


# --------------------------------------------------------------------------- training commands
def _cmd_train(args) -> int:
    raise NotImplementedError("train arrives with the training engine")


def _cmd_finetune(args) -> int:
    raise NotImplementedError("finetune arrives with the training engine")


def _cmd_sample(args) -> int:
    raise NotImplementedError("sample arrives with the training engine")


def _cmd_bench(args) -> int:
    raise NotImplementedError("bench arrives with the training engine")


def _cmd_demo(args) -> int:
    """Until the training engine lands: phantoms → a labelled grid under runs/demo/."""
    from cxrlib.phantom import demo_grid

    print(demo_grid(args.out))
    return 0


# --------------------------------------------------------------------------- evaluation
def _cmd_evaluate(args) -> int:
    raise NotImplementedError("evaluate arrives with the metrics")


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cxrlib", description="cxr-gan: synthetic chest X-rays with a GAN, from data to audit."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("phantom", help="write procedural phantom chest X-rays (offline data set)")
    p.add_argument("--out", required=True, help="folder to create (normal/, pneumonia/, manifest.csv)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--size", type=int, default=256, help="image side in px, 32–1024 (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same images")
    p.add_argument("--pneumonia-fraction", type=float, default=0.5, help="share of pneumonia images (0–1)")
    p.add_argument("--masks", action="store_true", help="also write anatomy masks under masks/")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("inspect", help="report what a folder of images/DICOMs holds, and every unreadable file")
    p.add_argument("dir", help="folder to inspect")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("prepare", help="convert any supported images/DICOMs to clean square grayscale PNGs")
    p.add_argument("--src", required=True, help="source folder (never written to)")
    p.add_argument("--dst", required=True, help="destination folder (class sub-folders kept)")
    p.add_argument("--size", type=int, required=True, help="output side in px")
    _add_on_error(p)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("augment", help="the seed's offline augmentation: brightness, contrast, JPEG quality")
    p.add_argument("--src", required=True, help="source folder (never written to)")
    p.add_argument("--dst", required=True, help="destination folder, outside the source")
    p.add_argument("--copies", type=int, required=True, help="augmented copies per original (K)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _add_on_error(p)
    p.set_defaults(func=_cmd_augment)

    p = sub.add_parser("train", help="train a GAN")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("finetune", help="continue from a checkpoint with lower learning rates")
    p.set_defaults(func=_cmd_finetune)
    p = sub.add_parser("sample", help="write samples from a checkpoint's (EMA) generator")
    p.set_defaults(func=_cmd_sample)
    p = sub.add_parser("bench", help="training throughput table")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="what `make demo` runs: phantoms → a short training run → runs/demo/")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("evaluate", help="quality metrics and memorisation audit of generated images")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cxrlib.errors import CxrError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CxrError, OSError, NotImplementedError) as e:
        if os.environ.get("CXRLIB_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
