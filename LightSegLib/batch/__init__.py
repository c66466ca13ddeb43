"""``lightseg batch``: every study of a folder tree or manifest, resumable, on local worker processes or on Ray."""
