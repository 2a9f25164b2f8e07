import HourglassCore

/// Errors a ``TaskStore`` reports. None of them is an acknowledgement: whatever the call was
/// asked to write may or may not be committed only in the `.io` case, and is not in the others.
public enum TaskStoreError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The task does not exist (or belongs to someone else, or is deleted).
  case taskNotFound(TaskID)
  /// The task is not in a state where its run can be leased (not active, already leased, …).
  case notDispatchable(TaskID)
  /// The fence is not the run's current fence or the run is no longer leased.
  case staleFence(RunID)
  /// A value was refused before writing (names the field).
  case invalidArgument(String)
  /// The store was closed.
  case closed
  /// The database reported an error (disk full, read-only file, lost connection…); the
  /// transaction was rolled back. The message comes from the database.
  case io(String)
  /// The stored schema is newer than this program, or the store was created differently.
  case incompatibleStore(String)

  public var description: String {
    switch self {
    case .taskNotFound(let id): return "task \(id) not found"
    case .notDispatchable(let id): return "task \(id) is not dispatchable"
    case .staleFence(let run): return "stale fence for run \(run)"
    case .invalidArgument(let what): return "invalid argument: \(what)"
    case .closed: return "the store is closed"
    case .io(let message): return "database error: \(message)"
    case .incompatibleStore(let message): return "incompatible store: \(message)"
    }
  }
}
