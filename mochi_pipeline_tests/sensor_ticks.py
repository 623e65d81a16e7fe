"""A sensor evaluated once, as the daemon does, for the tests of sensors and of what they feed."""

from __future__ import annotations

import dagster as dg


def sensor_tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None,
                name: str = "new_commit_sensor"):
    """Evaluate a sensor once and record what it reports, as the daemon does."""
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context:
        result = sensor(context)
    if isinstance(result, dg.SensorResult):
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
            else:
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result
