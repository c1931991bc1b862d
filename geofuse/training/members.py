"""Several networks in one model file: trained one after another, their probabilities averaged.

``members=N`` trains N networks from seeds ``seed``, ``seed + 1``, ... on the same split,
and the model file averages them (:func:`geofuse.model.network.build_unet` with ``members``). A
time-limited run on small data may reach the steps that data should get (more overfit) long
before its time is up; while the time left is at least
:data:`~geofuse.training.config.MEMBER_TIME_SHARE` of what the first network took, it trains
another one by default, up to :data:`~geofuse.training.config.AUTO_MEMBERS` (whose docstring
has the evidence). TensorFlow is imported by :mod:`.fit`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geofuse.training.config import AUTO_MEMBERS, MEMBER_TIME_SHARE, format_duration
from geofuse.training.state import FitJob, Listeners

if TYPE_CHECKING:
    from geofuse.training.fit import FitOutcome


def fit_members(
    job: FitJob,
    run_dir: Path,
    listeners: Listeners,
    seconds: float | None,
    say: Callable[[str], None],
) -> list[FitOutcome]:
    """Fit ``config.members`` networks, or as many as the time allows by default.

    Network ``k`` uses seed ``config.seed + k`` (weights, chips, augmentation) on the same
    split, and the run folder's ``member<k>`` subfolder for ``k > 0``. With a time limit,
    ``seconds`` is shared: an explicit count splits what is left evenly between the networks
    still to train; by default the first network gets it all, and when it stopped at its
    steps another follows while at least :data:`~geofuse.training.config.MEMBER_TIME_SHARE`
    times its time is left (the same steps for each), up to
    :data:`~geofuse.training.config.AUTO_MEMBERS`. A network's clock counts its set-up; the
    time each takes after its clock stops (final validation, export), measured on the first,
    is kept back from the shares of the others.
    """
    import keras

    from geofuse.training.fit import fit_model

    config = job.config
    wanted = config.members or (AUTO_MEMBERS if seconds is not None
                                and config.strategy != "multi-worker" else 1)
    start = time.perf_counter()
    outcomes: list[FitOutcome] = []
    took = 0.0  # the first network's time: wall clock (set-up included) or, resumed, trained
    tail = 0.0  # the first network's time after its clock stopped
    for k in range(wanted):
        # a resumed run counts the training time its networks spent before the interruption
        spent = max(time.perf_counter() - start, sum(o.seconds for o in outcomes))
        # kept back: the tails of the networks to come and the validation of their average
        left = None if seconds is None else seconds - spent - tail * (wanted - k + 1)
        if k and config.members is None:
            if left is None or left < MEMBER_TIME_SHARE * took:
                break
            say(f"network 1 stopped at its steps after {format_duration(took)}; training "
                f"network {k + 1} in the {format_duration(left)} left, to average with "
                f"{'it' if k == 1 else 'them'} (`members` 1: one network, the fastest to use)")
        share = None if left is None else max(1.0, left / (
            wanted - k if config.members else 1))
        if k:  # frees the last network's graphs: the next one traces as fast as the first
            keras.backend.clear_session()
        member = job if k == 0 else dataclasses.replace(
            job, config=dataclasses.replace(config, seed=config.seed + k))
        folder = run_dir if k == 0 else run_dir / f"member{k}"
        outcomes.append(fit_model(member, folder, _tagged(listeners, k), share))
        if not took:
            took = max(time.perf_counter() - start, outcomes[0].seconds)
            tail = max(0.0, time.perf_counter() - start - outcomes[0].seconds)
    return outcomes


def _tagged(listeners: Listeners, k: int) -> Listeners:
    """``listeners`` whose reports say which network (``member``, from 1) they are about."""
    report = listeners.report
    if report is None:
        return listeners

    def tagged(epoch: int, logs: Mapping[str, Any]) -> None:
        report(epoch, {**logs, "member": k + 1})

    return dataclasses.replace(listeners, report=tagged)


def ensemble_outcome(outcomes: list[FitOutcome], job: FitJob) -> FitOutcome:
    """One outcome for the average of the networks of ``outcomes`` (validated anew).

    ``job.info.spec`` is the averaged model's (``members`` set).
    """
    from geofuse.model.network import averaged
    from geofuse.training.fit import validate

    model = averaged([o.export_model for o in outcomes], job.info.spec, job.info.patch_size)
    first = outcomes[0]
    return dataclasses.replace(
        first, export_model=model,
        validation=validate(model, first.val_data, job.config.batch_size, job.names,
                            job.class_sets),
        epochs=sum(o.epochs for o in outcomes), seconds=sum(o.seconds for o in outcomes))
