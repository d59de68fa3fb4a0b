"""Scoring predictions against references, and the real validation scans: what evaluation runs, never inference.

Modules: :mod:`.disc_metrics` (discs against reference points), :mod:`.real_cts` and :mod:`.real_mris`
(the real scans in a folder given by configuration or argument, their references and scores). Training
(validation) and the scripts in ``tools/`` import these; the inference packages never do.
"""
