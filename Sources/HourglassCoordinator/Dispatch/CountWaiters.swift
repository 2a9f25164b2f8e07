/// Tasks waiting for a count to reach a condition (the dispatcher's signals for tests: results
/// recorded, partitions owned). A plain value; its owner calls ``resume(for:)`` whenever the
/// count changes.
struct CountWaiters {
  private var waiting: [(isSatisfied: (Int) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []

  /// Adds a waiter, resumed by the first ``resume(for:)`` whose count satisfies `isSatisfied`.
  mutating func add(until isSatisfied: @escaping (Int) -> Bool, _ continuation: CheckedContinuation<Void, Never>) {
    waiting.append((isSatisfied, continuation))
  }

  /// Resumes, and forgets, every waiter that `count` satisfies.
  mutating func resume(for count: Int) {
    guard !waiting.isEmpty else { return }
    let ready = waiting.filter { $0.isSatisfied(count) }
    waiting.removeAll { $0.isSatisfied(count) }
    for waiter in ready { waiter.continuation.resume() }
  }
}
