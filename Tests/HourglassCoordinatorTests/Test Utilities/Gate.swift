import Synchronization

/// A one-shot hold for tests: once armed, the next ``pass(_:)`` waits until ``release()`` (or
/// until its task is cancelled, the end of a test), and the test can wait until something is
/// held there and learn what.
final class Gate<Value: Sendable>: Sendable {
  private struct State {
    var armed = false
    var released = false
    var heldValue: Value?
    var held: CheckedContinuation<Void, Never>?
    var waiter: CheckedContinuation<Value?, Never>?
  }

  private let state = Mutex(State())

  /// The next ``pass(_:)`` waits.
  func arm() {
    state.withLock {
      $0 = State()
      $0.armed = true
    }
  }

  /// Returns at once unless armed; armed, waits (once) until released.
  func pass(_ value: Value) async {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let (wait, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Value?, Never>?) in
          guard state.armed, !state.released, !Task.isCancelled else { return (false, nil) }
          state.armed = false
          state.heldValue = value
          state.held = continuation
          defer { state.waiter = nil }
          return (true, state.waiter)
        }
        waiter?.resume(returning: value)
        if !wait { continuation.resume() }
      }
    } onCancel: {
      release()
    }
  }

  /// What is held once something is, or nil when the waiting task is cancelled.
  func waitUntilHeld() async -> Value? {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
        let held = state.withLock { state -> Value?? in
          if let value = state.heldValue { return .some(value) }
          if Task.isCancelled { return .some(nil) }
          state.waiter = continuation
          return nil
        }
        if let held { continuation.resume(returning: held) }
      }
    } onCancel: {
      let waiter = state.withLock { state in
        defer { state.waiter = nil }
        return state.waiter
      }
      waiter?.resume(returning: nil)
    }
  }

  /// Lets the held pass go on, or the next one through if none is held yet.
  func release() {
    let held = state.withLock { state -> CheckedContinuation<Void, Never>? in
      state.released = true
      state.armed = false
      defer { state.held = nil }
      return state.held
    }
    held?.resume()
  }
}
