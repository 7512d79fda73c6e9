"""``lesionseg demo``: the whole pipeline on phantoms, in minutes, on a CPU."""

from __future__ import annotations

import argparse

NAME = "demo"
ORDER = 1
HELP = "synthesise phantoms, train a tiny model, predict and evaluate held-out subjects"
DESCRIPTION = """Run the whole pipeline on the embedded phantom data: synthesise a phantom data set
at 2 mm (20 subjects, 4 held out), train the method's small recipe, predict the held-out
subjects with 'lesionseg predict', evaluate them and draw them. Methods: deepmedic
(deepmedic-tiny on 'ms'), dunet (dunet-demo on 'stroke-chronic', 28 more training phantoms),
cascade (msseg-tiny, the MSSEG 2016 cascade, on 'ms'), brainsegnet (brainsegnet-brats-tiny
on 'tumor', whole-tumour Dice), edd-muscle (edd-muscle-tiny on 'stroke-acute' DWI, 24 more
training phantoms). About 2-15 minutes on a 2-core CPU.
Steps whose outputs exist are reused; --overwrite redoes everything.

examples:
  lesionseg demo -o lesionseg-demo
  lesionseg demo -o cascade-demo --method cascade"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg demo``."""
    from lesionseg.training.demo import METHODS

    parser.add_argument("-o", "--output", default="lesionseg-demo", help="demo folder")
    parser.add_argument(
        "--method",
        default="deepmedic",
        choices=sorted(METHODS),
        help="method (and its phantom task) to demonstrate",
    )
    parser.add_argument("--subjects", type=int, default=20, help="phantoms to synthesise")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantoms and training")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--overwrite", action="store_true", help="redo every step")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where everything is."""
    from lesionseg.training.demo import run_demo

    result = run_demo(
        args.output,
        method=args.method,
        subjects=args.subjects,
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"held-out Dice: {', '.join(f'{c} {d:.3f}' for c, d in result.dice.items())}")
    print(f"mean held-out Dice: {result.mean_dice:.3f}")
    total = sum(result.seconds.values())
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"time: {total:.0f} s ({steps})")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0
