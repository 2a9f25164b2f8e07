import Synchronization

/// A queue one task reads with `await next()` while others put into it: the tests' signal.
final class Mailbox<Item: Sendable>: Sendable {
  private struct State {
    var items: [Item] = []
    var waiter: CheckedContinuation<Item?, Never>?
    var finished = false
  }

  private let state = Mutex(State())

  init() {}

  func put(_ item: Item) {
    let waiter: CheckedContinuation<Item?, Never>? = state.withLock { state in
      guard !state.finished else { return nil }
      if let waiter = state.waiter {
        state.waiter = nil
        return waiter
      }
      state.items.append(item)
      return nil
    }
    waiter?.resume(returning: item)
  }

  func finish() {
    let waiter: CheckedContinuation<Item?, Never>? = state.withLock { state in
      state.finished = true
      defer { state.waiter = nil }
      return state.waiter
    }
    waiter?.resume(returning: nil)
  }

  /// The next item, or nil once finished and empty.
  func next() async -> Item? {
    await withCheckedContinuation { (continuation: CheckedContinuation<Item?, Never>) in
      let immediate: Item?? = state.withLock { state in
        if !state.items.isEmpty { return .some(state.items.removeFirst()) }
        if state.finished { return .some(nil) }
        state.waiter = continuation
        return .none
      }
      if let immediate { continuation.resume(returning: immediate) }
    }
  }
}
