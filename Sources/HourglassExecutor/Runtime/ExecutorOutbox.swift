import HourglassProto
import Synchronization

/// The messages an executor has yet to write on one stream, taken by the stream's writer in
/// whole batches: whatever the state machine produced while the previous write was under way
/// goes out together.
///
/// Within a batch, each unbroken run of results and credit grants is coalesced — results into
/// one `RunResultBatch` (when the coordinator takes them), the credits into one `CreditGrant`
/// after them — so a credit is still never sent before the result of the run that freed its
/// slot, and nothing moves across another kind of message (a renewal, `Draining`).
final class ExecutorOutbox: Sendable {
  private struct State {
    var pending: [Hourglass_V1_ExecutorMessage] = []
    var finished = false
    var batches = false
    var waiter: CheckedContinuation<[Hourglass_V1_ExecutorMessage]?, Never>?
  }

  private let state = Mutex(State())

  init() {}

  /// Queues a message; dropped once the outbox is finished.
  func yield(_ message: Hourglass_V1_ExecutorMessage) {
    let handOff: (CheckedContinuation<[Hourglass_V1_ExecutorMessage]?, Never>, [Hourglass_V1_ExecutorMessage])? = state.withLock { state in
      guard !state.finished else { return nil }
      state.pending.append(message)
      guard let waiter = state.waiter else { return nil }
      state.waiter = nil
      return (waiter, Self.takeAll(&state))
    }
    if let (waiter, messages) = handOff { waiter.resume(returning: messages) }
  }

  /// Results may go out in `RunResultBatch`es from now on (the coordinator said it takes them).
  func allowBatches() {
    state.withLock { $0.batches = true }
  }

  /// No more messages: the writer ends after the ones already queued.
  func finish() {
    let waiter = state.withLock { state in
      state.finished = true
      let waiter = state.waiter
      state.waiter = nil
      return waiter
    }
    waiter?.resume(returning: nil)
  }

  /// Every message queued so far, coalesced; waits while there is none. `nil` once finished and
  /// empty, or when the waiting task is cancelled.
  func next() async -> [Hourglass_V1_ExecutorMessage]? {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<[Hourglass_V1_ExecutorMessage]?, Never>) in
        let ready: [Hourglass_V1_ExecutorMessage]?? = state.withLock { state in
          if !state.pending.isEmpty { return .some(Self.takeAll(&state)) }
          if state.finished || Task.isCancelled { return .some(nil) }
          state.waiter = continuation
          return .none
        }
        if let ready { continuation.resume(returning: ready) }
      }
    } onCancel: {
      finish()
    }
  }

  /// The most bytes of output tails and errors in one `RunResultBatch` (a quarter of the
  /// default message-size limit).
  static var batchBytes: Int { 1 << 20 }

  private static func message(_ results: [Hourglass_V1_RunResult]) -> Hourglass_V1_ExecutorMessage {
    if results.count == 1 { return .with { $0.result = results[0] } }
    return .with { $0.results = .with { $0.results = results } }
  }

  private static func takeAll(_ state: inout State) -> [Hourglass_V1_ExecutorMessage] {
    let messages = state.pending
    state.pending = []
    return coalesce(messages, batches: state.batches)
  }

  /// Merges each unbroken run of results and credits into (one result batch or the results
  /// as they were) followed by one credit grant with their sum.
  static func coalesce(_ messages: [Hourglass_V1_ExecutorMessage], batches: Bool) -> [Hourglass_V1_ExecutorMessage] {
    guard messages.count > 1 else { return messages }
    var out: [Hourglass_V1_ExecutorMessage] = []
    var results: [Hourglass_V1_RunResult] = []
    var credits: UInt32 = 0
    func flush() {
      if batches && results.count > 1 {
        // Batches of at most `batchBytes` of output and errors, far below the message-size limit.
        var chunk: [Hourglass_V1_RunResult] = []
        var bytes = 0
        for result in results {
          let size = 128 + result.outputTail.count + result.error.utf8.count
          if !chunk.isEmpty && bytes + size > batchBytes {
            out.append(Self.message(chunk))
            chunk = []
            bytes = 0
          }
          chunk.append(result)
          bytes += size
        }
        out.append(Self.message(chunk))
      } else {
        for result in results { out.append(.with { $0.result = result }) }
      }
      if credits > 0 { out.append(.with { $0.credit = .with { $0.credits = credits } }) }
      results = []
      credits = 0
    }
    for message in messages {
      switch message.kind {
      case .result(let result): results.append(result)
      case .credit(let grant): credits += grant.credits
      default:
        flush()
        out.append(message)
      }
    }
    flush()
    return out
  }
}
