/// Where a task is in its life. Only `active` tasks are due; `running` means one of its runs
/// holds a lease.
public enum TaskState: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
  /// Waiting for its next due time (or a retry of the current run).
  case active
  /// A run of the task is leased to an executor.
  case running
  /// Kept, but not dispatched until resumed.
  case paused
  /// A one-shot task whose run finished, or a recurring task with no further runs.
  case completed
  /// Gave up: the last run failed after its final attempt.
  case dead
  /// Deleted by its owner; invisible to reads and purged later.
  case deleted

  /// True when the task will never be dispatched again.
  public var isFinal: Bool {
    switch self {
    case .completed, .dead, .deleted: return true
    case .active, .running, .paused: return false
    }
  }

  public var description: String { rawValue }
}
