"""`loom link LEFT RIGHT --images COLUMN [--on text]`: image + text records (CLIPPINGS).

Records are embedded by a CLIP model folder (`--model`) through `linking.multimodal`; no CLIP
weights install with loom, so the command names what to give when there is none."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from apps.options import check_device, read_input
from toolkit.errors import LoomError

NO_CLIP = (
    "--images needs a CLIP model and none installs with loom (no CLIP weights ship on PyPI): "
    "give --model FOLDER, a transformers CLIP checkpoint saved where you have it "
    "(CLIPModel.from_pretrained('openai/clip-vit-base-patch32').save_pretrained(FOLDER), the same "
    "for CLIPProcessor) or one trained with linking.multimodal.train_multimodal; "
    "see docs/linking.md#clippings-image--text-records"
)


def check_image_options(args: argparse.Namespace) -> float | None:
    """The flags of `loom link` that --images takes, checked; returns the threshold in force."""
    missing = [m for m in ("transformers", "PIL") if not _importable(m)]
    if missing:
        names = " ".join("pillow" if m == "PIL" else m for m in missing)
        raise LoomError(f"--images needs {names}: pip install {names}")
    if args.model is None:
        raise LoomError(NO_CLIP)
    if args.left_on is not None or args.right_on is not None:
        raise LoomError(
            "--images links on --on columns (the same names in both tables): rename the "
            "columns instead of --left-on / --right-on"
        )
    if args.blocking_on is not None:
        raise LoomError("--blocking-on does not work with --images yet: leave it out")
    if isinstance(args.char_weight, float) and args.char_weight != 0:
        raise LoomError(
            f"--char-weight {args.char_weight}: spelling similarity is for text keys; leave it "
            "out with --images (--image-weight sets the share of the image)"
        )
    if not 0 <= args.image_weight <= 1:
        raise LoomError(f"--image-weight {args.image_weight}: give a share between 0 and 1")
    if args.on is None and args.image_weight != 0.5:
        raise LoomError(
            f"--image-weight {args.image_weight} weighs the image against the text: name the "
            "text column(s) with --on (without --on records are linked by image alone)"
        )
    if args.k < 1:
        raise LoomError(f"--k {args.k}: give a positive number of matches per left row")
    if args.one_to_one and args.k != 1:
        raise LoomError("--one-to-one keeps one match per row: use it with --k 1")
    args.device = check_device(args.device)
    threshold = args.threshold
    if threshold == "auto":
        print(
            "note: --images keeps every nearest match (the threshold is not chosen from the data "
            "for image records); give --threshold 0.8 to cut",
            file=sys.stderr,
        )
        return None
    if threshold is not None and not -1 <= threshold <= 1:
        raise LoomError(f"--threshold {threshold}: give a cosine similarity between -1 and 1")
    return threshold


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def check_images_exist(df, path: str, flag: str, args: argparse.Namespace) -> None:
    """Every image path of table `flag` names a file (before the model loads)."""
    from linking.clip import image_paths

    paths = image_paths(df, args.images, args.image_root)
    gone = [str(p) for p in paths if p is not None and hasattr(p, "exists") and not p.exists()]
    if gone:
        where = f"under --image-root {args.image_root}" if args.image_root else "from this folder"
        raise LoomError(
            f"{flag} {path}: {len(gone)} image path(s) in column {args.images!r} (--images) do not "
            f"exist {where}, e.g. {gone[:3]}: fix the paths or give --image-root"
        )


def cmd_link_images(args: argparse.Namespace) -> int:
    from linking import LinkConfig
    from linking.keys import as_columns
    from linking.multimodal import ClipEncoder, merge
    from linking.store import save_link_run
    from toolkit.workspace import Workspace

    threshold = check_image_options(args)
    on = as_columns(args.on, "--on") or []
    cfg = LinkConfig(
        model=args.model,
        k=args.k,
        threshold=threshold,
        char_weight=0.0,
        one_to_one=args.one_to_one,
        device=args.device,
        progress=True,
    )
    columns = {"--images": [args.images], "--on": on}
    left = read_input(args.left, "LEFT", columns)
    right = read_input(args.right, "RIGHT", columns)
    check_images_exist(left, args.left, "LEFT", args)
    check_images_exist(right, args.right, "RIGHT", args)
    gold = None
    if args.gold is not None:
        gold = read_input(args.gold, "--gold", {"the gold pairs format": ("left_row", "right_row")})
    try:
        encoder = ClipEncoder.load(args.model, cfg.device)
    except LoomError as e:
        raise LoomError(f"--model {args.model}: {e}. {NO_CLIP}") from e
    out = merge(
        left,
        right,
        image_col=args.images,
        on=on or None,
        model=encoder,
        image_weight=args.image_weight,
        k=cfg.k,
        threshold=cfg.threshold,
        one_to_one=cfg.one_to_one,
        image_root=args.image_root,
        progress=cfg.progress,
    )
    params = {
        "left": args.left,
        "right": args.right,
        "on": on,
        "images": args.images,
        "image_weight": args.image_weight,
        "image_root": args.image_root,
        **asdict(cfg),
    }
    keys = ([args.images, *on], [args.images, *on])
    ws = Workspace(args.out)
    run, summary = save_link_run(ws, left, right, out, keys, params, gold)
    matched = out["right_row"].notna().sum()
    print(
        f"linked {matched} of {len(left)} left rows to {len(right)} right rows by image"
        f"{' + text' if on else ''} ({summary['pairs']} pairs)"
    )
    if "f1" in summary:
        print(
            f"against gold: precision {summary['precision']:.3f} recall {summary['recall']:.3f} "
            f"F1 {summary['f1']:.3f}"
        )
    print(f"run {run} in {ws.path}: tables left, right, pairs")
    return 0
