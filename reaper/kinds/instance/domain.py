"""Executor steps on libvirt domains: destroy and undefine, idempotent and retried."""
from __future__ import annotations

import libvirt
import tenacity
from oslo_log import log as logging

from reaper import exception
from reaper.conf import CONF
from reaper.objects.step import StepResult

LOG = logging.getLogger(__name__)


# Errors after which trying again can succeed (lock contention, a busy daemon).
_TRANSIENT = {
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_OPERATION_FAILED,
}


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, libvirt.libvirtError) and exc.get_error_code() in _TRANSIENT


def _retrying(fn):
    def wrapper(*args, **kwargs):
        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_transient),
            stop=tenacity.stop_after_attempt(CONF.reaper.libvirt_retries),
            wait=tenacity.wait_exponential(multiplier=CONF.reaper.libvirt_retry_wait, max=30),
            reraise=True)
        return retryer(fn, *args, **kwargs)
    return wrapper


def _lookup(conn, uuid: str):
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


@_retrying
def destroy(conn, uuid: str) -> StepResult:
    """virDomainDestroy; "no domain" and "not running" are success."""
    dom = _lookup(conn, uuid)
    if dom is None:
        return StepResult.absent("no such domain")
    if not dom.isActive():
        return StepResult.absent("already shut off")
    try:
        dom.destroy()
    except libvirt.libvirtError as e:
        if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID) \
                and not _still_active(conn, uuid):
            return StepResult.absent("gone while destroying")
        raise
    return StepResult.done("destroyed")


def _still_active(conn, uuid: str) -> bool:
    dom = _lookup(conn, uuid)
    return dom is not None and bool(dom.isActive())


@_retrying
def undefine(conn, uuid: str) -> StepResult:
    """Undefine with managed-save and NVRAM flags, falling back to plain undefine."""
    dom = _lookup(conn, uuid)
    if dom is None:
        return StepResult.absent("no such domain")
    if dom.isActive():
        # Undefining a running domain only makes it transient; never leave that.
        raise exception.StepFailed("domain is running again; refusing to undefine")
    flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    try:
        dom.undefineFlags(flags)
        return StepResult.done("undefined")
    except libvirt.libvirtError as e:
        code = e.get_error_code()
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return StepResult.absent("no such domain")
        if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_CONFIG_UNSUPPORTED):
            LOG.debug("undefineFlags unsupported (%s); plain undefine", e)
            dom.undefine()
            return StepResult.done("undefined (plain)")
        raise
