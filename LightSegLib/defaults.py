"""User-facing defaults, importable without torch (the command line builds its parser from them)."""

DEFAULT_MODEL = "miniseg-covid"

# lightseg finetune: tuned for site sets of 10 to 200 slices (see the README's fine-tuning section)
FINETUNE_DEFAULTS = {"lr": 3e-4, "epochs": 40, "patience": 10, "batch_size": 4, "val_fraction": 0.3, "anchor": 0.0,
                     "reference": 5.0, "adapt": "input"}
