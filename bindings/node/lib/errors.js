'use strict';
// gRPC status codes as error classes. apsd's messages start with the path of
// the offending field (`job.trigger.cron.hour: 25 is out of range 0-23`);
// `details` keeps that text and `code` the numeric gRPC status.

const { status } = require('@grpc/grpc-js');

const CODE_NAMES = Object.fromEntries(Object.entries(status).map(([k, v]) => [v, k]));

class ApsdError extends Error {
  constructor(code, details, metadata) {
    const codeName = CODE_NAMES[code] || `CODE_${code}`;
    super(`${codeName}: ${details}`);
    this.name = new.target.name;
    /** Numeric gRPC status code (grpc.status). */
    this.code = code;
    /** Its name, e.g. `NOT_FOUND`. */
    this.codeName = codeName;
    /** The daemon's message, starting with the offending field's path. */
    this.details = details;
    /** Response trailers (a grpc.Metadata), if any. */
    this.metadata = metadata;
  }
}

class CancelledError extends ApsdError {}
class UnknownError extends ApsdError {}
class InvalidArgumentError extends ApsdError {}
class DeadlineExceededError extends ApsdError {}
/** NOT_FOUND; APScheduler's JobLookupError (also for unknown run ids). */
class JobLookupError extends ApsdError {}
/** ALREADY_EXISTS; APScheduler's ConflictingIdError. */
class ConflictingIdError extends ApsdError {}
class PermissionDeniedError extends ApsdError {}
class ResourceExhaustedError extends ApsdError {}
class FailedPreconditionError extends ApsdError {}
class AbortedError extends ApsdError {}
class OutOfRangeError extends ApsdError {}
class UnimplementedError extends ApsdError {}
class InternalError extends ApsdError {}
class UnavailableError extends ApsdError {}
class DataLossError extends ApsdError {}
class UnauthenticatedError extends ApsdError {}

/** Events the iterator needed were pruned from the daemon's event log. */
class EventGapError extends OutOfRangeError {
  constructor(gap, details) {
    super(status.OUT_OF_RANGE, details ||
      `events ${gap.requestedSequence} to ${gap.firstAvailableSequence - 1} were pruned from the event log`);
    this.requestedSequence = gap.requestedSequence;
    this.firstAvailableSequence = gap.firstAvailableSequence;
  }
}

const BY_CODE = {
  [status.CANCELLED]: CancelledError,
  [status.UNKNOWN]: UnknownError,
  [status.INVALID_ARGUMENT]: InvalidArgumentError,
  [status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [status.NOT_FOUND]: JobLookupError,
  [status.ALREADY_EXISTS]: ConflictingIdError,
  [status.PERMISSION_DENIED]: PermissionDeniedError,
  [status.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [status.FAILED_PRECONDITION]: FailedPreconditionError,
  [status.ABORTED]: AbortedError,
  [status.OUT_OF_RANGE]: OutOfRangeError,
  [status.UNIMPLEMENTED]: UnimplementedError,
  [status.INTERNAL]: InternalError,
  [status.UNAVAILABLE]: UnavailableError,
  [status.DATA_LOSS]: DataLossError,
  [status.UNAUTHENTICATED]: UnauthenticatedError,
};

/**
 * Converts a grpc-js error to its ApsdError subclass. `callSite` (an Error
 * made where the user called the method) gives the stack a useful origin.
 */
function fromGrpc(err, callSite) {
  if (err instanceof ApsdError) return err;
  if (err == null || typeof err.code !== 'number') return err;
  const Cls = BY_CODE[err.code] || ApsdError;
  const e = new Cls(err.code, err.details != null ? err.details : err.message, err.metadata);
  if (callSite && callSite.stack) {
    // The caller's frames, without this package's own.
    const frames = callSite.stack.split('\n').slice(1).filter((l) => !l.includes(__dirname));
    e.stack = `${e.name}: ${e.message}\n${frames.join('\n')}`;
  }
  return e;
}

module.exports = {
  ApsdError,
  CancelledError,
  UnknownError,
  InvalidArgumentError,
  DeadlineExceededError,
  JobLookupError,
  ConflictingIdError,
  PermissionDeniedError,
  ResourceExhaustedError,
  FailedPreconditionError,
  AbortedError,
  OutOfRangeError,
  UnimplementedError,
  InternalError,
  UnavailableError,
  DataLossError,
  UnauthenticatedError,
  EventGapError,
  fromGrpc,
  status,
};
