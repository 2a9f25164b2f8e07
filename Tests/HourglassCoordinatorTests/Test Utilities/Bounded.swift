import HourglassCore
import Synchronization
import Testing

/// Awaits `operation`, giving up after `seconds` of wall-clock time: then it records an issue
/// naming `what` and returns nil, leaving the operation running. For awaits that cancellation
/// cannot end (a task's result, a store's shutdown): if one never finishes, the test fails and
/// says where, instead of holding the whole test run (a time limit cancels the test's task, but
/// cannot end such an await).
func bounded<T: Sendable>(
  _ what: String, seconds: Int = 30, sourceLocation: SourceLocation = #_sourceLocation, _ operation: @escaping @Sendable () async -> T
) async -> T? {
  let result = ResultBox<T>()
  let finished = await finishesFirst(
    { result.set(await operation()) },
    // A guard, not a wait for an event: it only fires when the operation is stuck.
    before: { try? await Task.sleep(for: .seconds(seconds)) })
  guard finished else {
    Issue.record("\(what) did not finish within \(seconds) s", sourceLocation: sourceLocation)
    return nil
  }
  return result.value
}

/// A value handed from one task to another.
private final class ResultBox<T: Sendable>: Sendable {
  private let stored = Mutex<T?>(nil)

  func set(_ value: T) { stored.withLock { $0 = value } }

  var value: T? { stored.withLock { $0 } }
}
