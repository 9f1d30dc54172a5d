"""Preflight checks of the moving CSI volumes in the destination: a CSIDriver object of
each driver (without it the destination cannot mount the imported PV), and the
Secrets the PV's ``csi.*SecretRef`` fields name (the driver reads them from the
destination when it stages, publishes or expands the volume)."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from activities.kube import Kube, Obj
from activities.preflight.findings import Findings
from activities.preflight.listing import Volumes
from contract import OrdinalPlan
from contract.errors import FORBIDDEN

SECRET_REFS = (
    "nodePublishSecretRef",
    "nodeStageSecretRef",
    "controllerPublishSecretRef",
    "controllerExpandSecretRef",
    "nodeExpandSecretRef",
)


def csi_needs(pvs: list[Obj]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Drivers and secret references (namespace, name) of the PVs, each with its first
    user (a PV name); pure."""
    drivers: dict[str, str] = {}
    secrets: dict[tuple[str, str], str] = {}
    for pv in pvs:
        csi = (pv.get("spec") or {}).get("csi") or {}
        if not csi.get("driver"):
            continue
        name = pv["metadata"]["name"]
        drivers.setdefault(str(csi["driver"]), name)
        for field in SECRET_REFS:
            ref = csi.get(field) or {}
            if ref.get("name"):
                key = (str(ref.get("namespace") or ""), str(ref["name"]))
                secrets.setdefault(key, f"{name} ({field})")
    return drivers, secrets


def check_csi(dest: Kube, source: Volumes, ordinals: list[OrdinalPlan], f: Findings) -> None:
    """One read per driver and per secret reference, however many ordinals move."""
    pvs = [pv for o in ordinals for v in o.volumes if (pv := source.volume(v.volume)) is not None]
    drivers, secrets = csi_needs(pvs)
    for driver, user in drivers.items():
        try:
            installed = dest.csi_driver(driver)
        except ApplicationError as exc:
            if exc.type != FORBIDDEN:
                raise
            f.warnings.append(
                f"the worker may not read CSIDriver {driver} in {dest.context} (volume {user} "
                "uses it): check the driver is installed there before the move"
            )
            continue
        if installed is None:
            f.problem(
                f"destination CSIDriver {driver}",
                f"missing in {dest.context}; volume {user} (and every volume of the "
                "driver) needs it to be attached and mounted there",
                f"install the CSI driver {driver} in the destination (its CSIDriver object "
                "and node plugin), or use storage of a driver the destination has",
            )
    for (ns, name), user in secrets.items():
        try:
            found = dest.dependency("Secret", ns, name)
        except ApplicationError as exc:
            if exc.type != FORBIDDEN:
                raise
            f.warnings.append(
                f"the worker may not read Secret {ns}/{name} in {dest.context} (volume "
                f"{user} names it): check it exists there before the move"
            )
            continue
        if found is None:
            f.problem(
                f"destination Secret {ns}/{name}",
                f"volume {user} names it but it is missing in {dest.context}; the CSI "
                "driver needs it there to use the volume",
                f"create Secret {ns}/{name} in the destination (as the driver's "
                "installation there expects it)",
            )
