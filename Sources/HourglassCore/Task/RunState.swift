/// Where one run (one scheduled occurrence of a task) is.
public enum RunState: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
  /// Due or overdue, not leased yet (also the state a run returns to when its lease expires).
  case pending
  /// Leased to an executor under a fence; running as far as the store knows.
  case leased
  /// Finished with success.
  case succeeded
  /// Finished with failure (final for this run; the task may still have later runs).
  case failed
  /// Failed an attempt; will be dispatched again after a backoff.
  case retrying
  /// Failed its last allowed attempt.
  case dead
  /// Stopped at the owner's request.
  case cancelled
  /// Not run, by the task's misfire policy.
  case skipped

  /// True when the run will not change again.
  public var isTerminal: Bool {
    switch self {
    case .succeeded, .failed, .dead, .cancelled, .skipped: return true
    case .pending, .leased, .retrying: return false
    }
  }

  /// True for the ends a task's `runs_completed` counts: the run was executed to an outcome
  /// (succeeded, failed or dead). Its retried attempts count once; cancelled and skipped runs
  /// never ran to an outcome and do not count.
  public var countsAsCompleted: Bool {
    switch self {
    case .succeeded, .failed, .dead: return true
    case .pending, .leased, .retrying, .cancelled, .skipped: return false
    }
  }

  public var description: String { rawValue }
}
