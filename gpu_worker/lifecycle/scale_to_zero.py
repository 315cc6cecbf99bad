"""Leaving the Auto Scaling group when there is no work, without stranding a message.

Each worker leaves on its own, which is the group's only scale-in (its scaling policy only
adds workers). A worker is idle when no message is visible or delayed for
``IdleShutdownSeconds``; messages in flight are other workers' jobs and do not keep it.

The race: a message can arrive after the worker saw the queue empty and before its
instance is gone. The sequence closes it from the worker's side:

1. check nothing waits (visible and delayed 0), and that the messages in flight are fewer
   than the group's other workers (else one is held by no live worker and comes back: stay
   for it); else stay;
2. terminate the own instance with ``ShouldDecrementDesiredCapacity`` (desired - 1);
3. check again: a message that came during 1-2 raises desired capacity back to at least 1,
   so a fresh instance takes it. One that comes after 3 finds the group as it is, and the
   Dispatcher (which sends before it looks at the group) or the backlog alarm raises it,
   as for any upload.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from gpu_worker.delivery.queues import AudioQueue, QueueDepth

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient

logger = logging.getLogger(__name__)


class IdleClock:
    """How long the Audio Queue has stayed empty, as seen by this worker."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._since = clock()

    def reset(self) -> None:
        self._since = self._clock()

    def expired(self, depth: QueueDepth) -> bool:
        if not depth.nothing_waiting:
            self.reset()
            return False
        return self._clock() - self._since >= self._idle_seconds


class Leave(StrEnum):
    STAY = "stay"  # work arrived: keep serving
    TERMINATING = "terminating"  # the group shrinks by this instance
    HANDED_OVER = "handed_over"  # terminating, and the group starts a fresh instance


def leave_group(
    autoscaling: AutoScalingClient,
    queue: AudioQueue,
    asg_name: str,
    instance_id: str,
    stay_if_busy: bool = True,
) -> Leave:
    """Terminate this instance through its group; shrink the group only if nothing waits.

    ``stay_if_busy=False`` (a drain after a rebalance advice) leaves even with messages
    waiting, without shrinking the group, so that a replacement instance takes them.
    """
    depth = queue.depth()
    if stay_if_busy and not depth.nothing_waiting:
        return Leave.STAY
    if stay_if_busy and depth.in_flight > 0 and depth.in_flight >= _desired(autoscaling, asg_name):
        return Leave.STAY  # more in flight than the other workers hold: one comes back
    shrink = depth.nothing_waiting
    logger.warning(
        "leaving the Auto Scaling group",
        extra={"asg_name": asg_name, "instance_id": instance_id, "decrement_desired": shrink},
    )
    autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=instance_id, ShouldDecrementDesiredCapacity=shrink
    )
    if not shrink:
        return Leave.HANDED_OVER
    after = queue.depth()
    if after.nothing_waiting:
        return Leave.TERMINATING
    desired = _desired(autoscaling, asg_name)
    autoscaling.set_desired_capacity(
        AutoScalingGroupName=asg_name, DesiredCapacity=max(desired, 1), HonorCooldown=False
    )
    logger.warning(
        "a message arrived while leaving: raised the group's desired capacity again",
        extra={"asg_name": asg_name, "visible": after.visible, "delayed": after.delayed},
    )
    return Leave.HANDED_OVER


def _desired(autoscaling: AutoScalingClient, asg_name: str) -> int:
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])
    return int(group["AutoScalingGroups"][0]["DesiredCapacity"])
