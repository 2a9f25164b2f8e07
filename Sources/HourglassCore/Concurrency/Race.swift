import Synchronization

/// Runs `operation` and `deadline` in tasks of their own and returns as soon as either ends:
/// `true` if `operation` ended first. The other keeps running (the caller decides whether to
/// cancel what it started); it is not waited for.
///
/// For time limits around work that may not end when cancelled: a task group, or awaiting a
/// task's value, waits for every child, so a store call stuck on a connection that never comes
/// would hold the caller past its limit. `deadline` is whatever clock the caller runs on (an
/// injected one in tests).
public func finishesFirst(
  _ operation: @escaping @Sendable () async -> Void, before deadline: @escaping @Sendable () async -> Void
) async -> Bool {
  let race = FirstFinisher()
  var deadlineTask: Task<Void, Never>?
  let operationWon = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
    race.wait(continuation)
    Task {
      await operation()
      race.finish(true)
    }
    deadlineTask = Task {
      await deadline()
      race.finish(false)
    }
  }
  // The deadline's task has nothing left to do either way.
  deadlineTask?.cancel()
  return operationWon
}

/// A wait that the first of several racers ends; later ones find it ended.
private final class FirstFinisher: Sendable {
  private let waiter = Mutex<CheckedContinuation<Bool, Never>?>(nil)

  func wait(_ continuation: CheckedContinuation<Bool, Never>) {
    waiter.withLock { $0 = continuation }
  }

  func finish(_ operationWon: Bool) {
    waiter.withLock { $0.take() }?.resume(returning: operationWon)
  }
}
