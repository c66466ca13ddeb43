"""``lightseg models``: list and remove models."""

from __future__ import annotations

import argparse



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list bundled and user models")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--remove", metavar="NAME", help="delete a user model (bundled models cannot be removed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from .. import registry
    from ..cards import validation_summary
    from ..compiled import is_compiled

    if args.remove:
        for path in registry.remove_user_model(args.remove):
            print(f"removed {path}")
        return 0
    entries = registry.list_models()
    rows = [{"id": e.card.id, "version": e.card.version, "architecture": e.card.architecture,
             "parameters": e.card.parameters, "licence": e.card.licence.split(" (")[0],
             "where": "bundled" if e.bundled else "user", "test_time_flips": e.card.test_time_flips,
             "val_infnet_dice": e.card.validation.get("kept", {}).get("infnet_dice"),
             "cv_infnet_dice": e.card.validation.get("cross_validation", {}).get("infnet_dice"),
             "validation": validation_summary(e.card), "compiled_for_this_cpu": is_compiled(e.card)} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models found (bundled: {registry.bundled_dir()}, user: {registry.user_dir()})")
        return 0
    header = ("id", "version", "architecture", "parameters", "licence", "where", "compiled", "Inf-Net Dice")
    table = [header] + [(r["id"], r["version"], r["architecture"], f"{r['parameters']:,}", r["licence"], r["where"],
                         "yes" if r["compiled_for_this_cpu"] else "no", _dice_cell(r)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _dice_cell(row: dict) -> str:
    """The cross-validated figure where the card has one, else the model's own validation fold's."""
    if row["cv_infnet_dice"] is not None:
        return f"{row['cv_infnet_dice']:.3f} (cross-validated)"
    if row["val_infnet_dice"] is not None:
        return f"{row['val_infnet_dice']:.3f} (validation fold)"
    return "-"
