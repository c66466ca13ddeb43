"""Ground-glass opacity or consolidation inside the infection: a small network of its own (``net.py``), trained on the
multi-class labelled slices (``training.py``), loaded from its card (``model.py``) and turned into a pattern map
(``pattern_map.py``: 0 none, 1 ground-glass, 2 consolidation). The infection model and its label map are untouched."""
