"""One module per ``lightseg`` command, each with ``add_parser(subparsers)`` and ``run(args) -> exit code``."""

from . import (batch, calibrate, compile, demo, evaluate, finetune, import_miniseg, listen, models, pseudo_label,
               segment, train, train_patterns)

COMMANDS = (segment, batch, listen, models, compile, demo, train, train_patterns, calibrate, import_miniseg, evaluate,
            finetune, pseudo_label)
