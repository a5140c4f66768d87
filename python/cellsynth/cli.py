"""``cellsynth`` command line: train, generate, interpolate, velocity, perturb, evaluate, demo.

Every command writes its outputs atomically (temporary file, then rename), so a
failure never leaves a half-written ``.h5ad`` or model directory behind. Known
input problems exit with status 2 and one clear line instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .data.genes import MIN_CELLS, N_TOP_GENES
from .errors import Terminated
from .io.files import write_atomic, write_h5ad_atomic
from .progress import STOP

log = logging.getLogger("cellsynth")

#: ``generate`` streams to disk above this many cells
STREAM_ABOVE = 100_000
DEFAULT_CHUNK = 16_384


def _hparams(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--set expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def read_h5ad(path: str):
    """An ``.h5ad`` read with the intake's checks (a clear error for damaged files)."""
    from .data.intake import read

    return read(path)


def _top_genes(v: str) -> int | None:
    if v.strip().lower() == "all":
        return None
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or 'all'), got {n}")
    return n


def cmd_train(a: argparse.Namespace) -> None:
    from .model import CellSynth

    t0 = time.perf_counter()
    hp = _hparams(a.set)
    if a.epochs is not None:
        hp["encoder_epochs"] = a.epochs
    if a.diffusion_steps is not None:
        hp["diffusion_steps"] = a.diffusion_steps
    if a.encoder is not None:
        hp["encoder"] = a.encoder
    if a.decoder is not None:
        hp["decoder"] = a.decoder
    if a.resume and not a.checkpoint_dir:
        raise ValueError("--resume needs --checkpoint-dir (the directory the interrupted run checkpointed to).")
    out = Path(a.out)
    if out.exists() and not a.overwrite and (not out.is_dir() or any(out.iterdir())):
        # fail before hours of training, not after
        raise FileExistsError(f"{a.out} already exists and is not empty; pass --overwrite to replace it.")
    genes = None
    if a.genes is not None:
        if not Path(a.genes).is_file():
            raise FileNotFoundError(f"--genes {a.genes}: no such file; give a text file with one gene name per line.")
        genes = [g.strip() for g in Path(a.genes).read_text(encoding="utf-8").splitlines() if g.strip()]
    m = CellSynth(
        a.data, labels=a.label, layer=a.layer, drop_empty_cells=a.drop_empty_cells, pretrained=a.pretrained,
        clusters=a.clusters, backed=a.backed, seed=a.seed, device=a.device,
        n_top_genes=a.n_top_genes, min_cells=a.min_cells, genes=genes, recover_counts=a.recover_counts, **hp,
    )
    log.info("%r", m)
    main_rank = m.dist.is_main
    m.fit(progress_bar=not a.quiet and main_rank, checkpoint_dir=a.checkpoint_dir, resume=a.resume,
          checkpoint_interval=a.checkpoint_interval, precision=a.precision)
    if main_rank:
        m.save(a.out, overwrite=a.overwrite)
        ranks = f" on {m.dist.world} processes" if m.dist.enabled else ""
        print(f"trained {m!r}{ranks} in {time.perf_counter() - t0:.0f} s; saved to {a.out}")
    m.dist.barrier()
    m.dist.close()


def cmd_generate(a: argparse.Namespace) -> None:
    from .model import CellSynth
    from .precision import check as check_precision

    from .model.labels import parse_condition_args

    conditions = parse_condition_args(a.condition)
    m = CellSynth.load(a.model, device=a.device)
    m.precision = check_precision(a.precision, m.device, training=False)
    t0 = time.perf_counter()
    if a.chunk_size is not None or (a.n_cells > STREAM_ABOVE and not a.filter):
        if a.filter:
            raise ValueError("--filter ranks cells across the whole request and cannot stream; drop --chunk-size or --filter.")
        m.generate_to_file(
            a.n_cells, a.out, chunk_size=a.chunk_size or DEFAULT_CHUNK, conditions=conditions, per_condition=a.per_condition,
            guidance=a.guidance, scale=a.scale, sampler=a.sampler, steps=a.steps, seed=a.seed, progress_bar=not a.quiet,
        )
        dt = time.perf_counter() - t0
        print(f"generated {a.n_cells} cells in {dt:.1f} s ({a.n_cells / dt:.0f} cells/s, {a.sampler}, streamed in chunks of "
              f"{a.chunk_size or DEFAULT_CHUNK}); wrote {a.out}")
        return
    out = m.generate(
        a.n_cells, conditions=conditions, per_condition=a.per_condition, guidance=a.guidance, scale=a.scale,
        filter=a.filter, keep_fraction=a.keep_fraction, sampler=a.sampler, steps=a.steps, seed=a.seed,
        progress_bar=not a.quiet,
    )
    write_h5ad_atomic(out, a.out)
    f = out.uns["cellsynth"]["filter"]
    extra = f"; {f['method']} filter kept {f['kept']} of {f['drawn']} drawn" if a.filter else ""
    print(f"generated {a.n_cells} cells in {time.perf_counter() - t0:.1f} s ({a.sampler}{extra}); wrote {a.out}")


def _one_state(args: list[str] | None, flag: str) -> dict:
    from .model.labels import parse_condition_args

    state = parse_condition_args(args)
    if not state:
        raise ValueError(f"{flag} COL=VALUE is required (repeatable to combine columns).")
    return state


def cmd_interpolate(a: argparse.Namespace) -> None:

    from .model import CellSynth
    from .tl import interpolate

    start, end = _one_state(a.start, "--from"), _one_state(a.end, "--to")
    m = CellSynth.load(a.model, device=a.device)
    cells = read_h5ad(a.cells) if a.cells else None
    t0 = time.perf_counter()
    path = interpolate(m, start, end, method=a.method, n_positions=a.positions, n_cells=a.n_cells, adata=cells,
                       depth=a.depth, scale=a.scale, mix=a.mix, steps=a.steps, seed=a.seed)
    write_h5ad_atomic(path, a.out)
    print(f"{a.method} path: {a.n_cells} cells at each of {a.positions} positions in {time.perf_counter() - t0:.1f} s; wrote {a.out}")


def cmd_perturb(a: argparse.Namespace) -> None:

    from .model import CellSynth
    from .tl import predict_perturbation

    condition = _one_state(a.condition, "--condition")
    m = CellSynth.load(a.model, device=a.device)
    cells = read_h5ad(a.cells)
    t0 = time.perf_counter()
    pred = predict_perturbation(m, cells, condition, control=a.control, method=a.method, depth=a.depth, steps=a.steps, seed=a.seed)
    write_h5ad_atomic(pred, a.out)
    info = pred.uns["cellsynth_perturbation"]
    print(f"{info['method']}: {pred.n_obs} cells {info['column']}={info['control']} -> {info['target']} "
          f"(shift learned from {len(next(iter(info['groups'].values()), []))} group(s)) in {time.perf_counter() - t0:.1f} s; wrote {a.out}")


def cmd_velocity(a: argparse.Namespace) -> None:

    from .tl import gene_velocity

    vel = gene_velocity(read_h5ad(a.path), window=a.window)
    out = write_atomic(a.out, vel.ranking.rename_axis("gene").to_csv)
    print(f"ranked {vel.ranking.shape[0]} genes; fastest: {', '.join(vel.top(5))}; wrote {out}")
    if a.plot:
        from .plotting import plot_gene_velocity

        plot_gene_velocity(vel, a.plot)
        print(f"wrote {a.plot}")


def cmd_evaluate(a: argparse.Namespace) -> None:

    from .metrics.fidelity import fidelity
    from .metrics.report import counts_of, write_report

    real, gen = read_h5ad(a.real), read_h5ad(a.generated)
    train = read_h5ad(a.train) if a.train else None
    genes = [g for g in real.var_names if g in set(gen.var_names)]
    if not genes:
        raise ValueError("The real and generated files share no genes.")
    for name, x in (("real", real), ("train", train)):
        if a.label and x is not None and a.label not in x.obs:
            raise ValueError(f"--label {a.label!r} is not an obs column of the {name} cells (columns: {list(x.obs.columns)[:10]}).")
    rep = fidelity(counts_of(real[:, genes]), counts_of(gen[:, genes]), counts_of(train[:, genes]) if train is not None else None)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(rep, indent=2)))
    report = write_report(out / "report.html", real, gen, rep, train=train, label=a.label)
    print(json.dumps(rep, indent=2))
    print(f"wrote {out / 'metrics.json'} and {report}")


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(a.out, seed=a.seed, quiet=a.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cellsynth", description="Generate realistic single-cell RNA-seq cells with latent diffusion.")
    p.add_argument("--verbose", "-v", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)
    overwrite = argparse.ArgumentParser(add_help=False)
    overwrite.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, default=None, metavar="N",
                         help="fix torch's thread count (default: training measures which count runs fastest, generation goes by the work and the CPUs available; also CELLSYNTH_THREADS)")

    t = sub.add_parser("train", help="train a model on an .h5ad file", parents=[threads])
    t.add_argument("data", help="training cells (.h5ad; raw counts preferred)")
    t.add_argument("--out", required=True, help="model directory to write")
    t.add_argument("--label", action="append", default=[], help="obs column to condition on (repeatable)")
    t.add_argument("--layer", default=None, help="expression layer (default: layers['counts'] if present, else X)")
    t.add_argument("--n-top-genes", type=_top_genes, default=N_TOP_GENES, metavar="N|all",
                   help=f"the networks learn at most N highly variable genes (scanpy; default {N_TOP_GENES}; 'all': every "
                        "detected gene); generated cells carry every input gene either way")
    t.add_argument("--min-cells", type=int, default=MIN_CELLS, metavar="N",
                   help=f"genes detected in fewer cells are not learned by the networks (default {MIN_CELLS})")
    t.add_argument("--genes", default=None, metavar="FILE", help="learn exactly these genes (a text file, one name per line)")
    t.add_argument("--recover-counts", action=argparse.BooleanOptionalAction, default=True,
                   help="turn log-normalised UMI counts back into their exact counts and model counts (default on)")
    t.add_argument("--encoder", choices=["vae", "ae"], default=None, help="gene-space encoder (default vae)")
    t.add_argument("--decoder", choices=["mlp", "linear"], default=None,
                   help="gene decoder (default mlp; linear extrapolates latent shifts additively: use it for perturbation prediction)")
    t.add_argument("--pretrained", default=None, metavar="MODEL_DIR", help="start the encoder from a saved model, aligned to these genes by name")
    t.add_argument("--epochs", type=int, default=None, help="maximum encoder epochs (early stopping on held-out cells)")
    t.add_argument("--diffusion-steps", type=int, default=None, help="denoiser optimisation steps")
    t.add_argument(
        "--clusters", action=argparse.BooleanOptionalAction, default=False,
        help="also condition on Leiden clusters (obs column 'cluster'), to ask for more of one cluster; off by default (unconditional cells come out worse)",
    )
    t.add_argument("--backed", action="store_true",
                   help="read the cells from disk in shuffled blocks instead of loading the matrix (for atlases)")
    t.add_argument("--checkpoint-dir", default=None, help="save the training state here (resume with --resume)")
    t.add_argument("--checkpoint-interval", type=float, default=300.0, metavar="SECONDS",
                   help="at most one checkpoint per this many seconds, plus one at the end of each stage (default 300)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir")
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="denoiser arithmetic (bf16 autocast; the encoder stays fp32)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    t.add_argument("--drop-empty-cells", action="store_true", help="drop cells with zero counts instead of refusing")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other hyper-parameter, e.g. --set latent_dim=32")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="generate cells from a trained model", parents=[threads, overwrite])
    g.add_argument("model", help="model directory")
    g.add_argument("--n-cells", type=int, required=True)
    g.add_argument("--out", required=True, help="output .h5ad")
    g.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    g.add_argument("--steps", type=int, default=50, help="DDIM steps (DDPM always walks all of them)")
    g.add_argument("--condition", action="append", metavar="COL=VALUE", help="generate cells of this label (repeatable: combine columns)")
    g.add_argument("--per-condition", action="store_true", help="split --n-cells over every label combination in its training proportion")
    g.add_argument("--guidance", choices=["cfg", "classifier"], default="cfg", help="classifier-free (default) or noisy-latent classifier guidance")
    g.add_argument("--scale", type=float, default=None, help="guidance strength (cfg: 1 = plain conditional, default; classifier: gamma, default 10)")
    g.add_argument("--filter", choices=["discriminator", "classifier"], default=None, help="quality filter: keep the most real-looking cells, or those labelled as asked")
    g.add_argument("--keep-fraction", type=float, default=0.8, help="fraction kept by --filter discriminator (default 0.8, as SCLD)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chunk-size", type=int, default=None,
                   help=f"stream the output to disk this many cells at a time (automatic above {STREAM_ABOVE:,} cells); "
                        "streamed cells are the same for a seed whatever the chunk size, but are not the cells "
                        "of an in-memory run (no --chunk-size, at most 100,000 cells) with that seed")
    g.add_argument("--device", default=None)
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="denoiser arithmetic while sampling (fp16: CUDA only)")
    g.add_argument("--quiet", "-q", action="store_true")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("interpolate", help="cells along a path between two states", parents=[threads, overwrite])
    i.add_argument("model", help="model directory")
    i.add_argument("--from", dest="start", action="append", metavar="COL=VALUE", help="start state (repeatable)")
    i.add_argument("--to", dest="end", action="append", metavar="COL=VALUE", help="end state (repeatable)")
    i.add_argument("--method", choices=["gradient", "prior", "latent"], default="gradient",
                   help="gradient interpolation (scDiffusion), DDIM-prior mixing or latent mixing (scVAEDer)")
    i.add_argument("--positions", type=int, default=10, help="positions along the path (K)")
    i.add_argument("--steps", type=int, default=50, help="DDIM steps over [0, depth]")
    i.add_argument("--n-cells", type=int, default=50, help="cells at each position (N)")
    i.add_argument("--cells", default=None, help="real cells (.h5ad) to start/end from (default: generated ones)")
    i.add_argument("--depth", type=int, default=None, help="noise depth (default 600 for gradient, T/2 otherwise)")
    i.add_argument("--scale", type=float, default=None, help="classifier guidance gamma for --method gradient (default 10)")
    i.add_argument("--mix", choices=["slerp", "linear"], default="slerp", help="mixing in the prior (--method prior)")
    i.add_argument("--out", required=True, help="output .h5ad")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--device", default=None)
    i.set_defaults(func=cmd_interpolate)

    v = sub.add_parser("velocity", help="rank genes by their rate of change along an interpolation path", parents=[overwrite])
    v.add_argument("path", help=".h5ad written by cellsynth interpolate")
    v.add_argument("--out", required=True, help="output .csv (gene, speed, net_change, fastest_segment)")
    v.add_argument("--window", type=int, default=3, help="moving-average window in steps")
    v.add_argument("--plot", default=None, help="also draw the top genes along the path to this .png")
    v.set_defaults(func=cmd_velocity)

    r = sub.add_parser("perturb", help="predict how control cells respond to a condition (latent shift + diffusion)", parents=[threads, overwrite])
    r.add_argument("model", help="model directory (trained with the condition column as a label)")
    r.add_argument("--cells", required=True, help="control cells (.h5ad) to perturb")
    r.add_argument("--condition", action="append", metavar="COL=VALUE", help="target level, e.g. treatment=stim")
    r.add_argument("--control", default=None, help="the cells' level in that column (default: from the cells' obs, or the other of two levels)")
    r.add_argument("--method", choices=["state", "diffusion", "shift"], default=None,
                   help="state (default): a shift whose size depends on each cell's state, added to the cell's own "
                        "profile; diffusion: latent shift refined by the diffusion model; shift: the plain shift")
    r.add_argument("--depth", type=int, default=None, help="refinement depth of 1000 (default: see cellsynth.tl.perturb)")
    r.add_argument("--steps", type=int, default=50, help="DDIM steps of the refinement over [0, depth]")
    r.add_argument("--out", required=True, help="output .h5ad")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default=None)
    r.set_defaults(func=cmd_perturb)

    e = sub.add_parser("evaluate", help="real vs generated metrics (metrics.json) and a readable report (report.html)")
    e.add_argument("real")
    e.add_argument("generated")
    e.add_argument("--out", required=True, help="output directory (metrics.json, report.html)")
    e.add_argument("--train", default=None, help="training cells, for the real-vs-real control and memorisation")
    e.add_argument("--label", default=None, metavar="COL", help="obs column of labels: UMAP by label and marker genes per label in report.html")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="train on bundled PBMC cells, generate, plot, score", parents=[threads])
    d.add_argument("--out", default="demo_out")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", "-q", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="cellsynth: %(message)s")
    from .errors import InputError, ModelFileError

    try:
        if getattr(args, "threads", None) is not None:
            import torch

            from .threads import choose

            choose(None, args.threads)  # a bad value is refused before any work
            os.environ["CELLSYNTH_THREADS"] = str(args.threads)  # every fit() / generate() of this command
            torch.set_num_threads(args.threads)  # and the rest (paths, perturbation)
        check_outputs(args)
        previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
        hook, sys.unraisablehook = sys.unraisablehook, _quiet_interrupts
        try:
            args.func(args)
        finally:
            sys.unraisablehook = hook
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
                STOP.clear()
    except (InputError, ModelFileError, FileExistsError, FileNotFoundError, PermissionError, ValueError) as e:
        print(f"cellsynth {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Terminated:  # kill (TERM): outputs in progress were removed on the way out
        print(f"cellsynth {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:  # Ctrl-C: no traceback; partial outputs were removed on the way out
        print(f"cellsynth {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _terminate(signum, frame):
    STOP.set()  # in case this exception lands in a weakref callback and is dropped
    raise Terminated()


def _quiet_interrupts(unraisable) -> None:
    """No "Exception ignored" traceback for a TERM or Ctrl-C that landed in a finaliser:
    the next progress step raises it again (``STOP``)."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


#: commands whose --out is a file, and those whose --out is a directory
FILE_OUT = ("generate", "interpolate", "velocity", "perturb")
DIR_OUT = ("train", "evaluate", "demo")


def check_outputs(a: argparse.Namespace) -> None:
    """Refuse unwritable or occupied outputs before any work; report temporary files
    that killed runs left beside them."""
    from .io.outputs import check_output, stale_temps

    outs = []
    if a.command in FILE_OUT:
        outs.append(check_output(a.out, overwrite=a.overwrite))
        if getattr(a, "plot", None):
            outs.append(check_output(a.plot, overwrite=a.overwrite, flag="--plot"))
    elif a.command in DIR_OUT:
        outs.append(check_output(a.out, is_dir=True))
    for d in sorted({p.absolute().parent for p in outs}):
        stale = stale_temps(d)
        if stale:
            log.warning("%d temporary file(s) left by an interrupted cellsynth run in %s (%s); nothing uses them: "
                        "remove them with  rm -r %s", len(stale), d, ", ".join(p.name for p in stale[:3]),
                        " ".join(str(p) for p in stale))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
