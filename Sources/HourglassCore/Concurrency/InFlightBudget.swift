import Synchronization

/// A bound on work in flight, counted in items and in bytes: ``take(items:bytes:)`` waits while
/// taking more would exceed either bound, ``tryTake(items:bytes:)`` refuses instead, and
/// ``give(items:bytes:)`` returns what a finished piece of work took.
///
/// Whatever its size, one piece of work is let through when nothing else is in flight, so a
/// single piece larger than the bounds is never refused for ever. A reader that calls `take`
/// stops reading while it waits, which leaves the peer's further messages in the connection's
/// buffers and, past those, in its own: back-pressure rather than an error. `tryTake` is for
/// work shared by many peers, where one waiting reader would not stop the others (load shedding).
public final class InFlightBudget: Sendable {
  private struct State {
    var items = 0
    var bytes = 0
    /// The one waiter (a single reader takes from the budget), what it asked for, and its
    /// number (so that a cancellation resumes only its own wait).
    var waiter: (items: Int, bytes: Int, number: UInt64, continuation: CheckedContinuation<Bool, Never>)?
    var waits: UInt64 = 0
  }

  /// The most items in flight.
  public let itemLimit: Int
  /// The most bytes in flight.
  public let byteLimit: Int
  private let state = Mutex(State())
  /// Called (with what is in flight) each time ``take(items:bytes:)`` has to wait.
  private let onWait: @Sendable (_ items: Int, _ bytes: Int) -> Void

  /// A budget of at most `items` items and `bytes` bytes (both at least 1); `onWait` is told
  /// each time a taker has to wait (for a log line and a metric).
  public init(items: Int, bytes: Int, onWait: @escaping @Sendable (_ items: Int, _ bytes: Int) -> Void = { _, _ in }) {
    precondition(items >= 1 && bytes >= 1, "an in-flight budget needs room for something")
    itemLimit = items
    byteLimit = bytes
    self.onWait = onWait
  }

  /// What is in flight now.
  public var inFlight: (items: Int, bytes: Int) {
    state.withLock { ($0.items, $0.bytes) }
  }

  /// Takes `items` and `bytes` from the budget, waiting until they fit (or nothing else is in
  /// flight). Only one task may wait at a time.
  ///
  /// - Throws: `CancellationError` when the waiting task is cancelled; nothing is taken then.
  public func take(items: Int, bytes: Int) async throws {
    let number = state.withLock { state in
      state.waits += 1
      return state.waits
    }
    let taken = await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
        let (answer, inFlight): (Bool?, (Int, Int)) = state.withLock { state in
          if Task.isCancelled { return (false, (0, 0)) }
          if Self.fits(items, bytes, in: state, itemLimit: itemLimit, byteLimit: byteLimit) {
            state.items += items
            state.bytes += bytes
            return (true, (0, 0))
          }
          precondition(state.waiter == nil, "one task at a time waits on an in-flight budget")
          state.waiter = (items, bytes, number, continuation)
          return (nil, (state.items, state.bytes))
        }
        if let answer {
          continuation.resume(returning: answer)
        } else {
          onWait(inFlight.0, inFlight.1)
        }
      }
    } onCancel: {
      let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
        guard let waiter = state.waiter, waiter.number == number else { return nil }
        state.waiter = nil
        return waiter.continuation
      }
      waiter?.resume(returning: false)
    }
    if !taken { throw CancellationError() }
  }

  /// Takes `items` and `bytes` if they fit now (or nothing else is in flight); false, taking
  /// nothing, otherwise. Never waits.
  public func tryTake(items: Int, bytes: Int) -> Bool {
    state.withLock { state in
      guard state.waiter == nil, Self.fits(items, bytes, in: state, itemLimit: itemLimit, byteLimit: byteLimit) else { return false }
      state.items += items
      state.bytes += bytes
      return true
    }
  }

  /// Returns what a finished piece of work took, letting a waiter through if it now fits.
  public func give(items: Int, bytes: Int) {
    let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
      state.items -= items
      state.bytes -= bytes
      guard let waiter = state.waiter, Self.fits(waiter.items, waiter.bytes, in: state, itemLimit: itemLimit, byteLimit: byteLimit) else {
        return nil
      }
      state.items += waiter.items
      state.bytes += waiter.bytes
      state.waiter = nil
      return waiter.continuation
    }
    waiter?.resume(returning: true)
  }

  private static func fits(_ items: Int, _ bytes: Int, in state: State, itemLimit: Int, byteLimit: Int) -> Bool {
    if state.items == 0 && state.bytes == 0 { return true }
    return state.items + items <= itemLimit && state.bytes + bytes <= byteLimit
  }
}
