"""Headless training of both networks on the user's data sets (``spineseg train``).

Modules: :mod:`.config` (settings from a file plus overrides),
:mod:`.datasets` (VerSe, images/labels pairs, BIDS spine-generic, phantoms;
the subject split), :mod:`.trainer` (the loop: checkpoints, resume,
validation, metrics, mixed precision, DistributedDataParallel, export),
:mod:`.tasks` (the vertebra and disc adapters, one table picks them),
:mod:`.checkpoint`, :mod:`.history`, :mod:`.distributed` and :mod:`.command`
(the command line). Training sits above the task packages: it imports their
networks, losses and samplers; they never import it.

Several GPUs or machines: ``torchrun --nproc-per-node N -m spineseg.training TASK --data DIR --out RUNDIR``.
"""
