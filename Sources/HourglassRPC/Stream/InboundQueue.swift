import DequeModule
import Synchronization

/// What arrives on one stream, queued by the event loop for the one task that reads it.
///
/// An `AsyncThrowingStream` does the same job, but costs several allocations per stream and,
/// being generic code from another module, looks up type metadata on every operation. This
/// queue is a lock, a deque and at most one waiting continuation; an element already queued is
/// returned without suspending. Like an async stream, it ends the iteration (returns `nil`)
/// when the reading task is cancelled while it waits.
final class InboundQueue<Element: Sendable>: Sendable {
  private struct State: ~Copyable {
    var buffer = Deque<Element>()
    var end: End?
    var waiter: UnsafeContinuation<Element?, any Error>?
  }

  private enum End {
    case finished
    case failed(any Error)
    /// The error has been thrown once; later reads return `nil`.
    case reported
  }

  private let state = Mutex(State())

  init() {}

  /// Queues `element`, or hands it to the waiting reader; dropped once the queue has ended.
  func yield(_ element: Element) {
    let waiter: UnsafeContinuation<Element?, any Error>? = state.withLock { state in
      guard state.end == nil else { return nil }
      if let waiter = state.waiter {
        state.waiter = nil
        return waiter
      }
      state.buffer.append(element)
      return nil
    }
    waiter?.resume(returning: element)
  }

  /// Ends the queue after the elements already in it: with `nil`, or by throwing `error`.
  func finish(throwing error: (any Error)? = nil) {
    let waiter: UnsafeContinuation<Element?, any Error>? = state.withLock { state in
      guard state.end == nil else { return nil }
      let waiter = state.waiter
      state.waiter = nil
      if let error {
        // A waiting reader is told now; otherwise the next read throws.
        state.end = waiter == nil ? .failed(error) : .reported
      } else {
        state.end = .finished
      }
      return waiter
    }
    guard let waiter else { return }
    if let error {
      waiter.resume(throwing: error)
    } else {
      waiter.resume(returning: nil)
    }
  }

  /// The next element; `nil` once the queue finished or the task was cancelled while waiting.
  func next() async throws -> Element? {
    if let ready = try state.withLock({ state in try Self.take(&state) }) {
      return ready
    }
    return try await withTaskCancellationHandler {
      try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Element?, any Error>) in
        let ready: Result<Element?, any Error>? = state.withLock { state in
          do {
            if let ready = try Self.take(&state) { return .success(ready) }
          } catch {
            return .failure(error)
          }
          state.waiter = continuation
          return nil
        }
        if let ready { continuation.resume(with: ready) }
      }
    } onCancel: {
      let waiter: UnsafeContinuation<Element?, any Error>? = state.withLock { state in
        if state.end == nil { state.end = .finished }
        let waiter = state.waiter
        state.waiter = nil
        return waiter
      }
      waiter?.resume(returning: nil)
    }
  }

  /// Takes the next element out of `state`: a queued one, or the end (`nil`, or the error,
  /// once).
  private static func take(_ state: inout State) throws -> Element?? {
    if let element = state.buffer.popFirst() { return .some(element) }
    switch state.end {
    case nil:
      return .none
    case .finished?, .reported?:
      return .some(nil)
    case .failed(let error)?:
      state.end = .reported
      throw error
    }
  }
}
