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

    if args.remove:
        for path in registry.remove_user_model(args.remove):
            print(f"removed {path}")
        return 0
    entries = registry.list_models()
    rows = [{"id": e.card.id, "version": e.card.version, "architecture": e.card.architecture,
             "parameters": e.card.parameters, "licence": e.card.licence.split(" (")[0],
             "where": "bundled" if e.bundled else "user",
             "val_infnet_dice": e.card.validation.get("kept", {}).get("infnet_dice")} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models found (bundled: {registry.bundled_dir()}, user: {registry.user_dir()})")
        return 0
    header = ("id", "version", "architecture", "parameters", "licence", "where")
    table = [header] + [tuple(f"{r[h]:,}" if h == "parameters" else str(r[h]) for h in header) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
