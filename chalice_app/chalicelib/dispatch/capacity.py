"""Starting the GPU worker: the Auto Scaling Group goes from 0 to 1, never down."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient

log = logging.getLogger(__name__)


class CapacityError(RuntimeError):
    """The GPU Auto Scaling Group cannot be found."""


def ensure_gpu_capacity(autoscaling: AutoScalingClient, asg_name: str) -> bool:
    """Raise the group's desired capacity to 1 if it is 0; True when this call raised it.

    Safe when many Dispatchers run at once: the only write is "desired = 1", made only
    when the group was seen at 0, so concurrent calls all write the same value and no call
    ever lowers the capacity (the worker alone scales in, by terminating itself).
    """
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])[
        "AutoScalingGroups"
    ]
    if not groups:
        raise CapacityError(f"the GPU Auto Scaling Group {asg_name!r} does not exist")
    group = groups[0]
    desired, max_size = group["DesiredCapacity"], group["MaxSize"]
    if desired >= 1:
        return False
    if max_size < 1:
        log.warning(
            "the GPU Auto Scaling Group's max size is 0; jobs wait in the Audio Queue",
            extra={"asg_name": asg_name},
        )
        return False
    autoscaling.set_desired_capacity(
        AutoScalingGroupName=asg_name, DesiredCapacity=1, HonorCooldown=False
    )
    log.info("GPU Auto Scaling Group raised from 0 to 1", extra={"asg_name": asg_name})
    return True
