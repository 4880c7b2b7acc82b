"""Exceptions, mapped from the daemon's gRPC status codes.

APScheduler's names where APScheduler has the error: JobLookupError (NOT_FOUND)
and ConflictingIdError (ALREADY_EXISTS) are KeyErrors, as in
apscheduler.jobstores.base. Every exception raised for a failed call derives
from ApsdError and carries `code` (grpc.StatusCode), `details` (the daemon's
message) and, where the message names a field, `field`
(`job.trigger.cron.hour`).
"""
import re

import grpc


class ApsdError(Exception):
    """A call to apsd failed. `code` is the grpc.StatusCode, `details` the
    daemon's message, `field` the field path it names (or None)."""

    code = None

    def __init__(self, details="", code=None, field=None):
        super().__init__(details)
        if code is not None:
            self.code = code
        self.details = details
        self.field = field

    def __str__(self):
        return self.details or (self.code.name if self.code else self.__class__.__name__)


class JobLookupError(ApsdError, KeyError):
    """No job with that id (NOT_FOUND). APScheduler's JobLookupError."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, job_id_or_details="", code=None, field=None, job_id=None):
        super().__init__(job_id_or_details, code, field)
        self.job_id = job_id

    def __str__(self):  # KeyError.__str__ would repr() the message
        return ApsdError.__str__(self)


class ConflictingIdError(ApsdError, KeyError):
    """The job id is taken and replace_existing is false (ALREADY_EXISTS).
    APScheduler's ConflictingIdError."""

    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, details="", code=None, field=None, job_id=None):
        super().__init__(details, code, field)
        self.job_id = job_id

    def __str__(self):
        return ApsdError.__str__(self)


class InvalidArgumentError(ApsdError, ValueError):
    """A bad field (INVALID_ARGUMENT); `field` names it."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDeniedError(ApsdError, PermissionError):
    """The token lacks the role, or a command is not allowed (PERMISSION_DENIED)."""
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(ApsdError, PermissionError):
    """No or unknown bearer token (UNAUTHENTICATED)."""
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPreconditionError(ApsdError):
    """The operation does not apply in the current state (FAILED_PRECONDITION),
    e.g. RunJobNow on a paused scheduler, Complete after the lease expired."""
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(ApsdError):
    """A limit was reached (RESOURCE_EXHAUSTED)."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutOfRangeError(ApsdError):
    """An event sequence out of the log's range (OUT_OF_RANGE)."""
    code = grpc.StatusCode.OUT_OF_RANGE


class UnavailableError(ApsdError, ConnectionError):
    """The daemon cannot be reached or is shutting down (UNAVAILABLE)."""
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ApsdError, TimeoutError):
    """The call's timeout passed (DEADLINE_EXCEEDED)."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class EventGapError(ApsdError):
    """Events the stream needed were pruned from the daemon's log.
    `requested_sequence` .. `first_available_sequence - 1` are lost."""

    code = grpc.StatusCode.OUT_OF_RANGE

    def __init__(self, requested_sequence, first_available_sequence):
        super().__init__("events %d..%d were pruned from the event log" % (
            requested_sequence, first_available_sequence - 1))
        self.requested_sequence = requested_sequence
        self.first_available_sequence = first_available_sequence


class RemoteJobError(Exception):
    """How a run failed, as JobExecutionEvent.exception: a remote task's
    exception (`type_name` e.g. 'ValueError', str() its message, `traceback`
    the worker's formatted traceback) or a command's failure (`status`
    e.g. 'FAILED', `exit_code`, `signal`)."""

    def __init__(self, message, type_name="", status="", traceback=None, exit_code=None,
                 signal=None):
        super().__init__(message)
        self.type_name = type_name
        self.status = status
        self.traceback = traceback
        self.exit_code = exit_code
        self.signal = signal

    def __repr__(self):
        return "RemoteJobError(%s: %s)" % (self.type_name or self.status, self.args[0])


class SchedulerAlreadyRunningError(Exception):
    """RemoteScheduler.start() on a running scheduler (APScheduler's name)."""

    def __str__(self):
        return "Scheduler is already running"


class SchedulerNotRunningError(Exception):
    """RemoteScheduler.shutdown() on a stopped scheduler (APScheduler's name)."""

    def __str__(self):
        return "Scheduler is not running"


_BY_CODE = {c.code: c for c in (
    JobLookupError, ConflictingIdError, InvalidArgumentError, PermissionDeniedError,
    UnauthenticatedError, FailedPreconditionError, ResourceExhaustedError, OutOfRangeError,
    UnavailableError, DeadlineExceededError)}

# The daemon's messages start with the path of the offending field:
# `job.trigger.cron.hour: 25 is out of range 0-23`.
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?)*): ")


def from_rpc_error(e, job_id=None):
    """The ApsdError subclass for a grpc.RpcError."""
    code = e.code() if hasattr(e, "code") else None
    details = (e.details() if hasattr(e, "details") else None) or str(e)
    m = _FIELD.match(details)
    cls = _BY_CODE.get(code, ApsdError)
    if cls in (JobLookupError, ConflictingIdError):
        err = cls(details, code, m.group(1) if m else None, job_id=job_id)
    else:
        err = cls(details, code, m.group(1) if m else None)
    return err


def call(fn, *args, job_id=None, **kw):
    """Runs one RPC, raising ApsdError subclasses instead of grpc.RpcError."""
    try:
        return fn(*args, **kw)
    except grpc.RpcError as e:
        raise from_rpc_error(e, job_id) from None
