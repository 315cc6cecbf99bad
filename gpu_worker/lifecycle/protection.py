"""Instance scale-in protection while the worker holds a job.

The group's scaling policy only ever adds workers (cloudformation/pipeline.yaml,
ScaleOutPolicy) and each idle worker leaves on its own (``scale_to_zero``), so nothing in
the stack scales the group in under a busy worker. Protection makes that hold against what
the stack does not control: an operator lowering the desired capacity by hand, a stack
update, a scaling policy added later. Auto Scaling then picks only unprotected (idle)
instances, and a desired capacity below the protected instances waits for them.

What it does not stop (as AWS documents): a Spot interruption, a health-check replacement,
and ``TerminateInstanceInAutoScalingGroup``, which the worker itself calls to leave; the
Spot and rebalance paths (``interruption``) are unchanged by it.

A failed call is logged and the job goes on: protection guards against an operator's
mistake, and a job is not worth losing over it. The calls are made only on a change (the
first job after idling, the first empty poll after work), so a worker that goes from job to
job makes one call, not two per job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient

logger = logging.getLogger(__name__)


class JobHooks(Protocol):
    """What the worker loop tells its lifecycle: a job started, the worker is idle."""

    def job_started(self) -> None: ...

    def worker_idle(self) -> None: ...


class NoHooks:
    """Without an Auto Scaling group (a worker run by hand): nothing to protect."""

    def job_started(self) -> None:
        return None

    def worker_idle(self) -> None:
        return None


class ScaleInProtection:
    """Sets this instance's scale-in protection on a job's start, clears it when idle."""

    def __init__(
        self, autoscaling: AutoScalingClient, asg_name: str, instance_id: Callable[[], str]
    ) -> None:
        self._autoscaling = autoscaling
        self._asg_name = asg_name
        self._instance_id = instance_id
        # None: not known (a restarted worker may find its instance still protected).
        self._protected: bool | None = None

    @property
    def protected(self) -> bool | None:
        return self._protected

    def job_started(self) -> None:
        if self._protected is not True:
            self._set(True)

    def worker_idle(self) -> None:
        if self._protected is not False:
            self._set(False)

    def _set(self, protected: bool) -> None:
        try:
            instance_id = self._instance_id()
            self._autoscaling.set_instance_protection(
                AutoScalingGroupName=self._asg_name,
                InstanceIds=[instance_id],
                ProtectedFromScaleIn=protected,
            )
        except Exception:
            logger.warning(
                "could not change the instance's scale-in protection",
                exc_info=True,
                extra={"asg_name": self._asg_name, "protected_from_scale_in": protected},
            )
            return
        self._protected = protected
        logger.info(
            "scale-in protection %s",
            "set" if protected else "cleared",
            extra={
                "asg_name": self._asg_name,
                "instance_id": instance_id,
                "protected_from_scale_in": protected,
            },
        )


def job_hooks(
    autoscaling: AutoScalingClient, asg_name: str | None, instance_id: Callable[[], str]
) -> JobHooks:
    """Protection when the worker serves an Auto Scaling group, else nothing."""
    if asg_name is None:
        return NoHooks()
    return ScaleInProtection(autoscaling, asg_name, instance_id)
