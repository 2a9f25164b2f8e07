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
  let outcome = FirstOutcome<T>()
  var timer: Task<Void, Never>?
  let value = await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
    outcome.wait(continuation)
    Task { outcome.finish(await operation()) }
    timer = Task {
      // A guard, not a wait for an event: it only fires when the operation is stuck.
      try? await Task.sleep(for: .seconds(seconds))
      outcome.finish(nil)
    }
  }
  timer?.cancel()
  if value == nil { Issue.record("\(what) did not finish within \(seconds) s", sourceLocation: sourceLocation) }
  return value
}

/// A wait the first of two racers ends, with its value.
private final class FirstOutcome<T: Sendable>: Sendable {
  private let waiter = Mutex<CheckedContinuation<T?, Never>?>(nil)

  func wait(_ continuation: CheckedContinuation<T?, Never>) {
    waiter.withLock { $0 = continuation }
  }

  func finish(_ value: T?) {
    waiter.withLock { $0.take() }?.resume(returning: value)
  }
}
