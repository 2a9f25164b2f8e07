import Foundation
import Synchronization

/// Something that can carry out a run: `exec` starts a binary, `noop` returns at once.
///
/// The executor hands every leased run to the operator the lease names. An operator must return
/// promptly once `cancellation` fires (or its task is cancelled), after it has stopped all the
/// work it started: the executor frees the run's slot when `run` returns.
public protocol Operator: Sendable {
  /// The name a lease's `operator` field selects, and that the executor registers.
  var name: String { get }

  /// Carries out one run and says how it ended. Never throws: failures are outcomes.
  func run(_ request: RunRequest, cancellation: RunCancellation) async -> RunOutcome

  /// The run's outcome, when the operator has it at once without waiting for anything (`noop`):
  /// the executor then starts no task for the run. `nil`, the default, means the run goes
  /// through ``run(_:cancellation:)``.
  func immediateOutcome(_ request: RunRequest) -> RunOutcome?
}

extension Operator {
  /// `nil`: the run goes through ``run(_:cancellation:)``.
  public func immediateOutcome(_ request: RunRequest) -> RunOutcome? { nil }
}

/// What an operator is asked to run: the lease's content, minus the lease bookkeeping.
public struct RunRequest: Sendable {
  /// The run's id (task id + scheduled time).
  public var runID: String
  /// The task the run belongs to.
  public var taskID: String
  /// When the run was due.
  public var scheduledAt: Date
  /// 1 for the first attempt, then one more per retry.
  public var attempt: UInt32
  /// The lease's fence.
  public var fence: UInt64
  /// The task's binary or script.
  public var blob: [UInt8]
  /// The blob's expected SHA-256, lowercase or uppercase hex.
  public var blobSHA256: String
  /// Arguments passed to the binary.
  public var arguments: [String]
  /// The run's time limit; the executor enforces it through `RunCancellation` with
  /// ``RunStopReason/timedOut``. `nil`: no limit.
  public var timeout: Duration?

  /// Creates a request.
  public init(
    runID: String, taskID: String, scheduledAt: Date, attempt: UInt32, fence: UInt64,
    blob: [UInt8], blobSHA256: String, arguments: [String], timeout: Duration?
  ) {
    self.runID = runID
    self.taskID = taskID
    self.scheduledAt = scheduledAt
    self.attempt = attempt
    self.fence = fence
    self.blob = blob
    self.blobSHA256 = blobSHA256
    self.arguments = arguments
    self.timeout = timeout
  }
}

/// How a run ended, as the operator saw it.
public struct RunOutcome: Sendable, Hashable {
  /// The coarse result.
  public enum Status: Sendable, Hashable {
    /// Exit status 0 (or the operator's equivalent).
    case succeeded
    /// A nonzero exit status, a signal, or a failure to start.
    case failed
    /// Stopped because the run's time limit passed.
    case timedOut
    /// Stopped on request (a `CancelRun`, the executor shutting down).
    case cancelled
  }

  /// The coarse result.
  public var status: Status
  /// The process's exit status; for a process killed by a signal, 128 + the signal number.
  public var exitCode: Int32
  /// Why the run failed, for people; empty on success.
  public var error: String
  /// The last bytes the run wrote to stdout and stderr (interleaved as written).
  public var outputTail: [UInt8]
  /// When the run started (wall clock).
  public var started: Date
  /// When it ended (wall clock).
  public var finished: Date

  /// Creates an outcome.
  public init(status: Status, exitCode: Int32 = 0, error: String = "", outputTail: [UInt8] = [], started: Date, finished: Date) {
    self.status = status
    self.exitCode = exitCode
    self.error = error
    self.outputTail = outputTail
    self.started = started
    self.finished = finished
  }
}

/// Why the executor asks a run to stop.
public enum RunStopReason: Sendable, Hashable, CustomStringConvertible {
  /// The coordinator sent `CancelRun`.
  case cancelled(reason: String)
  /// The run's time limit passed.
  case timedOut
  /// The coordinator refused a renewal: the lease is gone; the result will be dropped.
  case leaseRevoked
  /// The lease ran out on the executor's monotonic clock without a renewal: self-fencing.
  case leaseExpired
  /// The executor is shutting down and the drain grace ran out.
  case drainGraceExpired

  public var description: String {
    switch self {
    case .cancelled(let reason): reason.isEmpty ? "cancelled by the coordinator" : "cancelled by the coordinator: \(reason)"
    case .timedOut: "the run's timeout passed"
    case .leaseRevoked: "the coordinator refused to renew the lease"
    case .leaseExpired: "the lease ran out without a renewal (self-fenced)"
    case .drainGraceExpired: "the executor is shutting down and its drain grace ran out"
    }
  }

  /// The outcome status an operator reports for a run it stopped for this reason.
  public var outcomeStatus: RunOutcome.Status {
    if case .timedOut = self { return .timedOut }
    return .cancelled
  }
}

/// A one-shot request to stop a run, with the reason; operators wait on it beside their work.
public final class RunCancellation: Sendable {
  private enum State {
    case pending([UInt64: CheckedContinuation<RunStopReason?, Never>], next: UInt64)
    case fired(RunStopReason)
  }

  private let state = Mutex<State>(.pending([:], next: 0))

  /// Creates a cancellation that has not fired.
  public init() {}

  /// The reason, once fired.
  public var reason: RunStopReason? {
    state.withLock { state in
      if case .fired(let reason) = state { return reason }
      return nil
    }
  }

  /// Fires the cancellation; later calls do nothing (the first reason wins).
  public func cancel(_ reason: RunStopReason) {
    let waiters: [CheckedContinuation<RunStopReason?, Never>] = state.withLock { state in
      guard case .pending(let waiters, _) = state else { return [] }
      state = .fired(reason)
      return Array(waiters.values)
    }
    for waiter in waiters { waiter.resume(returning: reason) }
  }

  /// Waits until the cancellation fires and returns its reason; returns `nil` if the waiting
  /// task is cancelled first.
  public func wait() async -> RunStopReason? {
    let id: UInt64 = state.withLock { state in
      guard case .pending(let waiters, let next) = state else { return 0 }
      state = .pending(waiters, next: next + 1)
      return next
    }
    return await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<RunStopReason?, Never>) in
        let immediate: RunStopReason?? = state.withLock { state in
          switch state {
          case .fired(let reason):
            return .some(reason)
          case .pending(var waiters, let next):
            if Task.isCancelled { return .some(nil) }
            waiters[id] = continuation
            state = .pending(waiters, next: next)
            return .none
          }
        }
        if let immediate { continuation.resume(returning: immediate) }
      }
    } onCancel: {
      let waiter: CheckedContinuation<RunStopReason?, Never>? = state.withLock { state in
        guard case .pending(var waiters, let next) = state else { return nil }
        let waiter = waiters.removeValue(forKey: id)
        state = .pending(waiters, next: next)
        return waiter
      }
      waiter?.resume(returning: nil)
    }
  }
}
